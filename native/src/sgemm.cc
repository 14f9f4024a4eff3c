#include "sgemm.h"

#include <cblas.h>

#include "gemv.h"
#include "pool.h"

namespace peft {
namespace {

// One C = alpha * op(A) op(B) + beta * C through cblas_sgemm.
void sgemm1(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b, float beta,
  float* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS wants lda >= 1; the product is empty, so C = beta*C
    for (int64_t i = 0; i < m * n; i++) c[i] = beta == 0 ? 0.0f : beta * c[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
    a, (int)(tA ? m : k), b, (int)(tB ? k : n), beta, c, (int)n);
}

}  // namespace

void matmulF32(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool tA,
  bool tB, int64_t sA, int64_t sB, float alpha, float beta) {
  auto item = [&](int64_t i) {
    // A few rows (decoding): stream B once at memory speed (gemv.cc), else OpenBLAS.
    if (!tA && smallMatmulF32(a + i * sA, b + i * sB, c + i * m * n, m, n, k, tB, alpha, beta)) return;
    sgemm1(tA, tB, m, n, k, alpha, a + i * sA, b + i * sB, beta, c + i * m * n);
  };
  // Many small products (attention heads): one single-threaded GEMM per pool thread beats
  // OpenBLAS splitting each small one. (gemv.cc's own parallelFor runs inline inside.)
  const int threads = poolThreads();
  if (batch >= threads * 2 && threads > 1 && 2.0 * m * n * k < 6e7) {
    openblas_set_num_threads(1);
    parallelFor((size_t)batch, 1, [&](size_t b0, size_t b1) { for (size_t i = b0; i < b1; i++) item((int64_t)i); });
    openblas_set_num_threads(threads);
  } else {
    for (int64_t i = 0; i < batch; i++) item(i);
  }
}

}  // namespace peft
