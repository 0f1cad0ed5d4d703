// One case through the bank, with the bias fields fitted a second time when the bundle asks for
// it (preprocessing.bias_refit_min_ml). A bias field is fitted over the whole brain, and a large
// tumour's oedema is a bright region as wide as the field's own variation: the fit bends towards
// it, and the correction then dims the tumour (a 175 mL tumour lost 60 points of whole-tumour
// Dice that way). So the case is segmented once; when that finds at least the bundle's volume
// of tumour, the fields are fitted again with the tumour, widened by kRefitMarginMm, left out of
// the fit, and the case is segmented again on that input. The first look is a probe: only the
// routed slices the bundle's preprocessing.bias_refit_probe_spacing_mm apart (kProbeSpacingMm
// when unset) are segmented, which is enough to measure and place a tumour that large; when no
// refit follows, the pass that does follow takes the probe's decisions and masks, so such a case
// costs what one pass costs. docs/training.md ("Session 34", "Session 35", "Session 51") has the
// measurements; the time is about one pass more on cases refitted (docs/benchmarks.md).
//
// Thread safety: pure functions of their arguments; SegmentCase only reads the bank.
#ifndef DANET_MODELS_ENGINE_CASE_H_
#define DANET_MODELS_ENGINE_CASE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/bank/bank.h"
#include "models/engine/inplane.h"
#include "models/engine/result.h"
#include "models/engine/router.h"
#include "models/engine/segmenter.h"
#include "models/volume/brats.h"

namespace danet::engine {

// How far around the first segmentation's tumour the second fit leaves voxels out: the labels'
// edge is uncertain and oedema fades over a few millimetres.
inline constexpr double kRefitMarginMm = 5.0;

// How far apart the probe's segmented slices are, at most (every routed slice when slices are
// thicker), when the bundle does not say (preprocessing.bias_refit_probe_spacing_mm). 4 mm with
// each probe slice through its own route saved more and placed a large, dimmed tumour worse
// (docs/training.md, session 35).
inline constexpr double kProbeSpacingMm = 2.0;

// What a summary says about a case segmented twice (VolumeResult::bias_refitted), and about one
// whose second fit moved its input too little for that (VolumeResult::refit_probe_kept).
inline constexpr char kBiasRefitNote[] =
    "bias fields fitted again without the tumour found; the case was segmented twice";
inline constexpr char kBiasRefitKeptNote[] =
    "bias fields fitted again without the tumour found; the input moved little, so the first "
    "look's masks were kept and the other slices segmented on the new input";

struct PreparedCase {
  // The bank input (PrepareBankInput), on the bank's grid: the case's own, or BankGrid's
  // (inplane.h) when the bundle's in-plane spacing asks for another.
  volume::MultiModalVolume input;
  // The decoded channels, kept for the second fit when the preprocessing refits (RefitsBias).
  std::optional<volume::MultiModalVolume> decoded;
  volume::Geometry geometry;  // the case's own grid: SegmentCase's labels lie on it
};

// Whether `preprocessing` corrects bias fields and refits them around a large tumour.
bool RefitsBias(const v1::Preprocessing& preprocessing);

// PrepareBankInput, on BankGrid's grid when there is one (ResampleInPlane first), keeping a copy
// of the decoded channels when RefitsBias(preprocessing). Errors as PrepareBankInput's.
absl::StatusOr<PreparedCase> PrepareCase(const v1::Preprocessing& preprocessing,
                                         volume::MultiModalVolume decoded);

// The probe's stride on `geometry`: spacing_mm (kProbeSpacingMm when 0) in slices, rounded down,
// at least 1.
int ProbeStride(const volume::Geometry& geometry, double spacing_mm = 0);

// 1 for every voxel within radius_mm of a non-zero label along each axis (a box, at least one
// voxel each way), and along z extra_slices further (the slices a probe did not segment, half its
// stride), 0 elsewhere; same layout as `labels` (x fastest on `geometry`'s grid).
std::vector<uint8_t> WidenedTumour(const std::vector<uint8_t>& labels,
                                   const volume::Geometry& geometry, double radius_mm,
                                   int64_t extra_slices = 0);

// A bank input's values over a region, kept to measure how far a second fit moves them
// (RegionChange) once the input itself is freed: the region's voxels that hold tissue (a
// non-zero channel), and each channel's value there.
struct RegionSample {
  std::vector<int64_t> voxels;
  std::array<std::vector<float>, volume::kNumModalities> values;
};
RegionSample SampleRegion(const volume::MultiModalVolume& input,
                          const std::vector<uint8_t>& region);

// The mean absolute difference between `after` and `before` over the sample's voxels, per
// channel, the largest over the channels (in the input's units: brain standard deviations for a
// normalised input); 0 for an empty sample. `after` has the sampled input's grid.
double RegionChange(const RegionSample& before, const volume::MultiModalVolume& after);

// SegmentVolume on the case's input. When the case kept its decoded channels, a probe first
// (SegmentOptions::probe_stride = ProbeStride of preprocessing.bias_refit_probe_spacing_mm): when
// it finds at least the bundle's preprocessing.bias_refit_min_ml of tumour (its volume times its
// stride), the second fit without that tumour (widened by kRefitMarginMm, and along z by half the
// stride) and a segmentation of the refitted input; otherwise the probe resumed on the same input
// (SegmentOptions::resume: the same labels as without the probe). With
// preprocessing.bias_refit_probe_model every probe slice goes through that model
// (SegmentOptions::probe_route; on a case with at least preprocessing.bias_refit_probe_min_slices
// routed slices), and a resume takes only the masks of slices routed to it: the
// labels stay those of one plain pass, and the GMACs add the probe masks not taken. When the second
// fit moves the input over the widened tumour by less than preprocessing.bias_refit_min_change
// (RegionChange), the probe is resumed on the refitted input instead of a second segmentation: its
// decisions and masks stand, the other routed slices are segmented on the new input
// (refit_probe_kept; the GMACs of one pass). With preprocessing.bias_refit_keep_decisions a
// second segmentation takes the probe's decisions (SegmentOptions::decisions) instead of running
// the decision network again. options.on_slice sees the final segmentation's slices
// only, as that pass reports them. The result's decide_seconds and segment_seconds cover the probe
// too; its gmacs all the work done (the probe's counted apart only when a second segmentation
// follows: first_pass_gmacs); bias_refitted, refit_probe_kept, refit_change and refit_seconds (the
// second fit and normalisation) say what the refit did and cost. On a case prepared on another
// in-plane grid, the labels (streamed and returned) are brought back onto the case's own
// (LabelsToCaseGrid). Errors as SegmentVolume's.
absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, const PreparedCase& prepared,
                                         const Policy& policy, const SegmentOptions& options = {});
// The same, for a caller that gives the case up: the first input is freed before the second fit,
// and the kept decoded channels become the second input without a copy (the server's jobs: a
// BraTS-size case then peaks about a volume lower; docs/reliability.md).
absl::StatusOr<VolumeResult> SegmentCase(const models::Bank& bank, PreparedCase&& prepared,
                                         const Policy& policy, const SegmentOptions& options = {});

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_CASE_H_
