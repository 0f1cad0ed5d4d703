// Volumes on a voxel grid with their patient-space geometry.
//
// Voxel order is NIfTI's: i fastest, then j, then k; BraTS axial slices run along k. The
// geometry keeps everything needed to write a result back on the input's grid, byte for byte
// in its spatial fields (qform, sform, units).
#ifndef DANET_MODELS_VOLUME_VOLUME_H_
#define DANET_MODELS_VOLUME_VOLUME_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace danet::volume {

using Matrix4 = std::array<std::array<double, 4>, 4>;

struct Geometry {
  std::array<int64_t, 3> dims{};    // i, j, k
  std::array<double, 3> spacing{};  // mm (pixdim[1..3])
  // NIfTI spatial fields, as read.
  int nifti_version = 1;  // 1 or 2: results are written in the input's version
  int qform_code = 0;
  int sform_code = 0;
  std::array<double, 3> quatern{};  // b, c, d
  std::array<double, 3> qoffset{};  // x, y, z
  double qfac = 1.0;                // pixdim[0]: -1 flips k
  std::array<std::array<double, 4>, 3> srow{};
  int xyzt_units = 0;

  int64_t NumVoxels() const { return dims[0] * dims[1] * dims[2]; }
  int64_t SliceVoxels() const { return dims[0] * dims[1]; }
  // Voxel (i, j, k, 1) -> world (x, y, z, 1) in mm: the sform when set, else the qform, else
  // a plain scaling by the spacing (NIfTI's "method 1").
  Matrix4 VoxelToWorld() const;
  // Same dims, and voxel-to-world matrices equal within `tolerance` (mm, per entry).
  bool SameGrid(const Geometry& other, double tolerance = 1e-3) const;
  // "240x240x155 @ 1x1x1 mm" (no patient data).
  std::string Describe() const;
};

// A scalar image (one MR modality) as float32.
struct Volume {
  Geometry geometry;
  std::vector<float> voxels;  // geometry.NumVoxels() values
};

// A label map (BraTS labels 0, 1, 2, 4) on a grid.
struct LabelVolume {
  Geometry geometry;
  std::vector<uint8_t> labels;
};

// A geometry for a plain grid: given dims and spacing, qform = sform = scanner-anat scaling
// with the origin at `origin`. Used by the phantom generator and tests.
Geometry MakeGeometry(std::array<int64_t, 3> dims, std::array<double, 3> spacing,
                      std::array<double, 3> origin);

// A geometry whose voxel-to-world (RAS, mm) matrix is `m`: sform and qform both set
// (scanner-anatomical), the qform holding the closest rigid rotation, spacing the column norms.
Geometry GeometryFromAffine(std::array<int64_t, 3> dims, const Matrix4& m);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_VOLUME_H_
