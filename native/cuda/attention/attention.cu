// Flash-style fused attention, forward and backward, fp32 with fp32 accumulation (FMA, no
// tensor cores). Semantics are those of src/backends/reference/attention.ts (the oracle).
//
// Every kernel uses 256 threads as a 16 x 16 grid: thread (ty, tx) = threadIdx.x / 16, % 16.
// A block owns 64 "rows" (query rows in the forward and dQ kernels, keys in the dK/dV
// kernel); thread ty owns rows ty*4 .. ty*4+3, and within a row the 16 threads tx split the
// columns: column tx + 16*n of a score tile, and dims 4*tx .. 4*tx+3 of each 64-dim block
// of an output row (dimOf). The 16 threads sharing a row are one half warp, so row
// reductions are 4 xor-shuffles.
//
// Head dimensions are padded to DP = 64 or 128 in shared memory (zeros beyond D), so a
// D of 40 runs the DP = 64 kernels; only c < D is ever written back.
//
// Shared-memory reads are float4 (every row stride is a multiple of 4 floats). Strides are
// padded by 4 floats: a tile read one row per lane (rows tx + 16n) then puts 8 consecutive
// lanes on 8 disjoint 4-bank groups, and a tile read broadcast per half warp (rows ty*4+i)
// puts the two half warps of a warp 16 banks apart, so neither pattern has bank conflicts.
//
// Compiles with nvcc (the real thing) and, with -DATTN_EMULATE, with g++ against
// emu/cuda_emu.h, a CPU emulation of blocks, barriers and shuffles used to check the
// index math without a GPU (see emu/ and README.md).
#include "attention.h"

#include <climits>
#include <cmath>
#include <cstdint>

#ifdef ATTN_EMULATE
#define ATTN_UNROLL
#define ATTN_DYN_SMEM(name) float* name = emu::dynamicShared()
#define ATTN_LAUNCH(kern, blocks, threads, bytes, st, ...) \
  ((void)(st), emu::launch((blocks), (threads), (bytes), [&] { kern(__VA_ARGS__); }))
#else
#include <cuda_runtime.h>
#define ATTN_UNROLL _Pragma("unroll")
#define ATTN_DYN_SMEM(name) extern __shared__ __align__(16) float name[]
#define ATTN_LAUNCH(kern, blocks, threads, bytes, st, ...) kern<<<(blocks), (threads), (bytes), (st)>>>(__VA_ARGS__)
#endif

namespace pc {
namespace {

constexpr int kThreads = 256;  // 16 x 16
constexpr int kRows = 64;      // rows per block: 16 ty x 4
constexpr int kRowsPerThread = 4;

/** Shape as the kernels read it (by value, in the parameter space). */
struct Params {
  int B, H, Hk, T, S, D;
  int group;       // H / Hk: query heads per kv head
  int nTiles;      // blocks per (batch, head) along the block's own axis
  float scale;
  int64_t bs0, bs1, bs2, bs3;
  int dropout;     // 0 or 1
  uint32_t thr;    // floor(p * 2^32): drop iff hash < thr
  float keepScale; // float(1 / (1 - p))
  uint32_t seed;
};

// dropoutHash of src/backends/reference/math.ts: two rounds of murmur3's finalizer over
// seed ^ (i + 1) * 0x9e3779b9, all in uint32 arithmetic (Math.imul and >>> 0 in the TS).
__device__ __forceinline__ uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}
__device__ __forceinline__ uint32_t dropoutHash(uint32_t seed, uint64_t i) {
  uint32_t z = seed ^ ((uint32_t)(i + 1) * 0x9e3779b9u);
  z = fmix32(z);
  return fmix32(z + seed);
}

/** Dropout multiplier of element (bh, t, j) of the [B*H, T, S] probabilities: 0 or 1/(1-p). */
__device__ __forceinline__ float keepMul(const Params& p, int64_t bh, int t, int j) {
  const uint64_t idx = ((uint64_t)bh * (uint64_t)p.T + (uint64_t)t) * (uint64_t)p.S + (uint64_t)j;
  return dropoutHash(p.seed, idx) >= p.thr ? p.keepScale : 0.0f;
}

/** scale * dot + bias[b, h, t, j], the oracle's score (bias may be null). */
__device__ __forceinline__ float score(float dot, const float* bias, const Params& p, int b, int h, int t, int j) {
  float x = dot * p.scale;
  if (bias != nullptr) x += bias[(int64_t)b * p.bs0 + (int64_t)h * p.bs1 + (int64_t)t * p.bs2 + (int64_t)j * p.bs3];
  return x;
}

// Reductions over the 16 threads of a row (a half warp; xor offsets < 16 stay inside it).
// Every thread of the warp must call them.
__device__ __forceinline__ float rowMax16(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float rowSum16(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/**
 * Whether the tile of query rows [t0, t0 + R) x keys [j0, j0 + C) of head (b, h) has a live
 * score: a bias other than -inf at some t < T, j < S (always true without a bias). A tile
 * with none contributes exactly nothing (every probability is exp(-inf) = 0), so the
 * kernels skip it: causal and padding masks come in through the bias, and this halves the
 * work of a causal mask. Block-uniform (a barrier: every thread must call it).
 */
template <int R, int C>
__device__ __forceinline__ bool tileLive(const float* bias, const Params& p, int b, int h, int t0, int j0) {
  if (bias == nullptr) return true;
  int live = 0;
  for (int i = threadIdx.x; i < R * C && !live; i += kThreads) {
    const int t = t0 + i / C, j = j0 + i % C;  // consecutive threads read consecutive keys
    if (t < p.T && j < p.S && score(0.0f, bias, p, b, h, t, j) != -INFINITY) live = 1;
  }
  return __syncthreads_or(live) != 0;
}

/**
 * dst[r * ld + c] = src[(r0 + r) * D + c] for r < R, c < DP, zero where r0 + r >= nRows or
 * c >= D. src is one head's [nRows, D] matrix.
 */
template <int R, int DP>
__device__ __forceinline__ void loadTile(float* dst, int ld, const float* src, int r0, int nRows, int D) {
  for (int i = threadIdx.x; i < R * DP; i += kThreads) {
    const int r = i / DP, c = i % DP;
    float x = 0.0f;
    if (r0 + r < nRows && c < D) x = src[(int64_t)(r0 + r) * D + c];
    dst[r * ld + c] = x;
  }
}

/** 4 consecutive floats of shared memory (p 16-byte aligned: every stride and offset is a multiple of 4). */
__device__ __forceinline__ float4 ld4(const float* p) {
#ifdef ATTN_EMULATE
  emu::checkAligned16(p);  // a misaligned float4 load faults on the GPU
#endif
  return *reinterpret_cast<const float4*>(p);
}
/** Component e (a compile-time constant after unrolling) of v. */
__device__ __forceinline__ float comp(const float4& v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }
/** acc + a . b */
__device__ __forceinline__ float dot4(const float4& a, const float4& b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}
/**
 * Head dimension held by output slot n (n < DP/16) of thread tx: slots come in groups of 4
 * consecutive dims, 4*tx .. 4*tx+3 in each 64-dim block, so a half warp reads a 64-float
 * row segment as 16 float4.
 */
__device__ __forceinline__ int dimOf(int tx, int n) { return 64 * (n >> 2) + 4 * tx + (n & 3); }

// ---------------------------------------------------------------------------------------
// Forward. Block = 64 query rows of one (b, h); loop over key tiles of BK keys with the
// online softmax: running max m and sum l per row, output accumulator o rescaled by
// exp(m_old - m_new) whenever the max grows. l sums the probabilities before dropout (the
// softmax normaliser); o sums the dropped-out ones times v. At the end out = o / l,
// lse = m + log(l); l == 0 means every score was -inf: out = 0, lse = -inf.

template <int DP, int BK>
struct FwdCfg {
  static constexpr int QLD = DP + 4;  // Qs [row][dim]: float4 along dims, broadcast per half warp
  static constexpr int KLD = DP + 4;  // Ks [key][dim]: float4 along dims, a key per lane
  static constexpr int VLD = DP + 4;  // Vs [key][dim]: float4 along dims, lanes on consecutive dims
  static constexpr int PLD = BK + 4;  // Ps [row][key]: float4 along keys, broadcast per half warp
  static constexpr int kFloats = kRows * QLD + BK * KLD + BK * VLD + kRows * PLD;
};

template <int DP, int BK>
__global__ void __launch_bounds__(kThreads)
fwdKernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
          const float* __restrict__ bias, Params p, float* __restrict__ out, float* __restrict__ lse) {
  using C = FwdCfg<DP, BK>;
  constexpr int JJ = BK / 16, CC = DP / 16, RI = kRowsPerThread;
  ATTN_DYN_SMEM(smem);
  float* Qs = smem;
  float* Ks = Qs + kRows * C::QLD;
  float* Vs = Ks + BK * C::KLD;
  float* Ps = Vs + BK * C::VLD;

  const int tile = blockIdx.x % p.nTiles;
  const int64_t bh = blockIdx.x / p.nTiles;  // b * H + h
  const int b = (int)(bh / p.H), h = (int)(bh % p.H), kvh = h / p.group;
  const int t0 = tile * kRows;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const float* qh = q + bh * p.T * p.D;
  const float* kh = k + ((int64_t)b * p.Hk + kvh) * p.S * p.D;
  const float* vh = v + ((int64_t)b * p.Hk + kvh) * p.S * p.D;

  loadTile<kRows, DP>(Qs, C::QLD, qh, t0, p.T, p.D);

  float m[RI], l[RI], o[RI][CC];  // o[i][n]: row ty*4+i, dim dimOf(tx, n)
  ATTN_UNROLL for (int i = 0; i < RI; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
    ATTN_UNROLL for (int n = 0; n < CC; n++) o[i][n] = 0.0f;
  }

  for (int j0 = 0; j0 < p.S; j0 += BK) {
    __syncthreads();  // Qs is loaded; the previous tile's Ks, Vs, Ps reads are done
    if (!tileLive<kRows, BK>(bias, p, b, h, t0, j0)) continue;
    loadTile<BK, DP>(Ks, C::KLD, kh, j0, p.S, p.D);
    loadTile<BK, DP>(Vs, C::VLD, vh, j0, p.S, p.D);
    __syncthreads();

    // s[i][jj] = q[row ty*4+i] . k[key tx+16*jj]
    float s[RI][JJ];
    ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) s[i][jj] = 0.0f;
    for (int c = 0; c < DP; c += 4) {
      float4 qv[RI], kv[JJ];
      ATTN_UNROLL for (int i = 0; i < RI; i++) qv[i] = ld4(&Qs[(ty * RI + i) * C::QLD + c]);
      ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) kv[jj] = ld4(&Ks[(tx + 16 * jj) * C::KLD + c]);
      ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++)
        s[i][jj] = dot4(qv[i], kv[jj], s[i][jj]);
    }

    ATTN_UNROLL for (int i = 0; i < RI; i++) {
      const int t = t0 + ty * RI + i;
      float tmax = -INFINITY;
      ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        const int j = j0 + tx + 16 * jj;
        // Keys past S are masked; rows past T are padding (computed, never written).
        const float x = j >= p.S ? -INFINITY : t >= p.T ? s[i][jj] * p.scale : score(s[i][jj], bias, p, b, h, t, j);
        s[i][jj] = x;
        tmax = fmaxf(tmax, x);
      }
      tmax = rowMax16(tmax);
      const float mNew = fmaxf(m[i], tmax);
      // While the row max is still -inf every exp below must give 0 (not exp(-inf + inf)).
      const float mUse = mNew == -INFINITY ? 0.0f : mNew;
      const float alpha = expf(m[i] - mUse);  // 0 when m[i] == -inf (then l, o are 0 anyway)
      float rs = 0.0f;
      ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        const int j = j0 + tx + 16 * jj;
        const float e = expf(s[i][jj] - mUse);  // 0 for masked keys
        rs += e;
        const float keep = (p.dropout && t < p.T && j < p.S) ? keepMul(p, bh, t, j) : 1.0f;
        Ps[(ty * RI + i) * C::PLD + tx + 16 * jj] = e * keep;
      }
      rs = rowSum16(rs);
      l[i] = l[i] * alpha + rs;
      m[i] = mNew;
      ATTN_UNROLL for (int n = 0; n < CC; n++) o[i][n] *= alpha;
    }
    __syncthreads();  // Ps complete

    // o[i][n] += sum_j Ps[row][j] * v[j][dimOf(tx, n)], 4 keys at a time
    for (int jl = 0; jl < BK; jl += 4) {
      float4 pv[RI];
      ATTN_UNROLL for (int i = 0; i < RI; i++) pv[i] = ld4(&Ps[(ty * RI + i) * C::PLD + jl]);
      ATTN_UNROLL for (int e = 0; e < 4; e++) {
        float4 vv[CC / 4];
        ATTN_UNROLL for (int g = 0; g < CC / 4; g++) vv[g] = ld4(&Vs[(jl + e) * C::VLD + 64 * g + 4 * tx]);
        ATTN_UNROLL for (int i = 0; i < RI; i++) {
          const float pe = comp(pv[i], e);
          ATTN_UNROLL for (int g = 0; g < CC / 4; g++) {
            o[i][4 * g + 0] = fmaf(pe, vv[g].x, o[i][4 * g + 0]);
            o[i][4 * g + 1] = fmaf(pe, vv[g].y, o[i][4 * g + 1]);
            o[i][4 * g + 2] = fmaf(pe, vv[g].z, o[i][4 * g + 2]);
            o[i][4 * g + 3] = fmaf(pe, vv[g].w, o[i][4 * g + 3]);
          }
        }
      }
    }
  }

  ATTN_UNROLL for (int i = 0; i < RI; i++) {
    const int t = t0 + ty * RI + i;
    if (t < p.T) {
      const bool any = l[i] > 0.0f;
      const float inv = any ? 1.0f / l[i] : 0.0f;
      float* orow = out + (bh * p.T + t) * p.D;
      ATTN_UNROLL for (int n = 0; n < CC; n++) {
        const int c = dimOf(tx, n);
        if (c < p.D) orow[c] = o[i][n] * inv;
      }
      if (tx == 0) lse[bh * p.T + t] = any ? m[i] + logf(l[i]) : -INFINITY;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward, FlashAttention-2 style with the probabilities recomputed from lse:
//   p = exp(score - lse), keep = dropout multiplier, Di = rowsum(gOut * out),
//   dp = gOut . v_j, ds = p * (keep * dp - Di) * scale,
//   dV_j += p * keep * gOut,  dK_j += ds * q,  dQ += ds * k_j.
// Fully masked rows (lse = -inf), padded rows and padded keys contribute nothing.
// Two passes, no atomics (deterministic): kvKernel owns 64 keys of one (b, kv head) and
// loops over every query row of the H/Hk query heads that read them; qKernel owns 64 query
// rows and loops over the keys. rowDotKernel computes Di first for kvKernel.

/** outp[r] = sum_c a[r*D + c] * b[r*D + c]: one warp per row. */
__global__ void __launch_bounds__(kThreads)
rowDotKernel(const float* __restrict__ a, const float* __restrict__ b, int64_t rows, int D, float* __restrict__ outp) {
  const int64_t row = (int64_t)blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  if (row < rows)
    for (int c = lane; c < D; c += 32) acc = fmaf(a[row * D + c], b[row * D + c], acc);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (row < rows && lane == 0) outp[row] = acc;
}

template <int DP, int BQ>
struct KvCfg {
  static constexpr int KLD = DP + 4;  // Ks, Vs [key][dim] (this block's keys): float4, broadcast per half warp
  static constexpr int QLD = DP + 4;  // Qs, dOs [row][dim] (a query tile): float4, a row per lane, then dims per lane
  static constexpr int PLD = BQ + 4;  // Ps, dSs [key][row]: float4 along rows, broadcast per half warp
  static constexpr int kFloats = 2 * kRows * KLD + 2 * BQ * QLD + 2 * kRows * PLD + 2 * BQ;
};

template <int DP, int BQ>
__global__ void __launch_bounds__(kThreads)
kvKernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
         const float* __restrict__ bias, const float* __restrict__ lse, const float* __restrict__ gOut,
         const float* __restrict__ di, Params p, float* __restrict__ gk, float* __restrict__ gv) {
  using C = KvCfg<DP, BQ>;
  constexpr int JJ = BQ / 16, CC = DP / 16, RI = kRowsPerThread;
  ATTN_DYN_SMEM(smem);
  float* Ks = smem;
  float* Vs = Ks + kRows * C::KLD;
  float* Qs = Vs + kRows * C::KLD;
  float* dOs = Qs + BQ * C::QLD;
  float* Ps = dOs + BQ * C::QLD;
  float* dSs = Ps + kRows * C::PLD;
  float* lseS = dSs + kRows * C::PLD;
  float* diS = lseS + BQ;

  const int ktile = blockIdx.x % p.nTiles;
  const int64_t bkv = blockIdx.x / p.nTiles;  // b * Hk + kvh
  const int b = (int)(bkv / p.Hk), kvh = (int)(bkv % p.Hk);
  const int j0 = ktile * kRows;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const float* kh = k + bkv * p.S * p.D;
  const float* vh = v + bkv * p.S * p.D;

  loadTile<kRows, DP>(Ks, C::KLD, kh, j0, p.S, p.D);
  loadTile<kRows, DP>(Vs, C::KLD, vh, j0, p.S, p.D);

  float dk[RI][CC], dv[RI][CC];  // [i][n]: key ty*4+i, dim dimOf(tx, n)
  ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int n = 0; n < CC; n++) {
    dk[i][n] = 0.0f;
    dv[i][n] = 0.0f;
  }

  for (int g = 0; g < p.group; g++) {
    const int h = kvh * p.group + g;  // the query heads reading kv head kvh
    const int64_t bh = (int64_t)b * p.H + h;
    const float* qh = q + bh * p.T * p.D;
    const float* gh = gOut + bh * p.T * p.D;
    for (int t0 = 0; t0 < p.T; t0 += BQ) {
      __syncthreads();  // Ks, Vs loaded; the previous tile's Qs, dOs, Ps, dSs reads are done
      if (!tileLive<BQ, kRows>(bias, p, b, h, t0, j0)) continue;
      loadTile<BQ, DP>(Qs, C::QLD, qh, t0, p.T, p.D);
      loadTile<BQ, DP>(dOs, C::QLD, gh, t0, p.T, p.D);
      for (int r = threadIdx.x; r < BQ; r += kThreads) {
        const int t = t0 + r;
        lseS[r] = t < p.T ? lse[bh * p.T + t] : -INFINITY;
        diS[r] = t < p.T ? di[bh * p.T + t] : 0.0f;
      }
      __syncthreads();

      // s[i][jj] = k[key ty*4+i] . q[row tx+16*jj], dp[i][jj] = v[key] . gOut[row]
      float s[RI][JJ], dp[RI][JJ];
      ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        s[i][jj] = 0.0f;
        dp[i][jj] = 0.0f;
      }
      for (int c = 0; c < DP; c += 4) {
        float4 kv[RI], vv[RI], qv[JJ], ov[JJ];
        ATTN_UNROLL for (int i = 0; i < RI; i++) {
          kv[i] = ld4(&Ks[(ty * RI + i) * C::KLD + c]);
          vv[i] = ld4(&Vs[(ty * RI + i) * C::KLD + c]);
        }
        ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
          qv[jj] = ld4(&Qs[(tx + 16 * jj) * C::QLD + c]);
          ov[jj] = ld4(&dOs[(tx + 16 * jj) * C::QLD + c]);
        }
        ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
          s[i][jj] = dot4(kv[i], qv[jj], s[i][jj]);
          dp[i][jj] = dot4(vv[i], ov[jj], dp[i][jj]);
        }
      }

      ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        const int key = ty * RI + i, r = tx + 16 * jj;
        const int j = j0 + key, t = t0 + r;
        const float L = lseS[r];
        float pd = 0.0f, ds = 0.0f;
        if (j < p.S && t < p.T && L != -INFINITY) {
          const float pr = expf(score(s[i][jj], bias, p, b, h, t, j) - L);
          const float keep = p.dropout ? keepMul(p, bh, t, j) : 1.0f;
          pd = pr * keep;
          ds = pr * (keep * dp[i][jj] - diS[r]) * p.scale;
        }
        Ps[key * C::PLD + r] = pd;
        dSs[key * C::PLD + r] = ds;
      }
      __syncthreads();  // Ps, dSs complete

      // dv[i][n] += sum_r Ps[key][r] * gOut[r][dim], dk[i][n] += sum_r dSs[key][r] * q[r][dim], 4 rows at a time
      for (int r = 0; r < BQ; r += 4) {
        float4 pv[RI], sv[RI];
        ATTN_UNROLL for (int i = 0; i < RI; i++) {
          pv[i] = ld4(&Ps[(ty * RI + i) * C::PLD + r]);
          sv[i] = ld4(&dSs[(ty * RI + i) * C::PLD + r]);
        }
        ATTN_UNROLL for (int e = 0; e < 4; e++) {
          float4 ov[CC / 4], qv[CC / 4];
          ATTN_UNROLL for (int g4 = 0; g4 < CC / 4; g4++) {
            ov[g4] = ld4(&dOs[(r + e) * C::QLD + 64 * g4 + 4 * tx]);
            qv[g4] = ld4(&Qs[(r + e) * C::QLD + 64 * g4 + 4 * tx]);
          }
          ATTN_UNROLL for (int i = 0; i < RI; i++) {
            const float pe = comp(pv[i], e), se = comp(sv[i], e);
            ATTN_UNROLL for (int g4 = 0; g4 < CC / 4; g4++) {
              dv[i][4 * g4 + 0] = fmaf(pe, ov[g4].x, dv[i][4 * g4 + 0]);
              dv[i][4 * g4 + 1] = fmaf(pe, ov[g4].y, dv[i][4 * g4 + 1]);
              dv[i][4 * g4 + 2] = fmaf(pe, ov[g4].z, dv[i][4 * g4 + 2]);
              dv[i][4 * g4 + 3] = fmaf(pe, ov[g4].w, dv[i][4 * g4 + 3]);
              dk[i][4 * g4 + 0] = fmaf(se, qv[g4].x, dk[i][4 * g4 + 0]);
              dk[i][4 * g4 + 1] = fmaf(se, qv[g4].y, dk[i][4 * g4 + 1]);
              dk[i][4 * g4 + 2] = fmaf(se, qv[g4].z, dk[i][4 * g4 + 2]);
              dk[i][4 * g4 + 3] = fmaf(se, qv[g4].w, dk[i][4 * g4 + 3]);
            }
          }
        }
      }
    }
  }

  ATTN_UNROLL for (int i = 0; i < RI; i++) {
    const int j = j0 + ty * RI + i;
    if (j < p.S) {
      float* gkr = gk + (bkv * p.S + j) * p.D;
      float* gvr = gv + (bkv * p.S + j) * p.D;
      ATTN_UNROLL for (int n = 0; n < CC; n++) {
        const int c = dimOf(tx, n);
        if (c < p.D) {
          gkr[c] = dk[i][n];
          gvr[c] = dv[i][n];
        }
      }
    }
  }
}

template <int DP, int BK>
struct QCfg {
  static constexpr int QLD = DP + 4;  // Qs, dOs [row][dim] (this block's rows): float4, broadcast per half warp
  static constexpr int KLD = DP + 4;  // Ks, Vs [key][dim] (a key tile): float4, a key per lane, then dims per lane
  static constexpr int SLD = BK + 4;  // dSs [row][key]: float4 along keys, broadcast per half warp
  static constexpr int kFloats = 2 * kRows * QLD + 2 * BK * KLD + kRows * SLD;
};

template <int DP, int BK>
__global__ void __launch_bounds__(kThreads)
qKernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ bias, const float* __restrict__ out, const float* __restrict__ lse,
        const float* __restrict__ gOut, Params p, float* __restrict__ gq) {
  using C = QCfg<DP, BK>;
  constexpr int JJ = BK / 16, CC = DP / 16, RI = kRowsPerThread;
  ATTN_DYN_SMEM(smem);
  float* Qs = smem;
  float* dOs = Qs + kRows * C::QLD;
  float* Ks = dOs + kRows * C::QLD;
  float* Vs = Ks + BK * C::KLD;
  float* dSs = Vs + BK * C::KLD;

  const int tile = blockIdx.x % p.nTiles;
  const int64_t bh = blockIdx.x / p.nTiles;  // b * H + h
  const int b = (int)(bh / p.H), h = (int)(bh % p.H), kvh = h / p.group;
  const int t0 = tile * kRows;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const float* qh = q + bh * p.T * p.D;
  const float* gh = gOut + bh * p.T * p.D;
  const float* oh = out + bh * p.T * p.D;
  const float* kh = k + ((int64_t)b * p.Hk + kvh) * p.S * p.D;
  const float* vh = v + ((int64_t)b * p.Hk + kvh) * p.S * p.D;

  loadTile<kRows, DP>(Qs, C::QLD, qh, t0, p.T, p.D);
  loadTile<kRows, DP>(dOs, C::QLD, gh, t0, p.T, p.D);
  __syncthreads();

  // This thread's rows: lse and Di = rowsum(gOut * out) (computed here rather than read
  // from the scratch in gq, which this kernel overwrites).
  float lseR[RI], diR[RI];
  ATTN_UNROLL for (int i = 0; i < RI; i++) {
    const int t = t0 + ty * RI + i;
    float part = 0.0f;
    if (t < p.T) {
      ATTN_UNROLL for (int n = 0; n < CC; n++) {
        const int c = dimOf(tx, n);
        if (c < p.D) part = fmaf(dOs[(ty * RI + i) * C::QLD + c], oh[(int64_t)t * p.D + c], part);
      }
    }
    diR[i] = rowSum16(part);
    lseR[i] = t < p.T ? lse[bh * p.T + t] : -INFINITY;
  }

  float dq[RI][CC];  // [i][n]: row ty*4+i, dim dimOf(tx, n)
  ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int n = 0; n < CC; n++) dq[i][n] = 0.0f;

  for (int j0 = 0; j0 < p.S; j0 += BK) {
    __syncthreads();  // the previous tile's Ks, dSs reads are done
    if (!tileLive<kRows, BK>(bias, p, b, h, t0, j0)) continue;
    loadTile<BK, DP>(Ks, C::KLD, kh, j0, p.S, p.D);
    loadTile<BK, DP>(Vs, C::KLD, vh, j0, p.S, p.D);
    __syncthreads();

    // s[i][jj] = q[row ty*4+i] . k[key tx+16*jj], dp[i][jj] = gOut[row] . v[key]
    float s[RI][JJ], dp[RI][JJ];
    ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
      s[i][jj] = 0.0f;
      dp[i][jj] = 0.0f;
    }
    for (int c = 0; c < DP; c += 4) {
      float4 qv[RI], ov[RI], kv[JJ], vv[JJ];
      ATTN_UNROLL for (int i = 0; i < RI; i++) {
        qv[i] = ld4(&Qs[(ty * RI + i) * C::QLD + c]);
        ov[i] = ld4(&dOs[(ty * RI + i) * C::QLD + c]);
      }
      ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        kv[jj] = ld4(&Ks[(tx + 16 * jj) * C::KLD + c]);
        vv[jj] = ld4(&Vs[(tx + 16 * jj) * C::KLD + c]);
      }
      ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
        s[i][jj] = dot4(qv[i], kv[jj], s[i][jj]);
        dp[i][jj] = dot4(ov[i], vv[jj], dp[i][jj]);
      }
    }

    ATTN_UNROLL for (int i = 0; i < RI; i++) ATTN_UNROLL for (int jj = 0; jj < JJ; jj++) {
      const int row = ty * RI + i, key = tx + 16 * jj;
      const int t = t0 + row, j = j0 + key;
      float ds = 0.0f;
      if (t < p.T && j < p.S && lseR[i] != -INFINITY) {
        const float pr = expf(score(s[i][jj], bias, p, b, h, t, j) - lseR[i]);
        const float keep = p.dropout ? keepMul(p, bh, t, j) : 1.0f;
        ds = pr * (keep * dp[i][jj] - diR[i]) * p.scale;
      }
      dSs[row * C::SLD + key] = ds;
    }
    __syncthreads();  // dSs complete

    // dq[i][n] += sum_j dSs[row][j] * k[j][dim], 4 keys at a time
    for (int jl = 0; jl < BK; jl += 4) {
      float4 sv[RI];
      ATTN_UNROLL for (int i = 0; i < RI; i++) sv[i] = ld4(&dSs[(ty * RI + i) * C::SLD + jl]);
      ATTN_UNROLL for (int e = 0; e < 4; e++) {
        float4 kv[CC / 4];
        ATTN_UNROLL for (int g4 = 0; g4 < CC / 4; g4++) kv[g4] = ld4(&Ks[(jl + e) * C::KLD + 64 * g4 + 4 * tx]);
        ATTN_UNROLL for (int i = 0; i < RI; i++) {
          const float se = comp(sv[i], e);
          ATTN_UNROLL for (int g4 = 0; g4 < CC / 4; g4++) {
            dq[i][4 * g4 + 0] = fmaf(se, kv[g4].x, dq[i][4 * g4 + 0]);
            dq[i][4 * g4 + 1] = fmaf(se, kv[g4].y, dq[i][4 * g4 + 1]);
            dq[i][4 * g4 + 2] = fmaf(se, kv[g4].z, dq[i][4 * g4 + 2]);
            dq[i][4 * g4 + 3] = fmaf(se, kv[g4].w, dq[i][4 * g4 + 3]);
          }
        }
      }
    }
  }

  ATTN_UNROLL for (int i = 0; i < RI; i++) {
    const int t = t0 + ty * RI + i;
    if (t < p.T) {
      float* gqr = gq + (bh * p.T + t) * p.D;
      ATTN_UNROLL for (int n = 0; n < CC; n++) {
        const int c = dimOf(tx, n);
        if (c < p.D) gqr[c] = dq[i][n];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Host side.

cudaError_t makeParams(const AttnShape& s, Params& p) {
  if (s.B < 0 || s.H < 1 || s.Hk < 1 || s.H % s.Hk != 0 || s.T < 0 || s.S < 0 || s.D < 0 || s.D > 128)
    return cudaErrorInvalidValue;
  if (!(s.dropoutP >= 0.0 && s.dropoutP < 1.0)) return cudaErrorInvalidValue;  // also rejects NaN
  p.B = s.B; p.H = s.H; p.Hk = s.Hk; p.T = s.T; p.S = s.S; p.D = s.D;
  p.group = s.H / s.Hk;
  p.nTiles = 0;
  p.scale = (float)s.scale;
  p.bs0 = s.biasStrides[0]; p.bs1 = s.biasStrides[1]; p.bs2 = s.biasStrides[2]; p.bs3 = s.biasStrides[3];
  p.dropout = s.dropoutP > 0.0 ? 1 : 0;
  p.thr = (uint32_t)std::floor(s.dropoutP * 4294967296.0);  // dropoutThreshold; < 2^32 as p < 1
  p.keepScale = (float)(1.0 / (1.0 - s.dropoutP));
  p.seed = s.seed;
  return cudaSuccess;
}

/** Blocks for `tiles` tiles of each of `heads` heads, or -1 past the grid limit. */
int64_t blockCount(int64_t tiles, int64_t heads) {
  const int64_t n = tiles * heads;
  return n > INT_MAX ? -1 : n;
}

template <typename Kern>
cudaError_t allowSmem(Kern kern, size_t bytes) {
  return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

template <int DP, int BK>
cudaError_t launchForward(const float* q, const float* k, const float* v, const float* bias, Params p,
                          float* out, float* lse, cudaStream_t st) {
  p.nTiles = (p.T + kRows - 1) / kRows;
  const int64_t blocks = blockCount(p.nTiles, (int64_t)p.B * p.H);
  if (blocks < 0) return cudaErrorInvalidConfiguration;
  const size_t bytes = FwdCfg<DP, BK>::kFloats * sizeof(float);
  auto kern = fwdKernel<DP, BK>;
  cudaError_t e = allowSmem(kern, bytes);
  if (e != cudaSuccess) return e;
  ATTN_LAUNCH(kern, (unsigned)blocks, kThreads, bytes, st, q, k, v, bias, p, out, lse);
  return cudaGetLastError();
}

template <int DP, int BQ, int BK>
cudaError_t launchBackward(const float* q, const float* k, const float* v, const float* bias, Params p,
                           const float* out, const float* lse, const float* gOut,
                           float* gq, float* gk, float* gv, cudaStream_t st) {
  // Di = rowsum(gOut * out) into gq's first B*H*T floats (gq holds B*H*T*D >= that).
  const int64_t rows = (int64_t)p.B * p.H * p.T;
  const int64_t dotBlocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
  if (dotBlocks > INT_MAX) return cudaErrorInvalidConfiguration;
  float* di = gq;
  ATTN_LAUNCH(rowDotKernel, (unsigned)dotBlocks, kThreads, 0, st, gOut, out, rows, p.D, di);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  if (p.S > 0) {  // dK, dV (reads the Di scratch)
    Params pk = p;
    pk.nTiles = (p.S + kRows - 1) / kRows;
    const int64_t blocks = blockCount(pk.nTiles, (int64_t)p.B * p.Hk);
    if (blocks < 0) return cudaErrorInvalidConfiguration;
    const size_t bytes = KvCfg<DP, BQ>::kFloats * sizeof(float);
    auto kern = kvKernel<DP, BQ>;
    if ((e = allowSmem(kern, bytes)) != cudaSuccess) return e;
    ATTN_LAUNCH(kern, (unsigned)blocks, kThreads, bytes, st, q, k, v, bias, lse, gOut, di, pk, gk, gv);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }

  // dQ: overwrites all of gq (the scratch included), after kvKernel in stream order.
  Params pq = p;
  pq.nTiles = (p.T + kRows - 1) / kRows;
  const int64_t blocks = blockCount(pq.nTiles, (int64_t)p.B * p.H);
  if (blocks < 0) return cudaErrorInvalidConfiguration;
  const size_t bytes = QCfg<DP, BK>::kFloats * sizeof(float);
  auto kern = qKernel<DP, BK>;
  if ((e = allowSmem(kern, bytes)) != cudaSuccess) return e;
  ATTN_LAUNCH(kern, (unsigned)blocks, kThreads, bytes, st, q, k, v, bias, out, lse, gOut, pq, gq);
  return cudaGetLastError();
}

}  // namespace

cudaError_t cudaAttentionForward(const float* q, const float* k, const float* v, const float* bias,
                                 const AttnShape& s, float* out, float* lse, cudaStream_t st) {
  Params p;
  cudaError_t e = makeParams(s, p);
  if (e != cudaSuccess) return e;
  if (s.B == 0 || s.T == 0) return cudaSuccess;  // nothing to write
  // D <= 64: 64 keys per tile (68 KiB of shared memory); D <= 128: 32 keys (75 KiB).
  return s.D <= 64 ? launchForward<64, 64>(q, k, v, bias, p, out, lse, st)
                   : launchForward<128, 32>(q, k, v, bias, p, out, lse, st);
}

cudaError_t cudaAttentionBackward(const float* q, const float* k, const float* v, const float* bias,
                                  const AttnShape& s, const float* out, const float* lse, const float* gOut,
                                  float* gq, float* gk, float* gv, cudaStream_t st) {
  Params p;
  cudaError_t e = makeParams(s, p);
  if (e != cudaSuccess) return e;
  if (s.B == 0 || s.D == 0) return cudaSuccess;  // every gradient is empty
  if (s.T == 0) {  // no query rows: gk = gv = 0 (gq is empty)
    const size_t bytes = (size_t)s.B * s.Hk * s.S * s.D * sizeof(float);
    if ((e = cudaMemsetAsync(gk, 0, bytes, st)) != cudaSuccess) return e;
    return cudaMemsetAsync(gv, 0, bytes, st);
  }
  // D <= 64: 64-row query tiles in kvKernel (102.5 KiB), 64-key tiles in qKernel (85 KiB);
  // D <= 128: 32 and 32 (117.3 KiB, 108 KiB).
  return s.D <= 64 ? launchBackward<64, 64, 64>(q, k, v, bias, p, out, lse, gOut, gq, gk, gv, st)
                   : launchBackward<128, 32, 32>(q, k, v, bias, p, out, lse, gOut, gq, gk, gv, st);
}

}  // namespace pc
