#include "parallel/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/threads.h"

namespace spatialsoftmax {
namespace {

// The variable is read once; an invalid value is an error on every call
// that needs the default, until set_num_threads() replaces it.
int default_threads() {
  if (const char* env = std::getenv("SPATIALSOFTMAX_NUM_THREADS"); env && *env) {
    int n = 0;
    const auto [end, ec] = std::from_chars(env, env + std::strlen(env), n);
    if (ec == std::errc() && *end == '\0' && n >= 1 && n <= kMaxThreads) return n;
    throw Error("SPATIALSOFTMAX_NUM_THREADS = '" + std::string(env) +
                "', expected an integer in [1, " + std::to_string(kMaxThreads) + "]");
  }
  return static_cast<int>(
      std::clamp<unsigned>(std::thread::hardware_concurrency(), 1u, unsigned{kMaxThreads}));
}

// 0 until set_num_threads() is called.
std::atomic<int>& thread_override() {
  static std::atomic<int> n{0};
  return n;
}

thread_local bool inside_block = false;
// A ThreadCount's count on this thread, 0 if none.
thread_local int call_threads = 0;

// Workers sleep until a job is posted; a job is a block counter shared by
// the caller and the workers it woke.
class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }

  void run(std::int64_t blocks, const std::function<void(std::int64_t)>& fn, int threads) {
    std::lock_guard<std::mutex> one_job_at_a_time(job_mutex_);
    grow(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      blocks_ = blocks;
      chunk_ = std::max<std::int64_t>(1, blocks / (std::int64_t{threads} * 8));
      next_.store(0);
      helpers_ = threads - 1;
      busy_ = helpers_;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    fn_ = nullptr;
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void grow(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      const int id = static_cast<int>(workers_.size());
      workers_.emplace_back([this, id] { loop(id); });
    }
  }

  // Threads take runs of consecutive blocks, so that a kernel that
  // prefetches the next block's data mostly prefetches for itself; a run
  // is an eighth of a thread's share, small enough to even out.
  void work() {
    inside_block = true;
    for (std::int64_t first; (first = next_.fetch_add(chunk_)) < blocks_;) {
      const std::int64_t end = std::min(blocks_, first + chunk_);
      for (std::int64_t b = first; b < end; ++b) (*fn_)(b);
    }
    inside_block = false;
  }

  void loop(int id) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (generation_ != seen && id < helpers_); });
        if (stop_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(std::int64_t)>* fn_ = nullptr;
  std::int64_t blocks_ = 0;
  std::int64_t chunk_ = 1;
  std::atomic<std::int64_t> next_{0};
  int helpers_ = 0;
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace

int num_threads() {
  if (const int n = thread_override().load(); n > 0) return n;
  static const int from_environment = default_threads();  // a throw leaves it unset
  return from_environment;
}

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads) {
    throw Error("set_num_threads: n = " + std::to_string(n) + ", expected in [1, " +
                std::to_string(kMaxThreads) + "]");
  }
  thread_override().store(n);
}

namespace parallel {

ThreadCount::ThreadCount(int threads) : previous_(call_threads) {
  if (threads < 0 || threads > kMaxThreads) {
    throw Error("ExecutionContext: num_threads = " + std::to_string(threads) +
                ", expected in [0, " + std::to_string(kMaxThreads) + "] (0: num_threads())");
  }
  if (threads > 0) call_threads = threads;
}

ThreadCount::~ThreadCount() { call_threads = previous_; }

void for_each_block(std::int64_t blocks, const std::function<void(std::int64_t)>& fn) {
  const int wanted = call_threads > 0 ? call_threads : num_threads();
  const int threads =
      static_cast<int>(std::min<std::int64_t>(wanted, std::max<std::int64_t>(blocks, 1)));
  if (threads <= 1 || inside_block) {
    for (std::int64_t b = 0; b < blocks; ++b) fn(b);
    return;
  }
  Pool::instance().run(blocks, fn, threads);
}

}  // namespace parallel
}  // namespace spatialsoftmax
