// `npm run build:native`: node-gyp rebuild against the headers of the running Node when
// they are installed next to it (no header download, works offline); otherwise node-gyp's
// own lookup (npm_config_nodedir, its cache, or a download).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = ['rebuild', '--directory', __dirname];
const prefix = path.dirname(path.dirname(process.execPath));
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
  args.push(`--nodedir=${prefix}`);
}
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
