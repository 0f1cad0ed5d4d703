#include "models/volume/volume.h"

#include <nifti2_io.h>

#include <cmath>

#include "absl/strings/str_format.h"

namespace danet::volume {

Matrix4 Geometry::VoxelToWorld() const {
  Matrix4 m{};
  m[3] = {0, 0, 0, 1};
  if (sform_code > 0) {
    for (int r = 0; r < 3; ++r) m[r] = srow[r];
    return m;
  }
  if (qform_code > 0) {
    const nifti_dmat44 q =
        nifti_quatern_to_dmat44(quatern[0], quatern[1], quatern[2], qoffset[0], qoffset[1],
                                qoffset[2], spacing[0], spacing[1], spacing[2], qfac);
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 4; ++c) m[r][c] = q.m[r][c];
    }
    return m;
  }
  for (int r = 0; r < 3; ++r) m[r][r] = spacing[r];
  return m;
}

bool Geometry::SameGrid(const Geometry& other, double tolerance) const {
  if (dims != other.dims) return false;
  const Matrix4 a = VoxelToWorld(), b = other.VoxelToWorld();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) {
      if (std::abs(a[r][c] - b[r][c]) > tolerance) return false;
    }
  }
  return true;
}

std::string Geometry::Describe() const {
  return absl::StrFormat("%dx%dx%d @ %gx%gx%g mm", dims[0], dims[1], dims[2], spacing[0],
                         spacing[1], spacing[2]);
}

Geometry MakeGeometry(std::array<int64_t, 3> dims, std::array<double, 3> spacing,
                      std::array<double, 3> origin) {
  Geometry g;
  g.dims = dims;
  g.spacing = spacing;
  g.qform_code = 1;  // NIFTI_XFORM_SCANNER_ANAT
  g.sform_code = 1;
  g.qoffset = origin;
  g.qfac = 1.0;
  for (int r = 0; r < 3; ++r) {
    g.srow[r] = {0, 0, 0, origin[r]};
    g.srow[r][r] = spacing[r];
  }
  g.xyzt_units = 2;  // NIFTI_UNITS_MM
  return g;
}

Geometry GeometryFromAffine(std::array<int64_t, 3> dims, const Matrix4& m) {
  Geometry g;
  g.dims = dims;
  g.qform_code = 1;  // NIFTI_XFORM_SCANNER_ANAT
  g.sform_code = 1;
  g.xyzt_units = 2;  // NIFTI_UNITS_MM
  nifti_dmat44 r;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) r.m[i][j] = m[i][j];
  }
  nifti_dmat44_to_quatern(r, &g.quatern[0], &g.quatern[1], &g.quatern[2], &g.qoffset[0],
                          &g.qoffset[1], &g.qoffset[2], &g.spacing[0], &g.spacing[1], &g.spacing[2],
                          &g.qfac);
  for (int i = 0; i < 3; ++i) g.srow[i] = m[i];
  return g;
}

}  // namespace danet::volume
