// NCCL for data-parallel training on the cuda backend: libnccl.so.2 is opened with dlopen on
// first use (no NCCL headers or package at build time, and the addon still loads where NCCL is
// missing), one communicator per process on the addon's device, every collective enqueued on
// the addon's stream. The unique id travels over the job's other collective (MPI); see
// src/train/nccl.ts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "device.h"

namespace pc {

constexpr size_t kNcclIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES

/** "<path> (NCCL x.y.z)"; loads the library first. Throws CudaError naming it and PEFT_TS_NCCL_LIB. */
std::string ncclLibrary();
/** A fresh ncclUniqueId (rank 0 makes it, every rank passes it to ncclInit). */
std::vector<uint8_t> ncclUniqueId();
/** ncclCommInitRank on d's device; blocks until all nranks ranks have joined. One per process. */
void ncclInit(Device& d, const uint8_t* id, int nranks, int rank);
/**
 * Sums bufs over every rank and multiplies by factor, in place: the arrays are packed into one
 * device block, all-reduced there with ncclAllReduce, scaled and copied back, all on d.stream
 * (not waited for). hostBuf[i]: bufs[i] is not device memory, so d is synchronized at the end.
 */
void ncclAllReduceScaled(Device& d, const std::vector<float*>& bufs, const std::vector<size_t>& counts,
  const std::vector<bool>& hostBuf, float factor);
/** root's n floats to every rank, in place (staged through a device block unless onDevice). */
void ncclBroadcast(Device& d, float* buf, size_t n, bool onDevice, int root);
/** Ends the communicator: ncclCommDestroy, or ncclCommAbort when abort (another rank failed). */
void ncclFinish(bool abort);

}  // namespace pc
