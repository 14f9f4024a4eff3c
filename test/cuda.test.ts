// The cuda backend. Everywhere: it reports why it cannot run (addon not built, no GPU)
// without crashing, and the host-only C++ check of its allocator passes. With a GPU:
// buffers from alloc(), stream order, staging counters, block reuse, TF32, big batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaBackend, cudaInfo, cudaStats, cudaStatus, referenceBackend as R, setCudaTf32 } from '../src/backends/index.js';
import { findCudaAddon, loadCuda } from '../src/backends/cuda/index.js';
import { Rng, tensor, withBackend } from '../src/tensor/index.js';
import { hostSync } from '../src/tensor/registry.js';
import { Linear4bit, setLinear4bitDeviceTileElements, setLinear4bitTileElements, type ComputeDtype } from '../src/quant/linear4bit.js';
import { assertClose, maxAbs } from './helpers/compare.js';
import { SKIP_CUDA, hasCpu, hasCuda } from './helpers/backends.js';

const backendsIndex = fileURLToPath(new URL('../src/backends/index.js', import.meta.url));
const root = fileURLToPath(new URL('../../', import.meta.url));

function run(code: string, env: Record<string, string>, nodeArgs: string[] = []) {
  const r = spawnSync(process.execPath, [...nodeArgs, '--input-type=module', '-e',
    `const m = await import(${JSON.stringify(backendsIndex)}); ${code}`],
  { env: { ...process.env, PEFT_TS_BACKEND: '', ...env }, encoding: 'utf8' });
  return { out: r.stdout.trim(), err: r.stderr, status: r.status, signal: r.signal };
}

test('addon missing: cudaStatus says how to build it, PEFT_TS_BACKEND=cuda fails with that, others unaffected', () => {
  const env = { PEFT_TS_CUDA_PATH: '/nonexistent/peft_cuda.node' };
  const r = run('console.log(JSON.stringify(m.cudaStatus())); console.log(m.cudaAvailable()); console.log(m.backendName())', env);
  assert.equal(r.status, 0, r.err);
  const [status, avail, name] = r.out.split('\n');
  const s = JSON.parse(status);
  assert.equal(s.available, false);
  assert.match(s.reason, /CUDA backend is not built.*npm run build:cuda/);
  assert.equal(avail, 'false');
  assert.ok(['cpu', 'reference'].includes(name), 'cuda is never picked by default');
  const f = run('console.log(m.backendName())', { ...env, PEFT_TS_BACKEND: 'cuda' });
  assert.equal(f.signal, null);
  assert.equal(f.status, 1);
  assert.match(f.err, /CUDA backend is not built/);
});

const built = findCudaAddon() !== null;

test('addon built but no GPU: status gives the reason, every entry point throws a JS error',
  { skip: !built ? 'cuda addon not built (npm run build:cuda)' : hasCuda ? 'a GPU is present' : false }, () => {
    const s = cudaStatus();
    assert.equal(s.available, false);
    assert.match(s.reason ?? '', /CUDA|device|driver|cuBLAS/);
    assert.throws(() => cudaBackend(), /CUDA backend unavailable/);
    const n = loadCuda();
    const x = new Float32Array(4);
    assert.throws(() => n.alloc(4, 0), /^Error: peft_cuda: /);
    assert.throws(() => n.synchronize(), /peft_cuda: /);
    assert.throws(() => n.unary(1, x, x), /peft_cuda: /);
    assert.throws(() => n.matmul(x, x, x, 1, 2, 2, 1, false, false, 0, 0, 1, 0), /peft_cuda: /);
    assert.throws(() => n.stats(), /peft_cuda: /);
    // argument checks come first and match the cpu addon's messages
    assert.throws(() => n.matmul(x, x, x, 1, 3, 3, 3, false, false, 0, 0, 1, 0), /matmul a has 4 elements, needs 9/);
    const code = new Float32Array(16), out = new Float32Array(256);
    assert.throws(() => n.dequantizeNF4(new Uint8Array(100), new Float32Array(4), 64, code, 0, 256, out), /packed has 100 elements, needs 128/);
    assert.throws(() => n.dequantizeNF4(new Uint8Array(128), new Float32Array(3), 64, code, 0, 256, out), /absmax has 3 elements, needs 4/);
    assert.throws(() => n.dequantizeNF4(new Uint8Array(128), new Float32Array(4), 64, code.subarray(0, 8), 0, 256, out), /code needs 16/);
    assert.throws(() => n.dequantizeAbsmax(new Uint8Array(10), new Float32Array(1), 256, code, 0, 10, out), /code needs 256/);
    assert.throws(() => n.dequantizeNF4(new Uint8Array(128), new Float32Array(4), 64, code, 0, 256, out), /peft_cuda: /);
    const f = run('console.log(m.backendName())', { PEFT_TS_BACKEND: 'cuda' });
    assert.equal(f.signal, null);
    assert.equal(f.status, 1);
    assert.match(f.err, /CUDA backend unavailable/);
  });

const gxx = spawnSync('g++', ['--version']).status === 0;

test('host-only check of the block cache and strided walks (native/cuda/test/host_test.cc)',
  { skip: gxx ? false : 'g++ not found' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'peft-cuda-host-'));
    try {
      const exe = join(dir, 'host_test');
      const c = spawnSync('g++', ['-std=c++17', '-O1', '-Wall', '-Wextra', join(root, 'native/cuda/test/host_test.cc'),
        join(root, 'native/cuda/src/alloc.cc'), '-o', exe], { encoding: 'utf8' });
      assert.equal(c.status, 0, c.stderr);
      const r = spawnSync(exe, { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /host_test: ok/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

// ---------- with a GPU ----------

const skip = SKIP_CUDA;
const rng = new Rng(11);
function rnd(n: number): Float32Array {
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = rng.next() * 2 - 1;
  return d;
}

test('device info names the GPU and the cuBLAS loaded', { skip }, () => {
  const i = cudaInfo();
  console.log(`# cuda device: ${JSON.stringify(i)}`);
  assert.ok(i.name.length > 0);
  assert.match(i.cublas, /libcublas/);
  assert.ok(i.totalMemory > 0);
});

test('alloc: managed arrays of each kind, sub-views are device arrays, plain arrays are not; fill', { skip }, () => {
  const b = cudaBackend(), n = loadCuda();
  const f = b.alloc!(1000, 'float32'), i = b.alloc!(7, 'int32'), u = b.alloc!(5, 'uint16'), e = b.alloc!(0, 'float32');
  const u8 = b.alloc!(33, 'uint8');
  assert.ok(u8 instanceof Uint8Array && u8.length === 33 && n.isDeviceArray(u8.subarray(1)));
  assert.ok(f instanceof Float32Array && f.length === 1000);
  assert.ok(i instanceof Int32Array && i.length === 7);
  assert.ok(u instanceof Uint16Array && u.length === 5);
  assert.equal(e.length, 0);
  assert.ok(n.isDeviceArray(f) && n.isDeviceArray(f.subarray(10, 20)) && n.isDeviceArray(i) && n.isDeviceArray(u));
  assert.ok(!n.isDeviceArray(new Float32Array(10)));
  b.fill!(f, 2.5); b.fill!(i, -100); b.fill!(u, 0x3f80); b.fill!(f.subarray(0, 3), 0);
  b.synchronize!();
  assert.deepEqual([...f.subarray(0, 5)], [0, 0, 0, 2.5, 2.5]);
  assert.ok(f.subarray(3).every((v) => v === 2.5));
  assert.ok(i.every((v) => v === -100));
  assert.ok(u.every((v) => v === 0x3f80));
  const plain = new Float32Array(4);
  b.fill!(plain, 3); // a host array is filled on the host at once
  assert.deepEqual([...plain], [3, 3, 3, 3]);
  const pu = new Uint16Array(2), pi = new Int32Array(2);
  b.fill!(pu, -1); b.fill!(pi, 2 ** 32 + 5); b.fill!(u, -2);
  b.synchronize!();
  assert.deepEqual([...pu, ...pi, u[0]], [65535, 65535, 5, 5, 65534]); // as TypedArray.fill converts
});

test('staging: plain arrays are copied and counted, arrays from alloc() are not', { skip }, () => {
  const b = cudaBackend();
  const x = b.alloc!(1000, 'float32') as Float32Array, y = b.alloc!(1000, 'float32') as Float32Array;
  b.synchronize!();
  x.set(rnd(1000));
  const s0 = cudaStats();
  b.unary('exp', x, y);
  b.synchronize!();
  const s1 = cudaStats();
  assert.equal(s1.stagedArrays, s0.stagedArrays);
  assert.equal(s1.stagedBytesIn, s0.stagedBytesIn);
  assert.ok(s1.launches > s0.launches);
  const px = x.slice(), py = new Float32Array(1000);
  b.unary('exp', px, py);
  const s2 = cudaStats();
  assert.equal(s2.stagedArrays - s1.stagedArrays, 2);
  assert.equal(s2.stagedBytesIn - s1.stagedBytesIn, 8000); // outputs are copied in too
  assert.equal(s2.stagedBytesOut - s1.stagedBytesOut, 4000);
  assert.deepEqual(py, y);
});

test('kernels queue in stream order; host checks of ids wait for kernels that wrote them', { skip }, () => {
  const b = cudaBackend();
  const n = 4099;
  const ones = b.alloc!(n, 'float32') as Float32Array, y = b.alloc!(n, 'float32') as Float32Array;
  b.fill!(ones, 1); b.fill!(y, 0);
  for (let k = 0; k < 50; k++) b.axpy(1, ones, y);
  b.affine(y, 2, 1, y);
  b.synchronize!();
  assert.ok(y.every((v) => v === 101));
  // ids rewritten by a queued fill: the host range check must see the new values
  const table = b.alloc!(5 * 3, 'float32') as Float32Array, ids = b.alloc!(4, 'int32') as Int32Array;
  const out = b.alloc!(4 * 3, 'float32') as Float32Array;
  b.synchronize!();
  ids.set([0, 1, 2, 3]);
  b.fill!(ids, 7);
  assert.throws(() => b.embedding(table, ids, 3, out), /embedding id 7 out of range \[0, 5\) at position 0/);
  // crossEntropy returns its count without waiting for the kernel
  const logits = b.alloc!(3 * 4, 'float32') as Float32Array, t = b.alloc!(3, 'int32') as Int32Array;
  const loss = b.alloc!(3, 'float32') as Float32Array, lse = b.alloc!(3, 'float32') as Float32Array;
  b.synchronize!();
  logits.set(rnd(12)); t.set([1, -100, 3]);
  assert.equal(b.crossEntropy(logits, t, 3, 4, -100, loss, lse), 2);
  b.synchronize!();
  const l2 = new Float32Array(3), s2 = new Float32Array(3);
  R.crossEntropy(logits, t, 3, 4, -100, l2, s2);
  assertClose(loss, l2, { rtol: 1e-5, atol: 1e-6 });
});

test('released buffers go back to the block cache and are reused', { skip }, () => {
  const code = `
    const b = m.cudaBackend();
    const first = m.cudaStats();
    for (let i = 0; i < 64; i++) b.alloc(262144, 'float32');
    // finalizers run on a later tick, after V8 has swept the buffers: poll for them
    for (let k = 0; k < 100 && m.cudaStats().cachedBytes < 32 * 2 ** 20; k++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    const mid = m.cudaStats();
    for (let i = 0; i < 64; i++) b.alloc(262144, 'float32');
    const last = m.cudaStats();
    console.log(JSON.stringify({ first, mid, last }));`;
  const r = run(code, {}, ['--expose-gc']);
  assert.equal(r.status, 0, r.err);
  const { first, mid, last } = JSON.parse(r.out);
  assert.ok(mid.cachedBytes >= 32 * 2 ** 20, `cached after gc: ${mid.cachedBytes}`);
  assert.ok(last.reuses - mid.reuses >= 32, `reuses ${last.reuses - mid.reuses}`);
  assert.ok(last.rawAllocs - first.rawAllocs <= 64 + 32, 'freed blocks were not reused');
});

test('matmul: TF32 is close to float32, full float32 when off; k = 0; more than 65535 batches', { skip }, () => {
  const b = cudaBackend();
  const m = 256, n = 192, k = 320;
  const a = rnd(m * k), w = rnd(k * n), c0 = new Float32Array(m * n), c1 = new Float32Array(m * n), c2 = new Float32Array(m * n);
  R.matmul(a, w, c0, 1, m, n, k, false, false, 0, 0, 1, 0);
  setCudaTf32(true);
  try { b.matmul(a, w, c1, 1, m, n, k, false, false, 0, 0, 1, 0); } finally { setCudaTf32(false); }
  b.matmul(a, w, c2, 1, m, n, k, false, false, 0, 0, 1, 0);
  const scale = maxAbs(c0);
  assertClose(c1, c0, { rtol: 0, atol: 2e-2 * scale, msg: 'tf32' });
  assertClose(c2, c0, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(k) * scale, msg: 'fp32' });
  // k = 0: C = beta * C (and exactly 0 for beta = 0, even over NaN)
  const c = Float32Array.from([1, 2, NaN, 4]);
  b.matmul(new Float32Array(0), new Float32Array(0), c, 1, 2, 2, 0, false, false, 0, 0, 1, 0.5);
  assert.deepEqual([...c.subarray(0, 2)], [0.5, 1]);
  b.matmul(new Float32Array(0), new Float32Array(0), c, 1, 2, 2, 0, false, false, 0, 0, 1, 0);
  assert.deepEqual([...c], [0, 0, 0, 0]);
  // batches beyond one cuBLAS call, broadcast A
  const batch = 70001;
  const A = rnd(4), B = rnd(batch * 4), C1 = new Float32Array(batch * 4), C2 = new Float32Array(batch * 4);
  b.matmul(A, B, C1, batch, 2, 2, 2, false, true, 0, 4, 1, 0);
  R.matmul(A, B, C2, batch, 2, 2, 2, false, true, 0, 4, 1, 0);
  assertClose(C1, C2, { rtol: 1e-5, atol: 1e-6 });
});

test('Linear4bit on cuda equals cpu: forward and input gradient (float32 and bf16 compute, one and several tiles, double-quantized or not); nothing staged, no synchronize after the first call', { skip }, () => {
  const other = hasCpu ? 'cpu' : 'reference';
  const inF = 96, outF = 40, M = 5;
  const cases: [ComputeDtype, boolean, number][] = [['float32', true, 1 << 20], ['float32', false, inF * 11], ['bfloat16', true, inF * 11], ['bfloat16', false, 1 << 20]];
  for (const [dtype, nested, tiles] of cases) {
    const what = `${dtype} nested=${nested} tile=${tiles}`;
    const w = rnd(inF * outF).map((v) => v * 0.05), bias = rnd(outF), x = rnd(M * inF), gy = rnd(M * outF);
    const layer = () => Linear4bit.fromWeight(w, inF, outF, tensor(bias, [outF]), dtype, { compressStatistics: nested });
    const run = (name: string, check: boolean): Float32Array[] => withBackend(name, () => {
      const h = setLinear4bitTileElements(tiles), d = setLinear4bitDeviceTileElements(tiles);
      try {
        const q = layer();
        const xt = tensor(x, [M, inF]).setRequiresGrad(true), gt = tensor(gy, [M, outF]);
        q.forward(xt); // first call: codes and scales copied to the device
        hostSync();
        const s0 = cudaStats();
        const y = q.forward(xt);
        y.backward(gt);
        if (check) {
          const s1 = cudaStats();
          assert.equal(s1.stagedArrays, s0.stagedArrays, `${what}: nothing staged`);
          assert.equal(s1.syncs, s0.syncs, `${what}: forward and backward never wait for the device`);
          assert.ok(loadCuda().isDeviceArray(q.packedWeight), `${what}: the codes live in device memory`);
        }
        return [y.data.slice(), xt.grad!.data.slice()];
      } finally { setLinear4bitTileElements(h); setLinear4bitDeviceTileElements(d); }
    });
    const [yc, gc] = run(other, false), [yg, gg] = run('cuda', true);
    assertClose(yg, yc, { rtol: 1e-5, atol: 1e-5, msg: `${what}: forward` });
    assertClose(gg, gc, { rtol: 1e-5, atol: 1e-5, msg: `${what}: input gradient` });
  }
});

test('matmulBf16: with TF32 on, activations rounded to bf16 on tensor cores (float32 accumulation); exact widening when off', { skip }, () => {
  const b = cudaBackend();
  for (const [m, n, k] of [[64, 96, 80], [7, 33, 257]] as [number, number, number][]) {
    for (const tB of [true, false]) {
      const a = rnd(m * k), w = new Uint16Array(n * k);
      R.f32ToBf16(rnd(n * k), w);
      const a16 = new Uint16Array(m * k), aRounded = new Float32Array(m * k);
      R.f32ToBf16(a, a16); R.bf16ToF32(a16, aRounded);
      const exact = new Float32Array(m * n), ofRounded = new Float32Array(m * n), fast = new Float32Array(m * n), off = new Float32Array(m * n);
      R.matmulBf16!(a, w, exact, m, n, k, tB, 1, 0);
      R.matmulBf16!(aRounded, w, ofRounded, m, n, k, tB, 1, 0);
      setCudaTf32(true);
      try { b.matmulBf16!(a, w, fast, m, n, k, tB, 1, 0); } finally { setCudaTf32(false); }
      b.matmulBf16!(a, w, off, m, n, k, tB, 1, 0);
      const scale = maxAbs(exact);
      // fast mode is the exact product of the bf16-rounded activations (up to accumulation order) ...
      assertClose(fast, ofRounded, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(k) * scale, msg: `fast ${m}x${n}x${k} transB=${tB}` });
      // ... which is within bf16 rounding of the exact result
      assertClose(fast, exact, { rtol: 0, atol: 2e-2 * scale, msg: `fast vs exact ${m}x${n}x${k}` });
      assertClose(off, exact, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(k) * scale, msg: `exact mode ${m}x${n}x${k} transB=${tB}` });
    }
  }
});

test('PEFT_TS_BACKEND=cuda selects the cuda backend', { skip }, () => {
  const r = run('console.log(m.backendName())', { PEFT_TS_BACKEND: 'cuda' });
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'cuda');
});

// ---------- never oversubscribe ----------

const MiB = 2 ** 20;
const oom = (bytes: number) => (e: unknown) => {
  const m = (e as Error).message;
  assert.match(m, new RegExp(`out of memory: requested ${bytes} bytes`), m);
  assert.match(m, /the pool holds [\d.]+ MiB in use and [\d.]+ MiB cached/, m);
  assert.match(m, /the device has [\d.]+ MiB free of [\d.]+ MiB/, m);
  assert.match(m, /Nothing was allocated/, m);
  return true;
};

test('a request beyond the device\'s free memory fails with a clear error and allocates nothing', { skip }, () => {
  const b = cudaBackend();
  const i = cudaInfo();
  assert.ok(i.freeMemory > 0 && i.freeMemory <= i.totalMemory, JSON.stringify(i));
  const before = cudaStats();
  const n = Math.ceil((i.freeMemory + 2 ** 30) / 4); // 1 GiB more than the card has free
  assert.throws(() => b.alloc!(n, 'float32'), oom(n * 4));
  const after = cudaStats();
  assert.equal(after.rawAllocs, before.rawAllocs, 'the pool grew');
  assert.equal(after.liveBytes, before.liveBytes);
  assert.ok(after.refusedGrowths > before.refusedGrowths);
});

// The emulator's device has PEFT_TS_CUDA_EMU_MEMORY_MB and aborts on any allocation past it
// (as oversubscribed managed memory can hang a real GPU): the guard must refuse first.
const emu = hasCuda && /emulator/.test(cudaInfo().name);
test('emulated 64 MiB device: the pool refuses what does not fit, frees cached blocks and retries once before failing',
  { skip: emu ? false : 'needs the CPU emulator build (npm run test:cuda-emu)' }, () => {
    const code = `
      const b = m.cudaBackend();
      let a = b.alloc(8 * 2 ** 20, 'float32');                  // 32 MiB of 64, 8 reserved
      const s0 = m.cudaStats();
      let err1 = null;
      try { b.alloc(8 * 2 ** 20, 'float32'); } catch (e) { err1 = e.message; }  // 32 more: 24 fit
      const s1 = m.cudaStats();
      a = null;
      for (let k = 0; k < 100 && m.cudaStats().cachedBytes < 32 * 2 ** 20; k++) {
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 10));
      }
      const s2 = m.cudaStats();
      const c = b.alloc(10 * 2 ** 20, 'float32');              // 40 MiB: fits only without the cached block
      const s3 = m.cudaStats();
      let err2 = null;
      try { b.alloc(6 * 2 ** 20, 'float32'); } catch (e) { err2 = e.message; }  // 24 MiB: 16 fit
      console.log(JSON.stringify({ err1, err2, s0, s1, s2, s3, keep: c.length, info: m.cudaInfo() }));`;
    const r = run(code, { PEFT_TS_CUDA_EMU_MEMORY_MB: '64', PEFT_TS_CUDA_RESERVE_MB: '8' }, ['--expose-gc']);
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal}: ${r.err}`);
    const { err1, err2, s0, s1, s2, s3, info } = JSON.parse(r.out);
    assert.equal(info.totalMemory, 64 * MiB);
    assert.equal(info.reserveBytes, 8 * MiB);
    assert.equal(info.freeMemory, 24 * MiB); // 40 MiB block live
    oom(32 * MiB)(new Error(err1));
    assert.match(err1, /32\.0 MiB in use and 0\.0 MiB cached; the device has 32\.0 MiB free of 64\.0 MiB .* keeping 8\.0 MiB in reserve/);
    assert.equal(s1.rawAllocs, s0.rawAllocs);
    assert.equal(s1.reservedBytes, 32 * MiB);
    assert.equal(s2.cachedBytes, 32 * MiB, 'the first block was not released to the cache');
    // the 40 MiB block: refused, cached 32 MiB freed, retried and granted
    assert.equal(s3.rawFrees - s2.rawFrees, 1);
    assert.equal(s3.rawAllocs - s2.rawAllocs, 1);
    assert.equal(s3.refusedGrowths - s2.refusedGrowths, 1);
    assert.equal(s3.reservedBytes, 40 * MiB);
    assert.equal(s3.cachedBytes, 0);
    oom(24 * MiB)(new Error(err2));
    assert.match(err2, /40\.0 MiB in use and 0\.0 MiB cached; the device has 24\.0 MiB free of 64\.0 MiB/);
  });

test('PEFT_TS_CUDA_RESERVE_MB must be a number', { skip }, () => {
  const r = run('console.log(JSON.stringify(m.cudaStatus()))', { PEFT_TS_CUDA_RESERVE_MB: 'lots' });
  assert.equal(r.status, 0, r.err);
  assert.match(JSON.parse(r.out).reason, /PEFT_TS_CUDA_RESERVE_MB must be a number of MiB >= 0, got 'lots'/);
});
