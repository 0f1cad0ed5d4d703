// One case through the bank, with the bias fields fitted a second time when the bundle asks for
// it (preprocessing.bias_refit_min_ml). A bias field is fitted over the whole brain, and a large
// tumour's oedema is a bright region as wide as the field's own variation: the fit bends towards
// it, and the correction then dims the tumour (a 175 mL tumour lost 60 points of whole-tumour
// Dice that way). So the case is segmented once; when that finds at least the bundle's volume
// of tumour, the fields are fitted again with the tumour, widened by kRefitMarginMm, left out of
// the fit, and the case is segmented again on that input. docs/training.md ("Session 34") has
// the measurements; the time is a second pass on such cases (docs/benchmarks.md).
//
// Thread safety: pure functions of their arguments; SegmentCase only reads the bank.
#ifndef DANET_MODELS_ENGINE_CASE_H_
#define DANET_MODELS_ENGINE_CASE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/bank/bank.h"
#include "models/engine/result.h"
#include "models/engine/router.h"
#include "models/engine/segmenter.h"
#include "models/volume/brats.h"

namespace danet::engine {

// How far around the first segmentation's tumour the second fit leaves voxels out: the labels'
// edge is uncertain and oedema fades over a few millimetres.
inline constexpr double kRefitMarginMm = 5.0;

// What a summary says about a case segmented twice (VolumeResult::bias_refitted).
inline constexpr char kBiasRefitNote[] =
    "bias fields fitted again without the tumour found; the case was segmented twice";

struct PreparedCase {
  volume::MultiModalVolume input;  // the bank input (PrepareBankInput)
  // The decoded channels, kept for the second fit when the preprocessing refits (RefitsBias).
  std::optional<volume::MultiModalVolume> decoded;
};

// Whether `preprocessing` corrects bias fields and refits them around a large tumour.
bool RefitsBias(const v1::Preprocessing& preprocessing);

// PrepareBankInput, keeping a copy of `decoded` when RefitsBias(preprocessing). Errors as
// PrepareBankInput's.
absl::StatusOr<PreparedCase> PrepareCase(const v1::Preprocessing& preprocessing,
                                         volume::MultiModalVolume decoded);

// 1 for every voxel within radius_mm of a non-zero label along each axis (a box, at least one
// voxel each way), 0 elsewhere; same layout as `labels` (x fastest on `geometry`'s grid).
std::vector<uint8_t> WidenedTumour(const std::vector<uint8_t>& labels,
                                   const volume::Geometry& geometry, double radius_mm);

// SegmentVolume on the case's input, then, when the case kept its decoded channels and that
// segmentation found at least the bundle's preprocessing.bias_refit_min_ml of tumour, the
// second fit and segmentation described above. options.on_slice sees the final segmentation's
// slices only: when a second pass is possible nothing is reported until the first has ended,
// and when it does not happen every slice is reported then, in z order (that time counted in
// segment_seconds, as SegmentVolume counts its own reports). The result's gmacs,
// decide_seconds and segment_seconds cover both passes; bias_refitted and refit_seconds (the
// second fit and normalisation) say what the second cost. Errors as SegmentVolume's.
absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, const PreparedCase& prepared,
                                         const Policy& policy, const SegmentOptions& options = {});
// The same, for a caller that gives the case up: the first input is freed before the second fit,
// and the kept decoded channels become the second input without a copy (the server's jobs: a
// BraTS-size case then peaks about a volume lower; docs/reliability.md).
absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, PreparedCase&& prepared,
                                         const Policy& policy, const SegmentOptions& options = {});

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_CASE_H_
