// Checks cudaAttentionForward / cudaAttentionBackward against the host port of the oracle
// (attention_oracle.h, double accumulation) on random inputs, and times them (--bench).
//
//   build/attention_test           all cases: max abs / rel error per output, PASS/FAIL, exit 1 on any FAIL
//   build/attention_test --bench   forward and backward times for the GPT-2 and Llama-1B shapes
//
// Also compiles with g++ -DATTN_EMULATE (build.sh emu): the same cases on the CPU emulation.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "attention.h"
#include "attention_oracle.h"
#ifndef ATTN_EMULATE
#include <cuda_runtime.h>
#endif

#define CHECK(x)                                                                            \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                         \
    }                                                                                       \
  } while (0)

namespace {

// Deterministic inputs: a 64-bit LCG, uniform in [lo, hi).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 6364136223846793005ull + 1442695040888963407ull) {}
  double next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s >> 11) / 9007199254740992.0;
  }
  float uniform(float lo, float hi) { return (float)(lo + (hi - lo) * next()); }
};

enum BiasKind {
  kNone,       // no bias
  kCausal,     // [1,1,T,S]: -inf where j > t
  kFull,       // [B,H,T,S] random, ~10% -inf
  kKeyPad,     // [B,1,1,S]: batch b keeps its first len_b keys; the last batch keeps none (fully masked rows)
  kMaskedRows, // [1,1,T,S]: causal, and every row t % 5 == 2 entirely -inf
  kRowBias,    // [1,H,T,1]: one random value per (h, t), broadcast over keys
};

struct Case {
  const char* name;
  int B, H, Hk, T, S, D;
  BiasKind bias;
  double dropoutP;
  uint32_t seed;
  double scale;  // 0: 1/sqrt(D)
};

struct Err {
  double maxAbs = 0, maxRef = 0;
  int64_t bad = 0, firstBad = -1;
};

/** |got - ref| <= atol + rtol * |ref| per element, with atol relative to the largest |ref|. */
Err compare(const float* got, const double* ref, int64_t n) {
  Err e;
  for (int64_t i = 0; i < n; i++)
    if (std::isfinite(ref[i])) e.maxRef = std::fmax(e.maxRef, std::fabs(ref[i]));
  const double atol = 1e-5 + 1e-4 * e.maxRef, rtol = 1e-4;
  for (int64_t i = 0; i < n; i++) {
    const double g = got[i], r = ref[i];
    bool ok;
    if (std::isinf(r)) {
      ok = g == r;
    } else {
      const double d = std::fabs(g - r);
      ok = std::isfinite(g) && d <= atol + rtol * std::fabs(r);
      if (std::isfinite(d)) e.maxAbs = std::fmax(e.maxAbs, d);
    }
    if (!ok) {
      if (e.firstBad < 0) e.firstBad = i;
      e.bad++;
    }
  }
  return e;
}

bool report(const char* what, const Err& e, const float* got, const double* ref) {
  const bool ok = e.bad == 0;
  std::printf("    %-4s max abs %.3e  max rel %.3e  (max |ref| %.3e)  %s", what, e.maxAbs,
              e.maxRef > 0 ? e.maxAbs / e.maxRef : 0.0, e.maxRef, ok ? "PASS" : "FAIL");
  if (!ok)
    std::printf("  %lld bad, first at %lld: got %.8g want %.8g", (long long)e.bad, (long long)e.firstBad,
                (double)got[e.firstBad], ref[e.firstBad]);
  std::printf("\n");
  return ok;
}

template <typename T>
T* toDevice(const std::vector<T>& h) {
  T* d = nullptr;
  CHECK(cudaMalloc(&d, h.size() * sizeof(T) + sizeof(T)));  // + 1: never a zero-size allocation
  if (!h.empty()) CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
float* deviceNaN(int64_t n) {  // 0xff bytes: NaN, so a slot the kernels fail to write shows up
  float* d = nullptr;
  CHECK(cudaMalloc(&d, (size_t)n * sizeof(float) + sizeof(float)));
  CHECK(cudaMemset(d, 0xff, (size_t)n * sizeof(float)));
  return d;
}
std::vector<float> toHost(const float* d, int64_t n) {
  std::vector<float> h((size_t)n);
  if (n) CHECK(cudaMemcpy(h.data(), d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

/** The bias tensor of a case and its strides over [B, H, T, S]. */
std::vector<float> makeBias(const Case& c, Rng& rng, int64_t st[4]) {
  const float ninf = -INFINITY;
  std::vector<float> bias;
  st[0] = st[1] = st[2] = st[3] = 0;
  switch (c.bias) {
    case kNone:
      break;
    case kCausal:
    case kMaskedRows:
      st[2] = c.S; st[3] = 1;
      bias.assign((size_t)c.T * c.S, 0.0f);
      for (int t = 0; t < c.T; t++)
        for (int j = 0; j < c.S; j++)
          if (j > t || (c.bias == kMaskedRows && t % 5 == 2)) bias[(size_t)t * c.S + j] = ninf;
      break;
    case kFull:
      st[0] = (int64_t)c.H * c.T * c.S; st[1] = (int64_t)c.T * c.S; st[2] = c.S; st[3] = 1;
      bias.resize((size_t)c.B * c.H * c.T * c.S);
      for (auto& x : bias) x = rng.next() < 0.1 ? ninf : rng.uniform(-1.0f, 1.0f);
      break;
    case kKeyPad:
      st[0] = c.S; st[3] = 1;
      bias.resize((size_t)c.B * c.S);
      for (int b = 0; b < c.B; b++) {
        const int len = b == c.B - 1 ? 0 : c.S - 3 * b - 1;  // last batch: every key masked
        for (int j = 0; j < c.S; j++) bias[(size_t)b * c.S + j] = j < len ? 0.0f : ninf;
      }
      break;
    case kRowBias:
      st[1] = c.T; st[2] = 1;
      bias.resize((size_t)c.H * c.T);
      for (auto& x : bias) x = rng.uniform(-2.0f, 2.0f);
      break;
  }
  return bias;
}

bool runCase(const Case& c) {
  std::printf("%s: B%d H%d Hk%d T%d S%d D%d bias=%d dropout=%g\n", c.name, c.B, c.H, c.Hk, c.T, c.S, c.D, (int)c.bias,
              c.dropoutP);
  Rng rng(c.seed * 7919u + 17u);
  const int64_t nq = (int64_t)c.B * c.H * c.T * c.D, nk = (int64_t)c.B * c.Hk * c.S * c.D;
  const int64_t nl = (int64_t)c.B * c.H * c.T;
  std::vector<float> q(nq), k(nk), v(nk), gOut(nq);
  for (auto& x : q) x = rng.uniform(-2.0f, 2.0f);  // peaky enough rows to exercise the max subtraction
  for (auto& x : k) x = rng.uniform(-1.0f, 1.0f);
  for (auto& x : v) x = rng.uniform(-1.0f, 1.0f);
  for (auto& x : gOut) x = rng.uniform(-1.0f, 1.0f);
  int64_t bst[4];
  const std::vector<float> bias = makeBias(c, rng, bst);
  const bool hasBias = c.bias != kNone;

  pc::AttnShape s{};
  s.B = c.B; s.H = c.H; s.Hk = c.Hk; s.T = c.T; s.S = c.S; s.D = c.D;
  s.scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt((double)c.D);
  for (int i = 0; i < 4; i++) s.biasStrides[i] = bst[i];
  s.dropoutP = c.dropoutP;
  s.seed = c.seed;
  oracle::Shape os{};
  os.B = c.B; os.H = c.H; os.Hk = c.Hk; os.T = c.T; os.S = c.S; os.D = c.D;
  os.scale = s.scale;
  for (int i = 0; i < 4; i++) os.biasStrides[i] = bst[i];
  os.dropoutP = c.dropoutP;
  os.seed = c.seed;

  // Oracle forward; its out and lse rounded to float feed both backwards (as the TS would get them).
  std::vector<double> refOut(nq), refLse(nl);
  oracle::attentionForward(q.data(), k.data(), v.data(), hasBias ? bias.data() : nullptr, os, refOut.data(), refLse.data());
  std::vector<float> outF(refOut.begin(), refOut.end()), lseF(refLse.begin(), refLse.end());
  std::vector<double> refGq(nq), refGk(nk), refGv(nk);
  oracle::attentionBackward(q.data(), k.data(), v.data(), hasBias ? bias.data() : nullptr, os, outF.data(), lseF.data(),
                            gOut.data(), refGq.data(), refGk.data(), refGv.data());

  float *dq = toDevice(q), *dk = toDevice(k), *dv = toDevice(v), *dg = toDevice(gOut);
  float* dbias = hasBias ? toDevice(bias) : nullptr;
  float *dOutRef = toDevice(outF), *dLseRef = toDevice(lseF);
  float *dOut = deviceNaN(nq), *dLse = deviceNaN(nl);
  float *dGq = deviceNaN(nq), *dGk = deviceNaN(nk), *dGv = deviceNaN(nk);

  CHECK(pc::cudaAttentionForward(dq, dk, dv, dbias, s, dOut, dLse, nullptr));
  CHECK(cudaDeviceSynchronize());
  CHECK(pc::cudaAttentionBackward(dq, dk, dv, dbias, s, dOutRef, dLseRef, dg, dGq, dGk, dGv, nullptr));
  CHECK(cudaDeviceSynchronize());

  const std::vector<float> out = toHost(dOut, nq), lse = toHost(dLse, nl);
  const std::vector<float> gq = toHost(dGq, nq), gk = toHost(dGk, nk), gv = toHost(dGv, nk);
  bool ok = true;
  ok &= report("out", compare(out.data(), refOut.data(), nq), out.data(), refOut.data());
  ok &= report("lse", compare(lse.data(), refLse.data(), nl), lse.data(), refLse.data());
  ok &= report("gq", compare(gq.data(), refGq.data(), nq), gq.data(), refGq.data());
  ok &= report("gk", compare(gk.data(), refGk.data(), nk), gk.data(), refGk.data());
  ok &= report("gv", compare(gv.data(), refGv.data(), nk), gv.data(), refGv.data());

  // The backward is deterministic (no atomics): a second run gives the same bits.
  CHECK(pc::cudaAttentionBackward(dq, dk, dv, dbias, s, dOutRef, dLseRef, dg, dGq, dGk, dGv, nullptr));
  CHECK(cudaDeviceSynchronize());
  const bool same = toHost(dGq, nq) == gq && toHost(dGk, nk) == gk && toHost(dGv, nk) == gv;
  std::printf("    backward rerun bitwise identical: %s\n", same ? "PASS" : "FAIL");
  ok &= same;

  for (float* p : {dq, dk, dv, dg, dOutRef, dLseRef, dOut, dLse, dGq, dGk, dGv}) CHECK(cudaFree(p));
  if (dbias) CHECK(cudaFree(dbias));
  return ok;
}

/** Invalid shapes are refused with cudaErrorInvalidValue before anything is launched. */
bool checkRefusals() {
  pc::AttnShape s{};
  s.B = 1; s.H = 2; s.Hk = 1; s.T = 4; s.S = 4; s.D = 8; s.scale = 1;
  bool ok = true;
  auto expect = [&](const char* what, pc::AttnShape bad) {
    const cudaError_t e = pc::cudaAttentionForward(nullptr, nullptr, nullptr, nullptr, bad, nullptr, nullptr, nullptr);
    const cudaError_t e2 = pc::cudaAttentionBackward(nullptr, nullptr, nullptr, nullptr, bad, nullptr, nullptr, nullptr,
                                                     nullptr, nullptr, nullptr, nullptr);
    const bool good = e == cudaErrorInvalidValue && e2 == cudaErrorInvalidValue;
    std::printf("refuses %s: %s\n", what, good ? "PASS" : "FAIL");
    ok &= good;
  };
  pc::AttnShape a = s; a.D = 129; expect("D > 128", a);
  a = s; a.Hk = 3; a.H = 4; expect("H % Hk != 0", a);
  a = s; a.dropoutP = 1.0; expect("dropout 1", a);
  a = s; a.dropoutP = -0.5; expect("negative dropout", a);
  return ok;
}

/** Known answers of dropoutHash from src/backends/reference/math.ts (node, see README.md). */
bool checkHash() {
  struct { uint32_t seed; double i; uint32_t want; } kat[] = {
#include "hash_kat.inc"
  };
  bool ok = true;
  for (const auto& t : kat) ok &= oracle::dropoutHash(t.seed, t.i) == t.want;
  std::printf("oracle dropoutHash matches the TypeScript on %d known answers: %s\n", (int)(sizeof(kat) / sizeof(kat[0])),
              ok ? "PASS" : "FAIL");
  return ok;
}

void bench(const char* name, int B, int H, int Hk, int T, int D) {
  const int S = T;
  const int64_t nq = (int64_t)B * H * T * D, nk = (int64_t)B * Hk * S * D, nl = (int64_t)B * H * T;
  Rng rng(1);
  std::vector<float> h(nq > nk ? nq : nk);
  for (auto& x : h) x = rng.uniform(-1.0f, 1.0f);
  std::vector<float> causal((size_t)T * S);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < S; j++) causal[(size_t)t * S + j] = j > t ? -INFINITY : 0.0f;
  std::vector<float> hq(h.begin(), h.begin() + nq), hk(h.begin(), h.begin() + nk);
  float *q = toDevice(hq), *k = toDevice(hk), *v = toDevice(hk), *g = toDevice(hq), *bias = toDevice(causal);
  float *out = deviceNaN(nq), *lse = deviceNaN(nl), *gq = deviceNaN(nq), *gk = deviceNaN(nk), *gv = deviceNaN(nk);
  pc::AttnShape s{};
  s.B = B; s.H = H; s.Hk = Hk; s.T = T; s.S = S; s.D = D;
  s.scale = 1.0 / std::sqrt((double)D);
  s.biasStrides[2] = S; s.biasStrides[3] = 1;  // causal mask [1,1,T,S], as the models pass it
  cudaEvent_t e0, e1, e2;
  CHECK(cudaEventCreate(&e0)); CHECK(cudaEventCreate(&e1)); CHECK(cudaEventCreate(&e2));
  for (double p : {0.0, 0.1}) {
    s.dropoutP = p;
    for (int w = 0; w < 2; w++) {
      CHECK(pc::cudaAttentionForward(q, k, v, bias, s, out, lse, nullptr));
      CHECK(pc::cudaAttentionBackward(q, k, v, bias, s, out, lse, g, gq, gk, gv, nullptr));
    }
    const int iters = 10;
    float fwdMs = 0, bwdMs = 0;
    for (int it = 0; it < iters; it++) {
      CHECK(cudaEventRecord(e0, nullptr));
      CHECK(pc::cudaAttentionForward(q, k, v, bias, s, out, lse, nullptr));
      CHECK(cudaEventRecord(e1, nullptr));
      CHECK(pc::cudaAttentionBackward(q, k, v, bias, s, out, lse, g, gq, gk, gv, nullptr));
      CHECK(cudaEventRecord(e2, nullptr));
      CHECK(cudaEventSynchronize(e2));
      float a, b;
      CHECK(cudaEventElapsedTime(&a, e0, e1));
      CHECK(cudaEventElapsedTime(&b, e1, e2));
      fwdMs += a; bwdMs += b;
    }
    fwdMs /= iters; bwdMs /= iters;
    // Dense-equivalent flops (the causal half is computed too: the mask comes as a bias).
    const double fwdFlop = 4.0 * B * H * (double)T * S * D, bwdFlop = 2.5 * fwdFlop;
    std::printf("%s B%d H%d Hk%d T%d D%d dropout %.1f: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f TFLOP/s), "
                "total %.3f ms\n", name, B, H, Hk, T, D, p, fwdMs, fwdFlop / fwdMs * 1e-9, bwdMs, bwdFlop / bwdMs * 1e-9,
                fwdMs + bwdMs);
  }
  CHECK(cudaEventDestroy(e0)); CHECK(cudaEventDestroy(e1)); CHECK(cudaEventDestroy(e2));
  for (float* p : {q, k, v, g, bias, out, lse, gq, gk, gv}) CHECK(cudaFree(p));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    bench("gpt2", 16, 12, 12, 1024, 64);
    bench("llama1b", 8, 32, 8, 1024, 64);
    bench("d128", 4, 16, 4, 1024, 128);
    return 0;
  }
  const Case cases[] = {
    {"plain D64", 2, 4, 4, 37, 53, 64, kNone, 0.0, 1, 0},
    {"causal GQA D64", 2, 4, 2, 70, 70, 64, kCausal, 0.0, 2, 0},
    {"full bias GQA D128 T<S", 1, 8, 2, 33, 130, 128, kFull, 0.0, 3, 0},
    {"key padding MQA D40, masked batch", 2, 3, 1, 45, 29, 40, kKeyPad, 0.0, 4, 0},
    {"masked rows, dropout, GQA D64", 2, 4, 2, 67, 75, 64, kMaskedRows, 0.1, 5, 0},
    {"causal dropout D128 T<S", 1, 2, 1, 80, 100, 128, kCausal, 0.1, 6, 0},
    {"row bias dropout D17 T>S scale 0.3", 2, 2, 2, 90, 20, 17, kRowBias, 0.1, 7, 0.3},
    {"full bias dropout D96, several tiles", 1, 2, 2, 130, 140, 96, kFull, 0.1, 8, 0},
    {"no bias, dropout, several tiles, GQA D64", 1, 4, 2, 100, 150, 64, kNone, 0.1, 11, 0},
    {"no bias, several tiles D128", 1, 2, 2, 70, 100, 128, kNone, 0.0, 12, 0},
    {"tiny", 1, 1, 1, 1, 1, 1, kNone, 0.0, 9, 0},
    {"no keys", 1, 2, 1, 5, 0, 8, kNone, 0.0, 10, 0},
  };
  bool ok = checkHash();
  ok &= checkRefusals();
  const char* only = argc > 1 ? argv[1] : nullptr;  // a substring of case names
  for (const Case& c : cases)
    if (!only || std::strstr(c.name, only)) ok &= runCase(c);
  std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
  return ok ? 0 : 1;
}
