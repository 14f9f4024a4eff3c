// Shape-driven kernels: broadcasting binary ops, strided copies/permutes and reductions
// over a middle axis. Dims are collapsed first so the innermost loop is long and
// contiguous; work is split across the pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace peft {

void binaryBroadcast(int op, const float* a, const std::vector<int64_t>& aStrides, const float* b,
  const std::vector<int64_t>& bStrides, float* out, const std::vector<int64_t>& outShape);
/** out (outShape, contiguous) = x[offset + sum idx*strides]; elemSize 4 (float/int32). */
void stridedCopy(const float* x, int64_t offset, const std::vector<int64_t>& strides,
  const std::vector<int64_t>& outShape, float* out);
void stridedAdd(const float* g, const std::vector<int64_t>& outShape, float* gx, int64_t offset,
  const std::vector<int64_t>& strides);
void sumMid(const float* x, size_t outer, size_t mid, size_t inner, float* out);
void maxMid(const float* x, size_t outer, size_t mid, size_t inner, float* out);
/** Largest and smallest offset reached by strides over shape (for bounds checks). */
void stridedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t& lo, int64_t& hi);

}  // namespace peft
