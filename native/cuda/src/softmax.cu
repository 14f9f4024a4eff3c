// Row softmax, log-softmax, their backward passes and fused cross-entropy: one block per
// row (grid-stride over rows), threads stride over the columns, block reductions combine.
// Formulas as the reference backend's, in float32.
#include "common.cuh"

namespace pc {
namespace {

// The row max (NaN-propagating, as the reference) and the sum of exp(x - max), each reduced
// over the block; every thread gets the result. Shared by softmax, log-softmax and cross-entropy.
__device__ float rowMax(const float* xr, int64_t cols, float* sh) {
  float mx = -CUDART_INF_F;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = nanMax(mx, xr[j]);
  return blockMax(mx, sh);
}

__device__ float rowSumExp(const float* xr, int64_t cols, float mx, float* sh) {
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(xr[j] - mx);
  return blockSum(sum, sh);
}

__global__ void __launch_bounds__(1024) softmaxKernel(const float* x, int64_t rows, int64_t cols, float* out) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float* orow = out + r * cols;
    const float mx = rowMax(xr, cols, sh);
    if (mx == -CUDART_INF_F) {  // fully masked row: all zeros (as the reference)
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) orow[j] = 0.0f;
      continue;
    }
    const float sum = rowSumExp(xr, cols, mx, sh);
    // each thread rewrites only the elements it read, so out may alias x
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) orow[j] = sum > 0.0f ? expf(xr[j] - mx) / sum : 0.0f;
  }
}

__global__ void __launch_bounds__(1024) logSoftmaxKernel(const float* x, int64_t rows, int64_t cols, float* out) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    const float mx = rowMax(xr, cols, sh);
    const float sum = rowSumExp(xr, cols, mx, sh);
    const float lse = mx + logf(sum);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = xr[j] - lse;
  }
}

// softmax: gx = y * (gy - sum(y*gy)); log-softmax: gx = gy - exp(y) * sum(gy).
template <bool LOG>
__global__ void __launch_bounds__(1024) softmaxBackwardKernel(const float* y, const float* gy, int64_t rows, int64_t cols, float* gx) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r * cols;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) acc += LOG ? gy[o + j] : y[o + j] * gy[o + j];
    acc = blockSum(acc, sh);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      gx[o + j] = LOG ? gy[o + j] - expf(y[o + j]) * acc : y[o + j] * (gy[o + j] - acc);
  }
}

__global__ void __launch_bounds__(1024) crossEntropyKernel(const float* x, const int32_t* t, int64_t rows, int64_t cols, int ignore, float* loss,
  float* lse) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    const float mx = rowMax(xr, cols, sh);
    const float sum = rowSumExp(xr, cols, mx, sh);
    if (threadIdx.x == 0) {
      const float l = mx + logf(sum);
      lse[r] = l;
      const int32_t tr = t[r];
      loss[r] = tr == ignore ? 0.0f : l - xr[tr];
    }
  }
}

__global__ void __launch_bounds__(1024) crossEntropyBackwardKernel(const float* x, const int32_t* t, const float* lse, const float* gLoss,
  int64_t rows, int64_t cols, int ignore, float* gx) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r * cols;
    const int32_t tr = t[r];
    if (tr == ignore) {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) gx[o + j] = 0.0f;
      continue;
    }
    const float g = gLoss[r], l = lse[r];
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = expf(x[o + j] - l) * g;
      gx[o + j] = j == tr ? v - g : v;
    }
  }
}

}  // namespace

cudaError_t softmax(cudaStream_t s, const float* x, int64_t rows, int64_t cols, float* out, bool log) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (log) logSoftmaxKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, rows, cols, out);
  else softmaxKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, rows, cols, out);
  return cudaGetLastError();
}

cudaError_t softmaxBackward(cudaStream_t s, const float* y, const float* gy, int64_t rows, int64_t cols, float* gx, bool log) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (log) softmaxBackwardKernel<true><<<gridRows(rows), rowThreads(cols), 0, s>>>(y, gy, rows, cols, gx);
  else softmaxBackwardKernel<false><<<gridRows(rows), rowThreads(cols), 0, s>>>(y, gy, rows, cols, gx);
  return cudaGetLastError();
}

cudaError_t crossEntropy(cudaStream_t s, const float* x, const int32_t* t, int64_t rows, int64_t cols, int ignore,
  float* loss, float* lse) {
  if (rows <= 0) return cudaSuccess;
  crossEntropyKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, t, rows, cols, ignore, loss, lse);
  return cudaGetLastError();
}

cudaError_t crossEntropyBackward(cudaStream_t s, const float* x, const int32_t* t, const float* lse, const float* gLoss,
  int64_t rows, int64_t cols, int ignore, float* gx) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  crossEntropyBackwardKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, t, lse, gLoss, rows, cols, ignore, gx);
  return cudaGetLastError();
}

}  // namespace pc
