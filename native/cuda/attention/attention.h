// Memory-efficient (flash-style) fused attention for the CUDA backend: the optional
// Backend.attention / attentionBackward of src/backends/backend.ts, whose oracle is
// src/backends/reference/attention.ts. fp32 in and out, fp32 accumulation; never holds
// the [T, S] score matrix (O(T*D) memory). See README.md in this folder for the design.
#pragma once
#include <cstdint>
#ifdef ATTN_EMULATE
#include "emu/cuda_emu.h"  // CPU emulation of the few CUDA runtime pieces used here
#else
#include <cuda_runtime_api.h>
#endif

namespace pc {

/** Sizes and options of one call, as AttentionShape in src/backends/backend.ts. */
struct AttnShape {
  int B, H, Hk, T, S, D;  // q/out/gq [B,H,T,D], k/v/gk/gv [B,Hk,S,D], lse [B,H,T]; H % Hk == 0; D <= 128
  double scale;            // multiplies q.k (used as float)
  int64_t biasStrides[4];  // bias[b*s0 + h*s1 + t*s2 + j*s3] (0 where broadcast); unused when bias is null
  double dropoutP;         // 0 = none; else in (0, 1): keep iff dropoutHash(seed, ((b*H+h)*T+t)*S+j) >= floor(p*2^32)
  uint32_t seed;           // AttentionShape.seed >>> 0
};

/**
 * out[B,H,T,D] = dropout(softmax(scale * q k^T + bias)) v per row, lse[B,H,T] = log-sum-exp
 * of each row's scores (before dropout). A fully masked row (every score -inf) gives zeros
 * and lse = -inf. bias may be null. Enqueued on `st`, never synchronizes; returns launch
 * errors (cudaErrorInvalidValue for D > 128, H % Hk != 0 or dropoutP outside [0, 1)).
 * Empty work (any size 0) launches nothing; S == 0 writes zeros and lse = -inf.
 */
cudaError_t cudaAttentionForward(const float* q, const float* k, const float* v, const float* bias,
  const AttnShape& s, float* out, float* lse, cudaStream_t st);

/**
 * Gradients of cudaAttentionForward: gq [B,H,T,D], gk and gv [B,Hk,S,D], all overwritten
 * (gk/gv summed over the H/Hk query heads sharing a kv head). out and lse are the forward's.
 * Deterministic (no atomics): one kernel computes dK/dV per key block looping over the
 * query heads and rows, another computes dQ per query block; probabilities are recomputed
 * from lse. gq doubles as scratch for rowsum(gOut*out) until the dQ kernel overwrites it.
 */
cudaError_t cudaAttentionBackward(const float* q, const float* k, const float* v, const float* bias,
  const AttnShape& s, const float* out, const float* lse, const float* gOut,
  float* gq, float* gk, float* gv, cudaStream_t st);

}  // namespace pc
