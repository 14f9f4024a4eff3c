// Mixed-precision GEMMs through oneDNN's bf16 matmul (AMX or AVX512-BF16 brgemm), loaded
// with dlopen at the first call: the addon builds and runs without libdnnl (headers or
// library missing, or a CPU without bf16 instructions), and then takes the fp32 fallback,
// which rounds the operands to bf16 values in float32 scratch and calls sgemm - the same
// numbers up to the order of the float32 sums. Operands are rounded to bf16 by our SIMD
// kernel (threaded on the pool) into reused scratch, then one cached primitive per shape,
// transposition, alpha and beta runs on oneDNN's OpenMP threads (held to the addon's count).
#include "bf16_gemm.h"

#include <dlfcn.h>
#include <cpuid.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bf16.h"
#include "gemv.h"
#include "kernels.h"
#include "pool.h"
#include "sgemm.h"

#if defined(__has_include) && !defined(PEFT_NO_DNNL)  // PEFT_NO_DNNL: build as if the headers were missing
#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#if DNNL_VERSION_MAJOR == 2
#define PEFT_DNNL 1
#endif
#endif
#endif

namespace peft {
namespace {

// Calls come from the JS thread only, one at a time (as in bf16.cc).
std::vector<uint16_t> gA16, gB16;
std::vector<float> gAf, gBf;
int gThreadsWanted = 1;
bool gForceFallback = false;

template <class T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// x[0..n) -> bf16 bits, threaded.
void toBf16(const float* x, uint16_t* y, size_t n) {
  const Kernels& K = kernels();
  parallelFor(n, 1 << 15, [&](size_t s, size_t e) { K.f32ToBf16(x + s, y + s, e - s); });
}
// x[0..n) -> the float32 value of its bf16 rounding, threaded.
void roundBf16(const float* x, float* y, size_t n) {
  const Kernels& K = kernels();
  parallelFor(n, 1 << 14, [&](size_t s, size_t e) {
    uint16_t tmp[1024];
    for (size_t i = s; i < e; i += 1024) {
      const size_t len = std::min<size_t>(1024, e - i);
      K.f32ToBf16(x + i, tmp, len);
      K.bf16ToF32(tmp, y + i, len);
    }
  });
}

// Packs `batch` operands of `each` elements at stride s (0: one shared operand) into a
// compact buffer with f (toBf16 or roundBf16); returns the number of operands packed.
template <class T, class F>
int64_t pack(const float* x, int64_t batch, int64_t each, int64_t s, T* out, F f) {
  if (s == 0 || batch == 1) { f(x, out, (size_t)each); return 1; }
  if (s == each) { f(x, out, (size_t)(batch * each)); return batch; }
  for (int64_t i = 0; i < batch; i++) f(x + i * s, out + i * each, (size_t)each);
  return batch;
}

void scaleC(float* c, int64_t n, float beta) {
  for (int64_t i = 0; i < n; i++) c[i] = beta == 0 ? 0.0f : beta * c[i];
}

void fallbackMixed(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool tA,
  bool tB, int64_t sA, int64_t sB, float alpha, float beta) {
  float* af = grow(gAf, (size_t)((sA == 0 ? 1 : batch) * m * k));
  float* bf = grow(gBf, (size_t)((sB == 0 ? 1 : batch) * k * n));
  const int64_t na = pack(a, batch, m * k, sA, af, roundBf16);
  const int64_t nb = pack(b, batch, k * n, sB, bf, roundBf16);
  // float32 matmul's own batching: many small items (attention heads) one per pool thread.
  matmulF32(af, bf, c, batch, m, n, k, tA, tB, na == 1 ? 0 : m * k, nb == 1 ? 0 : k * n, alpha, beta);
}

bool cpuHasBf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx = (d >> 22) & 1;       // AMX-BF16
  const bool avx512f = (b >> 16) & 1;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return amx;
  const bool avx512bf16 = (a >> 5) & 1;  // AVX512_BF16
  return amx || (avx512f && avx512bf16);
}

#ifdef PEFT_DNNL
// The oneDNN C functions used, resolved from libdnnl.so.2 at run time.
struct Dnnl {
#define PEFT_DNNL_FN(name) decltype(&::name) name = nullptr;
  PEFT_DNNL_FN(dnnl_engine_create)
  PEFT_DNNL_FN(dnnl_stream_create)
  PEFT_DNNL_FN(dnnl_stream_wait)
  PEFT_DNNL_FN(dnnl_memory_desc_init_by_strides)
  PEFT_DNNL_FN(dnnl_matmul_desc_init)
  PEFT_DNNL_FN(dnnl_primitive_attr_create)
  PEFT_DNNL_FN(dnnl_primitive_attr_destroy)
  PEFT_DNNL_FN(dnnl_primitive_attr_set_output_scales)
  PEFT_DNNL_FN(dnnl_primitive_attr_set_post_ops)
  PEFT_DNNL_FN(dnnl_post_ops_create)
  PEFT_DNNL_FN(dnnl_post_ops_destroy)
  PEFT_DNNL_FN(dnnl_post_ops_append_sum)
  PEFT_DNNL_FN(dnnl_primitive_desc_create)
  PEFT_DNNL_FN(dnnl_primitive_desc_destroy)
  PEFT_DNNL_FN(dnnl_primitive_desc_query)
  PEFT_DNNL_FN(dnnl_primitive_create)
  PEFT_DNNL_FN(dnnl_primitive_destroy)
  PEFT_DNNL_FN(dnnl_primitive_execute)
  PEFT_DNNL_FN(dnnl_memory_create)
  PEFT_DNNL_FN(dnnl_memory_destroy)
  PEFT_DNNL_FN(dnnl_memory_set_data_handle)
#undef PEFT_DNNL_FN
  void (*ompSetNumThreads)(int) = nullptr;
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
};

Dnnl gD;
int gState = 0;  // 0 not tried, 1 loaded, -1 unavailable
std::string gWhyNot = "not loaded yet";
std::string gImpl;  // impl of the last primitive created

struct Prim {
  dnnl_primitive_t prim = nullptr;
  dnnl_memory_t src = nullptr, wei = nullptr, dst = nullptr;
};
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t>;
std::map<Key, Prim> gCache;

void destroy(Prim& p) {
  if (p.prim) gD.dnnl_primitive_destroy(p.prim);
  for (dnnl_memory_t mem : {p.src, p.wei, p.dst}) if (mem) gD.dnnl_memory_destroy(mem);
}

bool loadDnnl() {
  if (gState) return gState > 0;
  gState = -1;
  if (!cpuHasBf16()) { gWhyNot = "CPU has neither AMX-BF16 nor AVX512-BF16"; return false; }
  // libgomp spins ~0.3 ms after each parallel region by default; those spinning threads
  // would take the cores from OpenBLAS and the pool between GEMMs. Set before it loads.
  setenv("GOMP_SPINCOUNT", "10000", 0);
  // PEFT_TS_DNNL_LIB names another library file (tests use a missing one).
  const char* lib = std::getenv("PEFT_TS_DNNL_LIB");
  if (!lib || !*lib) lib = "libdnnl.so.2";
  void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!h) { gWhyNot = std::string(lib) + " not loadable (apt-get install libdnnl2): " + dlerror(); return false; }
#define PEFT_DNNL_SYM(name) \
  gD.name = reinterpret_cast<decltype(gD.name)>(dlsym(h, #name)); \
  if (!gD.name) { gWhyNot = "libdnnl.so.2 lacks " #name; return false; }
  PEFT_DNNL_SYM(dnnl_engine_create)
  PEFT_DNNL_SYM(dnnl_stream_create)
  PEFT_DNNL_SYM(dnnl_stream_wait)
  PEFT_DNNL_SYM(dnnl_memory_desc_init_by_strides)
  PEFT_DNNL_SYM(dnnl_matmul_desc_init)
  PEFT_DNNL_SYM(dnnl_primitive_attr_create)
  PEFT_DNNL_SYM(dnnl_primitive_attr_destroy)
  PEFT_DNNL_SYM(dnnl_primitive_attr_set_output_scales)
  PEFT_DNNL_SYM(dnnl_primitive_attr_set_post_ops)
  PEFT_DNNL_SYM(dnnl_post_ops_create)
  PEFT_DNNL_SYM(dnnl_post_ops_destroy)
  PEFT_DNNL_SYM(dnnl_post_ops_append_sum)
  PEFT_DNNL_SYM(dnnl_primitive_desc_create)
  PEFT_DNNL_SYM(dnnl_primitive_desc_destroy)
  PEFT_DNNL_SYM(dnnl_primitive_desc_query)
  PEFT_DNNL_SYM(dnnl_primitive_create)
  PEFT_DNNL_SYM(dnnl_primitive_destroy)
  PEFT_DNNL_SYM(dnnl_primitive_execute)
  PEFT_DNNL_SYM(dnnl_memory_create)
  PEFT_DNNL_SYM(dnnl_memory_destroy)
  PEFT_DNNL_SYM(dnnl_memory_set_data_handle)
#undef PEFT_DNNL_SYM
  // libdnnl's OpenMP runtime (libgomp), loaded with it: its threads follow setThreads.
  if (void* g = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD)) {
    gD.ompSetNumThreads = reinterpret_cast<void (*)(int)>(dlsym(g, "omp_set_num_threads"));
  }
  if (gD.ompSetNumThreads) gD.ompSetNumThreads(gThreadsWanted);
  if (gD.dnnl_engine_create(&gD.engine, dnnl_cpu, 0) != dnnl_success ||
      gD.dnnl_stream_create(&gD.stream, gD.engine, dnnl_stream_default_flags) != dnnl_success) {
    gWhyNot = "oneDNN engine/stream creation failed";
    return false;
  }
  gState = 1;
  gWhyNot.clear();
  return true;
}

// The primitive for one problem: src [bA, m, k] and weights [bB, k, n] bf16 with the strides
// of the compact packed operands (transposed where asked), dst [batch, m, n] float32;
// aBatched / bBatched: that operand has its own matrix per batch (else 1, broadcast).
// Returns null when oneDNN declines (remembered; the caller takes the fallback).
Prim* primitive(int64_t batch, bool aBatched, bool bBatched, int64_t m, int64_t n, int64_t k, bool tA, bool tB,
  float alpha, float beta) {
  uint32_t ab, bb;
  std::memcpy(&ab, &alpha, 4);
  std::memcpy(&bb, &beta, 4);
  const Key key{batch, aBatched, bBatched, m, n, k, (int)tA | ((int)tB << 1), ab, bb};
  auto it = gCache.find(key);
  if (it != gCache.end()) return it->second.prim ? &it->second : nullptr;
  if (gCache.size() >= 512) {  // shapes that change every call (growing caches): start over
    for (auto& e : gCache) destroy(e.second);
    gCache.clear();
  }
  Prim& p = gCache[key];
  const int nd = batch > 1 ? 3 : 2;
  dnnl_memory_desc_t smd, wmd, dmd;
  dnnl_dims_t sd, ss, wd, ws, dd, ds;
  if (nd == 3) {
    sd[0] = aBatched ? batch : 1; ss[0] = m * k;
    wd[0] = bBatched ? batch : 1; ws[0] = k * n;
    dd[0] = batch; ds[0] = m * n;
  }
  const int o = nd - 2;
  sd[o] = m; sd[o + 1] = k; ss[o] = tA ? 1 : k; ss[o + 1] = tA ? m : 1;
  wd[o] = k; wd[o + 1] = n; ws[o] = tB ? 1 : n; ws[o + 1] = tB ? k : 1;
  dd[o] = m; dd[o + 1] = n; ds[o] = n; ds[o + 1] = 1;
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t po = nullptr;
  dnnl_primitive_desc_t pd = nullptr;
  bool ok = gD.dnnl_memory_desc_init_by_strides(&smd, nd, sd, dnnl_bf16, ss) == dnnl_success &&
    gD.dnnl_memory_desc_init_by_strides(&wmd, nd, wd, dnnl_bf16, ws) == dnnl_success &&
    gD.dnnl_memory_desc_init_by_strides(&dmd, nd, dd, dnnl_f32, ds) == dnnl_success &&
    gD.dnnl_matmul_desc_init(&md, &smd, &wmd, nullptr, &dmd) == dnnl_success &&
    gD.dnnl_primitive_attr_create(&attr) == dnnl_success;
  if (ok && alpha != 1.0f) ok = gD.dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
  if (ok && beta != 0.0f) {
    ok = gD.dnnl_post_ops_create(&po) == dnnl_success && gD.dnnl_post_ops_append_sum(po, beta) == dnnl_success &&
      gD.dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
  }
  ok = ok && gD.dnnl_primitive_desc_create(&pd, &md, attr, gD.engine, nullptr) == dnnl_success;
  if (ok) {
    const char* impl = nullptr;
    if (gD.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) gImpl = impl;
    ok = gD.dnnl_primitive_create(&p.prim, pd) == dnnl_success &&
      gD.dnnl_memory_create(&p.src, &smd, gD.engine, DNNL_MEMORY_NONE) == dnnl_success &&
      gD.dnnl_memory_create(&p.wei, &wmd, gD.engine, DNNL_MEMORY_NONE) == dnnl_success &&
      gD.dnnl_memory_create(&p.dst, &dmd, gD.engine, DNNL_MEMORY_NONE) == dnnl_success;
  }
  if (pd) gD.dnnl_primitive_desc_destroy(pd);
  if (po) gD.dnnl_post_ops_destroy(po);
  if (attr) gD.dnnl_primitive_attr_destroy(attr);
  if (!ok) {  // remembered as declined (prim null), so later calls go straight to the fallback
    destroy(p);
    p = Prim{};
    return nullptr;
  }
  return &p;
}

bool runDnnl(Prim* p, const uint16_t* a, const uint16_t* b, float* c) {
  gD.dnnl_memory_set_data_handle(p->src, const_cast<uint16_t*>(a));
  gD.dnnl_memory_set_data_handle(p->wei, const_cast<uint16_t*>(b));
  gD.dnnl_memory_set_data_handle(p->dst, c);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wei}, {DNNL_ARG_DST, p->dst}};
  return gD.dnnl_primitive_execute(p->prim, gD.stream, 3, args) == dnnl_success &&
    gD.dnnl_stream_wait(gD.stream) == dnnl_success;
}

bool useDnnl() { return !gForceFallback && loadDnnl(); }
#else
bool useDnnl() { return false; }
#endif

// A few rows (m <= kSmallRows: decoding, attention over the KV cache): each A rounded into
// scratch (transposed when tA), B rounded in registers as the small-m kernels stream it once
// (gemv.cc). oneDNN's skinny-m kernels are slower, and it would build a primitive for every
// cache length. Items split across the pool when there are many (attention heads), as
// Matmul does. False (c untouched) where the small kernels do not run.
bool smallMixed(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool tA,
  bool tB, int64_t sA, int64_t sB, float alpha, float beta) {
  if (m > kSmallRows || !smallMatmulAvailable()) return false;
  const int64_t na = sA == 0 ? 1 : batch;
  float* af = grow(gAf, (size_t)(na * m * k));
  for (int64_t i = 0; i < na; i++) {
    const float* ai = a + i * sA;
    float* o = af + i * m * k;
    if (tA) {  // A stored [k, m]
      for (int64_t r = 0; r < m; r++) for (int64_t p = 0; p < k; p++) o[r * k + p] = ai[p * m + r];
      roundBf16(o, o, (size_t)(m * k));
    } else {
      roundBf16(ai, o, (size_t)(m * k));
    }
  }
  auto item = [&](int64_t i) {
    smallMatmulRoundW(af + (na == 1 ? 0 : i * m * k), b + i * sB, c + i * m * n, m, n, k, tB, alpha, beta);
  };
  if (batch >= 2 * poolThreads() && poolThreads() > 1) {
    parallelFor((size_t)batch, 1, [&](size_t b0, size_t b1) { for (size_t i = b0; i < b1; i++) item((int64_t)i); });
  } else {
    for (int64_t i = 0; i < batch; i++) item(i);
  }
  return true;
}

}  // namespace

void matmulMixed(const float* a, const float* b, float* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool tA,
  bool tB, int64_t sA, int64_t sB, float alpha, float beta) {
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) { scaleC(c, batch * m * n, beta); return; }
  if (smallMixed(a, b, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta)) return;
#ifdef PEFT_DNNL
  if (useDnnl()) {
    const bool aB = sA != 0 && batch > 1, bB = sB != 0 && batch > 1;
    if (Prim* p = primitive(batch, aB, bB, m, n, k, tA, tB, alpha, beta)) {
      uint16_t* a16 = grow(gA16, (size_t)((aB ? batch : 1) * m * k));
      uint16_t* b16 = grow(gB16, (size_t)((bB ? batch : 1) * k * n));
      pack(a, batch, m * k, sA, a16, toBf16);
      pack(b, batch, k * n, sB, b16, toBf16);
      if (runDnnl(p, a16, b16, c)) return;
    }
  }
#endif
  fallbackMixed(a, b, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
}

void matmulBf16RoundA(const float* a, const uint16_t* w, float* c, int64_t m, int64_t n, int64_t k, bool transB,
  float alpha, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) { scaleC(c, m * n, beta); return; }
  // A few rows: A rounded into scratch, then the small-m kernels (W read once; see smallMixed).
  float* af = nullptr;
  if (m <= kSmallRows && smallMatmulAvailable()) {
    af = grow(gAf, (size_t)(m * k));
    roundBf16(a, af, (size_t)(m * k));
    if (smallMatmulBf16(af, w, c, m, n, k, transB, alpha, beta)) return;
  }
#ifdef PEFT_DNNL
  if (!af && useDnnl()) {
    if (Prim* p = primitive(1, false, false, m, n, k, false, transB, alpha, beta)) {
      uint16_t* a16 = grow(gA16, (size_t)(m * k));
      toBf16(a, a16, (size_t)(m * k));
      if (runDnnl(p, a16, w, c)) return;
    }
  }
#endif
  if (!af) {
    af = grow(gAf, (size_t)(m * k));
    roundBf16(a, af, (size_t)(m * k));
  }
  matmulBf16(af, w, c, m, n, k, transB, alpha, beta);
}

const char* bf16GemmPath() {
#ifdef PEFT_DNNL
  static std::string path;
  if (useDnnl()) {
    // Name the kernel oneDNN picks for a training-sized problem (cached like any other).
    if (gImpl.empty()) primitive(1, false, false, 64, 64, 64, false, false, 1.0f, 0.0f);
    path = "onednn:" + (gImpl.empty() ? std::string("unknown") : gImpl);
    return path.c_str();
  }
#endif
  return "fp32-fallback";
}

const char* bf16GemmWhyNot() {
  if (gForceFallback) return "fallback forced (setBf16Gemm('fallback') or PEFT_TS_BF16_GEMM=fallback)";
#ifdef PEFT_DNNL
  useDnnl();
  return gWhyNot.c_str();
#else
  return "built without oneDNN headers (apt-get install libdnnl-dev, then npm run build:native)";
#endif
}

const char* setBf16GemmMode(const char* mode) {
  gForceFallback = std::strcmp(mode, "fallback") == 0;
  return bf16GemmPath();
}

void bf16GemmThreads(int n) {
  gThreadsWanted = n;
  static bool envRead = false;
  if (!envRead) {
    envRead = true;
    if (const char* e = std::getenv("PEFT_TS_BF16_GEMM")) gForceFallback = std::strcmp(e, "fallback") == 0;
  }
#ifdef PEFT_DNNL
  if (gState > 0 && gD.ompSetNumThreads) gD.ompSetNumThreads(n);
#endif
}

}  // namespace peft
