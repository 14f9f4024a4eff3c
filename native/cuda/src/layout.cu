// Strided gather (stridedCopy, permute) and scatter-add (stridedAdd) over a Walk. The
// scatter uses atomicAdd so views that reach one element several times (stride 0) still
// sum every contribution.
#include "common.cuh"

namespace pc {
namespace {

template <typename Idx>
__global__ void gatherKernel(const float* x, Walk w, float* out, int64_t n) {
  PC_GRID_STRIDE(i, n) {
    int64_t ox, unused;
    walkOffsets<Idx>((Idx)i, w, ox, unused);
    out[i] = x[ox];
  }
}

template <typename Idx>
__global__ void scatterAddKernel(const float* g, Walk w, float* gx, int64_t n) {
  PC_GRID_STRIDE(i, n) {
    int64_t ox, unused;
    walkOffsets<Idx>((Idx)i, w, ox, unused);
    atomicAdd(gx + ox, g[i]);
  }
}

}  // namespace

cudaError_t stridedCopy(cudaStream_t s, const float* x, const Walk& w, float* out, int64_t n) {
  if (n <= 0) return cudaSuccess;
  if (n < ((int64_t)1 << 31)) gatherKernel<uint32_t><<<gridFor(n), kThreads, 0, s>>>(x, w, out, n);
  else gatherKernel<int64_t><<<gridFor(n), kThreads, 0, s>>>(x, w, out, n);
  return cudaGetLastError();
}

cudaError_t stridedAdd(cudaStream_t s, const float* g, const Walk& w, float* gx, int64_t n) {
  if (n <= 0) return cudaSuccess;
  if (n < ((int64_t)1 << 31)) scatterAddKernel<uint32_t><<<gridFor(n), kThreads, 0, s>>>(g, w, gx, n);
  else scatterAddKernel<int64_t><<<gridFor(n), kThreads, 0, s>>>(g, w, gx, n);
  return cudaGetLastError();
}

}  // namespace pc
