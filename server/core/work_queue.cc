#include "server/core/work_queue.h"

#include <algorithm>
#include <utility>

namespace danet::service {

WorkQueue::WorkQueue(int workers, int queue_size, std::function<void()> on_idle,
                     std::chrono::milliseconds idle_delay)
    : capacity_(workers + queue_size), on_idle_(std::move(on_idle)), idle_delay_(idle_delay) {
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkQueue::~WorkQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool WorkQueue::TryAdmit() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (admitted_ >= capacity_) return false;
  ++admitted_;
  return true;
}

void WorkQueue::Release() {
  std::lock_guard<std::mutex> lock(mutex_);
  --admitted_;
}

void WorkQueue::Submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    work_.push_back(std::move(work));
  }
  ready_.notify_one();
}

int WorkQueue::admitted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return admitted_;
}

int WorkQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(work_.size());
}

void WorkQueue::Loop() {
  const auto has_work = [this] { return stopping_ || !work_.empty(); };
  bool idle_pending = false;  // this worker left the queue idle and owes on_idle_ a call
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (idle_pending) {
        idle_pending = false;
        if (!ready_.wait_for(lock, idle_delay_, has_work)) {
          // Idle for the whole delay, unless another worker took up work meanwhile.
          if (running_ > 0) continue;
          lock.unlock();
          on_idle_();
          continue;
        }
      } else {
        ready_.wait(lock, has_work);
      }
      if (work_.empty()) return;  // stopping, nothing left
      work = std::move(work_.front());
      work_.pop_front();
      ++running_;
    }
    work();
    work = nullptr;  // what the work captured goes before on_idle_ looks for free memory
    std::lock_guard<std::mutex> lock(mutex_);
    idle_pending = --running_ == 0 && work_.empty() && on_idle_;
  }
}

Watchdog::Watchdog() : thread_([this] { Loop(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::Watch(std::weak_ptr<Entry> entry) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_back(std::move(entry));
  }
  wake_.notify_all();  // its deadline may be earlier than the one the thread waits for
}

int Watchdog::watched() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(entries_.size());
}

std::vector<std::shared_ptr<Watchdog::Entry>> Watchdog::Due(Clock::time_point now,
                                                            Clock::time_point* next) {
  std::vector<std::shared_ptr<Entry>> due;
  *next = Clock::time_point::max();
  for (size_t i = 0; i < entries_.size();) {
    std::shared_ptr<Entry> entry = entries_[i].lock();
    const Clock::time_point deadline = entry ? entry->deadline() : Clock::time_point::max();
    if (deadline == Clock::time_point::max()) {
      entries_[i] = std::move(entries_.back());
      entries_.pop_back();
      continue;
    }
    if (deadline <= now) {
      due.push_back(std::move(entry));
    } else {
      *next = std::min(*next, deadline);
    }
    ++i;
  }
  return due;
}

void Watchdog::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    Clock::time_point next;
    std::vector<std::shared_ptr<Entry>> due = Due(Clock::now(), &next);
    if (!due.empty()) {
      // Expire may end a call, and the last reference may delete an entry: neither under the
      // lock that Watch and deadline() readers share.
      lock.unlock();
      for (const std::shared_ptr<Entry>& entry : due) entry->Expire();
      due.clear();
      lock.lock();
      continue;
    }
    if (next == Clock::time_point::max()) {
      wake_.wait(lock);
    } else {
      wake_.wait_until(lock, next);
    }
  }
}

}  // namespace danet::service
