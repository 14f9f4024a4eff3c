// bf16-weight GEMM: widen a tile of W into float32 scratch (threaded, SIMD via the kernel
// table), then one OpenBLAS sgemm per tile with ldc = n. The pool and OpenBLAS never run at
// the same time (conversion finishes before the sgemm starts). A few rows of activations
// (generation: m <= 8) skip the scratch: W is read once, widened in registers, AVX2 FMAs.
#include "bf16.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemv.h"
#include "kernels.h"
#include "pool.h"

namespace peft {
namespace {

size_t gTileElems = size_t(1) << 22;  // 16 MiB of float32 scratch
std::vector<float> gScratch;  // calls come from the JS thread only, one at a time

float* scratch(size_t n) {
  if (gScratch.size() < n) gScratch.resize(n);
  return gScratch.data();
}

// 8 bf16 values -> 8 floats (exact: the bits shifted into the high half).
inline __m256 widen8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline float widen1(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline void store(float* c, float v, float alpha, float beta) { *c = alpha * v + (beta == 0 ? 0.0f : beta * *c); }

// transB, W [n,k]: c[i, j] = dot(a_i, W_j) for rows j of W in [j0, j1), M rows of a.
template <int M>
void smallRowsT(const float* a, const uint16_t* w, float* c, int64_t n, int64_t k, size_t j0, size_t j1, float alpha, float beta) {
  for (size_t j = j0; j < j1; j++) {
    const uint16_t* wr = w + j * k;
    __m256 acc[M];
    for (int i = 0; i < M; i++) acc[i] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
      const __m256 wv = widen8(wr + p);
      for (int i = 0; i < M; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * k + p), wv, acc[i]);
    }
    for (int i = 0; i < M; i++) {
      float s = hsum(acc[i]);
      for (int64_t q = p; q < k; q++) s += a[i * k + q] * widen1(wr[q]);
      store(c + i * n + j, s, alpha, beta);
    }
  }
}

// W [k,n]: c[i, j0:j1] = sum_p a[i,p] W[p, j0:j1], 64 columns at a time in registers/L1.
template <int M>
void smallRowsN(const float* a, const uint16_t* w, float* c, int64_t n, int64_t k, size_t j0, size_t j1, float alpha, float beta) {
  constexpr int B = 64;
  alignas(32) float acc[M][B];
  for (size_t jb = j0; jb < j1; jb += B) {
    const int cols = (int)std::min<size_t>(B, j1 - jb);
    for (int i = 0; i < M; i++) std::fill(acc[i], acc[i] + B, 0.0f);
    for (int64_t p = 0; p < k; p++) {
      const uint16_t* wr = w + p * n + jb;
      int q = 0;
      for (; q + 8 <= cols; q += 8) {
        const __m256 wv = widen8(wr + q);
        for (int i = 0; i < M; i++) {
          __m256 x = _mm256_load_ps(acc[i] + q);
          _mm256_store_ps(acc[i] + q, _mm256_fmadd_ps(_mm256_set1_ps(a[i * k + p]), wv, x));
        }
      }
      for (; q < cols; q++) {
        const float wv = widen1(wr[q]);
        for (int i = 0; i < M; i++) acc[i][q] += a[i * k + p] * wv;
      }
    }
    for (int i = 0; i < M; i++) for (int q = 0; q < cols; q++) store(c + i * n + jb + q, acc[i][q], alpha, beta);
  }
}

template <int M>
void smallRows(const float* a, const uint16_t* w, float* c, int64_t n, int64_t k, bool transB, float alpha, float beta) {
  // Split output columns across the pool (about 64 KiB of W per part at least).
  const size_t minCols = std::max<size_t>(8, (size_t)((1 << 15) / std::max<int64_t>(k, 1)));
  parallelFor((size_t)n, minCols, [&](size_t j0, size_t j1) {
    if (transB) smallRowsT<M>(a, w, c, n, k, j0, j1, alpha, beta);
    else smallRowsN<M>(a, w, c, n, k, j0, j1, alpha, beta);
  });
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
  if (smallMatmulBf16(a, w, c, m, n, k, transB, alpha, beta)) return;  // m <= 8 with AVX-512 (gemv.cc)
  switch (m) {  // a few rows: read W once, no scratch
    case 1: smallRows<1>(a, w, c, n, k, transB, alpha, beta); return;
    case 2: smallRows<2>(a, w, c, n, k, transB, alpha, beta); return;
    case 3: smallRows<3>(a, w, c, n, k, transB, alpha, beta); return;
    case 4: smallRows<4>(a, w, c, n, k, transB, alpha, beta); return;
    case 5: smallRows<5>(a, w, c, n, k, transB, alpha, beta); return;
    case 6: smallRows<6>(a, w, c, n, k, transB, alpha, beta); return;
    case 7: smallRows<7>(a, w, c, n, k, transB, alpha, beta); return;
    case 8: smallRows<8>(a, w, c, n, k, transB, alpha, beta); return;
    default: break;
  }
  const Kernels& K = kernels();
  // A tile is nb output columns x kb inner elements of W. The whole k when at least
  // min(n, 512) columns fit (then each c element is one sgemm dot product over k, as with a
  // float32 W); else 512-column tiles over slices of k, accumulated into c (beta = 1 after
  // the first slice), so that a huge k (an LM head's input gradient) never makes the GEMMs
  // narrow.
  const int64_t T = (int64_t)std::max<size_t>(gTileElems, 1);
  const int64_t wide = std::min<int64_t>(n, 512);
  int64_t nb, kb;
  if (k * wide <= T) { kb = k; nb = std::max<int64_t>(1, std::min<int64_t>(n, T / k)); }
  else { nb = wide; kb = std::max<int64_t>(1, T / nb); }
  float* wf = scratch((size_t)(nb * kb));
  for (int64_t j0 = 0; j0 < n; j0 += nb) {
    const int64_t cols = std::min(nb, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kb) {
      const int64_t depth = std::min(kb, k - p0);
      const float b = p0 == 0 ? beta : 1.0f;
      if (transB) {
        // W [n,k]: rows j0.., elements p0.. of each -> [cols, depth] (one block when depth == k).
        if (depth == k) {
          const uint16_t* src = w + j0 * k;
          parallelFor((size_t)(cols * k), 1 << 15, [&](size_t s, size_t e) { K.bf16ToF32(src + s, wf + s, e - s); });
        } else {
          parallelFor((size_t)cols, std::max<size_t>(1, (1 << 15) / (size_t)depth), [&](size_t r0, size_t r1) {
            for (size_t r = r0; r < r1; r++) K.bf16ToF32(w + (j0 + r) * k + p0, wf + r * depth, (size_t)depth);
          });
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cols, (int)depth, alpha, a + p0, (int)k, wf,
          (int)depth, b, c + j0, (int)n);
      } else {
        // W [k,n]: rows p0.., columns j0.. of each -> [depth, cols].
        parallelFor((size_t)depth, std::max<size_t>(1, (1 << 15) / (size_t)cols), [&](size_t q0, size_t q1) {
          for (size_t q = q0; q < q1; q++) K.bf16ToF32(w + (p0 + q) * n + j0, wf + q * cols, (size_t)cols);
        });
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)depth, alpha, a + p0, (int)k, wf,
          (int)cols, b, c + j0, (int)n);
      }
    }
  }
}

}  // namespace peft
