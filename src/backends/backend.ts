// The kernel contract. Every kernel works on contiguous row-major float32 (or int32 ids)
// buffers that the caller allocates; kernels never allocate their outputs. The autograd
// layer (src/tensor/ops) composes these into forward and backward passes, so a backend
// only has to be fast, not clever. `reference` is the oracle; `cpu` overrides what it
// accelerates and inherits the rest.

export type F32 = Float32Array;
export type I32 = Int32Array;

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'relu' | 'sigmoid'
  | 'silu' | 'gelu' | 'gelu_tanh' | 'abs' | 'square' | 'recip';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'pow';

/** Buffers a backend allocates (float32, int32 ids, or 16-bit floats). */
export type AnyBuf = Float32Array | Int32Array | Uint16Array;

/** Sizes and options of a fused attention call (see Backend.attention). */
export interface AttentionShape {
  B: number; H: number; Hk: number; T: number; S: number; D: number;
  scale: number;
  /** Strides of the additive bias over [B, H, T, S] (0 where broadcast); ignored without a bias. */
  biasStrides: [number, number, number, number];
  /** Dropout on the probabilities (0 for none), mask from dropoutHash(seed, flat [B,H,T,S] index). */
  dropoutP: number;
  seed: number;
}

export interface Backend {
  readonly name: string;

  /**
   * Optional, for asynchronous (device) backends. alloc returns a host-visible buffer the
   * backend's kernels can use without copies (CUDA managed memory), contents unspecified.
   * Kernels may run after they return, in call order (one stream). synchronize() waits for
   * them: the tensor layer calls it before any host read or write of a buffer. fill() zeroes
   * or sets a buffer in stream order (a host fill could race queued kernels).
   */
  alloc?: {
    (n: number, kind: 'float32' | 'int32' | 'uint16'): AnyBuf;
    /** Bytes (e.g. Linear4bit's packed NF4 codes), so kernels read them without staging. */
    (n: number, kind: 'uint8'): Uint8Array;
  };
  synchronize?(): void;
  fill?(out: AnyBuf, value: number): void;

  /**
   * Batched GEMM: for each b in [0,batch): C_b = alpha * op(A_b) @ op(B_b) + beta * C_b.
   * op(A_b) is [m,k], op(B_b) is [k,n]. A_b starts at a[b*strideA] (strideA 0 broadcasts).
   * transA: A_b is stored [k,m]. transB: B_b is stored [n,k].
   */
  matmul(a: F32, b: F32, c: F32, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number,
    alpha: number, beta: number): void;

  /** out[i] = f(x[i]) */
  unary(op: UnaryOp, x: F32, out: F32): void;
  /** gx[i] = gy[i] * f'(x[i]) (accumulate=false overwrites). */
  unaryBackward(op: UnaryOp, x: F32, gy: F32, gx: F32): void;

  /**
   * Broadcasting binary op. outShape is the broadcast shape; aStrides/bStrides are strides
   * into a and b per output dim (0 where that operand is broadcast).
   */
  binary(op: BinaryOp, a: F32, aStrides: number[], b: F32, bStrides: number[], out: F32,
    outShape: number[]): void;
  /** out[i] = x[i] * s + t */
  affine(x: F32, s: number, t: number, out: F32): void;
  /**
   * Inverted-dropout mask: out[i] = 1/(1-p) where dropoutHash(seed, i) >= floor(p * 2^32),
   * else 0 (reference/math.ts). Counter-based, so every backend makes the same mask.
   */
  dropoutMask(out: F32, p: number, seed: number): void;
  /**
   * Optional: out[i] = x[i] * mask[i] with dropoutMask's mask for (p, seed), in one pass and
   * without storing the mask (dropout's backward makes it again from the seed).
   */
  dropoutApply?(x: F32, out: F32, p: number, seed: number): void;
  /** y[i] += alpha * x[i] */
  axpy(alpha: number, x: F32, y: F32): void;

  /** View x as [outer, mid, inner]; out[o, i] = sum over mid. */
  sumMid(x: F32, outer: number, mid: number, inner: number, out: F32): void;
  /** View x as [outer, mid, inner]; out[o, i] = max over mid. */
  maxMid(x: F32, outer: number, mid: number, inner: number, out: F32): void;

  /** Copy x (shape) into out permuted by perm: out.shape[i] = shape[perm[i]]. */
  permute(x: F32, shape: number[], perm: number[], out: F32): void;
  /** Strided copy: out (outShape, contiguous) = x[offset + sum(idx_i*strides_i)]. Also reverse (scatter add) with add=true. */
  stridedCopy(x: F32, offset: number, strides: number[], outShape: number[], out: F32): void;
  stridedAdd(gOut: F32, outShape: number[], gx: F32, offset: number, strides: number[]): void;

  /** Row softmax over the last dim of [rows, cols]. */
  softmax(x: F32, rows: number, cols: number, out: F32): void;
  softmaxBackward(y: F32, gy: F32, rows: number, cols: number, gx: F32): void;
  logSoftmax(x: F32, rows: number, cols: number, out: F32): void;
  logSoftmaxBackward(y: F32, gy: F32, rows: number, cols: number, gx: F32): void;

  /**
   * Fused softmax cross-entropy per row. loss[r] = logsumexp(x_r) - x_r[t_r], 0 where
   * t_r == ignoreIndex. lse[r] saved for backward. Returns the count of non-ignored rows.
   */
  crossEntropy(x: F32, targets: I32, rows: number, cols: number, ignoreIndex: number,
    loss: F32, lse: F32): number;
  /** gx[r] = (softmax(x_r) - onehot(t_r)) * gLoss[r]; zero for ignored rows. */
  crossEntropyBackward(x: F32, targets: I32, lse: F32, gLoss: F32, rows: number, cols: number,
    ignoreIndex: number, gx: F32): void;

  /** LayerNorm over last dim; w/b may be null. mean/rstd saved per row. */
  layerNorm(x: F32, w: F32 | null, b: F32 | null, rows: number, cols: number, eps: number,
    out: F32, mean: F32, rstd: F32): void;
  /** gw/gb are accumulated (+=) when given. */
  layerNormBackward(x: F32, w: F32 | null, mean: F32, rstd: F32, gy: F32, rows: number,
    cols: number, gx: F32, gw: F32 | null, gb: F32 | null): void;
  /** RMSNorm: out = x * rstd * w (w may be null); rstd saved per row. */
  rmsNorm(x: F32, w: F32 | null, rows: number, cols: number, eps: number, out: F32, rstd: F32): void;
  rmsNormBackward(x: F32, w: F32 | null, rstd: F32, gy: F32, rows: number, cols: number,
    gx: F32, gw: F32 | null): void;

  /** out[i, :] = table[ids[i], :]; throws on id out of range. */
  embedding(table: F32, ids: I32, dim: number, out: F32): void;
  /** gTable[ids[i], :] += gy[i, :] */
  embeddingBackward(gy: F32, ids: I32, dim: number, gTable: F32): void;

  /**
   * Rotary embedding, HF "rotate_half" layout, on x [B, H, T, D] (in place allowed):
   * out[..t, i] = x[i]*cos[pos_t,i] - x[i+D/2]*sin[pos_t,i] (first half), and
   * x[i+D/2]*cos + x[i]*sin (second half). cos/sin are [maxPos, D/2]; pos is [B*T] or [T].
   * inverse=true rotates by -angle (the backward pass).
   */
  rope(x: F32, cos: F32, sin: F32, pos: I32, b: number, h: number, t: number, d: number,
    inverse: boolean, out: F32): void;

  /** AdamW step in place (decoupled weight decay, bias correction with step t >= 1). */
  adamw(p: F32, g: F32, m: F32, v: F32, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number): void;

  /**
   * Optional fused attention that never materialises the [T, S] matrix. q/out [B,H,T,D],
   * k/v [B,Hk,S,D] (query head h reads kv head floor(h / (H/Hk))), bias additive or null.
   * out = dropout(softmax(scale * q k^T + bias)) v per row; a fully masked row gives zeros.
   * lse [B,H,T] keeps each row's log-sum-exp (-inf when fully masked) for the backward.
   * Backends without it get the composite (matmul, softmax, dropout, matmul) path.
   */
  attention?(q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32): void;
  /** Gradients of attention for q, k and v (overwritten; gk/gv sum over the query heads sharing a kv head). */
  attentionBackward?(q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32, gOut: F32,
    gq: F32, gk: F32, gv: F32): void;

  /**
   * Optional: NF4 dequantization of elements [start, start + count) of a packed 4-bit weight
   * (two codes per byte, the even element in the high nibble) into out[0 .. count):
   *   out[i] = code[nibble(start + i)] * absmax[block(start + i) - block(start)]
   * as one float32 product, block(j) = floor(j / blocksize). absmax holds the float32
   * scales from the block of `start` on (callers expand a double-quantized absmax for the
   * blocks of one tile). code is the 16-entry map. Linear4bit uses it per weight tile.
   */
  dequantizeNF4?(packed: Uint8Array, absmax: F32, blocksize: number, code: F32, start: number, count: number, out: F32): void;
  /**
   * Optional: expands a double-quantized absmax (bnb's dequantize_blockwise + offset) into
   * float32 scales: out[i] = f32(f32(code[q[i]] * absmax[floor(i / blocksize)]) + offset) for
   * i < n, two float32 roundings (no fused multiply-add). code is the 256-entry map. Device
   * backends use it to build Linear4bit's scales once per layer in their own memory.
   */
  dequantizeAbsmax?(q: Uint8Array, absmax: F32, blocksize: number, code: F32, offset: number, n: number, out: F32): void;

  /**
   * Optional: GEMM with a frozen bfloat16 matrix W (raw bits) as the right operand, for
   * linear layers whose weight is stored in bf16. W is widened exactly to float32:
   *   c[m,n] = alpha * a[m,k] @ op(W) + beta * c,  op(W) [k,n]
   * transB: W is stored [n,k] (Linear forward y = x W^T, Conv1D input gradient); else W is
   * stored [k,n] (Linear input gradient gx = gy W, Conv1D forward). Leading batch dims of
   * the activation are folded into m by the caller, so there is no batch argument. The
   * reference is this exact widening followed by the float32 GEMM; cpu matches it (sgemm on
   * widened tiles of W); cuda may round a to bf16 for tensor cores (see its README).
   * Without it, the tensor layer widens tiles of W itself and calls matmul.
   */
  matmulBf16?(a: F32, w: Uint16Array, c: F32, m: number, n: number, k: number, transB: boolean,
    alpha: number, beta: number, roundA?: boolean): void;
  /**
   * Optional: matmul's arguments and result under autocast (mixed precision, as
   * torch.autocast('cpu', torch.bfloat16)): each element of op(A_b) and op(B_b) is rounded to
   * bfloat16 (nearest even), products accumulate in float32, C stays float32. The reference
   * is exactly that rounding followed by the float32 matmul; fast backends (cpu: oneDNN's
   * bf16 matmul, AMX or AVX512-BF16) differ only in the order of the float32 sums.
   * matmulBf16's roundA does the same for its activation (W is bf16 already).
   * Without it, the tensor layer rounds copies of the operands and calls matmul.
   */
  matmulAutocast?(a: F32, b: F32, c: F32, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number, alpha: number, beta: number): void;
  /** Optional: out[i, :] = float32(table[ids[i], :]) from a bfloat16 table; throws on id out of range. */
  embeddingBf16?(table: Uint16Array, ids: I32, dim: number, out: F32): void;

  /** bf16 bits (Uint16) -> f32 and back (round to nearest even). */
  bf16ToF32(x: Uint16Array, out: F32): void;
  f32ToBf16(x: F32, out: Uint16Array): void;
}
