// NIfTI-1 and NIfTI-2 single-file images (.nii, .nii.gz), decoded from memory so the same code
// serves files on disk and uploads streamed to the server.
//
// Decoding checks everything a corrupt or hostile file can get wrong and says what it is:
// header size and magic, dims (0, too large, not 3-D), datatype, truncated or corrupt gzip,
// voxel data shorter than the header promises, NaN/Inf voxels. Scaling (scl_slope/inter) is
// applied. Error messages name the file by the name the caller gives, never its contents.
#ifndef DANET_MODELS_VOLUME_NIFTI_H_
#define DANET_MODELS_VOLUME_NIFTI_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "models/volume/volume.h"

namespace danet::volume {

struct NiftiLimits {
  int64_t max_dim = 1024;                  // per axis
  int64_t max_voxels = 512LL * 512 * 512;  // per volume
};

// The grid of a .nii or .nii.gz image from its header alone (only the header is inflated),
// checked against `limits`; errors as DecodeNifti's. For budgeting memory before decoding.
absl::StatusOr<Geometry> PeekNiftiGeometry(std::string_view bytes, const std::string& name,
                                           const NiftiLimits& limits = {});

// Decodes a .nii or .nii.gz image held in `bytes` (gzip detected by its magic). `name` is used
// in error messages only.
absl::StatusOr<Volume> DecodeNifti(std::string_view bytes, const std::string& name,
                                   const NiftiLimits& limits = {});

// Decodes a label map: like DecodeNifti, then every value must be an integer in 0..255.
absl::StatusOr<LabelVolume> DecodeNiftiLabels(std::string_view bytes, const std::string& name,
                                              const NiftiLimits& limits = {});

absl::StatusOr<Volume> ReadNifti(const std::filesystem::path& path, const NiftiLimits& limits = {});
absl::StatusOr<LabelVolume> ReadNiftiLabels(const std::filesystem::path& path,
                                            const NiftiLimits& limits = {});

// Encodes on `geometry` in its NIfTI version (gzip when `gzip`): labels as uint8, images as
// int16 (rounded, clamped; what BraTS ships) or float32.
enum class ImageStorage { kInt16, kFloat32 };
absl::StatusOr<std::string> EncodeNiftiLabels(const LabelVolume& labels, bool gzip);
absl::StatusOr<std::string> EncodeNiftiImage(const Volume& image, ImageStorage storage, bool gzip);

// Writes to `path`, gzip-compressed when the name ends in ".gz".
absl::Status WriteNiftiLabels(const std::filesystem::path& path, const LabelVolume& labels);
absl::Status WriteNiftiImage(const std::filesystem::path& path, const Volume& image,
                             ImageStorage storage);

// Reads a whole file (NotFound / PermissionDenied with the path).
absl::StatusOr<std::string> ReadFileBytes(const std::filesystem::path& path);
absl::Status WriteFileBytes(const std::filesystem::path& path, std::string_view bytes);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_NIFTI_H_
