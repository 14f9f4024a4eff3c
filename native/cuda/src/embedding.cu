// Embedding gather and its backward (scatter-add with atomicAdd: ids repeat). One block
// per id (grid-stride), threads over the embedding dim. Ids are checked on the host.
#include "common.cuh"

namespace pc {
namespace {

__global__ void __launch_bounds__(1024) embeddingKernel(const float* table, const int32_t* ids, int64_t n, int64_t dim, float* out) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const float* src = table + (int64_t)ids[i] * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = src[j];
  }
}

__global__ void __launch_bounds__(1024) embeddingBf16Kernel(const uint16_t* table, const int32_t* ids, int64_t n, int64_t dim, uint32_t* out) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const uint16_t* src = table + (int64_t)ids[i] * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = (uint32_t)src[j] << 16;
  }
}

__global__ void __launch_bounds__(1024) embeddingBackwardKernel(const float* gy, const int32_t* ids, int64_t n, int64_t dim, float* gTable) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    float* dst = gTable + (int64_t)ids[i] * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(dst + j, gy[i * dim + j]);
  }
}

}  // namespace

cudaError_t embedding(cudaStream_t s, const float* table, const int32_t* ids, int64_t n, int64_t dim, float* out) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  embeddingKernel<<<gridRows(n), rowThreads(dim), 0, s>>>(table, ids, n, dim, out);
  return cudaGetLastError();
}

cudaError_t embeddingBf16(cudaStream_t s, const uint16_t* table, const int32_t* ids, int64_t n, int64_t dim, float* out) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  embeddingBf16Kernel<<<gridRows(n), rowThreads(dim), 0, s>>>(table, ids, n, dim, reinterpret_cast<uint32_t*>(out));
  return cudaGetLastError();
}

cudaError_t embeddingBackward(cudaStream_t s, const float* gy, const int32_t* ids, int64_t n, int64_t dim, float* gTable) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  embeddingBackwardKernel<<<gridRows(n), rowThreads(dim), 0, s>>>(gy, ids, n, dim, gTable);
  return cudaGetLastError();
}

}  // namespace pc
