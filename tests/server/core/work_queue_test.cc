// The work queue's admission and workers, and the watchdog's deadlines, on their own threads
// (no gRPC). Every wait is bounded.
#include "server/core/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

namespace danet::service {
namespace {

using std::chrono::milliseconds;

// Polls `done` for up to five seconds.
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 500; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return done();
}

// Holds workers until Open().
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    opened_.wait_for(lock, std::chrono::seconds(10), [this] { return open_; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    opened_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
};

TEST(WorkQueueTest, AdmitsWorkersPlusQueueSizeThenRefuses) {
  WorkQueue queue(/*workers=*/1, /*queue_size=*/2);
  EXPECT_EQ(queue.capacity(), 3);
  EXPECT_TRUE(queue.TryAdmit());
  EXPECT_TRUE(queue.TryAdmit());
  EXPECT_FALSE(queue.full());
  EXPECT_TRUE(queue.TryAdmit());
  EXPECT_TRUE(queue.full());
  EXPECT_FALSE(queue.TryAdmit());
  EXPECT_EQ(queue.admitted(), 3);
  queue.Release();
  EXPECT_EQ(queue.admitted(), 2);
  EXPECT_TRUE(queue.TryAdmit());
}

TEST(WorkQueueTest, WorkWaitsForAFreeWorker) {
  WorkQueue queue(/*workers=*/1, /*queue_size=*/4);
  Gate gate;
  std::atomic<int> ran{0};
  queue.Submit([&] {
    gate.Wait();
    ++ran;
  });
  ASSERT_TRUE(Eventually([&] { return queue.waiting() == 0; })) << "the worker took it";
  queue.Submit([&] { ++ran; });
  queue.Submit([&] { ++ran; });
  EXPECT_EQ(queue.waiting(), 2);
  EXPECT_EQ(ran.load(), 0);
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return ran.load() == 3; }));
  EXPECT_EQ(queue.waiting(), 0);
}

TEST(WorkQueueTest, WorkersRunInParallel) {
  WorkQueue queue(/*workers=*/2, /*queue_size=*/0);
  std::promise<void> first_started, second_started;
  std::shared_future<void> both = second_started.get_future().share();
  queue.Submit([&] {
    first_started.set_value();
    both.wait_for(std::chrono::seconds(10));
  });
  first_started.get_future().wait_for(std::chrono::seconds(10));
  queue.Submit([&] { second_started.set_value(); });
  EXPECT_EQ(both.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

TEST(WorkQueueTest, DestructionRunsTheWorkAlreadySubmitted) {
  std::atomic<int> ran{0};
  {
    WorkQueue queue(/*workers=*/1, /*queue_size=*/8);
    for (int i = 0; i < 5; ++i) {
      queue.Submit([&] {
        std::this_thread::sleep_for(milliseconds(5));
        ++ran;
      });
    }
  }
  EXPECT_EQ(ran.load(), 5);
}

TEST(WorkQueueTest, OnIdleRunsOnlyWhenNoWorkIsRunningOrWaiting) {
  std::atomic<int> idle{0};
  Gate gate;
  std::promise<void> first_started;
  {
    WorkQueue queue(/*workers=*/2, /*queue_size=*/4, [&] { ++idle; });
    // Two pieces of work at once: the first to end leaves the other running, so only the
    // second's end is idle.
    queue.Submit([&] {
      first_started.set_value();
      gate.Wait();
    });
    first_started.get_future().wait_for(std::chrono::seconds(10));
    std::promise<void> second_done;
    queue.Submit([&] { second_done.set_value(); });
    second_done.get_future().wait_for(std::chrono::seconds(10));
    std::this_thread::sleep_for(milliseconds(20));
    EXPECT_EQ(idle.load(), 0);
    gate.Open();
    EXPECT_TRUE(Eventually([&] { return idle.load() == 1; }));
    // Work after going idle makes the queue idle once more when it ends.
    queue.Submit([] {});
    EXPECT_TRUE(Eventually([&] { return idle.load() == 2; }));
  }
  EXPECT_EQ(idle.load(), 2);
}

TEST(WorkQueueTest, OnIdleWaitsForItsDelayAndWorkWithinItPostponesIt) {
  std::atomic<int> idle{0};
  {
    // Case after case within the delay: never idle long enough.
    WorkQueue queue(/*workers=*/1, /*queue_size=*/4, [&] { ++idle; }, std::chrono::seconds(30));
    for (int i = 0; i < 3; ++i) {
      std::promise<void> done;
      queue.Submit([&] { done.set_value(); });
      done.get_future().wait_for(std::chrono::seconds(10));
    }
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_EQ(idle.load(), 0);
  }  // a worker waiting out its delay stops at once with the queue
  EXPECT_EQ(idle.load(), 0);
  WorkQueue queue(/*workers=*/1, /*queue_size=*/4, [&] { ++idle; }, milliseconds(50));
  queue.Submit([] {});
  EXPECT_TRUE(Eventually([&] { return idle.load() == 1; }));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(idle.load(), 1);  // once per idle spell
}

// A watchdog entry with a settable deadline that counts its expiries.
class FakeEntry : public Watchdog::Entry {
 public:
  explicit FakeEntry(Watchdog::Clock::time_point deadline) : deadline_(deadline) {}
  Watchdog::Clock::time_point deadline() const override { return deadline_.load(); }
  void Expire() override {
    ++expired_;
    deadline_ = Watchdog::Clock::time_point::max();  // done: the watchdog forgets it
  }
  void set_deadline(Watchdog::Clock::time_point d) { deadline_ = d; }
  int expired() const { return expired_.load(); }

 private:
  std::atomic<Watchdog::Clock::time_point> deadline_;
  std::atomic<int> expired_{0};
};

TEST(WatchdogTest, ExpiresEntriesOnceTheirDeadlinePasses) {
  Watchdog watchdog;
  const auto now = Watchdog::Clock::now();
  auto soon = std::make_shared<FakeEntry>(now + milliseconds(50));
  auto later = std::make_shared<FakeEntry>(now + std::chrono::hours(1));
  watchdog.Watch(later);
  watchdog.Watch(soon);
  EXPECT_EQ(watchdog.watched(), 2);
  EXPECT_TRUE(Eventually([&] { return soon->expired() == 1; }));
  EXPECT_EQ(later->expired(), 0);
  EXPECT_TRUE(Eventually([&] { return watchdog.watched() == 1; })) << "done entries are dropped";
}

TEST(WatchdogTest, AMovedDeadlineIsReadAgain) {
  Watchdog watchdog;
  auto entry = std::make_shared<FakeEntry>(Watchdog::Clock::now() + milliseconds(200));
  watchdog.Watch(entry);
  entry->set_deadline(Watchdog::Clock::now() + std::chrono::hours(1));  // a chunk arrived
  std::this_thread::sleep_for(milliseconds(400));
  EXPECT_EQ(entry->expired(), 0);
  entry->set_deadline(Watchdog::Clock::now());
  watchdog.Watch(std::make_shared<FakeEntry>(Watchdog::Clock::time_point::max()));  // a wake-up
  EXPECT_TRUE(Eventually([&] { return entry->expired() == 1; }));
}

TEST(WatchdogTest, EntriesAreHeldWeakly) {
  Watchdog watchdog;
  auto entry = std::make_shared<FakeEntry>(Watchdog::Clock::now() + std::chrono::hours(1));
  std::weak_ptr<FakeEntry> weak = entry;
  watchdog.Watch(entry);
  entry.reset();
  EXPECT_TRUE(weak.expired()) << "the watchdog does not keep entries alive";
  watchdog.Watch(std::make_shared<FakeEntry>(Watchdog::Clock::time_point::max()));  // a wake-up
  EXPECT_TRUE(Eventually([&] { return watchdog.watched() == 0; }));
}

}  // namespace
}  // namespace danet::service
