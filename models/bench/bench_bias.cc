// danet-bench-bias: the preprocessing's cost on one case, as the server's preprocess stage runs
// it: the bias correction (models/volume/bias.h; the four modalities fitted and corrected in
// parallel), the z-scoring (models/volume/normalize.h), or both in turn (--stage).
// Prints the best and mean wall time and the best process CPU time over --repeats runs, and a
// checksum of the corrected volume (the sum of its voxels), so that two builds can be compared
// for speed and for identical output on the same case.
//
//   danet-bench-bias --case_dir CASE [--stage bias|zscore|both] [--degree 2] [--repeats 7]
//                    [--outlier_sigmas 2] [--classes 3] [--max_samples N]
// Before the report line: each modality's fitted log field range over its positive voxels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "models/volume/bias.h"
#include "models/volume/brats.h"
#include "models/volume/normalize.h"

ABSL_FLAG(std::string, case_dir, "", "BraTS-layout case folder (four modalities).");
ABSL_FLAG(int, degree, 2, "Polynomial degree of the field (the bundle's polyN).");
ABSL_FLAG(int64_t, max_samples, danet::volume::BiasCorrectionOptions{}.max_samples,
          "At most this many voxels enter the fit (BiasCorrectionOptions.max_samples).");
ABSL_FLAG(double, outlier_sigmas, danet::volume::BiasCorrectionOptions{}.outlier_sigmas,
          "Robust standard deviations from the fit that count as outliers "
          "(BiasCorrectionOptions.outlier_sigmas).");
ABSL_FLAG(int, classes, danet::volume::BiasCorrectionOptions{}.classes,
          "Intensity classes of the fit (BiasCorrectionOptions.classes).");
ABSL_FLAG(int, repeats, 7, "Timed runs, each on a fresh copy of the decoded case.");
ABSL_FLAG(std::string, stage, "bias",
          "What is timed: bias (the correction alone), zscore (the z-scoring alone, on the "
          "decoded case) or both (the correction, then the z-scoring, as the shipped bundle's "
          "preprocessing runs them).");

namespace {

double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<danet::volume::BratsCase> loaded =
      danet::volume::LoadBratsCase(absl::GetFlag(FLAGS_case_dir));
  if (!loaded.ok()) {
    std::cerr << "danet-bench-bias: " << loaded.status().message() << "\n";
    return 1;
  }
  danet::volume::BiasCorrectionOptions options;
  options.degree = absl::GetFlag(FLAGS_degree);
  options.max_samples = absl::GetFlag(FLAGS_max_samples);
  options.outlier_sigmas = absl::GetFlag(FLAGS_outlier_sigmas);
  options.classes = absl::GetFlag(FLAGS_classes);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const std::string stage = absl::GetFlag(FLAGS_stage);
  if (stage != "bias" && stage != "zscore" && stage != "both") {
    std::cerr << "danet-bench-bias: --stage must be bias, zscore or both, not '" << stage << "'\n";
    return 1;
  }
  double best_wall = 1e30, total_wall = 0, best_cpu = 1e30;
  danet::volume::MultiModalVolume volume;
  for (int r = 0; r < repeats; ++r) {
    volume = loaded->image;  // copied outside the timing
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = CpuSeconds();
    if (stage != "zscore") danet::volume::CorrectBiasField(&volume, options);
    if (stage != "bias") danet::volume::NormalizeZScoreBrain(&volume);
    const double cpu = CpuSeconds() - cpu_start;
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_wall = std::min(best_wall, wall);
    best_cpu = std::min(best_cpu, cpu);
    total_wall += wall;
  }
  // The fitted log field's range over each channel's positive voxels (outside the timing).
  std::vector<const std::vector<float>*> channels;
  for (const auto& channel : loaded->image.channels) channels.push_back(&channel);
  const std::vector<std::vector<float>> fields =
      danet::volume::FitLogBiasFields(channels, loaded->image.geometry.dims, options);
  for (size_t c = 0; c < fields.size(); ++c) {
    float low = 0, high = 0;
    for (size_t v = 0; v < fields[c].size(); ++v) {
      if (!((*channels[c])[v] > 0)) continue;
      low = std::min(low, fields[c][v]);
      high = std::max(high, fields[c][v]);
    }
    std::cout << absl::StrFormat("%s: log field %.3f .. %.3f (x%.2f .. x%.2f)\n",
                                 danet::volume::kModalities[c], low, high, std::exp(low),
                                 std::exp(high));
  }
  double checksum = 0;  // of the last run's output (every run's is the same)
  for (const auto& channel : volume.channels) {
    for (float value : channel) checksum += value;
  }
  std::cout << absl::StrFormat(
      "%s (poly%d) over %d runs: wall best %.3f s, mean %.3f s; CPU best %.3f s; checksum %.9e\n",
      stage, options.degree, repeats, best_wall, total_wall / repeats, best_cpu, checksum);
  return 0;
}
