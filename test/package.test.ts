// The package as npm ships it: what the tarball holds, the exports map (ESM import, CJS
// require, subpaths, the embedded model's path), and the install script's behaviour where
// the build tools are missing (it explains and succeeds; --strict fails).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'native', 'install.cjs')))!;

test('npm pack ships the built library, native sources and assets, not tests, bench or .ts sources', () => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [info] = JSON.parse(r.stdout) as { size: number; files: { path: string }[] }[];
  const files = info.files.map((f) => f.path);
  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'native/install.cjs', 'native/build.cjs', 'native/binding.gyp',
    'native/src/addon.cc', 'assets/default-model/model.safetensors', 'assets/default-model/tokenizer.json', 'assets/tiny-bert/config.json', 'docs/guide.md', 'README.md']) {
    assert.ok(files.includes(f), `${f} is missing from the tarball`);
  }
  const stray = files.filter((f) => /^(test|bench|scripts|dist\/test|dist\/bench|dist\/scripts|dist\/docs-samples|native\/build|native\/cuda)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')));
  assert.deepEqual(stray, []);
  assert.ok(info.size < 8e6, `tarball ${info.size} bytes`);
});

test('exports: ESM import, CJS require, layer subpaths and the default model path resolve by package name', () => {
  // A package can import itself by name from inside its folder, through the same exports map a user gets.
  const script = path.join(root, 'dist', 'exports-check.mjs');
  fs.writeFileSync(script, `
    import { createRequire } from 'node:module';
    import * as root from 'peft-ts';
    const sub = await Promise.all(['tensor', 'backends', 'nn', 'io', 'models', 'peft', 'quant', 'data', 'train', 'generate'].map((s) => import('peft-ts/' + s)));
    const cjs = createRequire(import.meta.url)('peft-ts');
    const model = await root.AutoModelForCausalLM.fromPretrained(root.defaultModelPath);
    console.log(JSON.stringify({ trainer: typeof root.Trainer, cjs: cjs.Trainer === root.Trainer, subs: sub.map((m) => Object.keys(m).length),
      tensor: typeof sub[0].Tensor, model: model.nameOrPath, name: createRequire(import.meta.url)('peft-ts/package.json').name }));
  `);
  const r = spawnSync(process.execPath, [script], { cwd: os.tmpdir(), encoding: 'utf8' });
  fs.rmSync(script);
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(o.trainer, 'function');
  assert.equal(o.cjs, true);
  assert.equal(o.tensor, 'function');
  assert.ok(o.subs.every((n: number) => n > 0), `empty subpath: ${o.subs}`);
  assert.equal(o.model, path.join(root, 'assets', 'default-model'));
  assert.equal(o.name, 'peft-ts');
});

test('install script without compiler / python3 / OpenBLAS: says what to install, exits 0; --strict exits 1', () => {
  // A copy of native/ without a build, run with an empty PATH (no g++, make or python3 on it).
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'install-'));
  fs.mkdirSync(path.join(tmp, 'native'));
  for (const f of ['install.cjs', 'build.cjs', 'check-openblas.cjs', 'binding.gyp']) fs.copyFileSync(path.join(root, 'native', f), path.join(tmp, 'native', f));
  fs.cpSync(path.join(root, 'native', 'src'), path.join(tmp, 'native', 'src'), { recursive: true });
  const run = (...args: string[]) => spawnSync(process.execPath, [path.join(tmp, 'native', 'install.cjs'), ...args], { encoding: 'utf8', env: { PATH: path.join(tmp, 'nothing') } });
  const r = run();
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /native CPU backend was NOT built: missing a C\+\+ compiler \(build-essential\), make \(build-essential\), python3/);
  assert.match(r.stderr, /sudo apt-get install -y build-essential libopenblas-dev python3\n!!\s+then: npm rebuild peft-ts/);
  assert.match(r.stderr, /reference backend/);
  assert.ok(!fs.existsSync(path.join(tmp, 'native', 'build')), 'nothing was built');
  assert.equal(run('--strict').status, 1);
  const skip = spawnSync(process.execPath, [path.join(tmp, 'native', 'install.cjs')], { encoding: 'utf8', env: { PATH: '', PEFT_TS_SKIP_NATIVE: '1' } });
  assert.equal(skip.status, 0);
  assert.match(skip.stderr, /PEFT_TS_SKIP_NATIVE=1/);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('install script in a built checkout: the fresh addon is kept (no rebuild, no output)', { skip: !fs.existsSync(path.join(root, 'native', 'build', 'Release', 'peft_native.node')) && 'addon not built' }, () => {
  const addon = path.join(root, 'native', 'build', 'Release', 'peft_native.node');
  const before = fs.statSync(addon).mtimeMs;
  const r = spawnSync(process.execPath, [path.join(root, 'native', 'install.cjs'), '--strict'], { encoding: 'utf8' });
  // Sources newer than the addon (an edited checkout) would mean a rebuild: only assert the no-op when fresh.
  if (r.stderr.includes('building')) return;
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.equal(fs.statSync(addon).mtimeMs, before);
});
