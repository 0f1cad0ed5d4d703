// Resampling between grids in world coordinates: exact on linear fields, any orientation, the
// field of view and its coverage.
#include "models/volume/resample.h"

#include <gtest/gtest.h>

#include <cmath>

namespace danet::volume {
namespace {

// f(world) = 2x - y + 0.5z + 7: trilinear interpolation reproduces a linear field exactly.
double Field(const Matrix4& m, double i, double j, double k) {
  double w[3];
  for (int r = 0; r < 3; ++r) w[r] = m[r][0] * i + m[r][1] * j + m[r][2] * k + m[r][3];
  return 2 * w[0] - w[1] + 0.5 * w[2] + 7;
}

Volume Sample(const Geometry& g) {
  Volume v{g, std::vector<float>(g.NumVoxels())};
  const Matrix4 m = g.VoxelToWorld();
  size_t o = 0;
  for (int64_t k = 0; k < g.dims[2]; ++k) {
    for (int64_t j = 0; j < g.dims[1]; ++j) {
      for (int64_t i = 0; i < g.dims[0]; ++i) v.voxels[o++] = static_cast<float>(Field(m, i, j, k));
    }
  }
  return v;
}

// Every target voxel whose centre lies inside the source's outer voxel centres holds the field.
void ExpectFieldInside(const Volume& source, const Volume& out) {
  const Matrix4 t = out.geometry.VoxelToWorld();
  const Geometry& s = source.geometry;
  const Matrix4 sm = s.VoxelToWorld();
  int checked = 0;
  size_t o = 0;
  for (int64_t k = 0; k < out.geometry.dims[2]; ++k) {
    for (int64_t j = 0; j < out.geometry.dims[1]; ++j) {
      for (int64_t i = 0; i < out.geometry.dims[0]; ++i, ++o) {
        // The source's axes here are the world axes scaled and shifted (tests below).
        double w[3];
        for (int r = 0; r < 3; ++r) w[r] = t[r][0] * i + t[r][1] * j + t[r][2] * k + t[r][3];
        bool inside = true;
        for (int r = 0; r < 3; ++r) {
          const double p = (w[r] - sm[r][3]) / sm[r][r];
          inside = inside && p >= 0 && p <= static_cast<double>(s.dims[r] - 1);
        }
        if (!inside) continue;
        ++checked;
        ASSERT_NEAR(out.voxels[o], Field(t, i, j, k), 1e-3) << i << "," << j << "," << k;
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(ResampleTest, SameGridIsTheIdentity) {
  const Geometry g = MakeGeometry({9, 7, 5}, {1, 1, 1}, {-4, -3, -2});
  const Volume v = Sample(g);
  double coverage = 0;
  const Volume out = ResampleTrilinear(v, g, &coverage);
  EXPECT_EQ(out.voxels, v.voxels);
  EXPECT_DOUBLE_EQ(coverage, 1.0);
}

TEST(ResampleTest, ThickSlicesAndAnotherMatrixOntoAFineGrid) {
  // A 5 mm axial series at 1.5 mm in-plane onto a 1 mm grid with its origin half a voxel off.
  const Volume source = Sample(MakeGeometry({16, 14, 6}, {1.5, 1.5, 5}, {-12, -10, -12}));
  const Geometry target = MakeGeometry({20, 18, 24}, {1, 1, 1}, {-9.5, -8.5, -11});
  double coverage = 0;
  const Volume out = ResampleTrilinear(source, target, &coverage);
  EXPECT_EQ(out.geometry.dims, target.dims);
  ExpectFieldInside(source, out);
  EXPECT_GT(coverage, 0.9);
}

TEST(ResampleTest, SagittalSourceOntoAnAxialGrid) {
  // A sagittal series: i runs anterior-posterior, j down, k left-right (its own axes), 1 mm.
  Matrix4 sagittal{};
  sagittal[0] = {0, 0, 1, -6};  // x from k
  sagittal[1] = {-1, 0, 0, 8};  // y from -i
  sagittal[2] = {0, -1, 0, 7};  // z from -j
  sagittal[3] = {0, 0, 0, 1};
  const Geometry sg = GeometryFromAffine({17, 15, 13}, sagittal);
  const Volume source = Sample(sg);
  const Geometry target = MakeGeometry({10, 12, 12}, {1, 1, 1}, {-5, -7, -6});
  double coverage = 0;
  const Volume out = ResampleTrilinear(source, target, &coverage);
  // Every target centre lies inside the sagittal box (x -6..6, y -8..8, z -7..7): exact field.
  const Matrix4 t = target.VoxelToWorld();
  size_t o = 0;
  for (int64_t k = 0; k < 12; ++k) {
    for (int64_t j = 0; j < 12; ++j) {
      for (int64_t i = 0; i < 10; ++i, ++o) ASSERT_NEAR(out.voxels[o], Field(t, i, j, k), 1e-3);
    }
  }
  EXPECT_DOUBLE_EQ(coverage, 1.0);
}

TEST(ResampleTest, OutsideTheFieldOfViewIsZeroAndCounted) {
  const Volume source = Sample(MakeGeometry({4, 4, 4}, {1, 1, 1}, {0, 0, 0}));
  // Target x from -4 to 3: centres at x <= -1 are more than half a voxel outside.
  const Geometry target = MakeGeometry({8, 4, 4}, {1, 1, 1}, {-4, 0, 0});
  double coverage = 0;
  const Volume out = ResampleTrilinear(source, target, &coverage);
  EXPECT_DOUBLE_EQ(coverage, 0.5);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(out.voxels[i], 0.0f);
  EXPECT_NEAR(out.voxels[4], Field(target.VoxelToWorld(), 4, 0, 0), 1e-4);
}

TEST(ResampleTest, HalfAVoxelBeyondTheEdgeTakesTheEdgeValue) {
  Volume source{MakeGeometry({2, 1, 1}, {1, 1, 1}, {0, 0, 0}), {10.0f, 20.0f}};
  const Geometry target = MakeGeometry({4, 1, 1}, {0.5, 1, 1}, {-0.25, 0, 0});
  const Volume out = ResampleTrilinear(source, target);
  EXPECT_FLOAT_EQ(out.voxels[0], 10.0f);  // x = -0.25: clamped to the edge voxel
  EXPECT_FLOAT_EQ(out.voxels[1], 12.5f);  // x = 0.25
  EXPECT_FLOAT_EQ(out.voxels[2], 17.5f);  // x = 0.75
  EXPECT_FLOAT_EQ(out.voxels[3], 20.0f);  // x = 1.25
}

// A degenerate target (NaN in its matrix) places nothing inside: no voxel is read, and the NaN
// index is never cast to an integer (UBSan checks this in scripts/sanitize).
TEST(ResampleTest, NanTransformCoversNothing) {
  const Volume source = Sample(MakeGeometry({4, 4, 4}, {1, 1, 1}, {0, 0, 0}));
  Geometry target = MakeGeometry({4, 4, 4}, {1, 1, 1}, {0, 0, 0});
  target.srow[0][0] = std::nan("");
  double coverage = 1;
  const Volume out = ResampleTrilinear(source, target, &coverage);
  EXPECT_EQ(coverage, 0.0);
  for (float v : out.voxels) ASSERT_EQ(v, 0.0f);
}

TEST(ResampleTest, WorldTransformNeedsAQformOrSform) {
  Geometry g = MakeGeometry({2, 2, 2}, {1, 1, 1}, {0, 0, 0});
  EXPECT_TRUE(HasWorldTransform(g));
  g.qform_code = 0;
  EXPECT_TRUE(HasWorldTransform(g));
  g.sform_code = 0;
  EXPECT_FALSE(HasWorldTransform(g));
}

}  // namespace
}  // namespace danet::volume
