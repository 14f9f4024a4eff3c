// Backend selection and addon configuration, each in a fresh process (env is read on load).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SKIP_CPU } from './helpers/backends.js';

const backendsIndex = fileURLToPath(new URL('../src/backends/index.js', import.meta.url));

function run(code: string, env: Record<string, string>): { out: string; err: string; status: number | null } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(backendsIndex)}); ${code}`],
    { env: { ...process.env, PEFT_TS_BACKEND: '', ...env }, encoding: 'utf8' });
  return { out: r.stdout.trim(), err: r.stderr, status: r.status };
}

test('missing addon: reference stays active, one warning line names the fix, loadNative throws it', () => {
  const r = run(`console.log(m.backendName()); try { m.cpuBackend(); } catch (e) { console.log(e.message); }`,
    { PEFT_TS_NATIVE_PATH: '/nonexistent/peft_native.node' });
  assert.equal(r.status, 0, r.err);
  const [name, msg] = r.out.split('\n');
  assert.equal(name, 'reference');
  assert.match(msg, /not built.*apt-get install -y build-essential libopenblas-dev python3, then: npm rebuild peft-ts/);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0], /apt-get install -y build-essential libopenblas-dev python3, then: npm rebuild peft-ts/);
});

test('cpu is picked by default; PEFT_TS_BACKEND=reference forces the reference backend', { skip: SKIP_CPU }, () => {
  assert.equal(run('console.log(m.backendName())', {}).out, 'cpu');
  assert.equal(run('console.log(m.backendName())', { PEFT_TS_BACKEND: 'reference' }).out, 'reference');
});

test('PEFT_TS_THREADS sets kernel and OpenBLAS threads; PEFT_TS_SIMD=avx2 selects the baseline kernels', { skip: SKIP_CPU }, () => {
  const r = run('const i = m.nativeInfo(); console.log(JSON.stringify(i))', { PEFT_TS_THREADS: '1', PEFT_TS_SIMD: 'avx2' });
  const info = JSON.parse(r.out);
  assert.equal(info.threads, 1);
  assert.equal(info.blasThreads, 1);
  assert.equal(info.simd, 'avx2');
  const d = JSON.parse(run('console.log(JSON.stringify(m.nativeInfo()))', { PEFT_TS_THREADS: '2' }).out);
  assert.equal(d.threads, 2);
  assert.ok(['avx2', 'avx512'].includes(d.simd));
  assert.doesNotMatch(d.blas, /Prescott/, 'OpenBLAS must not fall back to its generic kernels');
});
