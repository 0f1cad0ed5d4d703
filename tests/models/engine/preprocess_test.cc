// The bank's input: channel order from the bundle's preprocessing block, z-scored as it says,
// the bias correction it asks for, and the slice sizes the bank accepts.
#include "models/engine/preprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "models/volume/bias.h"
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

TEST(PrepareBankInputTest, BiasCorrectionRunsBeforeNormalisation) {
  // A 32 x 32 x 8 brain of three tissues under a field that grows along x.
  volume::MultiModalVolume decoded;
  decoded.geometry = volume::MakeGeometry({32, 32, 8}, {1, 1, 1}, {0, 0, 0});
  for (int m = 0; m < volume::kNumModalities; ++m) {
    for (int64_t i = 0; i < decoded.geometry.NumVoxels(); ++i) {
      const int64_t x = i % 32, y = i / 32 % 32;
      const double tissue = 100.0 + 60.0 * ((x / 2 + y / 2) % 3);
      decoded.channels[m].push_back(
          x >= 2 && x < 30 ? static_cast<float>(tissue * std::exp(0.01 * x)) : 0.0f);
    }
  }
  v1::Preprocessing p;
  p.set_bias_correction("poly2");
  volume::MultiModalVolume expected = decoded;
  volume::CorrectBiasField(&expected, volume::BiasCorrectionOptions{.degree = 2});
  volume::NormalizeZScoreBrain(&expected);
  absl::StatusOr<volume::MultiModalVolume> input = PrepareBankInput(p, decoded);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->channels, expected.channels);
  // The field is gone: a tissue's voxels at both ends of x are within 1% of each other.
  for (const auto& channel : input->channels) {
    EXPECT_NEAR(channel[2], channel[26], 0.01 * std::abs(channel[2]));
  }
  // The FLAIR limit reaches the FLAIR channel's fit, wherever the bundle puts that channel.
  p.add_modalities("t1");
  p.add_modalities("t2");
  p.add_modalities("flair");
  p.add_modalities("t1ce");
  p.set_bias_flair_bright_sigmas(0.5);
  volume::MultiModalVolume limited;
  limited.geometry = decoded.geometry;
  for (int c = 0; c < volume::kNumModalities; ++c) {
    limited.channels[c] = decoded.channels[volume::ModalityIndex(p.modalities(c))];
  }
  volume::CorrectBiasField(
      &limited, volume::BiasCorrectionOptions{.degree = 2, .bright_sigmas = {0, 0, 0.5, 0}});
  volume::NormalizeZScoreBrain(&limited);
  ASSERT_NE(limited.channels[2], limited.channels[0]);  // the limit changes the fit here
  EXPECT_EQ(PrepareBankInput(p, decoded)->channels, limited.channels);
  p.clear_modalities();
  p.set_bias_flair_bright_sigmas(0);
  p.set_bias_correction("none");
  volume::MultiModalVolume uncorrected = decoded;
  volume::NormalizeZScoreBrain(&uncorrected);
  EXPECT_EQ(PrepareBankInput(p, decoded)->channels, uncorrected.channels);
}

TEST(PrepareBankInputTest, UnknownBiasCorrectionIsRefused) {
  v1::Preprocessing p;
  p.set_bias_correction("n4");
  absl::StatusOr<volume::MultiModalVolume> input = PrepareBankInput(p, Decoded());
  EXPECT_EQ(input.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(input.status().message(),
              HasSubstr("preprocessing.bias_correction: 'n4' is not one of: none, poly1"));
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
