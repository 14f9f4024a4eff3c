#include "nccl.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace pc {

namespace {

// The few declarations of nccl.h we use (ABI of NCCL 2.x): results, types and ops are C enums
// (int), ncclUniqueId a 128-byte struct passed by value, ncclComm_t an opaque pointer.
enum { kNcclSuccess = 0 };
enum { kNcclFloat32 = 7 };  // ncclDataType_t ncclFloat32
enum { kNcclSum = 0 };      // ncclRedOp_t ncclSum
struct NcclId { char internal[kNcclIdBytes]; };
using Comm = void*;

struct Nccl {
  void* lib = nullptr;
  std::string path;
  int version = 0;
  int (*getVersion)(int*) = nullptr;
  int (*getUniqueId)(NcclId*) = nullptr;
  int (*commInitRank)(Comm*, int, NcclId, int) = nullptr;
  int (*allReduce)(const void*, void*, size_t, int, int, Comm, cudaStream_t) = nullptr;
  int (*broadcast)(const void*, void*, size_t, int, int, Comm, cudaStream_t) = nullptr;
  int (*commDestroy)(Comm) = nullptr;
  int (*commAbort)(Comm) = nullptr;
  const char* (*errorString)(int) = nullptr;
  const char* (*lastError)(Comm) = nullptr;  // NCCL >= 2.13; optional
  Comm comm = nullptr;
};

Nccl* gNccl = nullptr;

template <typename F>
void sym(Nccl& n, F& fn, const char* name, bool required = true) {
  fn = reinterpret_cast<F>(dlsym(n.lib, name));
  if (!fn && required) throw CudaError("NCCL at " + n.path + " has no symbol " + name);
}

// PEFT_TS_NCCL_LIB alone when set (a wrong path is an error, not a reason to load another NCCL);
// else the loader's search (LD_LIBRARY_PATH, ld.so.cache), then the usual install places.
Nccl& lib() {
  if (gNccl) return *gNccl;
  std::vector<std::string> tries;
  const char* forced = std::getenv("PEFT_TS_NCCL_LIB");
  if (forced && *forced) {
    tries.push_back(forced);
  } else {
    tries.push_back("libnccl.so.2");
    if (const char* h = std::getenv("NCCL_HOME")) tries.push_back(std::string(h) + "/lib/libnccl.so.2");
    if (const char* h = std::getenv("CUDA_HOME")) tries.push_back(std::string(h) + "/lib64/libnccl.so.2");
    tries.push_back("/usr/local/cuda/lib64/libnccl.so.2");
    tries.push_back("/usr/lib/x86_64-linux-gnu/libnccl.so.2");
  }
  auto* n = new Nccl();
  std::string errors;
  n->lib = dlopenFirst(tries, n->path, errors);
  if (!n->lib) {
    delete n;
    throw CudaError(std::string("NCCL (libnccl.so.2) could not be loaded") +
      (forced && *forced ? " from PEFT_TS_NCCL_LIB" : "") +
      "; set PEFT_TS_NCCL_LIB to its path (e.g. the nvidia-nccl-cu13 wheel's nvidia/nccl/lib/libnccl.so.2) "
      "or add its folder to LD_LIBRARY_PATH. Tried:" + errors);
  }
  try {
    sym(*n, n->getVersion, "ncclGetVersion");
    sym(*n, n->getUniqueId, "ncclGetUniqueId");
    sym(*n, n->commInitRank, "ncclCommInitRank");
    sym(*n, n->allReduce, "ncclAllReduce");
    sym(*n, n->broadcast, "ncclBroadcast");
    sym(*n, n->commDestroy, "ncclCommDestroy");
    sym(*n, n->commAbort, "ncclCommAbort");
    sym(*n, n->errorString, "ncclGetErrorString");
    sym(*n, n->lastError, "ncclGetLastError", false);
    if (n->getVersion(&n->version) != kNcclSuccess) throw CudaError("ncclGetVersion failed (NCCL at " + n->path + ")");
  } catch (...) {
    dlclose(n->lib);
    delete n;
    throw;
  }
  gNccl = n;
  return *n;
}

// "ncclAllReduce: <ncclGetErrorString> (<ncclGetLastError>)"
void checkNccl(Nccl& n, int r, const char* what) {
  if (r == kNcclSuccess) return;
  const char* s = n.errorString(r);
  std::string msg = std::string(what) + ": " + (s ? s : "NCCL error " + std::to_string(r));
  const char* last = n.lastError ? n.lastError(n.comm) : nullptr;
  if (last && *last) msg += " (" + std::string(last) + ")";
  throw CudaError(msg);
}

Nccl& comm(const char* what) {
  Nccl& n = lib();
  if (!n.comm) throw CudaError(std::string(what) + ": no NCCL communicator (ncclInit first)");
  return n;
}

// NCCL's version code: 2.18.3 is 21803 (before 2.9: 2.8.4 is 2804).
std::string versionString(int v) {
  const int major = v >= 10000 ? v / 10000 : v / 1000, minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100);
}

// A block from the device's cache, handed back when done: reuse is in stream order, as for staging.
struct Block {
  Device& d;
  void* p;
  Block(Device& dev, size_t bytes) : d(dev) {
    size_t bb = 0;
    p = d.allocManaged(bytes, &bb);
  }
  ~Block() { d.cache->give(p); }
};

}  // namespace

std::string ncclLibrary() {
  Nccl& n = lib();
  return n.path + " (NCCL " + versionString(n.version) + ")";
}

std::vector<uint8_t> ncclUniqueId() {
  Nccl& n = lib();
  NcclId id{};
  checkNccl(n, n.getUniqueId(&id), "ncclGetUniqueId");
  return std::vector<uint8_t>(id.internal, id.internal + kNcclIdBytes);
}

void ncclInit(Device& d, const uint8_t* id, int nranks, int rank) {
  Nccl& n = lib();
  if (n.comm) throw CudaError("ncclCommInitRank: this process already has an NCCL communicator");
  NcclId nid;
  std::memcpy(nid.internal, id, kNcclIdBytes);
  check(cudaSetDevice(d.id), "cudaSetDevice (before ncclCommInitRank)");
  Comm c = nullptr;
  const int r = n.commInitRank(&c, nranks, nid, rank);
  checkNccl(n, r, "ncclCommInitRank");
  n.comm = c;
}

void ncclAllReduceScaled(Device& d, const std::vector<float*>& bufs, const std::vector<size_t>& counts,
  const std::vector<bool>& hostBuf, float factor) {
  Nccl& n = comm("ncclAllReduce");
  size_t total = 0;
  bool anyHost = false;
  for (size_t i = 0; i < bufs.size(); i++) { total += counts[i]; anyHost = anyHost || hostBuf[i]; }
  if (total == 0) return;
  d.pending = true;
  if (bufs.size() == 1 && !anyHost) {  // one device array: in place, no copies
    checkNccl(n, n.allReduce(bufs[0], bufs[0], total, kNcclFloat32, kNcclSum, n.comm, d.stream), "ncclAllReduce");
    if (factor != 1.0f) { check(scale(d.stream, factor, bufs[0], (int64_t)total), "ncclAllReduce scale kernel launch"); d.launches++; }
    return;
  }
  // DDP's bucket: pack, reduce once, scale, unpack; copies are in stream order with NCCL.
  Block bucket(d, total * 4);
  float* b = static_cast<float*>(bucket.p);
  size_t off = 0;
  for (size_t i = 0; i < bufs.size(); i++) {
    check(cudaMemcpyAsync(b + off, bufs[i], counts[i] * 4, cudaMemcpyDefault, d.stream), "cudaMemcpyAsync (packing a bucket)");
    if (hostBuf[i]) { d.stagedArrays++; d.stagedBytesIn += counts[i] * 4; }
    off += counts[i];
  }
  checkNccl(n, n.allReduce(b, b, total, kNcclFloat32, kNcclSum, n.comm, d.stream), "ncclAllReduce");
  if (factor != 1.0f) { check(scale(d.stream, factor, b, (int64_t)total), "ncclAllReduce scale kernel launch"); d.launches++; }
  off = 0;
  for (size_t i = 0; i < bufs.size(); i++) {
    check(cudaMemcpyAsync(bufs[i], b + off, counts[i] * 4, cudaMemcpyDefault, d.stream), "cudaMemcpyAsync (unpacking a bucket)");
    if (hostBuf[i]) d.stagedBytesOut += counts[i] * 4;
    off += counts[i];
  }
  if (anyHost) d.synchronize();  // the host reads those arrays next
}

void ncclBroadcast(Device& d, float* buf, size_t count, bool onDevice, int root) {
  Nccl& n = comm("ncclBroadcast");
  if (count == 0) return;
  d.pending = true;
  if (onDevice) {
    checkNccl(n, n.broadcast(buf, buf, count, kNcclFloat32, root, n.comm, d.stream), "ncclBroadcast");
    return;
  }
  Block t(d, count * 4);
  check(cudaMemcpyAsync(t.p, buf, count * 4, cudaMemcpyDefault, d.stream), "cudaMemcpyAsync (staging a broadcast)");
  checkNccl(n, n.broadcast(t.p, t.p, count, kNcclFloat32, root, n.comm, d.stream), "ncclBroadcast");
  check(cudaMemcpyAsync(buf, t.p, count * 4, cudaMemcpyDefault, d.stream), "cudaMemcpyAsync (staged broadcast back)");
  d.stagedArrays++;
  d.stagedBytesIn += count * 4;
  d.stagedBytesOut += count * 4;
  d.synchronize();
}

void ncclFinish(bool abort) {
  if (!gNccl || !gNccl->comm) return;
  Nccl& n = *gNccl;
  Comm c = n.comm;
  n.comm = nullptr;
  checkNccl(n, abort ? n.commAbort(c) : n.commDestroy(c), abort ? "ncclCommAbort" : "ncclCommDestroy");
}

}  // namespace pc
