// danet-bench-models: per-slice latency and achieved GFLOP/s of every network of the paper
// bank at batch 1 and 8, next to a large-matmul GFLOP/s measured in the same run (the
// practical peak of this machine, in the same device and dtype). Prints a Markdown table;
// --json writes the numbers.
//
//   danet-bench-models --threads 2 [--size 240] [--batches 1,8] [--min_seconds 3] [--json F]
//                      [--memory_format contiguous|channels_last] [--mkldnn=false]
//                      [--fold_batch_norm=false] [--int8_linear]
//                      [--device cpu|cuda[:N]] [--dtype float32|float16|bfloat16]
//
// float16 and bfloat16 cast every weight and the input (a GPU measurement: CPU convolutions in
// float16 are not supported by every LibTorch). On CUDA each timed run ends with a device
// synchronisation.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "models/bank/bank.h"
#include "models/bank/blas_kernels.h"
#include "models/bank/device.h"
#include "models/bundle/bundle_config.h"

ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads.");
ABSL_FLAG(int, size, 240, "Slice side in pixels.");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "8"}), "Batch sizes.");
ABSL_FLAG(double, min_seconds, 3.0, "Minimum measuring time per network and batch.");
ABSL_FLAG(int, matmul_n, 2048, "Side of the square fp32 matmul used as the peak.");
ABSL_FLAG(std::string, json, "", "Also write the results as JSON to this file.");
ABSL_FLAG(std::string, memory_format, "contiguous",
          "contiguous (NCHW) or channels_last (NHWC input and convolution weights).");
ABSL_FLAG(bool, int8_linear, false,
          "CPU only: run TransBTS's transformer Linear layers with int8 weights (dynamic "
          "quantization; docs/benchmarks.md). false: as the bundle says (int8_linear).");
ABSL_FLAG(bool, fold_batch_norm, true,
          "Fold the BatchNorms into the convolutions before them at load (docs/benchmarks.md).");
ABSL_FLAG(bool, mkldnn, true, "Let LibTorch use oneDNN (mkldnn) for the convolutions.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, dtype, "float32", "float32, float16 or bfloat16 (weights and input).");

namespace danet::models {
namespace {

using Clock = std::chrono::steady_clock;

// Waits for the device's queued work (CUDA runs asynchronously); nothing on the CPU.
void Sync(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? -1 : device.index());
}

// Median seconds of `fn` over at least 3 runs and `min_seconds`, after one warm-up run.
template <typename Fn>
double MedianSeconds(Fn&& fn, double min_seconds, const c10::Device& device) {
  fn();
  Sync(device);
  std::vector<double> times;
  const auto start = Clock::now();
  while (times.size() < 3 ||
         std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
    const auto t0 = Clock::now();
    fn();
    Sync(device);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

double MatmulGflops(int n, double min_seconds, const torch::TensorOptions& options) {
  const torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  const double seconds = MedianSeconds([&] { torch::mm(a, b); }, min_seconds, options.device());
  return 2.0 * n * n * static_cast<double>(n) / seconds * 1e-9;
}

struct Row {
  std::string id, arch;
  int batch;
  double gmacs, ms_per_slice, gflops;
};

int Run() {
  // As the server and tools start (the eager reference does the same: BLAS kernels, malloc).
  SetUpProcess(absl::GetFlag(FLAGS_threads));
  torch::NoGradGuard no_grad;
  const int size = absl::GetFlag(FLAGS_size);
  const double min_seconds = absl::GetFlag(FLAGS_min_seconds);
  absl::StatusOr<c10::Device> device = ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    std::cerr << "danet-bench-models: --device: " << device.status().message() << "\n";
    return 1;
  }
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  const std::map<std::string, torch::Dtype> dtypes = {
      {"float32", torch::kFloat32}, {"float16", torch::kFloat16}, {"bfloat16", torch::kBFloat16}};
  if (dtypes.count(dtype_name) == 0) {
    std::cerr << "danet-bench-models: --dtype is float32, float16 or bfloat16\n";
    return 1;
  }
  const torch::TensorOptions tensors =
      torch::TensorOptions().device(*device).dtype(dtypes.at(dtype_name));
  v1::BundleConfig config = PaperPresetConfig();
  config.mutable_preprocessing()->set_slice_height(size);
  config.mutable_preprocessing()->set_slice_width(size);
  BankOptions options;
  options.load_weights = false;
  options.seed = 1;
  options.device = *device;
  options.fold_batch_norm = absl::GetFlag(FLAGS_fold_batch_norm);
  if (absl::GetFlag(FLAGS_int8_linear)) options.int8_linear = true;  // else the bundle's choice
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(config, ".", options);
  if (!bank.ok()) {
    std::cerr << "danet-bench-models: " << bank.status() << "\n";
    return 1;
  }
  struct Entry {
    std::string id;
    Network* network;
    double gmacs;
  };
  std::vector<Entry> entries = {
      {"D", &(*bank)->decision(), (*bank)->config().decision().gmacs_per_slice()}};
  for (int i = 0; i < (*bank)->size(); ++i) {
    entries.push_back({(*bank)->model_config(i).id(), &(*bank)->model(i),
                       (*bank)->model_config(i).gmacs_per_slice()});
  }

  const std::string format = absl::GetFlag(FLAGS_memory_format);
  if (format != "contiguous" && format != "channels_last") {
    std::cerr << "danet-bench-models: --memory_format is contiguous or channels_last\n";
    return 1;
  }
  const bool channels_last = format == "channels_last";
  at::globalContext().setUserEnabledMkldnn(absl::GetFlag(FLAGS_mkldnn));
  for (const Entry& entry : entries) {
    for (auto& [name, t] : entry.network->NamedState()) {
      if (t.is_floating_point() && tensors.dtype() != t.dtype()) {
        t.set_data(t.to(tensors.dtype().toScalarType()));
      }
      if (channels_last && t.dim() == 4) t.set_data(t.contiguous(at::MemoryFormat::ChannelsLast));
    }
  }

  const double peak_before = MatmulGflops(absl::GetFlag(FLAGS_matmul_n), min_seconds, tensors);
  std::vector<Row> rows;
  int failed = 0;
  for (const Entry& entry : entries) {
    for (const std::string& batch_text : absl::GetFlag(FLAGS_batches)) {
      const int batch = std::stoi(batch_text);
      torch::Tensor x = torch::randn({batch, 4, size, size}, tensors);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      double seconds = 0;
      try {
        seconds = MedianSeconds([&] { entry.network->Forward(x); }, min_seconds, *device);
      } catch (const c10::Error& e) {  // e.g. an op without a kernel for this dtype and device
        std::cerr << absl::StrFormat("danet-bench-models: %s batch %d in %s on %s failed: %s\n",
                                     entry.id, batch, dtype_name, device->str(),
                                     e.what_without_backtrace());
        ++failed;
        continue;
      }
      rows.push_back({entry.id, entry.network->Describe(), batch, entry.gmacs,
                      1e3 * seconds / batch, 2.0 * entry.gmacs * batch / seconds});
      std::cerr << absl::StrFormat("%s batch %d: %.1f ms/slice\n", entry.id, batch,
                                   rows.back().ms_per_slice);
    }
  }
  const double peak =
      std::max(peak_before, MatmulGflops(absl::GetFlag(FLAGS_matmul_n), min_seconds, tensors));

  std::cout << absl::StrFormat(
      "device %s, threads=%d, slice %dx%d, %s, %s, mkldnn %s, matmul %dx%d peak %.1f GFLOP/s "
      "(best of before/after); BLAS: %s\n\n",
      device->str(), absl::GetFlag(FLAGS_threads), size, size, dtype_name, format,
      at::globalContext().userEnabledMkldnn() ? "on" : "off", absl::GetFlag(FLAGS_matmul_n),
      absl::GetFlag(FLAGS_matmul_n), peak, BlasKernelReport());
  std::cout << "| net | batch | GMACs/slice | ms/slice | GFLOP/s | % of matmul peak |\n"
               "|---|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows) {
    std::cout << absl::StrFormat("| %s | %d | %.3f | %.1f | %.1f | %.0f%% |\n", r.id, r.batch,
                                 r.gmacs, r.ms_per_slice, r.gflops, 100.0 * r.gflops / peak);
  }
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << "{\"device\": \"" << device->str() << "\", \"dtype\": \"" << dtype_name
        << "\", \"threads\": " << absl::GetFlag(FLAGS_threads) << ", \"size\": " << size
        << ", \"matmul_gflops\": " << peak << ", \"blas_core\": \"" << OpenBlasCore()
        << "\", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out << (i ? ", " : "")
          << absl::StrFormat(
                 "{\"id\": \"%s\", \"batch\": %d, \"gmacs\": %.4f, \"ms_per_slice\": %.3f, "
                 "\"gflops\": %.2f}",
                 r.id, r.batch, r.gmacs, r.ms_per_slice, r.gflops);
    }
    out << "]}\n";
  }
  return failed > 0 ? 1 : 0;
}

}  // namespace
}  // namespace danet::models

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return danet::models::Run();
}
