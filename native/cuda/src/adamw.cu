// AdamW step in place, the cpu backend's float32 formula: decoupled weight decay, bias
// corrections bc1 / bc2 computed on the host.
#include "common.cuh"

namespace pc {
namespace {

__global__ void adamwKernel(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2,
  float eps, float decay, float ibc1, float ibc2) {
  const float ib1 = 1.0f - b1, ib2 = 1.0f - b2;
  PC_GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float mi = b1 * m[i] + ib1 * gi;
    const float vi = b2 * v[i] + ib2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - lr * (mi * ibc1) / (sqrtf(vi * ibc2) + eps);
  }
}

}  // namespace

cudaError_t adamw(cudaStream_t s, float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2,
  float eps, float wd, float bc1, float bc2) {
  if (n <= 0) return cudaSuccess;
  adamwKernel<<<gridFor(n), kThreads, 0, s>>>(p, g, m, v, n, lr, b1, b2, eps, 1.0f - lr * wd, 1.0f / bc1, 1.0f / bc2);
  return cudaGetLastError();
}

}  // namespace pc
