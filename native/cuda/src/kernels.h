// Launchers for our own CUDA kernels, one .cu file per family. Each enqueues its kernel(s)
// on stream `s` (never synchronizes) and returns cudaGetLastError(), i.e. launch errors
// only; errors of the running kernel show up at the next synchronize. Pointers are device
// accessible (managed or staged). Empty work launches nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

#include "walk.h"

namespace pc {

// Same order as UNARY_OPS / BINARY_OPS in src/backends/cpu/index.ts.
enum Unary { U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_TANH, U_RELU, U_SIGMOID, U_SILU, U_GELU,
  U_GELU_TANH, U_ABS, U_SQUARE, U_RECIP, U_COUNT };
enum Binary { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_COUNT };

// elementwise.cu
cudaError_t unary(cudaStream_t s, int op, const float* x, float* y, int64_t n);
cudaError_t unaryBackward(cudaStream_t s, int op, const float* x, const float* gy, float* gx, int64_t n);
cudaError_t binary(cudaStream_t s, int op, const float* a, const float* b, float* out, const Walk& w, int64_t total);
cudaError_t affine(cudaStream_t s, const float* x, float sc, float t, float* y, int64_t n);
cudaError_t axpy(cudaStream_t s, float alpha, const float* x, float* y, int64_t n);
/** out[i] = dropoutHash(seed, i) >= thr ? scale : 0 (the hash of src/backends/reference/math.ts). */
cudaError_t dropoutMask(cudaStream_t s, float* out, int64_t n, uint32_t seed, uint64_t thr, float scale);
/** c = beta * c, and exactly 0 when beta == 0 (so NaN/Inf in c do not leak, as BLAS). */
cudaError_t scale(cudaStream_t s, float beta, float* c, int64_t n);
cudaError_t fill32(cudaStream_t s, uint32_t* p, uint32_t bits, int64_t n);
cudaError_t fill16(cudaStream_t s, uint16_t* p, uint16_t bits, int64_t n);

// reduce.cu: x viewed as [outer, mid, inner]; out[o, i] = sum / max over mid (overwrites).
cudaError_t sumMid(cudaStream_t s, const float* x, int64_t outer, int64_t mid, int64_t inner, float* out);
cudaError_t maxMid(cudaStream_t s, const float* x, int64_t outer, int64_t mid, int64_t inner, float* out);

// layout.cu: out[i] = x[walk.a offset of i]; gx[walk.a offset of i] += g[i] (atomic, so
// overlapping views sum every contribution). x / gx already include the view's offset.
cudaError_t stridedCopy(cudaStream_t s, const float* x, const Walk& w, float* out, int64_t total);
cudaError_t stridedAdd(cudaStream_t s, const float* g, const Walk& w, float* gx, int64_t total);

// softmax.cu: rows of [rows, cols].
cudaError_t softmax(cudaStream_t s, const float* x, int64_t rows, int64_t cols, float* out, bool log);
cudaError_t softmaxBackward(cudaStream_t s, const float* y, const float* gy, int64_t rows, int64_t cols, float* gx, bool log);
/** Targets must already be checked (each is ignore or in [0, cols)). */
cudaError_t crossEntropy(cudaStream_t s, const float* x, const int32_t* t, int64_t rows, int64_t cols, int ignore,
  float* loss, float* lse);
cudaError_t crossEntropyBackward(cudaStream_t s, const float* x, const int32_t* t, const float* lse, const float* gLoss,
  int64_t rows, int64_t cols, int ignore, float* gx);

// norm.cu: w, b, gw, gb may be null; gw / gb are accumulated into (+=).
cudaError_t layerNorm(cudaStream_t s, const float* x, const float* w, const float* b, int64_t rows, int64_t cols,
  float eps, float* out, float* mean, float* rstd);
cudaError_t layerNormBackward(cudaStream_t s, const float* x, const float* w, const float* mean, const float* rstd,
  const float* gy, int64_t rows, int64_t cols, float* gx, float* gw, float* gb);
cudaError_t rmsNorm(cudaStream_t s, const float* x, const float* w, int64_t rows, int64_t cols, float eps, float* out,
  float* rstd);
cudaError_t rmsNormBackward(cudaStream_t s, const float* x, const float* w, const float* rstd, const float* gy,
  int64_t rows, int64_t cols, float* gx, float* gw);

// embedding.cu: ids must already be checked against the table's row count.
cudaError_t embedding(cudaStream_t s, const float* table, const int32_t* ids, int64_t n, int64_t dim, float* out);
cudaError_t embeddingBackward(cudaStream_t s, const float* gy, const int32_t* ids, int64_t n, int64_t dim, float* gTable);
/** out[i, :] = float32(table[ids[i], :]) from a bfloat16 table (bits widened exactly). */
cudaError_t embeddingBf16(cudaStream_t s, const uint16_t* table, const int32_t* ids, int64_t n, int64_t dim, float* out);

// rope.cu: x / out [B, H, T, D] (may alias); cos / sin [maxPos, D/2]; pos [T] or [B*T], checked.
cudaError_t rope(cudaStream_t s, const float* x, const float* cos, const float* sin, const int32_t* pos, int64_t npos,
  int64_t B, int64_t H, int64_t T, int64_t D, bool inverse, float* out);

// adamw.cu: bc1 / bc2 are the bias corrections 1 - beta^step.
cudaError_t adamw(cudaStream_t s, float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2,
  float eps, float wd, float bc1, float bc2);

// convert.cu
cudaError_t bf16ToF32(cudaStream_t s, const uint16_t* x, float* out, int64_t n);
cudaError_t f32ToBf16(cudaStream_t s, const float* x, uint16_t* out, int64_t n);

// nf4.cu: the maps travel by value (kernel parameters), never staged.
struct NF4Code { float v[16]; };
struct ByteCode { float v[256]; };
/** out[i] = code[nibble(start + i)] * absmax[block(start + i) - block(start)] (Backend.dequantizeNF4). */
cudaError_t dequantizeNF4(cudaStream_t s, const uint8_t* packed, const float* absmax, int64_t blocksize,
  const NF4Code& code, int64_t start, int64_t count, float* out);
/** out[i] = (code[q[i]] * absmax[i / blocksize]) + offset, each step rounded (Backend.dequantizeAbsmax). */
cudaError_t dequantizeAbsmax(cudaStream_t s, const uint8_t* q, const float* absmax, int64_t blocksize, const ByteCode& code,
  float offset, int64_t n, float* out);

}  // namespace pc
