#include "models/bank/device.h"

#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "models/bank/blas_kernels.h"

#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>
#endif

namespace danet::models {

absl::StatusOr<c10::Device> ParseDevice(const std::string& text) {
  std::optional<c10::Device> device;
  try {
    device.emplace(text);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", text, "' is not cpu, cuda or cuda:N"));
  }
  if (device->is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", text, "': no CUDA device is available to this LibTorch"));
  }
  if (!device->is_cuda() && !device->is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("device '", text, "' is not cpu or cuda"));
  }
  return *device;
}

absl::Status TorchErrorStatus(const c10::Error& error, const std::string& context) {
  const std::string what = error.what_without_backtrace();
  const bool out_of_memory = what.find("out of memory") != std::string::npos ||
                             what.find("DefaultCPUAllocator: can't allocate") != std::string::npos;
  return out_of_memory
             ? absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory: ", what))
             : absl::InternalError(absl::StrCat(context, ": ", what));
}

void SetThreads(int threads) {
  torch::set_num_threads(threads > 0 ? threads
                                     : static_cast<int>(std::thread::hardware_concurrency()));
}

void TuneHostMemory() {
  const char* defaults = std::getenv("DANET_HOST_MEMORY_DEFAULTS");
  if (defaults != nullptr && std::string(defaults) == "1") return;
#if defined(__linux__) && defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_ARENA_MAX, 1);
#endif
}

std::string HugePageHint() {
#if defined(__linux__)
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && (std::strstr(tunables, "glibc.malloc.hugetlb=1") != nullptr ||
                              std::strstr(tunables, "glibc.malloc.hugetlb=2") != nullptr)) {
    return "";
  }
  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(mode_file, mode);
  if (mode.find("[madvise]") == std::string::npos) return "";  // always, never, or unknown
  return "transparent huge pages are only used on request on this machine and this process "
         "does not ask for them: start the server with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "
         "(the container image does) to cut page faults on every case's large buffers "
         "(docs/benchmarks.md, \"Page faults\")";
#else
  return "";
#endif
}

void SetUpProcess(int threads) {
  UseFasterBlasKernels();
  SetThreads(threads);
  TuneHostMemory();
}

void RunOnOwnThread(const std::function<void()>& work) { std::thread(work).join(); }

void ReleaseFreeHostMemory() {
#if defined(__linux__) && defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace danet::models
