// Scheduling for the service: a fixed pool of worker threads with a bounded admission count, and
// a watchdog that ends uploads that stall.
//
// Requests are admitted to the queue when their upload is complete, so that only work that is
// computing or waiting to compute holds a slot (a client that opens a stream and sends nothing
// cannot lock others out); a server whose queue is already full still says RESOURCE_EXHAUSTED
// at the header, before any upload. LibTorch parallelises inside each model; on the 2-core
// machines we measured, one worker with 2 threads serves fastest.
//
// Thread safety: every method of both classes may be called from any thread.
#ifndef DANET_SERVER_CORE_WORK_QUEUE_H_
#define DANET_SERVER_CORE_WORK_QUEUE_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace danet::service {

class WorkQueue {
 public:
  // `workers` threads run work; at most `workers + queue_size` requests are admitted at once.
  // `on_idle`, if set, runs on a worker once the queue has stayed idle (no work running or
  // waiting) for `idle_delay` after a piece of work; work that arrives sooner postpones it (the
  // service hands freed memory back to the kernel there, and a client sending case after case
  // keeps the memory it reuses).
  WorkQueue(int workers, int queue_size, std::function<void()> on_idle = nullptr,
            std::chrono::milliseconds idle_delay = std::chrono::milliseconds(0));
  // Runs the work already submitted, then joins the workers.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Admits one request, or returns false when `workers + queue_size` are already admitted.
  bool TryAdmit();
  // Ends an admitted request (after its work ran, or when it failed before submitting).
  void Release();
  // Queues work of an admitted request.
  void Submit(std::function<void()> work);

  int admitted() const;
  bool full() const { return admitted() >= capacity_; }
  int waiting() const;  // submitted, not yet started
  int capacity() const { return capacity_; }

 private:
  void Loop();

  const int capacity_;
  const std::function<void()> on_idle_;
  const std::chrono::milliseconds idle_delay_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> work_;
  int admitted_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Calls Expire on watched entries once their deadline has passed, on its own thread, so that no
// gRPC callback ever waits for a timer. A deadline is read again at every check, so it may move
// later at any time (an upload that receives a chunk) without telling the watchdog; it wakes at
// the earliest deadline it last read.
class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  class Entry {
   public:
    virtual ~Entry() = default;
    // When Expire is due; Clock::time_point::max() once the entry needs no more watching (the
    // watchdog then forgets it). Called with the watchdog's lock held: read atomics only, take
    // no lock.
    virtual Clock::time_point deadline() const = 0;
    // Called on the watchdog thread with no watchdog lock held, while the entry's deadline()
    // has passed, and again at later checks until deadline() moves or becomes max().
    virtual void Expire() = 0;
  };

  Watchdog();
  // Joins the thread; entries still watched are not expired.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Watches `entry` until it is destroyed or its deadline() is max(). Held weakly: the watchdog
  // keeps an entry alive only while it calls Expire.
  void Watch(std::weak_ptr<Entry> entry);
  int watched() const;

 private:
  void Loop();
  // With mutex_ held: drops entries that are gone or done, returns those due now and sets
  // `next` to the earliest deadline of the others.
  std::vector<std::shared_ptr<Entry>> Due(Clock::time_point now, Clock::time_point* next);

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::weak_ptr<Entry>> entries_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace danet::service

#endif  // DANET_SERVER_CORE_WORK_QUEUE_H_
