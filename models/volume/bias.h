// Retrospective correction of an MR bias field: the smooth multiplicative intensity change that
// coil sensitivity puts over an image (brighter near one side of the head, darker at another).
// The bank learns tissue and tumour from contrasts; a bias field of +-30% makes normal white
// matter look like oedema in FLAIR, so a bundle may ask for it to be removed before
// normalisation (preprocessing.bias_correction, models/engine/preprocess.h).
//
// The method, per channel: the log intensity of the channel's non-zero voxels is modelled as a
// tissue-class mean plus a polynomial of low degree in the voxel coordinates (the log of the
// field). Alternately, the voxels are put into intensity classes (1-D k-means on the corrected
// log intensity) and the polynomial is fitted by least squares to what the classes leave,
// voxels further than a few robust standard deviations from the fit (tumour, vessels, partial
// volume) left out, and where asked (bright_sigmas, for FLAIR) those a tighter limit above it. A
// sample of the voxels is enough for a field this smooth. The channel is then divided by the field,
// scaled so that its mean log over the brain is 0: a volume without a field is changed little, and
// the overall intensity (which z-scoring removes) is kept. docs/training.md ("Bias correction") has
// the measurements behind the defaults.
//
// Thread safety: pure functions of their arguments.
#ifndef DANET_MODELS_VOLUME_BIAS_H_
#define DANET_MODELS_VOLUME_BIAS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/volume/brats.h"
#include "models/volume/volume.h"

namespace danet::volume {

inline constexpr int kMaxBiasDegree = 6;
// The largest BiasCorrectionOptions::bright_sigmas a bundle or danet-train may set.
inline constexpr double kMaxBrightSigmas = 10;

struct BiasCorrectionOptions {
  int degree = 3;      // of the polynomial in the voxel coordinates (1..kMaxBiasDegree)
  int iterations = 6;  // class assignment and fit, alternately
  int classes = 3;     // intensity classes (grey matter, white matter, CSF)
  // About one in n of the voxels inside every channel enters the fit, which ones fixed by their
  // positions (a golden-ratio sequence over the voxel index, the same whatever the masks).
  int sample_stride = 16;
  // At most this many voxels enter the fit: the stride doubles (about every other pick dropped)
  // until the sample fits. 50 000 (a stride of 32-64 in a BraTS-size head) is plenty for poly2's 10
  // coefficients and keeps the fit's time and memory bounded whatever the volume; 150 000 until
  // session 30 (Dice within 0.14 points on five sets, docs/benchmarks.md). At least 200 (fewer
  // samples than that fit no field).
  int64_t max_samples = 50000;
  double outlier_sigmas = 2.0;  // robust standard deviations from the fit that count as outliers
  // When set (one value per voxel, x fastest): voxels marked non-zero stay out of the fit, for
  // example a tumour that a first segmentation found (models/engine/case.h). The field is still
  // applied to them.
  const std::vector<uint8_t>* excluded = nullptr;
  // Per channel, in the order the channels are given (a missing entry or 0: none): a sample
  // brighter than the fit by more than this many robust standard deviations is an outlier too,
  // a one-sided limit tighter than outlier_sigmas. A wide oedema a little brighter than the
  // brightest tissue (FLAIR) is not an outlier of the symmetric limit, and the field bends
  // towards it and dims it; a tighter limit on the bright side keeps it out of the fit from the
  // first round (docs/training.md, "Session 46").
  std::vector<double> bright_sigmas = {};
};

// A bundle's preprocessing.bias_correction: "polyN" (N = 1..kMaxBiasDegree) is the polynomial
// degree N, "" and "none" are 0 (no correction). InvalidArgument naming the text otherwise.
absl::StatusOr<int> ParseBiasCorrection(const std::string& text);

// The log of the fitted field of each channel (dims[0] * dims[1] * dims[2] values, x fastest), 0
// where the channel is <= 0, and everywhere when fewer than a few hundred voxels are positive in
// every channel. The sample is shared (voxels positive in every channel); each channel's fit
// leaves out its own outliers.
std::vector<std::vector<float>> FitLogBiasFields(
    const std::vector<const std::vector<float>*>& channels, const std::array<int64_t, 3>& dims,
    const BiasCorrectionOptions& options);

// Divides every channel's positive voxels by its fitted field (FitLogBiasFields); voxels <= 0
// are left as they are. Channels are fitted and corrected in parallel (one thread each).
void CorrectBiasField(MultiModalVolume* volume, const BiasCorrectionOptions& options);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_BIAS_H_
