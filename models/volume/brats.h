// BraTS cases: four co-registered MR modalities (and an optional segmentation) as one
// multi-channel volume, in the BraTS channel order flair, t1ce, t1, t2 (kModalities).
//
// A BraTS case folder holds <case>_flair.nii.gz, <case>_t1ce.nii.gz, <case>_t1.nii.gz,
// <case>_t2.nii.gz and optionally <case>_seg.nii.gz (.nii also accepted). Real BraTS folders and
// the project's phantom cases load through the same code.
#ifndef DANET_MODELS_VOLUME_BRATS_H_
#define DANET_MODELS_VOLUME_BRATS_H_

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/volume/nifti.h"
#include "models/volume/volume.h"

namespace danet::volume {

inline constexpr int kNumModalities = 4;
inline constexpr std::array<const char*, kNumModalities> kModalities = {"flair", "t1ce", "t1",
                                                                        "t2"};

// Index of a modality name in kModalities, or -1.
int ModalityIndex(const std::string& name);

// Four co-registered channels on one grid. As read (LoadBratsCase, StackModalities, the DICOM
// and upload decoders) the channels are in kModalities order; the engine's bank input
// (models/engine/preprocess.h) holds them in the bundle's order, normalised.
struct MultiModalVolume {
  Geometry geometry;
  std::array<std::vector<float>, kNumModalities> channels;
  // What was done to bring the channels onto one grid (no patient data), e.g. "t1ce resampled
  // (trilinear) from ... onto the flair grid ...": returned to the client in the Summary.
  std::vector<std::string> notes;
};

// BraTS labels {0, 1, 2, 4} <-> network classes {0, 1, 2, 3}.
inline uint8_t LabelToClass(uint8_t label) { return label == 4 ? 3 : label; }
inline uint8_t ClassToLabel(uint8_t cls) { return cls == 3 ? 4 : cls; }

// InvalidArgument naming `name` and the first label outside {0, 1, 2, 4}.
absl::Status CheckBratsLabels(const LabelVolume& labels, const std::string& name);

// Stacks four volumes given in kModalities order on the grid of the first (the flair; see
// docs/dicom.md for why). A volume on another grid (dims, or voxel-to-world beyond 1e-3 mm) is
// resampled onto it in world coordinates (trilinear, ResampleTrilinear) and a note says so.
// InvalidArgument, naming the file (`names` are the files' display names), when a grid cannot
// be related (no qform or sform) or covers under kMinResampleCoverage of the flair grid.
inline constexpr double kMinResampleCoverage = 0.5;
absl::StatusOr<MultiModalVolume> StackModalities(
    std::array<Volume, kNumModalities> volumes,
    const std::array<std::string, kNumModalities>& names);

struct BratsFiles {
  std::string case_id;
  std::array<std::filesystem::path, kNumModalities> modalities;
  std::optional<std::filesystem::path> seg;
};

// Finds the files of a case folder. Errors: the folder is missing, a modality is missing or
// ambiguous (both .nii and .nii.gz, or several cases in one folder).
absl::StatusOr<BratsFiles> FindBratsFiles(const std::filesystem::path& dir);

struct BratsCase {
  std::string case_id;
  MultiModalVolume image;          // raw intensities
  std::optional<LabelVolume> seg;  // BraTS labels, on the image grid
};

// Loads and checks a case folder (see FindBratsFiles, StackModalities, CheckBratsLabels; the
// seg must be on the same grid).
absl::StatusOr<BratsCase> LoadBratsCase(const std::filesystem::path& dir,
                                        const NiftiLimits& limits = {});

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_BRATS_H_
