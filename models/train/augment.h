// Data augmentation for training the bank and the decision network, on LibTorch tensors, in the
// spirit of nnU-Net's default 2D pipeline: spatial transforms that move the image and its label
// map together, then intensity transforms that touch the image only.
//
// Inputs are one slice at a time: an image C x H x W (float32, z-scored over brain voxels, 0
// outside the brain) and, optionally, its class map H x W (any integer type). Every random draw
// comes from the caller's std::mt19937_64 (tensor noise from a torch::Generator seeded from it),
// so a given seed gives the same batch on every run, and a resumed run draws the same stream.
//
// Intensity transforms act on brain voxels only (where any channel is non-zero) and leave the
// background at exactly 0, as the engine's preprocessing does at inference.
//
// Thread safety: the functions are pure; each call uses only its arguments.
#ifndef DANET_MODELS_TRAIN_AUGMENT_H_
#define DANET_MODELS_TRAIN_AUGMENT_H_

#include <ATen/core/Tensor.h>

#include <random>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace danet::train {

// A probability and a uniform range for one transform. p = 0 turns it off.
struct TransformRange {
  double p = 0;
  double lo = 0;
  double hi = 0;
};

// Every transform's probability and range. The defaults ("nnunet") follow nnU-Net's 2D defaults
// where they fit 2D brain slices; docs/training.md lists them with the reasons for each change.
struct AugmentOptions {
  // Spatial (image and labels together), in this order: elastic, rotation + scale, mirroring.
  TransformRange rotation_deg{0.2, -30, 30};  // in-plane rotation about the slice centre
  TransformRange scale{0.2, 0.7, 1.4};        // isotropic zoom (> 1 magnifies)
  TransformRange elastic_px{0.2, 0, 10};      // peak displacement of a smooth field, pixels
  double mirror_p = 0.5;                      // per in-plane axis
  // Intensity (image only), per channel where it says so.
  TransformRange brightness{0.15, 0.75, 1.25};  // multiplicative, per channel
  TransformRange contrast{0.15, 0.75, 1.25};    // stretch about the brain mean, per channel
  TransformRange gamma{0.3, 0.7, 1.5};          // on the brain's range, mean and sd kept
  TransformRange noise_sd{0.15, 0, 0.3};        // additive Gaussian, z-score units
  TransformRange blur_sigma{0.2, 0.5, 1.5};     // Gaussian blur, pixels, per channel
  TransformRange low_res{0.25, 0.5, 1.0};       // down-sample by this factor and back up
  TransformRange bias{0.3, 0, 0.4};             // peak of a smooth log bias field, per channel
  // Through-plane, before the rest (it needs the volume: models/train/dataset.h,
  // `SliceImage`): the slice replaced by the mean of a block of lo to hi whole slices that holds
  // it at a random place, its labels kept: a thick-slice acquisition repeated on the thin grid.
  // Off in every preset (`danet-train --thick_slices P` turns it on), so runs without it draw
  // exactly the random stream they drew before it existed.
  TransformRange thick_slices{0, 2, 5};
};

// Named presets: "none" (no transform), "flip" (the first release's flips and a mild
// brightness change), "nnunet" (the defaults above), "strong" (nnunet's spatial transforms,
// the appearance ones more often and wider; docs/training.md). InvalidArgument names the
// choices.
absl::StatusOr<AugmentOptions> AugmentPreset(const std::string& name);

// A drawn spatial transform. The sampling map from an output pixel p (centred coordinates) to
// a source pixel is: e = p + displacement(p); a = R(-angle) e / scale; mirror a's axes.
struct SpatialTransform {
  double angle_rad = 0;
  double scale = 1;
  bool mirror_x = false;    // width axis
  bool mirror_y = false;    // height axis
  at::Tensor displacement;  // 2 x H x W (dx, dy) in pixels, or undefined for none
};

// Draws a spatial transform for an H x W slice from `options`.
SpatialTransform DrawSpatial(const AugmentOptions& options, int64_t height, int64_t width,
                             std::mt19937_64& rng);

// H x W x 2 source pixel coordinates (x, y) of every output pixel of `t`, or of its inverse.
// The inverse of the elastic part is found by fixed-point iteration (the field is smooth and
// small, so the iteration contracts); it is exact for the rotation, scale and mirroring.
at::Tensor SamplingGrid(const SpatialTransform& t, int64_t height, int64_t width);
at::Tensor InverseSamplingGrid(const SpatialTransform& t, int64_t height, int64_t width);

// Resamples a C x H x W image (bilinear, zero outside) or an H x W class map (nearest, class 0
// outside; the result has the map's dtype) through a sampling grid from above.
at::Tensor ResampleImage(const at::Tensor& image, const at::Tensor& grid);
at::Tensor ResampleLabels(const at::Tensor& labels, const at::Tensor& grid);

// The intensity transforms, drawn from `options` and applied to a C x H x W image.
at::Tensor AugmentIntensity(const at::Tensor& image, const AugmentOptions& options,
                            std::mt19937_64& rng);

// The whole pipeline on one slice: spatial on both, then intensity on the image. `labels` may
// be undefined (the decision network's slices have a route, not a map).
std::pair<at::Tensor, at::Tensor> Augment(const at::Tensor& image, const at::Tensor& labels,
                                          const AugmentOptions& options, std::mt19937_64& rng);

}  // namespace danet::train

#endif  // DANET_MODELS_TRAIN_AUGMENT_H_
