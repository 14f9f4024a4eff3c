#include "pool.h"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace peft {
namespace {

// Waking a thread blocked on a condition variable costs ~15-20 us on the VMs we run on, more
// than a 24k-element GELU takes on one core; decoding issues hundreds of such calls a step.
// So each side spins briefly (yielding the core, so OpenBLAS's or oneDNN's threads still get
// it) before it blocks: calls that follow each other closely never pay the wake-up.
constexpr auto kSpin = std::chrono::microseconds(50);

template <class Ready>
bool spinUntil(Ready ready) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 16; i++) {
      if (ready()) return true;
      _mm_pause();
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
    std::this_thread::yield();
  }
}

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake, done;
  const std::function<void(size_t, size_t)>* job = nullptr;
  size_t n = 0, parts = 1;
  std::atomic<unsigned long> gen{0};  // bumped (release) after job, n, parts are set
  std::atomic<int> pending{0};
  std::atomic<bool> stop{false};

  void work(int id) {
    unsigned long seen = 0;
    for (;;) {
      if (!spinUntil([&] { return stop.load(std::memory_order_acquire) || gen.load(std::memory_order_acquire) != seen; })) {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, [&] { return stop.load() || gen.load() != seen; });
      }
      if (stop.load()) return;
      seen = gen.load(std::memory_order_acquire);
      const std::function<void(size_t, size_t)>* f = job;
      const size_t total = n, p = parts;
      if ((size_t)id < p) {
        size_t b = total * id / p, e = total * (id + 1) / p;
        if (b < e) (*f)(b, e);
      }
      if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu);  // the caller may be about to block on `done`
        done.notify_one();
      }
    }
  }

  ~Pool() {
    { std::lock_guard<std::mutex> lk(mu); stop = true; }
    wake.notify_all();
    for (auto& t : workers) t.join();
  }
};

// One parallel job at a time (Node's worker threads can call in too); held while the pool is
// replaced, so a job never sees a pool or thread count that changes under it.
std::mutex runMu;
Pool* pool = nullptr;
std::atomic<int> nThreads{1};

}  // namespace

void poolInit(int threads) {
  if (threads < 1) threads = 1;
  std::lock_guard<std::mutex> run(runMu);
  if (pool && nThreads == threads) return;
  delete pool;
  pool = new Pool();
  nThreads = threads;
  for (int i = 1; i < threads; i++) pool->workers.emplace_back([p = pool, i] { p->work(i); });
}

int poolThreads() { return nThreads; }

void parallelFor(size_t n, size_t minPerThread, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  if (nThreads <= 1 || (minPerThread > 0 && n / minPerThread < 2)) { fn(0, n); return; }
  std::unique_lock<std::mutex> run(runMu, std::try_to_lock);
  if (!run.owns_lock() || !pool) { fn(0, n); return; }  // nested or concurrent call: run inline
  const int threads = nThreads;
  size_t parts = threads;
  if (minPerThread > 0 && n / minPerThread < parts) parts = n / minPerThread;
  // Every worker has finished the previous job (pending reached 0), so none reads these now.
  pool->job = &fn; pool->n = n; pool->parts = parts;
  pool->pending.store(threads - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(pool->mu);  // a worker checking its wait predicate sees gen before or after, whole
    pool->gen.fetch_add(1, std::memory_order_release);
  }
  pool->wake.notify_all();
  fn(0, n / parts);
  if (spinUntil([] { return pool->pending.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lk(pool->mu);
  pool->done.wait(lk, [] { return pool->pending.load() == 0; });
}

}  // namespace peft
