// Node-API entry points of the CUDA backend (peft_cuda.node). Arguments are checked here
// exactly as the cpu addon checks them (same messages), then each typed array is resolved
// to device-accessible memory: arrays from alloc() (CUDA managed memory, any sub-view) are
// used in place; any other array is staged through a temporary block (copied in, and back
// out for outputs, then synchronized) and counted in stats(). Kernels are enqueued on one
// stream and not waited for; synchronize() waits. Errors become JS exceptions naming the call.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "device.h"
#include "kernels.h"
#include "nccl.h"
#include "walk.h"
#ifndef PEFT_CUDA_EMU  // the emulator build has no attention kernels (they have their own: attention/emu)
#include "../attention/attention.h"
#endif

using namespace pc;

namespace {

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, "peft_cuda: " + msg); }
[[noreturn]] void range(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

// A typed array argument as the host sees it.
struct View {
  void* p = nullptr;
  size_t n = 0;      // elements
  size_t bytes = 0;
  template <typename T> T* as() const { return static_cast<T*>(p); }
};

View typed(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type kind, size_t elem, const char* what,
  bool nullable = false) {
  const Napi::Value v = info[i];
  View r;
  if (nullable && (v.IsNull() || v.IsUndefined())) return r;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kind)
    fail(info.Env(), std::string("argument ") + std::to_string(i) + " (" + what + ") has the wrong array type");
  auto ta = v.As<Napi::TypedArray>();
  r.n = ta.ElementLength();
  r.bytes = r.n * elem;
  r.p = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return r;
}
View F(const Napi::CallbackInfo& info, size_t i, const char* what) { return typed(info, i, napi_float32_array, 4, what); }
View Fnull(const Napi::CallbackInfo& info, size_t i, const char* what) { return typed(info, i, napi_float32_array, 4, what, true); }
View I(const Napi::CallbackInfo& info, size_t i, const char* what) { return typed(info, i, napi_int32_array, 4, what); }
View U16(const Napi::CallbackInfo& info, size_t i, const char* what) { return typed(info, i, napi_uint16_array, 2, what); }
View U8(const Napi::CallbackInfo& info, size_t i, const char* what) { return typed(info, i, napi_uint8_array, 1, what); }

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
void need(Napi::Env env, size_t have, int64_t want, const char* what) {
  if (want > 0 && have < (size_t)want)
    fail(env, std::string(what) + " has " + std::to_string(have) + " elements, needs " + std::to_string(want));
}
int64_t product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (auto x : v) p *= x;
  return p;
}

// One kernel call: resolves views to device pointers, staging the ones that are not ours.
class Call {
 public:
  explicit Call(Device& d) : d_(d) {}
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  ~Call() {
    for (auto& s : staged_) d_.cache->give(s.dev);  // stream order makes reuse safe
  }
  template <typename T> T* in(const View& v) { return static_cast<T*>(resolve(v, false)); }
  template <typename T> T* out(const View& v) { return static_cast<T*>(resolve(v, true)); }
  /** Before the host reads an array (ids, targets): wait for queued kernels if it is ours. */
  void hostRead(const View& v) {
    if (v.bytes && d_.pending && d_.cache->contains(v.p, v.bytes)) d_.synchronize();
  }
  void launched(cudaError_t e, const char* what) {
    d_.pending = true;
    d_.launches++;
    check(e, what);
  }
  /** Copies staged outputs back to their host arrays (and waits for that). */
  void finish() {
    bool any = false;
    for (auto& s : staged_) {
      if (!s.out) continue;
      check(cudaMemcpyAsync(s.host, s.dev, s.bytes, cudaMemcpyDefault, d_.stream), "cudaMemcpyAsync (staged output back)");
      d_.stagedBytesOut += s.bytes;
      any = true;
    }
    if (any) d_.synchronize();
  }

 private:
  struct Staged { void* host; void* dev; size_t bytes; bool out; };
  Device& d_;
  std::vector<Staged> staged_;

  void* resolve(const View& v, bool isOut) {
    if (v.bytes == 0 || v.p == nullptr) return v.p;  // never dereferenced
    if (d_.cache->contains(v.p, v.bytes)) return v.p;
    for (auto& s : staged_) {  // the same host array twice (in-place calls) shares one copy
      if (s.host == v.p && s.bytes == v.bytes) { s.out = s.out || isOut; return s.dev; }
    }
    size_t bb = 0;
    void* t = d_.allocManaged(v.bytes, &bb);
    staged_.push_back(Staged{v.p, t, v.bytes, isOut});
    // Outputs are copied in too: kernels may accumulate into them or write only part.
    check(cudaMemcpyAsync(t, v.p, v.bytes, cudaMemcpyDefault, d_.stream), "cudaMemcpyAsync (staging an input)");
    d_.pending = true;
    d_.stagedArrays++;
    d_.stagedBytesIn += v.bytes;
    return t;
  }
};

// ---------- GEMM ----------

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View a = F(info, 0, "a"), b = F(info, 1, "b"), c = F(info, 2, "c");
  const int64_t batch = Int(info, 3), m = Int(info, 4), n = Int(info, 5), k = Int(info, 6);
  const bool tA = Bool(info, 7), tB = Bool(info, 8);
  const int64_t sA = Int(info, 9), sB = Int(info, 10);
  const float alpha = (float)Num(info, 11), beta = (float)Num(info, 12);
  if (batch == 0) return env.Undefined();
  need(env, a.n, (batch - 1) * sA + m * k, "matmul a");
  need(env, b.n, (batch - 1) * sB + k * n, "matmul b");
  need(env, c.n, batch * m * n, "matmul c");
  Device& d = device();
  Call call(d);
  gemm(d, tA, tB, m, n, k, alpha, call.in<float>(a), sA, call.in<float>(b), sB, beta, call.out<float>(c), batch);
  call.finish();
  return env.Undefined();
}

// matmulBf16(a, w, c, m, n, k, transB, alpha, beta): Backend.matmulBf16 (see gemmBf16 for the two modes).
Napi::Value MatmulBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View a = F(info, 0, "a"), w = U16(info, 1, "w"), c = F(info, 2, "c");
  const int64_t m = Int(info, 3), n = Int(info, 4), k = Int(info, 5);
  const bool tB = Bool(info, 6);
  const float alpha = (float)Num(info, 7), beta = (float)Num(info, 8);
  need(env, a.n, m * k, "matmulBf16 a");
  need(env, w.n, n * k, "matmulBf16 w");
  need(env, c.n, m * n, "matmulBf16 c");
  Device& d = device();
  Call call(d);
  gemmBf16(d, tB, m, n, k, alpha, call.in<float>(a), call.in<uint16_t>(w), beta, call.out<float>(c));
  call.finish();
  return env.Undefined();
}

// ---------- elementwise ----------

int opCode(const Napi::CallbackInfo& info, size_t i, int count) {
  const int64_t op = Int(info, i);
  if (op >= count) fail(info.Env(), "unknown op code " + std::to_string(op));
  return (int)op;
}

Napi::Value Unary(const Napi::CallbackInfo& info) {
  const int op = opCode(info, 0, U_COUNT);
  View x = F(info, 1, "x"), y = F(info, 2, "out");
  need(info.Env(), y.n, x.n, "out");
  Call call(device());
  call.launched(unary(device().stream, op, call.in<float>(x), call.out<float>(y), x.n), "unary kernel launch");
  call.finish();
  return info.Env().Undefined();
}

Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  const int op = opCode(info, 0, U_COUNT);
  View x = F(info, 1, "x"), gy = F(info, 2, "gy"), gx = F(info, 3, "gx");
  need(info.Env(), gy.n, x.n, "gy"); need(info.Env(), gx.n, x.n, "gx");
  Call call(device());
  call.launched(unaryBackward(device().stream, op, call.in<float>(x), call.in<float>(gy), call.out<float>(gx), x.n),
    "unaryBackward kernel launch");
  call.finish();
  return info.Env().Undefined();
}

Walk walkOf(Napi::Env env, const std::vector<int64_t>& shape, const std::vector<int64_t>& sa, const std::vector<int64_t>* sb,
  const char* what) {
  Walk w;
  if (!makeWalk(shape, sa, sb, w))
    fail(env, std::string(what) + ": more than " + std::to_string(kMaxDims) + " dims remain after merging contiguous ones");
  return w;
}

Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = opCode(info, 0, B_COUNT);
  View a = F(info, 1, "a"); auto sa = Ints(info, 2);
  View b = F(info, 3, "b"); auto sb = Ints(info, 4);
  View out = F(info, 5, "out"); auto shape = Ints(info, 6);
  if (sa.size() != shape.size() || sb.size() != shape.size()) fail(env, "binary: strides and shape differ in rank");
  const int64_t total = product(shape);
  if (total == 0) return env.Undefined();
  need(env, out.n, total, "binary out");
  int64_t lo, hi;
  viewExtent(shape, sa, lo, hi); if (lo < 0 || hi >= (int64_t)a.n) fail(env, "binary: a is too small for its strides");
  viewExtent(shape, sb, lo, hi); if (lo < 0 || hi >= (int64_t)b.n) fail(env, "binary: b is too small for its strides");
  const Walk w = walkOf(env, shape, sa, &sb, "binary");
  Call call(device());
  call.launched(binary(device().stream, op, call.in<float>(a), call.in<float>(b), call.out<float>(out), w, total),
    "binary kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value Affine(const Napi::CallbackInfo& info) {
  View x = F(info, 0, "x"); const float s = (float)Num(info, 1), t = (float)Num(info, 2); View y = F(info, 3, "out");
  need(info.Env(), y.n, x.n, "out");
  Call call(device());
  call.launched(affine(device().stream, call.in<float>(x), s, t, call.out<float>(y), x.n), "affine kernel launch");
  call.finish();
  return info.Env().Undefined();
}

// ECMAScript ToUint32 (what Int32Array / Uint16Array .fill do with a number, modulo 2^32).
uint32_t toUint32(double v) {
  if (!std::isfinite(v)) return 0;
  double m = std::fmod(std::trunc(v), 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return (uint32_t)m;
}

// dropoutMask(out, p, seed): the reference's counter-based mask, bit for bit.
Napi::Value DropoutMask(const Napi::CallbackInfo& info) {
  View out = F(info, 0, "out");
  const double p = Num(info, 1);
  const uint32_t seed = toUint32(Num(info, 2));  // the reference takes seed >>> 0
  // floor(p * 2^32), clamped to what the comparison with a 32-bit hash can tell apart
  const double t = std::floor(p * 4294967296.0);
  const uint64_t thr = std::isnan(t) || t >= 4294967296.0 ? (uint64_t)1 << 32 : t <= 0 ? 0 : (uint64_t)t;
  const float scale = (float)(1.0 / (1.0 - p));
  Call call(device());
  call.launched(dropoutMask(device().stream, call.out<float>(out), out.n, seed, thr, scale), "dropoutMask kernel launch");
  call.finish();
  return info.Env().Undefined();
}

Napi::Value Axpy(const Napi::CallbackInfo& info) {
  const float alpha = (float)Num(info, 0); View x = F(info, 1, "x"), y = F(info, 2, "y");
  need(info.Env(), y.n, x.n, "y");
  Call call(device());
  call.launched(axpy(device().stream, alpha, call.in<float>(x), call.out<float>(y), x.n), "axpy kernel launch");
  call.finish();
  return info.Env().Undefined();
}

Napi::Value Reduce(const Napi::CallbackInfo& info, bool isMax) {
  View x = F(info, 0, "x");
  const int64_t outer = Int(info, 1), mid = Int(info, 2), inner = Int(info, 3);
  View out = F(info, 4, "out");
  need(info.Env(), x.n, outer * mid * inner, "x"); need(info.Env(), out.n, outer * inner, "out");
  Call call(device());
  const float* px = call.in<float>(x);
  float* po = call.out<float>(out);
  call.launched(isMax ? maxMid(device().stream, px, outer, mid, inner, po) : sumMid(device().stream, px, outer, mid, inner, po),
    isMax ? "maxMid kernel launch" : "sumMid kernel launch");
  call.finish();
  return info.Env().Undefined();
}
Napi::Value SumMid(const Napi::CallbackInfo& info) { return Reduce(info, false); }
Napi::Value MaxMid(const Napi::CallbackInfo& info) { return Reduce(info, true); }

// ---------- layout ----------

Napi::Value Permute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"); auto shape = Ints(info, 1); auto perm = Ints(info, 2); View out = F(info, 3, "out");
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
  need(env, x.n, s, "permute x"); need(env, out.n, s, "permute out");
  if (s == 0) return env.Undefined();
  const Walk w = walkOf(env, outShape, st, nullptr, "permute");
  Call call(device());
  call.launched(stridedCopy(device().stream, call.in<float>(x), w, call.out<float>(out), s), "permute kernel launch");
  call.finish();
  return env.Undefined();
}

void checkStrided(Napi::Env env, size_t n, int64_t offset, const std::vector<int64_t>& shape, const std::vector<int64_t>& st,
  const char* what) {
  if (shape.size() != st.size()) fail(env, std::string(what) + ": strides and shape differ in rank");
  int64_t lo, hi;
  viewExtent(shape, st, lo, hi);
  if (hi < lo) return;
  if (offset + lo < 0 || offset + hi >= (int64_t)n) fail(env, std::string(what) + ": strided view runs outside the buffer");
}

Napi::Value StridedCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"); const int64_t offset = Int(info, 1); auto st = Ints(info, 2); auto shape = Ints(info, 3);
  View out = F(info, 4, "out");
  checkStrided(env, x.n, offset, shape, st, "stridedCopy");
  const int64_t total = product(shape);
  need(env, out.n, total, "stridedCopy out");
  if (total == 0) return env.Undefined();
  const Walk w = walkOf(env, shape, st, nullptr, "stridedCopy");
  Call call(device());
  call.launched(stridedCopy(device().stream, call.in<float>(x) + offset, w, call.out<float>(out), total),
    "stridedCopy kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value StridedAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View g = F(info, 0, "gOut"); auto shape = Ints(info, 1); View gx = F(info, 2, "gx");
  const int64_t offset = Int(info, 3); auto st = Ints(info, 4);
  checkStrided(env, gx.n, offset, shape, st, "stridedAdd");
  const int64_t total = product(shape);
  need(env, g.n, total, "stridedAdd gOut");
  if (total == 0) return env.Undefined();
  const Walk w = walkOf(env, shape, st, nullptr, "stridedAdd");
  Call call(device());
  call.launched(stridedAdd(device().stream, call.in<float>(g), w, call.out<float>(gx) + offset, total),
    "stridedAdd kernel launch");
  call.finish();
  return env.Undefined();
}

// ---------- row kernels ----------

Napi::Value Softmax(const Napi::CallbackInfo& info, bool log) {
  View x = F(info, 0, "x"); const int64_t rows = Int(info, 1), cols = Int(info, 2); View out = F(info, 3, "out");
  need(info.Env(), x.n, rows * cols, "x"); need(info.Env(), out.n, rows * cols, "out");
  Call call(device());
  call.launched(softmax(device().stream, call.in<float>(x), rows, cols, call.out<float>(out), log),
    log ? "logSoftmax kernel launch" : "softmax kernel launch");
  call.finish();
  return info.Env().Undefined();
}
Napi::Value SoftmaxF(const Napi::CallbackInfo& info) { return Softmax(info, false); }
Napi::Value LogSoftmaxF(const Napi::CallbackInfo& info) { return Softmax(info, true); }

Napi::Value SoftmaxBack(const Napi::CallbackInfo& info, bool log) {
  View y = F(info, 0, "y"), gy = F(info, 1, "gy");
  const int64_t rows = Int(info, 2), cols = Int(info, 3); View gx = F(info, 4, "gx");
  need(info.Env(), y.n, rows * cols, "y"); need(info.Env(), gy.n, rows * cols, "gy"); need(info.Env(), gx.n, rows * cols, "gx");
  Call call(device());
  call.launched(softmaxBackward(device().stream, call.in<float>(y), call.in<float>(gy), rows, cols, call.out<float>(gx), log),
    log ? "logSoftmaxBackward kernel launch" : "softmaxBackward kernel launch");
  call.finish();
  return info.Env().Undefined();
}
Napi::Value SoftmaxBackF(const Napi::CallbackInfo& info) { return SoftmaxBack(info, false); }
Napi::Value LogSoftmaxBackF(const Napi::CallbackInfo& info) { return SoftmaxBack(info, true); }

void checkTargets(Napi::Env env, const int32_t* t, int64_t rows, int64_t cols, int ignore, int64_t* count) {
  int64_t c = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (t[r] == ignore) continue;
    if (t[r] < 0 || t[r] >= cols)
      range(env, "cross-entropy target " + std::to_string(t[r]) + " out of range [0, " + std::to_string(cols) + ") at row " +
        std::to_string(r));
    c++;
  }
  if (count) *count = c;
}

// The count of non-ignored rows comes from the host-visible targets, so the call returns
// without waiting for the kernel.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), t = I(info, 1, "targets");
  const int64_t rows = Int(info, 2), cols = Int(info, 3);
  const int ignore = (int)Num(info, 4);
  View loss = F(info, 5, "loss"), lse = F(info, 6, "lse");
  need(env, x.n, rows * cols, "x"); need(env, t.n, rows, "targets"); need(env, loss.n, rows, "loss"); need(env, lse.n, rows, "lse");
  Call call(device());
  call.hostRead(t);
  int64_t count = 0;
  checkTargets(env, t.as<int32_t>(), rows, cols, ignore, &count);
  call.launched(crossEntropy(device().stream, call.in<float>(x), call.in<int32_t>(t), rows, cols, ignore,
    call.out<float>(loss), call.out<float>(lse)), "crossEntropy kernel launch");
  call.finish();
  return Napi::Number::New(env, (double)count);
}

Napi::Value CrossEntropyBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), t = I(info, 1, "targets"), lse = F(info, 2, "lse"), gl = F(info, 3, "gLoss");
  const int64_t rows = Int(info, 4), cols = Int(info, 5);
  const int ignore = (int)Num(info, 6); View gx = F(info, 7, "gx");
  need(env, x.n, rows * cols, "x"); need(env, t.n, rows, "targets"); need(env, lse.n, rows, "lse"); need(env, gl.n, rows, "gLoss");
  need(env, gx.n, rows * cols, "gx");
  Call call(device());
  call.hostRead(t);
  checkTargets(env, t.as<int32_t>(), rows, cols, ignore, nullptr);
  call.launched(crossEntropyBackward(device().stream, call.in<float>(x), call.in<int32_t>(t), call.in<float>(lse),
    call.in<float>(gl), rows, cols, ignore, call.out<float>(gx)), "crossEntropyBackward kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), w = Fnull(info, 1, "weight"), b = Fnull(info, 2, "bias");
  const int64_t rows = Int(info, 3), cols = Int(info, 4); const float eps = (float)Num(info, 5);
  View out = F(info, 6, "out"), mean = F(info, 7, "mean"), rstd = F(info, 8, "rstd");
  need(env, x.n, rows * cols, "x"); need(env, out.n, rows * cols, "out"); need(env, mean.n, rows, "mean"); need(env, rstd.n, rows, "rstd");
  if (w.p) need(env, w.n, cols, "weight");
  if (b.p) need(env, b.n, cols, "bias");
  Call call(device());
  call.launched(layerNorm(device().stream, call.in<float>(x), call.in<float>(w), call.in<float>(b), rows, cols, eps,
    call.out<float>(out), call.out<float>(mean), call.out<float>(rstd)), "layerNorm kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value LayerNormBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), w = Fnull(info, 1, "weight"), mean = F(info, 2, "mean"), rstd = F(info, 3, "rstd");
  View gy = F(info, 4, "gy");
  const int64_t rows = Int(info, 5), cols = Int(info, 6);
  View gx = F(info, 7, "gx"), gw = Fnull(info, 8, "gw"), gb = Fnull(info, 9, "gb");
  need(env, x.n, rows * cols, "x"); need(env, gy.n, rows * cols, "gy"); need(env, gx.n, rows * cols, "gx");
  need(env, mean.n, rows, "mean"); need(env, rstd.n, rows, "rstd");
  if (w.p) need(env, w.n, cols, "weight");
  if (gw.p) need(env, gw.n, cols, "gw");
  if (gb.p) need(env, gb.n, cols, "gb");
  Call call(device());
  call.launched(layerNormBackward(device().stream, call.in<float>(x), call.in<float>(w), call.in<float>(mean),
    call.in<float>(rstd), call.in<float>(gy), rows, cols, call.out<float>(gx), call.out<float>(gw), call.out<float>(gb)),
    "layerNormBackward kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), w = Fnull(info, 1, "weight");
  const int64_t rows = Int(info, 2), cols = Int(info, 3); const float eps = (float)Num(info, 4);
  View out = F(info, 5, "out"), rstd = F(info, 6, "rstd");
  need(env, x.n, rows * cols, "x"); need(env, out.n, rows * cols, "out"); need(env, rstd.n, rows, "rstd");
  if (w.p) need(env, w.n, cols, "weight");
  Call call(device());
  call.launched(rmsNorm(device().stream, call.in<float>(x), call.in<float>(w), rows, cols, eps, call.out<float>(out),
    call.out<float>(rstd)), "rmsNorm kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value RmsNormBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), w = Fnull(info, 1, "weight"), rstd = F(info, 2, "rstd"), gy = F(info, 3, "gy");
  const int64_t rows = Int(info, 4), cols = Int(info, 5);
  View gx = F(info, 6, "gx"), gw = Fnull(info, 7, "gw");
  need(env, x.n, rows * cols, "x"); need(env, gy.n, rows * cols, "gy"); need(env, gx.n, rows * cols, "gx"); need(env, rstd.n, rows, "rstd");
  if (w.p) need(env, w.n, cols, "weight");
  if (gw.p) need(env, gw.n, cols, "gw");
  Call call(device());
  call.launched(rmsNormBackward(device().stream, call.in<float>(x), call.in<float>(w), call.in<float>(rstd),
    call.in<float>(gy), rows, cols, call.out<float>(gx), call.out<float>(gw)), "rmsNormBackward kernel launch");
  call.finish();
  return env.Undefined();
}

// ---------- embedding, rope, optimizer, dtype ----------

void checkIds(Napi::Env env, const int32_t* ids, size_t n, size_t rows) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || (size_t)ids[i] >= rows)
      range(env, "embedding id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(rows) + ") at position " +
        std::to_string(i));
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View table = F(info, 0, "table"), ids = I(info, 1, "ids"); const int64_t dim = Int(info, 2);
  View out = F(info, 3, "out");
  if (dim == 0) return env.Undefined();
  need(env, out.n, (int64_t)ids.n * dim, "out");
  Call call(device());
  call.hostRead(ids);
  checkIds(env, ids.as<int32_t>(), ids.n, table.n / dim);
  call.launched(embedding(device().stream, call.in<float>(table), call.in<int32_t>(ids), ids.n, dim, call.out<float>(out)),
    "embedding kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value EmbeddingBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View table = U16(info, 0, "table"), ids = I(info, 1, "ids"); const int64_t dim = Int(info, 2);
  View out = F(info, 3, "out");
  if (dim == 0) return env.Undefined();
  need(env, out.n, (int64_t)ids.n * dim, "out");
  Call call(device());
  call.hostRead(ids);
  checkIds(env, ids.as<int32_t>(), ids.n, table.n / dim);
  call.launched(embeddingBf16(device().stream, call.in<uint16_t>(table), call.in<int32_t>(ids), ids.n, dim, call.out<float>(out)),
    "embeddingBf16 kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value EmbeddingBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View gy = F(info, 0, "gy"), ids = I(info, 1, "ids"); const int64_t dim = Int(info, 2);
  View gt = F(info, 3, "gTable");
  if (dim == 0) return env.Undefined();
  need(env, gy.n, (int64_t)ids.n * dim, "gy");
  Call call(device());
  call.hostRead(ids);
  checkIds(env, ids.as<int32_t>(), ids.n, gt.n / dim);
  call.launched(embeddingBackward(device().stream, call.in<float>(gy), call.in<int32_t>(ids), ids.n, dim, call.out<float>(gt)),
    "embeddingBackward kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View x = F(info, 0, "x"), cs = F(info, 1, "cos"), sn = F(info, 2, "sin"), pos = I(info, 3, "pos");
  const int64_t B = Int(info, 4), H = Int(info, 5), T = Int(info, 6), D = Int(info, 7);
  const bool inverse = Bool(info, 8); View out = F(info, 9, "out");
  if (D % 2) fail(env, "rope: head dim must be even");
  const int64_t half = D / 2;
  need(env, x.n, B * H * T * D, "x"); need(env, out.n, B * H * T * D, "out");
  if (pos.n != (size_t)T && pos.n != (size_t)(B * T)) fail(env, "rope: pos must have T or B*T entries");
  if (half == 0) return env.Undefined();
  Call call(device());
  call.hostRead(pos);
  const int64_t maxPos = (int64_t)std::min(cs.n, sn.n) / half;
  const int32_t* p = pos.as<int32_t>();
  for (size_t i = 0; i < pos.n; i++)
    if (p[i] < 0 || p[i] >= maxPos)
      range(env, "rope position " + std::to_string(p[i]) + " out of range [0, " + std::to_string(maxPos) + ")");
  call.launched(rope(device().stream, call.in<float>(x), call.in<float>(cs), call.in<float>(sn), call.in<int32_t>(pos),
    (int64_t)pos.n, B, H, T, D, inverse, call.out<float>(out)), "rope kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View p = F(info, 0, "p"), g = F(info, 1, "g"), m = F(info, 2, "m"), v = F(info, 3, "v");
  const double lr = Num(info, 4), b1 = Num(info, 5), b2 = Num(info, 6), eps = Num(info, 7), wd = Num(info, 8), step = Num(info, 9);
  need(env, g.n, p.n, "g"); need(env, m.n, p.n, "m"); need(env, v.n, p.n, "v");
  if (!(step >= 1)) range(env, "adamw step must be >= 1, got " + std::to_string(step));
  const float bc1 = (float)(1 - std::pow(b1, step)), bc2 = (float)(1 - std::pow(b2, step));
  Call call(device());
  call.launched(adamw(device().stream, call.out<float>(p), call.in<float>(g), call.out<float>(m), call.out<float>(v), p.n,
    (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, bc1, bc2), "adamw kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value Bf16ToF32(const Napi::CallbackInfo& info) {
  View x = U16(info, 0, "x"), out = F(info, 1, "out");
  need(info.Env(), out.n, x.n, "out");
  Call call(device());
  call.launched(bf16ToF32(device().stream, call.in<uint16_t>(x), call.out<float>(out), x.n), "bf16ToF32 kernel launch");
  call.finish();
  return info.Env().Undefined();
}

Napi::Value F32ToBf16(const Napi::CallbackInfo& info) {
  View x = F(info, 0, "x"), out = U16(info, 1, "out");
  need(info.Env(), out.n, x.n, "out");
  Call call(device());
  call.launched(f32ToBf16(device().stream, call.in<float>(x), call.out<uint16_t>(out), x.n), "f32ToBf16 kernel launch");
  call.finish();
  return info.Env().Undefined();
}

// ---------- NF4 (Linear4bit) ----------

// A map (16 or 256 float32 values) copied from the host into a by-value kernel argument.
template <typename Code>
Code codeArg(Call& call, const View& v) {
  Code c;
  call.hostRead(v);  // one from alloc() may still be written by queued kernels
  std::memcpy(c.v, v.p, sizeof(c.v));
  return c;
}

// dequantizeNF4(packed, absmax, blocksize, code, start, count, out): the cpu addon's checks.
Napi::Value DequantizeNF4(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View packed = U8(info, 0, "packed"), absmax = F(info, 1, "absmax");
  const int64_t bs = Int(info, 2);
  View code = F(info, 3, "code");
  const int64_t start = Int(info, 4), count = Int(info, 5);
  View out = F(info, 6, "out");
  if (bs < 1) range(env, "dequantizeNF4: blocksize must be >= 1");
  if (code.n < 16) range(env, "dequantizeNF4: code needs 16 values, got " + std::to_string(code.n));
  if (count == 0) return env.Undefined();
  const int64_t end = start + count;
  need(env, out.n, count, "out");
  need(env, packed.n, (end + 1) / 2, "packed");
  need(env, absmax.n, (end - 1) / bs - start / bs + 1, "absmax");
  Device& d = device();
  Call call(d);
  const NF4Code c = codeArg<NF4Code>(call, code);
  call.launched(dequantizeNF4(d.stream, call.in<uint8_t>(packed), call.in<float>(absmax), bs, c, start, count,
    call.out<float>(out)), "dequantizeNF4 kernel launch");
  call.finish();
  return env.Undefined();
}

// dequantizeAbsmax(q, absmax, blocksize, code, offset, n, out): a double-quantized absmax to float32.
Napi::Value DequantizeAbsmax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View q = U8(info, 0, "q"), absmax = F(info, 1, "absmax");
  const int64_t bs = Int(info, 2);
  View code = F(info, 3, "code");
  const float offset = (float)Num(info, 4);
  const int64_t n = Int(info, 5);
  View out = F(info, 6, "out");
  if (bs < 1) range(env, "dequantizeAbsmax: blocksize must be >= 1");
  if (code.n < 256) range(env, "dequantizeAbsmax: code needs 256 values, got " + std::to_string(code.n));
  if (n == 0) return env.Undefined();
  need(env, q.n, n, "q");
  need(env, absmax.n, (n - 1) / bs + 1, "absmax");
  need(env, out.n, n, "out");
  Device& d = device();
  Call call(d);
  const ByteCode c = codeArg<ByteCode>(call, code);
  call.launched(dequantizeAbsmax(d.stream, call.in<uint8_t>(q), call.in<float>(absmax), bs, c, offset, n,
    call.out<float>(out)), "dequantizeAbsmax kernel launch");
  call.finish();
  return env.Undefined();
}

// ---------- memory and stream ----------

void finalizeBlock(Napi::Env env, void* data) {
  Device& d = device();  // exists: the block came from it
  const size_t bytes = d.cache->give(data);
  if (bytes) Napi::MemoryManagement::AdjustExternalMemory(env, -(int64_t)bytes);
}

// alloc(n, kind): kind 0 float32, 1 int32, 2 uint16, 3 uint8. Managed memory, contents unspecified.
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = Int(info, 0), kind = Int(info, 1);
  if (kind > 3) fail(env, "alloc: kind must be 0 (float32), 1 (int32), 2 (uint16) or 3 (uint8)");
  const size_t elem = kind == 3 ? 1 : kind == 2 ? 2 : 4;
  const size_t bytes = (size_t)n * elem;
  Device& d = device();
  size_t bb = 0;
  void* p = d.allocManaged(bytes, &bb);
  Napi::ArrayBuffer ab;
  try {
    ab = Napi::ArrayBuffer::New(env, p, bytes, finalizeBlock);
  } catch (...) {
    d.cache->give(p);
    throw;
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, (int64_t)bb);
  if (kind == 0) return Napi::Float32Array::New(env, (size_t)n, ab, 0);
  if (kind == 1) return Napi::Int32Array::New(env, (size_t)n, ab, 0);
  if (kind == 3) return Napi::Uint8Array::New(env, (size_t)n, ab, 0);
  return Napi::Uint16Array::New(env, (size_t)n, ab, 0);
}

// fill(arr, value): in stream order for our arrays; a plain host fill for any other.
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) fail(env, "fill: argument 0 must be a Float32Array, Int32Array or Uint16Array");
  const napi_typedarray_type kind = info[0].As<Napi::TypedArray>().TypedArrayType();
  const double value = Num(info, 1);
  View v;
  uint32_t bits32 = 0;
  uint16_t bits16 = 0;
  if (kind == napi_float32_array) {
    v = F(info, 0, "out");
    const float f = (float)value;
    std::memcpy(&bits32, &f, 4);
  } else if (kind == napi_int32_array) {
    v = I(info, 0, "out");
    bits32 = toUint32(value);  // the int32 bit pattern
  } else if (kind == napi_uint16_array) {
    v = U16(info, 0, "out");
    bits16 = (uint16_t)(toUint32(value) & 0xffffu);
  } else {
    fail(env, "fill: argument 0 must be a Float32Array, Int32Array or Uint16Array");
  }
  if (v.n == 0) return env.Undefined();
  Device& d = device();
  if (!d.cache->contains(v.p, v.bytes)) {
    if (kind == napi_uint16_array) std::fill(v.as<uint16_t>(), v.as<uint16_t>() + v.n, bits16);
    else std::fill(v.as<uint32_t>(), v.as<uint32_t>() + v.n, bits32);
    return env.Undefined();
  }
  Call call(d);
  if (kind == napi_uint16_array) call.launched(fill16(d.stream, v.as<uint16_t>(), bits16, v.n), "fill kernel launch");
  else call.launched(fill32(d.stream, v.as<uint32_t>(), bits32, v.n), "fill kernel launch");
  return env.Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  device().synchronize();
  return info.Env().Undefined();
}

/** True when the typed array lies in memory from alloc() (so kernels use it without staging). */
Napi::Value IsDeviceArray(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray()) return Napi::Boolean::New(info.Env(), false);
  auto ta = info[0].As<Napi::TypedArray>();
  const size_t bytes = ta.ByteLength();
  void* p = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Napi::Boolean::New(info.Env(), bytes > 0 && device().cache->contains(p, bytes));
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Device& d = device();
  const CacheStats s = d.cache->stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("reservedBytes", (double)s.reservedBytes);
  o.Set("liveBytes", (double)s.liveBytes);
  o.Set("cachedBytes", (double)s.cachedBytes);
  o.Set("peakLiveBytes", (double)s.peakLiveBytes);
  o.Set("peakReservedBytes", (double)s.peakReservedBytes);
  o.Set("blocks", (double)s.blocks);
  o.Set("allocs", (double)s.allocs);
  o.Set("reuses", (double)s.reuses);
  o.Set("rawAllocs", (double)s.rawAllocs);
  o.Set("rawFrees", (double)s.rawFrees);
  o.Set("stagedArrays", (double)d.stagedArrays);
  o.Set("stagedBytesIn", (double)d.stagedBytesIn);
  o.Set("stagedBytesOut", (double)d.stagedBytesOut);
  o.Set("launches", (double)d.launches);
  o.Set("gemms", (double)d.gemms);
  o.Set("syncs", (double)d.syncs);
  o.Set("refusedGrowths", (double)d.refusedGrowths);
  return o;
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  device().cache->resetPeak();
  return info.Env().Undefined();
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)device().emptyCache());
}

Napi::Value Status(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string why = unavailableReason();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", why.empty());
  o.Set("reason", why.empty() ? env.Null() : Napi::String::New(env, why));
  return o;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Device& d = device();
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", d.id);
  o.Set("name", d.prop.name);
  o.Set("computeCapability", std::to_string(d.prop.major) + "." + std::to_string(d.prop.minor));
  o.Set("multiprocessors", d.prop.multiProcessorCount);
  o.Set("totalMemory", (double)d.prop.totalGlobalMem);
  o.Set("concurrentManagedAccess", d.concurrentManaged);
  o.Set("driverVersion", d.driverVersion);
  o.Set("runtimeVersion", d.runtimeVersion);
  o.Set("cublas", d.cublasInfo());
  o.Set("tf32", d.tf32);
  o.Set("prefetch", d.prefetch);
  size_t freeB = 0, totalB = 0;
  if (cudaMemGetInfo(&freeB, &totalB) != cudaSuccess) cudaGetLastError();
  o.Set("freeMemory", (double)freeB);
  o.Set("reserveBytes", (double)d.reserveBytes);
  return o;
}

Napi::Value SetTf32(const Napi::CallbackInfo& info) {
  device().tf32 = Bool(info, 0);
  return info.Env().Undefined();
}

// ---------- NCCL (data-parallel training; src/train/nccl.ts) ----------

Napi::Value NcclLibrary(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), ncclLibrary()); }

Napi::Value NcclUniqueId(const Napi::CallbackInfo& info) {
  const std::vector<uint8_t> id = ncclUniqueId();
  Napi::Uint8Array a = Napi::Uint8Array::New(info.Env(), id.size());
  std::memcpy(a.Data(), id.data(), id.size());
  return a;
}

// ncclInit(id: Uint8Array(128), nranks, rank) -> { device, library }
Napi::Value NcclInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View id = U8(info, 0, "id");
  if (id.n != kNcclIdBytes) fail(env, "ncclInit: id must hold " + std::to_string(kNcclIdBytes) + " bytes");
  const int64_t nranks = Int(info, 1), rank = Int(info, 2);
  if (nranks < 1 || rank >= nranks) fail(env, "ncclInit: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  Device& d = device();
  ncclInit(d, id.as<uint8_t>(), (int)nranks, (int)rank);
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", d.id);
  o.Set("library", ncclLibrary());
  return o;
}

// ncclAllReduce(bufs: Float32Array[], factor): in place, bufs = factor * (sum over ranks).
Napi::Value NcclAllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) fail(env, "ncclAllReduce: argument 0 must be an array of Float32Arrays");
  auto arr = info[0].As<Napi::Array>();
  const double factor = Num(info, 1);
  Device& d = device();
  std::vector<float*> bufs;
  std::vector<size_t> counts;
  std::vector<bool> host;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      fail(env, "ncclAllReduce: element " + std::to_string(i) + " is not a Float32Array");
    auto ta = v.As<Napi::TypedArray>();
    float* p = reinterpret_cast<float*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
    bufs.push_back(p);
    counts.push_back(ta.ElementLength());
    host.push_back(ta.ElementLength() > 0 && !d.cache->contains(p, ta.ByteLength()));
  }
  ncclAllReduceScaled(d, bufs, counts, host, (float)factor);
  return env.Undefined();
}

// ncclBroadcast(buf: Float32Array, root)
Napi::Value NcclBroadcast(const Napi::CallbackInfo& info) {
  View v = F(info, 0, "buf");
  const int64_t root = Int(info, 1);
  Device& d = device();
  ncclBroadcast(d, v.as<float>(), v.n, v.n > 0 && d.cache->contains(v.p, v.bytes), (int)root);
  return info.Env().Undefined();
}

// ncclFinish(abort): ncclCommDestroy, or ncclCommAbort after a failure elsewhere.
Napi::Value NcclFinish(const Napi::CallbackInfo& info) {
  ncclFinish(Bool(info, 0));
  return info.Env().Undefined();
}

#ifndef PEFT_CUDA_EMU
// attention(q, k, v, bias|null, shape, out, lse) and attentionBackward(q, k, v, bias|null, shape, out,
// lse, gOut, gq, gk, gv): the fused kernels of ../attention (AttentionShape as in backend.ts).
pc::AttnShape attnShape(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) fail(env, "attention: shape must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto num = [&](const char* k) -> double {
    Napi::Value x = o.Get(k);
    if (!x.IsNumber()) fail(env, std::string("attention: shape.") + k + " must be a number");
    return x.As<Napi::Number>().DoubleValue();
  };
  pc::AttnShape s{};
  s.B = (int)num("B"); s.H = (int)num("H"); s.Hk = (int)num("Hk"); s.T = (int)num("T"); s.S = (int)num("S"); s.D = (int)num("D");
  s.scale = num("scale"); s.dropoutP = num("dropoutP"); s.seed = toUint32(num("seed"));
  Napi::Value bs = o.Get("biasStrides");
  if (!bs.IsArray() || bs.As<Napi::Array>().Length() != 4) fail(env, "attention: shape.biasStrides must be 4 numbers");
  for (uint32_t i = 0; i < 4; i++) s.biasStrides[i] = (int64_t)bs.As<Napi::Array>().Get(i).As<Napi::Number>().Int64Value();
  if (s.B < 0 || s.T < 0 || s.S < 0 || s.D < 1 || s.H < 1 || s.Hk < 1 || s.H % s.Hk != 0) fail(env, "attention: bad shape");
  return s;
}

void attnNeed(Napi::Env env, const pc::AttnShape& s, const View& q, const View& k, const View& v, const View& bias,
  const View& out, const View& lse) {
  const int64_t nq = (int64_t)s.B * s.H * s.T * s.D, nk = (int64_t)s.B * s.Hk * s.S * s.D;
  need(env, q.n, nq, "q"); need(env, k.n, nk, "k"); need(env, v.n, nk, "v"); need(env, out.n, nq, "out");
  need(env, lse.n, (int64_t)s.B * s.H * s.T, "lse");
  if (bias.p && s.B * s.H * s.T * s.S > 0) {
    const int64_t* st = s.biasStrides;
    const int64_t hi = (s.B - 1) * st[0] + (s.H - 1) * st[1] + (s.T - 1) * st[2] + (s.S - 1) * st[3];
    if (hi >= (int64_t)bias.n || st[0] < 0 || st[1] < 0 || st[2] < 0 || st[3] < 0) fail(env, "attention: bias is too small for its strides");
  }
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View q = F(info, 0, "q"), k = F(info, 1, "k"), v = F(info, 2, "v"), bias = Fnull(info, 3, "bias");
  const pc::AttnShape s = attnShape(env, info[4]);
  View out = F(info, 5, "out"), lse = F(info, 6, "lse");
  attnNeed(env, s, q, k, v, bias, out, lse);
  Call call(device());
  call.launched(pc::cudaAttentionForward(call.in<float>(q), call.in<float>(k), call.in<float>(v), call.in<float>(bias), s,
    call.out<float>(out), call.out<float>(lse), device().stream), "attention kernel launch");
  call.finish();
  return env.Undefined();
}

Napi::Value AttentionBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View q = F(info, 0, "q"), k = F(info, 1, "k"), v = F(info, 2, "v"), bias = Fnull(info, 3, "bias");
  const pc::AttnShape s = attnShape(env, info[4]);
  View out = F(info, 5, "out"), lse = F(info, 6, "lse"), gOut = F(info, 7, "gOut");
  View gq = F(info, 8, "gq"), gk = F(info, 9, "gk"), gv = F(info, 10, "gv");
  attnNeed(env, s, q, k, v, bias, out, lse);
  need(env, gOut.n, out.n, "gOut"); need(env, gq.n, q.n, "gq"); need(env, gk.n, k.n, "gk"); need(env, gv.n, v.n, "gv");
  Call call(device());
  call.launched(pc::cudaAttentionBackward(call.in<float>(q), call.in<float>(k), call.in<float>(v), call.in<float>(bias), s,
    call.in<float>(out), call.in<float>(lse), call.in<float>(gOut), call.out<float>(gq), call.out<float>(gk), call.out<float>(gv),
    device().stream), "attentionBackward kernel launch");
  call.finish();
  return env.Undefined();
}
#endif

// Every entry point turns C++ errors (CudaError from a failed CUDA / cuBLAS call) into JS errors.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return Fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("peft_cuda: ") + e.what());
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Nothing touches CUDA here: loading must work (and status() explain) without a GPU.
#define DEF(name, fn) exports.Set(name, Napi::Function::New(env, guarded<fn>, name))
  DEF("matmul", Matmul);
  DEF("unary", Unary); DEF("unaryBackward", UnaryBackward); DEF("binary", Binary); DEF("affine", Affine); DEF("axpy", Axpy);
  DEF("dropoutMask", DropoutMask);
#ifndef PEFT_CUDA_EMU
  DEF("attention", Attention); DEF("attentionBackward", AttentionBack);
#endif
  DEF("sumMid", SumMid); DEF("maxMid", MaxMid);
  DEF("permute", Permute); DEF("stridedCopy", StridedCopy); DEF("stridedAdd", StridedAdd);
  DEF("softmax", SoftmaxF); DEF("softmaxBackward", SoftmaxBackF); DEF("logSoftmax", LogSoftmaxF);
  DEF("logSoftmaxBackward", LogSoftmaxBackF);
  DEF("crossEntropy", CrossEntropy); DEF("crossEntropyBackward", CrossEntropyBack);
  DEF("layerNorm", LayerNorm); DEF("layerNormBackward", LayerNormBack); DEF("rmsNorm", RmsNorm);
  DEF("rmsNormBackward", RmsNormBack);
  DEF("embedding", Embedding); DEF("embeddingBackward", EmbeddingBack); DEF("rope", Rope); DEF("adamw", Adamw);
  DEF("bf16ToF32", Bf16ToF32); DEF("f32ToBf16", F32ToBf16);
  DEF("dequantizeNF4", DequantizeNF4); DEF("dequantizeAbsmax", DequantizeAbsmax);
  DEF("matmulBf16", MatmulBf16); DEF("embeddingBf16", EmbeddingBf16);
  DEF("alloc", Alloc); DEF("fill", Fill); DEF("synchronize", Synchronize); DEF("isDeviceArray", IsDeviceArray);
  DEF("ncclLibrary", NcclLibrary); DEF("ncclUniqueId", NcclUniqueId); DEF("ncclInit", NcclInit);
  DEF("ncclAllReduce", NcclAllReduce); DEF("ncclBroadcast", NcclBroadcast); DEF("ncclFinish", NcclFinish);
  DEF("stats", Stats); DEF("resetPeak", ResetPeak); DEF("emptyCache", EmptyCache); DEF("status", Status); DEF("info", Info); DEF("setTf32", SetTf32);
#undef DEF
  return exports;
}

}  // namespace

NODE_API_MODULE(peft_cuda, Init)
