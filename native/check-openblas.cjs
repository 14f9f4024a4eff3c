// Run by binding.gyp at configure time: prints the directory holding OpenBLAS's cblas.h
// (arg "include") or the library directory (arg "lib"), or fails with the fix to apply.
'use strict';
const fs = require('fs');
const path = require('path');

const FIX = 'OpenBLAS development files not found. Install them with: apt-get install -y libopenblas-dev (then: npm rebuild peft-ts, or in a checkout npm run build:native)';
const what = process.argv[2] || 'include';
const arch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
const env = (k) => (process.env[k] ? [process.env[k]] : []);

const includeDirs = [...env('OPENBLAS_INCLUDE'), `/usr/include/${arch}`, '/usr/include/openblas', '/usr/include', '/usr/local/include', '/opt/OpenBLAS/include'];
const libDirs = [...env('OPENBLAS_LIB'), `/usr/lib/${arch}`, '/usr/lib64', '/usr/lib', '/usr/local/lib', '/opt/OpenBLAS/lib'];

function find(dirs, files) {
  for (const d of dirs) for (const f of files) if (fs.existsSync(path.join(d, f))) return d;
  return null;
}

const inc = find(includeDirs, ['cblas.h']);
const lib = find(libDirs, ['libopenblas.so', 'libopenblas.a', 'libopenblas.dylib']);
// cblas.h alone could be another BLAS (netlib, ATLAS): insist on OpenBLAS's own header too.
const isOpenBlas = inc && fs.existsSync(path.join(inc, 'openblas_config.h'));
if (!inc || !lib || !isOpenBlas) {
  process.stderr.write(`\n[peft-ts] ${FIX}\n\n`);
  process.exit(1);
}
process.stdout.write(what === 'lib' ? lib : inc);
