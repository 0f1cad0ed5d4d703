// Bias-field correction: a known smooth field is removed, an image without one is left nearly as
// it is, a bright lesion does not pull the field, a wide oedema left out of the fit does not
// either, background is untouched, a volume larger than
// the fit's sample is thinned and still corrected, a one-sided limit on the bright side keeps
// a wide oedema out of the fit, and the setting's text is parsed strictly.
#include "models/volume/bias.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace danet::volume {
namespace {

using ::testing::HasSubstr;

constexpr std::array<int64_t, 3> kDims = {48, 44, 30};

int64_t Index(int64_t x, int64_t y, int64_t z) { return (z * kDims[1] + y) * kDims[0] + x; }

// [-1, 1] along each axis, as the fit's coordinates.
double Coordinate(int64_t n, int64_t size) { return 2.0 * n / (size - 1) - 1.0; }

bool InBrain(int64_t x, int64_t y, int64_t z) {
  const double cx = Coordinate(x, kDims[0]), cy = Coordinate(y, kDims[1]),
               cz = Coordinate(z, kDims[2]);
  return cx * cx / 0.8 + cy * cy / 0.8 + cz * cz / 0.7 < 1.0;
}

bool InLesion(int64_t x, int64_t y, int64_t z) {
  const double dx = x - 33.0, dy = y - 20.0, dz = z - 15.0;
  return dx * dx + dy * dy + dz * dz < 36.0;
}

// The tissue intensity at a voxel: three levels mixed in 3-voxel cubes.
double TissueLevel(int64_t x, int64_t y, int64_t z) {
  const double levels[3] = {100, 160, 220};
  return levels[(x / 3 + y / 3 + z / 3) % 3];
}

// An ellipsoid "brain" of the three tissue intensities, 2% noise, 0 outside, with a lesion twice
// as bright as white matter when `lesion`.
std::vector<float> Tissue(bool lesion, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(1.0, 0.02);
  std::vector<float> image(kDims[0] * kDims[1] * kDims[2], 0.0f);
  for (int64_t z = 0; z < kDims[2]; ++z) {
    for (int64_t y = 0; y < kDims[1]; ++y) {
      for (int64_t x = 0; x < kDims[0]; ++x) {
        if (!InBrain(x, y, z)) continue;
        double value = TissueLevel(x, y, z);
        if (lesion && InLesion(x, y, z)) value = 440;
        image[Index(x, y, z)] = static_cast<float>(value * noise(rng));
      }
    }
  }
  return image;
}

// A smooth log field (a cubic in the coordinates) of about x0.7-1.4 over the brain, as coil
// sensitivity gives.
double LogField(int64_t x, int64_t y, int64_t z) {
  const double cx = Coordinate(x, kDims[0]), cy = Coordinate(y, kDims[1]),
               cz = Coordinate(z, kDims[2]);
  return 0.5 * (0.6 * cx - 0.4 * cy * cy + 0.3 * cx * cz + 0.2 * cy * cy * cy);
}

std::vector<float> WithField(std::vector<float> image) {
  for (int64_t z = 0; z < kDims[2]; ++z) {
    for (int64_t y = 0; y < kDims[1]; ++y) {
      for (int64_t x = 0; x < kDims[0]; ++x) {
        image[Index(x, y, z)] *= static_cast<float>(std::exp(LogField(x, y, z)));
      }
    }
  }
  return image;
}

MultiModalVolume Volume(const std::vector<float>& image) {
  MultiModalVolume v;
  v.geometry = MakeGeometry(kDims, {1, 1, 1}, {0, 0, 0});
  for (auto& channel : v.channels) channel = image;
  return v;
}

// The spread (standard deviation over the brain) of log(a / b), the shared scale removed.
double LogRatioSpread(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (size_t v = 0; v < a.size(); ++v) {
    if (b[v] <= 0) continue;
    const double d = std::log(a[v] / b[v]);
    sum += d;
    sq += d * d;
    ++n;
  }
  const double mean = sum / n;
  return std::sqrt(sq / n - mean * mean);
}

TEST(BiasCorrectionTest, KnownFieldIsRemoved) {
  const std::vector<float> clean = Tissue(/*lesion=*/false, 1);
  MultiModalVolume v = Volume(WithField(clean));
  const double before = LogRatioSpread(v.channels[0], clean);
  ASSERT_GT(before, 0.1);
  CorrectBiasField(&v, BiasCorrectionOptions{});
  for (const auto& channel : v.channels) {
    EXPECT_LT(LogRatioSpread(channel, clean), 0.1 * before);
  }
}

TEST(BiasCorrectionTest, ImageWithoutFieldIsNearlyUnchanged) {
  const std::vector<float> clean = Tissue(/*lesion=*/true, 2);
  MultiModalVolume v = Volume(clean);
  CorrectBiasField(&v, BiasCorrectionOptions{});
  EXPECT_LT(LogRatioSpread(v.channels[0], clean), 0.01);
}

TEST(BiasCorrectionTest, BrightLesionKeepsItsContrast) {
  const std::vector<float> clean = Tissue(/*lesion=*/true, 3);
  MultiModalVolume v = Volume(WithField(clean));
  CorrectBiasField(&v, BiasCorrectionOptions{});
  EXPECT_LT(LogRatioSpread(v.channels[0], clean), 0.02);
  // The lesion is scaled as the brain around it is: its contrast is kept, not fitted away.
  double lesion = 0, brain = 0;
  int64_t lesion_voxels = 0, brain_voxels = 0;
  for (int64_t z = 0; z < kDims[2]; ++z) {
    for (int64_t y = 0; y < kDims[1]; ++y) {
      for (int64_t x = 0; x < kDims[0]; ++x) {
        if (!InBrain(x, y, z)) continue;
        const double d = std::log(v.channels[0][Index(x, y, z)] / clean[Index(x, y, z)]);
        brain += d;
        ++brain_voxels;
        if (InLesion(x, y, z)) {
          lesion += d;
          ++lesion_voxels;
        }
      }
    }
  }
  ASSERT_GT(lesion_voxels, 500);
  EXPECT_NEAR(lesion / lesion_voxels, brain / brain_voxels, 0.02);
}

TEST(BiasCorrectionTest, BackgroundUntouchedAndDeterministic) {
  std::vector<float> image = WithField(Tissue(/*lesion=*/true, 4));
  image[Index(0, 0, 0)] = -5.0f;  // negative values (as some scanners store) stay as they are
  MultiModalVolume a = Volume(image);
  MultiModalVolume b = Volume(image);
  CorrectBiasField(&a, BiasCorrectionOptions{});
  CorrectBiasField(&b, BiasCorrectionOptions{});
  EXPECT_EQ(a.channels, b.channels);
  for (size_t i = 0; i < image.size(); ++i) {
    if (image[i] <= 0) {
      ASSERT_EQ(a.channels[0][i], image[i]) << i;
    }
  }
}

// The correction divides by exp of the very field FitLogBiasFields reports (the two share the fit
// but evaluate the field separately), for every degree, and for a volume narrower than the
// polynomial's degree (3 voxels wide, degree 6).
TEST(BiasCorrectionTest, CorrectionIsTheImageOverExpOfTheFittedField) {
  const std::vector<float> image = WithField(Tissue(/*lesion=*/true, 6));
  for (int degree = 1; degree <= kMaxBiasDegree; ++degree) {
    BiasCorrectionOptions options;
    options.degree = degree;
    const std::vector<std::vector<float>> fields = FitLogBiasFields({&image}, kDims, options);
    MultiModalVolume v = Volume(image);
    CorrectBiasField(&v, options);
    double worst = 0;
    int64_t changed = 0;
    for (size_t i = 0; i < image.size(); ++i) {
      if (image[i] <= 0) continue;
      const double expected = image[i] * std::exp(-static_cast<double>(fields[0][i]));
      worst = std::max(worst, std::abs(v.channels[0][i] / expected - 1.0));
      changed += v.channels[0][i] != image[i];
    }
    EXPECT_LT(worst, 1e-6) << "poly" << degree;
    EXPECT_GT(changed, 1000) << "poly" << degree;
  }
  // A volume 3 voxels wide, fitted with degree 6.
  const std::array<int64_t, 3> narrow = {3, 60, 60};
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> tissue(100, 200);
  std::vector<float> thin(3 * 60 * 60);
  for (size_t i = 0; i < thin.size(); ++i) {
    thin[i] = tissue(rng) * static_cast<float>(std::exp(0.002 * static_cast<double>(i % 3600)));
  }
  BiasCorrectionOptions options;
  options.degree = kMaxBiasDegree;
  const std::vector<std::vector<float>> fields = FitLogBiasFields({&thin}, narrow, options);
  MultiModalVolume v;
  v.geometry = MakeGeometry(narrow, {1, 1, 1}, {0, 0, 0});
  for (auto& channel : v.channels) channel = thin;
  CorrectBiasField(&v, options);
  for (size_t i = 0; i < thin.size(); ++i) {
    const double expected = thin[i] * std::exp(-static_cast<double>(fields[0][i]));
    ASSERT_NEAR(v.channels[0][i] / expected, 1.0, 1e-6) << i;
  }
}

// Tissue(false, 6) with a wide oedema: a sphere of radius 10 (about a sixth of the brain) at 260,
// the classes being 100-220, the noise kept; `oedema` (when given) marks its voxels.
std::vector<float> TissueWithOedema(std::vector<uint8_t>* oedema = nullptr) {
  std::vector<float> image = Tissue(/*lesion=*/false, 6);
  if (oedema != nullptr) oedema->assign(image.size(), 0);
  for (int64_t z = 0; z < kDims[2]; ++z) {
    for (int64_t y = 0; y < kDims[1]; ++y) {
      for (int64_t x = 0; x < kDims[0]; ++x) {
        const double dx = x - 32.0, dy = y - 22.0, dz = z - 15.0;
        if (!InBrain(x, y, z) || dx * dx + dy * dy + dz * dz >= 100.0) continue;
        image[Index(x, y, z)] *= static_cast<float>(260.0 / TissueLevel(x, y, z));
        if (oedema != nullptr) (*oedema)[Index(x, y, z)] = 1;
      }
    }
  }
  return image;
}

// A wide region a little brighter than the brightest tissue (an oedema: bright, but not far
// enough outside the tissue classes to be left out as an outlier) bends a field fitted over the
// whole brain; left out of the fit (BiasCorrectionOptions::excluded), the field is found again,
// and it is still applied to the excluded voxels. Degree 2, as the shipped bundle's poly2.
TEST(BiasCorrectionTest, ExcludedVoxelsStayOutOfTheFit) {
  std::vector<uint8_t> excluded;
  const std::vector<float> clean = TissueWithOedema(&excluded);
  MultiModalVolume whole = Volume(WithField(clean));
  MultiModalVolume without = whole;
  CorrectBiasField(&whole, BiasCorrectionOptions{.degree = 2});
  CorrectBiasField(&without, BiasCorrectionOptions{.degree = 2, .excluded = &excluded});
  const double bent = LogRatioSpread(whole.channels[0], clean);
  const double found = LogRatioSpread(without.channels[0], clean);
  EXPECT_LT(found, 0.02);
  EXPECT_GT(bent, 3 * found);  // measured: 0.039 against 0.009
}

// The same wide oedema, nothing excluded: a one-sided limit on the bright side (bright_sigmas)
// keeps it out of the fit from the first round, and the field is found; a channel without the
// limit (the second) still bends. Without an oedema the limit still removes a known field.
TEST(BiasCorrectionTest, BrightLimitKeepsAWideOedemaOutOfTheFit) {
  const std::vector<float> clean = TissueWithOedema();
  const std::vector<float> healthy = Tissue(/*lesion=*/false, 6);
  const BiasCorrectionOptions limited{.degree = 2, .bright_sigmas = {1.0, 0.0, 1.0, 1.0}};
  MultiModalVolume v = Volume(WithField(clean));
  CorrectBiasField(&v, limited);
  const double found = LogRatioSpread(v.channels[0], clean);
  const double bent = LogRatioSpread(v.channels[1], clean);
  EXPECT_LT(found, 0.02);
  EXPECT_GT(bent, 3 * found);  // measured: 0.009 against 0.038
  MultiModalVolume plain = Volume(WithField(healthy));
  const double before = LogRatioSpread(plain.channels[0], healthy);
  CorrectBiasField(&plain, limited);
  // Measured: 0.008 of 0.127; with the limit from the first round as well, 0.066.
  EXPECT_LT(LogRatioSpread(plain.channels[0], healthy), 0.1 * before);
}

TEST(BiasCorrectionTest, WhetherAVoxelIsSampledDependsOnItsPositionAlone) {
  // Leaving out one voxel changes the fit only when that voxel was in the sample (about one in
  // sample_stride), not by shifting the rest of the sample: of the brain's first 64 voxels in
  // storage order, each left out alone, most leave the fit as it was, to the bit. (A sample of
  // every 16th voxel in storage order, as until session 40, changed it for nearly all of them.)
  const std::vector<float> image = WithField(Tissue(/*lesion=*/false, 8));
  const BiasCorrectionOptions options{.degree = 2};
  const std::vector<std::vector<float>> whole = FitLogBiasFields({&image}, kDims, options);
  int same = 0, left_out = 0;
  for (size_t v = 0; v < image.size() && left_out < 64; ++v) {
    if (image[v] <= 0) continue;
    std::vector<uint8_t> excluded(image.size(), 0);
    excluded[v] = 1;
    BiasCorrectionOptions without = options;
    without.excluded = &excluded;
    same += FitLogBiasFields({&image}, kDims, without) == whole;
    ++left_out;
  }
  ASSERT_EQ(left_out, 64);
  EXPECT_GE(same, 48);  // expected 60 of 64 at stride 16
  EXPECT_LT(same, 64);  // and the sample does take some of them
}

TEST(BiasCorrectionTest, TooFewVoxelsLeaveTheChannelAlone) {
  std::vector<float> image(kDims[0] * kDims[1] * kDims[2], 0.0f);
  for (int i = 0; i < 50; ++i) image[i * 7] = 100.0f + i;
  const std::vector<std::vector<float>> fields =
      FitLogBiasFields({&image}, kDims, BiasCorrectionOptions{});
  ASSERT_EQ(fields.size(), 1u);
  for (float f : fields[0]) ASSERT_EQ(f, 0.0f);
}

TEST(BiasCorrectionTest, LargeVolumeIsThinnedAndStillCorrected) {
  // Every voxel of a 72 x 64 x 40 box (184 320) is positive and sampled at stride 1: more than
  // the fit keeps, so the stride doubles while the volume is read, and the field is found.
  const std::array<int64_t, 3> dims = {72, 64, 40};
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0.0, 0.02);
  std::vector<float> image(dims[0] * dims[1] * dims[2]);
  std::vector<double> truth(image.size());
  for (int64_t z = 0; z < dims[2]; ++z) {
    for (int64_t y = 0; y < dims[1]; ++y) {
      for (int64_t x = 0; x < dims[0]; ++x) {
        const size_t v = static_cast<size_t>((z * dims[1] + y) * dims[0] + x);
        truth[v] = 0.2 * Coordinate(x, dims[0]) - 0.15 * Coordinate(z, dims[2]);
        image[v] = static_cast<float>(TissueLevel(x, y, z) * std::exp(truth[v] + noise(rng)));
      }
    }
  }
  // Thinned once to at most 150 000, the sample is about every second voxel, the same as at
  // stride 2: the fit at stride 2 to the bit; thinned twice to at most 50 000, stride 4's.
  for (const auto& [max_samples, stride] : {std::pair<int64_t, int>{150000, 2}, {50000, 4}}) {
    EXPECT_EQ(
        FitLogBiasFields(
            {&image}, dims,
            BiasCorrectionOptions{.degree = 1, .sample_stride = 1, .max_samples = max_samples}),
        FitLogBiasFields({&image}, dims,
                         BiasCorrectionOptions{
                             .degree = 1, .sample_stride = stride, .max_samples = max_samples}))
        << "at most " << max_samples;
  }
  // ... and the cap is the caller's: the two samples differ, and so do their fits.
  EXPECT_NE(FitLogBiasFields(
                {&image}, dims,
                BiasCorrectionOptions{.degree = 1, .sample_stride = 1, .max_samples = 150000}),
            FitLogBiasFields(
                {&image}, dims,
                BiasCorrectionOptions{.degree = 1, .sample_stride = 1, .max_samples = 50000}));
  const std::vector<std::vector<float>> fields =
      FitLogBiasFields({&image}, dims, BiasCorrectionOptions{.degree = 1, .sample_stride = 1});
  ASSERT_EQ(fields.size(), 1u);
  double sum = 0, sq = 0, truth_sum = 0, truth_sq = 0;
  for (size_t v = 0; v < image.size(); ++v) {
    const double d = fields[0][v] - truth[v];
    sum += d;
    sq += d * d;
    truth_sum += truth[v];
    truth_sq += truth[v] * truth[v];
  }
  const double n = static_cast<double>(image.size());
  const double truth_spread = std::sqrt(truth_sq / n - (truth_sum / n) * (truth_sum / n));
  ASSERT_GT(truth_spread, 0.1);
  EXPECT_LT(std::sqrt(sq / n - (sum / n) * (sum / n)), 0.05 * truth_spread);
}

TEST(BiasCorrectionTest, SettingIsParsedStrictly) {
  EXPECT_EQ(*ParseBiasCorrection(""), 0);
  EXPECT_EQ(*ParseBiasCorrection("none"), 0);
  EXPECT_EQ(*ParseBiasCorrection("poly1"), 1);
  EXPECT_EQ(*ParseBiasCorrection("poly3"), 3);
  EXPECT_EQ(*ParseBiasCorrection("poly6"), 6);
  for (const char* bad : {"poly", "poly0", "poly7", "poly03", "poly3 ", "cubic", "Poly3"}) {
    absl::StatusOr<int> degree = ParseBiasCorrection(bad);
    EXPECT_EQ(degree.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(degree.status().message(), HasSubstr(absl::StrCat("'", bad, "'")));
  }
}

}  // namespace
}  // namespace danet::volume
