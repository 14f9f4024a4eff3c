// The CUDA context of the addon: one device, one non-blocking stream every kernel and copy
// goes to, the managed-memory block cache, and cuBLAS loaded at run time with dlopen (so
// the addon loads, and says why CUDA is unusable, on machines without a GPU or cuBLAS).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "alloc.h"

namespace pc {

/** A failed CUDA / cuBLAS call; the message names the call. */
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/** Throws CudaError("<what>: <error name> (<description>)") unless e == cudaSuccess. */
void check(cudaError_t e, const char* what);

struct Cublas;

struct Device {
  int id = 0;
  cudaStream_t stream = nullptr;
  cudaDeviceProp prop{};
  int driverVersion = 0, runtimeVersion = 0;
  bool concurrentManaged = false;
  bool tf32 = true;      // PEFT_TS_CUDA_TF32 (default 1): FP32 GEMMs may use TF32 tensor cores
  bool prefetch = true;  // PEFT_TS_CUDA_PREFETCH (default 1): new managed blocks are prefetched to the GPU
  bool pending = false;  // work enqueued since the last synchronize
  // Never oversubscribe: the pool grows only while cudaMemGetInfo's free bytes minus this
  // reserve (cuBLAS workspaces, the context, other processes) cover the new block.
  // PEFT_TS_CUDA_RESERVE_MB, default 512.
  size_t reserveBytes = (size_t)512 << 20;
  size_t lastFree = 0, lastTotal = 0;  // cudaMemGetInfo at the last growth attempt
  std::string lastMemInfoError;        // non-empty when cudaMemGetInfo itself failed
  uint64_t refusedGrowths = 0;         // growths refused because the device lacked the memory
  Cublas* cublas = nullptr;
  BlockCache* cache = nullptr;
  // Arrays not from alloc() are staged through temporary device blocks: counted here.
  uint64_t stagedArrays = 0, stagedBytesIn = 0, stagedBytesOut = 0;
  uint64_t gemms = 0, launches = 0, syncs = 0;

  /** Waits for all enqueued work (cudaStreamSynchronize); throws on any kernel error. */
  void synchronize();
  /** Synchronizes, then frees every cached block. Returns the bytes freed. */
  size_t emptyCache();
  /**
   * A managed block for n bytes (prefetched to the GPU when new). The pool grows only when
   * the device has the block's bytes free beyond reserveBytes; otherwise cached blocks are
   * freed and the check retried once, then CudaError("out of memory: ...") names the
   * request, the pool (in use / cached) and the device's free memory. Nothing is allocated then.
   */
  void* allocManaged(size_t bytes, size_t* blockBytes);
  /** The raw allocator under the cache: nullptr when the block does not fit (see allocManaged). */
  void* growPool(size_t bytes);
  std::string cublasInfo() const;
};

/**
 * dlopen (RTLD_NOW | RTLD_LOCAL) of the first of `tries` that loads; `path` is set to it.
 * Null when none does, with `errors` listing each try and dlerror's reason (cuBLAS, NCCL).
 */
void* dlopenFirst(const std::vector<std::string>& tries, std::string& path, std::string& errors);

/** The context, created on first use. Throws CudaError with the reason when unusable. */
Device& device();
/** "" when device() works, else the reason it does not (never throws). */
std::string unavailableReason();

/**
 * Row-major batched GEMM (the backend contract's matmul), by operand swap on cuBLAS's
 * column-major GEMM: C^T = op(B)^T op(A)^T. Strides in elements; batches of any size.
 */
void gemm(Device& d, bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
  int64_t strideA, const float* b, int64_t strideB, float beta, float* c, int64_t batch);

/**
 * Row-major GEMM with a bfloat16 right operand W (Backend.matmulBf16): c[m,n] = alpha * a[m,k]
 * @ op(W) + beta * c, transB: W stored [n,k], else [k,n]. With d.tf32 (the default, "fast"
 * GEMMs) a is rounded to bf16 into device scratch and cuBLAS multiplies bf16 x bf16 on tensor
 * cores with float32 accumulation and output (CUBLAS_COMPUTE_32F), as a bf16 model in torch
 * does. Without it (PEFT_TS_CUDA_TF32=0, the exact mode the tests compare with the reference)
 * tiles of W are widened exactly to float32 scratch and multiplied with full float32 GEMMs.
 */
void gemmBf16(Device& d, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const uint16_t* w,
  float beta, float* c);

}  // namespace pc
