// Shift phantoms: a second, independent family of synthetic BraTS-like cases, used only to
// test how a model trained on the ordinary phantoms (phantom.h) copes with a shift in
// appearance. Training never sees these cases, and nothing here is shared with the training
// generators' tissue or tumour code: a model that learned their quirks should not find the same
// quirks here.
//
// Each case starts from the same Colin27 T1 template but models it differently:
//   - tissue: soft CSF / grey / white memberships from a 3-class Gaussian mixture fitted by EM
//     to the template's brain voxels; each modality is the membership-weighted sum of per-case
//     tissue means (the usual contrast ordering kept, the levels drawn from wide ranges), with a
//     per-tissue multiplicative texture made of random Gaussian bumps;
//   - anatomy: an anisotropic scale per axis and a smooth radial displacement (ventricles and
//     surroundings swelling or shrinking);
//   - tumours: metaballs (sums of Gaussian kernels) cut at three levels for edema, core and
//     necrosis, sometimes without an enhancing rim or without necrosis, and in two of every
//     five cases (index % 5 in {1, 3}) small lesions of under 1 mL in total;
//   - acquisition: a bias field of a few wide Gaussian bumps, Rician noise, and for some cases
//     a sub-voxel blur across slices (a thick-slice look).
//
// Seeds are kept apart from training seeds (>= kShiftSeedBase) so a shift case can never be
// mistaken for, or regenerate, a training case.
#ifndef DANET_MODELS_DATA_SHIFT_PHANTOM_H_
#define DANET_MODELS_DATA_SHIFT_PHANTOM_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "models/data/phantom.h"

namespace danet::data {

// Every shift seed is >= this; training phantom seeds stay below it.
inline constexpr uint64_t kShiftSeedBase = 900000;

struct ShiftPhantomOptions {
  // Output grid. The nominal spacing is 1 mm; at the BraTS grid (the default) one voxel is one
  // template millimetre. A grid too small for the brain samples the template more coarsely
  // (the same isotropic factor on every axis) so the whole brain still fits; sizes such as the
  // small-lesion bound (1 mL) are then counted in template millimetres.
  std::array<int64_t, 3> dims = {240, 240, 155};
};

// Loads the template and fits the tissue mixture once; Generate is then a pure function of
// (seed, index). Immutable after Create: Generate may be called from several threads at once.
class ShiftPhantomGenerator {
 public:
  // Reads the Colin27 T1 (data::kColin27Path). Errors: the template cannot be read (the
  // message says which package provides it), is not 1 mm, or holds no brain voxels; a dim of
  // options.dims is below 8.
  static absl::StatusOr<ShiftPhantomGenerator> Create(const std::filesystem::path& colin27,
                                                      ShiftPhantomOptions options = {});

  // Case `index` of the series `seed`, id "shift_s<seed>_<index, 3 digits>". Deterministic:
  // the same (seed, index) gives the same bytes on every run. InvalidArgument if
  // seed < kShiftSeedBase or index < 0. Single-threaded; on the BraTS grid it takes about 2 s
  // and a few hundred MB of working memory.
  absl::StatusOr<PhantomCase> Generate(uint64_t seed, int index) const;

 private:
  ShiftPhantomGenerator() = default;

  ShiftPhantomOptions options_;
  std::array<int64_t, 3> template_dims_{};
  std::vector<float> t1_;     // template T1, 0 outside the brain
  std::vector<float> brain_;  // template brain mask, 0 or 1 (float: it is interpolated)
  std::array<double, 3> mix_mean_{}, mix_sd_{}, mix_weight_{};  // CSF, GM, WM mixture
  std::array<double, 3> brain_centre_{};                        // template voxel coordinates
  std::array<double, 3> brain_extent_{};                        // voxels along each axis
  double mm_per_voxel_ = 1.0;                                   // template mm per output voxel
};

}  // namespace danet::data

#endif  // DANET_MODELS_DATA_SHIFT_PHANTOM_H_
