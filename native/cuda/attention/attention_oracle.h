// Host port of src/backends/reference/attention.ts (plain loops, double accumulation) and of
// dropoutHash / dropoutThreshold in src/backends/reference/math.ts: the oracle the CUDA
// kernels are tested against. Kept line by line close to the TypeScript; independent of
// attention.cu on purpose (its own hash, its own index math).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace oracle {

struct Shape {
  int B, H, Hk, T, S, D;
  double scale;
  int64_t biasStrides[4];
  double dropoutP;
  uint32_t seed;
};

inline uint32_t fmix32(uint32_t h) {
  h = (h ^ (h >> 16)) * 0x85ebca6bu;
  h = (h ^ (h >> 13)) * 0xc2b2ae35u;
  return h ^ (h >> 16);
}

/** dropoutHash(seed, i): Math.imul(i + 1, 0x9e3779b9) is (i + 1) mod 2^32 times it, mod 2^32. */
inline uint32_t dropoutHash(uint32_t seed, double i) {
  const uint32_t i1 = (uint32_t)(uint64_t)(i + 1);
  uint32_t z = seed ^ (i1 * 0x9e3779b9u);
  z = fmix32(z);
  z = fmix32(z + seed);
  return z;
}

inline double dropoutThreshold(double p) { return std::floor(p * 4294967296.0); }

/** Scores of query row (b, h, t) into sc[0..S): scale * q.k + bias. Returns the row max. */
inline double rowScores(const float* q, const float* k, const float* bias, const Shape& a, int b, int h, int t,
                        std::vector<double>& sc) {
  const int H = a.H, Hk = a.Hk, T = a.T, S = a.S, D = a.D;
  const int kvh = (int)std::floor(h / ((double)H / Hk));
  const int64_t qo = (((int64_t)b * H + h) * T + t) * D;
  const int64_t* bs = a.biasStrides;
  double mx = -INFINITY;
  for (int j = 0; j < S; j++) {
    const int64_t ko = (((int64_t)b * Hk + kvh) * S + j) * D;
    double dot = 0;
    for (int c = 0; c < D; c++) dot += (double)q[qo + c] * (double)k[ko + c];
    double v = dot * a.scale;
    if (bias) v += bias[b * bs[0] + h * bs[1] + t * bs[2] + j * bs[3]];
    sc[j] = v;
    if (v > mx) mx = v;
  }
  return mx;
}

/** Dropout multiplier of element (b, h, t, j): 0 or 1/(1-p) (1 without dropout). */
inline double keepScale(const Shape& a, int b, int h, int t, int j, double thr, double inv) {
  if (a.dropoutP <= 0) return 1;
  const double idx = (((double)b * a.H + h) * a.T + t) * a.S + j;
  return dropoutHash(a.seed, idx) >= thr ? inv : 0;
}

/** out and lse as doubles (the TS stores them into Float32Arrays; callers round if needed). */
inline void attentionForward(const float* q, const float* k, const float* v, const float* bias, const Shape& a,
                             double* out, double* lse) {
  const int B = a.B, H = a.H, Hk = a.Hk, T = a.T, S = a.S, D = a.D;
  std::vector<double> sc(S);
  const double thr = dropoutThreshold(a.dropoutP), inv = 1 / (1 - a.dropoutP);
  for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) {
    const int kvh = (int)std::floor(h / ((double)H / Hk));
    for (int t = 0; t < T; t++) {
      const double mx = rowScores(q, k, bias, a, b, h, t, sc);
      const int64_t oo = (((int64_t)b * H + h) * T + t) * D;
      const int64_t row = ((int64_t)b * H + h) * T + t;
      if (mx == -INFINITY) {
        for (int c = 0; c < D; c++) out[oo + c] = 0;
        lse[row] = -INFINITY;
        continue;
      }
      double sum = 0;
      for (int j = 0; j < S; j++) { sc[j] = std::exp(sc[j] - mx); sum += sc[j]; }
      lse[row] = mx + std::log(sum);
      for (int c = 0; c < D; c++) {
        double acc = 0;
        for (int j = 0; j < S; j++) {
          const double p = sc[j] / sum * keepScale(a, b, h, t, j, thr, inv);
          if (p != 0) acc += p * v[(((int64_t)b * Hk + kvh) * S + j) * D + c];
        }
        out[oo + c] = acc;
      }
    }
  }
}

/** Gradients (overwritten), as doubles. out and lse are float arrays, as the TS receives them. */
inline void attentionBackward(const float* q, const float* k, const float* v, const float* bias, const Shape& a,
                              const float* out, const float* lse, const float* gOut,
                              double* gq, double* gk, double* gv) {
  const int B = a.B, H = a.H, Hk = a.Hk, T = a.T, S = a.S, D = a.D;
  const double scale = a.scale;
  for (int64_t i = 0; i < (int64_t)B * H * T * D; i++) gq[i] = 0;
  for (int64_t i = 0; i < (int64_t)B * Hk * S * D; i++) { gk[i] = 0; gv[i] = 0; }
  std::vector<double> sc(S);
  const double thr = dropoutThreshold(a.dropoutP), inv = 1 / (1 - a.dropoutP);
  for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) {
    const int kvh = (int)std::floor(h / ((double)H / Hk));
    for (int t = 0; t < T; t++) {
      const int64_t row = ((int64_t)b * H + h) * T + t;
      if (lse[row] == -INFINITY) continue;
      rowScores(q, k, bias, a, b, h, t, sc);
      const int64_t oo = row * D;
      double di = 0;
      for (int c = 0; c < D; c++) di += (double)gOut[oo + c] * out[oo + c];
      for (int j = 0; j < S; j++) {
        const double p = std::exp(sc[j] - lse[row]);
        if (p == 0) continue;
        const int64_t ko = (((int64_t)b * Hk + kvh) * S + j) * D;
        const double keep = keepScale(a, b, h, t, j, thr, inv);
        double dpj = 0;
        for (int c = 0; c < D; c++) dpj += (double)gOut[oo + c] * v[ko + c];
        if (keep != 0) for (int c = 0; c < D; c++) gv[ko + c] += p * keep * gOut[oo + c];
        const double ds = p * (keep * dpj - di) * scale;
        for (int c = 0; c < D; c++) {
          gq[oo + c] += ds * k[ko + c];
          gk[ko + c] += ds * q[oo + c];
        }
      }
    }
  }
}

}  // namespace oracle
