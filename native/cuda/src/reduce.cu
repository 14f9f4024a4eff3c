// sumMid / maxMid over x viewed as [outer, mid, inner]. Three plain shapes of work:
//   inner == 1, long rows: one block per row, block reduction;
//   inner > 1: a block of 32 x 8 threads per (outer, 32 columns), the 8 rows of threads
//     stride over mid and are combined through shared memory (reads stay coalesced);
//   short mid: one thread per output.
#include "common.cuh"

namespace pc {
namespace {

struct SumOp {
  static __device__ __forceinline__ float init() { return 0.0f; }
  static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
  static __device__ __forceinline__ float block(float v, float* sh) { return blockSum(v, sh); }
};
struct MaxOp {
  static __device__ __forceinline__ float init() { return -CUDART_INF_F; }
  static __device__ __forceinline__ float apply(float a, float b) { return nanMax(a, b); }
  static __device__ __forceinline__ float block(float v, float* sh) { return blockMax(v, sh); }
};

template <class Op>
__global__ void __launch_bounds__(1024) rowReduce(const float* x, int64_t rows, int64_t cols, float* out) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float acc = Op::init();
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) acc = Op::apply(acc, xr[j]);
    acc = Op::block(acc, sh);
    if (threadIdx.x == 0) out[r] = acc;
  }
}

constexpr int kTileX = 32, kTileY = 8;

template <class Op>
__global__ void tileReduce(const float* x, int64_t outer, int64_t mid, int64_t inner, float* out) {
  __shared__ float sh[kTileY][kTileX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = (int64_t)blockIdx.x * kTileX + tx;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    float acc = Op::init();
    if (i < inner)
      for (int64_t j = ty; j < mid; j += kTileY) acc = Op::apply(acc, x[(o * mid + j) * inner + i]);
    sh[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < inner) {
      float v = sh[0][tx];
      for (int k = 1; k < kTileY; k++) v = Op::apply(v, sh[k][tx]);
      out[o * inner + i] = v;
    }
    __syncthreads();  // sh is reused by the next o
  }
}

template <class Op>
__global__ void threadReduce(const float* x, int64_t outer, int64_t mid, int64_t inner, float* out) {
  PC_GRID_STRIDE(k, outer * inner) {
    const int64_t o = k / inner, i = k % inner;
    float acc = Op::init();
    for (int64_t j = 0; j < mid; j++) acc = Op::apply(acc, x[(o * mid + j) * inner + i]);
    out[k] = acc;
  }
}

template <class Op>
cudaError_t reduceMid(cudaStream_t s, const float* x, int64_t outer, int64_t mid, int64_t inner, float* out) {
  if (outer <= 0 || inner <= 0) return cudaSuccess;
  if (mid <= 16) {
    threadReduce<Op><<<gridFor(outer * inner), kThreads, 0, s>>>(x, outer, mid, inner, out);
  } else if (inner == 1) {
    rowReduce<Op><<<gridRows(outer), rowThreads(mid), 0, s>>>(x, outer, mid, out);
  } else {
    const int64_t tiles = (inner + kTileX - 1) / kTileX;
    if (tiles > 0x7fffffff) return cudaErrorInvalidConfiguration;
    const dim3 grid((unsigned)tiles, (unsigned)(outer < 65535 ? outer : 65535));
    tileReduce<Op><<<grid, dim3(kTileX, kTileY), 0, s>>>(x, outer, mid, inner, out);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t sumMid(cudaStream_t s, const float* x, int64_t outer, int64_t mid, int64_t inner, float* out) {
  return reduceMid<SumOp>(s, x, outer, mid, inner, out);
}
cudaError_t maxMid(cudaStream_t s, const float* x, int64_t outer, int64_t mid, int64_t inner, float* out) {
  return reduceMid<MaxOp>(s, x, outer, mid, inner, out);
}

}  // namespace pc
