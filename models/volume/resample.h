// Resampling a volume onto another grid in world (scanner) coordinates: how series of one study
// that were acquired on different grids (a 5 mm axial FLAIR, a 1 mm sagittal T1ce, a 512^2 T2)
// come onto the one grid the bank runs on.
#ifndef DANET_MODELS_VOLUME_RESAMPLE_H_
#define DANET_MODELS_VOLUME_RESAMPLE_H_

#include "models/volume/volume.h"

namespace danet::volume {

// Whether `g` places its voxels in world coordinates (a qform or an sform is set). Without one,
// NIfTI's "method 1" only scales by the spacing and two such grids cannot be related.
bool HasWorldTransform(const Geometry& g);

// `source` on the grid `target`: the centre of every target voxel is mapped to world
// coordinates and from there into the source's voxel space, where the source is interpolated
// trilinearly. A point up to half a voxel beyond the source's outer voxel centres takes the
// nearest edge value; a point further out is 0 (outside the field of view). The result has
// `target` as its geometry. `coverage`, when given, receives the share of target voxels inside
// the source's field of view (0..1).
Volume ResampleTrilinear(const Volume& source, const Geometry& target, double* coverage = nullptr);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_RESAMPLE_H_
