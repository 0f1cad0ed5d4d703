// What the engine returns for one volume: per slice, its route, the decision network's
// probabilities, its cost and time; for the volume, the label map and the time split. Plain
// data (no LibTorch), shared by the router, the segmenter and the case summary.
#ifndef DANET_MODELS_ENGINE_RESULT_H_
#define DANET_MODELS_ENGINE_RESULT_H_

#include <cstdint>
#include <vector>

namespace danet::engine {

struct SliceResult {
  int index = 0;                     // axial slice (k)
  int route = 0;                     // 0 skip, i = bank model i-1
  std::vector<float> probabilities;  // decision network softmax (empty for static policies)
  double gmacs = 0;                  // decision network + the model that ran
  double seconds = 0;                // model time for this slice (decision time is shared)
};

struct VolumeResult {
  std::vector<uint8_t> labels;  // BraTS labels in volume order (i fastest)
  std::vector<SliceResult> slices;
  double gmacs = 0;
  double decide_seconds = 0;
  double segment_seconds = 0;
  // Share of the (padded) slice area the bank models ran on: below 1 when they ran on the
  // brain's bounding box (SegmentOptions.crop_to_brain). Slice GMACs stay those of the full
  // slice, the cost the routing is measured in.
  double window_fraction = 1;
  // SegmentCase (case.h): whether the bias fields were fitted again without the tumour and the
  // case segmented a second time, the second fit's time, and the first pass's GMACs (gmacs and
  // the times above then cover both passes; the slices are the second pass's).
  bool bias_refitted = false;
  double refit_seconds = 0;
  double first_pass_gmacs = 0;
  // SegmentCase: when the fields were fitted again, how far that moved the input over the
  // widened tumour (RegionChange), and whether it was too little to segment the case again
  // (preprocessing.bias_refit_min_change): the first look's decisions and masks were then kept
  // and bias_refitted stays false, refit_seconds counting the second fit all the same.
  double refit_change = 0;
  bool refit_probe_kept = false;
  // SegmentCase: whether the bank ran on another in-plane grid than the case's (inplane.h); the
  // labels are on the case's grid either way.
  bool inplane_resampled = false;
};

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_RESULT_H_
