// bf16 <-> f32 bit conversions, bit-exact with the reference backend: widening is a shift;
// narrowing rounds to nearest even, and NaNs stay quiet NaNs (top bits | 0x40).
#include "common.cuh"

namespace pc {
namespace {

__global__ void bf16ToF32Kernel(const uint16_t* x, uint32_t* out, int64_t n) {
  PC_GRID_STRIDE(i, n) out[i] = (uint32_t)x[i] << 16;
}

__global__ void f32ToBf16Kernel(const uint32_t* x, uint16_t* out, int64_t n) {
  PC_GRID_STRIDE(i, n) {
    const uint32_t bits = x[i];
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0) {
      out[i] = (uint16_t)((bits >> 16) | 0x40u);
    } else {
      const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
      out[i] = (uint16_t)(((bits + rounding) >> 16) & 0xffffu);
    }
  }
}

}  // namespace

cudaError_t bf16ToF32(cudaStream_t s, const uint16_t* x, float* out, int64_t n) {
  if (n <= 0) return cudaSuccess;
  bf16ToF32Kernel<<<gridFor(n), kThreads, 0, s>>>(x, reinterpret_cast<uint32_t*>(out), n);
  return cudaGetLastError();
}

cudaError_t f32ToBf16(cudaStream_t s, const float* x, uint16_t* out, int64_t n) {
  if (n <= 0) return cudaSuccess;
  f32ToBf16Kernel<<<gridFor(n), kThreads, 0, s>>>(reinterpret_cast<const uint32_t*>(x), out, n);
  return cudaGetLastError();
}

}  // namespace pc
