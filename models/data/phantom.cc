#include "models/data/phantom.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/volume/nifti.h"

namespace danet::data {
namespace {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<Vec3, 3>;

// Intensities per modality (kModalities order: flair, t1ce, t1, t2) of the three tissues and
// the three tumour labels. Arbitrary units in the range of BraTS scanner values.
constexpr double kTissue[4][3] = {
    // CSF, GM, WM
    {120, 480, 400},   // flair: CSF suppressed, GM a little brighter than WM
    {250, 450, 600},   // t1ce
    {250, 450, 600},   // t1
    {1100, 600, 420},  // t2: CSF bright
};
constexpr double kTumour[4][3] = {
    // necrotic core (1), edema (2), enhancing (4)
    {350, 850, 700},   // flair: edema bright
    {200, 380, 950},   // t1ce: the rim enhances
    {220, 380, 500},   // t1
    {1000, 850, 700},  // t2
};

Vec3 Apply(const Mat3& m, const Vec3& v) {
  Vec3 out{};
  for (int r = 0; r < 3; ++r) out[r] = m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2];
  return out;
}

Mat3 Rotation(double ax, double ay, double az) {
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay),
               cz = std::cos(az), sz = std::sin(az);
  // Rz * Ry * Rx
  return {{{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
           {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
           {-sy, cy * sx, cy * cx}}};
}

// 1-D k-means with three centroids (CSF, GM, WM) over brain voxels.
std::array<float, 3> TissueCentroids(const std::vector<float>& t1) {
  std::vector<float> brain;
  for (float v : t1) {
    if (v > 0) brain.push_back(v);
  }
  std::sort(brain.begin(), brain.end());
  std::array<double, 3> c = {brain[brain.size() / 10], brain[brain.size() / 2],
                             brain[brain.size() * 9 / 10]};
  for (int iter = 0; iter < 30; ++iter) {
    std::array<double, 3> sum{}, count{};
    for (float v : brain) {
      int best = 0;
      for (int k = 1; k < 3; ++k) {
        if (std::abs(v - c[k]) < std::abs(v - c[best])) best = k;
      }
      sum[best] += v;
      count[best] += 1;
    }
    for (int k = 0; k < 3; ++k) {
      if (count[k] > 0) c[k] = sum[k] / count[k];
    }
  }
  return {static_cast<float>(c[0]), static_cast<float>(c[1]), static_cast<float>(c[2])};
}

// Piecewise-linear map of a T1 value through the tissue centroids to a modality's value.
double TissueValue(double t, const std::array<float, 3>& c, const double (&v)[3]) {
  if (t <= c[0]) return v[0] * t / c[0];
  if (t <= c[1]) return v[0] + (v[1] - v[0]) * (t - c[0]) / (c[1] - c[0]);
  if (t <= c[2]) return v[1] + (v[2] - v[1]) * (t - c[1]) / (c[2] - c[1]);
  return v[2];
}

// A random smooth function of direction: sum of four sinusoids, roughly in [-1, 1].
struct DirectionNoise {
  std::array<Vec3, 4> freq;
  std::array<double, 4> phase, amp;
  double operator()(const Vec3& u) const {
    double s = 0;
    for (int m = 0; m < 4; ++m) {
      s += amp[m] * std::sin(freq[m][0] * u[0] + freq[m][1] * u[1] + freq[m][2] * u[2] + phase[m]);
    }
    return s;
  }
};

DirectionNoise RandomDirectionNoise(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> f(-4.0, 4.0), p(0, 2 * M_PI), a(0.15, 0.35);
  DirectionNoise n;
  for (int m = 0; m < 4; ++m) {
    n.freq[m] = {f(rng), f(rng), f(rng)};
    n.phase[m] = p(rng);
    n.amp[m] = a(rng);
  }
  return n;
}

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
  auto sample = [&](const Vec3& q) -> float {
    const int64_t x0 = static_cast<int64_t>(std::floor(q[0])),
                  y0 = static_cast<int64_t>(std::floor(q[1])),
                  z0 = static_cast<int64_t>(std::floor(q[2]));
    if (x0 < 0 || y0 < 0 || z0 < 0 || x0 + 1 >= in_dims[0] || y0 + 1 >= in_dims[1] ||
        z0 + 1 >= in_dims[2]) {
      return 0.0f;
    }
    const double fx = q[0] - x0, fy = q[1] - y0, fz = q[2] - z0;
    double v = 0;
    for (int dz = 0; dz < 2; ++dz) {
      for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
          const double w = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy) * (dz ? fz : 1 - fz);
          v += w * t1_.voxels[((z0 + dz) * in_dims[1] + (y0 + dy)) * in_dims[0] + (x0 + dx)];
        }
      }
    }
    return static_cast<float>(v);
  };
  for (int64_t k = 0; k < nz; ++k) {
    for (int64_t j = 0; j < ny; ++j) {
      for (int64_t i = 0; i < nx; ++i) {
        const Vec3 p = {i - 0.5 * (nx - 1), j - 0.5 * (ny - 1), k - 0.5 * (nz - 1)};
        const Vec3 r = Apply(rotation, p);
        const Vec3 q = {r[0] + brain_centre_[0] + shift[0], r[1] + brain_centre_[1] + shift[1],
                        r[2] + brain_centre_[2] + shift[2]};
        const int64_t v = (k * ny + j) * nx + i;
        anatomy.t1[v] = sample(q);
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
          const double field = bias[0] * x + bias[1] * y + bias[2] * z + bias[3] * x * y +
                               bias[4] * y * z + bias[5] * x * z + bias[6] * x * x +
                               bias[7] * y * y + bias[8] * z * z;
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
