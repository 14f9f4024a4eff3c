// NF4 dequantization for Linear4bit's weight tiles (see dequantizeNF4 in
// src/backends/backend.ts for the exact contract).
#pragma once
#include <cstddef>
#include <cstdint>

namespace peft {

/**
 * out[i] = code[nibble(start + i)] * absmax[(start + i) / blocksize - start / blocksize] for
 * i in [0, count), one float32 product each (bit-exact with the TypeScript reference).
 * Even elements sit in the high nibble. Threaded over the pool; AVX-512 or AVX2 lookups.
 */
void dequantizeNF4(const uint8_t* packed, const float* absmax, size_t blocksize, const float* code,
  size_t start, size_t count, float* out);

}  // namespace peft
