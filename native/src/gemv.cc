// Small-m GEMM kernels (see gemv.h). Two layouts of W:
//  - transB (W [n,k], torch Linear and the LM head): R rows of W at a time, each a contiguous
//    dot product over k against the M rows of a (M*R accumulators in registers).
//  - W [k,n] (GPT-2's Conv1D): four rows of W at a time streamed left to right over a block
//    of columns, accumulating into an M x block buffer that stays in L1.
// Either way every element of W is loaded exactly once, in long sequential runs the
// hardware prefetcher follows. Compiled for AVX-512 with a target pragma and used only when
// the CPU has it (checked at runtime through kernels()).
#include "gemv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "pool.h"

namespace peft {
namespace {

bool useAvx512() {
  static const bool on = std::strcmp(simdLevel(), "avx512") == 0;
  return on;
}

inline float outVal(float v, float alpha, float beta, const float* c) { return alpha * v + (beta == 0 ? 0.0f : beta * *c); }

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")

// 16 elements of W as float32 (bf16 bits shifted into the high half: exact); masked: lanes
// outside `mk` are zero.
inline __m512 ld(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 ld(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 ldm(const float* p, __mmask16 mk) { return _mm512_maskz_loadu_ps(mk, p); }
inline __m512 ldm(const uint16_t* p, __mmask16 mk) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, p)), 16));
}
// float32 W rounded to bf16 values as it is loaded (autocast's second operand, never copied):
// the f32ToBf16 kernel's rule (nearest even; a NaN stays a quiet NaN), then widened exactly.
struct F32AsBf16 { float v; };
inline __m512 roundBf16(__m512 x) {
  const __m512i b = _mm512_castps_si512(x), hi = _mm512_set1_epi32((int)0xffff0000u);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_and_si512(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), hi);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i q = _mm512_and_si512(_mm512_or_si512(b, _mm512_set1_epi32(0x400000)), hi);
  return _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, nan, q));
}
inline __m512 ld(const F32AsBf16* p) { return roundBf16(_mm512_loadu_ps(&p->v)); }
inline __m512 ldm(const F32AsBf16* p, __mmask16 mk) { return roundBf16(_mm512_maskz_loadu_ps(mk, &p->v)); }
template <class W>
inline void prefetchLine(const W* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
inline __mmask16 tailMask(int64_t r) { return (__mmask16)((1u << r) - 1u); }

// Horizontal sums of up to 16 vectors at once: v[x] ends in lane 4 * (x % 4) + x / 4 of the
// result (missing vectors count as zero). Each lane pairs its elements as
// _mm512_reduce_add_ps does (l + l+8, then + l+4, + l+2, + l+1), so the sums are bit for bit
// those of 16 separate reductions, in 15 shuffle-and-add steps instead of ~8 each.
template <int N>
inline __m512 sum16(const __m512* v) {
  __m512 u[8], w[4], z[2];
  auto vx = [&](int x) { return x < N ? v[x] : _mm512_setzero_ps(); };
  for (int p = 0; p < 8; p++) {  // lanes l, l+8 of v[2p] -> low half, of v[2p+1] -> high half
    const __m512 a = vx(2 * p), b = vx(2 * p + 1);
    u[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
  for (int q = 0; q < 4; q++) {  // + l+4: block b of w[q] is v[4q + b]
    const __m512 a = u[2 * q], b = u[2 * q + 1];
    w[q] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  for (int s = 0; s < 2; s++) {  // + l+2 within each block
    const __m512 a = w[2 * s], b = w[2 * s + 1];
    z[s] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
  }
  // + l+1
  return _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x88), _mm512_shuffle_ps(z[0], z[1], 0xDD));
}

// transB: c[i, j..j+R) from rows j..j+R-1 of W [n,k]. Each row of a is loaded once per
// 16-wide step into a register (the compiler would otherwise fold the load into every FMA
// that uses it: R loads instead of one).
template <int M, int R, class W>
inline void dotRows(const float* a, const W* w, float* c, int64_t n, int64_t k, int64_t j, float alpha, float beta) {
  static_assert(M * R <= 16, "M * R accumulators, one sum16");
  __m512 acc[M * R];
  for (int x = 0; x < M * R; x++) acc[x] = _mm512_setzero_ps();
  const W* wr = w + j * k;
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; r++) wv[r] = ld(wr + r * k + p);
    // The same place in the next group of rows: the hardware prefetcher alone reaches only
    // ~9 GB/s on one core here once the kernel computes between loads (m = 8).
    if ((p * sizeof(W)) % 64 == 0) for (int r = 0; r < R; r++) prefetchLine(wr + (R + r) * k + p);
    for (int i = 0; i < M; i++) {
      __m512 av = _mm512_loadu_ps(a + i * k + p);
      __asm__("" : "+v"(av));
      for (int r = 0; r < R; r++) acc[i * R + r] = _mm512_fmadd_ps(av, wv[r], acc[i * R + r]);
    }
  }
  if (p < k) {
    const __mmask16 mk = tailMask(k - p);
    __m512 wv[R];
    for (int r = 0; r < R; r++) wv[r] = ldm(wr + r * k + p, mk);
    for (int i = 0; i < M; i++) {
      const __m512 av = _mm512_maskz_loadu_ps(mk, a + i * k + p);
      for (int r = 0; r < R; r++) acc[i * R + r] = _mm512_fmadd_ps(av, wv[r], acc[i * R + r]);
    }
  }
  alignas(64) float s[16];
  _mm512_store_ps(s, sum16<M * R>(acc));
  for (int i = 0; i < M; i++) {
    for (int r = 0; r < R; r++) {
      const int x = i * R + r;
      float* o = c + i * n + j + r;
      *o = outVal(s[4 * (x % 4) + x / 4], alpha, beta, o);
    }
  }
}

template <int M, class W>
void rowsT(const float* a, const W* w, float* c, int64_t n, int64_t k, int64_t j0, int64_t j1, float alpha, float beta) {
  constexpr int R = M <= 4 ? 4 : 2;  // M * R <= 16 accumulators
  int64_t j = j0;
  for (; j + R <= j1; j += R) dotRows<M, R>(a, w, c, n, k, j, alpha, beta);
  for (; j < j1; j++) dotRows<M, 1>(a, w, c, n, k, j, alpha, beta);
}

// W [k,n]: c[i, j0..j1) for all i, a block of CW columns at a time.
template <int M, class W>
void colsN(const float* a, const W* w, float* c, int64_t n, int64_t k, int64_t j0, int64_t j1, float alpha, float beta) {
  constexpr int CW = M <= 2 ? 1024 : (4096 / M) / 16 * 16;  // M * CW floats: <= 16 KiB
  alignas(64) float acc[M * CW];
  for (int64_t jb = j0; jb < j1; jb += CW) {
    const int64_t cols = std::min<int64_t>(CW, j1 - jb);
    const int64_t full = cols / 16 * 16;
    const __mmask16 mk = tailMask(cols - full);
    std::fill(acc, acc + M * CW, 0.0f);
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const W* w0 = w + p * n + jb;
      const W* w1 = w0 + n;
      const W* w2 = w1 + n;
      const W* w3 = w2 + n;
      __m512 b[M][4];
      for (int i = 0; i < M; i++) for (int r = 0; r < 4; r++) b[i][r] = _mm512_set1_ps(a[i * k + p + r]);
      int64_t q = 0;
      auto step = [&](__m512 x0, __m512 x1, __m512 x2, __m512 x3) {
        for (int i = 0; i < M; i++) {
          float* s = acc + i * CW + q;
          __m512 v = _mm512_load_ps(s);
          v = _mm512_fmadd_ps(b[i][0], x0, v);
          v = _mm512_fmadd_ps(b[i][1], x1, v);
          v = _mm512_fmadd_ps(b[i][2], x2, v);
          v = _mm512_fmadd_ps(b[i][3], x3, v);
          _mm512_store_ps(s, v);
        }
      };
      const W* nx = w3 + n;  // the next pass's rows, prefetched a line at a time
      const bool pf = p + 8 <= k;
      for (; q < full; q += 16) {
        if (pf && (q * sizeof(W)) % 64 == 0) for (int r = 0; r < 4; r++) prefetchLine(nx + r * n + q);
        step(ld(w0 + q), ld(w1 + q), ld(w2 + q), ld(w3 + q));
      }
      if (q < cols) step(ldm(w0 + q, mk), ldm(w1 + q, mk), ldm(w2 + q, mk), ldm(w3 + q, mk));
    }
    for (; p < k; p++) {
      const W* w0 = w + p * n + jb;
      int64_t q = 0;
      auto step = [&](__m512 x0) {
        for (int i = 0; i < M; i++) {
          float* s = acc + i * CW + q;
          _mm512_store_ps(s, _mm512_fmadd_ps(_mm512_set1_ps(a[i * k + p]), x0, _mm512_load_ps(s)));
        }
      };
      for (; q < full; q += 16) step(ld(w0 + q));
      if (q < cols) step(ldm(w0 + q, mk));
    }
    for (int i = 0; i < M; i++) {
      float* o = c + i * n + jb;
      for (int64_t q = 0; q < cols; q++) o[q] = outVal(acc[i * CW + q], alpha, beta, o + q);
    }
  }
}

template <int M, class W>
void run(const float* a, const W* w, float* c, int64_t n, int64_t k, bool transB, float alpha, float beta) {
  // At least ~64 KiB of W per thread, else the wake-up costs more than the split saves.
  const size_t rowBytes = (size_t)k * sizeof(W);
  if (transB) {
    const size_t minRows = std::max<size_t>(4, (size_t(1) << 16) / std::max<size_t>(rowBytes, 1));
    parallelFor((size_t)n, minRows, [&](size_t j0, size_t j1) { rowsT<M>(a, w, c, n, k, (int64_t)j0, (int64_t)j1, alpha, beta); });
  } else {
    // Split by blocks of 16 columns so that every part but the last is full vectors.
    const size_t units = (size_t)(n + 15) / 16;
    const size_t minUnits = std::max<size_t>(1, (size_t(1) << 16) / std::max<size_t>(rowBytes * 16, 1));
    parallelFor(units, minUnits, [&](size_t u0, size_t u1) {
      colsN<M>(a, w, c, n, k, (int64_t)u0 * 16, std::min<int64_t>(n, (int64_t)u1 * 16), alpha, beta);
    });
  }
}

template <class W>
bool dispatch(const float* a, const W* w, float* c, int64_t m, int64_t n, int64_t k, bool transB, float alpha, float beta) {
  switch (m) {
    case 1: run<1>(a, w, c, n, k, transB, alpha, beta); return true;
    case 2: run<2>(a, w, c, n, k, transB, alpha, beta); return true;
    case 3: run<3>(a, w, c, n, k, transB, alpha, beta); return true;
    case 4: run<4>(a, w, c, n, k, transB, alpha, beta); return true;
    case 5: run<5>(a, w, c, n, k, transB, alpha, beta); return true;
    case 6: run<6>(a, w, c, n, k, transB, alpha, beta); return true;
    case 7: run<7>(a, w, c, n, k, transB, alpha, beta); return true;
    case 8: run<8>(a, w, c, n, k, transB, alpha, beta); return true;
    default: return false;
  }
}

#pragma GCC pop_options

template <class W>
bool smallMatmul(const float* a, const W* w, float* c, int64_t m, int64_t n, int64_t k, bool transB, float alpha, float beta) {
  if (m < 1 || m > kSmallRows || !useAvx512()) return false;
  if (n == 0) return true;
  if (k == 0) {  // empty product: C = beta * C
    for (int64_t i = 0; i < m * n; i++) c[i] = beta == 0 ? 0.0f : beta * c[i];
    return true;
  }
  return dispatch(a, w, c, m, n, k, transB, alpha, beta);
}

}  // namespace

bool smallMatmulF32(const float* a, const float* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta) {
  return smallMatmul(a, w, c, m, n, k, transB, alpha, beta);
}

bool smallMatmulBf16(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta) {
  return smallMatmul(a, w, c, m, n, k, transB, alpha, beta);
}

bool smallMatmulRoundW(const float* a, const float* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta) {
  return smallMatmul(a, reinterpret_cast<const F32AsBf16*>(w), c, m, n, k, transB, alpha, beta);
}

bool smallMatmulAvailable() { return useAvx512(); }

}  // namespace peft
