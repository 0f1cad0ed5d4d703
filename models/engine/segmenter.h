// Segmenting one volume with a bank: the decision network routes every axial slice to skip or
// to one bank model (router.h); each model then runs over the slices routed to it. This is the
// engine's core; the service (server/core/job.cc), danet-segment, evaluation and training call
// it, each on the bank input that preprocess.h makes.
//
// Work is reordered for speed (the decision network runs over the whole volume in batches,
// then slices are grouped by route) but the result is the same as routing slice by slice:
// tests/models/engine/segmenter_test.cc checks that.
//
// Thread safety: SegmentVolume only reads the bank; several threads may segment at once.
#ifndef DANET_MODELS_ENGINE_SEGMENTER_H_
#define DANET_MODELS_ENGINE_SEGMENTER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "models/bank/bank.h"
#include "models/engine/preprocess.h"
#include "models/engine/result.h"
#include "models/engine/router.h"
#include "models/volume/brats.h"

namespace danet::engine {

// The decision network's output stride (stem, max pool and three stride-2 stages); without the
// stem's max pool (DecisionArch.stem_pool_stride 1) it is 16, which a box on this grid serves too.
inline constexpr int64_t kDecisionStride = 32;

struct SegmentOptions {
  int decision_batch = 16;  // slices per decision-network forward pass
  int model_batch = 1;      // slices per bank-model pass (1 was fastest on CPU; see docs)
  // Run the bank models that support it (Network::SupportsWindow) on BrainBox's box only;
  // outside it every label is background. docs/benchmarks.md measures time and label changes.
  bool crop_to_brain = true;
  // Run the decision network on the brain's box as well, on the grid of its output stride
  // (kDecisionStride), so that its cells line up with those on the full slice. Outside the box
  // every input voxel is zero; what changes is the zero padding at the box's edge and the share of
  // background cells in the global pooling. Unset: the bundle's decision.crop_to_brain.
  // docs/training.md (session 31) measures routes and Dice, docs/benchmarks.md the time.
  std::optional<bool> crop_decision;
  // Called as each slice's result is complete (skipped slices first, as their routes are
  // known, then masks; skipped slices last under Policy::follow_tumour; every slice at the
  // end, in z order, under Policy::min_component), in completion order, with that slice's labels
  // (dims[0] x dims[1], x fastest; all zero for skipped slices), valid during the call only; may be
  // empty.
  std::function<void(const SliceResult&, const uint8_t* labels)> on_slice;
  // Polled between slices; when it returns true the work stops with CancelledError (the
  // caller's deadline or cancellation). May be empty.
  std::function<bool()> cancelled;
  // Above 1, a probe (case.h's first look at a case): of the routed slices only those whose index
  // is a multiple of probe_stride are segmented, nothing follows the tumour or cleans the labels,
  // and on_slice is not called. The other slices keep background labels and route 0.
  int probe_stride = 1;
  // In a probe, above 0: the route (1 for the bank's first model) that every sampled slice goes
  // through, whatever its own (preprocessing.bias_refit_probe_model), when the routes hold at
  // least probe_route_min_slices routed slices (before following the tumour). The slices keep
  // that route in the probe's result, so a resume takes only the masks of slices routed to it.
  int probe_route = 0;
  int probe_route_min_slices = 0;
  // A probe of the same input with the same policy: its decision-network probabilities and the
  // masks of the slices it segmented are taken instead of computed again, and everything else
  // is done as without it, so the result is the same, GMACs included; its times are those of
  // what was left (the slices taken keep the probe's seconds). May be null. case.h also resumes
  // a probe of the input before a second bias fit on the refitted one (the same grid): the
  // probe's decisions and masks then stand, and the rest is computed on the new input.
  const VolumeResult* resume = nullptr;
  // A probe of the same volume with the same policy, on this input or on another one of the same
  // grid (case.h: before a second bias fit): only its decision-network probabilities are taken,
  // instead of running the network again; the routed slices are all segmented on this input.
  // The slices' GMACs then leave out the decision network's (the probe paid it). Ignored when
  // `resume` is set (that takes the probabilities too). May be null.
  const VolumeResult* decisions = nullptr;
};

// The volume's axial slices as one Z x 4 x Y' x X' float tensor (a copy), the networks' input:
// Y' and X' are Y and X zero-padded to PaddedSliceExtent.
at::Tensor SliceStack(const volume::MultiModalVolume& volume);

// The bounding box of the non-zero voxels (any channel, any slice) of a SliceStack tensor,
// widened to multiples of kSliceMultiple from the slice origin, so that the networks' pooling
// and token grids on the box line up with those on the full slice. A volume with no non-zero
// voxel gets the full slice.
struct SliceBox {
  int64_t top, bottom, left, right;  // rows [top, bottom), columns [left, right)
};
SliceBox BrainBox(const at::Tensor& slices);
// The same box from a height x width bool plane (true where any slice and channel is non-zero),
// on the grid of `multiple` voxels (clamped to the plane).
SliceBox PlaneBox(const at::Tensor& plane, int64_t multiple = kSliceMultiple);
// The box of an N x C x H x W tensor (a view; an undefined tensor stays undefined).
at::Tensor CropToBox(const at::Tensor& tensor, const SliceBox& box);

// One read of a SliceStack tensor's voxels, with no temporary of its size: which slices hold a
// non-zero voxel in any channel, and the height x width bool plane of the pixels non-zero in
// any slice and channel (PlaneBox's input).
struct TissueScan {
  std::vector<bool> has_tissue;  // per slice
  at::Tensor plane;
};
TissueScan ScanTissue(const at::Tensor& slices);

// Sets to background every tumour component (non-zero labels, face-connected: 6 neighbours in
// 3D) of fewer than min_voxels voxels in a width x height x depth label volume (x fastest), and
// returns how many voxels it cleared. Uses no memory of the volume's size: the visited mark is
// the labels' top bit, cleared again before returning (BraTS labels are at most 4).
int64_t RemoveSmallTumourComponents(uint8_t* labels, int64_t width, int64_t height, int64_t depth,
                                    int64_t min_voxels);

// When `voxels` labels hold fewer than min_voxels enhancing-tumour voxels (label 4), relabels
// them as necrotic/non-enhancing core (label 1) and returns how many; otherwise changes nothing
// and returns 0 (Policy::min_enhancing).
int64_t RelabelSmallEnhancing(uint8_t* labels, int64_t voxels, int64_t min_voxels);

// Segments a bank input (PrepareBankInput, preprocess.h) of any in-plane size: slices are
// zero-padded (the normalised background) at their high-x and high-y edges to multiples of
// kSliceMultiple for the networks, and the labels cropped back. Errors from LibTorch come back
// as mapped by models::TorchErrorStatus.
absl::StatusOr<VolumeResult> SegmentVolume(const models::Bank& bank,
                                           const volume::MultiModalVolume& normalized,
                                           const Policy& policy,
                                           const SegmentOptions& options = {});

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_SEGMENTER_H_
