// Kernel bodies, written as plain loops the compiler vectorizes (-O3 -fopenmp-simd). This
// file is included twice by kernels.cc, once per instruction set, inside a namespace: it
// must not include headers itself. Transcendentals are branch-free polynomial versions
// (Cephes-style exp, tanh; erfc with fractional error < 1.2e-7) so their loops vectorize.

static inline float asFloat(int32_t i) { float f; __builtin_memcpy(&f, &i, 4); return f; }

static inline float vexp(float x) {
  float xc = x < -103.9f ? -103.9f : x;
  xc = xc > 88.73f ? 88.73f : xc;
  const float fx = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = (((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r + 4.1665795894E-2f) * r +
    1.6666665459E-1f) * r + 5.0000001201E-1f) * z + r + 1.0f;
  const int32_t n = (int32_t)fx;
  const int32_t n1 = n >> 1, n2 = n - n1;  // two factors so 2^n spans [-150, 128] without overflow
  y = y * asFloat((n1 + 127) << 23) * asFloat((n2 + 127) << 23);
  y = x < -103.9f ? 0.0f : y;
  y = x > 88.73f ? __builtin_inff() : y;
  return y;
}

static inline float vtanh(float x) {
  const float ax = __builtin_fabsf(x), z = x * x;
  const float small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z +
    1.33314422036E-1f) * z - 3.33332819422E-1f) * z * x + x;
  const float e = vexp(2.0f * ax);
  const float big = __builtin_copysignf(1.0f - 2.0f / (e + 1.0f), x);
  return ax < 0.625f ? small : big;
}

// 1 - sigmoid without cancellation: e*s when e = exp(-v) <= 1, else 1 - s (s is small).
static inline float oneMinusSig(float v, float e, float s) { return v >= 0.0f ? e * s : 1.0f - s; }

// Phi(x) = P(N(0,1) <= x) via erfc(|x|/sqrt2) (Numerical Recipes' Chebyshev fit), so that
// the left tail keeps its relative precision.
static inline float vPhi(float x) {
  const float z = __builtin_fabsf(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f +
    t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float erfcv = t * vexp(-z * z + p);
  return x >= 0.0f ? 1.0f - 0.5f * erfcv : 0.5f * erfcv;
}

static const float kSqrt2OverPi = 0.79788456080286536f;
static const float kInvSqrt2Pi = 0.39894228040143268f;

static void unary(int op, const float* __restrict x, float* __restrict y, size_t n) {
#define LOOP(expr) { _Pragma("omp simd") for (size_t i = 0; i < n; i++) { const float v = x[i]; y[i] = (expr); } } break;
  switch (op) {
    case U_NEG: LOOP(-v)
    case U_EXP: LOOP(vexp(v))
    case U_LOG: for (size_t i = 0; i < n; i++) y[i] = __builtin_logf(x[i]); break;
    case U_SQRT: LOOP(__builtin_sqrtf(v))
    case U_RSQRT: LOOP(1.0f / __builtin_sqrtf(v))
    case U_TANH: LOOP(vtanh(v))
    case U_RELU: LOOP(v > 0.0f ? v : 0.0f)
    case U_SIGMOID: LOOP(1.0f / (1.0f + vexp(-v)))
    case U_SILU: LOOP(v / (1.0f + vexp(-v)))
    case U_GELU: LOOP(v * vPhi(v))
    case U_GELU_TANH: LOOP(v / (1.0f + vexp(-2.0f * kSqrt2OverPi * (v + 0.044715f * v * v * v))))
    case U_ABS: LOOP(__builtin_fabsf(v))
    case U_SQUARE: LOOP(v * v)
    case U_RECIP: LOOP(1.0f / v)
  }
#undef LOOP
}

static void unaryBackward(int op, const float* __restrict x, const float* __restrict gy, float* __restrict gx, size_t n) {
#define LOOP(expr) { _Pragma("omp simd") for (size_t i = 0; i < n; i++) { const float v = x[i]; const float g = gy[i]; (void)v; gx[i] = (expr); } } break;
  switch (op) {
    case U_NEG: LOOP(-g)
    case U_EXP: LOOP(g * vexp(v))
    case U_LOG: LOOP(g / v)
    case U_SQRT: LOOP(g * (0.5f / __builtin_sqrtf(v)))
    case U_RSQRT: LOOP(g * (-0.5f / (v * __builtin_sqrtf(v))))
    case U_TANH: LOOP(({ const float e = vexp(-2.0f * __builtin_fabsf(v)); const float q = 1.0f + e; g * (4.0f * e / (q * q)); }))  // sech^2 without 1 - t*t cancellation
    case U_RELU: LOOP(g * (v > 0.0f ? 1.0f : 0.0f))
    case U_SIGMOID: LOOP(({ const float e = vexp(-v); const float s = 1.0f / (1.0f + e); g * (s * oneMinusSig(v, e, s)); }))
    case U_SILU: LOOP(({ const float e = vexp(-v); const float s = 1.0f / (1.0f + e); g * (s * (1.0f + v * oneMinusSig(v, e, s))); }))
    case U_GELU: LOOP(g * (vPhi(v) + v * vexp(-0.5f * v * v) * kInvSqrt2Pi))
    case U_GELU_TANH: LOOP(({
      const float u2 = 2.0f * kSqrt2OverPi * (v + 0.044715f * v * v * v);
      const float e = vexp(-u2); const float s = 1.0f / (1.0f + e);
      const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * v * v);
      g * (s + v * 2.0f * s * oneMinusSig(u2, e, s) * du); }))
    case U_ABS: LOOP(g * (v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : 0.0f))
    case U_SQUARE: LOOP(g * (2.0f * v))
    case U_RECIP: LOOP(g * (-1.0f / (v * v)))
  }
#undef LOOP
}

static inline float bmax(float a, float b) { return a > b ? a : (b != b ? b : (a != a ? a : b)); }
static inline float bmin(float a, float b) { return a < b ? a : (b != b ? b : (a != a ? a : b)); }

static void binary(int op, const float* __restrict a, int sa, const float* __restrict b, int sb, float* __restrict out, size_t n) {
#define LOOPS(expr) \
  if (sa && sb) { _Pragma("omp simd") for (size_t i = 0; i < n; i++) { const float p = a[i], q = b[i]; out[i] = (expr); } } \
  else if (sa) { const float q = b[0]; _Pragma("omp simd") for (size_t i = 0; i < n; i++) { const float p = a[i]; out[i] = (expr); } } \
  else if (sb) { const float p = a[0]; _Pragma("omp simd") for (size_t i = 0; i < n; i++) { const float q = b[i]; out[i] = (expr); } } \
  else { const float p = a[0], q = b[0]; const float r = (expr); for (size_t i = 0; i < n; i++) out[i] = r; } \
  break;
  switch (op) {
    case B_ADD: LOOPS(p + q)
    case B_SUB: LOOPS(p - q)
    case B_MUL: LOOPS(p * q)
    case B_DIV: LOOPS(p / q)
    case B_MAX: LOOPS(p > q ? p : (p < q ? q : bmax(p, q)))
    case B_MIN: LOOPS(p < q ? p : (p > q ? q : bmin(p, q)))
    case B_POW:
      for (size_t i = 0; i < n; i++) out[i] = (float)__builtin_pow((double)a[i * sa], (double)b[i * sb]);
      break;
  }
#undef LOOPS
}

static void affine(const float* __restrict x, float s, float t, float* __restrict y, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) y[i] = x[i] * s + t;
}

static void axpy(float alpha, const float* __restrict x, float* __restrict y, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void sumCols(const float* __restrict x, size_t mid, size_t inner, size_t stride, float* __restrict out) {
  // double accumulators: a column sum over thousands of rows (bias gradients) stays exact enough
  const size_t TILE = 256;
  double acc[TILE];
  for (size_t c0 = 0; c0 < inner; c0 += TILE) {
    const size_t w = inner - c0 < TILE ? inner - c0 : TILE;
    for (size_t i = 0; i < w; i++) acc[i] = 0.0;
    for (size_t j = 0; j < mid; j++) {
      const float* row = x + j * stride + c0;
#pragma omp simd
      for (size_t i = 0; i < w; i++) acc[i] += (double)row[i];
    }
    for (size_t i = 0; i < w; i++) out[c0 + i] = (float)acc[i];
  }
}

static void maxCols(const float* __restrict x, size_t mid, size_t inner, size_t stride, float* __restrict out) {
  for (size_t i = 0; i < inner; i++) out[i] = -__builtin_inff();
  for (size_t j = 0; j < mid; j++) {
    const float* row = x + j * stride;
#pragma omp simd
    for (size_t i = 0; i < inner; i++) { const float v = row[i], m = out[i]; out[i] = (v > m || v != v) ? v : m; }
  }
}

static float sumRow(const float* __restrict x, size_t n) {
  double s = 0.0;
#pragma omp simd reduction(+:s)
  for (size_t i = 0; i < n; i++) s += (double)x[i];
  return (float)s;
}

static float sumRowF(const float* __restrict x, size_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+:s)
  for (size_t i = 0; i < n; i++) s += x[i];
  return s;
}

static float maxRow(const float* __restrict x, size_t n) {
  float m = -__builtin_inff();
  int nan = 0;
#pragma omp simd reduction(max:m) reduction(|:nan)
  for (size_t i = 0; i < n; i++) { const float v = x[i]; m = v > m ? v : m; nan |= (v != v); }
  return nan ? __builtin_nanf("") : m;
}

static void softmax(const float* __restrict x, size_t r0, size_t r1, size_t cols, float* __restrict out) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    const float mx = maxRow(xr, cols);
    if (mx == -__builtin_inff()) { for (size_t j = 0; j < cols; j++) o[j] = 0.0f; continue; }
    float s = 0.0f;
#pragma omp simd reduction(+:s)
    for (size_t j = 0; j < cols; j++) { const float e = vexp(xr[j] - mx); o[j] = e; s += e; }
    const float inv = 1.0f / s;
#pragma omp simd
    for (size_t j = 0; j < cols; j++) o[j] *= inv;
  }
}

static void softmaxBackward(const float* __restrict y, const float* __restrict gy, size_t r0, size_t r1, size_t cols, float* __restrict gx) {
  for (size_t r = r0; r < r1; r++) {
    const float* yr = y + r * cols; const float* g = gy + r * cols; float* o = gx + r * cols;
    float dot = 0.0f;
#pragma omp simd reduction(+:dot)
    for (size_t j = 0; j < cols; j++) dot += yr[j] * g[j];
#pragma omp simd
    for (size_t j = 0; j < cols; j++) o[j] = yr[j] * (g[j] - dot);
  }
}

static float rowLse(const float* __restrict xr, size_t cols) {
  const float mx = maxRow(xr, cols);
  float s = 0.0f;
#pragma omp simd reduction(+:s)
  for (size_t j = 0; j < cols; j++) s += vexp(xr[j] - mx);
  return mx + __builtin_logf(s);
}

static void logSoftmax(const float* __restrict x, size_t r0, size_t r1, size_t cols, float* __restrict out) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; float* o = out + r * cols;
    const float lse = rowLse(xr, cols);
#pragma omp simd
    for (size_t j = 0; j < cols; j++) o[j] = xr[j] - lse;
  }
}

static void logSoftmaxBackward(const float* __restrict y, const float* __restrict gy, size_t r0, size_t r1, size_t cols, float* __restrict gx) {
  for (size_t r = r0; r < r1; r++) {
    const float* yr = y + r * cols; const float* g = gy + r * cols; float* o = gx + r * cols;
    const float s = sumRowF(g, cols);
#pragma omp simd
    for (size_t j = 0; j < cols; j++) o[j] = g[j] - vexp(yr[j]) * s;
  }
}

static void crossEntropy(const float* __restrict x, const int32_t* __restrict t, size_t r0, size_t r1, size_t cols, int ignore,
  float* __restrict loss, float* __restrict lse) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols;
    const float l = rowLse(xr, cols);
    lse[r] = l;
    loss[r] = t[r] == ignore ? 0.0f : l - xr[t[r]];
  }
}

static void crossEntropyBackward(const float* __restrict x, const int32_t* __restrict t, const float* __restrict lse,
  const float* __restrict gl, size_t r0, size_t r1, size_t cols, int ignore, float* __restrict gx) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; float* o = gx + r * cols;
    if (t[r] == ignore) { for (size_t j = 0; j < cols; j++) o[j] = 0.0f; continue; }
    const float g = gl[r], l = lse[r];
#pragma omp simd
    for (size_t j = 0; j < cols; j++) o[j] = vexp(xr[j] - l) * g;
    o[t[r]] -= g;
  }
}

static void layerNorm(const float* __restrict x, const float* __restrict w, const float* __restrict b, size_t r0, size_t r1,
  size_t cols, float eps, float* __restrict out, float* __restrict mean, float* __restrict rstd) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; float* o = out + r * cols;
    const float m = sumRowF(xr, cols) / (float)cols;
    float v = 0.0f;
#pragma omp simd reduction(+:v)
    for (size_t j = 0; j < cols; j++) { const float d = xr[j] - m; v += d * d; }
    const float rs = 1.0f / __builtin_sqrtf(v / (float)cols + eps);
    mean[r] = m; rstd[r] = rs;
    if (w && b) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = (xr[j] - m) * rs * w[j] + b[j];
    } else if (w) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = (xr[j] - m) * rs * w[j];
    } else if (b) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = (xr[j] - m) * rs + b[j];
    } else {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = (xr[j] - m) * rs;
    }
  }
}

static void layerNormBackward(const float* __restrict x, const float* __restrict w, const float* __restrict mean,
  const float* __restrict rstd, const float* __restrict gy, size_t r0, size_t r1, size_t cols, float* __restrict gx,
  float* __restrict gw, float* __restrict gb) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; const float* g = gy + r * cols; float* o = gx + r * cols;
    const float m = mean[r], rs = rstd[r];
    float sumD = 0.0f, sumDX = 0.0f;
    if (w) {
#pragma omp simd reduction(+:sumD, sumDX)
      for (size_t j = 0; j < cols; j++) { const float xh = (xr[j] - m) * rs; const float d = g[j] * w[j]; sumD += d; sumDX += d * xh; }
    } else {
#pragma omp simd reduction(+:sumD, sumDX)
      for (size_t j = 0; j < cols; j++) { const float xh = (xr[j] - m) * rs; sumD += g[j]; sumDX += g[j] * xh; }
    }
    if (gw) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) gw[j] += g[j] * ((xr[j] - m) * rs);
    }
    if (gb) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) gb[j] += g[j];
    }
    sumD /= (float)cols; sumDX /= (float)cols;
    if (w) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = rs * (g[j] * w[j] - sumD - (xr[j] - m) * rs * sumDX);
    } else {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = rs * (g[j] - sumD - (xr[j] - m) * rs * sumDX);
    }
  }
}

static void rmsNorm(const float* __restrict x, const float* __restrict w, size_t r0, size_t r1, size_t cols, float eps,
  float* __restrict out, float* __restrict rstd) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; float* o = out + r * cols;
    float ss = 0.0f;
#pragma omp simd reduction(+:ss)
    for (size_t j = 0; j < cols; j++) ss += xr[j] * xr[j];
    const float rs = 1.0f / __builtin_sqrtf(ss / (float)cols + eps);
    rstd[r] = rs;
    if (w) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = xr[j] * rs * w[j];
    } else {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = xr[j] * rs;
    }
  }
}

static void rmsNormBackward(const float* __restrict x, const float* __restrict w, const float* __restrict rstd,
  const float* __restrict gy, size_t r0, size_t r1, size_t cols, float* __restrict gx, float* __restrict gw) {
  for (size_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols; const float* g = gy + r * cols; float* o = gx + r * cols;
    const float rs = rstd[r];
    float dot = 0.0f;
    if (w) {
#pragma omp simd reduction(+:dot)
      for (size_t j = 0; j < cols; j++) dot += g[j] * w[j] * xr[j];
    } else {
#pragma omp simd reduction(+:dot)
      for (size_t j = 0; j < cols; j++) dot += g[j] * xr[j];
    }
    if (gw) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) gw[j] += g[j] * xr[j] * rs;
    }
    const float c = dot * rs * rs * rs / (float)cols;
    if (w) {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = g[j] * w[j] * rs - xr[j] * c;
    } else {
#pragma omp simd
      for (size_t j = 0; j < cols; j++) o[j] = g[j] * rs - xr[j] * c;
    }
  }
}

static void adamw(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, size_t n,
  float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
  const float ib1 = 1.0f - b1, ib2 = 1.0f - b2, decay = 1.0f - lr * wd, ibc1 = 1.0f / bc1, ibc2 = 1.0f / bc2;
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    const float gi = g[i];
    const float mi = b1 * m[i] + ib1 * gi;
    const float vi = b2 * v[i] + ib2 * gi * gi;
    m[i] = mi; v[i] = vi;
    p[i] = p[i] * decay - lr * (mi * ibc1) / (__builtin_sqrtf(vi * ibc2) + eps);
  }
}

static void bf16ToF32(const uint16_t* __restrict x, float* __restrict y, size_t n) {
  uint32_t* u = (uint32_t*)y;
#pragma omp simd
  for (size_t i = 0; i < n; i++) u[i] = (uint32_t)x[i] << 16;
}

static void f32ToBf16(const float* __restrict x, uint16_t* __restrict y, size_t n) {
  const uint32_t* u = (const uint32_t*)x;
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    const uint32_t bits = u[i];
    const bool nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0;
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    y[i] = (uint16_t)(nan ? ((bits >> 16) | 0x40u) : rounded);
  }
}

// Counter-based dropout, the hash of dropoutHash in src/backends/reference/math.ts (bit for
// bit): element `start + i` is kept when its hash >= thr. x null: y gets the mask (scale or
// 0), else y = x * mask (the product the mask path would give, NaN * 0 included).
static inline uint32_t fmix32(uint32_t h) {
  h = (h ^ (h >> 16)) * 0x85ebca6bu;
  h = (h ^ (h >> 13)) * 0xc2b2ae35u;
  return h ^ (h >> 16);
}
static void dropout(const float* __restrict x, float* __restrict y, size_t start, size_t n, uint32_t seed, uint32_t thr,
  float scale) {
  if (!x) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
      const uint32_t z = fmix32(fmix32(seed ^ ((uint32_t)(start + i + 1) * 0x9e3779b9u)) + seed);
      y[i] = z >= thr ? scale : 0.0f;
    }
    return;
  }
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    const uint32_t z = fmix32(fmix32(seed ^ ((uint32_t)(start + i + 1) * 0x9e3779b9u)) + seed);
    y[i] = x[i] * (z >= thr ? scale : 0.0f);
  }
}

static const Kernels table = {
  KERNEL_NAME, unary, unaryBackward, binary, affine, axpy, sumCols, maxCols, sumRow, maxRow,
  softmax, softmaxBackward, logSoftmax, logSoftmaxBackward, crossEntropy, crossEntropyBackward,
  layerNorm, layerNormBackward, rmsNorm, rmsNormBackward, adamw, bf16ToF32, f32ToBf16, dropout,
};
