// Runs the C++ oracle port (attention_oracle.h) on the cases oracle_fixture.mjs wrote with
// the TypeScript oracle, and compares. Host only: build.sh oracle.
#include <cmath>
#include <cstdio>
#include <vector>

#include "attention_oracle.h"

namespace {

struct Reader {
  std::vector<double> v;
  size_t at = 0;
  double next() { return v.at(at++); }
  std::vector<float> floats(size_t n) {
    std::vector<float> r(n);
    for (auto& x : r) x = (float)next();
    return r;
  }
};

/**
 * The TS stores into (and accumulates gradients in) Float32Arrays, the port in doubles:
 * compare after rounding to float, relative to the array's largest magnitude.
 */
bool same(const char* what, const std::vector<double>& port, const std::vector<float>& ts) {
  double worst = 0, top = 1e-30;
  for (float t : ts) if (std::isfinite(t)) top = std::fmax(top, std::fabs((double)t));
  for (size_t i = 0; i < ts.size(); i++) {
    const float p = (float)port[i];
    if (std::isinf(ts[i]) || std::isinf(p)) {
      if (p != ts[i]) { std::printf("  %s[%zu]: port %g, ts %g\n", what, i, (double)p, (double)ts[i]); return false; }
      continue;
    }
    worst = std::fmax(worst, std::fabs((double)p - ts[i]) / top);
  }
  std::printf("  %-3s worst rel diff %.2e %s\n", what, worst, worst < 1e-5 ? "PASS" : "FAIL");
  return worst < 1e-5;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: oracle_check fixture.bin\n"); return 2; }
  FILE* f = std::fopen(argv[1], "rb");
  if (!f) { std::perror(argv[1]); return 2; }
  Reader r;
  double x;
  while (std::fread(&x, sizeof x, 1, f) == 1) r.v.push_back(x);
  std::fclose(f);
  const int n = (int)r.next();
  bool ok = true;
  for (int ci = 0; ci < n; ci++) {
    oracle::Shape s{};
    s.B = (int)r.next(); s.H = (int)r.next(); s.Hk = (int)r.next(); s.T = (int)r.next(); s.S = (int)r.next();
    s.D = (int)r.next(); s.scale = r.next();
    for (auto& b : s.biasStrides) b = (int64_t)r.next();
    s.dropoutP = r.next(); s.seed = (uint32_t)r.next();
    const bool hasBias = r.next() != 0;
    const size_t nq = (size_t)s.B * s.H * s.T * s.D, nk = (size_t)s.B * s.Hk * s.S * s.D, nl = (size_t)s.B * s.H * s.T;
    const auto q = r.floats(nq), k = r.floats(nk), v = r.floats(nk), g = r.floats(nq);
    std::vector<float> bias;
    if (hasBias) bias = r.floats((size_t)r.next());
    const auto out = r.floats(nq), lse = r.floats(nl), gq = r.floats(nq), gk = r.floats(nk), gv = r.floats(nk);
    std::printf("case %d: B%d H%d Hk%d T%d S%d D%d dropout %g\n", ci, s.B, s.H, s.Hk, s.T, s.S, s.D, s.dropoutP);
    std::vector<double> pOut(nq), pLse(nl), pGq(nq), pGk(nk), pGv(nk);
    const float* bp = hasBias ? bias.data() : nullptr;
    oracle::attentionForward(q.data(), k.data(), v.data(), bp, s, pOut.data(), pLse.data());
    oracle::attentionBackward(q.data(), k.data(), v.data(), bp, s, out.data(), lse.data(), g.data(), pGq.data(),
                              pGk.data(), pGv.data());
    ok &= same("out", pOut, out);
    ok &= same("lse", pLse, lse);
    ok &= same("gq", pGq, gq);
    ok &= same("gk", pGk, gk);
    ok &= same("gv", pGv, gv);
  }
  if (r.at != r.v.size()) { std::printf("fixture not fully read\n"); ok = false; }
  std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
  return ok ? 0 : 1;
}
