// Microbenchmark of the small-m kernels (native/src/gemv.cc) against the previous transB
// kernel (copied below as v0), same process, interleaved, W rotated over > 300 MB of copies so
// it streams from DRAM; 1 and 2 threads (n split in two). Build and run:
//   g++ -O3 -march=x86-64-v3 -mtune=generic -fopenmp-simd -fno-math-errno -fno-trapping-math -pthread \
//     -Inative/src bench/native/gemv_bench.cc -o /tmp/gemv_bench && /tmp/gemv_bench [reps]
#include "../../native/src/gemv.cc"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace peft {
const char* simdLevel() { return "avx512"; }
void parallelFor(size_t n, size_t, const std::function<void(size_t, size_t)>& fn) { fn(0, n); }
}  // namespace peft

using namespace peft;

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")
namespace v0 {  // the transB kernel before this change
template <int M, int R, class W>
inline void dotRows(const float* a, const W* w, float* c, int64_t n, int64_t k, int64_t j) {
  __m512 acc[M][R];
  for (int i = 0; i < M; i++) for (int r = 0; r < R; r++) acc[i][r] = _mm512_setzero_ps();
  const W* wr = w + j * k;
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; r++) wv[r] = ld(wr + r * k + p);
    for (int i = 0; i < M; i++) {
      const __m512 av = _mm512_loadu_ps(a + i * k + p);
      for (int r = 0; r < R; r++) acc[i][r] = _mm512_fmadd_ps(av, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < M; i++) for (int r = 0; r < R; r++) c[i * n + j + r] = _mm512_reduce_add_ps(acc[i][r]);
}
template <int M, class W>
void rowsT(const float* a, const W* w, float* c, int64_t n, int64_t k, int64_t j0, int64_t j1) {
  constexpr int R = M <= 4 ? 4 : 2;
  int64_t j = j0;
  for (; j + R <= j1; j += R) dotRows<M, R>(a, w, c, n, k, j);
  for (; j < j1; j++) dotRows<M, 1>(a, w, c, n, k, j);
}
}  // namespace v0
#pragma GCC pop_options

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double timed(int threads, int64_t n, F f) {
  const double t0 = now();
  if (threads == 1) f(0, n);
  else {
    const int64_t h = (n / 2 + 15) / 16 * 16;
    std::thread t([&] { f(h, n); });
    f(0, h);
    t.join();
  }
  return now() - t0;
}

template <int M, class W>
void bench(const char* label, int64_t n, int64_t k, bool transB, int reps) {
  const size_t elems = (size_t)n * k, bytes = elems * sizeof(W);
  const int copies = (int)std::max<size_t>(2, (size_t)(320u << 20) / bytes + 1);
  std::vector<std::vector<W>> ws(copies, std::vector<W>(elems));
  for (auto& w : ws) for (size_t i = 0; i < elems; i++) {
    const float x = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    if constexpr (sizeof(W) == 2) { uint32_t u; std::memcpy(&u, &x, 4); w[i] = (uint16_t)(u >> 16); } else w[i] = x;
  }
  std::vector<float> a(M * k), c0(M * n), c1(M * n);
  for (size_t i = 0; i < a.size(); i++) a[i] = (float)((i * 40503u) % 997) / 997.0f - 0.5f;
  for (int threads : {1, 2}) {
    std::vector<double> t0, t1;
    int rot = 0;
    for (int r = 0; r < reps; r++) {
      const W* w = ws[rot++ % copies].data();
      if (transB) t0.push_back(timed(threads, n, [&](int64_t j0, int64_t j1) { v0::rowsT<M>(a.data(), w, c0.data(), n, k, j0, j1); }));
      else t0.push_back(timed(threads, n, [&](int64_t j0, int64_t j1) { colsN<M>(a.data(), w, c0.data(), n, k, j0, j1, 1.0f, 0.0f); }));
      w = ws[rot++ % copies].data();
      if (transB) t1.push_back(timed(threads, n, [&](int64_t j0, int64_t j1) { rowsT<M>(a.data(), w, c1.data(), n, k, j0, j1, 1.0f, 0.0f); }));
      else t1.push_back(timed(threads, n, [&](int64_t j0, int64_t j1) { colsN<M>(a.data(), w, c1.data(), n, k, j0, j1, 1.0f, 0.0f); }));
    }
    // Same inputs (the last copy used by each): compare results.
    if (transB) {
      const W* w = ws[0].data();
      timed(threads, n, [&](int64_t j0, int64_t j1) { v0::rowsT<M>(a.data(), w, c0.data(), n, k, j0, j1); });
      timed(threads, n, [&](int64_t j0, int64_t j1) { rowsT<M>(a.data(), w, c1.data(), n, k, j0, j1, 1.0f, 0.0f); });
    }
    const bool same = std::memcmp(c0.data(), c1.data(), c0.size() * 4) == 0;
    std::sort(t0.begin(), t0.end());
    std::sort(t1.begin(), t1.end());
    const double fl = 2.0 * M * n * k;
    auto row = [&](const char* v, std::vector<double>& t) {
      std::printf("%-28s m=%d %s %dT  min %7.3f ms  med %7.3f ms  %6.1f GB/s  %6.1f GFLOP/s\n", label, M, v, threads, t[0] * 1e3,
        t[t.size() / 2] * 1e3, bytes / t[t.size() / 2] / 1e9, fl / t[t.size() / 2] / 1e9);
    };
    row("old", t0);
    row("new", t1);
    std::printf("%-28s results %s\n", "", same ? "bit-identical" : "DIFFER");
  }
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  bench<8, uint16_t>("lm head bf16 50257x768 tB", 50257, 768, true, reps);
  bench<1, uint16_t>("lm head bf16 50257x768 tB", 50257, 768, true, reps);
  bench<8, float>("lm head f32 50257x768 tB", 50257, 768, true, reps);
  bench<8, uint16_t>("c_fc bf16 768x3072 tB", 3072, 768, true, reps);
  return 0;
}
