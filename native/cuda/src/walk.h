// Strided index walks for broadcasting binary ops and strided copies / scatters, built on
// the host. Size-1 dims are dropped and a dim is merged into its inner neighbour when it
// is contiguous with it for every operand, so common cases reach the kernel as 1-2 dims.
#pragma once
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define PC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PC_HOST_DEVICE inline
#endif

namespace pc {

constexpr int kMaxDims = 8;

// Element i of the walk (row-major over shape) reads a[sum idx_d * a_d] and b[sum idx_d * b_d].
struct Walk {
  int nd;
  int64_t shape[kMaxDims];
  int64_t a[kMaxDims];
  int64_t b[kMaxDims];
};

/** Offsets into a and b of element i of a walk. Idx: uint32_t when the walk is < 2^31 long. */
template <typename Idx>
PC_HOST_DEVICE void walkOffsets(Idx i, const Walk& w, int64_t& oa, int64_t& ob) {
  oa = 0; ob = 0;
  for (int d = w.nd - 1; d >= 0; d--) {
    const Idx n = (Idx)w.shape[d];
    const Idx c = i % n;
    i /= n;
    oa += (int64_t)c * w.a[d];
    ob += (int64_t)c * w.b[d];
  }
}

/** Builds w from shape and strides (sb may be null: b strides 0). False if > kMaxDims dims remain. */
inline bool makeWalk(const std::vector<int64_t>& shape, const std::vector<int64_t>& sa, const std::vector<int64_t>* sb,
  Walk& w) {
  struct Dim { int64_t n, a, b; };
  std::vector<Dim> kept;  // innermost first
  for (size_t k = shape.size(); k-- > 0;) {
    const Dim d{shape[k], sa[k], sb ? (*sb)[k] : 0};
    if (d.n == 1) continue;
    if (!kept.empty()) {
      Dim& in = kept.back();
      if (d.a == in.a * in.n && d.b == in.b * in.n) { in.n *= d.n; continue; }
    }
    kept.push_back(d);
  }
  if (kept.empty()) kept.push_back(Dim{1, 0, 0});
  if (kept.size() > (size_t)kMaxDims) return false;
  w.nd = (int)kept.size();
  for (int d = 0; d < w.nd; d++) {
    const Dim& k = kept[kept.size() - 1 - d];
    w.shape[d] = k.n; w.a[d] = k.a; w.b[d] = k.b;
  }
  for (int d = w.nd; d < kMaxDims; d++) { w.shape[d] = 1; w.a[d] = 0; w.b[d] = 0; }
  return true;
}

/** Smallest and largest offset a view of shape / strides reaches; hi < lo when it is empty. */
inline void viewExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t& lo, int64_t& hi) {
  lo = 0; hi = 0;
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 0) { lo = 0; hi = -1; return; }
    const int64_t span = (shape[d] - 1) * strides[d];
    if (span > 0) hi += span; else lo += span;
  }
}

}  // namespace pc
