// The emulator's fiber scheduler (see emu.h) and a fake CUDA runtime: one "device" whose
// managed memory is host memory (new blocks poisoned with NaN bytes so reads of unwritten
// memory show up), synchronous copies, and launches that run at once. Only the runtime
// calls the addon makes are provided; anything else fails to link.
#include "emu.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace emu {

Idx3 gBlockIdx{0, 0, 0}, gBlockDim{1, 1, 1}, gGridDim{1, 1, 1};

namespace {

enum State { RUN, AT_SYNC, AT_WARP, DONE };
struct Fiber {
  ucontext_t ctx;
  Idx3 tid;
  unsigned linear;
  State state;
};

constexpr size_t kStack = 64 * 1024;
std::vector<Fiber> fibers;
std::vector<std::vector<char>> stacks;
std::vector<float> warpSlots;
Fiber* current = nullptr;
ucontext_t schedCtx;
const std::function<void()>* body = nullptr;
cudaError_t lastError = cudaSuccess;
bool failed = false;

void entry() {
  (*body)();
  current->state = DONE;
  swapcontext(&current->ctx, &schedCtx);
}

void waitAs(State s) {
  current->state = s;
  swapcontext(&current->ctx, &schedCtx);
}

// Runs every fiber until it finishes or waits; releases barriers whose whole group arrived.
bool runBlock(unsigned n) {
  for (;;) {
    for (unsigned i = 0; i < n; i++) {
      if (fibers[i].state != RUN) continue;
      current = &fibers[i];
      swapcontext(&schedCtx, &fibers[i].ctx);
    }
    unsigned done = 0, atSync = 0;
    for (unsigned i = 0; i < n; i++) { done += fibers[i].state == DONE; atSync += fibers[i].state == AT_SYNC; }
    if (done == n) return true;
    bool released = false;
    // warps whose every live lane is at a shuffle
    for (unsigned w = 0; w * 32 < n; w++) {
      bool all = true, any = false;
      for (unsigned i = w * 32; i < n && i < w * 32 + 32; i++) {
        if (fibers[i].state == DONE) continue;
        any = true;
        if (fibers[i].state != AT_WARP) all = false;
      }
      if (any && all) {
        for (unsigned i = w * 32; i < n && i < w * 32 + 32; i++) if (fibers[i].state == AT_WARP) fibers[i].state = RUN;
        released = true;
      }
    }
    if (!released && atSync + done == n) {
      if (done > 0) return false;  // some threads exited while others wait at __syncthreads
      for (unsigned i = 0; i < n; i++) fibers[i].state = RUN;
      released = true;
    }
    if (!released) return false;  // divergent barriers: a deadlock on a GPU
  }
}

}  // namespace

const Idx3& threadIdxNow() { return current->tid; }

void setLastError(cudaError_t e) { if (lastError == cudaSuccess) lastError = e; }

void launch(Dim3 g, Dim3 b, const std::function<void()>& fn) {
  const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 || threads > 1024 || b.z > 64 || g.y > 65535 || g.z > 65535 ||
      g.x > 0x7fffffffu) {
    setLastError(cudaErrorInvalidConfiguration);
    return;
  }
  if (failed) return;
  const unsigned n = (unsigned)threads;
  if (fibers.size() < n) { fibers.resize(n); stacks.resize(n); }
  for (unsigned i = 0; i < n; i++) if (stacks[i].empty()) stacks[i].resize(kStack);
  warpSlots.assign(((n + 31) / 32) * 32, 0.0f);
  gGridDim = Idx3{g.x, g.y, g.z};
  gBlockDim = Idx3{b.x, b.y, b.z};
  body = &fn;
  for (unsigned bz = 0; bz < g.z; bz++)
    for (unsigned by = 0; by < g.y; by++)
      for (unsigned bx = 0; bx < g.x; bx++) {
        gBlockIdx = Idx3{bx, by, bz};
        for (unsigned i = 0; i < n; i++) {
          Fiber& f = fibers[i];
          f.linear = i;
          f.tid = Idx3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
          f.state = RUN;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stacks[i].data();
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, entry, 0);
        }
        if (!runBlock(n)) {
          std::fprintf(stderr, "emu: divergent __syncthreads / warp shuffle in block (%u,%u,%u)\n", bx, by, bz);
          setLastError(cudaErrorLaunchFailure);
          failed = true;  // sticky, like a real kernel fault
          return;
        }
      }
}

void syncthreads() { waitAs(AT_SYNC); }

float shflXor(float v, int laneMask) {
  const unsigned lane = current->linear % 32, base = current->linear - lane;
  warpSlots[current->linear] = v;
  waitAs(AT_WARP);
  const float r = warpSlots[base + (lane ^ (unsigned)laneMask)];
  waitAs(AT_WARP);  // nobody overwrites a slot before every lane has read
  return r;
}

cudaError_t takeLastError() {
  const cudaError_t e = lastError;
  lastError = cudaSuccess;
  return failed ? cudaErrorLaunchFailure : e;
}

}  // namespace emu

// ---------- the fake runtime ----------

extern "C" {

namespace {
// The emulated device's memory: PEFT_TS_CUDA_EMU_MEMORY_MB (default 16384). Managed memory
// can be oversubscribed on a real GPU, and on the machines we test on that can hang the card;
// here it aborts the process, so a test shows any allocation that skipped the free-memory check.
size_t emuCapacity() {
  static const size_t cap = [] {
    const char* s = std::getenv("PEFT_TS_CUDA_EMU_MEMORY_MB");
    return (size_t)((s && *s ? std::atof(s) : 16384.0) * 1048576.0);
  }();
  return cap;
}
std::unordered_map<void*, size_t> emuBlocks;
size_t emuUsed = 0;
}  // namespace

cudaError_t cudaGetLastError(void) { return emu::takeLastError(); }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaError (emulator)";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
// PEFT_TS_CUDA_EMU_DEVICES (default 1) identical devices, so that each rank of a 2-rank test
// job takes its own one as on a multi-GPU machine.
static int emuDevices() {
  const char* s = std::getenv("PEFT_TS_CUDA_EMU_DEVICES");
  return s && *s ? std::atoi(s) : 1;
}
cudaError_t cudaGetDeviceCount(int* n) { *n = emuDevices(); return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d >= 0 && d < emuDevices() ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "peft-ts CUDA emulator (CPU)");
  p->major = 9; p->minor = 0; p->managedMemory = 1; p->multiProcessorCount = 1; p->totalGlobalMem = emuCapacity();
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = 1; return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  *s = reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(0x5ea));
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::takeLastError(); }
cudaError_t cudaMemGetInfo(size_t* freeB, size_t* totalB) {
  *totalB = emuCapacity();
  *freeB = emuUsed < *totalB ? *totalB - emuUsed : 0;
  return cudaSuccess;
}
cudaError_t cudaMallocManaged(void** p, size_t bytes, unsigned int) {
  if (emuUsed + bytes > emuCapacity()) {
    std::fprintf(stderr, "emu: cudaMallocManaged of %zu bytes oversubscribes the emulated device (%zu of %zu bytes in use): "
      "on a GPU this can hang the card\n", bytes, emuUsed, emuCapacity());
    std::abort();
  }
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p) return cudaErrorMemoryAllocation;
  emuBlocks[*p] = bytes;
  emuUsed += bytes;
  std::memset(*p, 0xff, bytes);  // NaN / -1: reading memory nobody wrote shows up in results
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  auto it = emuBlocks.find(p);
  if (it != emuBlocks.end()) { emuUsed -= it->second; emuBlocks.erase(it); }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemPrefetchAsync(const void*, size_t, cudaMemLocation, unsigned int, cudaStream_t) { return cudaSuccess; }

}  // extern "C"
