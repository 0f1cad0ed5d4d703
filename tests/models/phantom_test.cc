// Phantom cases: deterministic per seed, BraTS label structure, the slice mix the method
// relies on, and contrasts that make tumours visible the way they are on real MRI.
#include "models/data/phantom.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

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

}  // namespace
}  // namespace danet::data
