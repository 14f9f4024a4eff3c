// The package's install script (`npm install peft-ts`, from the registry, a tarball or a
// git URL; `npm rebuild peft-ts` reruns it): builds the native CPU addon. It never fails the
// install: where a compiler, OpenBLAS or python3 is missing it says exactly what to install,
// and the package runs on the slow reference backend until then.
//   PEFT_TS_SKIP_NATIVE=1   skip the build (the reference backend, or a cuda-only setup)
//   --strict                exit 1 when the addon cannot be built or loaded (setup, CI)
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const strict = process.argv.includes('--strict');
const root = path.join(__dirname, '..');
const addon = path.join(__dirname, 'build', 'Release', 'peft_native.node');
const APT = 'sudo apt-get install -y build-essential libopenblas-dev python3';

function banner(lines) {
  const bar = '!'.repeat(78);
  process.stderr.write(`\n${bar}\n${lines.map((l) => `!! ${l}`).join('\n')}\n${bar}\n\n`);
}

function fail(why, detail) {
  banner([
    `peft-ts: the native CPU backend was NOT built: ${why}.`,
    'peft-ts still works, on the reference backend (plain TypeScript, ~30x slower).',
    'To build it, install the tools and rebuild:',
    `    ${APT}`,
    '    then: npm rebuild peft-ts',
    ...(detail ? ['', ...detail] : []),
  ]);
  process.exit(strict ? 1 : 0);
}

function onPath(cmd) {
  const dirs = (process.env.PATH || '').split(path.delimiter);
  return dirs.some((d) => d && fs.existsSync(path.join(d, cmd)));
}

/** Loads the addon in a child process (a crash or a missing libopenblas.so must not kill us). */
function loads() {
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(addon)}).simd()`], { encoding: 'utf8' });
  return { ok: r.status === 0, err: (r.stderr || '').trim().split('\n').slice(-3) };
}

/** Already built and no source newer than it (a re-run of npm install in a checkout). */
function fresh() {
  if (!fs.existsSync(addon)) return false;
  const t = fs.statSync(addon).mtimeMs;
  const srcs = [path.join(__dirname, 'binding.gyp'), ...fs.readdirSync(path.join(__dirname, 'src')).map((f) => path.join(__dirname, 'src', f))];
  return srcs.every((f) => fs.statSync(f).mtimeMs <= t) && loads().ok;
}

if (process.env.PEFT_TS_SKIP_NATIVE === '1') {
  process.stderr.write('[peft-ts] PEFT_TS_SKIP_NATIVE=1: native CPU backend not built (reference backend)\n');
  process.exit(0);
}
if (fresh()) process.exit(0);
if (process.platform !== 'linux') fail(`the native build supports Linux only (this is ${process.platform})`);

const missing = [];
const cxx = process.env.CXX || 'g++';
if (!onPath(cxx) && !onPath('c++')) missing.push('a C++ compiler (build-essential)');
if (!onPath('make')) missing.push('make (build-essential)');
if (!onPath('python3') && !onPath('python')) missing.push('python3 (node-gyp needs it)');
const blas = spawnSync(process.execPath, [path.join(__dirname, 'check-openblas.cjs'), 'include'], { encoding: 'utf8' });
if (blas.status !== 0) missing.push('OpenBLAS development files (libopenblas-dev)');
if (missing.length) fail(`missing ${missing.join(', ')}`);

process.stderr.write('[peft-ts] building the native CPU backend (OpenBLAS + SIMD kernels; about a minute)...\n');
const r = spawnSync(process.execPath, [path.join(__dirname, 'build.cjs')], { cwd: root, encoding: 'utf8' });
if (r.status !== 0) {
  const log = `${r.stdout || ''}\n${r.stderr || ''}`.trim().split('\n').slice(-12);
  fail('the compiler failed (last lines of its output below)', log);
}
const l = loads();
if (!l.ok) fail('the built addon does not load', l.err);
process.stderr.write('[peft-ts] native CPU backend built\n');
