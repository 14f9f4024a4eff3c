// `npm run build:mpi`: the optional MPI addon (data-parallel training under mpirun). Needs
// Open MPI's compiler wrapper (apt-get install libopenmpi-dev); without it this says so and
// exits 0 unless --required, so the main build never depends on MPI.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const required = process.argv.includes('--required');
const probe = spawnSync('mpicc', ['--showme:incdirs'], { encoding: 'utf8' });
if (probe.status !== 0) {
  const msg = 'peft-ts: MPI addon not built (no mpicc): data-parallel training needs apt-get install -y libopenmpi-dev openmpi-bin, then npm run build:mpi';
  console.warn(msg);
  process.exit(required ? 1 : 0);
}
const args = ['rebuild', '--directory', __dirname];
const prefix = path.dirname(path.dirname(process.execPath));
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) args.push(`--nodedir=${prefix}`);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
