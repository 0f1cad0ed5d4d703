// BraTS case folders: loading, grid checks that name the odd file out, labels.
#include "models/volume/brats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace danet::volume {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class BratsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("danet_brats_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name()) /
           "Case_001";
    std::filesystem::remove_all(dir_.parent_path());
    std::filesystem::create_directories(dir_);
    geometry_ = MakeGeometry({8, 6, 4}, {1, 1, 1}, {0, 0, 0});
  }
  void TearDown() override { std::filesystem::remove_all(dir_.parent_path()); }

  // Modality m: value m+1 inside a brain box (voxels with i in 2..5), 0 outside.
  void WriteModality(int m, const Geometry& g, const std::string& ext = ".nii.gz") {
    Volume v{g, std::vector<float>(g.NumVoxels(), 0.0f)};
    for (int64_t idx = 0; idx < g.NumVoxels(); ++idx) {
      const int64_t i = idx % g.dims[0];
      if (i >= 2 && i <= 5) v.voxels[idx] = static_cast<float>((m + 1) * (1 + idx % 3));
    }
    ASSERT_TRUE(WriteNiftiImage(dir_ / ("Case_001_" + std::string(kModalities[m]) + ext), v,
                                ImageStorage::kFloat32)
                    .ok());
  }
  void WriteAll() {
    for (int m = 0; m < kNumModalities; ++m) WriteModality(m, geometry_);
  }
  void WriteSeg(uint8_t value_at_10) {
    LabelVolume seg{geometry_, std::vector<uint8_t>(geometry_.NumVoxels(), 0)};
    seg.labels[10] = value_at_10;
    seg.labels[11] = 4;
    ASSERT_TRUE(WriteNiftiLabels(dir_ / "Case_001_seg.nii.gz", seg).ok());
  }

  std::filesystem::path dir_;
  Geometry geometry_;
};

TEST_F(BratsTest, LoadsFourModalitiesInNetworkOrderWithSeg) {
  WriteAll();
  WriteSeg(2);
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->case_id, "Case_001");
  for (int m = 0; m < kNumModalities; ++m) {
    EXPECT_EQ(c->image.channels[m][2], static_cast<float>(m + 1) * 3) << kModalities[m];
  }
  ASSERT_TRUE(c->seg.has_value());
  EXPECT_EQ(c->seg->labels[10], 2);
  EXPECT_EQ(LabelToClass(4), 3);
  EXPECT_EQ(ClassToLabel(3), 4);
}

TEST_F(BratsTest, SegIsOptionalAndPlainNiiWorks) {
  for (int m = 0; m < kNumModalities; ++m) WriteModality(m, geometry_, ".nii");
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->seg.has_value());
}

TEST_F(BratsTest, MissingModalityIsNamed) {
  for (int m : {0, 1, 3}) WriteModality(m, geometry_);
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("no *_t1.nii.gz"));
}

TEST_F(BratsTest, AnotherGridIsResampledOntoTheFlairGrid) {
  // t2 with one more slice at the same spacing and origin: on the flair's voxels it holds the
  // same values; the note says what happened (no file names: they may carry patient data).
  for (int m : {0, 1, 2}) WriteModality(m, geometry_);
  WriteModality(3, MakeGeometry({8, 6, 5}, {1, 1, 1}, {0, 0, 0}));
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->image.geometry.dims, geometry_.dims);
  ASSERT_EQ(c->image.channels[3].size(), static_cast<size_t>(geometry_.NumVoxels()));
  for (int64_t idx = 0; idx < geometry_.NumVoxels(); ++idx) {
    const int64_t i = idx % 8;
    const float expected = (i >= 2 && i <= 5) ? static_cast<float>(4 * (1 + idx % 3)) : 0.0f;
    ASSERT_FLOAT_EQ(c->image.channels[3][idx], expected) << idx;
  }
  ASSERT_EQ(c->image.notes.size(), 1u);
  EXPECT_THAT(c->image.notes[0], HasSubstr("t2 resampled (trilinear) from 8x6x5"));
  EXPECT_THAT(c->image.notes[0], Not(HasSubstr("Case_001")));
}

TEST_F(BratsTest, AGridCoveringTooLittleNamesTheFile) {
  // t1ce 3 mm further up: only one of the flair's 4 slices lies inside it.
  for (int m : {0, 2, 3}) WriteModality(m, geometry_);
  WriteModality(1, MakeGeometry({8, 6, 4}, {1, 1, 1}, {0, 0, 3}));
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("Case_001_t1ce.nii.gz (t1ce) covers 25% of the flair grid"));
}

TEST_F(BratsTest, GridsWithoutPositionsCannotBeRelated) {
  Geometry plain = MakeGeometry({8, 6, 5}, {1, 1, 1}, {0, 0, 0});
  plain.qform_code = plain.sform_code = 0;
  for (int m : {0, 1, 2}) WriteModality(m, geometry_);
  WriteModality(3, plain);
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("Case_001_t2.nii.gz (t2) is 8x6x5"));
  EXPECT_THAT(c.status().message(), HasSubstr("without a qform or sform"));
}

TEST_F(BratsTest, NonBratsLabelIsRefused) {
  WriteAll();
  WriteSeg(3);
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  EXPECT_THAT(c.status().message(), HasSubstr("Case_001_seg.nii.gz: label 3 is not a BraTS label"));
}

TEST_F(BratsTest, CorruptModalityIsNamed) {
  WriteAll();
  ASSERT_TRUE(WriteFileBytes(dir_ / "Case_001_flair.nii.gz", "\x1f\x8b garbage").ok());
  absl::StatusOr<BratsCase> c = LoadBratsCase(dir_);
  EXPECT_THAT(c.status().message(), HasSubstr("Case_001_flair.nii.gz: "));
}

TEST_F(BratsTest, MissingFolderIsNotFound) {
  EXPECT_EQ(LoadBratsCase(dir_ / "nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace danet::volume
