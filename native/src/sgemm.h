// Batched float32 GEMM on OpenBLAS, shaped for what training and decoding ask of it.
#pragma once
#include <cstdint>

namespace peft {

/**
 * Backend.matmul: `batch` products, item i reading a + i * sA and b + i * sB (stride 0: one
 * shared operand), writing c + i * m * n. Many small products (attention heads) run one
 * single-threaded GEMM per pool thread; a few rows of A (decoding) take the small-m kernels.
 */
void matmulF32(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool tA,
  bool tB, int64_t sA, int64_t sB, float alpha, float beta);

}  // namespace peft
