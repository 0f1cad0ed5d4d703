#include "models/engine/case.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "models/engine/preprocess.h"
#include "models/engine/summary.h"
#include "models/volume/bias.h"

namespace danet::engine {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

bool RefitsBias(const v1::Preprocessing& preprocessing) {
  absl::StatusOr<int> degree = volume::ParseBiasCorrection(preprocessing.bias_correction());
  return degree.ok() && *degree > 0 && preprocessing.bias_refit_min_ml() > 0;
}

absl::StatusOr<PreparedCase> PrepareCase(const v1::Preprocessing& preprocessing,
                                         volume::MultiModalVolume decoded) {
  PreparedCase prepared;
  prepared.geometry = decoded.geometry;
  if (const std::optional<volume::Geometry> grid = BankGrid(preprocessing, decoded.geometry)) {
    decoded = ResampleInPlane(decoded, *grid);
  }
  if (RefitsBias(preprocessing)) prepared.decoded = decoded;
  absl::StatusOr<volume::MultiModalVolume> input =
      PrepareBankInput(preprocessing, std::move(decoded));
  if (!input.ok()) return input.status();
  prepared.input = *std::move(input);
  return prepared;
}

int ProbeStride(const volume::Geometry& geometry, double spacing_mm) {
  const double spacing = geometry.spacing[2] > 0 ? geometry.spacing[2] : 1.0;
  const double probe_mm = spacing_mm > 0 ? spacing_mm : kProbeSpacingMm;
  return std::max(1, static_cast<int>(std::floor(probe_mm / spacing + 1e-6)));
}

std::vector<uint8_t> WidenedTumour(const std::vector<uint8_t>& labels,
                                   const volume::Geometry& geometry, double radius_mm,
                                   int64_t extra_slices) {
  std::vector<uint8_t> mask(labels.size());
  std::transform(labels.begin(), labels.end(), mask.begin(),
                 [](uint8_t l) { return static_cast<uint8_t>(l != 0); });
  const auto& dims = geometry.dims;
  const int64_t strides[3] = {1, dims[0], dims[0] * dims[1]};
  const int64_t total = static_cast<int64_t>(mask.size());
  std::vector<uint8_t> widened(mask.size());
  // A box is three one-axis widenings: along each axis, a voxel is set when a set voxel lies
  // within r of it (a running count over the window).
  for (int axis = 0; axis < 3; ++axis) {
    const double spacing = geometry.spacing[axis] > 0 ? geometry.spacing[axis] : 1.0;
    const int64_t r =
        std::max<int64_t>(1, std::llround(radius_mm / spacing)) + (axis == 2 ? extra_slices : 0);
    const int64_t n = dims[axis], stride = strides[axis];
    for (int64_t line = 0; line < total / n; ++line) {
      const int64_t start = line / stride * stride * n + line % stride;  // the line's first voxel
      int64_t in_window = 0;
      for (int64_t i = 0; i < std::min(n, r); ++i) in_window += mask[start + i * stride];
      for (int64_t i = 0; i < n; ++i) {
        if (i + r < n) in_window += mask[start + (i + r) * stride];
        if (i - r - 1 >= 0) in_window -= mask[start + (i - r - 1) * stride];
        widened[start + i * stride] = in_window > 0;
      }
    }
    mask.swap(widened);
  }
  return mask;
}

RegionSample SampleRegion(const volume::MultiModalVolume& input,
                          const std::vector<uint8_t>& region) {
  RegionSample sample;
  const int64_t n = static_cast<int64_t>(region.size());
  for (int64_t v = 0; v < n; ++v) {
    if (region[v] == 0) continue;
    for (const std::vector<float>& channel : input.channels) {
      if (channel[v] != 0) {
        sample.voxels.push_back(v);
        break;
      }
    }
  }
  for (int c = 0; c < volume::kNumModalities; ++c) {
    sample.values[c].reserve(sample.voxels.size());
    for (const int64_t v : sample.voxels) sample.values[c].push_back(input.channels[c][v]);
  }
  return sample;
}

double RegionChange(const RegionSample& before, const volume::MultiModalVolume& after) {
  if (before.voxels.empty()) return 0;
  double largest = 0;
  for (int c = 0; c < volume::kNumModalities; ++c) {
    double sum = 0;
    for (size_t i = 0; i < before.voxels.size(); ++i) {
      sum +=
          std::abs(static_cast<double>(after.channels[c][before.voxels[i]]) - before.values[c][i]);
    }
    largest = std::max(largest, sum / static_cast<double>(before.voxels.size()));
  }
  return largest;
}

namespace {

// The GMACs of the probe's masks that `result` did not take (a probe through
// preprocessing.bias_refit_probe_model, on the slices routed elsewhere): spent, but in no slice's
// count.
double UntakenProbeGmacs(const models::Bank& bank, const VolumeResult& probe,
                         const VolumeResult& result) {
  double gmacs = 0;
  for (size_t z = 0; z < probe.slices.size(); ++z) {
    const int route = probe.slices[z].route;
    if (route != 0 && route != result.slices[z].route) {
      gmacs += bank.model_config(route - 1).gmacs_per_slice();
    }
  }
  return gmacs;
}

// SegmentCase on `prepared`'s grid; when `owned` is `prepared` itself (the caller gave it up), its
// input is freed after the probe and its decoded channels become the second input without a
// copy, so that the second pass holds no more than the first.
absl::StatusOr<VolumeResult> SegmentOnBankGrid(const models::Bank& bank,
                                               const PreparedCase& prepared, PreparedCase* owned,
                                               const Policy& policy,
                                               const SegmentOptions& options) {
  if (!prepared.decoded) return SegmentVolume(bank, prepared.input, policy, options);
  const volume::Geometry geometry = prepared.input.geometry;
  const v1::Preprocessing& preprocessing = bank.config().preprocessing();
  const int stride = ProbeStride(geometry, preprocessing.bias_refit_probe_spacing_mm());
  SegmentOptions probe_options = options;
  probe_options.on_slice = nullptr;
  probe_options.probe_stride = stride;
  if (const std::string& id = preprocessing.bias_refit_probe_model(); !id.empty()) {
    const std::optional<int> index = bank.FindModel(id);
    if (!index) {
      return absl::FailedPreconditionError(absl::StrCat("preprocessing.bias_refit_probe_model: '",
                                                        id, "' is not a model of this bank"));
    }
    probe_options.probe_route = *index + 1;
    probe_options.probe_route_min_slices = preprocessing.bias_refit_probe_min_slices();
  }
  absl::StatusOr<VolumeResult> probe = SegmentVolume(bank, prepared.input, policy, probe_options);
  if (!probe.ok()) return probe.status();
  absl::StatusOr<VolumeResult> result;
  if (MeasureTumourVolumes(probe->labels, geometry).wt * stride <
      preprocessing.bias_refit_min_ml()) {
    // The same pass as without the probe, taking its decisions and masks (and so its GMACs).
    SegmentOptions resume_options = options;
    resume_options.resume = &*probe;
    result = SegmentVolume(bank, prepared.input, policy, resume_options);
    if (!result.ok()) return result.status();
    result->gmacs += UntakenProbeGmacs(bank, *probe, *result);
  } else {
    const auto refit_start = std::chrono::steady_clock::now();
    const std::vector<uint8_t> excluded =
        WidenedTumour(probe->labels, geometry, kRefitMarginMm, stride / 2);
    const RegionSample before = SampleRegion(prepared.input, excluded);
    if (owned != nullptr) owned->input = volume::MultiModalVolume();
    absl::StatusOr<volume::MultiModalVolume> input =
        owned != nullptr ? PrepareBankInput(preprocessing, *std::move(owned->decoded), &excluded)
                         : PrepareBankInput(preprocessing, *prepared.decoded, &excluded);
    if (!input.ok()) return input.status();
    const double change = RegionChange(before, *input);
    const double refit_seconds = Since(refit_start);
    // A change below the bundle's threshold: the probe's work stands, the pass completed on the
    // refitted input (its GMACs those of one pass).
    const bool again = change >= preprocessing.bias_refit_min_change();
    SegmentOptions second_options = options;
    if (!again) second_options.resume = &*probe;
    if (preprocessing.bias_refit_keep_decisions()) second_options.decisions = &*probe;
    result = SegmentVolume(bank, *input, policy, second_options);
    if (!result.ok()) return result.status();
    result->refit_seconds = refit_seconds;
    result->refit_change = change;
    if (again) {
      result->bias_refitted = true;
      result->first_pass_gmacs = probe->gmacs;
      result->gmacs += probe->gmacs;
    } else {
      result->refit_probe_kept = true;
      result->gmacs += UntakenProbeGmacs(bank, *probe, *result);
    }
  }
  result->decide_seconds += probe->decide_seconds;
  result->segment_seconds += probe->segment_seconds;
  return result;
}

// SegmentOnBankGrid, its labels brought back onto the case's grid when it differs.
absl::StatusOr<VolumeResult> SegmentPrepared(const models::Bank& bank, const PreparedCase& prepared,
                                             PreparedCase* owned, const Policy& policy,
                                             const SegmentOptions& options) {
  const volume::Geometry case_grid = prepared.geometry;
  if (prepared.input.geometry.dims == case_grid.dims) {
    return SegmentOnBankGrid(bank, prepared, owned, policy, options);
  }
  const LabelsToCaseGrid to_case(prepared.input.geometry, case_grid);
  SegmentOptions bank_options = options;
  std::vector<uint8_t> slice(case_grid.SliceVoxels());
  if (options.on_slice) {
    bank_options.on_slice = [&](const SliceResult& s, const uint8_t* labels) {
      to_case.Slice(labels, slice.data());
      options.on_slice(s, slice.data());
    };
  }
  absl::StatusOr<VolumeResult> result =
      SegmentOnBankGrid(bank, prepared, owned, policy, bank_options);
  if (!result.ok()) return result.status();
  result->labels = to_case.Volume(result->labels);
  result->inplane_resampled = true;
  return result;
}

}  // namespace

absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, const PreparedCase& prepared,
                                         const Policy& policy, const SegmentOptions& options) {
  return SegmentPrepared(bank, prepared, nullptr, policy, options);
}

absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, PreparedCase&& prepared,
                                         const Policy& policy, const SegmentOptions& options) {
  return SegmentPrepared(bank, prepared, &prepared, policy, options);
}

}  // namespace danet::engine
