// NF4 weights of Linear4bit (src/quant): the dequantization of a tile of the packed 4-bit
// codes (Backend.dequantizeNF4) and the expansion of a double-quantized absmax to float32
// (Backend.dequantizeAbsmax), bit-exact with the reference backend. Products and sums are
// single float32 operations (__fmul_rn / __fadd_rn: never contracted into an FMA, which
// would round once instead of twice). The maps are passed by value and copied to shared
// memory, so nothing on the host has to be staged for them.
#include "common.cuh"

namespace pc {
namespace {

// One thread per packed byte of [start, start + count): its two elements (the even one in
// the high nibble), each written when it falls inside the range.
__global__ void dequantizeNF4Kernel(const uint8_t* packed, const float* absmax, int64_t bs, int shift, NF4Code code,
  int64_t start, int64_t count, float* out) {
  __shared__ float c[16];
  if (threadIdx.x == 0) {
    for (int k = 0; k < 16; k++) c[k] = code.v[k];  // constant indices: no local-memory copy of the argument
  }
  __syncthreads();
  const int64_t end = start + count, p0 = start >> 1, np = ((end + 1) >> 1) - p0;
  const int64_t b0 = shift >= 0 ? start >> shift : start / bs;
  PC_GRID_STRIDE(p, np) {
    const int64_t j = (p0 + p) * 2;
    const unsigned byte = packed[p0 + p];
    if (j >= start) {
      const int64_t b = shift >= 0 ? j >> shift : j / bs;
      out[j - start] = __fmul_rn(c[byte >> 4], absmax[b - b0]);
    }
    if (j + 1 < end) {
      const int64_t b = shift >= 0 ? (j + 1) >> shift : (j + 1) / bs;
      out[j + 1 - start] = __fmul_rn(c[byte & 15u], absmax[b - b0]);
    }
  }
}

// out[i] = (code[q[i]] * absmax[i / bs]) + offset, two roundings (bnb: dequantize_blockwise + offset).
__global__ void dequantizeAbsmaxKernel(const uint8_t* q, const float* absmax, int64_t bs, ByteCode code, float offset,
  int64_t n, float* out) {
  __shared__ float c[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) c[i] = code.v[i];
  __syncthreads();
  PC_GRID_STRIDE(i, n) out[i] = __fadd_rn(__fmul_rn(c[q[i]], absmax[i / bs]), offset);
}

int log2Exact(int64_t v) {
  for (int s = 0; s < 62; s++) if ((int64_t)1 << s == v) return s;
  return -1;
}

}  // namespace

cudaError_t dequantizeNF4(cudaStream_t s, const uint8_t* packed, const float* absmax, int64_t blocksize,
  const NF4Code& code, int64_t start, int64_t count, float* out) {
  if (count <= 0) return cudaSuccess;
  const int64_t bytes = ((start + count + 1) >> 1) - (start >> 1);
  dequantizeNF4Kernel<<<gridFor(bytes), kThreads, 0, s>>>(packed, absmax, blocksize, log2Exact(blocksize), code, start, count, out);
  return cudaGetLastError();
}

cudaError_t dequantizeAbsmax(cudaStream_t s, const uint8_t* q, const float* absmax, int64_t blocksize, const ByteCode& code,
  float offset, int64_t n, float* out) {
  if (n <= 0) return cudaSuccess;
  dequantizeAbsmaxKernel<<<gridFor(n), kThreads, 0, s>>>(q, absmax, blocksize, code, offset, n, out);
  return cudaGetLastError();
}

}  // namespace pc
