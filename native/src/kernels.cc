// Compiles kernels_impl.h for the AVX2+FMA baseline and, with a target pragma, for AVX-512;
// kernels() picks the best one the CPU supports (checked at runtime, never assumed).
#include "kernels.h"

#include <cstdlib>
#include <cstring>

namespace peft {

namespace k_avx2 {
#define KERNEL_NAME "avx2"
#include "kernels_impl.h"
#undef KERNEL_NAME
}  // namespace k_avx2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")
namespace k_avx512 {
#define KERNEL_NAME "avx512"
#include "kernels_impl.h"
#undef KERNEL_NAME
}  // namespace k_avx512
#pragma GCC pop_options

static const Kernels* pick() {
  const char* force = std::getenv("PEFT_TS_SIMD");
  __builtin_cpu_init();
  const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (has512 && !(force && std::strcmp(force, "avx2") == 0)) return &k_avx512::table;
  return &k_avx2::table;
}

const Kernels& kernels() {
  static const Kernels* k = pick();
  return *k;
}

const char* simdLevel() { return kernels().name; }

}  // namespace peft
