// GEMM with a bfloat16 weight (see matmulBf16 in src/backends/backend.ts for the contract).
#pragma once
#include <cstddef>
#include <cstdint>

namespace peft {

/**
 * c[m,n] = alpha * a[m,k] @ op(W) + beta * c, W bf16 bits widened exactly to float32;
 * transB: W stored [n,k], else [k,n]. W is widened a tile at a time into one reused scratch
 * (at most the tile size) and each tile goes to cblas_sgemm writing its columns of c in
 * place. When k * min(n, 512) fits in a tile, tiles span the whole k and every element of c
 * is the same sgemm dot product as with a float32 copy of W; a larger k is split into
 * slices accumulated into c. With m <= 8 (generation) W is instead read once and widened in
 * registers (AVX2 FMAs; float32 accumulation in another order than sgemm's).
 */
void matmulBf16(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta);

/** Elements of W per tile (default 1 << 22); returns the previous value. 0 only reads it. */
size_t bf16TileElements(size_t n);

}  // namespace peft
