// A small persistent thread pool. parallelFor splits [0, n) into one contiguous range per
// thread; the calling thread takes the first range. Workers sleep on a condition variable
// between jobs, so they never compete with OpenBLAS's threads while a GEMM runs.
#pragma once
#include <cstddef>
#include <functional>

namespace peft {

void poolInit(int threads);
int poolThreads();
/** Runs fn(begin, end) over [0, n) split across threads when n >= minPerThread * 2. */
void parallelFor(size_t n, size_t minPerThread, const std::function<void(size_t, size_t)>& fn);

}  // namespace peft
