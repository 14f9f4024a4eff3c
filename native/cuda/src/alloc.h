// A caching block allocator over a raw allocator (cudaMallocManaged in the addon, malloc in
// the host unit test). Sizes are rounded up to buckets (at most 1/8 over, steps of at most
// 2 MiB); a released block goes to its bucket's free list and is handed out again for the
// same bucket. Every block ever obtained (live or cached) is kept in an address-ordered
// map, so any pointer range can be checked for lying inside one of our blocks (typed-array
// subviews included). Thread safe (one mutex); host-only code.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace pc {

struct CacheStats {
  size_t reservedBytes = 0;  // held from the raw allocator (live + cached)
  size_t liveBytes = 0;      // handed out and not yet released
  size_t cachedBytes = 0;    // in free lists
  size_t peakLiveBytes = 0, peakReservedBytes = 0;  // highs since construction or resetPeak()
  size_t blocks = 0;
  uint64_t allocs = 0, reuses = 0, rawAllocs = 0, rawFrees = 0;
};

class BlockCache {
 public:
  using RawAlloc = std::function<void*(size_t)>;  // nullptr on failure
  using RawFree = std::function<void(void*)>;

  BlockCache(RawAlloc rawAlloc, RawFree rawFree) : rawAlloc_(std::move(rawAlloc)), rawFree_(std::move(rawFree)) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  /** Bucket size for a request: >= bytes, >= 512, a multiple of 512. */
  static size_t bucket(size_t bytes);

  /**
   * A block of at least `bytes` (its bucket size goes to *blockBytes). Reuses a cached block
   * of the same bucket, else asks the raw allocator, and on failure frees every cached block
   * and asks once more. nullptr when that fails too. *fresh says whether it is new memory.
   */
  void* take(size_t bytes, size_t* blockBytes = nullptr, bool* fresh = nullptr);
  /** Returns a block (its start address) to the cache: its bucket size, 0 if p is not a live block. */
  size_t give(void* p);
  /** True when [p, p + bytes) lies inside one block we hold (live or cached). */
  bool contains(const void* p, size_t bytes) const;
  /** Frees every cached block through the raw allocator; returns the bytes freed. */
  size_t trim();
  CacheStats stats() const;
  /** Starts new peak measurements from the current live and reserved bytes. */
  void resetPeak() {
    std::lock_guard<std::mutex> g(mu_);
    st_.peakLiveBytes = st_.liveBytes;
    st_.peakReservedBytes = st_.reservedBytes;
  }

 private:
  struct Block { size_t bytes; bool live; };
  RawAlloc rawAlloc_;
  RawFree rawFree_;
  mutable std::mutex mu_;
  std::map<uintptr_t, Block> blocks_;
  std::map<size_t, std::vector<void*>> free_;
  CacheStats st_;
  size_t trimLocked();
  void notePeaks() {
    if (st_.liveBytes > st_.peakLiveBytes) st_.peakLiveBytes = st_.liveBytes;
    if (st_.reservedBytes > st_.peakReservedBytes) st_.peakReservedBytes = st_.reservedBytes;
  }
};

}  // namespace pc
