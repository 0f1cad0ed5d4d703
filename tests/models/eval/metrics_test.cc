// Dice and HD95 on hand-made masks, and the EDT-based HD95 against brute force.
#include "models/eval/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace danet::eval {
namespace {

using Dims = std::array<int64_t, 3>;

std::vector<uint8_t> Cube(const Dims& d, Dims lo, int64_t side) {
  std::vector<uint8_t> m(d[0] * d[1] * d[2], 0);
  for (int64_t k = lo[2]; k < lo[2] + side; ++k)
    for (int64_t j = lo[1]; j < lo[1] + side; ++j)
      for (int64_t i = lo[0]; i < lo[0] + side; ++i) m[(k * d[1] + j) * d[0] + i] = 1;
  return m;
}

// HD95 by brute force over surface voxel pairs (same surface and percentile definitions).
double BruteHd95(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, const Dims& d,
                 const std::array<double, 3>& s) {
  auto surface = [&](const std::vector<uint8_t>& m) {
    std::vector<std::array<double, 3>> pts;
    for (int64_t k = 0; k < d[2]; ++k)
      for (int64_t j = 0; j < d[1]; ++j)
        for (int64_t i = 0; i < d[0]; ++i) {
          const int64_t v = (k * d[1] + j) * d[0] + i;
          if (!m[v]) continue;
          auto in = [&](int64_t x, int64_t y, int64_t z) {
            return x >= 0 && y >= 0 && z >= 0 && x < d[0] && y < d[1] && z < d[2] &&
                   m[(z * d[1] + y) * d[0] + x];
          };
          if (!in(i - 1, j, k) || !in(i + 1, j, k) || !in(i, j - 1, k) || !in(i, j + 1, k) ||
              !in(i, j, k - 1) || !in(i, j, k + 1)) {
            pts.push_back({i * s[0], j * s[1], k * s[2]});
          }
        }
    return pts;
  };
  const auto pa = surface(a), pb = surface(b);
  std::vector<double> dist;
  auto nearest = [](const std::array<double, 3>& p, const std::vector<std::array<double, 3>>& q) {
    double best = 1e30;
    for (const auto& x : q) {
      best = std::min(best, std::hypot(p[0] - x[0], p[1] - x[1], p[2] - x[2]));
    }
    return best;
  };
  for (const auto& p : pa) dist.push_back(nearest(p, pb));
  for (const auto& p : pb) dist.push_back(nearest(p, pa));
  std::sort(dist.begin(), dist.end());
  const double pos = 0.95 * (dist.size() - 1);
  const size_t lo = static_cast<size_t>(pos), hi = std::min(lo + 1, dist.size() - 1);
  return dist[lo] + (pos - lo) * (dist[hi] - dist[lo]);
}

TEST(MetricsTest, EmptyAndEmptyIsPerfect) {
  const Dims d = {8, 8, 8};
  const std::vector<uint8_t> empty(512, 0);
  EXPECT_EQ(Dice(empty, empty), 1.0);
  EXPECT_EQ(Hd95(empty, empty, d, {1, 1, 1}), 0.0);
}

TEST(MetricsTest, EmptyAgainstNonEmptyIsWorst) {
  const Dims d = {8, 8, 8};
  const std::vector<uint8_t> empty(512, 0), cube = Cube(d, {2, 2, 2}, 3);
  EXPECT_EQ(Dice(empty, cube), 0.0);
  EXPECT_EQ(Dice(cube, empty), 0.0);
  EXPECT_EQ(Hd95(empty, cube, d, {1, 1, 1}), kHd95Missing);
  EXPECT_EQ(Hd95(cube, empty, d, {1, 1, 1}), kHd95Missing);
}

TEST(MetricsTest, IdenticalMasks) {
  const Dims d = {12, 12, 12};
  const auto cube = Cube(d, {2, 3, 4}, 5);
  EXPECT_EQ(Dice(cube, cube), 1.0);
  EXPECT_EQ(Hd95(cube, cube, d, {1, 1, 1}), 0.0);
}

TEST(MetricsTest, ShiftedCubeHasKnownDiceAndDistance) {
  const Dims d = {24, 16, 16};
  const auto a = Cube(d, {2, 3, 3}, 10), b = Cube(d, {5, 3, 3}, 10);
  // Overlap 7 x 10 x 10 of two 1000-voxel cubes.
  EXPECT_DOUBLE_EQ(Dice(a, b), 2.0 * 700 / 2000);
  // The x faces are 3 voxels off, the other faces coincide: the 95th percentile is the shift.
  EXPECT_NEAR(Hd95(a, b, d, {1, 1, 1}), 3.0, 1e-9);
  EXPECT_NEAR(Hd95(a, b, d, {2, 1, 1}), 6.0, 1e-9);  // in mm
}

TEST(MetricsTest, Hd95MatchesBruteForceOnRandomBlobs) {
  std::mt19937 rng(5);
  const Dims d = {14, 11, 9};
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<uint8_t> a(d[0] * d[1] * d[2]), b(a.size());
    std::bernoulli_distribution pa(0.3), pb(0.2);
    for (size_t v = 0; v < a.size(); ++v) {
      a[v] = pa(rng);
      b[v] = pb(rng);
    }
    const std::array<double, 3> spacing = {1.0, 1.5, 2.5};
    EXPECT_NEAR(Hd95(a, b, d, spacing), BruteHd95(a, b, d, spacing), 1e-9) << trial;
  }
}

TEST(MetricsTest, RegionsFollowBratsLabels) {
  const std::vector<uint8_t> labels = {0, 1, 2, 4};
  EXPECT_EQ(RegionMask(labels, Region::kWT), (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(RegionMask(labels, Region::kTC), (std::vector<uint8_t>{0, 1, 0, 1}));
  EXPECT_EQ(RegionMask(labels, Region::kET), (std::vector<uint8_t>{0, 0, 0, 1}));
}

TEST(MetricsTest, SliceScoreAveragesRegionsWithEmptyEqualsOne) {
  // Reference has edema only; prediction has the edema right: WT 1, TC empty/empty 1, ET 1.
  const uint8_t ref[4] = {0, 2, 2, 0}, good[4] = {0, 2, 2, 0};
  EXPECT_DOUBLE_EQ(SliceScore(good, ref, 4), 1.0);
  // Calling edema enhancing: WT still 1, but TC and ET are non-empty vs empty: 0.
  const uint8_t bad[4] = {0, 4, 4, 0};
  EXPECT_DOUBLE_EQ(SliceScore(bad, ref, 4), 1.0 / 3.0);
  // Nothing predicted: WT 0, TC 1, ET 1.
  const uint8_t none[4] = {0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(SliceScore(none, ref, 4), 2.0 / 3.0);
}

TEST(MetricsTest, SliceErrorScoreWeighsRegionsBySize) {
  // Reference: 8 tumour voxels, 4 of them core (label 1), none enhancing.
  const uint8_t ref[10] = {0, 0, 2, 2, 2, 2, 1, 1, 1, 1};
  EXPECT_DOUBLE_EQ(SliceErrorScore(ref, ref, 10), 1.0);
  // One core voxel called oedema: one TC error out of 3 x 8.
  const uint8_t edge[10] = {0, 0, 2, 2, 2, 2, 2, 1, 1, 1};
  EXPECT_DOUBLE_EQ(SliceErrorScore(edge, ref, 10), 1.0 - 1.0 / 24.0);
  // The whole core called oedema: 4 TC errors.
  const uint8_t no_core[10] = {0, 0, 2, 2, 2, 2, 2, 2, 2, 2};
  EXPECT_DOUBLE_EQ(SliceErrorScore(no_core, ref, 10), 1.0 - 4.0 / 24.0);
  // Nothing predicted: 8 WT and 4 TC errors.
  const uint8_t none[10] = {};
  EXPECT_DOUBLE_EQ(SliceErrorScore(none, ref, 10), 1.0 - 12.0 / 24.0);
  // Every voxel called enhancing: WT 2 errors (the background), TC 6, ET 10.
  const uint8_t all_et[10] = {4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
  EXPECT_DOUBLE_EQ(SliceErrorScore(all_et, ref, 10), 1.0 - 18.0 / 24.0);
}

TEST(MetricsTest, ScoreLabelsGivesAllThreeRegions) {
  const Dims d = {10, 10, 10};
  std::vector<uint8_t> ref(1000, 0), pred(1000, 0);
  ref[555] = 4;
  pred[555] = 1;
  const RegionScores s = ScoreLabels(pred, ref, d, {1, 1, 1});
  EXPECT_EQ(s.dice[0], 1.0);  // WT
  EXPECT_EQ(s.dice[1], 1.0);  // TC
  EXPECT_EQ(s.dice[2], 0.0);  // ET
  EXPECT_EQ(s.hd95[2], kHd95Missing);
}

}  // namespace
}  // namespace danet::eval
