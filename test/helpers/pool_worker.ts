// A Node worker thread for pool.test.ts: runs the cpu backend's elementwise kernels on its own
// inputs, many times, beside the main thread and other workers; reports 'ok' or the mismatch.
import { parentPort, workerData } from 'node:worker_threads';
import { cpuBackend } from '../../src/backends/index.js';
import { Rng } from '../../src/tensor/index.js';

const rng = new Rng((workerData as { seed: number }).seed);
const C = cpuBackend();
const x = Float32Array.from({ length: 100_000 }, () => rng.next() * 4 - 2);
const once = () => { const y = new Float32Array(x.length); C.unary('gelu', x, y); C.binary('add', y, [1], x, [1], y, [x.length]); return y; };
const want = new Uint32Array(once().buffer);
let msg = 'ok';
for (let rep = 0; rep < 200 && msg === 'ok'; rep++) {
  const got = new Uint32Array(once().buffer);
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) { msg = `rep ${rep} [${i}] differs`; break; }
}
parentPort!.postMessage(msg);
