// NF4 dequantization. Per block the 16 code values are scaled once (code[k] * absmax, the
// same float32 product the TypeScript path rounds to), then every byte gives two outputs
// by table lookup: one vpermps over a 16-float table (AVX-512) or two 8-float permutes and a
// blend (AVX2). Bytes are expanded to 32-bit indices 16 at a time, high nibble first.
#include "nf4.h"

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_* (a
// known false positive): silence it for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "pool.h"

namespace peft {
namespace {

using PairsFn = void (*)(const uint8_t* p, size_t nbytes, const float* lut, float* out);

void pairsScalar(const uint8_t* p, size_t nbytes, const float* lut, float* out) {
  for (size_t k = 0; k < nbytes; k++) {
    const uint8_t b = p[k];
    out[2 * k] = lut[b >> 4];
    out[2 * k + 1] = lut[b & 15];
  }
}

// 16 packed bytes -> two vectors of 16 nibble indices in output order (hi0, lo0, hi1, lo1, ...).
static inline void nibbles(const uint8_t* p, __m128i& first, __m128i& second) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask), lo = _mm_and_si128(v, mask);
  first = _mm_unpacklo_epi8(hi, lo);
  second = _mm_unpackhi_epi8(hi, lo);
}

void pairsAvx2(const uint8_t* p, size_t nbytes, const float* lut, float* out) {
  const __m256 lo8 = _mm256_loadu_ps(lut), hi8 = _mm256_loadu_ps(lut + 8);
  const __m256i seven = _mm256_set1_epi32(7);
  auto eight = [&](__m128i idx8, float* o) {
    const __m256i idx = _mm256_cvtepu8_epi32(idx8);
    const __m256 a = _mm256_permutevar8x32_ps(lo8, idx), b = _mm256_permutevar8x32_ps(hi8, idx);
    _mm256_storeu_ps(o, _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, seven))));
  };
  size_t k = 0;
  for (; k + 16 <= nbytes; k += 16) {
    __m128i a, b;
    nibbles(p + k, a, b);
    float* o = out + 2 * k;
    eight(a, o); eight(_mm_srli_si128(a, 8), o + 8);
    eight(b, o + 16); eight(_mm_srli_si128(b, 8), o + 24);
  }
  pairsScalar(p + k, nbytes - k, lut, out + 2 * k);
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
void pairsAvx512(const uint8_t* p, size_t nbytes, const float* lut, float* out) {
  const __m512 table = _mm512_loadu_ps(lut);
  size_t k = 0;
  for (; k + 16 <= nbytes; k += 16) {
    __m128i a, b;
    nibbles(p + k, a, b);
    _mm512_storeu_ps(out + 2 * k, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(a), table));
    _mm512_storeu_ps(out + 2 * k + 16, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(b), table));
  }
  pairsScalar(p + k, nbytes - k, lut, out + 2 * k);
}

// Output elements [i0, i1) of the call (weight elements start + i0 .. start + i1).
void dequantRange(const uint8_t* packed, const float* absmax, size_t bs, const float* code, size_t start,
  size_t i0, size_t i1, float* out, PairsFn pairs) {
  const size_t b0 = start / bs;
  size_t j = start + i0;
  const size_t je = start + i1;
  float lut[16];
  while (j < je) {
    const size_t blk = j / bs, bend = std::min(je, (blk + 1) * bs);
    const float s = absmax[blk - b0];
    for (int k = 0; k < 16; k++) lut[k] = code[k] * s;
    float* o = out + (j - start);
    if (j & 1) { *o++ = lut[packed[j >> 1] & 15]; j++; }  // odd start: low nibble alone
    const size_t nb = (bend - j) / 2;
    pairs(packed + (j >> 1), nb, lut, o);
    j += 2 * nb; o += 2 * nb;
    if (j < bend) { *o = lut[packed[j >> 1] >> 4]; j++; }  // odd end: high nibble alone
  }
}

}  // namespace

void dequantizeNF4(const uint8_t* packed, const float* absmax, size_t blocksize, const float* code,
  size_t start, size_t count, float* out) {
  const PairsFn pairs = std::strcmp(simdLevel(), "avx512") == 0 ? pairsAvx512 : pairsAvx2;
  parallelFor(count, 1 << 15, [&](size_t b, size_t e) { dequantRange(packed, absmax, blocksize, code, start, b, e, out, pairs); });
}

}  // namespace peft
