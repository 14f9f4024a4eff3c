// Mixed-precision GEMMs (autocast): bf16-rounded operands, float32 accumulation and output.
// See matmulAutocast / matmulBf16 in src/backends/backend.ts for the contract.
#pragma once
#include <cstddef>
#include <cstdint>

namespace peft {

/**
 * Per batch b: C_b = alpha * bf16(op(A_b)) @ bf16(op(B_b)) + beta * C_b, with bf16() the
 * round-to-nearest-even of each operand element, float32 accumulation. Arguments as
 * Backend.matmul. oneDNN's bf16 matmul when the CPU has bf16 instructions and libdnnl can be
 * loaded; else the operands are rounded into float32 scratch and go to sgemm.
 */
void matmulMixed(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k,
  bool tA, bool tB, int64_t sA, int64_t sB, float alpha, float beta);

/** c = alpha * bf16(a[m,k]) @ op(W) + beta * c, W bf16 bits; transB: W stored [n,k], else [k,n]. */
void matmulBf16RoundA(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta);

/**
 * The path mixed GEMMs take: "onednn:<impl>" (impl as oneDNN names it, e.g.
 * brg:avx512_core_bf16 or brg:avx512_core_amx_bf16) or "fp32-fallback".
 */
const char* bf16GemmPath();
/** Why oneDNN is not used ("" when it is). */
const char* bf16GemmWhyNot();
/** "auto" (oneDNN where it can run) or "fallback" (force the fp32 path); returns the path. */
const char* setBf16GemmMode(const char* mode);
/** oneDNN's OpenMP thread count (kept equal to the addon's). */
void bf16GemmThreads(int n);

}  // namespace peft
