#include "server/service/runtime.h"

#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace danet::service {

absl::Status WarmUp(const models::Bank& bank) {
  const auto& pre = bank.config().preprocessing();
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor blank = torch::zeros({1, 4, pre.slice_height(), pre.slice_width()},
                                             torch::TensorOptions().device(bank.device()));
    for (int pass = 0; pass < 2; ++pass) {
      bank.decision().Forward(blank);
      for (int i = 0; i < bank.size(); ++i) bank.model(i).Forward(blank);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("warm-up failed: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

void AddProcessMetrics(metrics::Registry* registry) {
  registry->AddGaugeCallback("process_resident_memory_bytes", "Resident memory size in bytes.",
                             [] {
                               std::ifstream statm("/proc/self/statm");
                               double pages = 0, resident = 0;
                               statm >> pages >> resident;
                               return resident * static_cast<double>(sysconf(_SC_PAGESIZE));
                             });
  registry->AddGaugeCallback("process_peak_resident_memory_bytes",
                             "Peak resident memory size in bytes since start.", [] {
                               rusage usage{};
                               getrusage(RUSAGE_SELF, &usage);
                               return usage.ru_maxrss * 1024.0;
                             });
  const double start = std::chrono::duration<double>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  registry->AddGaugeCallback("process_start_time_seconds",
                             "Start time of the process since unix epoch in seconds.",
                             [start] { return start; });
}

}  // namespace danet::service
