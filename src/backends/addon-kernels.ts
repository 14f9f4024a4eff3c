// The kernels both native addons (cpu: native/src, cuda: native/cuda/src) export with the
// contract's own arguments; only unary/binary take op codes (indices into UNARY_OPS /
// BINARY_OPS, matching the enums in native/src/kernels.h). One binding serves both, so a
// kernel the two addons share is declared and wired once.
import type { Backend, BinaryOp, UnaryOp } from './backend.js';

export const UNARY_OPS: readonly UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'relu', 'sigmoid', 'silu', 'gelu',
  'gelu_tanh', 'abs', 'square', 'recip'];
export const BINARY_OPS: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'pow'];

/** Kernels whose addon function takes exactly the Backend method's arguments. */
export const DIRECT_KERNELS = [
  'matmul', 'affine', 'dropoutMask', 'axpy', 'sumMid', 'maxMid', 'permute', 'stridedCopy', 'stridedAdd',
  'softmax', 'softmaxBackward', 'logSoftmax', 'logSoftmaxBackward', 'crossEntropy', 'crossEntropyBackward',
  'layerNorm', 'layerNormBackward', 'rmsNorm', 'rmsNormBackward', 'embedding', 'embeddingBackward', 'rope', 'adamw',
  'bf16ToF32', 'f32ToBf16', 'matmulBf16', 'embeddingBf16', 'dequantizeNF4',
] as const;
/** Direct kernels only some addons have (cpu: matmulAutocast, dropoutApply); bound when present. */
export const OPTIONAL_KERNELS = ['matmulAutocast', 'dropoutApply'] as const;
type Optional = (typeof OPTIONAL_KERNELS)[number];
type Direct = (typeof DIRECT_KERNELS)[number];

/** What both addons export: the direct kernels plus unary/binary with op codes. */
export type AddonKernels = Required<Pick<Backend, Direct>> & Pick<Backend, Optional> & {
  unary(op: number, x: Float32Array, out: Float32Array): void;
  unaryBackward(op: number, x: Float32Array, gy: Float32Array, gx: Float32Array): void;
  binary(op: number, a: Float32Array, aStrides: number[], b: Float32Array, bStrides: number[], out: Float32Array, outShape: number[]): void;
};

const unaryCode = new Map(UNARY_OPS.map((o, i) => [o, i]));
const binaryCode = new Map(BINARY_OPS.map((o, i) => [o, i]));

function code<T>(table: Map<T, number>, op: T, who: string, kind: string): number {
  const c = table.get(op);
  if (c === undefined) throw new Error(`${who} backend: unknown ${kind} op '${String(op)}'`);
  return c;
}

/** The Backend methods an addon provides, bound to it (`who` names it in errors). */
export function bindAddonKernels(n: AddonKernels, who: string): Pick<Backend, Direct | Optional | 'unary' | 'unaryBackward' | 'binary'> {
  const out: Record<string, unknown> = {};
  for (const k of DIRECT_KERNELS) out[k] = n[k];
  for (const k of OPTIONAL_KERNELS) if (n[k]) out[k] = n[k];
  return {
    ...(out as Pick<Backend, Direct | Optional>),
    unary: (op, x, y) => n.unary(code(unaryCode, op, who, 'unary'), x, y),
    unaryBackward: (op, x, gy, gx) => n.unaryBackward(code(unaryCode, op, who, 'unary'), x, gy, gx),
    binary: (op, a, sa, b, sb, o, shape) => n.binary(code(binaryCode, op, who, 'binary'), a, sa, b, sb, o, shape),
  };
}
