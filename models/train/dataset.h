// Training data in memory: BraTS (or phantom) cases as the bank sees them (the engine's bank
// input: the bundle's channel order and normalisation) and as slice stacks, and the batch
// samplers of the two training stages.
#ifndef DANET_MODELS_TRAIN_DATASET_H_
#define DANET_MODELS_TRAIN_DATASET_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/train/augment.h"
#include "models/volume/brats.h"

namespace danet::train {

struct TrainCase {
  std::string id;
  // Bank input, kept for whole-volume evaluation; a training case loaded without it
  // (LoadTrainCases' keep_channels) holds its geometry only.
  volume::MultiModalVolume image;
  std::vector<uint8_t> labels;      // BraTS labels, volume order
  at::Tensor slices;                // Z x 4 x H' x W' float32 (SliceStack: padded, slice-major)
  at::Tensor classes;               // Z x H' x W' uint8, classes 0..3 (padded with 0)
  std::vector<uint8_t> foreground;  // per slice: any tumour voxel
  // Per tumour class 1..3 (index 0..2): the flat indices (z * H' + y) * W' + x into `classes`
  // of its voxels, for crops centred on a class (CropCentre::kTumourClass).
  std::array<std::vector<int32_t>, 3> class_voxels;
  bool uncorrected = false;  // prepared without the bundle's bias correction (LoadTrainCases)
};

// The case folders directly under `dir`, sorted by name (NotFound when there are none).
absl::StatusOr<std::vector<std::filesystem::path>> ListCaseDirs(const std::filesystem::path& dir);

// Which of `count` training cases LoadTrainCases prepares without the bias correction: each
// with probability `share`, from a random stream of `seed`'s own, so that the same seed draws
// the same cases and a shorter list keeps the leading draws. Empty when `share` is 0.
std::vector<bool> DrawUncorrected(size_t count, double share, uint64_t seed);

// Loads and checks case folders that have a seg, and prepares each as the bank's input as
// `preprocessing` (the bundle's block) says (engine::PrepareBankInput). `on_case` reports
// progress. `uncorrected`, when given, holds one flag per folder: a set flag prepares that case
// without the block's bias correction (the images as the scanner wrote them, z-scored), so that
// a bank served with the correction also learns from images it has not flattened.
// `keep_channels` false releases each case's image channels once its slices are stacked: the
// training stages read only the slices, and a case then takes about half the memory (a 240 x
// 240 x 155 case about 150 MB instead of 300 MB).
absl::StatusOr<std::vector<TrainCase>> LoadTrainCases(
    const std::vector<std::filesystem::path>& dirs, const v1::Preprocessing& preprocessing,
    const std::function<void(int done, int total)>& on_case = nullptr,
    const std::vector<bool>& uncorrected = {}, bool keep_channels = true);

struct Batch {
  at::Tensor images;   // N x 4 x h x w
  at::Tensor targets;  // N x h x w int64 classes (stage 1) or N int64 routes (stage 2)
  at::Tensor tumour;   // stage 2 with tumour masks: N x 1 x h x w float, 1 where tumour
};

// Fills `c.class_voxels` from `c.classes` (LoadTrainCases does this for every case).
void IndexClassVoxels(TrainCase& c);

// The image of slice z of `c` (C x H x W) after `augment.thick_slices`: the mean of a block of
// whole slices holding z, clipped to the volume, when it fires; the slice itself otherwise.
// Draws nothing from `rng` when the transform is off.
at::Tensor SliceImage(const TrainCase& c, int64_t z, const AugmentOptions& augment,
                      std::mt19937_64& rng);

// Where a stage-1 crop that should hold tumour is centred (`danet-train --tumour_crops`).
enum class CropCentre {
  // A tumour slice of a random case, drawn by rejection, so a case's share of the crops grows
  // with its tumour's height; then a random tumour voxel of that slice. Small lesions are drawn
  // seldom, and within a slice the larger classes (oedema) are centred on most.
  kTumourSlice,
  // nnU-Net's foreground oversampling: a random case with tumour, then one of the tumour classes
  // it holds, then a random voxel of that class anywhere in the volume. Every case, however
  // small its tumour, and every class it holds, are drawn alike.
  kTumourClass,
};

// The name `danet-train --tumour_crops` gives `centre` ("slice" or "class"), as its log writes it.
const char* CropCentreName(CropCentre centre);
// The centre CropCentreName names; InvalidArgument quoting `name` and the choices otherwise.
absl::StatusOr<CropCentre> ParseCropCentre(const std::string& name);

// Random slices, random square crops of side `crop` (biased to contain tumour on tumour
// slices, centred as `centre` says), augmented by `augment` (models/train/augment.h; spatial
// transforms act on the whole slice before cropping, so no zeros are pulled in at the crop's
// edges). `foreground_fraction` of the slices are tumour slices.
Batch SampleCropBatch(const std::vector<TrainCase>& cases, int batch, int crop,
                      double foreground_fraction, const AugmentOptions& augment,
                      std::mt19937_64& rng, CropCentre centre = CropCentre::kTumourSlice);

// A slice reference with its decision label.
struct LabelledSlice {
  int case_index = 0;
  int slice = 0;
  int route = 0;
  double weight = 1;  // relative chance of being drawn from its pool
};

// Full slices for the decision network: half from tumour slices, half from the rest (each
// pool drawn by the slices' weights), augmented by `augment`; targets are the slices' routes.
// With `tumour_masks`, Batch::tumour holds each slice's tumour mask, moved with the image by
// the spatial transforms (the same random draws either way).
Batch SampleDecisionBatch(const std::vector<TrainCase>& cases,
                          const std::vector<LabelledSlice>& tumour,
                          const std::vector<LabelledSlice>& other, int batch,
                          const AugmentOptions& augment, std::mt19937_64& rng,
                          bool tumour_masks = false);

}  // namespace danet::train

#endif  // DANET_MODELS_TRAIN_DATASET_H_
