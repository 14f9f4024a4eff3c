// Rotary embedding, HF rotate_half layout, on [B, H, T, D] rows: one block per row
// (grid-stride), one thread per (i, i + D/2) pair, which it reads before writing, so out
// may alias x. inverse rotates by -angle.
#include "common.cuh"

namespace pc {
namespace {

__global__ void __launch_bounds__(1024) ropeKernel(const float* x, const float* cosT, const float* sinT, const int32_t* pos, int64_t npos,
  int64_t B, int64_t H, int64_t T, int64_t D, float sg, float* out) {
  const int64_t half = D / 2, rows = B * H * T;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t ti = r % T, bi = r / (H * T);
    const int64_t p = npos == T ? pos[ti] : pos[bi * T + ti];
    const float* c = cosT + p * half;
    const float* sn = sinT + p * half;
    const float* xr = x + r * D;
    float* o = out + r * D;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const float x1 = xr[i], x2 = xr[i + half], si = sg * sn[i], ci = c[i];
      o[i] = x1 * ci - x2 * si;
      o[i + half] = x2 * ci + x1 * si;
    }
  }
}

}  // namespace

cudaError_t rope(cudaStream_t s, const float* x, const float* cos, const float* sin, const int32_t* pos, int64_t npos,
  int64_t B, int64_t H, int64_t T, int64_t D, bool inverse, float* out) {
  const int64_t rows = B * H * T;
  if (rows <= 0 || D < 2) return cudaSuccess;
  ropeKernel<<<gridRows(rows), rowThreads(D / 2), 0, s>>>(x, cos, sin, pos, npos, B, H, T, D, inverse ? -1.0f : 1.0f, out);
  return cudaGetLastError();
}

}  // namespace pc
