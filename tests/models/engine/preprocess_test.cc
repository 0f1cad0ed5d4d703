// The bank's input: channel order from the bundle's preprocessing block, z-scored as it says,
// and the slice sizes the bank accepts.
#include "models/engine/preprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/volume/normalize.h"

namespace danet::engine {
namespace {

using ::testing::HasSubstr;

// A 16 x 16 x 2 case: channel m is (m + 1) * (1 + v % 5) inside the brain (x >= 4), 0 outside.
volume::MultiModalVolume Decoded() {
  volume::MultiModalVolume v;
  v.geometry = volume::MakeGeometry({16, 16, 2}, {1, 1, 1}, {0, 0, 0});
  for (int m = 0; m < volume::kNumModalities; ++m) {
    for (int64_t i = 0; i < v.geometry.NumVoxels(); ++i) {
      v.channels[m].push_back(i % 16 >= 4 ? static_cast<float>((m + 1) * (1 + i % 5)) : 0.0f);
    }
  }
  return v;
}

v1::Preprocessing WithModalities(std::vector<std::string> names) {
  v1::Preprocessing p;
  for (const std::string& n : names) p.add_modalities(n);
  return p;
}

TEST(ChannelOrderTest, EmptyMeansTheBratsOrder) {
  EXPECT_THAT(*ChannelOrder(v1::Preprocessing()), ::testing::ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(*ChannelOrder(WithModalities({"flair", "t1ce", "t1", "t2"})),
              ::testing::ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(*ChannelOrder(WithModalities({"t2", "t1", "flair", "t1ce"})),
              ::testing::ElementsAre(3, 2, 0, 1));
}

TEST(ChannelOrderTest, AnythingButAPermutationIsRefused) {
  for (const auto& names :
       std::vector<std::vector<std::string>>{{"flair", "t1ce", "t1"},
                                             {"flair", "t1ce", "t1", "t1"},
                                             {"flair", "t1ce", "t1", "pd"},
                                             {"flair", "t1ce", "t1", "t2", "t2"}}) {
    absl::StatusOr<std::array<int, 4>> order = ChannelOrder(WithModalities(names));
    EXPECT_EQ(order.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(order.status().message(), HasSubstr("preprocessing.modalities"));
  }
}

TEST(PrepareBankInputTest, DefaultIsTheBratsOrderZScored) {
  volume::MultiModalVolume expected = Decoded();
  volume::NormalizeZScoreBrain(&expected);
  absl::StatusOr<volume::MultiModalVolume> input = PrepareBankInput(v1::Preprocessing(), Decoded());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->geometry.dims, expected.geometry.dims);
  EXPECT_EQ(input->channels, expected.channels);
  v1::Preprocessing explicit_default = WithModalities({"flair", "t1ce", "t1", "t2"});
  explicit_default.set_normalization("zscore_brain");
  EXPECT_EQ(PrepareBankInput(explicit_default, Decoded())->channels, expected.channels);
}

TEST(PrepareBankInputTest, ChannelsFollowTheBundlesOrder) {
  volume::MultiModalVolume normalized = Decoded();
  volume::NormalizeZScoreBrain(&normalized);
  absl::StatusOr<volume::MultiModalVolume> input =
      PrepareBankInput(WithModalities({"t2", "t1", "flair", "t1ce"}), Decoded());
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->channels[0], normalized.channels[3]);  // t2
  EXPECT_EQ(input->channels[1], normalized.channels[2]);  // t1
  EXPECT_EQ(input->channels[2], normalized.channels[0]);  // flair
  EXPECT_EQ(input->channels[3], normalized.channels[1]);  // t1ce
}

TEST(PrepareBankInputTest, UnknownNormalizationIsRefused) {
  v1::Preprocessing p;
  p.set_normalization("minmax");
  absl::StatusOr<volume::MultiModalVolume> input = PrepareBankInput(p, Decoded());
  EXPECT_EQ(input.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(input.status().message(),
              HasSubstr("preprocessing.normalization: 'minmax' is not one of: zscore_brain"));
}

TEST(PaddedSliceExtentTest, NextMultipleOf16) {
  EXPECT_EQ(PaddedSliceExtent(240), 240);
  EXPECT_EQ(PaddedSliceExtent(233), 240);
  EXPECT_EQ(PaddedSliceExtent(229), 240);
  EXPECT_EQ(PaddedSliceExtent(1), 16);
  EXPECT_EQ(PaddedSliceExtent(512), 512);
}

}  // namespace
}  // namespace danet::engine
