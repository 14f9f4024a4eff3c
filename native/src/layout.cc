#include "layout.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "kernels.h"
#include "pool.h"

namespace peft {
namespace {

constexpr size_t kMinElems = 1 << 15;  // below this, threads cost more than they save

struct Layout {
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> st;  // one stride vector per operand
};

// Drops size-1 dims and merges neighbours that are contiguous for every operand.
Layout collapse(const std::vector<int64_t>& shape, const std::vector<const std::vector<int64_t>*>& strides) {
  Layout L;
  L.st.resize(strides.size());
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 1) continue;
    bool merge = !L.shape.empty();
    for (size_t k = 0; merge && k < strides.size(); k++) {
      if (L.st[k].back() != (*strides[k])[d] * shape[d]) merge = false;
    }
    if (merge) {
      L.shape.back() *= shape[d];
      for (size_t k = 0; k < strides.size(); k++) L.st[k].back() = (*strides[k])[d];
    } else {
      L.shape.push_back(shape[d]);
      for (size_t k = 0; k < strides.size(); k++) L.st[k].push_back((*strides[k])[d]);
    }
  }
  return L;
}

int64_t prod(const std::vector<int64_t>& s, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to; i++) n *= s[i];
  return n;
}

// Offsets of row r (a flat index over dims [0, nd)) in each operand.
void rowOffsets(const Layout& L, size_t nd, int64_t r, int64_t* offs) {
  for (size_t k = 0; k < L.st.size(); k++) offs[k] = 0;
  for (size_t d = nd; d-- > 0;) {
    const int64_t i = r % L.shape[d];
    r /= L.shape[d];
    for (size_t k = 0; k < L.st.size(); k++) offs[k] += i * L.st[k][d];
  }
}

// True when no two index tuples map to the same offset (safe to scatter-add in parallel).
bool injective(const std::vector<int64_t>& shape, const std::vector<int64_t>& st) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (size_t d = 0; d < shape.size(); d++) if (shape[d] > 1) dims.push_back({st[d] < 0 ? -st[d] : st[d], shape[d]});
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;
  for (auto& [s, n] : dims) {
    if (s <= reach) return false;
    reach += s * (n - 1);
  }
  return true;
}

}  // namespace

void stridedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t& lo, int64_t& hi) {
  lo = 0; hi = 0;
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 0) { lo = 0; hi = -1; return; }
    const int64_t span = (shape[d] - 1) * strides[d];
    if (span > 0) hi += span; else lo += span;
  }
}

void binaryBroadcast(int op, const float* a, const std::vector<int64_t>& aS, const float* b,
  const std::vector<int64_t>& bS, float* out, const std::vector<int64_t>& outShape) {
  const Kernels& K = kernels();
  const int64_t total = prod(outShape, 0, outShape.size());
  if (total == 0) return;
  std::vector<int64_t> oS(outShape.size());
  { int64_t s = 1; for (size_t d = outShape.size(); d-- > 0;) { oS[d] = s; s *= outShape[d]; } }
  Layout L = collapse(outShape, {&aS, &bS, &oS});
  if (L.shape.empty()) { K.binary(op, a, 0, b, 0, out, 1); return; }
  const size_t nd = L.shape.size();
  const int64_t inner = L.shape[nd - 1];
  const int64_t sa = L.st[0][nd - 1], sb = L.st[1][nd - 1];
  const int64_t rows = total / inner;
  const bool fast = (sa == 0 || sa == 1) && (sb == 0 || sb == 1);
  auto doRows = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    int64_t offs[3];
    for (int64_t r = r0; r < r1; r++) {
      rowOffsets(L, nd - 1, r, offs);
      const float* pa = a + offs[0] + c0 * sa;
      const float* pb = b + offs[1] + c0 * sb;
      float* po = out + r * inner + c0;
      if (fast) K.binary(op, pa, (int)sa, pb, (int)sb, po, c1 - c0);
      else for (int64_t c = 0; c < c1 - c0; c++) K.binary(op, pa + c * sa, 0, pb + c * sb, 0, po + c, 1);
    }
  };
  if (rows >= poolThreads() * 2 || inner < (int64_t)kMinElems) {
    const size_t minRows = std::max<int64_t>(1, kMinElems / inner);
    parallelFor(rows, minRows, [&](size_t r0, size_t r1) { doRows(r0, r1, 0, inner); });
  } else {
    for (int64_t r = 0; r < rows; r++)
      parallelFor(inner, kMinElems, [&](size_t c0, size_t c1) { doRows(r, r + 1, c0, c1); });
  }
}

// Moves between a strided view S (x + offset + idx.strides) and a contiguous buffer C of
// outShape: copy (C = S) when ADD is false, scatter-add (S += C) when true.
template <bool ADD>
static void stridedMove(float* S, const std::vector<int64_t>& strides, const std::vector<int64_t>& outShape, float* C,
  bool parallel) {
  const int64_t total = prod(outShape, 0, outShape.size());
  if (total == 0) return;
  std::vector<int64_t> oS(outShape.size());
  { int64_t s = 1; for (size_t d = outShape.size(); d-- > 0;) { oS[d] = s; s *= outShape[d]; } }
  Layout L = collapse(outShape, {&strides, &oS});
  auto mv = [](float& s, float& c) { if (ADD) s += c; else c = s; };
  if (L.shape.empty()) { mv(S[0], C[0]); return; }
  const size_t nd = L.shape.size();
  const int64_t inner = L.shape[nd - 1], sIn = L.st[0][nd - 1];
  // A transpose-like layout (innermost strided stride not 1): tile the last two dims so
  // both sides stay in cache.
  if (nd >= 2 && sIn != 1 && sIn != 0) {
    const int64_t R = L.shape[nd - 2], Cn = inner, sR = L.st[0][nd - 2];
    const int64_t outer = total / (R * Cn);
    constexpr int64_t T = 32;
    const int64_t tilesR = (R + T - 1) / T;
    auto run = [&](size_t w0, size_t w1) {
      int64_t offs[2];
      for (size_t w = w0; w < w1; w++) {
        const int64_t o = w / tilesR, i0 = (w % tilesR) * T;
        rowOffsets(L, nd - 2, o, offs);
        float* s = S + offs[0];
        float* c = C + o * R * Cn;
        const int64_t i1 = std::min(R, i0 + T);
        for (int64_t j0 = 0; j0 < Cn; j0 += T) {
          const int64_t j1 = std::min(Cn, j0 + T);
          for (int64_t i = i0; i < i1; i++)
            for (int64_t j = j0; j < j1; j++) mv(s[i * sR + j * sIn], c[i * Cn + j]);
        }
      }
    };
    if (parallel) parallelFor(outer * tilesR, std::max<int64_t>(1, kMinElems / (T * Cn)), run);
    else run(0, outer * tilesR);
    return;
  }
  const int64_t rows = total / inner;
  auto run = [&](size_t r0, size_t r1) {
    int64_t offs[2];
    for (size_t r = r0; r < r1; r++) {
      rowOffsets(L, nd - 1, r, offs);
      float* s = S + offs[0];
      float* c = C + r * inner;
      if (sIn == 1) {
        if (ADD) { for (int64_t j = 0; j < inner; j++) s[j] += c[j]; } else std::memcpy(c, s, inner * 4);
      } else if (sIn == 0 && !ADD) {
        std::fill(c, c + inner, s[0]);
      } else {
        for (int64_t j = 0; j < inner; j++) mv(s[j * sIn], c[j]);
      }
    }
  };
  if (parallel) parallelFor(rows, std::max<int64_t>(1, kMinElems / inner), run);
  else run(0, rows);
}

void stridedCopy(const float* x, int64_t offset, const std::vector<int64_t>& strides,
  const std::vector<int64_t>& outShape, float* out) {
  stridedMove<false>(const_cast<float*>(x) + offset, strides, outShape, out, true);
}

void stridedAdd(const float* g, const std::vector<int64_t>& outShape, float* gx, int64_t offset,
  const std::vector<int64_t>& strides) {
  // Parallel only when no two elements land on the same target (no broadcast/overlap).
  stridedMove<true>(gx + offset, strides, outShape, const_cast<float*>(g), injective(outShape, strides));
}

void sumMid(const float* x, size_t outer, size_t mid, size_t inner, float* out) {
  const Kernels& K = kernels();
  if (inner == 1) {
    if (outer >= (size_t)poolThreads() * 2 || mid * outer < kMinElems) {
      parallelFor(outer, std::max<size_t>(1, kMinElems / std::max<size_t>(mid, 1)), [&](size_t o0, size_t o1) {
        for (size_t o = o0; o < o1; o++) out[o] = K.sumRow(x + o * mid, mid);
      });
    } else {
      for (size_t o = 0; o < outer; o++) {
        std::mutex mu;
        double s = 0;
        parallelFor(mid, kMinElems, [&](size_t j0, size_t j1) {
          const double p = K.sumRow(x + o * mid + j0, j1 - j0);
          std::lock_guard<std::mutex> lk(mu);
          s += p;
        });
        out[o] = (float)s;
      }
    }
    return;
  }
  if (outer >= (size_t)poolThreads() * 2) {
    parallelFor(outer, std::max<size_t>(1, kMinElems / std::max<size_t>(mid * inner, 1)), [&](size_t o0, size_t o1) {
      for (size_t o = o0; o < o1; o++) K.sumCols(x + o * mid * inner, mid, inner, inner, out + o * inner);
    });
  } else {
    for (size_t o = 0; o < outer; o++)
      parallelFor(inner, std::max<size_t>(16, kMinElems / std::max<size_t>(mid, 1)), [&](size_t c0, size_t c1) {
        K.sumCols(x + o * mid * inner + c0, mid, c1 - c0, inner, out + o * inner + c0);
      });
  }
}

void maxMid(const float* x, size_t outer, size_t mid, size_t inner, float* out) {
  const Kernels& K = kernels();
  if (inner == 1) {
    parallelFor(outer, std::max<size_t>(1, kMinElems / std::max<size_t>(mid, 1)), [&](size_t o0, size_t o1) {
      for (size_t o = o0; o < o1; o++) out[o] = K.maxRow(x + o * mid, mid);
    });
    return;
  }
  parallelFor(outer, std::max<size_t>(1, kMinElems / std::max<size_t>(mid * inner, 1)), [&](size_t o0, size_t o1) {
    for (size_t o = o0; o < o1; o++) K.maxCols(x + o * mid * inner, mid, inner, inner, out + o * inner);
  });
}

}  // namespace peft
