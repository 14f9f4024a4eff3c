// Node-API entry points. Every kernel reads and writes the caller's typed arrays in place
// (zero copy); sizes are checked here so a wrong call throws instead of touching memory
// outside a buffer. GEMMs go to OpenBLAS; our own pool never runs while a GEMM does.
#include <napi.h>
#include <cblas.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bf16.h"
#include "bf16_gemm.h"
#include "kernels.h"
#include "layout.h"
#include "nf4.h"
#include "pool.h"
#include "sgemm.h"

using namespace peft;

namespace {

int gThreads = 1;

template <typename T, napi_typedarray_type KIND>
struct Arr {
  T* p = nullptr;
  size_t n = 0;
};

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, "peft_native: " + msg); }
[[noreturn]] void range(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

template <typename T>
T* typed(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type kind, size_t& n, const char* what, bool nullable = false) {
  const Napi::Value v = info[i];
  if (nullable && (v.IsNull() || v.IsUndefined())) { n = 0; return nullptr; }
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kind)
    fail(info.Env(), std::string("argument ") + std::to_string(i) + " (" + what + ") has the wrong array type");
  auto ta = v.As<Napi::TypedArray>();
  n = ta.ElementLength();
  return reinterpret_cast<T*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
}

float* F(const Napi::CallbackInfo& info, size_t i, size_t& n, const char* what) {
  return typed<float>(info, i, napi_float32_array, n, what);
}
float* Fnull(const Napi::CallbackInfo& info, size_t i, size_t& n, const char* what) {
  return typed<float>(info, i, napi_float32_array, n, what, true);
}
int32_t* I(const Napi::CallbackInfo& info, size_t i, size_t& n, const char* what) {
  return typed<int32_t>(info, i, napi_int32_array, n, what);
}
uint16_t* U16(const Napi::CallbackInfo& info, size_t i, size_t& n, const char* what) {
  return typed<uint16_t>(info, i, napi_uint16_array, n, what);
}
int64_t Int(const Napi::CallbackInfo& info, size_t i) {
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != std::floor(d)) fail(info.Env(), "argument " + std::to_string(i) + " must be a non-negative integer");
  return (int64_t)d;
}
double Num(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().DoubleValue(); }
bool Bool(const Napi::CallbackInfo& info, size_t i) { return info[i].ToBoolean().Value(); }
std::vector<int64_t> Ints(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) fail(info.Env(), "argument " + std::to_string(i) + " must be an array of integers");
  auto a = info[i].As<Napi::Array>();
  std::vector<int64_t> v(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) v[k] = (int64_t)a.Get(k).As<Napi::Number>().DoubleValue();
  return v;
}
void need(Napi::Env env, size_t have, size_t want, const char* what) {
  if (have < want) fail(env, std::string(what) + " has " + std::to_string(have) + " elements, needs " + std::to_string(want));
}
size_t rowsMin(size_t cols, size_t work = 1 << 14) { return std::max<size_t>(1, work / std::max<size_t>(cols, 1)); }

void setThreads(int n) {
  gThreads = std::max(1, n);
  poolInit(gThreads);
  openblas_set_num_threads(gThreads);
  bf16GemmThreads(gThreads);
}

int defaultThreads() {
  if (const char* e = std::getenv("PEFT_TS_THREADS")) {
    const int n = std::atoi(e);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

// ---------- GEMM ----------

// Backend.matmul's arguments (a, b, c, batch, m, n, k, transA, transB, strideA, strideB,
// alpha, beta), with the buffer lengths checked; shared by matmul and matmulAutocast.
struct MatmulArgs {
  float *a, *b, *c;
  int64_t batch, m, n, k, sA, sB;
  bool tA, tB;
  float alpha, beta;
};
MatmulArgs matmulArgs(const Napi::CallbackInfo& info, const std::string& name) {
  Napi::Env env = info.Env();
  size_t na, nb, nc;
  MatmulArgs x;
  x.a = F(info, 0, na, "a"); x.b = F(info, 1, nb, "b"); x.c = F(info, 2, nc, "c");
  x.batch = Int(info, 3); x.m = Int(info, 4); x.n = Int(info, 5); x.k = Int(info, 6);
  x.tA = Bool(info, 7); x.tB = Bool(info, 8);
  x.sA = Int(info, 9); x.sB = Int(info, 10);
  x.alpha = (float)Num(info, 11); x.beta = (float)Num(info, 12);
  if (x.batch == 0) return x;
  need(env, na, (x.batch - 1) * x.sA + x.m * x.k, (name + " a").c_str());
  need(env, nb, (x.batch - 1) * x.sB + x.k * x.n, (name + " b").c_str());
  need(env, nc, x.batch * x.m * x.n, (name + " c").c_str());
  return x;
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  const MatmulArgs x = matmulArgs(info, "matmul");
  if (x.batch != 0) matmulF32(x.a, x.b, x.c, x.batch, x.m, x.n, x.k, x.tA, x.tB, x.sA, x.sB, x.alpha, x.beta);
  return info.Env().Undefined();
}

// matmulAutocast: Matmul's arguments, bf16-rounded operands (bf16_gemm.cc).
Napi::Value MatmulAutocast(const Napi::CallbackInfo& info) {
  const MatmulArgs x = matmulArgs(info, "matmulAutocast");
  if (x.batch != 0) matmulMixed(x.a, x.b, x.c, x.batch, x.m, x.n, x.k, x.tA, x.tB, x.sA, x.sB, x.alpha, x.beta);
  return info.Env().Undefined();
}

// bf16Gemm(mode?): mode 'auto' | 'fallback' sets it; returns { path, whyNot }.
Napi::Value Bf16Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    const std::string mode = info[0].As<Napi::String>().Utf8Value();
    if (mode != "auto" && mode != "fallback") range(env, "bf16 GEMM mode must be 'auto' or 'fallback', got '" + mode + "'");
    setBf16GemmMode(mode.c_str());
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", bf16GemmPath());
  o.Set("whyNot", bf16GemmWhyNot());
  return o;
}

// sgemmRaw(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc): cblas_sgemm as is.
Napi::Value SgemmRaw(const Napi::CallbackInfo& info) {
  size_t na, nb, nc;
  const bool tA = Bool(info, 0), tB = Bool(info, 1);
  const int64_t m = Int(info, 2), n = Int(info, 3), k = Int(info, 4);
  const float alpha = (float)Num(info, 5);
  float* a = F(info, 6, na, "a"); const int64_t lda = Int(info, 7);
  float* b = F(info, 8, nb, "b"); const int64_t ldb = Int(info, 9);
  const float beta = (float)Num(info, 10);
  float* c = F(info, 11, nc, "c"); const int64_t ldc = Int(info, 12);
  need(info.Env(), na, (tA ? k : m) * lda, "a"); need(info.Env(), nb, (tB ? n : k) * ldb, "b"); need(info.Env(), nc, m * ldc, "c");
  cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
    a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
  return info.Env().Undefined();
}

// ---------- elementwise ----------

int opCode(const Napi::CallbackInfo& info, size_t i, int count) {
  const int64_t op = Int(info, i);
  if (op >= count) fail(info.Env(), "unknown op code " + std::to_string(op));
  return (int)op;
}

size_t elemMin(int op) {  // transcendental ops are worth splitting earlier
  return (op == U_EXP || op == U_TANH || op == U_SIGMOID || op == U_SILU || op == U_GELU || op == U_GELU_TANH || op == U_LOG) ? 4096 : 16384;
}

Napi::Value Unary(const Napi::CallbackInfo& info) {
  const int op = opCode(info, 0, U_COUNT);
  size_t nx, ny;
  float* x = F(info, 1, nx, "x"); float* y = F(info, 2, ny, "out");
  need(info.Env(), ny, nx, "out");
  const Kernels& K = kernels();
  parallelFor(nx, elemMin(op), [&](size_t b, size_t e) { K.unary(op, x + b, y + b, e - b); });
  return info.Env().Undefined();
}

Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  const int op = opCode(info, 0, U_COUNT);
  size_t nx, ng, ngx;
  float* x = F(info, 1, nx, "x"); float* gy = F(info, 2, ng, "gy"); float* gx = F(info, 3, ngx, "gx");
  need(info.Env(), ng, nx, "gy"); need(info.Env(), ngx, nx, "gx");
  const Kernels& K = kernels();
  parallelFor(nx, elemMin(op) / 2, [&](size_t b, size_t e) { K.unaryBackward(op, x + b, gy + b, gx + b, e - b); });
  return info.Env().Undefined();
}

Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = opCode(info, 0, B_COUNT);
  size_t na, nb, no;
  float* a = F(info, 1, na, "a"); auto sa = Ints(info, 2);
  float* b = F(info, 3, nb, "b"); auto sb = Ints(info, 4);
  float* out = F(info, 5, no, "out"); auto shape = Ints(info, 6);
  if (sa.size() != shape.size() || sb.size() != shape.size()) fail(env, "binary: strides and shape differ in rank");
  int64_t lo, hi, total = 1;
  for (auto s : shape) total *= s;
  if (total == 0) return env.Undefined();
  need(env, no, total, "binary out");
  stridedExtent(shape, sa, lo, hi); if (lo < 0 || hi >= (int64_t)na) fail(env, "binary: a is too small for its strides");
  stridedExtent(shape, sb, lo, hi); if (lo < 0 || hi >= (int64_t)nb) fail(env, "binary: b is too small for its strides");
  binaryBroadcast(op, a, sa, b, sb, out, shape);
  return env.Undefined();
}

Napi::Value Affine(const Napi::CallbackInfo& info) {
  size_t nx, ny;
  float* x = F(info, 0, nx, "x"); const float s = (float)Num(info, 1), t = (float)Num(info, 2); float* y = F(info, 3, ny, "out");
  need(info.Env(), ny, nx, "out");
  const Kernels& K = kernels();
  parallelFor(nx, 16384, [&](size_t b, size_t e) { K.affine(x + b, s, t, y + b, e - b); });
  return info.Env().Undefined();
}

// dropoutMask(out, p, seed) and dropoutApply(x, out, p, seed): the counter-based mask of
// src/backends/reference/math.ts (kernels' dropout), or x times it in one pass.
void dropoutRun(const float* x, float* out, size_t n, double p, uint32_t seed) {
  // p < 1, so floor(p * 2^32) fits 32 bits
  const uint32_t thr = (uint32_t)std::min(std::floor(p * 4294967296.0), 4294967295.0);
  const float scale = (float)(1.0 / (1.0 - p));
  const Kernels& K = kernels();
  parallelFor(n, 16384, [&](size_t b, size_t e) { K.dropout(x ? x + b : nullptr, out + b, b, e - b, seed, thr, scale); });
}

Napi::Value DropoutMask(const Napi::CallbackInfo& info) {
  size_t n;
  float* out = F(info, 0, n, "out");
  dropoutRun(nullptr, out, n, Num(info, 1), (uint32_t)(int64_t)Num(info, 2));
  return info.Env().Undefined();
}

Napi::Value DropoutApply(const Napi::CallbackInfo& info) {
  size_t nx, n;
  float* x = F(info, 0, nx, "x");
  float* out = F(info, 1, n, "out");
  need(info.Env(), n, nx, "out");
  dropoutRun(x, out, nx, Num(info, 2), (uint32_t)(int64_t)Num(info, 3));
  return info.Env().Undefined();
}

Napi::Value Axpy(const Napi::CallbackInfo& info) {
  size_t nx, ny;
  const float alpha = (float)Num(info, 0); float* x = F(info, 1, nx, "x"); float* y = F(info, 2, ny, "y");
  need(info.Env(), ny, nx, "y");
  const Kernels& K = kernels();
  parallelFor(nx, 16384, [&](size_t b, size_t e) { K.axpy(alpha, x + b, y + b, e - b); });
  return info.Env().Undefined();
}

Napi::Value Reduce(const Napi::CallbackInfo& info, bool isMax) {
  size_t nx, no;
  float* x = F(info, 0, nx, "x");
  const int64_t outer = Int(info, 1), mid = Int(info, 2), inner = Int(info, 3);
  float* out = F(info, 4, no, "out");
  need(info.Env(), nx, outer * mid * inner, "x"); need(info.Env(), no, outer * inner, "out");
  if (isMax) maxMid(x, outer, mid, inner, out); else sumMid(x, outer, mid, inner, out);
  return info.Env().Undefined();
}
Napi::Value SumMid(const Napi::CallbackInfo& info) { return Reduce(info, false); }
Napi::Value MaxMid(const Napi::CallbackInfo& info) { return Reduce(info, true); }

// ---------- layout ----------

Napi::Value Permute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, no;
  float* x = F(info, 0, nx, "x"); auto shape = Ints(info, 1); auto perm = Ints(info, 2); float* out = F(info, 3, no, "out");
  const size_t nd = shape.size();
  if (perm.size() != nd) fail(env, "permute: perm and shape differ in rank");
  std::vector<int64_t> inSt(nd), outShape(nd), st(nd);
  int64_t s = 1;
  for (size_t d = nd; d-- > 0;) { inSt[d] = s; s *= shape[d]; }
  std::vector<bool> seen(nd, false);
  for (size_t i = 0; i < nd; i++) {
    if (perm[i] < 0 || perm[i] >= (int64_t)nd || seen[perm[i]]) fail(env, "permute: perm is not a permutation");
    seen[perm[i]] = true;
    outShape[i] = shape[perm[i]]; st[i] = inSt[perm[i]];
  }
  need(env, nx, s, "permute x"); need(env, no, s, "permute out");
  stridedCopy(x, 0, st, outShape, out);
  return env.Undefined();
}

void checkStrided(Napi::Env env, size_t n, int64_t offset, const std::vector<int64_t>& shape, const std::vector<int64_t>& st,
  const char* what) {
  if (shape.size() != st.size()) fail(env, std::string(what) + ": strides and shape differ in rank");
  int64_t lo, hi;
  stridedExtent(shape, st, lo, hi);
  if (hi < lo) return;
  if (offset + lo < 0 || offset + hi >= (int64_t)n) fail(env, std::string(what) + ": strided view runs outside the buffer");
}

Napi::Value StridedCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, no;
  float* x = F(info, 0, nx, "x"); const int64_t offset = Int(info, 1); auto st = Ints(info, 2); auto shape = Ints(info, 3);
  float* out = F(info, 4, no, "out");
  checkStrided(env, nx, offset, shape, st, "stridedCopy");
  int64_t total = 1; for (auto v : shape) total *= v;
  need(env, no, total, "stridedCopy out");
  stridedCopy(x, offset, st, shape, out);
  return env.Undefined();
}

Napi::Value StridedAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t ng, ngx;
  float* g = F(info, 0, ng, "gOut"); auto shape = Ints(info, 1); float* gx = F(info, 2, ngx, "gx");
  const int64_t offset = Int(info, 3); auto st = Ints(info, 4);
  checkStrided(env, ngx, offset, shape, st, "stridedAdd");
  int64_t total = 1; for (auto v : shape) total *= v;
  need(env, ng, total, "stridedAdd gOut");
  stridedAdd(g, shape, gx, offset, st);
  return env.Undefined();
}

// ---------- row kernels ----------

Napi::Value Softmax(const Napi::CallbackInfo& info, bool log) {
  size_t nx, no;
  float* x = F(info, 0, nx, "x"); const int64_t rows = Int(info, 1), cols = Int(info, 2); float* out = F(info, 3, no, "out");
  need(info.Env(), nx, rows * cols, "x"); need(info.Env(), no, rows * cols, "out");
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols, 4096), [&](size_t r0, size_t r1) {
    if (log) K.logSoftmax(x, r0, r1, cols, out); else K.softmax(x, r0, r1, cols, out);
  });
  return info.Env().Undefined();
}
Napi::Value SoftmaxF(const Napi::CallbackInfo& info) { return Softmax(info, false); }
Napi::Value LogSoftmaxF(const Napi::CallbackInfo& info) { return Softmax(info, true); }

Napi::Value SoftmaxBack(const Napi::CallbackInfo& info, bool log) {
  size_t ny, ng, ngx;
  float* y = F(info, 0, ny, "y"); float* gy = F(info, 1, ng, "gy");
  const int64_t rows = Int(info, 2), cols = Int(info, 3); float* gx = F(info, 4, ngx, "gx");
  need(info.Env(), ny, rows * cols, "y"); need(info.Env(), ng, rows * cols, "gy"); need(info.Env(), ngx, rows * cols, "gx");
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols, log ? 4096 : 16384), [&](size_t r0, size_t r1) {
    if (log) K.logSoftmaxBackward(y, gy, r0, r1, cols, gx); else K.softmaxBackward(y, gy, r0, r1, cols, gx);
  });
  return info.Env().Undefined();
}
Napi::Value SoftmaxBackF(const Napi::CallbackInfo& info) { return SoftmaxBack(info, false); }
Napi::Value LogSoftmaxBackF(const Napi::CallbackInfo& info) { return SoftmaxBack(info, true); }

Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nt, nl, nlse;
  float* x = F(info, 0, nx, "x"); int32_t* t = I(info, 1, nt, "targets");
  const int64_t rows = Int(info, 2), cols = Int(info, 3);
  const int ignore = (int)Num(info, 4);
  float* loss = F(info, 5, nl, "loss"); float* lse = F(info, 6, nlse, "lse");
  need(env, nx, rows * cols, "x"); need(env, nt, rows, "targets"); need(env, nl, rows, "loss"); need(env, nlse, rows, "lse");
  int64_t count = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (t[r] == ignore) continue;
    if (t[r] < 0 || t[r] >= cols)
      range(env, "cross-entropy target " + std::to_string(t[r]) + " out of range [0, " + std::to_string(cols) + ") at row " + std::to_string(r));
    count++;
  }
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols, 4096), [&](size_t r0, size_t r1) { K.crossEntropy(x, t, r0, r1, cols, ignore, loss, lse); });
  return Napi::Number::New(env, (double)count);
}

Napi::Value CrossEntropyBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nt, nlse, ngl, ngx;
  float* x = F(info, 0, nx, "x"); int32_t* t = I(info, 1, nt, "targets"); float* lse = F(info, 2, nlse, "lse");
  float* gl = F(info, 3, ngl, "gLoss"); const int64_t rows = Int(info, 4), cols = Int(info, 5);
  const int ignore = (int)Num(info, 6); float* gx = F(info, 7, ngx, "gx");
  need(env, nx, rows * cols, "x"); need(env, nt, rows, "targets"); need(env, nlse, rows, "lse"); need(env, ngl, rows, "gLoss");
  need(env, ngx, rows * cols, "gx");
  for (int64_t r = 0; r < rows; r++)
    if (t[r] != ignore && (t[r] < 0 || t[r] >= cols))
      range(env, "cross-entropy target " + std::to_string(t[r]) + " out of range [0, " + std::to_string(cols) + ") at row " + std::to_string(r));
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols, 4096), [&](size_t r0, size_t r1) { K.crossEntropyBackward(x, t, lse, gl, r0, r1, cols, ignore, gx); });
  return env.Undefined();
}

// Row-parallel backward whose weight gradients are summed over rows: each thread
// accumulates into its own buffer, added up at the end.
template <typename Fn>
void rowsWithWeightGrads(size_t rows, size_t cols, float* gw, float* gb, Fn fn) {
  const size_t minRows = rowsMin(cols);
  const size_t parts = std::min<size_t>(poolThreads(), rows / minRows);
  if (parts <= 1 || (!gw && !gb)) {
    parallelFor(rows, minRows, [&](size_t r0, size_t r1) { fn(r0, r1, gw, gb); });
    return;
  }
  std::vector<float> acc(parts * cols * 2, 0.0f);
  parallelFor(rows, (rows + parts - 1) / parts, [&](size_t r0, size_t r1) {
    const size_t id = std::min(parts - 1, r0 * parts / rows);
    fn(r0, r1, gw ? &acc[id * 2 * cols] : nullptr, gb ? &acc[id * 2 * cols + cols] : nullptr);
  });
  for (size_t p = 0; p < parts; p++) {
    if (gw) for (size_t j = 0; j < cols; j++) gw[j] += acc[p * 2 * cols + j];
    if (gb) for (size_t j = 0; j < cols; j++) gb[j] += acc[p * 2 * cols + cols + j];
  }
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nw, nb, no, nm, nr;
  float* x = F(info, 0, nx, "x"); float* w = Fnull(info, 1, nw, "weight"); float* b = Fnull(info, 2, nb, "bias");
  const int64_t rows = Int(info, 3), cols = Int(info, 4); const float eps = (float)Num(info, 5);
  float* out = F(info, 6, no, "out"); float* mean = F(info, 7, nm, "mean"); float* rstd = F(info, 8, nr, "rstd");
  need(env, nx, rows * cols, "x"); need(env, no, rows * cols, "out"); need(env, nm, rows, "mean"); need(env, nr, rows, "rstd");
  if (w) need(env, nw, cols, "weight");
  if (b) need(env, nb, cols, "bias");
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols), [&](size_t r0, size_t r1) { K.layerNorm(x, w, b, r0, r1, cols, eps, out, mean, rstd); });
  return env.Undefined();
}

Napi::Value LayerNormBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nw, nm, nr, ng, ngx, ngw, ngb;
  float* x = F(info, 0, nx, "x"); float* w = Fnull(info, 1, nw, "weight"); float* mean = F(info, 2, nm, "mean");
  float* rstd = F(info, 3, nr, "rstd"); float* gy = F(info, 4, ng, "gy");
  const int64_t rows = Int(info, 5), cols = Int(info, 6);
  float* gx = F(info, 7, ngx, "gx"); float* gw = Fnull(info, 8, ngw, "gw"); float* gb = Fnull(info, 9, ngb, "gb");
  need(env, nx, rows * cols, "x"); need(env, ng, rows * cols, "gy"); need(env, ngx, rows * cols, "gx");
  need(env, nm, rows, "mean"); need(env, nr, rows, "rstd");
  if (w) need(env, nw, cols, "weight");
  if (gw) need(env, ngw, cols, "gw");
  if (gb) need(env, ngb, cols, "gb");
  const Kernels& K = kernels();
  rowsWithWeightGrads(rows, cols, gw, gb, [&](size_t r0, size_t r1, float* pgw, float* pgb) {
    K.layerNormBackward(x, w, mean, rstd, gy, r0, r1, cols, gx, pgw, pgb);
  });
  return env.Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nw, no, nr;
  float* x = F(info, 0, nx, "x"); float* w = Fnull(info, 1, nw, "weight");
  const int64_t rows = Int(info, 2), cols = Int(info, 3); const float eps = (float)Num(info, 4);
  float* out = F(info, 5, no, "out"); float* rstd = F(info, 6, nr, "rstd");
  need(env, nx, rows * cols, "x"); need(env, no, rows * cols, "out"); need(env, nr, rows, "rstd");
  if (w) need(env, nw, cols, "weight");
  const Kernels& K = kernels();
  parallelFor(rows, rowsMin(cols), [&](size_t r0, size_t r1) { K.rmsNorm(x, w, r0, r1, cols, eps, out, rstd); });
  return env.Undefined();
}

Napi::Value RmsNormBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nw, nr, ng, ngx, ngw;
  float* x = F(info, 0, nx, "x"); float* w = Fnull(info, 1, nw, "weight"); float* rstd = F(info, 2, nr, "rstd");
  float* gy = F(info, 3, ng, "gy"); const int64_t rows = Int(info, 4), cols = Int(info, 5);
  float* gx = F(info, 6, ngx, "gx"); float* gw = Fnull(info, 7, ngw, "gw");
  need(env, nx, rows * cols, "x"); need(env, ng, rows * cols, "gy"); need(env, ngx, rows * cols, "gx"); need(env, nr, rows, "rstd");
  if (w) need(env, nw, cols, "weight");
  if (gw) need(env, ngw, cols, "gw");
  const Kernels& K = kernels();
  rowsWithWeightGrads(rows, cols, gw, nullptr, [&](size_t r0, size_t r1, float* pgw, float*) {
    K.rmsNormBackward(x, w, rstd, gy, r0, r1, cols, gx, pgw);
  });
  return env.Undefined();
}

// ---------- embedding, rope, optimizer, dtype ----------

void checkIds(Napi::Env env, const int32_t* ids, size_t n, size_t rows) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || (size_t)ids[i] >= rows)
      range(env, "embedding id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(rows) + ") at position " + std::to_string(i));
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nt, ni, no;
  float* table = F(info, 0, nt, "table"); int32_t* ids = I(info, 1, ni, "ids"); const int64_t dim = Int(info, 2);
  float* out = F(info, 3, no, "out");
  if (dim == 0) return env.Undefined();
  need(env, no, ni * dim, "out");
  checkIds(env, ids, ni, nt / dim);
  parallelFor(ni, rowsMin(dim), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) std::memcpy(out + i * dim, table + (size_t)ids[i] * dim, dim * 4);
  });
  return env.Undefined();
}

Napi::Value EmbeddingBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t ng, ni, nt;
  float* gy = F(info, 0, ng, "gy"); int32_t* ids = I(info, 1, ni, "ids"); const int64_t dim = Int(info, 2);
  float* gt = F(info, 3, nt, "gTable");
  if (dim == 0) return env.Undefined();
  need(env, ng, ni * dim, "gy");
  checkIds(env, ids, ni, nt / dim);
  // Ids repeat, so split the columns (never the ids) across threads.
  const Kernels& K = kernels();
  parallelFor(dim, ni * dim >= (1 << 16) ? 64 : dim, [&](size_t c0, size_t c1) {
    for (size_t i = 0; i < ni; i++) K.axpy(1.0f, gy + i * dim + c0, gt + (size_t)ids[i] * dim + c0, c1 - c0);
  });
  return env.Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nx, nc, ns, np, no;
  float* x = F(info, 0, nx, "x"); float* cs = F(info, 1, nc, "cos"); float* sn = F(info, 2, ns, "sin");
  int32_t* pos = I(info, 3, np, "pos");
  const int64_t B = Int(info, 4), H = Int(info, 5), T = Int(info, 6), D = Int(info, 7);
  const bool inverse = Bool(info, 8); float* out = F(info, 9, no, "out");
  if (D % 2) fail(env, "rope: head dim must be even");
  const int64_t half = D / 2;
  need(env, nx, B * H * T * D, "x"); need(env, no, B * H * T * D, "out");
  if (np != (size_t)T && np != (size_t)(B * T)) fail(env, "rope: pos must have T or B*T entries");
  if (half == 0) return env.Undefined();
  const int64_t maxPos = std::min(nc, ns) / half;
  for (size_t i = 0; i < np; i++)
    if (pos[i] < 0 || pos[i] >= maxPos) range(env, "rope position " + std::to_string(pos[i]) + " out of range [0, " + std::to_string(maxPos) + ")");
  const float sg = inverse ? -1.0f : 1.0f;
  parallelFor(B * H * T, rowsMin(D), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
      const int64_t ti = r % T, bi = r / (H * T);
      const int64_t p = np == (size_t)T ? pos[ti] : pos[bi * T + ti];
      const float* c = cs + p * half; const float* s = sn + p * half;
      const float* xr = x + r * D; float* o = out + r * D;
      for (int64_t i = 0; i < half; i++) {  // in place is allowed: each pair is read before written
        const float x1 = xr[i], x2 = xr[i + half], si = sg * s[i];
        o[i] = x1 * c[i] - x2 * si;
        o[i + half] = x2 * c[i] + x1 * si;
      }
    }
  });
  return env.Undefined();
}

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t np, ng, nm, nv;
  float* p = F(info, 0, np, "p"); float* g = F(info, 1, ng, "g"); float* m = F(info, 2, nm, "m"); float* v = F(info, 3, nv, "v");
  const double lr = Num(info, 4), b1 = Num(info, 5), b2 = Num(info, 6), eps = Num(info, 7), wd = Num(info, 8), step = Num(info, 9);
  need(env, ng, np, "g"); need(env, nm, np, "m"); need(env, nv, np, "v");
  if (!(step >= 1)) range(env, "adamw step must be >= 1, got " + std::to_string(step));
  const float bc1 = (float)(1 - std::pow(b1, step)), bc2 = (float)(1 - std::pow(b2, step));
  const Kernels& K = kernels();
  parallelFor(np, 16384, [&](size_t b, size_t e) {
    K.adamw(p + b, g + b, m + b, v + b, e - b, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, bc1, bc2);
  });
  return env.Undefined();
}

Napi::Value Bf16ToF32(const Napi::CallbackInfo& info) {
  size_t nx, no;
  uint16_t* x = U16(info, 0, nx, "x"); float* out = F(info, 1, no, "out");
  need(info.Env(), no, nx, "out");
  const Kernels& K = kernels();
  parallelFor(nx, 1 << 16, [&](size_t b, size_t e) { K.bf16ToF32(x + b, out + b, e - b); });
  return info.Env().Undefined();
}

Napi::Value F32ToBf16(const Napi::CallbackInfo& info) {
  size_t nx, no;
  float* x = F(info, 0, nx, "x"); uint16_t* out = U16(info, 1, no, "out");
  need(info.Env(), no, nx, "out");
  const Kernels& K = kernels();
  parallelFor(nx, 1 << 16, [&](size_t b, size_t e) { K.f32ToBf16(x + b, out + b, e - b); });
  return info.Env().Undefined();
}

// ---------- bfloat16 weights ----------

// matmulBf16(a, w, c, m, n, k, transB, alpha, beta): Backend.matmulBf16.
Napi::Value MatmulBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t na, nw, nc;
  float* a = F(info, 0, na, "a"); uint16_t* w = U16(info, 1, nw, "w"); float* c = F(info, 2, nc, "c");
  const int64_t m = Int(info, 3), n = Int(info, 4), k = Int(info, 5);
  const bool tB = Bool(info, 6);
  const float alpha = (float)Num(info, 7), beta = (float)Num(info, 8);
  need(env, na, m * k, "matmulBf16 a");
  need(env, nw, n * k, "matmulBf16 w");
  need(env, nc, m * n, "matmulBf16 c");
  if (info.Length() > 9 && Bool(info, 9)) matmulBf16RoundA(a, w, c, m, n, k, tB, alpha, beta);  // autocast
  else matmulBf16(a, w, c, m, n, k, tB, alpha, beta);
  return env.Undefined();
}

// bf16TileElements(n): sets the tile size of matmulBf16 (0 only reads it); returns the previous one.
Napi::Value Bf16TileElements(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)bf16TileElements((size_t)Int(info, 0)));
}

Napi::Value EmbeddingBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t nt, ni, no;
  uint16_t* table = U16(info, 0, nt, "table"); int32_t* ids = I(info, 1, ni, "ids"); const int64_t dim = Int(info, 2);
  float* out = F(info, 3, no, "out");
  if (dim == 0) return env.Undefined();
  need(env, no, ni * dim, "out");
  checkIds(env, ids, ni, nt / dim);
  const Kernels& K = kernels();
  parallelFor(ni, rowsMin(dim), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) K.bf16ToF32(table + (size_t)ids[i] * dim, out + i * dim, dim);
  });
  return env.Undefined();
}

// ---------- NF4 ----------

Napi::Value DequantizeNF4(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t np, na, nc, no;
  const uint8_t* packed = typed<uint8_t>(info, 0, napi_uint8_array, np, "packed");
  const float* absmax = F(info, 1, na, "absmax");
  const int64_t bs = Int(info, 2);
  const float* code = F(info, 3, nc, "code");
  const int64_t start = Int(info, 4), count = Int(info, 5);
  float* out = F(info, 6, no, "out");
  if (bs < 1) range(env, "dequantizeNF4: blocksize must be >= 1");
  if (nc < 16) range(env, "dequantizeNF4: code needs 16 values, got " + std::to_string(nc));
  if (count == 0) return env.Undefined();
  const size_t end = (size_t)(start + count);
  need(env, no, (size_t)count, "out");
  need(env, np, (end + 1) / 2, "packed");
  need(env, na, (end - 1) / bs - start / bs + 1, "absmax");
  dequantizeNF4(packed, absmax, (size_t)bs, code, (size_t)start, (size_t)count, out);
  return env.Undefined();
}

// ---------- config ----------

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int64_t n = Int(info, 0);
  if (n < 1) range(info.Env(), "thread count must be >= 1");
  setThreads((int)n);
  return info.Env().Undefined();
}
Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), gThreads); }
Napi::Value BlasThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), openblas_get_num_threads()); }
Napi::Value Simd(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), simdLevel()); }
Napi::Value BlasConfig(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), openblas_get_config()); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  setThreads(defaultThreads());
  (void)kernels();
  auto def = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) { exports.Set(name, Napi::Function::New(env, fn, name)); };
  def("matmul", Matmul); def("sgemmRaw", SgemmRaw); def("matmulAutocast", MatmulAutocast); def("bf16Gemm", Bf16Gemm);
  def("dropoutMask", DropoutMask); def("dropoutApply", DropoutApply);
  def("unary", Unary); def("unaryBackward", UnaryBackward); def("binary", Binary); def("affine", Affine); def("axpy", Axpy);
  def("sumMid", SumMid); def("maxMid", MaxMid);
  def("permute", Permute); def("stridedCopy", StridedCopy); def("stridedAdd", StridedAdd);
  def("softmax", SoftmaxF); def("softmaxBackward", SoftmaxBackF); def("logSoftmax", LogSoftmaxF); def("logSoftmaxBackward", LogSoftmaxBackF);
  def("crossEntropy", CrossEntropy); def("crossEntropyBackward", CrossEntropyBack);
  def("layerNorm", LayerNorm); def("layerNormBackward", LayerNormBack); def("rmsNorm", RmsNorm); def("rmsNormBackward", RmsNormBack);
  def("embedding", Embedding); def("embeddingBackward", EmbeddingBack); def("rope", Rope); def("adamw", Adamw);
  def("bf16ToF32", Bf16ToF32); def("f32ToBf16", F32ToBf16); def("dequantizeNF4", DequantizeNF4);
  def("matmulBf16", MatmulBf16); def("bf16TileElements", Bf16TileElements); def("embeddingBf16", EmbeddingBf16);
  def("setThreads", SetThreads); def("threads", Threads); def("blasThreads", BlasThreads); def("simd", Simd);
  def("blasConfig", BlasConfig);
  return exports;
}

}  // namespace

NODE_API_MODULE(peft_native, Init)
