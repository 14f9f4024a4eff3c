// Device helpers shared by the kernel files: launch shapes, grid-stride loops and
// warp-shuffle block reductions. Kept deliberately plain.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <math_constants.h>

#include "kernels.h"

namespace pc {

constexpr int kThreads = 256;

/** Blocks for a grid-stride loop over n elements (capped; the loop covers the rest). */
inline unsigned gridFor(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > 65536 ? 65536 : b);
}

/** Blocks for one-block-per-row kernels (grid-stride over rows). */
inline unsigned gridRows(int64_t rows) { return (unsigned)(rows < 65535 ? (rows < 1 ? 1 : rows) : 65535); }

/** Threads per block for a row of `cols` elements: a power of two in [32, 1024] (row kernels
 *  are declared __launch_bounds__(1024) so any of these fits their register budget). */
inline int rowThreads(int64_t cols) {
  int t = 32;
  while (t < 1024 && (int64_t)t * 4 < cols) t *= 2;
  return t;
}

#define PC_GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

/** Math.max semantics for the reductions: a NaN on either side wins. */
__device__ __forceinline__ float nanMax(float a, float b) { return (b > a || b != b) ? b : a; }

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = nanMax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 (<= 1024), blockDim.y == 1. Every
// thread gets the result; every thread of the block must call them. `sh` holds 32 floats;
// the leading barrier makes back-to-back calls on the same `sh` safe.
__device__ __forceinline__ float blockSum(float v, float* sh) {
  v = warpSum(v);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  return warpSum(lane < nw ? sh[lane] : 0.0f);
}
__device__ __forceinline__ float blockMax(float v, float* sh) {
  v = warpMax(v);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  return warpMax(lane < nw ? sh[lane] : -CUDART_INF_F);
}

}  // namespace pc
