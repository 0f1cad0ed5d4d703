// danet-segment: the engine without the service: segment one case folder with a bundle, print
// the per-slice routing and a summary, write the label map on the input's grid.
//
//   danet-segment --bundle DIR --case_dir CASE_DIR [--out seg.nii.gz] [--policy dynamic|static:M4]
//                 [--json report.json] [--device cpu|cuda] [--repeats N]
//
// Exit codes: 0 ok, 1 bad input or bundle (the message names the file and the problem), 2 usage.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "models/bank/device.h"
#include "models/engine/case.h"
#include "models/engine/router.h"
#include "models/engine/segmenter.h"
#include "models/engine/summary.h"
#include "models/volume/brats.h"
#include "models/volume/nifti.h"

ABSL_FLAG(std::string, bundle, "models/bundles/phantom-compact", "Bundle directory.");
ABSL_FLAG(std::string, case_dir, "", "BraTS-layout case folder (four modalities).");
ABSL_FLAG(std::string, out, "", "Write the label map (BraTS labels) here (.nii or .nii.gz).");
ABSL_FLAG(std::string, policy, "",
          "dynamic[@bias][+m<margin>]... or static:<model id>[+c<voxels>][+e<voxels>] "
          "(docs/routing.md); empty: the bundle's default.");
ABSL_FLAG(std::string, json, "", "Write a JSON report here.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
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
          "Convolution weights and inputs in channels-last (NHWC) memory format "
          "(docs/benchmarks.md).");
ABSL_FLAG(int, repeats, 1,
          "Segment the case this many times and report the last run: 2 or more keeps warm-up "
          "(first-call allocations, cuDNN's algorithm search on a GPU) out of the timings.");
ABSL_FLAG(bool, crop_to_brain, true,
          "Run the bank models on the brain's bounding box (false: the whole slice).");
ABSL_FLAG(std::optional<bool>, crop_decision, std::nullopt,
          "Run the decision network on the brain's bounding box (true) or the whole slice "
          "(false); unset: as the bundle says (decision.crop_to_brain).");
ABSL_FLAG(int, decision_batch, 16,
          "Slices per decision-network pass (as danet-server's flag; docs/benchmarks.md).");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0: all cores).");

namespace {

using Clock = std::chrono::steady_clock;

int Fail(const absl::Status& status) {
  std::cerr << "danet-segment: " << status.message() << "\n";
  return 1;
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int Run() {
  absl::StatusOr<c10::Device> device = danet::models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  danet::models::BankOptions options;
  options.device = *device;
  options.fold_batch_norm = absl::GetFlag(FLAGS_fold_batch_norm);
  options.channels_last = absl::GetFlag(FLAGS_channels_last);
  options.bfloat16 = absl::GetFlag(FLAGS_bfloat16);
  if (absl::GetFlag(FLAGS_int8_linear)) options.int8_linear = true;  // else the bundle's choice
  const auto load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<danet::models::Bank>> bank =
      danet::models::Bank::Load(absl::GetFlag(FLAGS_bundle), options);
  if (!bank.ok()) return Fail(bank.status());
  const double load_seconds = Seconds(load_start);
  absl::StatusOr<danet::engine::Policy> policy =
      danet::engine::ParsePolicy(absl::GetFlag(FLAGS_policy), **bank);
  if (!policy.ok()) return Fail(policy.status());

  const auto read_start = Clock::now();
  absl::StatusOr<danet::volume::BratsCase> c =
      danet::volume::LoadBratsCase(absl::GetFlag(FLAGS_case_dir));
  if (!c.ok()) return Fail(c.status());
  for (const std::string& note : c->image.notes) std::cerr << "note: " << note << "\n";
  const double read_seconds = Seconds(read_start);
  const auto pre_start = Clock::now();
  absl::StatusOr<danet::engine::PreparedCase> input =
      danet::engine::PrepareCase((*bank)->config().preprocessing(), c->image);
  if (!input.ok()) return Fail(input.status());
  const double preprocess_seconds = Seconds(pre_start);

  danet::engine::SegmentOptions segment_options;
  segment_options.crop_to_brain = absl::GetFlag(FLAGS_crop_to_brain);
  segment_options.crop_decision = absl::GetFlag(FLAGS_crop_decision);
  segment_options.decision_batch = std::max(1, absl::GetFlag(FLAGS_decision_batch));
  absl::StatusOr<danet::engine::VolumeResult> result;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_repeats)); ++i) {
    result = danet::engine::SegmentCase(**bank, *input, *policy, segment_options);
    if (!result.ok()) return Fail(result.status());
  }

  const auto& g = c->image.geometry;
  const danet::engine::CaseSummary summary = danet::engine::SummarizeCase(**bank, *result, g);
  const nlohmann::json routes = summary.RouteCountsByName();
  std::string strip;
  for (const auto& s : result->slices) {
    strip += s.route == 0 ? '.' : static_cast<char>('0' + s.route);
  }
  const double all_largest = summary.gmacs_all_largest;
  const auto& volumes = summary.volumes_ml;
  std::cout << absl::StrFormat("case %s, %s, bundle '%s', policy %s\n", c->case_id, g.Describe(),
                               (*bank)->config().name(), policy->Name(**bank));
  std::cout << "routes per slice (. skip, i = model i): " << strip << "\n";
  std::cout << "routes: " << routes.dump() << "\n";
  std::cout << absl::StrFormat("GMACs %.1f vs %.1f all-%s (%.1f%%)\n", result->gmacs, all_largest,
                               summary.largest_model, 100.0 * result->gmacs / all_largest);
  std::cout << absl::StrFormat(
      "seconds: load bank %.2f, read %.2f, preprocess %.2f, decide %.2f, segment %.2f (models on "
      "%.0f%% of the slice area)\n",
      load_seconds, read_seconds, preprocess_seconds, result->decide_seconds,
      result->segment_seconds, 100.0 * result->window_fraction);
  std::cout << absl::StrFormat("tumour volume (mL): WT %.2f  TC %.2f  ET %.2f\n", volumes.wt,
                               volumes.tc, volumes.et);
  if (result->bias_refitted) {
    std::cout << absl::StrFormat("note: %s (refit %.2f s; the times and GMACs above cover both)\n",
                                 danet::engine::kBiasRefitNote, result->refit_seconds);
  }
  if (result->refit_probe_kept) {
    std::cout << absl::StrFormat("note: %s (refit %.2f s; input moved %.3f sd)\n",
                                 danet::engine::kBiasRefitKeptNote, result->refit_seconds,
                                 result->refit_change);
  }
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    const danet::volume::LabelVolume labels{g, result->labels};
    if (absl::Status s = danet::volume::WriteNiftiLabels(out, labels); !s.ok()) return Fail(s);
    std::cout << "wrote " << out << "\n";
  }
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    nlohmann::json report = {
        {"routes", routes},
        {"gmacs", result->gmacs},
        {"gmacs_all_largest", all_largest},
        {"window_fraction", result->window_fraction},
        {"bias_refitted", result->bias_refitted},
        {"refit_probe_kept", result->refit_probe_kept},
        {"refit_change", result->refit_change},
        {"seconds",
         {{"read", read_seconds},
          {"preprocess", preprocess_seconds},
          {"refit", result->refit_seconds},
          {"decide", result->decide_seconds},
          {"segment", result->segment_seconds}}},
        {"volumes_ml", {{"wt", volumes.wt}, {"tc", volumes.tc}, {"et", volumes.et}}}};
    for (const auto& s : result->slices) {
      nlohmann::json slice = {
          {"index", s.index}, {"route", s.route}, {"gmacs", s.gmacs}, {"ms", 1e3 * s.seconds}};
      // The decision network's softmax (route 0 is skip): the input to the policy knobs.
      if (!s.probabilities.empty()) slice["probabilities"] = s.probabilities;
      report["slices"].push_back(slice);
    }
    std::ofstream(path) << report.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("danet-segment --bundle DIR --case_dir CASE [--out seg.nii.gz]");
  absl::ParseCommandLine(argc, argv);
  danet::models::SetUpProcess(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_case_dir).empty()) {
    std::cerr << "danet-segment: --case_dir is required\n";
    return 2;
  }
  return Run();
}
