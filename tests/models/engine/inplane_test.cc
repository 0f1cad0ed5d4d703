// The bank's in-plane grid: when a case is resampled and onto what, that a case at half the
// spacing (every voxel repeated 2 x 2) comes back to the original exactly and goes up again
// bilinearly, and that labels come back onto the case's grid voxel for voxel.
#include "models/engine/inplane.h"

#include <gtest/gtest.h>

#include <random>

namespace danet::engine {
namespace {

v1::Preprocessing At(double mm) {
  v1::Preprocessing p;
  p.set_inplane_spacing_mm(mm);
  return p;
}

TEST(BankGridTest, ResamplesOnlyWhenTheSpacingIsOffByMoreThanTheTolerance) {
  const volume::Geometry fine = volume::MakeGeometry({480, 460, 7}, {0.5, 0.5, 3}, {-10, 4, 2});
  EXPECT_FALSE(BankGrid(At(0), fine).has_value());  // off
  EXPECT_FALSE(
      BankGrid(At(1), volume::MakeGeometry({256, 256, 7}, {0.94, 0.94, 1}, {0, 0, 0})).has_value());
  const std::optional<volume::Geometry> grid = BankGrid(At(1), fine);
  ASSERT_TRUE(grid.has_value());
  EXPECT_EQ(grid->dims, (std::array<int64_t, 3>{240, 230, 7}));
  EXPECT_NEAR(grid->spacing[0], 1.0, 1e-9);
  EXPECT_NEAR(grid->spacing[1], 1.0, 1e-9);
  EXPECT_NEAR(grid->spacing[2], 3.0, 1e-9);
  // The same field of view: bank voxel 0's centre half a fine voxel in from fine voxel 0's.
  const volume::Matrix4 f = fine.VoxelToWorld(), b = grid->VoxelToWorld();
  EXPECT_NEAR(b[0][3], f[0][3] + 0.25, 1e-9);
  EXPECT_NEAR(b[1][3], f[1][3] + 0.25, 1e-9);
  EXPECT_NEAR(b[2][3], f[2][3], 1e-9);
  // Only the finer axis is resized; a coarser one is never refined (the grid never grows).
  const std::optional<volume::Geometry> one =
      BankGrid(At(1), volume::MakeGeometry({100, 480, 3}, {2.0, 0.5, 1}, {0, 0, 0}));
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->dims, (std::array<int64_t, 3>{100, 240, 3}));
  EXPECT_NEAR(one->spacing[0], 2.0, 1e-9);
  EXPECT_FALSE(
      BankGrid(At(1), volume::MakeGeometry({100, 120, 3}, {2.0, 2.0, 1}, {0, 0, 0})).has_value());
  EXPECT_FALSE(
      BankGrid(At(1), volume::MakeGeometry({512, 512, 4}, {10, 10, 1}, {0, 0, 0})).has_value());
}

TEST(ResampleInPlaneTest, HalfTheSpacingRepeatedComesBackExactly) {
  const int64_t w = 12, h = 10, d = 3;
  volume::MultiModalVolume original;
  original.geometry = volume::MakeGeometry({w, h, d}, {1, 1, 2}, {0, 0, 0});
  volume::MultiModalVolume fine;
  fine.geometry = volume::MakeGeometry({2 * w, 2 * h, d}, {0.5, 0.5, 2}, {-0.25, -0.25, 0});
  fine.notes = {"a note"};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> value(0, 100);
  for (int c = 0; c < volume::kNumModalities; ++c) {
    original.channels[c].resize(w * h * d);
    for (float& v : original.channels[c]) v = value(rng);
    fine.channels[c].resize(4 * w * h * d);
    for (int64_t v = 0; v < 4 * w * h * d; ++v) {
      const int64_t x = v % (2 * w), y = v / (2 * w) % (2 * h), z = v / (4 * w * h);
      fine.channels[c][v] = original.channels[c][(z * h + y / 2) * w + x / 2];
    }
  }
  const std::optional<volume::Geometry> grid = BankGrid(At(1), fine.geometry);
  ASSERT_TRUE(grid.has_value());
  EXPECT_TRUE(grid->SameGrid(original.geometry, 1e-6));
  const volume::MultiModalVolume exact = ResampleInPlane(fine, *grid);
  EXPECT_EQ(exact.notes, fine.notes);
  for (int c = 0; c < volume::kNumModalities; ++c) {
    ASSERT_EQ(exact.channels[c].size(), original.channels[c].size());
    for (size_t v = 0; v < exact.channels[c].size(); ++v) {
      ASSERT_NEAR(exact.channels[c][v], original.channels[c][v], 1e-4) << c << " " << v;
    }
  }
  // Back up to the fine grid (bilinear): at the original's voxel centres... in between, averages.
  const volume::MultiModalVolume up = ResampleInPlane(exact, fine.geometry);
  ASSERT_EQ(up.channels[0].size(), fine.channels[0].size());
  for (float v : up.channels[0]) ASSERT_GE(v, 0.0f);
  // A voxel of the fine grid lies a quarter voxel from its original voxel's centre.
  const int64_t x = 5, y = 4, z = 1;
  const auto at = [&](int64_t i, int64_t j) { return original.channels[0][(z * h + j) * w + i]; };
  EXPECT_NEAR(up.channels[0][(z * 2 * h + 2 * y + 1) * 2 * w + 2 * x + 1],
              0.75f * 0.75f * at(x, y) + 0.75f * 0.25f * (at(x + 1, y) + at(x, y + 1)) +
                  0.25f * 0.25f * at(x + 1, y + 1),
              1e-3);
}

TEST(LabelsToCaseGridTest, EachCaseVoxelTakesTheNearestBankVoxel) {
  const volume::Geometry fine = volume::MakeGeometry({9, 6, 2}, {0.5, 0.5, 1}, {0, 0, 0});
  const std::optional<volume::Geometry> grid = BankGrid(At(1), fine);
  ASSERT_TRUE(grid.has_value());
  ASSERT_EQ(grid->dims, (std::array<int64_t, 3>{5, 3, 2}));  // 4.5 rounds away from zero
  std::vector<uint8_t> bank(5 * 3 * 2);
  for (size_t v = 0; v < bank.size(); ++v) bank[v] = static_cast<uint8_t>(v);
  const std::vector<uint8_t> back = LabelsToCaseGrid(*grid, fine).Volume(bank);
  ASSERT_EQ(back.size(), static_cast<size_t>(9 * 6 * 2));
  for (int64_t z = 0; z < 2; ++z) {
    for (int64_t y = 0; y < 6; ++y) {
      for (int64_t x = 0; x < 9; ++x) {
        // Case voxel x's centre at bank index (x + 0.5) * 5 / 9 - 0.5: nearest by brute force.
        auto nearest = [](int64_t i, int64_t n, int64_t m) {
          const double at = (static_cast<double>(i) + 0.5) * static_cast<double>(m) / n - 0.5;
          int64_t best = 0;
          for (int64_t j = 1; j < m; ++j) {
            if (std::abs(j - at) < std::abs(best - at)) best = j;
          }
          return best;
        };
        const int64_t bx = nearest(x, 9, 5), by = nearest(y, 6, 3);
        EXPECT_EQ(back[(z * 6 + y) * 9 + x], bank[(z * 3 + by) * 5 + bx]) << x << " " << y;
      }
    }
  }
}

}  // namespace
}  // namespace danet::engine
