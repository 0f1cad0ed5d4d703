// Segmentation metrics for BraTS regions: Dice and the 95th-percentile Hausdorff distance.
//
// Regions from BraTS labels: WT (whole tumour) = label > 0, TC (tumour core) = {1, 4},
// ET (enhancing tumour) = {4}. Conventions for empty masks (state them, since they move
// averages): Dice is 1 when both masks are empty and 0 when only one is; HD95 is 0 when both
// are empty and kHd95Missing (373.13 mm, the diagonal of the BraTS volume, as the BraTS
// challenge scores it) when only one is.
//
// HD95 is the 95th percentile of the surface distances from each mask's surface to the
// other's, both directions pooled (as medpy's hd95 computes it), in mm using the voxel
// spacing. Surfaces are mask voxels with a 6-neighbour outside the mask; distances come from
// an exact Euclidean distance transform.
#ifndef DANET_MODELS_EVAL_METRICS_H_
#define DANET_MODELS_EVAL_METRICS_H_

#include <array>
#include <cstdint>
#include <vector>

namespace danet::eval {

inline constexpr double kHd95Missing = 373.13;

enum class Region { kWT = 0, kTC = 1, kET = 2 };
inline constexpr std::array<const char*, 3> kRegionNames = {"wt", "tc", "et"};

// Whether a BraTS label belongs to a region.
bool InRegion(uint8_t label, Region region);

// Binary mask of a region from a BraTS label array.
std::vector<uint8_t> RegionMask(const std::vector<uint8_t>& labels, Region region);

// Dice in [0, 1] of two binary masks of the same size.
double Dice(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);

// HD95 in mm of two binary masks on a grid of `dims` (i fastest) and `spacing`.
double Hd95(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
            const std::array<int64_t, 3>& dims, const std::array<double, 3>& spacing);

struct RegionScores {
  std::array<double, 3> dice{};  // wt, tc, et in [0, 1]
  std::array<double, 3> hd95{};  // mm
};

// Dice and HD95 of every region for a predicted and a reference BraTS label map.
RegionScores ScoreLabels(const std::vector<uint8_t>& predicted,
                         const std::vector<uint8_t>& reference, const std::array<int64_t, 3>& dims,
                         const std::array<double, 3>& spacing);

// Per-slice score used to label the decision network's training data (Eq. 4's S_i): the mean
// over WT, TC, ET of the 2-D Dice on one slice, with empty-vs-empty = 1. Inputs are one slice
// of BraTS labels each.
double SliceScore(const uint8_t* predicted, const uint8_t* reference, int64_t voxels);

// The voxel-error form of the slice score (danet-train --slice_score errors): 1 - (wrong voxels
// summed over WT, TC and ET) / (3 x the reference's whole-tumour voxels, at least 1). Unlike
// SliceScore, a region weighs by its size, as it does in the volume's Dice: a model that misses
// a few core voxels at a tumour's edge loses little, one that misses half a large core loses
// much. Below 0 when the wrong voxels outnumber three times the tumour.
double SliceErrorScore(const uint8_t* predicted, const uint8_t* reference, int64_t voxels);

}  // namespace danet::eval

#endif  // DANET_MODELS_EVAL_METRICS_H_
