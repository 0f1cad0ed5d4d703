// The in-plane grid the bank runs a case on. The networks learnt anatomy at the training data's
// voxel size (BraTS and the phantoms: 1 mm); a study acquired at 0.45 mm in plane shows them every
// structure twice as large (docs/training.md, "Session 35": on phantoms zoomed to 0.5 mm with a
// cubic spline the default policy lost 8 Dice points in distribution and 20 under shift; on a
// version whose 2 x 2 blocks keep the 1 mm values one case gained and one lost). A bundle with
// preprocessing.inplane_spacing_mm set has a finer case's slices resampled to that spacing before
// the bank sees them, and the labels brought back onto the case's own grid; the slices themselves
// (their number and thickness) are left as they are.
//
// Thread safety: pure functions of their arguments; LabelsToCaseGrid is immutable once made.
#ifndef DANET_MODELS_ENGINE_INPLANE_H_
#define DANET_MODELS_ENGINE_INPLANE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "danet/v1/bundle.pb.h"
#include "models/volume/brats.h"

namespace danet::engine {

// How much finer than the bundle's a case's in-plane spacing may be (relative, on either axis)
// before it is resampled: scanners' 0.94 mm (256 voxels over 240 mm) stays as it is.
inline constexpr double kInplaneTolerance = 0.1;

// What a summary says about a case the bank ran on a BankGrid.
inline constexpr char kInplaneNote[] =
    "slices resampled in plane to the bundle's voxel size for the bank; labels on the input grid";

// The grid the bank runs a case of grid `case_grid` on, when preprocessing.inplane_spacing_mm is
// set and the case's spacing along i or j is finer than it by more than kInplaneTolerance: each
// such axis resized to round(extent / spacing) voxels (at least 1) over the same field of view
// (so the spacing comes within half a voxel of the bundle's), the other axes unchanged, the world
// transform following. A coarser axis is never refined: the bank's grid then never holds more
// voxels than the case, which the server's memory budget counts on (a small upload claiming a
// large spacing must not become a huge grid). std::nullopt when the case runs on its own grid.
std::optional<volume::Geometry> BankGrid(const v1::Preprocessing& preprocessing,
                                         const volume::Geometry& case_grid);

// Every channel of `decoded` resampled slice by slice onto `grid` (BankGrid's: same slices), over
// the same field of view. Along an axis that shrinks each voxel is the mean of the input voxels
// it covers (what a scanner acquiring at the coarser size would integrate; a triangle filter blurs
// more, and the bank is sensitive to blur: docs/training.md "Session 35"); along one that grows,
// bilinear. Background (0) stays 0 and no value goes negative. The notes are kept; the geometry
// becomes `grid`.
volume::MultiModalVolume ResampleInPlane(const volume::MultiModalVolume& decoded,
                                         const volume::Geometry& grid);

// Labels on a BankGrid brought back onto the case's grid: each case voxel takes the label of the
// bank-grid voxel whose centre is nearest its own, slice by slice.
class LabelsToCaseGrid {
 public:
  LabelsToCaseGrid(const volume::Geometry& bank_grid, const volume::Geometry& case_grid);

  // One slice: `in` holds the bank grid's slice (dims[0] x dims[1], i fastest), `out` receives
  // the case grid's.
  void Slice(const uint8_t* in, uint8_t* out) const;
  // A whole label volume.
  std::vector<uint8_t> Volume(const std::vector<uint8_t>& in) const;

 private:
  int64_t bank_slice_ = 0, case_slice_ = 0, case_width_ = 0, depth_ = 0;
  std::vector<int64_t> from_i_, from_j_;  // per case column and row: the bank grid's index
};

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_INPLANE_H_
