#include "models/bank/device.h"

#include <torch/torch.h>

#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"

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

}  // namespace danet::models
