// danet-eval: Dice, HD95, cost, time and routing of a bundle on labelled cases, for the
// dynamic policy and every static one in the same run.
//
//   danet-eval --bundle DIR --data DIR [--shift_data DIR] [--policies dynamic,static:M1]
//              [--json F] [--csv F]
//
// With --shift_data, the same policies also run on a second set (cases of another appearance,
// e.g. `danet-phantom --family shift`) and the two are reported side by side; the JSON then
// holds the in-distribution results at the top level (as without it) and the shift results
// under "shift".
//
// Phantom cases are synthetic: their scores say the pipeline works, not clinical accuracy.
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "models/bank/device.h"
#include "models/eval/evaluate.h"
#include "models/train/dataset.h"

ABSL_FLAG(std::string, bundle, "", "Bundle directory.");
ABSL_FLAG(std::string, data, "", "Folder of case folders (BraTS layout, with seg).");
ABSL_FLAG(std::string, shift_data, "",
          "A second folder of case folders (another appearance), reported beside --data.");
ABSL_FLAG(int, max_cases, 0, "Evaluate at most this many cases of each set (0: all).");
ABSL_FLAG(std::vector<std::string>, policies, {},
          "Policies, e.g. dynamic,static:M1 (default: dynamic and every static model).");
ABSL_FLAG(bool, hd95, true, "Compute HD95 (about a second per region and case).");
ABSL_FLAG(std::string, json, "", "Write the full results as JSON here.");
ABSL_FLAG(std::string, csv, "", "Write one row per policy and case here.");
ABSL_FLAG(bool, int8_linear, false,
          "CPU only: run TransBTS's transformer Linear layers with int8 weights (dynamic "
          "quantization; docs/benchmarks.md). false: as the bundle says (int8_linear).");
ABSL_FLAG(bool, bfloat16, false,
          "Run the bank models (not the decision network) in bfloat16: faster on CPUs with "
          "bfloat16 dot products (AVX512-BF16, AMX-BF16; refused on others); labels differ in "
          "a few voxels (docs/benchmarks.md).");
ABSL_FLAG(bool, fold_batch_norm, true,
          "Fold the BatchNorms into the convolutions before them at load (docs/benchmarks.md).");
ABSL_FLAG(bool, channels_last, true,
          "Convolution weights and inputs in channels-last (NHWC) memory format: the same "
          "labels, 1.1-1.4x faster models (docs/benchmarks.md).");
ABSL_FLAG(bool, crop_to_brain, true,
          "Run the bank models on the brain's bounding box (false: the whole slice).");
ABSL_FLAG(std::optional<bool>, crop_decision, std::nullopt,
          "Run the decision network on the brain's bounding box (true) or the whole slice "
          "(false); unset: as the bundle says (decision.crop_to_brain).");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0: all cores).");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");

namespace {

// Evaluates the case folders under `dir` (at most --max_cases of them).
absl::StatusOr<nlohmann::json> EvaluateFolder(const danet::models::Bank& bank,
                                              const std::string& dir,
                                              const danet::eval::EvalOptions& options) {
  absl::StatusOr<std::vector<std::filesystem::path>> dirs = danet::train::ListCaseDirs(dir);
  if (!dirs.ok()) return dirs.status();
  const int max_cases = absl::GetFlag(FLAGS_max_cases);
  if (max_cases > 0 && static_cast<int>(dirs->size()) > max_cases) dirs->resize(max_cases);
  absl::StatusOr<nlohmann::json> result = danet::eval::Evaluate(bank, *dirs, options);
  std::cerr << "\r\033[K";
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("danet-eval --bundle DIR --data DIR [--json F] [--csv F]");
  absl::ParseCommandLine(argc, argv);
  danet::models::SetUpProcess(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_bundle).empty() || absl::GetFlag(FLAGS_data).empty()) {
    std::cerr << "danet-eval: --bundle and --data are required\n";
    return 2;
  }
  absl::StatusOr<c10::Device> device = danet::models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    std::cerr << "danet-eval: " << device.status().message() << "\n";
    return 2;
  }
  danet::models::BankOptions options;
  options.device = *device;
  options.fold_batch_norm = absl::GetFlag(FLAGS_fold_batch_norm);
  options.channels_last = absl::GetFlag(FLAGS_channels_last);
  options.bfloat16 = absl::GetFlag(FLAGS_bfloat16);
  if (absl::GetFlag(FLAGS_int8_linear)) options.int8_linear = true;  // else the bundle's choice
  absl::StatusOr<std::unique_ptr<danet::models::Bank>> bank =
      danet::models::Bank::Load(absl::GetFlag(FLAGS_bundle), options);
  if (!bank.ok()) {
    std::cerr << "danet-eval: " << bank.status().message() << "\n";
    return 1;
  }
  danet::eval::EvalOptions eval_options;
  eval_options.policies = absl::GetFlag(FLAGS_policies);
  eval_options.hd95 = absl::GetFlag(FLAGS_hd95);
  eval_options.crop_to_brain = absl::GetFlag(FLAGS_crop_to_brain);
  eval_options.crop_decision = absl::GetFlag(FLAGS_crop_decision);
  eval_options.on_case = [](const std::string& policy, const std::string& case_id) {
    std::cerr << "\r\033[Kevaluating " << case_id << " with " << policy << std::flush;
  };
  absl::StatusOr<nlohmann::json> result =
      EvaluateFolder(**bank, absl::GetFlag(FLAGS_data), eval_options);
  if (!result.ok()) {
    std::cerr << "danet-eval: " << result.status().message() << "\n";
    return 1;
  }
  std::cout << danet::eval::FormatEvaluation(*result);
  std::string csv = danet::eval::EvaluationCsv(*result, "in_distribution");
  if (const std::string shift_dir = absl::GetFlag(FLAGS_shift_data); !shift_dir.empty()) {
    absl::StatusOr<nlohmann::json> shift = EvaluateFolder(**bank, shift_dir, eval_options);
    if (!shift.ok()) {
      std::cerr << "danet-eval: " << shift.status().message() << "\n";
      return 1;
    }
    std::cout << "\nshift set:\n"
              << danet::eval::FormatEvaluation(*shift) << "\n"
              << danet::eval::FormatSideBySide(*result, *shift);
    danet::eval::AppendEvaluationCsvRows(*shift, "shift", &csv);
    (*result)["shift"] = *std::move(shift);
  }
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream(path) << result->dump(2) << "\n";
  }
  if (const std::string path = absl::GetFlag(FLAGS_csv); !path.empty()) {
    std::ofstream(path) << csv;
  }
  return 0;
}
