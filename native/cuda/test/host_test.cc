// Host-only checks of the parts of the CUDA addon that need no GPU: the caching allocator
// (native/cuda/src/alloc.cc) over malloc (bucket rounding, reuse of released blocks, range
// lookups for sub-views, trim and the trim-and-retry path when the raw allocator fails) and
// the strided walks (walk.h) against plain nested loops. Built and run by `npm run build:cuda`
// and by test/cuda.test.ts; exits non-zero on the first failure.
#include <cstdio>
#include <cstdlib>

#include <vector>

#include "../src/alloc.h"
#include "../src/walk.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

// Offsets of every element of a view by nested loops (the reference backend's walk).
static void naiveOffsets(const std::vector<int64_t>& shape, const std::vector<int64_t>& st, std::vector<int64_t>& out) {
  out.clear();
  int64_t total = 1;
  for (int64_t n : shape) total *= n;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t i = 0; i < total; i++) {
    int64_t o = 0;
    for (size_t d = 0; d < shape.size(); d++) o += idx[d] * st[d];
    out.push_back(o);
    for (size_t d = shape.size(); d-- > 0;) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
}

static void checkWalk(const std::vector<int64_t>& shape, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb,
  int expectDims) {
  pc::Walk w;
  const bool ok = pc::makeWalk(shape, sa, &sb, w);
  CHECK(ok);
  if (!ok) return;
  if (expectDims > 0) CHECK(w.nd == expectDims);
  std::vector<int64_t> ea, eb;
  naiveOffsets(shape, sa, ea);
  naiveOffsets(shape, sb, eb);
  for (size_t i = 0; i < ea.size(); i++) {
    int64_t oa, ob, oa64, ob64;
    pc::walkOffsets<uint32_t>((uint32_t)i, w, oa, ob);
    pc::walkOffsets<int64_t>((int64_t)i, w, oa64, ob64);
    if (oa != ea[i] || ob != eb[i] || oa64 != oa || ob64 != ob) {
      std::fprintf(stderr, "walk mismatch at %zu: %lld/%lld vs %lld/%lld\n", i, (long long)oa, (long long)ob,
        (long long)ea[i], (long long)eb[i]);
      failures++;
      return;
    }
  }
}

static void walks() {
  checkWalk({2, 3, 4}, {12, 4, 1}, {12, 4, 1}, 1);             // contiguous: one dim
  checkWalk({5, 33}, {33, 1}, {0, 1}, 2);                       // row broadcast
  checkWalk({5, 33}, {33, 1}, {1, 0}, 2);                       // column broadcast
  checkWalk({1, 7, 1, 3}, {21, 3, 3, 1}, {0, 0, 0, 1}, 2);      // size-1 dims dropped
  checkWalk({2, 5, 3, 7}, {105, 7, 35, 1}, {105, 21, 7, 1}, 4);  // permuted [0,2,1,3]
  checkWalk({4, 1, 7}, {7, 0, 1}, {0, 7, 1}, 2);
  checkWalk({2, 1, 3, 257}, {771, 0, 257, 1}, {0, 3, 1, 0}, 3);
  checkWalk({3, 70000}, {0, 1}, {70000, 1}, 2);                 // overlapping scatter view
  checkWalk({257, 300}, {1, 257}, {300, 1}, 2);                 // transpose
  checkWalk({}, {}, {}, 1);                                      // scalar
  checkWalk({4, 7}, {-7, -1}, {7, 1}, 0);                       // negative strides still walk
  checkWalk({2, 2, 2, 2, 2, 2, 2, 2}, {1, 2, 4, 8, 16, 32, 64, 128}, {0, 0, 0, 0, 0, 0, 0, 0}, 8);
  pc::Walk w;
  std::vector<int64_t> nine(9, 2), rev{1, 2, 4, 8, 16, 32, 64, 128, 256};
  CHECK(!pc::makeWalk(nine, rev, nullptr, w));                  // 9 unmergeable dims are refused
  std::vector<int64_t> cont{256, 128, 64, 32, 16, 8, 4, 2, 1};
  CHECK(pc::makeWalk(nine, cont, nullptr, w) && w.nd == 1 && w.shape[0] == 512);
  int64_t lo, hi;
  pc::viewExtent({4, 9, 33}, {297, 33, 1}, lo, hi);
  CHECK(lo == 0 && hi == 4 * 297 - 1);
  pc::viewExtent({4, 7}, {-7, -1}, lo, hi);
  CHECK(lo == -27 && hi == 0);
  pc::viewExtent({3, 0}, {1, 1}, lo, hi);
  CHECK(hi < lo);
}

int main() {
  using pc::BlockCache;
  walks();
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

  if (failures) { std::fprintf(stderr, "host_test: %d failure(s)\n", failures); return 1; }
  std::printf("host_test: ok\n");
  return 0;
}
