// A small CPU emulation of the CUDA pieces attention.cu and attention_test.cu use, so the
// kernels' index math, barriers and shuffles can be checked on a machine without a GPU
// (g++ -DATTN_EMULATE). Not a simulator of the hardware: blocks run one after another;
// the threads of a block are ucontext fibers switched only at __syncthreads and
// __shfl_xor_sync, in an order chosen by EMU_ORDER (forward, reverse or random, reshuffled
// every round) so that a missing barrier shows up as a result that depends on the order.
// A barrier that not every thread reaches is reported as a deadlock and aborts.
// Memory "on the device" is host memory. Only what this folder needs is provided.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)

struct alignas(16) float4 { float x, y, z, w; };

typedef int cudaError_t;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
typedef struct emuStream* cudaStream_t;
typedef struct emuEvent* cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

namespace emu {

struct Idx { unsigned x, y, z; };
inline Idx gThreadIdx{0, 0, 0}, gBlockIdx{0, 0, 0}, gBlockDim{1, 1, 1}, gGridDim{1, 1, 1};

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};

inline ucontext_t gSched;
inline std::vector<Fiber> gFibers;
inline int gCur = 0;
inline int gThreads = 0;
inline const std::function<void()>* gBody = nullptr;
inline std::vector<float> gSmem;
inline int64_t gBarrierGen = 0;
inline int gBarrierCount = 0;
inline std::vector<int64_t> gWarpGen;
inline std::vector<int> gWarpCount;
inline std::vector<float> gShfl;
inline int64_t gProgress = 0;  // arrivals and completions: no change in a round = deadlock
inline std::mt19937 gRng(12345);

inline int order() {  // 0 forward, 1 reverse, 2 random
  static int o = [] {
    const char* e = std::getenv("EMU_ORDER");
    if (e && std::strcmp(e, "reverse") == 0) return 1;
    if (e && std::strcmp(e, "random") == 0) return 2;
    return 0;
  }();
  return o;
}

inline float* dynamicShared() { return gSmem.data(); }

inline void checkAligned16(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
    std::fprintf(stderr, "emu: misaligned 16-byte load at %p\n", p);
    std::abort();
  }
}

inline void yield() { swapcontext(&gFibers[gCur].ctx, &gSched); }

inline void syncthreads() {
  const int64_t gen = gBarrierGen;
  ++gProgress;
  if (++gBarrierCount == gThreads) {
    gBarrierCount = 0;
    ++gBarrierGen;
  } else {
    while (gBarrierGen == gen) yield();
  }
}

/** __syncthreads_or: a barrier that also returns whether any thread passed a nonzero pred. */
inline int gVoteAcc = 0, gVoteResult = 0;
inline int syncthreadsOr(int pred) {
  const int64_t gen = gBarrierGen;
  ++gProgress;
  gVoteAcc |= pred != 0;
  if (++gBarrierCount == gThreads) {
    gVoteResult = gVoteAcc;  // stable until every waiter has read it: the next barrier needs them all
    gVoteAcc = 0;
    gBarrierCount = 0;
    ++gBarrierGen;
  } else {
    while (gBarrierGen == gen) yield();
  }
  return gVoteResult;
}

inline void warpBarrier() {
  const int w = (int)gThreadIdx.x >> 5;
  const int size = std::min(32, gThreads - w * 32);
  const int64_t gen = gWarpGen[w];
  ++gProgress;
  if (++gWarpCount[w] == size) {
    gWarpCount[w] = 0;
    ++gWarpGen[w];
  } else {
    while (gWarpGen[w] == gen) yield();
  }
}

inline float shflXor(unsigned mask, float v, int off) {
  if (mask != 0xffffffffu) { std::fprintf(stderr, "emu: only full-warp shuffles are emulated\n"); std::abort(); }
  const int tid = (int)gThreadIdx.x, base = tid & ~31, lane = tid & 31;
  gShfl[tid] = v;
  warpBarrier();
  const float r = gShfl[base + (lane ^ off)];
  warpBarrier();  // nobody overwrites its slot before every lane has read
  return r;
}

inline void fiberEntry() {
  (*gBody)();
  gFibers[gCur].done = true;
  ++gProgress;
}  // returns to gSched through uc_link

/** A fresh context running fiberEntry (kept out of launch: getcontext returns twice). */
[[gnu::noinline]] inline void initFiber(Fiber& f) {
  constexpr size_t kStack = 256 * 1024;
  if (f.stack.empty()) f.stack.resize(kStack);
  f.done = false;
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.data();
  f.ctx.uc_stack.ss_size = f.stack.size();
  f.ctx.uc_link = &gSched;
  makecontext(&f.ctx, fiberEntry, 0);
}

/** Switches to fiber t until it yields or ends (kept out of launch: swapcontext returns twice). */
[[gnu::noinline]] inline void resume(int t) {
  gCur = t;
  gThreadIdx = {(unsigned)t, 0, 0};
  swapcontext(&gSched, &gFibers[t].ctx);
}

/** Runs body as `blocks` blocks of `threads` threads with `smemBytes` of dynamic shared memory. */
inline void launch(unsigned blocks, unsigned threads, size_t smemBytes, const std::function<void()>& body) {
  gThreads = (int)threads;
  gBody = &body;
  gBlockDim = {threads, 1, 1};
  gGridDim = {blocks, 1, 1};
  if (gFibers.size() < threads) gFibers.resize(threads);
  gWarpGen.assign((threads + 31) / 32, 0);
  gWarpCount.assign((threads + 31) / 32, 0);
  gShfl.assign(threads, 0.0f);
  std::vector<int> ord(threads);
  for (unsigned bi = 0; bi < blocks; bi++) {
    gBlockIdx = {bi, 0, 0};
    // Fresh shared memory full of NaN: reading a slot nobody wrote poisons the result.
    gSmem.assign(smemBytes / sizeof(float) + 1, std::nanf(""));
    checkAligned16(gSmem.data());  // as the GPU's dynamic shared memory
    gBarrierGen = 0;
    gBarrierCount = 0;
    gVoteAcc = 0;
    for (unsigned t = 0; t < threads; t++) {
      initFiber(gFibers[t]);
      ord[t] = (int)t;
    }
    for (;;) {
      if (order() == 1) std::reverse(ord.begin(), ord.end());  // alternate direction each round
      if (order() == 2) std::shuffle(ord.begin(), ord.end(), gRng);
      const int64_t before = gProgress;
      bool live = false;
      for (int t : ord) {
        if (gFibers[t].done) continue;
        live = true;
        resume(t);
      }
      if (!live) break;
      if (gProgress == before) {
        std::fprintf(stderr, "emu: deadlock in block %u (a barrier or shuffle not reached by every thread)\n", bi);
        std::abort();
      }
    }
    if (gBarrierCount != 0) {
      std::fprintf(stderr, "emu: block %u ended with threads waiting at __syncthreads\n", bi);
      std::abort();
    }
  }
}

}  // namespace emu

#define threadIdx (emu::gThreadIdx)
#define blockIdx (emu::gBlockIdx)
#define blockDim (emu::gBlockDim)
#define gridDim (emu::gGridDim)
#define __syncthreads() emu::syncthreads()
#define __syncthreads_or(pred) emu::syncthreadsOr(pred)
#define __shfl_xor_sync(mask, v, off) emu::shflXor((mask), (v), (off))

struct emuEvent { std::chrono::steady_clock::time_point t; };

inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == 0 ? "no error" : "emulated error"; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new emuEvent(); return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) { e->t = std::chrono::steady_clock::now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
