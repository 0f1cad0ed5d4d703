// A fixed pool of worker threads and a bounded admission count. Requests are admitted when
// their header arrives (so a full server says RESOURCE_EXHAUSTED at once, before any upload),
// and their work runs on a worker when the upload is complete. LibTorch parallelises inside each
// model; on the 2-core machines we measured, one worker with 2 threads serves fastest.
//
// Thread safety: every method may be called from any thread.
#ifndef DANET_SERVER_SERVICE_WORK_QUEUE_H_
#define DANET_SERVER_SERVICE_WORK_QUEUE_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace danet::service {

class WorkQueue {
 public:
  // `workers` threads run work; at most `workers + queue_size` requests are admitted at once.
  WorkQueue(int workers, int queue_size);
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
  int waiting() const;  // submitted, not yet started
  int capacity() const { return capacity_; }

 private:
  void Loop();

  const int capacity_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> work_;
  int admitted_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_WORK_QUEUE_H_
