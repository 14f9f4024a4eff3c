#include "alloc.h"

namespace pc {

size_t BlockCache::bucket(size_t bytes) {
  if (bytes <= 512) return 512;
  size_t p = 512;
  while (p * 2 <= bytes) p *= 2;  // largest power of two <= bytes
  size_t step = p / 8;
  if (step < 512) step = 512;
  if (step > ((size_t)2 << 20)) step = (size_t)2 << 20;
  return (bytes + step - 1) / step * step;
}

void* BlockCache::take(size_t bytes, size_t* blockBytes, bool* fresh) {
  const size_t b = bucket(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  st_.allocs++;
  auto it = free_.find(b);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    blocks_[(uintptr_t)p].live = true;
    st_.reuses++;
    st_.cachedBytes -= b;
    st_.liveBytes += b;
    notePeaks();
    if (blockBytes) *blockBytes = b;
    if (fresh) *fresh = false;
    return p;
  }
  void* p = rawAlloc_(b);
  if (!p && trimLocked() > 0) p = rawAlloc_(b);
  if (!p) return nullptr;
  blocks_[(uintptr_t)p] = Block{b, true};
  st_.rawAllocs++;
  st_.blocks++;
  st_.reservedBytes += b;
  st_.liveBytes += b;
  notePeaks();
  if (blockBytes) *blockBytes = b;
  if (fresh) *fresh = true;
  return p;
}

size_t BlockCache::give(void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find((uintptr_t)p);
  if (it == blocks_.end() || !it->second.live) return 0;
  it->second.live = false;
  free_[it->second.bytes].push_back(p);
  st_.liveBytes -= it->second.bytes;
  st_.cachedBytes += it->second.bytes;
  return it->second.bytes;
}

bool BlockCache::contains(const void* p, size_t bytes) const {
  const uintptr_t a = (uintptr_t)p;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.upper_bound(a);  // first block starting after a
  if (it == blocks_.begin()) return false;
  --it;
  return a >= it->first && a - it->first <= it->second.bytes && bytes <= it->second.bytes - (a - it->first);
}

size_t BlockCache::trimLocked() {
  size_t freed = 0;
  for (auto& [b, list] : free_) {
    for (void* p : list) {
      blocks_.erase((uintptr_t)p);
      rawFree_(p);
      freed += b;
      st_.rawFrees++;
      st_.blocks--;
    }
    list.clear();
  }
  st_.reservedBytes -= freed;
  st_.cachedBytes -= freed;
  return freed;
}

size_t BlockCache::trim() {
  std::lock_guard<std::mutex> lock(mu_);
  return trimLocked();
}

CacheStats BlockCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return st_;
}

}  // namespace pc
