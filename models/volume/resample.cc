#include "models/volume/resample.h"

#include <nifti2_io.h>

#include <algorithm>
#include <cmath>

namespace danet::volume {
namespace {

// One axis of a continuous source index: the two neighbouring voxels and the weight of the
// upper one, or false when the point is outside the field of view.
struct Tap {
  int64_t lo = 0, hi = 0;
  float w = 0;
};

bool MakeTap(double p, int64_t dim, Tap* tap) {
  // Written so that NaN (from a degenerate matrix) is outside too.
  if (!(p >= -0.5 && p <= static_cast<double>(dim) - 0.5)) return false;
  p = std::clamp(p, 0.0, static_cast<double>(dim - 1));
  tap->lo = std::min(static_cast<int64_t>(p), dim - 1);
  tap->hi = std::min(tap->lo + 1, dim - 1);
  tap->w = static_cast<float>(p - static_cast<double>(tap->lo));
  return true;
}

}  // namespace

bool HasWorldTransform(const Geometry& g) { return g.qform_code > 0 || g.sform_code > 0; }

Volume ResampleTrilinear(const Volume& source, const Geometry& target, double* coverage) {
  // target voxel -> world -> source voxel, as one affine map.
  const Matrix4 t = target.VoxelToWorld(), s = source.geometry.VoxelToWorld();
  nifti_dmat44 s44;
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) s44.m[r][c] = s[r][c];
  }
  const nifti_dmat44 inv = nifti_dmat44_inverse(s44);
  double a[3][4] = {};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) {
      for (int k = 0; k < 4; ++k) a[r][c] += inv.m[r][k] * t[k][c];
    }
  }

  Volume out;
  out.geometry = target;
  out.voxels.assign(static_cast<size_t>(target.NumVoxels()), 0.0f);
  const auto& d = source.geometry.dims;
  const int64_t plane = d[0] * d[1];
  const float* src = source.voxels.data();
  int64_t inside = 0;
  size_t o = 0;
  for (int64_t k = 0; k < target.dims[2]; ++k) {
    for (int64_t j = 0; j < target.dims[1]; ++j) {
      double p[3];
      for (int r = 0; r < 3; ++r) p[r] = a[r][1] * j + a[r][2] * k + a[r][3];
      for (int64_t i = 0; i < target.dims[0]; ++i, ++o) {
        Tap x, y, z;
        if (!MakeTap(p[0] + a[0][0] * i, d[0], &x) || !MakeTap(p[1] + a[1][0] * i, d[1], &y) ||
            !MakeTap(p[2] + a[2][0] * i, d[2], &z)) {
          continue;
        }
        ++inside;
        auto at = [&](int64_t xi, int64_t yi, int64_t zi) {
          return src[zi * plane + yi * d[0] + xi];
        };
        auto row = [&](int64_t yi, int64_t zi) {
          return at(x.lo, yi, zi) + x.w * (at(x.hi, yi, zi) - at(x.lo, yi, zi));
        };
        auto layer = [&](int64_t zi) {
          const float r0 = row(y.lo, zi);
          return r0 + y.w * (row(y.hi, zi) - r0);
        };
        const float l0 = layer(z.lo);
        out.voxels[o] = l0 + z.w * (layer(z.hi) - l0);
      }
    }
  }
  if (coverage != nullptr) {
    *coverage = target.NumVoxels() > 0
                    ? static_cast<double>(inside) / static_cast<double>(target.NumVoxels())
                    : 0.0;
  }
  return out;
}

}  // namespace danet::volume
