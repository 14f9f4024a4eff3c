// Host-only check of the caching allocator (native/cuda/src/alloc.cc) over malloc: bucket
// rounding, reuse of released blocks, range lookups for sub-views, trim and the
// trim-and-retry path when the raw allocator fails. Built and run by `npm run build:cuda`
// and by test/cuda.test.ts; exits non-zero on the first failure.
#include <cstdio>
#include <cstdlib>

#include "../src/alloc.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

int main() {
  using pc::BlockCache;
  // buckets: >= request, multiple of 512, at most 1/8 (or 2 MiB) over
  CHECK(BlockCache::bucket(0) == 512);
  CHECK(BlockCache::bucket(1) == 512);
  CHECK(BlockCache::bucket(512) == 512);
  CHECK(BlockCache::bucket(513) == 1024);
  CHECK(BlockCache::bucket(4096) == 4096);
  CHECK(BlockCache::bucket(4097) == 4608);
  for (size_t n = 1; n < ((size_t)1 << 34); n = n * 3 + 7) {
    const size_t b = BlockCache::bucket(n);
    CHECK(b >= n && b % 512 == 0);
    CHECK(b - n <= (n / 8 > 512 ? n / 8 : 512));
    CHECK(b - n < ((size_t)2 << 20));
  }

  int failNext = 0;
  size_t rawLive = 0;
  BlockCache c(
    [&](size_t b) -> void* {
      if (failNext > 0) { failNext--; return nullptr; }
      rawLive += b;
      return std::malloc(b);
    },
    [&](void* p) { std::free(p); });

  size_t bb = 0; bool fresh = false;
  char* a = static_cast<char*>(c.take(1000, &bb, &fresh));
  CHECK(a && bb == 1024 && fresh);
  char* b = static_cast<char*>(c.take(100000, &bb, &fresh));
  CHECK(b && fresh && bb >= 100000);
  // ranges: inside, sub-views, one past the end, outside
  CHECK(c.contains(a, 1000));
  CHECK(c.contains(a + 12, 988));
  CHECK(c.contains(a + 1024, 0));
  CHECK(!c.contains(a + 1020, 8));
  CHECK(c.contains(b + 50000, 50000));
  int stackVar = 0;
  CHECK(!c.contains(&stackVar, sizeof stackVar));
  char* heap = static_cast<char*>(std::malloc(64));
  CHECK(!c.contains(heap, 64));
  std::free(heap);

  // release and reuse: same bucket comes back, a different bucket is new memory
  CHECK(c.give(a));
  CHECK(!c.give(a));          // double release is refused
  CHECK(!c.give(a + 4));      // not a block start
  CHECK(c.stats().cachedBytes == 1024);
  CHECK(c.contains(a, 1024)); // cached blocks still resolve
  char* a2 = static_cast<char*>(c.take(900, &bb, &fresh));
  CHECK(a2 == a && !fresh && bb == 1024);
  char* d = static_cast<char*>(c.take(3000, &bb, &fresh));
  CHECK(d && d != a && fresh);
  pc::CacheStats s = c.stats();
  CHECK(s.allocs == 4 && s.reuses == 1 && s.rawAllocs == 3 && s.blocks == 3);
  CHECK(s.liveBytes == s.reservedBytes && s.cachedBytes == 0);

  // trim frees cached blocks only; their ranges are forgotten
  CHECK(c.give(d));
  CHECK(c.trim() == BlockCache::bucket(3000));
  CHECK(!c.contains(d, 1));
  CHECK(c.stats().blocks == 2 && c.stats().rawFrees == 1);

  // raw failure: cached blocks are trimmed and the request retried once
  CHECK(c.give(b));
  failNext = 1;
  char* e = static_cast<char*>(c.take(5000, &bb, &fresh));
  CHECK(e && fresh);
  CHECK(c.stats().cachedBytes == 0 && c.stats().rawFrees == 2);
  failNext = 2;
  CHECK(c.take(7000) == nullptr);  // fails twice: nothing left to trim, gives up
  failNext = 0;

  CHECK(c.give(a2) && c.give(e));
  CHECK(c.stats().liveBytes == 0);
  c.trim();
  CHECK(c.stats().reservedBytes == 0 && c.stats().blocks == 0);

  if (failures) { std::fprintf(stderr, "alloc_test: %d failure(s)\n", failures); return 1; }
  std::printf("alloc_test: ok\n");
  return 0;
}
