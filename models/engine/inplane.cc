#include "models/engine/inplane.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace danet::engine {

std::optional<volume::Geometry> BankGrid(const v1::Preprocessing& preprocessing,
                                         const volume::Geometry& case_grid) {
  const double target = preprocessing.inplane_spacing_mm();
  if (!(target > 0)) return std::nullopt;
  // An axis is resized only when it is finer than the target by more than the tolerance: the
  // bank's grid never holds more voxels than the case (the memory budget's premise).
  std::array<bool, 2> finer{};
  for (int a = 0; a < 2; ++a) {
    const double s = case_grid.spacing[a];
    finer[a] = s > 0 && s < target * (1.0 - kInplaneTolerance);
  }
  if (!finer[0] && !finer[1]) return std::nullopt;
  std::array<int64_t, 3> dims = case_grid.dims;
  volume::Matrix4 m = case_grid.VoxelToWorld();
  for (int a = 0; a < 2; ++a) {
    if (!finer[a]) continue;
    const double s = case_grid.spacing[a];
    const int64_t n = case_grid.dims[a];
    dims[a] = std::max<int64_t>(1, std::llround(static_cast<double>(n) * s / target));
    // The same field of view: bank voxel c's centre lies at case index (c + 0.5) n / m - 0.5.
    const double step = static_cast<double>(n) / static_cast<double>(dims[a]);
    for (int r = 0; r < 3; ++r) {
      m[r][3] += m[r][a] * (0.5 * step - 0.5);
      m[r][a] *= step;
    }
  }
  return volume::GeometryFromAffine(dims, m);
}

namespace {

// `x` (N x 1 x H x W) resized to `height` x `width` over the same field of view: each voxel of an
// axis that shrinks the mean of the input voxels it covers (adaptive average pooling), of one
// that grows bilinear; one axis at a time, so that each gets its own.
torch::Tensor ResizeAxes(torch::Tensor x, int64_t height, int64_t width) {
  namespace F = torch::nn::functional;
  for (const auto& [h, w] : {std::pair{x.size(2), width}, std::pair{height, width}}) {
    if (h == x.size(2) && w == x.size(3)) continue;
    const bool shrink = h < x.size(2) || w < x.size(3);
    F::InterpolateFuncOptions options;
    options.size(std::vector<int64_t>{h, w});
    if (shrink) {
      options.mode(torch::kArea);
    } else {
      options.mode(torch::kBilinear).align_corners(false);
    }
    x = F::interpolate(x, options);
  }
  return x;
}

}  // namespace

volume::MultiModalVolume ResampleInPlane(const volume::MultiModalVolume& decoded,
                                         const volume::Geometry& grid) {
  torch::NoGradGuard no_grad;
  const auto& d = decoded.geometry.dims;
  volume::MultiModalVolume out;
  out.geometry = grid;
  out.notes = decoded.notes;
  for (size_t c = 0; c < decoded.channels.size(); ++c) {
    const torch::Tensor in = torch::from_blob(const_cast<float*>(decoded.channels[c].data()),
                                              {d[2], 1, d[1], d[0]}, torch::kFloat32);
    const torch::Tensor resized =
        ResizeAxes(in, grid.dims[1], grid.dims[0]).clamp_min(0).contiguous();
    const float* p = resized.data_ptr<float>();
    out.channels[c].assign(p, p + resized.numel());
  }
  return out;
}

LabelsToCaseGrid::LabelsToCaseGrid(const volume::Geometry& bank_grid,
                                   const volume::Geometry& case_grid)
    : bank_slice_(bank_grid.SliceVoxels()),
      case_slice_(case_grid.SliceVoxels()),
      case_width_(case_grid.dims[0]),
      depth_(case_grid.dims[2]) {
  // Case voxel i's centre lies at bank index (i + 0.5) m / n - 0.5; the nearest is the floor of
  // (i + 0.5) m / n.
  auto nearest = [](int64_t n, int64_t m) {
    std::vector<int64_t> from(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto j = static_cast<int64_t>(std::floor(
          (static_cast<double>(i) + 0.5) * static_cast<double>(m) / static_cast<double>(n)));
      from[i] = std::clamp<int64_t>(j, 0, m - 1);
    }
    return from;
  };
  from_i_ = nearest(case_grid.dims[0], bank_grid.dims[0]);
  from_j_ = nearest(case_grid.dims[1], bank_grid.dims[1]);
  for (int64_t& j : from_j_) j *= bank_grid.dims[0];  // as row offsets
}

void LabelsToCaseGrid::Slice(const uint8_t* in, uint8_t* out) const {
  for (size_t y = 0; y < from_j_.size(); ++y) {
    const uint8_t* row = in + from_j_[y];
    uint8_t* dst = out + static_cast<int64_t>(y) * case_width_;
    for (int64_t x = 0; x < case_width_; ++x) dst[x] = row[from_i_[x]];
  }
}

std::vector<uint8_t> LabelsToCaseGrid::Volume(const std::vector<uint8_t>& in) const {
  std::vector<uint8_t> out(case_slice_ * depth_);
  for (int64_t z = 0; z < depth_; ++z)
    Slice(in.data() + z * bank_slice_, out.data() + z * case_slice_);
  return out;
}

}  // namespace danet::engine
