// Single-threaded SIMD kernels over a range of elements or rows. kernels.cc compiles the
// same source twice (AVX2+FMA baseline, AVX-512) and picks one table at load time; the
// addon splits work across the pool and calls into the table.
#pragma once
#include <cstddef>
#include <cstdint>

namespace peft {

enum Unary { U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_TANH, U_RELU, U_SIGMOID, U_SILU, U_GELU,
  U_GELU_TANH, U_ABS, U_SQUARE, U_RECIP, U_COUNT };
enum Binary { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_COUNT };

struct Kernels {
  const char* name;
  void (*unary)(int op, const float* x, float* y, size_t n);
  void (*unaryBackward)(int op, const float* x, const float* gy, float* gx, size_t n);
  // out = a op b with a/b advancing by sa/sb (each 0 or 1) per element.
  void (*binary)(int op, const float* a, int sa, const float* b, int sb, float* out, size_t n);
  void (*affine)(const float* x, float s, float t, float* y, size_t n);
  void (*axpy)(float alpha, const float* x, float* y, size_t n);
  // Column sums/maxes of a [mid, inner] block with row stride `stride`, columns [0, inner).
  void (*sumCols)(const float* x, size_t mid, size_t inner, size_t stride, float* out);
  void (*maxCols)(const float* x, size_t mid, size_t inner, size_t stride, float* out);
  float (*sumRow)(const float* x, size_t n);
  float (*maxRow)(const float* x, size_t n);
  // Row kernels: process rows [r0, r1) of [rows, cols].
  void (*softmax)(const float* x, size_t r0, size_t r1, size_t cols, float* out);
  void (*softmaxBackward)(const float* y, const float* gy, size_t r0, size_t r1, size_t cols, float* gx);
  void (*logSoftmax)(const float* x, size_t r0, size_t r1, size_t cols, float* out);
  void (*logSoftmaxBackward)(const float* y, const float* gy, size_t r0, size_t r1, size_t cols, float* gx);
  void (*crossEntropy)(const float* x, const int32_t* t, size_t r0, size_t r1, size_t cols, int ignore, float* loss, float* lse);
  void (*crossEntropyBackward)(const float* x, const int32_t* t, const float* lse, const float* gl, size_t r0, size_t r1,
    size_t cols, int ignore, float* gx);
  void (*layerNorm)(const float* x, const float* w, const float* b, size_t r0, size_t r1, size_t cols, float eps,
    float* out, float* mean, float* rstd);
  // gw/gb (may be null) are accumulated into.
  void (*layerNormBackward)(const float* x, const float* w, const float* mean, const float* rstd, const float* gy,
    size_t r0, size_t r1, size_t cols, float* gx, float* gw, float* gb);
  void (*rmsNorm)(const float* x, const float* w, size_t r0, size_t r1, size_t cols, float eps, float* out, float* rstd);
  void (*rmsNormBackward)(const float* x, const float* w, const float* rstd, const float* gy, size_t r0, size_t r1,
    size_t cols, float* gx, float* gw);
  void (*adamw)(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps,
    float wd, float bc1, float bc2);
  void (*bf16ToF32)(const uint16_t* x, float* y, size_t n);
  void (*f32ToBf16)(const float* x, uint16_t* y, size_t n);
  // Elements [start, start + n) of the counter-based dropout mask (x null) or of x * mask.
  void (*dropout)(const float* x, float* y, size_t start, size_t n, uint32_t seed, uint32_t thr, float scale);
};

const Kernels& kernels();
/** "avx512" or "avx2". PEFT_TS_SIMD=avx2 forces the baseline (for testing both paths). */
const char* simdLevel();

}  // namespace peft
