// A CPU emulation of the few CUDA built-ins our kernels use, so that native/cuda/src/*.cu
// (rewritten by emu/build.sh: each `k<<<grid, block, shmem, stream>>>(args)` becomes
// `emu::launch(...)`) can run on a machine without a GPU and be tested by the same JS
// tests as the real addon. Every CUDA thread of a block is a fiber (ucontext) on the
// calling thread; __syncthreads and warp shuffles are barriers of a small scheduler that
// reports divergent barriers (a deadlock on a GPU) as launch errors. Blocks run one after
// another, so `__shared__` is a function-local static. Memory semantics are those of a
// single thread: races that a GPU would expose are not found here.
#pragma once
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <functional>

// The CUDA headers define these as attributes for the host compiler: plain C++ here.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define CUDART_INF_F INFINITY

namespace emu {

struct Idx3 { unsigned x, y, z; };
struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  Dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
  Dim3(dim3 d) : x(d.x), y(d.y), z(d.z) {}
};

extern Idx3 gBlockIdx, gBlockDim, gGridDim;
const Idx3& threadIdxNow();

/** Runs body as a kernel of grid x block threads; sets the last error on a bad configuration. */
void launch(Dim3 grid, Dim3 block, const std::function<void()>& body);
void syncthreads();
float shflXor(float v, int laneMask);
/** Records a launch error (as cudaGetLastError will report it). */
void setLastError(cudaError_t e);

}  // namespace emu

#define threadIdx (::emu::threadIdxNow())
#define blockIdx (::emu::gBlockIdx)
#define blockDim (::emu::gBlockDim)
#define gridDim (::emu::gGridDim)

inline void __syncthreads() { emu::syncthreads(); }
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int laneMask) { return emu::shflXor(v, laneMask); }
// Single float32 operations (g++ -std=c++17 does not contract a * b + c into an FMA).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
