// GEMMs with a few rows of activations (m <= 8: decoding one token per sequence), where the
// time is reading W once from memory. OpenBLAS's sgemm reaches about half the bandwidth on
// these shapes; these AVX-512 kernels stream W (float32 or bfloat16) at the copy rate.
#pragma once
#include <cstdint>

namespace peft {

/** Rows of a handled by smallMatmul*: larger m goes to the tiled GEMMs. */
constexpr int64_t kSmallRows = 8;

/**
 * c[m,n] = alpha * a[m,k] @ op(W) + beta * c with transB: W stored [n,k], else [k,n].
 * Returns false (c untouched) when m > kSmallRows or the CPU has no AVX-512 (or
 * PEFT_TS_SIMD=avx2): the caller then runs its general path. float32 accumulation, split
 * across the pool by output columns; the sum order differs from sgemm's.
 */
bool smallMatmulF32(const float* a, const float* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta);

/** The same with a bfloat16 W (raw bits), widened exactly to float32 in registers. */
bool smallMatmulBf16(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta);

/**
 * smallMatmulF32 with each element of W rounded to its bf16 value as it is loaded (autocast's
 * W operand, never copied): the same sums as smallMatmulBf16 on f32ToBf16(W). a is taken as
 * given (round it first for autocast).
 */
bool smallMatmulRoundW(const float* a, const float* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta);

/** Whether the smallMatmul* kernels run on this CPU (AVX-512 and not PEFT_TS_SIMD=avx2). */
bool smallMatmulAvailable();

}  // namespace peft
