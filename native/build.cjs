// `npm run build:native` (and the install script): node-gyp rebuild against the headers of
// the running Node when they are installed next to it (no header download, works offline);
// otherwise node-gyp's own lookup (npm_config_nodedir, its cache, or a download).
// node-gyp itself: a local install (devDependency in a checkout), else the one npm bundles
// (npm passes its path as npm_config_node_gyp to install scripts), else npm's copy next to node.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

function findNodeGyp() {
  try { return require.resolve('node-gyp/bin/node-gyp.js'); } catch { /* not installed here */ }
  const env = process.env.npm_config_node_gyp;
  if (env && fs.existsSync(env)) return env;
  const prefix = path.dirname(path.dirname(process.execPath));
  for (const p of [path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')]) {
    if (fs.existsSync(p)) return p;
  }
  return null;
}

const args = ['rebuild', '--directory', __dirname];
const prefix = path.dirname(path.dirname(process.execPath));
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
  args.push(`--nodedir=${prefix}`);
}
const gyp = findNodeGyp();
if (!gyp) {
  process.stderr.write('[peft-ts] node-gyp not found (it ships with npm; or: npm install -g node-gyp)\n');
  process.exit(1);
}
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
