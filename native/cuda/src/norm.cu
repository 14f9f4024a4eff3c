// LayerNorm and RMSNorm forward / backward. Row statistics and gx: one block per row.
// Weight / bias gradients are column sums over rows: blocks of 32 columns x 8 row-threads
// each sum a chunk of rows, combine through shared memory and atomicAdd into gw / gb,
// which therefore accumulate (+=) as the contract says.
#include "common.cuh"

namespace pc {
namespace {

__global__ void __launch_bounds__(1024) layerNormKernel(const float* x, const float* w, const float* b, int64_t rows, int64_t cols, float eps,
  float* out, float* mean, float* rstd) {
  __shared__ float sh[32];
  const float n = (float)cols;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += xr[j];
    const float m = blockSum(s, sh) / n;
    float v = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) { const float d = xr[j] - m; v += d * d; }
    v = blockSum(v, sh) / n;
    const float rs = 1.0f / sqrtf(v + eps);
    if (threadIdx.x == 0) { mean[r] = m; rstd[r] = rs; }
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      float y = (xr[j] - m) * rs;
      if (w) y *= w[j];
      if (b) y += b[j];
      out[r * cols + j] = y;
    }
  }
}

// gx = rs * (d - mean(d) - xh * mean(d * xh)), d = gy * w, xh = (x - mean) * rs.
__global__ void __launch_bounds__(1024) layerNormBackwardKernel(const float* x, const float* w, const float* mean, const float* rstd,
  const float* gy, int64_t rows, int64_t cols, float* gx) {
  __shared__ float sh[32];
  const float n = (float)cols;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r * cols;
    const float m = mean[r], rs = rstd[r];
    float sd = 0.0f, sdx = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = gy[o + j] * (w ? w[j] : 1.0f);
      sd += d;
      sdx += d * (x[o + j] - m) * rs;
    }
    sd = blockSum(sd, sh) / n;
    sdx = blockSum(sdx, sh) / n;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xh = (x[o + j] - m) * rs;
      const float d = gy[o + j] * (w ? w[j] : 1.0f);
      gx[o + j] = rs * (d - sd - xh * sdx);
    }
  }
}

__global__ void __launch_bounds__(1024) rmsNormKernel(const float* x, const float* w, int64_t rows, int64_t cols, float eps, float* out,
  float* rstd) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += xr[j] * xr[j];
    ss = blockSum(ss, sh);
    const float rs = 1.0f / sqrtf(ss / (float)cols + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = xr[j] * rs * (w ? w[j] : 1.0f);
  }
}

// gx = d * rs - x * (sum(d * x) * rs^3 / cols), d = gy * w.
__global__ void __launch_bounds__(1024) rmsNormBackwardKernel(const float* x, const float* w, const float* rstd, const float* gy, int64_t rows,
  int64_t cols, float* gx) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r * cols;
    const float rs = rstd[r];
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dot += gy[o + j] * (w ? w[j] : 1.0f) * x[o + j];
    dot = blockSum(dot, sh);
    const float c = dot * rs * rs * rs / (float)cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = gy[o + j] * (w ? w[j] : 1.0f);
      gx[o + j] = d * rs - x[o + j] * c;
    }
  }
}

constexpr int kTileX = 32, kTileY = 8;

// gw[j] += sum_r gy[r,j] * xh[r,j]; gb[j] += sum_r gy[r,j]. xh = (x - mean) * rstd, or
// x * rstd when mean is null (RMSNorm).
__global__ void normColumnGrads(const float* x, const float* mean, const float* rstd, const float* gy, int64_t rows,
  int64_t cols, int64_t rowsPerBlock, float* gw, float* gb) {
  __shared__ float shw[kTileY][kTileX + 1];
  __shared__ float shb[kTileY][kTileX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = (int64_t)blockIdx.x * kTileX + tx;
  const int64_t r0 = (int64_t)blockIdx.y * rowsPerBlock;
  const int64_t r1 = r0 + rowsPerBlock < rows ? r0 + rowsPerBlock : rows;
  float aw = 0.0f, ab = 0.0f;
  if (j < cols) {
    for (int64_t r = r0 + ty; r < r1; r += kTileY) {
      const float g = gy[r * cols + j];
      const float xh = (x[r * cols + j] - (mean ? mean[r] : 0.0f)) * rstd[r];
      aw += g * xh;
      ab += g;
    }
  }
  shw[ty][tx] = aw;
  shb[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && j < cols) {
    float sw = 0.0f, sb = 0.0f;
    for (int k = 0; k < kTileY; k++) { sw += shw[k][tx]; sb += shb[k][tx]; }
    if (gw) atomicAdd(gw + j, sw);
    if (gb) atomicAdd(gb + j, sb);
  }
}

cudaError_t columnGrads(cudaStream_t s, const float* x, const float* mean, const float* rstd, const float* gy,
  int64_t rows, int64_t cols, float* gw, float* gb) {
  if ((!gw && !gb) || rows <= 0 || cols <= 0) return cudaSuccess;
  int64_t per = 256;
  while ((rows + per - 1) / per > 65535) per *= 2;
  const int64_t tiles = (cols + kTileX - 1) / kTileX;
  if (tiles > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid((unsigned)tiles, (unsigned)((rows + per - 1) / per));
  normColumnGrads<<<grid, dim3(kTileX, kTileY), 0, s>>>(x, mean, rstd, gy, rows, cols, per, gw, gb);
  return cudaGetLastError();
}

}  // namespace

cudaError_t layerNorm(cudaStream_t s, const float* x, const float* w, const float* b, int64_t rows, int64_t cols,
  float eps, float* out, float* mean, float* rstd) {
  if (rows <= 0) return cudaSuccess;
  layerNormKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, w, b, rows, cols, eps, out, mean, rstd);
  return cudaGetLastError();
}

cudaError_t layerNormBackward(cudaStream_t s, const float* x, const float* w, const float* mean, const float* rstd,
  const float* gy, int64_t rows, int64_t cols, float* gx, float* gw, float* gb) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  // weight grads first: they read gy and x, which gx may alias
  const cudaError_t e = columnGrads(s, x, mean, rstd, gy, rows, cols, gw, gb);
  if (e != cudaSuccess) return e;
  layerNormBackwardKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, w, mean, rstd, gy, rows, cols, gx);
  return cudaGetLastError();
}

cudaError_t rmsNorm(cudaStream_t s, const float* x, const float* w, int64_t rows, int64_t cols, float eps, float* out,
  float* rstd) {
  if (rows <= 0) return cudaSuccess;
  rmsNormKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, w, rows, cols, eps, out, rstd);
  return cudaGetLastError();
}

cudaError_t rmsNormBackward(cudaStream_t s, const float* x, const float* w, const float* rstd, const float* gy,
  int64_t rows, int64_t cols, float* gx, float* gw) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const cudaError_t e = columnGrads(s, x, nullptr, rstd, gy, rows, cols, gw, nullptr);
  if (e != cudaSuccess) return e;
  rmsNormBackwardKernel<<<gridRows(rows), rowThreads(cols), 0, s>>>(x, w, rstd, gy, rows, cols, gx);
  return cudaGetLastError();
}

}  // namespace pc
