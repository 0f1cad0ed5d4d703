// Host memory and threads (models/bank/device.h): what TuneHostMemory changes in glibc's malloc,
// when HugePageHint speaks, and that RunOnOwnThread's thread takes LibTorch's pool with it.
#include "models/bank/device.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>
#endif

namespace danet::models {
namespace {

#if defined(__linux__) && defined(__GLIBC__)
TEST(HostMemoryTest, FreedBuffersUpTo32MiBStayInTheHeap) {
  TuneHostMemory();
  // 16 MiB: glibc's default would map it on its own (threshold 128 KiB until a free raises it).
  const size_t mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(size_t{16} << 20);
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before);  // not a mapping of its own: from the heap
  std::free(block);
  // Still held after the free (the trim threshold is 1 GiB), handed back on request.
  EXPECT_GE(mallinfo2().fordblks, size_t{16} << 20);
  ReleaseFreeHostMemory();
  // Beyond 32 MiB malloc maps blocks on its own again.
  void* large = std::malloc(size_t{40} << 20);
  ASSERT_NE(large, nullptr);
  EXPECT_GE(mallinfo2().hblkhd, mapped_before + (size_t{40} << 20));
  std::free(large);
}

// The arenas malloc_info lists (one <heap nr="..."> element each).
int CountArenas() {
  char* text = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&text, &size);
  malloc_info(0, out);
  std::fclose(out);
  int arenas = 0;
  for (const char* at = text; (at = std::strstr(at, "<heap nr=")) != nullptr; ++at) ++arenas;
  std::free(text);
  return arenas;
}

TEST(HostMemoryTest, NewThreadsAllocateFromTheMainHeap) {
  TuneHostMemory();
  const int before = CountArenas();
  // A new thread's first allocation would get an arena of its own (glibc makes up to 8 per
  // core); with M_ARENA_MAX 1 it shares the main heap.
  std::thread([] {
    void* block = std::malloc(size_t{1} << 20);
    ASSERT_NE(block, nullptr);
    std::free(block);
  }).join();
  EXPECT_EQ(CountArenas(), before);
}
#endif

TEST(HostMemoryTest, HugePageHintIsQuietOnceTheTunableIsSet) {
  const char* saved = std::getenv("GLIBC_TUNABLES");
  const std::string before = saved == nullptr ? "" : saved;
  setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", 1);
  EXPECT_EQ(HugePageHint(), "");
  setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", 1);
  EXPECT_EQ(HugePageHint(), "");
  unsetenv("GLIBC_TUNABLES");
  const std::string hint = HugePageHint();  // empty unless the kernel's mode is madvise
  if (!hint.empty()) {
    EXPECT_NE(hint.find("GLIBC_TUNABLES=glibc.malloc.hugetlb=1"), std::string::npos) << hint;
  }
  if (saved != nullptr) setenv("GLIBC_TUNABLES", before.c_str(), 1);
}

#if defined(__linux__)
// The threads of this process.
int CountThreads() {
  int threads = 0;
  for ([[maybe_unused]] const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ++threads;
  }
  return threads;
}

TEST(ThreadPoolTest, RunOnOwnThreadTakesLibTorchsPoolWithIt) {
  if (at::get_parallel_info().find("OpenMP") == std::string::npos) {
    GTEST_SKIP() << "LibTorch's parallel backend is not OpenMP here";
  }
  const int saved = at::get_num_threads();
  at::set_num_threads(2);  // set before counting: other backends' pools may resize with it
  const int before = CountThreads();
  int during = 0;
  RunOnOwnThread([&during] {
    at::set_num_threads(2);
    const torch::Tensor x = torch::ones({1 << 22});
    EXPECT_EQ((x * 2).sum().item<float>(), 2.0f * (1 << 22));  // a parallel loop: a pool starts
    during = CountThreads();
  });
  EXPECT_GE(during, before + 2);  // the thread itself and at least one thread of its pool
  // The pool's threads leave once their master has ended (a bounded wait: they exit on their own;
  // threads of an earlier test's pools may leave meanwhile, hence at most `before`).
  int after = CountThreads();
  for (int i = 0; i < 200 && after > before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    after = CountThreads();
  }
  EXPECT_LE(after, before);
  at::set_num_threads(saved);
}
#endif

}  // namespace
}  // namespace danet::models
