#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace peft {
namespace {

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake, done;
  const std::function<void(size_t, size_t)>* job = nullptr;
  size_t n = 0, parts = 1;
  unsigned long gen = 0;
  int pending = 0;
  bool stop = false;

  void work(int id) {
    unsigned long seen = 0;
    for (;;) {
      const std::function<void(size_t, size_t)>* f;
      size_t total, p;
      {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, [&] { return stop || gen != seen; });
        if (stop) return;
        seen = gen;
        f = job; total = n; p = parts;
      }
      if ((size_t)id < p) {
        size_t b = total * id / p, e = total * (id + 1) / p;
        if (b < e) (*f)(b, e);
      }
      std::lock_guard<std::mutex> lk(mu);
      if (--pending == 0) done.notify_one();
    }
  }

  ~Pool() {
    { std::lock_guard<std::mutex> lk(mu); stop = true; }
    wake.notify_all();
    for (auto& t : workers) t.join();
  }
};

Pool* pool = nullptr;
int nThreads = 1;
std::mutex runMu;  // one parallel job at a time (worker threads of Node could call in)

}  // namespace

void poolInit(int threads) {
  if (threads < 1) threads = 1;
  if (pool && nThreads == threads) return;
  delete pool;
  pool = new Pool();
  nThreads = threads;
  for (int i = 1; i < threads; i++) pool->workers.emplace_back([i] { pool->work(i); });
}

int poolThreads() { return nThreads; }

void parallelFor(size_t n, size_t minPerThread, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  size_t parts = nThreads;
  if (minPerThread > 0 && n / minPerThread < parts) parts = n / minPerThread;
  if (parts <= 1 || !pool) { fn(0, n); return; }
  std::unique_lock<std::mutex> run(runMu, std::try_to_lock);
  if (!run.owns_lock()) { fn(0, n); return; }  // nested or concurrent call: run inline
  {
    std::lock_guard<std::mutex> lk(pool->mu);
    pool->job = &fn; pool->n = n; pool->parts = parts;
    pool->pending = nThreads - 1;
    pool->gen++;
  }
  pool->wake.notify_all();
  fn(0, n / parts);
  std::unique_lock<std::mutex> lk(pool->mu);
  pool->done.wait(lk, [] { return pool->pending == 0; });
}

}  // namespace peft
