// Phantom cases: deterministic per seed, BraTS label structure, the slice mix the method
// relies on, and contrasts that make tumours visible the way they are on real MRI.
#include "models/data/phantom.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

namespace danet::data {
namespace {

class PhantomTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<PhantomGenerator> g = PhantomGenerator::Create(kColin27Path);
    ASSERT_TRUE(g.ok()) << g.status();
    generator_ = new PhantomGenerator(*std::move(g));
    first_ = new PhantomCase(generator_->Generate(7, 0));
  }
  static void TearDownTestSuite() {
    delete first_;
    delete generator_;
  }
  static double MeanWhere(const std::vector<float>& image, const std::vector<uint8_t>& labels,
                          uint8_t label) {
    double sum = 0;
    int64_t n = 0;
    for (size_t i = 0; i < image.size(); ++i) {
      if (labels[i] == label && image[i] > 0) {
        sum += image[i];
        ++n;
      }
    }
    return n > 0 ? sum / n : 0;
  }

  static PhantomGenerator* generator_;
  static PhantomCase* first_;
};
PhantomGenerator* PhantomTest::generator_ = nullptr;
PhantomCase* PhantomTest::first_ = nullptr;

TEST_F(PhantomTest, SameSeedAndIndexGiveTheSameCase) {
  const PhantomCase again = generator_->Generate(7, 0);
  EXPECT_EQ(again.case_id, "phantom_s7_000");
  EXPECT_EQ(again.seg.labels, first_->seg.labels);
  EXPECT_EQ(again.image.channels[0], first_->image.channels[0]);
  const PhantomCase other = generator_->Generate(7, 1);
  EXPECT_NE(other.seg.labels, first_->seg.labels);
}

TEST_F(PhantomTest, BratsGridLabelsAndSliceMix) {
  for (int index = 0; index < 3; ++index) {
    const PhantomCase c = index == 0 ? *first_ : generator_->Generate(7, index);
    EXPECT_EQ(c.seg.geometry.dims, (std::array<int64_t, 3>{240, 240, 155}));
    std::map<int, int64_t> counts;
    for (uint8_t l : c.seg.labels) ++counts[l];
    for (const auto& [label, n] : counts) {
      EXPECT_TRUE(label == 0 || label == 1 || label == 2 || label == 4) << label;
    }
    EXPECT_GT(counts[2], 0) << "edema";
    EXPECT_GT(counts[4], 0) << "enhancing";
    // Many tumour-free slices, and a real stretch of tumour slices.
    EXPECT_GT(c.tumour_slices, 155 / 10) << c.case_id;
    EXPECT_LT(c.tumour_slices, 155 * 3 / 4) << c.case_id;
    // Every labelled voxel lies in the brain (where the modality sum is > 0).
    for (size_t v = 0; v < c.seg.labels.size(); ++v) {
      if (c.seg.labels[v] == 0) continue;
      ASSERT_GT(c.image.channels[0][v] + c.image.channels[1][v], 0.0f);
    }
  }
}

TEST_F(PhantomTest, ContrastsBehaveLikeTheirModality) {
  const auto& ch = first_->image.channels;  // flair, t1ce, t1, t2
  const auto& labels = first_->seg.labels;
  // Edema is bright on FLAIR; the enhancing rim is brighter on T1ce than on T1.
  EXPECT_GT(MeanWhere(ch[0], labels, 2), 1.2 * MeanWhere(ch[0], labels, 0));
  EXPECT_GT(MeanWhere(ch[1], labels, 4), 1.2 * MeanWhere(ch[2], labels, 4));
  // Background outside the brain is exactly 0 in every modality.
  EXPECT_EQ(ch[3][0], 0.0f);
}

TEST_F(PhantomTest, WrittenCaseLoadsAsABratsFolder) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("danet_phantom_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WritePhantomCase(*first_, dir).ok());
  absl::StatusOr<volume::BratsCase> loaded = volume::LoadBratsCase(dir / first_->case_id);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->case_id, first_->case_id);
  ASSERT_TRUE(loaded->seg.has_value());
  EXPECT_EQ(loaded->seg->labels, first_->seg.labels);
  // Images are stored as int16 (as BraTS ships them): equal up to rounding.
  for (size_t v = 0; v < first_->image.channels[3].size(); v += 997) {
    EXPECT_NEAR(loaded->image.channels[3][v], first_->image.channels[3][v], 0.5f);
  }
  std::filesystem::remove_all(dir);
}

TEST_F(PhantomTest, MissingTemplateSaysWhatToInstall) {
  absl::StatusOr<PhantomGenerator> g = PhantomGenerator::Create("/nonexistent/ch2bet.nii.gz");
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("mricron-data"), std::string::npos);
}

// The domain-randomised generator: deterministic, its own cases, BraTS labels in the brain that
// agree with the contrasts, and the variety it promises (tumour types, small lesions, looks).
class RandomizedPhantomTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    PhantomOptions options;
    options.style = PhantomStyle::kRandomized;
    options.dims = {176, 176, 120};  // the brain's middle, at 1 mm: quicker, sizes unchanged
    absl::StatusOr<PhantomGenerator> g = PhantomGenerator::Create(kColin27Path, options);
    ASSERT_TRUE(g.ok()) << g.status();
    generator_ = new PhantomGenerator(*std::move(g));
    for (int i = 0; i < kCases; ++i) cases_.push_back(generator_->Generate(31, i));
  }
  static void TearDownTestSuite() {
    delete generator_;
    cases_.clear();
  }
  static constexpr int kCases = 12;
  static PhantomGenerator* generator_;
  static std::vector<PhantomCase> cases_;
};
PhantomGenerator* RandomizedPhantomTest::generator_ = nullptr;
std::vector<PhantomCase> RandomizedPhantomTest::cases_;

TEST_F(RandomizedPhantomTest, SameSeedAndIndexGiveTheSameCase) {
  const PhantomCase again = generator_->Generate(31, 2);
  EXPECT_EQ(again.case_id, "phantom_s31_002");
  EXPECT_EQ(again.seg.labels, cases_[2].seg.labels);
  for (int m = 0; m < volume::kNumModalities; ++m) {
    EXPECT_EQ(again.image.channels[m], cases_[2].image.channels[m]);
  }
  // Not the classic case of the same seed and index.
  PhantomOptions options;
  options.dims = {176, 176, 120};
  absl::StatusOr<PhantomGenerator> classic = PhantomGenerator::Create(kColin27Path, options);
  ASSERT_TRUE(classic.ok());
  EXPECT_NE(classic->Generate(31, 2).seg.labels, cases_[2].seg.labels);
}

TEST_F(RandomizedPhantomTest, LabelsAgreeWithTheContrastsInEveryCase) {
  for (const PhantomCase& c : cases_) {
    const auto& ch = c.image.channels;
    for (size_t v = 0; v < c.seg.labels.size(); ++v) {
      const uint8_t l = c.seg.labels[v];
      ASSERT_TRUE(l == 0 || l == 1 || l == 2 || l == 4) << c.case_id;
      if (l != 0) {
        ASSERT_GT(ch[0][v], 0.0f) << c.case_id << ": a label outside the brain";
      }
    }
    // Against healthy brain (label 0 with signal): edema is brighter than its median on FLAIR
    // and T2, and the enhancing rim stands out more on T1ce than on T1 (ratios: each
    // modality has its own drawn scale).
    auto healthy_median = [&](int m) {
      std::vector<float> values;
      for (size_t v = 0; v < c.seg.labels.size(); ++v) {
        if (c.seg.labels[v] == 0 && ch[m][v] > 0) values.push_back(ch[m][v]);
      }
      std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
      return static_cast<double>(values[values.size() / 2]);
    };
    auto mean = [&](int m, uint8_t label) {
      double sum = 0;
      int64_t n = 0;
      for (size_t v = 0; v < c.seg.labels.size(); ++v) {
        if (c.seg.labels[v] == label) sum += ch[m][v], ++n;
      }
      return n > 0 ? sum / n : -1.0;
    };
    if (mean(0, 2) > 0) {
      EXPECT_GT(mean(0, 2), healthy_median(0)) << c.case_id << " FLAIR edema";
      EXPECT_GT(mean(3, 2), healthy_median(3)) << c.case_id << " T2 edema";
    }
    if (mean(1, 4) > 0) {
      EXPECT_GT(mean(1, 4) / healthy_median(1), mean(2, 4) / healthy_median(2))
          << c.case_id << " T1ce vs T1 rim";
    }
  }
}

TEST_F(RandomizedPhantomTest, CasesVaryInTumourTypeSizeAndLook) {
  int without_enhancing = 0, without_necrosis = 0, small = 0, multifocal = 0;
  std::set<int64_t> white_matter_levels;
  for (const PhantomCase& c : cases_) {
    std::map<int, int64_t> counts;
    for (uint8_t l : c.seg.labels) ++counts[l];
    const int64_t tumour = counts[1] + counts[2] + counts[4];
    EXPECT_GT(tumour, 0) << c.case_id;
    without_enhancing += counts[4] == 0;
    without_necrosis += counts[4] > 0 && counts[1] == 0;
    small += tumour < 1000;  // under 1 mL at 1 mm
    multifocal += c.tumours > 1;
    // The FLAIR level of the brain differs between cases (a proxy for the drawn appearance).
    double sum = 0;
    int64_t n = 0;
    for (float v : c.image.channels[0]) {
      if (v > 0) sum += v, ++n;
    }
    white_matter_levels.insert(static_cast<int64_t>(sum / n / 10));
  }
  EXPECT_GE(without_enhancing, 1);
  EXPECT_GE(without_necrosis, 1);
  EXPECT_GE(small, 1);
  EXPECT_GE(multifocal, 1);
  EXPECT_GE(white_matter_levels.size(), static_cast<size_t>(kCases / 2));
}

// Solid non-enhancing cores (solid_core_fraction): the same case as without them (anatomy,
// tumour extent, edema, every slice out of the blur's reach of the tumour), but label 1 no
// longer looks like necrosis: against the edema around it, brighter on FLAIR (necrosis is dark
// there) and darker on T2 (necrosis is brighter than edema there).
TEST_F(RandomizedPhantomTest, SolidCoresChangeOnlyHowTheCoreLooks) {
  PhantomOptions options;
  options.style = PhantomStyle::kRandomized;
  options.dims = {176, 176, 120};
  options.solid_core_fraction = 1.0;
  absl::StatusOr<PhantomGenerator> solid_generator =
      PhantomGenerator::Create(kColin27Path, options);
  ASSERT_TRUE(solid_generator.ok()) << solid_generator.status();
  int compared = 0;
  for (int i = 0; i < kCases; ++i) {
    const PhantomCase& plain = cases_[i];
    const PhantomCase solid = solid_generator->Generate(31, i);
    ASSERT_EQ(solid.case_id, plain.case_id);
    const auto& a = plain.seg.labels;
    const auto& b = solid.seg.labels;
    ASSERT_EQ(a.size(), b.size());
    // Slices more than 3 away from any tumour slice: out of reach of the blur and the thick
    // slices, so every voxel there must be the same.
    const int64_t plane = options.dims[0] * options.dims[1], depth = options.dims[2];
    std::vector<bool> near_tumour(depth, false);
    for (int64_t z = 0; z < depth; ++z) {
      if (std::any_of(a.begin() + z * plane, a.begin() + (z + 1) * plane,
                      [](uint8_t l) { return l != 0; })) {
        for (int64_t n = std::max<int64_t>(0, z - 3); n <= std::min<int64_t>(depth - 1, z + 3);
             ++n) {
          near_tumour[n] = true;
        }
      }
    }
    ASSERT_GT(std::count(near_tumour.begin(), near_tumour.end(), false), 0) << plain.case_id;
    constexpr int kModality[2] = {0, 3};  // FLAIR, T2
    double sum[2][2][2] = {};             // [plain, solid][FLAIR, T2][label 1, edema]
    int64_t count[2][2] = {};             // [plain, solid][label 1, edema]
    for (size_t v = 0; v < a.size(); ++v) {
      ASSERT_EQ(a[v] == 0, b[v] == 0) << plain.case_id << ": tumour extent changed";
      ASSERT_EQ(a[v] == 2, b[v] == 2) << plain.case_id << ": edema changed";
      if (!near_tumour[v / plane]) {
        for (int m = 0; m < volume::kNumModalities; ++m) {
          ASSERT_EQ(plain.image.channels[m][v], solid.image.channels[m][v])
              << plain.case_id << ": a slice far from the tumour changed";
        }
      }
      const PhantomCase* both[2] = {&plain, &solid};
      for (int s = 0; s < 2; ++s) {
        const uint8_t l = both[s]->seg.labels[v];
        if (l != 1 && l != 2) continue;
        const int slot = l == 1 ? 0 : 1;
        ++count[s][slot];
        for (int m = 0; m < 2; ++m) sum[s][m][slot] += both[s]->image.channels[kModality[m]][v];
      }
    }
    if (count[0][0] == 0 || count[1][0] == 0) continue;  // no label 1 in one of them
    ++compared;
    for (int m = 0; m < 2; ++m) {
      auto ratio = [&](int s) {
        return (sum[s][m][0] / count[s][0]) / (sum[s][m][1] / count[s][1]);
      };
      if (m == 0) {
        EXPECT_GT(ratio(1), ratio(0)) << plain.case_id << " FLAIR: label 1 against edema";
      } else {
        EXPECT_LT(ratio(1), ratio(0)) << plain.case_id << " T2: label 1 against edema";
      }
    }
  }
  EXPECT_GE(compared, 2);
}

// The wide solid look (session 36) takes the classic look's draws: the same labels and the same
// healthy tissue, and only the solid cores' look moves, over a wider spread of T1 against edema.
TEST_F(RandomizedPhantomTest, WideSolidLookChangesOnlyTheCoresLook) {
  PhantomOptions options;
  options.style = PhantomStyle::kRandomized;
  options.dims = {176, 176, 120};
  options.solid_core_fraction = 1.0;
  absl::StatusOr<PhantomGenerator> classic = PhantomGenerator::Create(kColin27Path, options);
  options.solid_look = PhantomOptions::SolidLook::kWide;
  absl::StatusOr<PhantomGenerator> wide = PhantomGenerator::Create(kColin27Path, options);
  ASSERT_TRUE(classic.ok() && wide.ok());
  constexpr int kT1 = 2;
  double spread[2][2] = {{1e9, -1e9}, {1e9, -1e9}};  // [classic, wide][min, max] of core / edema
  for (int i = 0; i < kCases; ++i) {
    const PhantomCase looks[2] = {classic->Generate(31, i), wide->Generate(31, i)};
    ASSERT_EQ(looks[0].seg.labels, looks[1].seg.labels) << looks[0].case_id;
    const std::vector<uint8_t>& labels = looks[0].seg.labels;
    for (int s = 0; s < 2; ++s) {
      double core = 0, edema = 0;
      int64_t cores = 0, edemas = 0;
      for (size_t v = 0; v < labels.size(); ++v) {
        const float value = looks[s].image.channels[kT1][v];
        if (labels[v] == 1) core += value, ++cores;
        if (labels[v] == 2) edema += value, ++edemas;
      }
      if (cores == 0 || edemas == 0) continue;
      const double ratio = (core / cores) / (edema / edemas);
      spread[s][0] = std::min(spread[s][0], ratio);
      spread[s][1] = std::max(spread[s][1], ratio);
    }
    // Healthy voxels change only within the blur's reach of a core, so most stay as they were.
    int64_t same = 0, healthy = 0;
    for (size_t v = 0; v < labels.size(); ++v) {
      if (labels[v] != 0) continue;
      ++healthy;
      same += looks[0].image.channels[kT1][v] == looks[1].image.channels[kT1][v];
    }
    EXPECT_GT(same, healthy * 99 / 100) << looks[0].case_id;
  }
  EXPECT_LT(spread[1][0], spread[0][0]);  // darker cores than the classic look draws
}

TEST(PhantomStyleTest, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(*ParsePhantomStyle("classic"), PhantomStyle::kClassic);
  EXPECT_EQ(*ParsePhantomStyle("randomized"), PhantomStyle::kRandomized);
  const absl::StatusOr<PhantomStyle> bad = ParsePhantomStyle("fancy");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("randomized"), std::string::npos);
}

}  // namespace
}  // namespace danet::data
