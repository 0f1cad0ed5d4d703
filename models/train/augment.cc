#include "models/train/augment.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace danet::train {
namespace {

using torch::indexing::Slice;

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// Draws whether a transform fires. A transform that is off (p = 0) consumes no draw.
bool Fires(const TransformRange& r, std::mt19937_64& rng) {
  return r.p > 0 && Uniform(rng, 0, 1) < r.p;
}

double Draw(const TransformRange& r, std::mt19937_64& rng) { return Uniform(rng, r.lo, r.hi); }

// A smooth random field H x W (one channel per `channels`): uniform [-1, 1] values on a coarse
// `knots` x `knots` lattice, up-sampled bicubically and rescaled so that its peak is 1.
torch::Tensor SmoothField(int64_t channels, int64_t height, int64_t width, int knots,
                          std::mt19937_64& rng) {
  std::vector<float> coarse(channels * knots * knots);
  for (float& v : coarse) v = static_cast<float>(Uniform(rng, -1, 1));
  torch::Tensor field =
      torch::from_blob(coarse.data(), {1, channels, knots, knots}, torch::kFloat32).clone();
  field = torch::nn::functional::interpolate(field, torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{height, width})
                                                        .mode(torch::kBicubic)
                                                        .align_corners(true))
              .squeeze(0);
  const torch::Tensor peak = field.abs().flatten(1).amax(1).clamp_min(1e-6).view({channels, 1, 1});
  return field / peak;
}

// Centred pixel coordinates: X and Y (each H x W) with 0 at the slice centre.
std::pair<torch::Tensor, torch::Tensor> CentredCoordinates(int64_t height, int64_t width) {
  const torch::Tensor ys = torch::arange(height, torch::kFloat32) - 0.5 * (height - 1);
  const torch::Tensor xs = torch::arange(width, torch::kFloat32) - 0.5 * (width - 1);
  std::vector<torch::Tensor> mesh = torch::meshgrid({ys, xs}, "ij");
  return {mesh[1], mesh[0]};
}

// Samples the 2 x H x W displacement at centred coordinates (x, y) (bilinear, border values).
std::pair<torch::Tensor, torch::Tensor> DisplacementAt(const torch::Tensor& displacement,
                                                       const torch::Tensor& x,
                                                       const torch::Tensor& y) {
  const int64_t height = displacement.size(1), width = displacement.size(2);
  const torch::Tensor grid = torch::stack({x / (0.5 * std::max<int64_t>(width - 1, 1)),
                                           y / (0.5 * std::max<int64_t>(height - 1, 1))},
                                          -1)
                                 .unsqueeze(0);
  const torch::Tensor d =
      torch::nn::functional::grid_sample(displacement.unsqueeze(0), grid,
                                         torch::nn::functional::GridSampleFuncOptions()
                                             .mode(torch::kBilinear)
                                             .padding_mode(torch::kBorder)
                                             .align_corners(true))
          .squeeze(0);
  return {d[0], d[1]};
}

// Pixel coordinates (H x W x 2) to grid_sample's normalised ones (align_corners = true).
torch::Tensor Normalised(const torch::Tensor& pixel_grid) {
  const int64_t height = pixel_grid.size(0), width = pixel_grid.size(1);
  const torch::Tensor x = pixel_grid.select(2, 0) / (0.5 * std::max<int64_t>(width - 1, 1)) - 1;
  const torch::Tensor y = pixel_grid.select(2, 1) / (0.5 * std::max<int64_t>(height - 1, 1)) - 1;
  return torch::stack({x, y}, -1).unsqueeze(0);
}

// The brain mask of a C x H x W image: 1 x H x W bool.
torch::Tensor BrainMask(const torch::Tensor& image) { return (image != 0).any(0, true); }

// Mean and standard deviation of `channel` (H x W) over `mask` (H x W bool).
std::pair<double, double> Stats(const torch::Tensor& channel, const torch::Tensor& mask) {
  const torch::Tensor v = channel.masked_select(mask);
  if (v.numel() < 2) return {0.0, 1.0};
  return {v.mean().item<double>(), v.std().item<double>()};
}

torch::Tensor GaussianBlur(const torch::Tensor& channel, double sigma) {
  const int radius = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
  torch::Tensor kernel = torch::arange(-radius, radius + 1, torch::kFloat32);
  kernel = torch::exp(-0.5 * kernel * kernel / (sigma * sigma));
  kernel = kernel / kernel.sum();
  torch::Tensor x = channel.unsqueeze(0).unsqueeze(0);
  namespace F = torch::nn::functional;
  x = F::conv2d(F::pad(x, F::PadFuncOptions({radius, radius, 0, 0}).mode(torch::kReflect)),
                kernel.view({1, 1, 1, -1}));
  x = F::conv2d(F::pad(x, F::PadFuncOptions({0, 0, radius, radius}).mode(torch::kReflect)),
                kernel.view({1, 1, -1, 1}));
  return x.squeeze(0).squeeze(0);
}

torch::Tensor LowResolution(const torch::Tensor& channel, double factor) {
  namespace F = torch::nn::functional;
  const int64_t height = channel.size(0), width = channel.size(1);
  const int64_t h = std::max<int64_t>(1, std::lround(height * factor));
  const int64_t w = std::max<int64_t>(1, std::lround(width * factor));
  torch::Tensor x = channel.unsqueeze(0).unsqueeze(0);
  x = F::interpolate(
      x, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
  x = F::interpolate(x, F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{height, width})
                            .mode(torch::kBicubic)
                            .align_corners(false));
  return x.squeeze(0).squeeze(0);
}

// Keeps a channel's brain mean and standard deviation after a transform that changes them.
torch::Tensor RestoreStats(const torch::Tensor& changed, const torch::Tensor& mask,
                           std::pair<double, double> before) {
  const auto [mean, sd] = Stats(changed, mask);
  return (changed - mean) / std::max(sd, 1e-6) * before.second + before.first;
}

}  // namespace

absl::StatusOr<AugmentOptions> AugmentPreset(const std::string& name) {
  if (name == "nnunet") return AugmentOptions{};
  if (name == "strong") {
    // nnunet's spatial transforms; the appearance transforms about twice as often and wider
    // (bias fields and contrast curves beyond what the phantoms draw), for networks that must
    // hold up under scanner shifts (docs/training.md, session 22).
    AugmentOptions strong;
    strong.brightness = {0.3, 0.7, 1.3};
    strong.contrast = {0.3, 0.7, 1.3};
    strong.gamma = {0.5, 0.5, 2.0};
    strong.noise_sd.p = 0.3;
    strong.blur_sigma.p = 0.3;
    strong.low_res.p = 0.4;
    strong.bias = {0.6, 0, 0.7};
    return strong;
  }
  AugmentOptions off;
  off.rotation_deg.p = off.scale.p = off.elastic_px.p = 0;
  off.mirror_p = 0;
  off.brightness.p = off.contrast.p = off.gamma.p = off.noise_sd.p = 0;
  off.blur_sigma.p = off.low_res.p = off.bias.p = 0;
  if (name == "none") return off;
  if (name == "flip") {
    off.mirror_p = 0.5;
    off.brightness = {1.0, 0.9, 1.1};
    return off;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("augmentation preset '", name, "': choose nnunet, strong, flip or none"));
}

SpatialTransform DrawSpatial(const AugmentOptions& options, int64_t height, int64_t width,
                             std::mt19937_64& rng) {
  SpatialTransform t;
  if (Fires(options.elastic_px, rng)) {
    const double peak = Draw(options.elastic_px, rng);
    t.displacement = SmoothField(2, height, width, 5, rng) * peak;
  }
  if (Fires(options.rotation_deg, rng)) t.angle_rad = Draw(options.rotation_deg, rng) * M_PI / 180;
  if (Fires(options.scale, rng)) t.scale = Draw(options.scale, rng);
  t.mirror_x = Uniform(rng, 0, 1) < options.mirror_p;
  t.mirror_y = Uniform(rng, 0, 1) < options.mirror_p;
  return t;
}

torch::Tensor SamplingGrid(const SpatialTransform& t, int64_t height, int64_t width) {
  auto [x, y] = CentredCoordinates(height, width);
  if (t.displacement.defined()) {
    x = x + t.displacement[0];
    y = y + t.displacement[1];
  }
  const double c = std::cos(t.angle_rad), s = std::sin(t.angle_rad);
  // a = R(-angle) e / scale
  torch::Tensor ax = (c * x + s * y) / t.scale;
  torch::Tensor ay = (-s * x + c * y) / t.scale;
  if (t.mirror_x) ax = -ax;
  if (t.mirror_y) ay = -ay;
  return torch::stack({ax + 0.5 * (width - 1), ay + 0.5 * (height - 1)}, -1);
}

torch::Tensor InverseSamplingGrid(const SpatialTransform& t, int64_t height, int64_t width) {
  auto [x, y] = CentredCoordinates(height, width);
  // Undo the mirroring, then e = scale R(angle) a.
  if (t.mirror_x) x = -x;
  if (t.mirror_y) y = -y;
  const double c = std::cos(t.angle_rad), s = std::sin(t.angle_rad);
  const torch::Tensor ex = t.scale * (c * x - s * y);
  const torch::Tensor ey = t.scale * (s * x + c * y);
  // Solve p + d(p) = e for p.
  torch::Tensor px = ex, py = ey;
  if (t.displacement.defined()) {
    for (int iteration = 0; iteration < 30; ++iteration) {
      const auto [dx, dy] = DisplacementAt(t.displacement, px, py);
      px = ex - dx;
      py = ey - dy;
    }
  }
  return torch::stack({px + 0.5 * (width - 1), py + 0.5 * (height - 1)}, -1);
}

torch::Tensor ResampleImage(const torch::Tensor& image, const torch::Tensor& grid) {
  return torch::nn::functional::grid_sample(image.unsqueeze(0).to(torch::kFloat32),
                                            Normalised(grid),
                                            torch::nn::functional::GridSampleFuncOptions()
                                                .mode(torch::kBilinear)
                                                .padding_mode(torch::kZeros)
                                                .align_corners(true))
      .squeeze(0);
}

torch::Tensor ResampleLabels(const torch::Tensor& labels, const torch::Tensor& grid) {
  const torch::Tensor x = labels.to(torch::kFloat32).unsqueeze(0).unsqueeze(0);
  return torch::nn::functional::grid_sample(x, Normalised(grid),
                                            torch::nn::functional::GridSampleFuncOptions()
                                                .mode(torch::kNearest)
                                                .padding_mode(torch::kZeros)
                                                .align_corners(true))
      .squeeze(0)
      .squeeze(0)
      .round()
      .to(labels.scalar_type());
}

torch::Tensor AugmentIntensity(const torch::Tensor& input, const AugmentOptions& options,
                               std::mt19937_64& rng) {
  torch::Tensor image = input.clone();
  const torch::Tensor mask3 = BrainMask(image);
  const torch::Tensor mask = mask3[0];
  if (mask.sum().item<int64_t>() < 2) return image;
  // One torch generator per call, seeded from the caller's stream, for the noise images.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(rng());
  for (int64_t ch = 0; ch < image.size(0); ++ch) {
    torch::Tensor x = image[ch];
    if (Fires(options.brightness, rng)) x = x * Draw(options.brightness, rng);
    if (Fires(options.contrast, rng)) {
      const double factor = Draw(options.contrast, rng);
      const double mean = Stats(x, mask).first;
      x = (x - mean) * factor + mean;
    }
    if (Fires(options.gamma, rng)) {
      const double g = Draw(options.gamma, rng);
      const auto before = Stats(x, mask);
      const torch::Tensor v = x.masked_select(mask);
      const double lo = v.min().item<double>(), range = v.max().item<double>() - lo + 1e-6;
      x = RestoreStats(((x - lo) / range).clamp(0, 1).pow(g) * range + lo, mask, before);
    }
    if (Fires(options.bias, rng)) {
      // A multiplicative field acts on positive intensities: shift the z-scores so that the
      // darkest brain voxel sits at 1, multiply, shift back, keep the brain's mean and sd.
      const double peak = Draw(options.bias, rng);
      const auto before = Stats(x, mask);
      const double lo = x.masked_select(mask).min().item<double>() - 1;
      const torch::Tensor field =
          torch::exp(SmoothField(1, x.size(0), x.size(1), 4, rng)[0] * peak);
      x = RestoreStats((x - lo) * field + lo, mask, before);
    }
    if (Fires(options.blur_sigma, rng)) x = GaussianBlur(x, Draw(options.blur_sigma, rng));
    if (Fires(options.low_res, rng)) x = LowResolution(x, Draw(options.low_res, rng));
    if (Fires(options.noise_sd, rng)) {
      const double sd = Draw(options.noise_sd, rng);
      x = x + sd * torch::randn(x.sizes(), generator, torch::kFloat32);
    }
    image[ch] = torch::where(mask, x, torch::zeros_like(x));
  }
  // A brain voxel must stay a brain voxel for the engine's mask (any channel non-zero).
  return image;
}

std::pair<torch::Tensor, torch::Tensor> Augment(const torch::Tensor& image,
                                                const torch::Tensor& labels,
                                                const AugmentOptions& options,
                                                std::mt19937_64& rng) {
  const int64_t height = image.size(1), width = image.size(2);
  const SpatialTransform t = DrawSpatial(options, height, width, rng);
  torch::Tensor out_image = image, out_labels = labels;
  const bool identity = !t.displacement.defined() && t.angle_rad == 0 && t.scale == 1;
  if (identity) {
    // Mirroring alone is exact as a flip: no interpolation of the image.
    if (t.mirror_x) {
      out_image = out_image.flip({2});
      if (labels.defined()) out_labels = out_labels.flip({1});
    }
    if (t.mirror_y) {
      out_image = out_image.flip({1});
      if (labels.defined()) out_labels = out_labels.flip({0});
    }
  } else {
    const torch::Tensor grid = SamplingGrid(t, height, width);
    out_image = ResampleImage(image, grid);
    if (labels.defined()) out_labels = ResampleLabels(labels, grid);
  }
  return {AugmentIntensity(out_image, options, rng), out_labels};
}

}  // namespace danet::train
