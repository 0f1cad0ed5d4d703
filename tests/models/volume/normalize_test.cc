// Intensity normalisation: z-scores over the brain, background zero, order independent.
#include "models/volume/normalize.h"

#include <gtest/gtest.h>

#include <utility>

namespace danet::volume {
namespace {

// An 8 x 6 x 4 volume: modality m is (m + 1) * (1 + idx % 3) inside a brain box (i in 2..5),
// 0 outside; channel 3 is constant inside the box when `constant_t2`.
MultiModalVolume MakeVolume(bool constant_t2 = false) {
  MultiModalVolume v;
  v.geometry = MakeGeometry({8, 6, 4}, {1, 1, 1}, {0, 0, 0});
  for (int m = 0; m < kNumModalities; ++m) {
    v.channels[m].assign(v.geometry.NumVoxels(), 0.0f);
    for (int64_t idx = 0; idx < v.geometry.NumVoxels(); ++idx) {
      const int64_t i = idx % v.geometry.dims[0];
      if (i < 2 || i > 5) continue;
      v.channels[m][idx] =
          constant_t2 && m == 3 ? 7.0f : static_cast<float>((m + 1) * (1 + idx % 3));
    }
  }
  return v;
}

TEST(NormalizeTest, ZScoreOverBrainLeavesBackgroundZero) {
  MultiModalVolume v = MakeVolume();
  NormalizeZScoreBrain(&v);
  for (const auto& channel : v.channels) {
    double sum = 0, sq = 0;
    int n = 0;
    for (int64_t idx = 0; idx < v.geometry.NumVoxels(); ++idx) {
      const int64_t i = idx % v.geometry.dims[0];
      if (i >= 2 && i <= 5) {
        sum += channel[idx];
        sq += channel[idx] * channel[idx];
        ++n;
      } else {
        EXPECT_EQ(channel[idx], 0.0f);
      }
    }
    EXPECT_NEAR(sum / n, 0.0, 1e-5);
    EXPECT_NEAR(sq / n, 1.0, 1e-4);
  }
}

TEST(NormalizeTest, ConstantChannelBecomesZero) {
  MultiModalVolume v = MakeVolume(/*constant_t2=*/true);
  NormalizeZScoreBrain(&v);
  for (float x : v.channels[3]) EXPECT_EQ(x, 0.0f);
}

TEST(NormalizeTest, ChannelOrderDoesNotMatter) {
  MultiModalVolume v = MakeVolume();
  MultiModalVolume swapped = v;
  std::swap(swapped.channels[0], swapped.channels[2]);
  NormalizeZScoreBrain(&v);
  NormalizeZScoreBrain(&swapped);
  EXPECT_EQ(swapped.channels[0], v.channels[2]);
  EXPECT_EQ(swapped.channels[2], v.channels[0]);
  EXPECT_EQ(swapped.channels[1], v.channels[1]);
}

}  // namespace
}  // namespace danet::volume
