#include "models/volume/brats.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/volume/resample.h"

namespace danet::volume {
namespace {

// "<case>_<suffix>.nii.gz" or ".nii" -> case id, or nullopt.
std::optional<std::string> CaseIdFor(const std::string& file, const std::string& suffix) {
  for (const char* ext : {".nii.gz", ".nii"}) {
    const std::string tail = absl::StrCat("_", suffix, ext);
    if (absl::EndsWith(file, tail) && file.size() > tail.size()) {
      return file.substr(0, file.size() - tail.size());
    }
  }
  return std::nullopt;
}

}  // namespace

int ModalityIndex(const std::string& name) {
  for (int i = 0; i < kNumModalities; ++i) {
    if (name == kModalities[i]) return i;
  }
  return -1;
}

absl::Status CheckBratsLabels(const LabelVolume& labels, const std::string& name) {
  for (uint8_t v : labels.labels) {
    if (v != 0 && v != 1 && v != 2 && v != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": label ", v, " is not a BraTS label (0, 1, 2, 4)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<MultiModalVolume> StackModalities(
    std::array<Volume, kNumModalities> volumes,
    const std::array<std::string, kNumModalities>& names) {
  MultiModalVolume out;
  out.geometry = volumes[0].geometry;
  for (int i = 0; i < kNumModalities; ++i) {
    const Geometry& g = volumes[i].geometry;
    if (i > 0 && !g.SameGrid(out.geometry)) {
      if (!HasWorldTransform(g) || !HasWorldTransform(out.geometry)) {
        return absl::InvalidArgumentError(absl::StrCat(
            names[i], " (", kModalities[i], ") is ", g.Describe(), " but ", names[0], " is ",
            out.geometry.Describe(),
            ", and without a qform or sform in both files the grids cannot be related: the four "
            "modalities must share one grid or carry their positions"));
      }
      double coverage = 0;
      Volume resampled = ResampleTrilinear(volumes[i], out.geometry, &coverage);
      if (coverage < kMinResampleCoverage) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s (%s) covers %.0f%% of the %s grid of %s (at least %.0f%% needed): the series "
            "do not show the same region, or their positions are not in one frame of reference",
            names[i], kModalities[i], 100 * coverage, kModalities[0], names[0],
            100 * kMinResampleCoverage));
      }
      out.notes.push_back(absl::StrFormat("%s resampled (trilinear) from %s onto the %s grid %s",
                                          kModalities[i], g.Describe(), kModalities[0],
                                          out.geometry.Describe()));
      volumes[i] = std::move(resampled);
    }
    out.channels[i] = std::move(volumes[i].voxels);
  }
  return out;
}

absl::StatusOr<BratsFiles> FindBratsFiles(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": not a case folder"));
  }
  BratsFiles files;
  std::array<int, kNumModalities> found{};
  int seg_found = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    for (int i = 0; i < kNumModalities; ++i) {
      if (std::optional<std::string> id = CaseIdFor(name, kModalities[i])) {
        if (++found[i] > 1 || (!files.case_id.empty() && *id != files.case_id)) {
          return absl::InvalidArgumentError(
              absl::StrCat(dir.string(), ": more than one ", kModalities[i], " file (", name, ")"));
        }
        files.case_id = *id;
        files.modalities[i] = entry.path();
      }
    }
    if (CaseIdFor(name, "seg")) {
      if (++seg_found > 1) {
        return absl::InvalidArgumentError(absl::StrCat(dir.string(), ": more than one seg file"));
      }
      files.seg = entry.path();
    }
  }
  for (int i = 0; i < kNumModalities; ++i) {
    if (found[i] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": no *_", kModalities[i], ".nii.gz (or .nii) file"));
    }
  }
  return files;
}

absl::StatusOr<BratsCase> LoadBratsCase(const std::filesystem::path& dir,
                                        const NiftiLimits& limits) {
  absl::StatusOr<BratsFiles> files = FindBratsFiles(dir);
  if (!files.ok()) return files.status();
  std::array<Volume, kNumModalities> volumes;
  std::array<std::string, kNumModalities> names;
  for (int i = 0; i < kNumModalities; ++i) {
    absl::StatusOr<Volume> v = ReadNifti(files->modalities[i], limits);
    if (!v.ok()) return v.status();
    volumes[i] = *std::move(v);
    names[i] = files->modalities[i].filename().string();
  }
  BratsCase out;
  out.case_id = files->case_id;
  absl::StatusOr<MultiModalVolume> image = StackModalities(std::move(volumes), names);
  if (!image.ok()) return image.status();
  out.image = *std::move(image);
  if (files->seg) {
    const std::string name = files->seg->filename().string();
    absl::StatusOr<LabelVolume> seg = ReadNiftiLabels(*files->seg, limits);
    if (!seg.ok()) return seg.status();
    if (!seg->geometry.SameGrid(out.image.geometry)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not on the grid of ", names[0]));
    }
    if (absl::Status s = CheckBratsLabels(*seg, name); !s.ok()) return s;
    out.seg = *std::move(seg);
  }
  return out;
}

}  // namespace danet::volume
