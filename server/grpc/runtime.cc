#include "server/grpc/runtime.h"

#include <sys/resource.h>
#include <time.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>

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
  registry->AddGaugeCallback("process_resident_memory_bytes", "Resident memory size in bytes.", [] {
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
  const double start =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  registry->AddGaugeCallback("process_start_time_seconds",
                             "Start time of the process since unix epoch in seconds.",
                             [start] { return start; });
}

void WriteStderrLine(const std::string& line) {
  static std::mutex* const mutex = new std::mutex;  // never destroyed: threads may log at exit
  const std::string whole = line + "\n";
  std::lock_guard<std::mutex> lock(*mutex);
  std::fwrite(whole.data(), 1, whole.size(), stderr);
  std::fflush(stderr);
}

std::string FormatLogLine(std::string_view event, const LogFields& fields) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int64_t millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char time[32];
  std::strftime(time, sizeof(time), "%Y-%m-%dT%H:%M:%S", &utc);
  LogFields line;
  line["time"] = absl::StrCat(time, ".", absl::Dec(millis, absl::kZeroPad3), "Z");
  line["event"] = std::string(event);
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) line[key] = value;
  }
  return line.dump(-1, ' ', /*ensure_ascii=*/false,
                   nlohmann::ordered_json::error_handler_t::replace);
}

void Log(std::string_view event, const LogFields& fields, const LogSink& sink) {
  const std::string line = FormatLogLine(event, fields);
  if (sink) {
    sink(line);
  } else {
    WriteStderrLine(line);
  }
}

}  // namespace danet::service
