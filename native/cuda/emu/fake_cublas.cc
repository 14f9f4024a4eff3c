// A stand-in libcublas.so.13 for the emulator: the five entry points the addon opens with
// dlopen, with cuBLAS's column-major semantics and its argument checks (leading dimensions,
// sizes), so the addon's row-major operand swap is tested for real. Plain loops, float64
// accumulation. A and B are float32 or (both) bf16, the latter only with CUBLAS_COMPUTE_32F
// as real cuBLAS requires; C is float32.
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {
enum { kSuccess = 0, kInvalidValue = 7, kNotSupported = 15 };
enum { kOpN = 0, kOpT = 1 };
constexpr int kR32F = 0;    // CUDA_R_32F
constexpr int kR16BF = 14;  // CUDA_R_16BF
constexpr int kCompute32F = 68, kCompute32FFastTf32 = 77;

float widen(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element i of a matrix of type t.
float at(const void* p, int t, int64_t i) {
  return t == kR32F ? static_cast<const float*>(p)[i] : widen(static_cast<const uint16_t*>(p)[i]);
}
int handleStorage;
}  // namespace

extern "C" {

int cublasCreate_v2(void** handle) { *handle = &handleStorage; return kSuccess; }
int cublasSetStream_v2(void*, void*) { return kSuccess; }
int cublasGetVersion_v2(void*, int* v) { *v = 130100; return kSuccess; }
const char* cublasGetStatusString(int s) {
  return s == kSuccess ? "CUBLAS_STATUS_SUCCESS" : s == kInvalidValue ? "CUBLAS_STATUS_INVALID_VALUE" : "CUBLAS_STATUS_NOT_SUPPORTED";
}

int cublasGemmStridedBatchedEx(void*, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
  int Atype, int lda, long long strideA, const void* B, int Btype, int ldb, long long strideB, const void* beta, void* C,
  int Ctype, int ldc, long long strideC, int batchCount, int computeType, int /*algo*/) {
  if (Ctype != kR32F || Atype != Btype || (Atype != kR32F && Atype != kR16BF)) return kNotSupported;
  if (computeType != kCompute32F && !(Atype == kR32F && computeType == kCompute32FFastTf32)) return kNotSupported;
  if ((transa != kOpN && transa != kOpT) || (transb != kOpN && transb != kOpT)) return kInvalidValue;
  if (m < 0 || n < 0 || k < 0 || batchCount < 0) return kInvalidValue;
  const int rowsA = transa == kOpN ? m : k, rowsB = transb == kOpN ? k : n;
  if (lda < (rowsA > 1 ? rowsA : 1) || ldb < (rowsB > 1 ? rowsB : 1) || ldc < (m > 1 ? m : 1)) return kInvalidValue;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  for (int b = 0; b < batchCount; b++) {
    const int64_t oa = b * strideA, ob = b * strideB;
    float* c = static_cast<float*>(C) + b * strideC;
    for (int j = 0; j < n; j++) {
      for (int i = 0; i < m; i++) {
        double s = 0;
        for (int p = 0; p < k; p++) {
          const float av = at(A, Atype, oa + (transa == kOpN ? i + (int64_t)p * lda : p + (int64_t)i * lda));
          const float bv = at(B, Btype, ob + (transb == kOpN ? p + (int64_t)j * ldb : j + (int64_t)p * ldb));
          s += (double)av * bv;
        }
        float& cv = c[i + (int64_t)j * ldc];
        cv = (float)(al * s + (be == 0.0f ? 0.0 : (double)be * cv));
      }
    }
  }
  return kSuccess;
}

}  // extern "C"
