// The bank's input: decoded volumes turned into what the networks were trained on, as the
// bundle's `preprocessing` block says. This is the one place where that happens; the service
// (server/core/job.cc), danet-segment, evaluation (models/eval) and training
// (models/train/dataset.cc) all call PrepareBankInput, so a bundle trained with one channel
// order or normalisation is served with the same one.
//
// Thread safety: pure functions of their arguments.
#ifndef DANET_MODELS_ENGINE_PREPROCESS_H_
#define DANET_MODELS_ENGINE_PREPROCESS_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/volume/brats.h"

namespace danet::engine {

// The network channel order of `preprocessing` as indices into volume::kModalities:
// order[c] is the decoded channel that becomes network channel c. An empty `modalities` list
// means volume::kModalities itself. InvalidArgument (naming preprocessing.modalities) unless the
// list is a permutation of the four modalities; ValidateBundleConfig refuses such bundles first.
absl::StatusOr<std::array<int, volume::kNumModalities>> ChannelOrder(
    const v1::Preprocessing& preprocessing);

// Turns a decoded case (channels in volume::kModalities order, as every reader returns them)
// into the bank's input: channels reordered into the bundle's network order (ChannelOrder), each
// divided by its fitted bias field when preprocessing.bias_correction asks for it
// (volume::CorrectBiasField), then normalised as preprocessing.normalization says
// ("zscore_brain", also when empty: volume::NormalizeZScoreBrain). Takes `decoded` by value: pass
// it with std::move when the raw intensities are no longer needed. InvalidArgument for a block
// that names an unknown modality, normalisation or bias correction. Any in-plane size:
// SegmentVolume pads slices to what the networks take. Voxels marked non-zero in `excluded` (one
// value per voxel; may be null) stay out of the bias fields' fit (BiasCorrectionOptions).
absl::StatusOr<volume::MultiModalVolume> PrepareBankInput(
    const v1::Preprocessing& preprocessing, volume::MultiModalVolume decoded,
    const std::vector<uint8_t>* excluded = nullptr);

// The networks' in-plane size multiple (the UNets halve a slice four times), and the padded
// size of an in-plane extent n: the next multiple of it.
inline constexpr int64_t kSliceMultiple = 16;
inline int64_t PaddedSliceExtent(int64_t n) {
  return (n + kSliceMultiple - 1) / kSliceMultiple * kSliceMultiple;
}

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_PREPROCESS_H_
