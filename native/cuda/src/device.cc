#include "device.h"

#include <dlfcn.h>

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
  for (const auto& t : tries) {
    cb->lib = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (cb->lib) { cb->path = t; break; }
    const char* e = dlerror();
    errors += "\n  " + t + ": " + (e ? e : "not found");
  }
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
    if (const char* s = std::getenv("PEFT_TS_CUDA_DEVICE")) d->id = std::atoi(s);
    if (d->id < 0 || d->id >= count)
      throw CudaError("PEFT_TS_CUDA_DEVICE=" + std::to_string(d->id) + " but there are " + std::to_string(count) + " device(s)");
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
    cudaStream_t stream = d->stream;
    d->cache = new BlockCache(
      [](size_t bytes) -> void* {
        void* p = nullptr;
        if (cudaMallocManaged(&p, bytes, cudaMemAttachGlobal) != cudaSuccess) {
          cudaGetLastError();  // out of memory is not sticky: clear it, the cache trims and retries
          return nullptr;
        }
        return p;
      },
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

void* Device::allocManaged(size_t bytes, size_t* blockBytes) {
  bool fresh = false;
  void* p = cache->take(bytes, blockBytes, &fresh);
  if (!p) throw CudaError("out of memory: cudaMallocManaged of " + std::to_string(BlockCache::bucket(bytes)) + " bytes failed");
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

}  // namespace pc
