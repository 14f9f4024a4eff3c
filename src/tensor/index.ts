export { Tensor, noGrad, enableGrad, isGradEnabled, empty } from './tensor.js';
export type { DType, Device, GradNode } from './tensor.js';
export { tidy, tidyAsync, keep } from './memory.js';
export { memoryStats, resetPeakMemory, clearPool } from './storage.js';
export { getBackend, setBackend, withBackend, registerBackend } from './registry.js';
export { Rng, manualSeed, defaultRng } from './random.js';
export * from './ops/basic.js';
export * from './ops/nn.js';
export { checkpoint } from './ops/checkpoint.js';
