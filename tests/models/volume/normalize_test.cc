// Intensity normalisation: z-scores over the brain, background zero, order independent.
#include "models/volume/normalize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

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

// The z-scoring runs on parts of the volume in parallel: a volume whose voxel count does not
// divide into the parts, with brain voxels up to its last one, matches a plain serial
// computation voxel for voxel.
TEST(NormalizeTest, MatchesASerialComputationOnEveryVoxel) {
  MultiModalVolume v;
  v.geometry = MakeGeometry({7, 5, 3}, {1, 1, 1}, {0, 0, 0});
  const int64_t n = v.geometry.NumVoxels();
  for (int m = 0; m < kNumModalities; ++m) {
    v.channels[m].resize(n);
    // Background (all channels 0) every fourth voxel; a negative value in one channel elsewhere.
    for (int64_t idx = 0; idx < n; ++idx) {
      v.channels[m][idx] = idx % 4 == 1 ? 0.0f : static_cast<float>((idx * (m + 3)) % 11) - m;
    }
  }
  MultiModalVolume expected = v;
  std::vector<bool> brain(n);
  for (int64_t idx = 0; idx < n; ++idx) {
    float sum = 0;
    for (const auto& channel : v.channels) sum += channel[idx];
    brain[idx] = sum > 0;
  }
  ASSERT_TRUE(brain[n - 1]);
  for (auto& channel : expected.channels) {
    double total = 0, total_sq = 0;
    int count = 0;
    for (int64_t idx = 0; idx < n; ++idx) {
      if (!brain[idx]) continue;
      total += channel[idx];
      total_sq += static_cast<double>(channel[idx]) * channel[idx];
      ++count;
    }
    const double mean = total / count;
    const double scale = 1.0 / std::sqrt(total_sq / count - mean * mean);
    for (int64_t idx = 0; idx < n; ++idx) {
      channel[idx] = brain[idx] ? static_cast<float>((channel[idx] - mean) * scale) : 0.0f;
    }
  }
  NormalizeZScoreBrain(&v);
  for (int m = 0; m < kNumModalities; ++m) {
    for (int64_t idx = 0; idx < n; ++idx) {
      EXPECT_NEAR(v.channels[m][idx], expected.channels[m][idx], 1e-5) << m << " " << idx;
    }
  }
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
