#include "models/data/phantom.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/data/phantom_internal.h"
#include "models/volume/nifti.h"

namespace danet::data {
using phantom_internal::Apply;
using phantom_internal::DirectionNoise;
using phantom_internal::kTissue;
using phantom_internal::kTumour;
using phantom_internal::Mat3;
using phantom_internal::PolynomialBias;
using phantom_internal::RandomDirectionNoise;
using phantom_internal::Rotation;
using phantom_internal::SampleTrilinear;
using phantom_internal::TissueCentroids;
using phantom_internal::TissueValue;
using phantom_internal::Vec3;
namespace {

struct Tumour {
  Vec3 centre;
  Mat3 shape;  // world offset -> normalised ellipsoid coordinates
  double r_edema, r_core, rim;
  bool necrosis;
  double contrast;
  DirectionNoise core_noise, edema_noise;
};

// The resampled template on the output grid.
struct Anatomy {
  std::vector<float> t1;
  std::vector<uint8_t> brain;
};

}  // namespace

absl::StatusOr<PhantomGenerator> PhantomGenerator::Create(const std::filesystem::path& colin27,
                                                          PhantomOptions options) {
  absl::StatusOr<volume::Volume> t1 = volume::ReadNifti(colin27);
  if (!t1.ok()) {
    return absl::Status(
        t1.status().code(),
        absl::StrCat("Colin27 template (install mricron-data): ", t1.status().message()));
  }
  return PhantomGenerator(*std::move(t1), options);
}

PhantomGenerator::PhantomGenerator(volume::Volume t1, PhantomOptions options)
    : t1_(std::move(t1)), options_(options) {
  centroids_ = TissueCentroids(t1_.voxels);
  const auto& d = t1_.geometry.dims;
  std::array<int64_t, 3> lo = {d[0], d[1], d[2]}, hi = {0, 0, 0};
  for (int64_t k = 0; k < d[2]; ++k) {
    for (int64_t j = 0; j < d[1]; ++j) {
      for (int64_t i = 0; i < d[0]; ++i) {
        if (t1_.voxels[(k * d[1] + j) * d[0] + i] <= 0) continue;
        const int64_t idx[3] = {i, j, k};
        for (int a = 0; a < 3; ++a) {
          lo[a] = std::min(lo[a], idx[a]);
          hi[a] = std::max(hi[a], idx[a]);
        }
      }
    }
  }
  for (int a = 0; a < 3; ++a) brain_centre_[a] = 0.5 * (lo[a] + hi[a]);
}

PhantomCase PhantomGenerator::Generate(uint64_t seed, int index) const {
  return options_.style == PhantomStyle::kRandomized ? GenerateRandomized(seed, index)
                                                     : GenerateClassic(seed, index);
}

PhantomCase PhantomGenerator::GenerateClassic(uint64_t seed, int index) const {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index)};
  std::mt19937_64 rng(seq);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * unit(rng); };
  const auto& out_dims = options_.dims;
  const auto& in_dims = t1_.geometry.dims;
  const int64_t nx = out_dims[0], ny = out_dims[1], nz = out_dims[2], n = nx * ny * nz;

  // 1. The template, rigidly jittered, on the output grid (trilinear).
  const double deg = M_PI / 180.0, rot = options_.max_rotation_deg;
  const Mat3 rotation = Rotation(uniform(-rot, rot) * deg * 0.5, uniform(-rot, rot) * deg * 0.5,
                                 uniform(-rot, rot) * deg);
  const Vec3 shift = {uniform(-1, 1) * options_.max_shift_mm,
                      uniform(-1, 1) * options_.max_shift_mm,
                      uniform(-1, 1) * options_.max_shift_mm * 0.3};
  Anatomy anatomy{std::vector<float>(n, 0.0f), std::vector<uint8_t>(n, 0)};
  for (int64_t k = 0; k < nz; ++k) {
    for (int64_t j = 0; j < ny; ++j) {
      for (int64_t i = 0; i < nx; ++i) {
        const Vec3 p = {i - 0.5 * (nx - 1), j - 0.5 * (ny - 1), k - 0.5 * (nz - 1)};
        const Vec3 r = Apply(rotation, p);
        const Vec3 q = {r[0] + brain_centre_[0] + shift[0], r[1] + brain_centre_[1] + shift[1],
                        r[2] + brain_centre_[2] + shift[2]};
        const int64_t v = (k * ny + j) * nx + i;
        anatomy.t1[v] = SampleTrilinear(t1_.voxels, in_dims, q);
        anatomy.brain[v] = anatomy.t1[v] > 0.5f * centroids_[0];
      }
    }
  }

  // 2. Tumours: centred in grey or white matter.
  std::uniform_int_distribution<int> count(options_.min_tumours, options_.max_tumours);
  std::vector<Tumour> tumours(count(rng));
  for (Tumour& t : tumours) {
    for (int attempt = 0; attempt < 10000; ++attempt) {
      const int64_t i = static_cast<int64_t>(uniform(0, nx)),
                    j = static_cast<int64_t>(uniform(0, ny)),
                    k = static_cast<int64_t>(uniform(0.15 * nz, 0.85 * nz));
      const int64_t v = (k * ny + j) * nx + i;
      t.centre = {static_cast<double>(i), static_cast<double>(j), static_cast<double>(k)};
      if (anatomy.brain[v] && anatomy.t1[v] > centroids_[1]) break;
    }
    t.r_edema = uniform(12, 32);
    t.r_core = t.r_edema * uniform(0.35, 0.65);
    t.rim = uniform(2, 5);
    t.necrosis = t.r_core - t.rim > 2 && unit(rng) < 0.75;
    t.contrast = uniform(0.45, 1.0);
    const Mat3 axes = Rotation(uniform(0, M_PI), uniform(0, M_PI), uniform(0, M_PI));
    for (int r = 0; r < 3; ++r) {
      const double scale = uniform(0.75, 1.25);
      for (int c = 0; c < 3; ++c) t.shape[r][c] = axes[c][r] * scale;  // scale * R^T
    }
    t.core_noise = RandomDirectionNoise(rng);
    t.edema_noise = RandomDirectionNoise(rng);
  }

  PhantomCase out;
  out.case_id = absl::StrFormat("phantom_s%d_%03d", seed, index);
  out.tumours = static_cast<int>(tumours.size());
  out.seg.geometry = volume::MakeGeometry(out_dims, {1, 1, 1},
                                          {-0.5 * (nx - 1), -0.5 * (ny - 1), -0.5 * (nz - 1)});
  out.seg.labels.assign(n, 0);
  std::vector<float> contrast(n, 0.0f);
  for (const Tumour& t : tumours) {
    const double reach = t.r_edema * 1.6 / 0.75;
    const int64_t lo[3] = {std::max<int64_t>(0, std::floor(t.centre[0] - reach)),
                           std::max<int64_t>(0, std::floor(t.centre[1] - reach)),
                           std::max<int64_t>(0, std::floor(t.centre[2] - reach))};
    const int64_t hi[3] = {std::min<int64_t>(nx - 1, std::ceil(t.centre[0] + reach)),
                           std::min<int64_t>(ny - 1, std::ceil(t.centre[1] + reach)),
                           std::min<int64_t>(nz - 1, std::ceil(t.centre[2] + reach))};
    for (int64_t k = lo[2]; k <= hi[2]; ++k) {
      for (int64_t j = lo[1]; j <= hi[1]; ++j) {
        for (int64_t i = lo[0]; i <= hi[0]; ++i) {
          const int64_t v = (k * ny + j) * nx + i;
          if (!anatomy.brain[v]) continue;
          const Vec3 e = Apply(t.shape, {i - t.centre[0], j - t.centre[1], k - t.centre[2]});
          const double r = std::sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]);
          const Vec3 u = r > 0 ? Vec3{e[0] / r, e[1] / r, e[2] / r} : Vec3{1, 0, 0};
          const double core = t.r_core * (1 + 0.5 * t.core_noise(u));
          const double edema = t.r_edema * (1 + 0.8 * t.edema_noise(u));
          uint8_t label = 0;
          if (r < core) {
            label = (t.necrosis && r < core - t.rim) ? 1 : 4;
          } else if (r < std::max(edema, core + 2)) {
            label = 2;
          }
          if (label == 0) continue;
          // Core labels win over edema (of this or another tumour).
          if (out.seg.labels[v] == 0 || (label != 2 && out.seg.labels[v] == 2)) {
            out.seg.labels[v] = label;
            contrast[v] = static_cast<float>(t.contrast);
          }
        }
      }
    }
  }

  // 3. Contrasts, scale, bias field, noise.
  out.image.geometry = out.seg.geometry;
  std::normal_distribution<double> gauss(0.0, 1.0);
  for (int m = 0; m < volume::kNumModalities; ++m) {
    const double scale = uniform(0.85, 1.15);
    double bias[9];
    for (double& b : bias) b = uniform(-1, 1) * options_.bias_strength / 3.0;
    const double noise = options_.noise_fraction * kTissue[m][2];
    std::vector<float>& channel = out.image.channels[m];
    channel.assign(n, 0.0f);
    for (int64_t k = 0; k < nz; ++k) {
      const double z = 2.0 * k / (nz - 1) - 1;
      for (int64_t j = 0; j < ny; ++j) {
        const double y = 2.0 * j / (ny - 1) - 1;
        for (int64_t i = 0; i < nx; ++i) {
          const int64_t v = (k * ny + j) * nx + i;
          if (!anatomy.brain[v]) continue;
          const double x = 2.0 * i / (nx - 1) - 1;
          double value = TissueValue(anatomy.t1[v], centroids_, kTissue[m]);
          if (const uint8_t label = out.seg.labels[v]; label != 0) {
            const double target = kTumour[m][label == 4 ? 2 : label - 1];
            value += contrast[v] * (target - value) * (1 + 0.08 * gauss(rng));
          }
          const double field = PolynomialBias(bias, x, y, z);
          value = value * scale * std::exp(field) + noise * gauss(rng);
          channel[v] = static_cast<float>(std::max(1.0, value));
        }
      }
    }
  }
  for (int64_t k = 0; k < nz; ++k) {
    const auto begin = out.seg.labels.begin() + k * nx * ny;
    if (std::any_of(begin, begin + nx * ny, [](uint8_t l) { return l != 0; })) ++out.tumour_slices;
  }
  return out;
}

absl::Status WritePhantomCase(const PhantomCase& phantom, const std::filesystem::path& dir) {
  const std::filesystem::path case_dir = dir / phantom.case_id;
  std::error_code ec;
  std::filesystem::create_directories(case_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(case_dir.string(), ": ", ec.message()));
  for (int m = 0; m < volume::kNumModalities; ++m) {
    volume::Volume image{phantom.image.geometry, phantom.image.channels[m]};
    const std::filesystem::path path =
        case_dir / absl::StrCat(phantom.case_id, "_", volume::kModalities[m], ".nii.gz");
    if (absl::Status s = volume::WriteNiftiImage(path, image, volume::ImageStorage::kInt16);
        !s.ok()) {
      return s;
    }
  }
  return volume::WriteNiftiLabels(case_dir / absl::StrCat(phantom.case_id, "_seg.nii.gz"),
                                  phantom.seg);
}

}  // namespace danet::data
