#include "server/service/work_queue.h"

namespace danet::service {

WorkQueue::WorkQueue(int workers, int queue_size) : capacity_(workers + queue_size) {
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
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !work_.empty(); });
      if (work_.empty()) return;  // stopping, nothing left
      work = std::move(work_.front());
      work_.pop_front();
    }
    work();
  }
}

}  // namespace danet::service
