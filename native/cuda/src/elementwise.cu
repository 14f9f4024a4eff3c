// Elementwise kernels: unary ops and their gradients (the formulas of the reference
// backend, in float32 with the accurate libdevice functions), broadcasting binary ops,
// affine, axpy, dropout masks, scale and fills. One thread per element in a grid-stride loop.
#include "common.cuh"

namespace pc {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

__device__ __forceinline__ float unaryF(int op, float x) {
  switch (op) {
    case U_NEG: return -x;
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_SQRT: return sqrtf(x);
    case U_RSQRT: return 1.0f / sqrtf(x);
    case U_TANH: return tanhf(x);
    case U_RELU: return x > 0.0f ? x : 0.0f;
    case U_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case U_SILU: return x / (1.0f + expf(-x));
    case U_GELU: return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
    case U_GELU_TANH: return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    case U_ABS: return fabsf(x);
    case U_SQUARE: return x * x;
    case U_RECIP: return 1.0f / x;
  }
  return 0.0f;
}

__device__ __forceinline__ float unaryGrad(int op, float x) {
  switch (op) {
    case U_NEG: return -1.0f;
    case U_EXP: return expf(x);
    case U_LOG: return 1.0f / x;
    case U_SQRT: return 0.5f / sqrtf(x);
    case U_RSQRT: return -0.5f / (x * sqrtf(x));
    case U_TANH: { const float t = tanhf(x); return 1.0f - t * t; }
    case U_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case U_SIGMOID: { const float s = 1.0f / (1.0f + expf(-x)); return s * (1.0f - s); }
    case U_SILU: { const float s = 1.0f / (1.0f + expf(-x)); return s * (1.0f + x * (1.0f - s)); }
    case U_GELU: {
      const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
      const float pdf = expf(-0.5f * x * x) * kInvSqrt2Pi;
      return cdf + x * pdf;
    }
    case U_GELU_TANH: {
      const float u = kSqrt2OverPi * (x + 0.044715f * x * x * x);
      const float t = tanhf(u);
      const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    case U_ABS: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;
    case U_SQUARE: return 2.0f * x;
    case U_RECIP: return -1.0f / (x * x);
  }
  return 0.0f;
}

__device__ __forceinline__ float binaryF(int op, float a, float b) {
  switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return a > b ? a : b;  // as the reference's ternary, not fmaxf (NaN handling)
    case B_MIN: return a < b ? a : b;
    case B_POW: return powf(a, b);
  }
  return 0.0f;
}

// OP is a template argument so each switch folds to one case.
template <int OP>
__global__ void unaryKernel(const float* x, float* y, int64_t n) {
  PC_GRID_STRIDE(i, n) y[i] = unaryF(OP, x[i]);
}

template <int OP>
__global__ void unaryBackwardKernel(const float* x, const float* gy, float* gx, int64_t n) {
  PC_GRID_STRIDE(i, n) gx[i] = gy[i] * unaryGrad(OP, x[i]);
}

template <int OP, typename Idx>
__global__ void binaryKernel(const float* a, const float* b, float* out, Walk w, int64_t n) {
  PC_GRID_STRIDE(i, n) {
    int64_t oa, ob;
    walkOffsets<Idx>((Idx)i, w, oa, ob);
    out[i] = binaryF(OP, a[oa], b[ob]);
  }
}

__global__ void affineKernel(const float* x, float sc, float t, float* y, int64_t n) {
  PC_GRID_STRIDE(i, n) y[i] = x[i] * sc + t;
}

__global__ void axpyKernel(float alpha, const float* x, float* y, int64_t n) {
  PC_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

// murmur3's finalizer; two rounds make dropoutHash (src/backends/reference/math.ts).
__device__ __forceinline__ uint32_t fmix32(uint32_t h) {
  h = (h ^ (h >> 16)) * 0x85ebca6bu;
  h = (h ^ (h >> 13)) * 0xc2b2ae35u;
  return h ^ (h >> 16);
}

__global__ void dropoutKernel(float* out, int64_t n, uint32_t seed, uint64_t thr, float scale) {
  PC_GRID_STRIDE(i, n) {
    uint32_t z = fmix32(seed ^ ((uint32_t)(i + 1) * 0x9e3779b9u));
    z = fmix32(z + seed);
    out[i] = (uint64_t)z >= thr ? scale : 0.0f;
  }
}

__global__ void scaleKernel(float beta, float* c, int64_t n) {
  PC_GRID_STRIDE(i, n) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

template <typename T>
__global__ void fillKernel(T* p, T v, int64_t n) {
  PC_GRID_STRIDE(i, n) p[i] = v;
}

#define PC_UNARY_CASES(X) \
  X(U_NEG) X(U_EXP) X(U_LOG) X(U_SQRT) X(U_RSQRT) X(U_TANH) X(U_RELU) X(U_SIGMOID) X(U_SILU) X(U_GELU) \
  X(U_GELU_TANH) X(U_ABS) X(U_SQUARE) X(U_RECIP)
#define PC_BINARY_CASES(X) X(B_ADD) X(B_SUB) X(B_MUL) X(B_DIV) X(B_MAX) X(B_MIN) X(B_POW)

}  // namespace

cudaError_t unary(cudaStream_t s, int op, const float* x, float* y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  switch (op) {
#define X(OP) case OP: unaryKernel<OP><<<gridFor(n), kThreads, 0, s>>>(x, y, n); break;
    PC_UNARY_CASES(X)
#undef X
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t unaryBackward(cudaStream_t s, int op, const float* x, const float* gy, float* gx, int64_t n) {
  if (n <= 0) return cudaSuccess;
  switch (op) {
#define X(OP) case OP: unaryBackwardKernel<OP><<<gridFor(n), kThreads, 0, s>>>(x, gy, gx, n); break;
    PC_UNARY_CASES(X)
#undef X
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t binary(cudaStream_t s, int op, const float* a, const float* b, float* out, const Walk& w, int64_t n) {
  if (n <= 0) return cudaSuccess;
  const bool small = n < ((int64_t)1 << 31);  // 32-bit index math when it fits (much cheaper div/mod)
  switch (op) {
#define X(OP) case OP: \
    if (small) binaryKernel<OP, uint32_t><<<gridFor(n), kThreads, 0, s>>>(a, b, out, w, n); \
    else binaryKernel<OP, int64_t><<<gridFor(n), kThreads, 0, s>>>(a, b, out, w, n); \
    break;
    PC_BINARY_CASES(X)
#undef X
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t affine(cudaStream_t s, const float* x, float sc, float t, float* y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  affineKernel<<<gridFor(n), kThreads, 0, s>>>(x, sc, t, y, n);
  return cudaGetLastError();
}

cudaError_t axpy(cudaStream_t s, float alpha, const float* x, float* y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  axpyKernel<<<gridFor(n), kThreads, 0, s>>>(alpha, x, y, n);
  return cudaGetLastError();
}

cudaError_t dropoutMask(cudaStream_t s, float* out, int64_t n, uint32_t seed, uint64_t thr, float scale) {
  if (n <= 0) return cudaSuccess;
  dropoutKernel<<<gridFor(n), kThreads, 0, s>>>(out, n, seed, thr, scale);
  return cudaGetLastError();
}

cudaError_t scale(cudaStream_t s, float beta, float* c, int64_t n) {
  if (n <= 0) return cudaSuccess;
  scaleKernel<<<gridFor(n), kThreads, 0, s>>>(beta, c, n);
  return cudaGetLastError();
}

cudaError_t fill32(cudaStream_t s, uint32_t* p, uint32_t bits, int64_t n) {
  if (n <= 0) return cudaSuccess;
  if (bits == 0) return cudaMemsetAsync(p, 0, (size_t)n * 4, s);
  fillKernel<uint32_t><<<gridFor(n), kThreads, 0, s>>>(p, bits, n);
  return cudaGetLastError();
}

cudaError_t fill16(cudaStream_t s, uint16_t* p, uint16_t bits, int64_t n) {
  if (n <= 0) return cudaSuccess;
  if (bits == 0) return cudaMemsetAsync(p, 0, (size_t)n * 2, s);
  fillKernel<uint16_t><<<gridFor(n), kThreads, 0, s>>>(p, bits, n);
  return cudaGetLastError();
}

}  // namespace pc
