// Language-model loss without the [N, V] logits: lm head and cross-entropy fused, a chunk of
// rows at a time (the "fused linear cross-entropy" of Liger/Apple's CCE, done simply). The
// vocabulary projection of a 16k-token batch is 3.3 GB in float32 for GPT-2 and 8.4 GB for
// Llama 3; here only one chunk of logits ever exists (128 MiB by default: 256 rows of
// Llama 3's vocabulary, whose GEMMs run ~15% faster than at 128 rows). The gradients for h (and for w when
// it trains) are computed chunk by chunk in the forward, while the logits are at hand, and
// scaled by the upstream gradient in backward, so nothing of size V is kept for backward.
import { getBackend } from '../registry.js';
import { Tensor, empty, fillTensor, isGradEnabled, result } from '../tensor.js';
import { mul } from './basic.js';
import { autocastDtype, matmulAutocast } from '../autocast.js';

const B = () => getBackend();

export interface LinearCrossEntropyOptions {
  ignoreIndex?: number;
  /** Rows of logits computed at once (default: about 128 MiB of float32 logits). */
  chunkRows?: number;
}

/**
 * mean over non-ignored rows of cross_entropy(h @ w^T, targets): h [N, H], w [V, H] (float32,
 * or a frozen bfloat16 weight used as stored; no bias), targets int32 [N] with ignoreIndex
 * (-100) skipped. Equals crossEntropy(linear(h, w), targets) without materialising the
 * logits; nan when every row is ignored (as torch). Under autocast('bfloat16') the GEMMs take
 * bf16 operands (a float32 w is rounded to a bf16 copy once per call, not once per chunk).
 */
export function linearCrossEntropy(h: Tensor, w: Tensor, targets: Tensor, opts: LinearCrossEntropyOptions = {}): Tensor {
  const ig = opts.ignoreIndex ?? -100;
  if (h.ndim !== 2 || w.ndim !== 2 || h.shape[1] !== w.shape[1]) {
    throw new Error(`linearCrossEntropy: h [N, H] and w [V, H] expected, got [${h.shape}] and [${w.shape}]`);
  }
  const [n, hd] = h.shape, v = w.shape[0];
  if (targets.dtype !== 'int32' || targets.size !== n) throw new Error(`linearCrossEntropy: targets must be int32 [${n}], got ${targets.dtype} [${targets.shape}]`);
  const chunk = Math.max(1, Math.min(n, opts.chunkRows ?? Math.floor((1 << 25) / v)));
  const t = targets.ints;
  let count = 0;
  for (let i = 0; i < n; i++) if (t[i] !== ig) count++;
  const needH = isGradEnabled() && h.requiresGrad, needW = isGradEnabled() && w.requiresGrad;
  if (w.dtype !== 'float32' && w.dtype !== 'bfloat16') throw new TypeError(`linearCrossEntropy: w is ${w.dtype}, expected float32 or bfloat16`);
  if (w.dtype === 'bfloat16' && w.requiresGrad) throw new Error('linearCrossEntropy: a bfloat16 w is frozen storage and cannot require grad');
  const scale = count === 0 ? 0 : 1 / count;
  const be = B();
  const mixed = autocastDtype() === 'bfloat16';
  // The GEMMs with w: through a bf16 copy of w (w itself when bf16) and matmulBf16 where the
  // backend has it; else float32 (w widened once when bf16, rounded operands under autocast).
  let w16: Tensor | null = null, wf: Tensor | null = null;
  if (be.matmulBf16 && (w.dtype === 'bfloat16' || mixed)) {
    if (w.dtype === 'bfloat16') w16 = w;
    else { w16 = empty([v, hd], 'bfloat16', false); be.f32ToBf16(w.buf, w16.halfBuf); }
  } else if (w.dtype === 'bfloat16') {
    wf = empty([v, hd], 'float32', false);
    be.bf16ToF32(w.halfBuf, wf.buf);
  }
  const wBuf = wf ? wf.buf : w.dtype === 'float32' ? w.buf : null;
  const gemmW = (a: Float32Array, c: Float32Array, m: number, n: number, k: number, trans: boolean) => {
    if (w16) be.matmulBf16!(a, w16.halfBuf, c, m, n, k, trans, 1, 0, mixed);
    else if (mixed) matmulAutocast(be, a, wBuf!, c, 1, m, n, k, false, trans, 0, 0, 1, 0);
    else be.matmul(a, wBuf!, c, 1, m, n, k, false, trans, 0, 0, 1, 0);
  };
  const gh = needH ? empty([n, hd], 'float32', false) : null;
  const gw = needW ? empty([v, hd], 'float32', true) : null;
  const logits = empty([chunk * v], 'float32', false);
  const glog = needH || needW ? empty([chunk * v], 'float32', false) : null;
  const lse = empty([chunk], 'float32', false), rowLoss = empty([chunk], 'float32', false);
  const gRow = empty([chunk], 'float32', false);
  fillTensor(gRow, scale); // d(mean)/d(row loss); ignored rows get 0 from the kernel
  const total = empty([1], 'float32', true), part = empty([1], 'float32', false);
  const tb = targets.intBuf;
  for (let r0 = 0; r0 < n; r0 += chunk) {
    const rows = Math.min(chunk, n - r0);
    const hs = h.buf.subarray(r0 * hd, (r0 + rows) * hd), ts = tb.subarray(r0, r0 + rows);
    const lg = logits.buf.subarray(0, rows * v);
    gemmW(hs, lg, rows, v, hd, true);
    be.crossEntropy(lg, ts, rows, v, ig, rowLoss.buf.subarray(0, rows), lse.buf.subarray(0, rows));
    be.sumMid(rowLoss.buf.subarray(0, rows), 1, rows, 1, part.buf);
    be.axpy(1, part.buf, total.buf);
    if (!glog) continue;
    const gl = glog.buf.subarray(0, rows * v);
    be.crossEntropyBackward(lg, ts, lse.buf.subarray(0, rows), gRow.buf.subarray(0, rows), rows, v, ig, gl);
    if (gh) gemmW(gl, gh.buf.subarray(r0 * hd, (r0 + rows) * hd), rows, hd, v, false);
    if (gw && mixed) matmulAutocast(be, gl, hs, gw.buf, 1, v, hd, rows, true, false, 0, 0, 1, 1);
    else if (gw) be.matmul(gl, hs, gw.buf, 1, v, hd, rows, true, false, 0, 0, 1, 1);
  }
  for (const x of [logits, glog, lse, rowLoss, gRow, part, wf, w16 === w ? null : w16]) x?.dispose();
  be.affine(total.buf, count === 0 ? NaN : scale, 0, total.buf);
  const loss = total.shareAs([]);
  total.dispose();
  if (!gh && !gw) return loss;
  return result(loss, 'linearCrossEntropy', [h, w], (g) => {
    const out = [gh ? mul(gh, g) : null, gw ? mul(gw, g) : null];
    gh?.dispose(); gw?.dispose();
    return out;
  });
}
