// A stand-in libnccl.so.2 for the emulator: the entry points native/cuda/src/nccl.cc opens
// with dlopen, for the ranks of one machine (the processes of a 2-rank mpirun test). As in
// NCCL, ranks meet only through the unique id: it names a POSIX shared-memory segment that
// every rank maps in ncclCommInitRank. Collectives copy each rank's chunk into its slot, meet
// at a barrier, and read the others' slots; all-reduce sums in rank order, so every rank gets
// the same bits. "Device" memory is host memory in the emulator, and calls complete before
// they return (the stream is ignored). Only float32 sums and broadcasts, what training uses.
//
// For tests: PEFT_TS_FAKE_NCCL_FAIL="<rank>:<n>" makes that rank's n-th ncclAllReduce fail
// with ncclSystemError; ncclCommAbort marks the segment so the other ranks' collectives fail
// with ncclRemoteError instead of waiting forever; PEFT_TS_FAKE_NCCL_TIMEOUT_S (default 300)
// bounds any wait for the other ranks.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace {

enum { kSuccess = 0, kSystemError = 2, kInvalidArgument = 4, kInvalidUsage = 5, kRemoteError = 6 };
constexpr int kFloat32 = 7, kSum = 0;
constexpr int kMaxRanks = 8;
constexpr size_t kSlotBytes = 1 << 20;  // per rank; collectives go in chunks of this
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kShmBytes = kHeaderBytes + kMaxRanks * kSlotBytes;
constexpr char kMagic[16] = "peft-fake-nccl";

struct UniqueId { char internal[128]; };  // kMagic, then the segment's name

struct Header {  // in the segment, zero when created
  std::atomic<int> nranks;
  std::atomic<int> joined[kMaxRanks];
  std::atomic<int> count;
  std::atomic<uint32_t> generation;
  std::atomic<int> abortedBy;  // rank + 1 of a rank that called ncclCommAbort
};
static_assert(sizeof(Header) <= kHeaderBytes, "header");

struct Comm {
  char* base;
  int nranks, rank;
  long allReduces = 0;
  Header* h() const { return reinterpret_cast<Header*>(base); }
  float* slot(int r) const { return reinterpret_cast<float*>(base + kHeaderBytes + r * kSlotBytes); }
};

thread_local char lastError[256] = "";

int fail(int code, const char* fmt, int a = 0, int b = 0) {
  std::snprintf(lastError, sizeof lastError, fmt, a, b);
  return code;
}

double timeoutSeconds() {
  const char* s = std::getenv("PEFT_TS_FAKE_NCCL_TIMEOUT_S");
  return s && *s ? std::atof(s) : 300.0;
}

// Sense-reversing barrier over the segment; sleeps while waiting (the emulator needs the cores).
int barrier(Comm* c) {
  Header* h = c->h();
  const uint32_t gen = h->generation.load();
  if (h->count.fetch_add(1) + 1 == c->nranks) {
    h->count.store(0);
    h->generation.fetch_add(1);
    return kSuccess;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const double limit = timeoutSeconds();
  for (int spin = 0; h->generation.load() == gen; spin++) {
    if (int by = h->abortedBy.load()) return fail(kRemoteError, "fake NCCL: rank %d aborted the communicator", by - 1);
    if (spin > 100) {
      usleep(100);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit)
        return fail(kSystemError, "fake NCCL: rank %d waited more than PEFT_TS_FAKE_NCCL_TIMEOUT_S for the others", c->rank);
    }
  }
  return kSuccess;
}

bool injectedFailure(Comm* c) {
  const char* s = std::getenv("PEFT_TS_FAKE_NCCL_FAIL");
  int rank = -1, n = 0;
  return s && std::sscanf(s, "%d:%d", &rank, &n) == 2 && rank == c->rank && n == c->allReduces;
}

}  // namespace

extern "C" {

int ncclGetVersion(int* v) { *v = 22800; return kSuccess; }

const char* ncclGetErrorString(int r) {
  switch (r) {
    case kSuccess: return "no error";
    case 1: return "unhandled cuda error";
    case kSystemError: return "unhandled system error";
    case 3: return "internal error";
    case kInvalidArgument: return "invalid argument";
    case kInvalidUsage: return "invalid usage";
    case kRemoteError: return "remote process exited or there was a network error";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(void*) { return lastError; }

int ncclGetUniqueId(UniqueId* id) {
  std::memset(id, 0, sizeof *id);
  std::memcpy(id->internal, kMagic, sizeof kMagic);
  std::random_device rd;
  std::snprintf(id->internal + sizeof kMagic, sizeof id->internal - sizeof kMagic, "/peft-fake-nccl-%d-%08x%08x",
    (int)getpid(), rd(), rd());
  return kSuccess;
}

int ncclCommInitRank(void** out, int nranks, UniqueId id, int rank) {
  if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0) return fail(kInvalidArgument, "fake NCCL: not a unique id from ncclGetUniqueId");
  if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
    return fail(kInvalidArgument, "fake NCCL: rank %d of %d ranks", rank, nranks);
  const char* name = id.internal + sizeof kMagic;
  const int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
  if (fd < 0) return fail(kSystemError, "fake NCCL: shm_open failed");
  if (ftruncate(fd, (off_t)kShmBytes) != 0) { close(fd); return fail(kSystemError, "fake NCCL: ftruncate failed"); }
  void* p = mmap(nullptr, kShmBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return fail(kSystemError, "fake NCCL: mmap failed");
  auto* c = new Comm{static_cast<char*>(p), nranks, rank};
  int want = 0;
  if (!c->h()->nranks.compare_exchange_strong(want, nranks) && want != nranks) {
    munmap(p, kShmBytes); delete c;
    return fail(kInvalidUsage, "fake NCCL: this rank says %d ranks, another said %d", nranks, want);
  }
  if (c->h()->joined[rank].exchange(1) != 0) {
    munmap(p, kShmBytes); delete c;
    return fail(kInvalidUsage, "fake NCCL: rank %d joined twice", rank);
  }
  const int r = barrier(c);  // every rank has mapped the segment: its name can go
  if (r != kSuccess) { munmap(p, kShmBytes); delete c; return r; }
  if (rank == 0) shm_unlink(name);
  *out = c;
  return kSuccess;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, void* comm, void* /*stream*/) {
  auto* c = static_cast<Comm*>(comm);
  if (!c) return fail(kInvalidArgument, "fake NCCL: null communicator");
  if (type != kFloat32 || op != kSum) return fail(kInvalidArgument, "fake NCCL: only ncclFloat32 ncclSum (got type %d, op %d)", type, op);
  c->allReduces++;
  if (injectedFailure(c)) return fail(kSystemError, "fake NCCL: injected failure of ncclAllReduce %d on rank %d", (int)c->allReduces, c->rank);
  const size_t per = kSlotBytes / 4;
  const float* s = static_cast<const float*>(send);
  float* d = static_cast<float*>(recv);
  for (size_t o = 0; o < count; o += per) {
    const size_t n = count - o < per ? count - o : per;
    std::memcpy(c->slot(c->rank), s + o, n * 4);
    if (int r = barrier(c)) return r;
    for (size_t i = 0; i < n; i++) {
      float sum = c->slot(0)[i];
      for (int k = 1; k < c->nranks; k++) sum += c->slot(k)[i];
      d[o + i] = sum;
    }
    if (int r = barrier(c)) return r;  // nobody refills a slot before all have read it
  }
  return kSuccess;
}

int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, void* comm, void* /*stream*/) {
  auto* c = static_cast<Comm*>(comm);
  if (!c) return fail(kInvalidArgument, "fake NCCL: null communicator");
  if (type != kFloat32) return fail(kInvalidArgument, "fake NCCL: only ncclFloat32 (got type %d)", type);
  if (root < 0 || root >= c->nranks) return fail(kInvalidArgument, "fake NCCL: root %d of %d ranks", root, c->nranks);
  const size_t per = kSlotBytes / 4;
  const float* s = static_cast<const float*>(send);
  float* d = static_cast<float*>(recv);
  for (size_t o = 0; o < count; o += per) {
    const size_t n = count - o < per ? count - o : per;
    if (c->rank == root) std::memcpy(c->slot(root), s + o, n * 4);
    if (int r = barrier(c)) return r;
    if (c->rank != root) std::memcpy(d + o, c->slot(root), n * 4);
    else if (d != s) std::memcpy(d + o, s + o, n * 4);
    if (int r = barrier(c)) return r;
  }
  return kSuccess;
}

int ncclCommDestroy(void* comm) {
  auto* c = static_cast<Comm*>(comm);
  if (!c) return fail(kInvalidArgument, "fake NCCL: null communicator");
  munmap(c->base, kShmBytes);
  delete c;
  return kSuccess;
}

int ncclCommAbort(void* comm) {
  auto* c = static_cast<Comm*>(comm);
  if (!c) return kSuccess;
  c->h()->abortedBy.store(c->rank + 1);
  return ncclCommDestroy(comm);
}

}  // extern "C"
