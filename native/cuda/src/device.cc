#include "device.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cublas_api.h>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.h"

namespace pc {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  throw CudaError(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// ---------- cuBLAS through dlopen ----------

struct Cublas {
  void* lib = nullptr;
  std::string path;
  int version = 0;
  cublasHandle_t handle = nullptr;
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*setStream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*getVersion)(cublasHandle_t, int*) = nullptr;
  const char* (*statusString)(cublasStatus_t) = nullptr;
  // cublasGemmStridedBatchedEx (the 32-bit-int overload), spelled out: the header overloads it.
  cublasStatus_t (*gemmStridedBatchedEx)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
    const void*, const void*, cudaDataType, int, long long, const void*, cudaDataType, int, long long, const void*,
    void*, cudaDataType, int, long long, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

namespace {

std::string cublasStatus(const Cublas& cb, cublasStatus_t s) {
  const char* m = cb.statusString ? cb.statusString(s) : nullptr;
  return m ? std::string(m) : "cuBLAS status " + std::to_string((int)s);
}

void checkBlas(const Cublas& cb, cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw CudaError(std::string(what) + ": " + cublasStatus(cb, s));
}

template <typename F>
void sym(Cublas& cb, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(cb.lib, name));
  if (!fn) throw CudaError(std::string("cuBLAS at ") + cb.path + " has no symbol " + name);
}

}  // namespace

void* dlopenFirst(const std::vector<std::string>& tries, std::string& path, std::string& errors) {
  for (const auto& t : tries) {
    if (void* h = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL)) { path = t; return h; }
    const char* e = dlerror();
    errors += "\n  " + t + ": " + (e ? e : "not found");
  }
  return nullptr;
}

namespace {

// PEFT_TS_CUBLAS_PATH, then the loader's own search (LD_LIBRARY_PATH, ld.so.cache), then
// the usual CUDA install places.
Cublas* loadCublas(cudaStream_t stream) {
  std::vector<std::string> tries;
  if (const char* p = std::getenv("PEFT_TS_CUBLAS_PATH")) tries.push_back(p);
  tries.push_back("libcublas.so.13");
  if (const char* h = std::getenv("CUBLAS_HOME")) tries.push_back(std::string(h) + "/lib/libcublas.so.13");
  if (const char* h = std::getenv("CUDA_HOME")) tries.push_back(std::string(h) + "/lib64/libcublas.so.13");
  tries.push_back("/usr/local/cuda/lib64/libcublas.so.13");
  tries.push_back("/usr/local/cuda/targets/x86_64-linux/lib/libcublas.so.13");
  tries.push_back("/usr/lib/x86_64-linux-gnu/libcublas.so.13");
  std::string errors;
  auto* cb = new Cublas();
  cb->lib = dlopenFirst(tries, cb->path, errors);
  if (!cb->lib) {
    delete cb;
    throw CudaError("cuBLAS (libcublas.so.13) could not be loaded; set PEFT_TS_CUBLAS_PATH or LD_LIBRARY_PATH. Tried:" + errors);
  }
  sym(*cb, cb->create, "cublasCreate_v2");
  sym(*cb, cb->setStream, "cublasSetStream_v2");
  sym(*cb, cb->getVersion, "cublasGetVersion_v2");
  sym(*cb, cb->statusString, "cublasGetStatusString");
  sym(*cb, cb->gemmStridedBatchedEx, "cublasGemmStridedBatchedEx");
  checkBlas(*cb, cb->create(&cb->handle), "cublasCreate");
  checkBlas(*cb, cb->setStream(cb->handle, stream), "cublasSetStream");
  checkBlas(*cb, cb->getVersion(cb->handle, &cb->version), "cublasGetVersion");
  return cb;
}

bool envFlag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  const std::string s(v);
  return !(s == "0" || s == "false" || s == "off" || s == "no");
}

Device* gDevice = nullptr;
std::string gReason;
std::once_flag gOnce;

// Never destroyed: finalizers of external buffers may still run at exit.
void init() {
  try {
    auto* d = new Device();
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw CudaError(std::string("no usable CUDA device: cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" +
        cudaGetErrorString(e) + ")");
    }
    if (count == 0) throw CudaError("no CUDA device found");
    // Under an MPI launcher each rank takes the GPU of its local rank (torchrun's LOCAL_RANK ->
    // cuda:LOCAL_RANK), so that NCCL gets one device per rank; PEFT_TS_CUDA_DEVICE overrides.
    std::string how = "PEFT_TS_CUDA_DEVICE";
    if (const char* s = std::getenv("PEFT_TS_CUDA_DEVICE")) {
      d->id = std::atoi(s);
    } else {
      for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
        const char* s = std::getenv(v);
        if (s && *s) { d->id = std::atoi(s); how = std::string("the launcher's local rank (") + v + ")"; break; }
      }
    }
    if (d->id < 0 || d->id >= count)
      throw CudaError(how + " is " + std::to_string(d->id) + " but there are " + std::to_string(count) + " device(s)" +
        (how == "PEFT_TS_CUDA_DEVICE" ? "" : ": start at most one rank per GPU on each machine, or set PEFT_TS_CUDA_DEVICE"));
    check(cudaSetDevice(d->id), "cudaSetDevice");
    check(cudaGetDeviceProperties(&d->prop, d->id), "cudaGetDeviceProperties");
    check(cudaDriverGetVersion(&d->driverVersion), "cudaDriverGetVersion");
    check(cudaRuntimeGetVersion(&d->runtimeVersion), "cudaRuntimeGetVersion");
    if (!d->prop.managedMemory) throw CudaError(std::string(d->prop.name) + " does not support managed memory");
    int cma = 0;
    check(cudaDeviceGetAttribute(&cma, cudaDevAttrConcurrentManagedAccess, d->id), "cudaDeviceGetAttribute");
    d->concurrentManaged = cma != 0;
    check(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    d->tf32 = envFlag("PEFT_TS_CUDA_TF32", true);
    d->prefetch = envFlag("PEFT_TS_CUDA_PREFETCH", true) && d->concurrentManaged;
    d->cublas = loadCublas(d->stream);
    if (const char* r = std::getenv("PEFT_TS_CUDA_RESERVE_MB")) {
      char* end = nullptr;
      const double mb = std::strtod(r, &end);
      if (!(mb >= 0) || end == r || *end) throw CudaError(std::string("PEFT_TS_CUDA_RESERVE_MB must be a number of MiB >= 0, got '") + r + "'");
      d->reserveBytes = (size_t)(mb * 1048576.0);
    }
    cudaStream_t stream = d->stream;
    d->cache = new BlockCache([d](size_t bytes) { return d->growPool(bytes); },
      [stream](void* p) {
        cudaStreamSynchronize(stream);  // queued kernels may still use a cached block
        cudaFree(p);
      });
    gDevice = d;
  } catch (const std::exception& e) {
    gReason = e.what();
  }
}

}  // namespace

Device& device() {
  std::call_once(gOnce, init);
  if (!gDevice) throw CudaError(gReason);
  return *gDevice;
}

std::string unavailableReason() {
  std::call_once(gOnce, init);
  return gDevice ? std::string() : gReason;
}

void Device::synchronize() {
  syncs++;
  pending = false;
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (an earlier kernel failed)");
}

size_t Device::emptyCache() {
  synchronize();
  return cache->trim();
}

void* Device::growPool(size_t bytes) {
  // Asking for more managed memory than the card has free can hang the GPU itself: check first.
  size_t freeB = 0, totalB = 0;
  const cudaError_t e = cudaMemGetInfo(&freeB, &totalB);
  if (e != cudaSuccess) {
    cudaGetLastError();
    lastMemInfoError = std::string("cudaMemGetInfo failed: ") + cudaGetErrorName(e);
    refusedGrowths++;
    return nullptr;  // free memory unknown: refuse rather than risk oversubscribing
  }
  lastMemInfoError.clear();
  lastFree = freeB;
  lastTotal = totalB;
  if (freeB < reserveBytes || bytes > freeB - reserveBytes) {
    refusedGrowths++;
    return nullptr;
  }
  void* p = nullptr;
  if (cudaMallocManaged(&p, bytes, cudaMemAttachGlobal) != cudaSuccess) {
    cudaGetLastError();  // out of memory is not sticky: clear it, the cache trims and retries
    return nullptr;
  }
  return p;
}

namespace {
std::string mib(size_t b) {
  char s[64];
  std::snprintf(s, sizeof s, "%.1f MiB", (double)b / 1048576.0);
  return s;
}
}  // namespace

void* Device::allocManaged(size_t bytes, size_t* blockBytes) {
  const CacheStats before = cache->stats();
  bool fresh = false;
  void* p = cache->take(bytes, blockBytes, &fresh);
  if (!p) {
    const size_t block = BlockCache::bucket(bytes);
    std::string dev = lastMemInfoError.empty()
      ? "the device has " + mib(lastFree) + " free of " + mib(lastTotal) + " (" + std::to_string(lastFree) +
        " bytes), keeping " + mib(reserveBytes) + " in reserve (PEFT_TS_CUDA_RESERVE_MB)"
      : lastMemInfoError;
    throw CudaError("out of memory: requested " + std::to_string(bytes) + " bytes (a " + mib(block) +
      " block); the pool holds " + mib(before.liveBytes) + " in use and " + mib(before.cachedBytes) +
      " cached" + (before.cachedBytes ? " (released, and the request retried)" : "") + "; " + dev +
      ". Nothing was allocated: use a smaller batch or sequence length, or free tensors (dispose())");
  }
  if (fresh && prefetch) {
    cudaMemLocation loc{};
    loc.type = cudaMemLocationTypeDevice;
    loc.id = id;
    // A hint only: failure is not an error for the caller.
    if (cudaMemPrefetchAsync(p, *blockBytes, loc, 0, stream) != cudaSuccess) cudaGetLastError();
    pending = true;
  }
  return p;
}

std::string Device::cublasInfo() const {
  return cublas ? cublas->path + " (version " + std::to_string(cublas->version) + ")" : "";
}

void gemm(Device& d, bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t sA,
  const float* b, int64_t sB, float beta, float* c, int64_t batch) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  d.pending = true;
  if (k == 0) {  // empty product: C = beta * C (cuBLAS wants ld >= 1)
    check(scale(d.stream, beta, c, batch * m * n), "matmul (k = 0) scale kernel launch");
    return;
  }
  const int64_t lim = 0x7fffffff;
  if (m > lim || n > lim || k > lim) throw CudaError("matmul: a dimension exceeds cuBLAS's 32-bit limit");
  // Row-major C[m,n] is column-major C^T[n,m] = op(B)^T[n,k] op(A)^T[k,m]: B goes first.
  const cublasOperation_t opB = tB ? CUBLAS_OP_T : CUBLAS_OP_N, opA = tA ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int ldb = (int)(tB ? k : n), lda = (int)(tA ? m : k), ldc = (int)n;
  const cublasComputeType_t ct = d.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int64_t sC = m * n;
  const int64_t chunk = 65535;  // keep batchCount within every cuBLAS kernel's grid limits
  for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
    const int cnt = (int)(batch - b0 < chunk ? batch - b0 : chunk);
    checkBlas(*d.cublas,
      d.cublas->gemmStridedBatchedEx(d.cublas->handle, opB, opA, (int)n, (int)m, (int)k, &alpha, b + b0 * sB, CUDA_R_32F,
        ldb, sB, a + b0 * sA, CUDA_R_32F, lda, sA, &beta, c + b0 * sC, CUDA_R_32F, ldc, sC, cnt, ct, CUBLAS_GEMM_DEFAULT),
      "cublasGemmStridedBatchedEx");
  }
  d.gemms++;
}

namespace {

// One column-major cuBLAS GEMM (batch 1) with explicit leading dimensions and types.
void gemmOne(Device& d, cublasOperation_t opA, cublasOperation_t opB, int m, int n, int k, float alpha, const void* A,
  cudaDataType ta, int lda, const void* B, cudaDataType tb, int ldb, float beta, float* C, int ldc, cublasComputeType_t ct) {
  checkBlas(*d.cublas,
    d.cublas->gemmStridedBatchedEx(d.cublas->handle, opA, opB, m, n, k, &alpha, A, ta, lda, 0, B, tb, ldb, 0, &beta, C,
      CUDA_R_32F, ldc, 0, 1, ct, CUBLAS_GEMM_DEFAULT),
    "cublasGemmStridedBatchedEx (bf16 weight)");
}

// Scratch from the block cache, given back when the call ends (stream order makes reuse safe).
struct Scratch {
  Device& d;
  void* p;
  size_t blockBytes = 0;
  Scratch(Device& dev, size_t bytes) : d(dev), p(dev.allocManaged(bytes, &blockBytes)) {}
  ~Scratch() { d.cache->give(p); }
};

}  // namespace

void gemmBf16(Device& d, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const uint16_t* w,
  float beta, float* c) {
  if (m <= 0 || n <= 0) return;
  d.pending = true;
  if (k == 0) {
    check(scale(d.stream, beta, c, m * n), "matmulBf16 (k = 0) scale kernel launch");
    return;
  }
  const int64_t lim = 0x7fffffff;
  if (m > lim || n > lim || k > lim) throw CudaError("matmulBf16: a dimension exceeds cuBLAS's 32-bit limit");
  // Row-major C[m,n] is column-major C^T[n,m] = op(W)^T[n,k] a^T[k,m]: W goes first.
  const cublasOperation_t opW = tB ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (d.tf32) {
    Scratch ab(d, (size_t)(m * k) * 2);
    uint16_t* a16 = static_cast<uint16_t*>(ab.p);
    check(f32ToBf16(d.stream, a, a16, m * k), "matmulBf16 activation rounding kernel launch");
    d.launches++;
    gemmOne(d, opW, CUBLAS_OP_N, (int)n, (int)m, (int)k, alpha, w, CUDA_R_16BF, (int)(tB ? k : n), a16, CUDA_R_16BF,
      (int)k, beta, c, (int)n, CUBLAS_COMPUTE_32F);
    d.gemms++;
    return;
  }
  // Exact mode: widen tiles of W's rows (contiguous) into float32 scratch. transB: rows of W
  // [n,k] are output columns, written in place with ldc = n. Else rows of W [k,n] are a slice
  // of the inner dim: C += a[:, p0:p1] W[p0:p1, :] (a's columns by lda = k).
  const int64_t rowLen = tB ? k : n, rowsW = tB ? n : k;
  const int64_t tile = int64_t(1) << 24;  // elements of W widened at once (64 MiB)
  const int64_t R = std::max<int64_t>(1, std::min<int64_t>(rowsW, tile / rowLen));
  Scratch wb(d, (size_t)(R * rowLen) * 4);
  float* wf = static_cast<float*>(wb.p);
  for (int64_t r0 = 0; r0 < rowsW; r0 += R) {
    const int64_t rows = std::min(R, rowsW - r0);
    check(bf16ToF32(d.stream, w + r0 * rowLen, wf, rows * rowLen), "matmulBf16 weight widening kernel launch");
    d.launches++;
    if (tB) {
      gemmOne(d, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)m, (int)k, alpha, wf, CUDA_R_32F, (int)k, a, CUDA_R_32F, (int)k,
        beta, c + r0, (int)n, CUBLAS_COMPUTE_32F);
    } else {
      gemmOne(d, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)rows, alpha, wf, CUDA_R_32F, (int)n, a + r0, CUDA_R_32F, (int)k,
        r0 == 0 ? beta : 1.0f, c, (int)n, CUBLAS_COMPUTE_32F);
    }
    d.gemms++;
  }
}

}  // namespace pc
