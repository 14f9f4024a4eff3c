// bf16-weight GEMM: widen a tile of W's output columns into float32 scratch (threaded, SIMD
// via the kernel table), then one OpenBLAS sgemm per tile with ldc = n. The pool and
// OpenBLAS never run at the same time (conversion finishes before the sgemm starts).
#include "bf16.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels.h"
#include "pool.h"

namespace peft {
namespace {

size_t gTileElems = size_t(1) << 20;
std::vector<float> gScratch;  // calls come from the JS thread only, one at a time

float* scratch(size_t n) {
  if (gScratch.size() < n) gScratch.resize(n);
  return gScratch.data();
}

}  // namespace

size_t bf16TileElements(size_t n) {
  const size_t prev = gTileElems;
  if (n > 0) gTileElems = n;
  return prev;
}

void matmulBf16(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // empty product: C = beta * C
    for (int64_t i = 0; i < m * n; i++) c[i] = beta == 0 ? 0.0f : beta * c[i];
    return;
  }
  const Kernels& K = kernels();
  const int64_t nb = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t)(gTileElems / (size_t)k)));
  float* wf = scratch((size_t)nb * k);
  for (int64_t j0 = 0; j0 < n; j0 += nb) {
    const int64_t cols = std::min(nb, n - j0);
    if (transB) {
      // Rows j0 .. j0+cols of W [n,k] are contiguous: widen them as one block [cols, k].
      const uint16_t* src = w + j0 * k;
      parallelFor((size_t)(cols * k), 1 << 15, [&](size_t b, size_t e) { K.bf16ToF32(src + b, wf + b, e - b); });
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cols, (int)k, alpha, a, (int)k, wf, (int)k,
        beta, c + j0, (int)n);
    } else {
      // Columns j0 .. j0+cols of W [k,n]: gather each row's slice into [k, cols].
      parallelFor((size_t)k, std::max<size_t>(1, (1 << 15) / (size_t)cols), [&](size_t p0, size_t p1) {
        for (size_t p = p0; p < p1; p++) K.bf16ToF32(w + p * n + j0, wf + p * cols, (size_t)cols);
      });
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)k, alpha, a, (int)k, wf, (int)cols,
        beta, c + j0, (int)n);
    }
  }
}

}  // namespace peft
