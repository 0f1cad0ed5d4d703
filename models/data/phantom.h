// Phantom cases: BraTS-like synthetic cases made from the real Colin27 brain (Debian's
// mricron-data: ch2bet.nii.gz, skull-stripped T1, 1 mm), for tests and the default bundle.
//
// Each case: the brain resampled onto the BraTS grid (240 x 240 x 155, 1 mm) with a small
// random rigid jitter; four synthetic contrasts derived from the T1 tissue classes (k-means
// CSF / grey / white centroids, with partial volume kept by interpolating between them):
// FLAIR suppresses CSF, T2 brightens it, T1ce is T1 plus enhancement; one or two synthetic
// gliomas with BraTS label structure (edema 2 around a core of enhancing rim 4 and necrotic
// centre 1) of random position, size, irregular shape and contrast; then a random intensity
// scale, a smooth multiplicative bias field and noise. Deterministic for a given seed and index.
//
// Phantom cases are synthetic: scores on them say that the pipeline works, not how it would do
// on patients.
#ifndef DANET_MODELS_DATA_PHANTOM_H_
#define DANET_MODELS_DATA_PHANTOM_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "models/volume/brats.h"

namespace danet::data {

inline constexpr char kColin27Path[] = "/usr/share/mricron/templates/ch2bet.nii.gz";

// Which generator makes the cases. kClassic is the first release's (one appearance model, rigid
// jitter, compact gliomas); kRandomized draws the appearance, the anatomy and the tumour type
// per case (see randomized_phantom.cc), so that a bank trained on it meets many scanners.
enum class PhantomStyle { kClassic, kRandomized };

// "classic" or "randomized" (InvalidArgument otherwise).
absl::StatusOr<PhantomStyle> ParsePhantomStyle(const std::string& name);

struct PhantomOptions {
  PhantomStyle style = PhantomStyle::kClassic;
  std::array<int64_t, 3> dims = {240, 240, 155};  // BraTS grid
  // The options below are the classic generator's; the randomised one draws its own per case.
  int min_tumours = 1;
  int max_tumours = 2;
  double max_rotation_deg = 5.0;
  double max_shift_mm = 6.0;
  double noise_fraction = 0.03;  // noise sigma, as a fraction of white-matter intensity
  double bias_strength = 0.15;   // amplitude of the log bias field
  // Randomised generator only: the share of tumours given a solid non-enhancing core (label 1
  // that looks like tissue between white matter and edema, not like dark necrosis). Drawn from
  // a random stream of its own, so 0 (the default) leaves every case as it was.
  double solid_core_fraction = 0.0;
  // With solid cores: their look drawn from wider ranges (SolidLook::kWide), e.g. T2 nearer
  // white matter and T1 darker than the edema. kClassic leaves every case as it was.
  enum class SolidLook { kClassic, kWide };
  SolidLook solid_look = SolidLook::kClassic;
};

struct PhantomCase {
  std::string case_id;
  volume::MultiModalVolume image;  // kModalities order, raw intensities (0 outside the brain)
  volume::LabelVolume seg;         // BraTS labels
  int tumours = 0;
  int tumour_slices = 0;  // axial slices with any label > 0
};

// Loads the template once; Generate is then cheap to call many times.
class PhantomGenerator {
 public:
  static absl::StatusOr<PhantomGenerator> Create(const std::filesystem::path& colin27,
                                                 PhantomOptions options = {});

  // Case `index` of the series `seed` (id "phantom_s<seed>_<index>").
  PhantomCase Generate(uint64_t seed, int index) const;

 private:
  PhantomGenerator(volume::Volume t1, PhantomOptions options);
  PhantomCase GenerateClassic(uint64_t seed, int index) const;
  PhantomCase GenerateRandomized(uint64_t seed, int index) const;  // randomized_phantom.cc

  volume::Volume t1_;
  PhantomOptions options_;
  std::array<float, 3> centroids_{};      // CSF, GM, WM T1 intensities
  std::array<double, 3> brain_centre_{};  // voxel coordinates in the template
};

// Writes a case as BraTS files: DIR/<id>/<id>_{flair,t1ce,t1,t2,seg}.nii.gz (int16 images).
absl::Status WritePhantomCase(const PhantomCase& phantom, const std::filesystem::path& dir);

}  // namespace danet::data

#endif  // DANET_MODELS_DATA_PHANTOM_H_
