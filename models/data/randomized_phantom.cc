// The domain-randomised phantom generator (PhantomStyle::kRandomized): the classic phantom's
// ingredients (the Colin27 tissue classes, BraTS label structure), with every factor that
// differs between scanners, sites and patients drawn per case, so that a bank and a decision
// network trained on it do not learn one appearance:
//
//   anatomy     rigid jitter, an anisotropic scale and a smooth non-rigid warp of the template;
//   appearance  per-modality grey/white/CSF contrast; smooth (partial volume), piecewise-
//               constant or textured tissue; noise level; bias strength; in-plane blur; slice
//               thickness (thick slices averaged along z, labels kept on the 1 mm grid);
//   tumours     one to four (multifocal); compact or irregular random-field shapes; with rim and
//               necrosis, solid enhancing (no necrosis) or non-enhancing (no label 4); small
//               lesions under 1 mL; placed in white or grey matter, against the ventricles or
//               at the cortex; optionally (PhantomOptions::solid_core_fraction) solid
//               non-enhancing cores, label 1 that looks like tissue between white matter and
//               edema instead of dark necrosis.
//
// The draws are documented where they are made; docs/training.md lists the ranges.
#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "absl/strings/str_format.h"
#include "models/data/phantom.h"
#include "models/data/phantom_internal.h"

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
using phantom_internal::Vec3;

namespace {

enum class TissueLook { kSmooth, kPiecewiseConstant, kTextured };
enum class CoreKind { kRimAndNecrosis, kSolidEnhancing, kNonEnhancing };
enum class Site { kMatter, kVentricle, kCortex };

// A smooth random function of position (mm): a sum of `terms` sinusoids with wavelengths in
// [min_wavelength, max_wavelength] and random directions; peak at most `amplitude`.
struct SineField {
  std::vector<Vec3> k;
  std::vector<double> phase, amp;
  double operator()(const Vec3& p) const {
    double s = 0;
    for (size_t m = 0; m < k.size(); ++m) {
      s += amp[m] * std::sin(k[m][0] * p[0] + k[m][1] * p[1] + k[m][2] * p[2] + phase[m]);
    }
    return s;
  }
};

SineField RandomSineField(int terms, double min_wavelength, double max_wavelength, double amplitude,
                          std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> gauss(0, 1);
  SineField f;
  for (int m = 0; m < terms; ++m) {
    Vec3 dir = {gauss(rng), gauss(rng), gauss(rng)};
    const double norm =
        std::max(1e-9, std::sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]));
    const double wavelength = min_wavelength + (max_wavelength - min_wavelength) * unit(rng);
    const double k = 2 * M_PI / wavelength;
    f.k.push_back({k * dir[0] / norm, k * dir[1] / norm, k * dir[2] / norm});
    f.phase.push_back(2 * M_PI * unit(rng));
    f.amp.push_back(amplitude / terms * (0.5 + 0.5 * unit(rng)));
  }
  return f;
}

struct RandomTumour {
  Vec3 centre;
  Mat3 shape;  // offset -> normalised ellipsoid coordinates
  double r_core = 0, r_edema = 0, rim = 0, contrast = 1;
  CoreKind kind = CoreKind::kRimAndNecrosis;
  bool solid = false;  // label 1 drawn with the case's solid-core look, not necrosis
  double direction_amp = 0.3, field_amp = 0;  // shape irregularity
  DirectionNoise core_noise, edema_noise;
  SineField field;  // random-field irregularity, by position
};

// Per-case appearance: the intensities of the three tissues and three tumour labels per
// modality, and the image-formation draws.
struct Appearance {
  double tissue[4][3];
  double tumour[4][3];
  TissueLook look = TissueLook::kSmooth;
  double texture_amp = 0;
  SineField texture[3];
  double noise_fraction = 0.03, bias_strength = 0.15, blur_sigma = 0, slice_mm = 1;
};

Appearance DrawAppearance(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * unit(rng); };
  Appearance a;
  for (int m = 0; m < 4; ++m) {
    // White matter sets the modality's level; grey matter and CSF keep their sign of contrast
    // against it (what makes a FLAIR a FLAIR) with a per-case strength.
    const double wm = kTissue[m][2] * uniform(0.8, 1.25);
    a.tissue[m][2] = wm;
    a.tissue[m][1] = wm * kTissue[m][1] / kTissue[m][2] * uniform(0.88, 1.12);
    a.tissue[m][0] = wm * kTissue[m][0] / kTissue[m][2] * uniform(0.7, 1.3);
    // Tumour intensities move with the modality's level, so that what makes each label
    // visible (edema bright on FLAIR and T2, the rim brighter on T1ce than on T1) holds in
    // every case.
    for (int l = 0; l < 3; ++l) {
      a.tumour[m][l] = kTumour[m][l] * wm / kTissue[m][2] * uniform(0.85, 1.15);
    }
  }
  const double look = unit(rng);
  a.look = look < 0.4 ? TissueLook::kSmooth
                      : (look < 0.7 ? TissueLook::kPiecewiseConstant : TissueLook::kTextured);
  if (a.look == TissueLook::kTextured) {
    a.texture_amp = uniform(0.04, 0.15);
    for (SineField& f : a.texture) f = RandomSineField(6, 3, 12, 1.0, rng);
  }
  a.noise_fraction = uniform(0.01, 0.08);
  a.bias_strength = uniform(0.0, 0.5);
  a.blur_sigma = unit(rng) < 0.5 ? uniform(0.3, 1.2) : 0.0;
  a.slice_mm = unit(rng) < 0.4 ? uniform(2.0, 5.0) : 1.0;
  return a;
}

// Separable filters along one axis of a volume (x fastest), weights centred.
void FilterAxis(std::vector<float>& v, const std::array<int64_t, 3>& dims, int axis,
                const std::vector<double>& weights) {
  const int64_t radius = static_cast<int64_t>(weights.size() / 2);
  const int64_t stride = axis == 0 ? 1 : (axis == 1 ? dims[0] : dims[0] * dims[1]);
  const int64_t length = dims[axis];
  std::vector<float> line(length), out(length);
  const int64_t lines = dims[0] * dims[1] * dims[2] / length;
  for (int64_t l = 0; l < lines; ++l) {
    // The first voxel of line l: enumerate the other two axes.
    int64_t base;
    if (axis == 0) {
      base = l * dims[0];
    } else if (axis == 1) {
      base = (l / dims[0]) * dims[0] * dims[1] + l % dims[0];
    } else {
      base = l;
    }
    for (int64_t i = 0; i < length; ++i) line[i] = v[base + i * stride];
    for (int64_t i = 0; i < length; ++i) {
      double s = 0, w = 0;
      for (int64_t t = -radius; t <= radius; ++t) {
        const int64_t j = i + t;
        if (j < 0 || j >= length) continue;
        s += weights[t + radius] * line[j];
        w += weights[t + radius];
      }
      out[i] = static_cast<float>(s / w);
    }
    for (int64_t i = 0; i < length; ++i) v[base + i * stride] = out[i];
  }
}

std::vector<double> GaussianWeights(double sigma) {
  const int radius = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
  std::vector<double> w;
  for (int t = -radius; t <= radius; ++t) w.push_back(std::exp(-0.5 * t * t / (sigma * sigma)));
  return w;
}

// A box of `width` voxels (fractional ends), as a thick slice averages along z.
std::vector<double> BoxWeights(double width) {
  const int radius = static_cast<int>(std::ceil((width - 1) / 2));
  std::vector<double> w(2 * radius + 1, 1.0);
  const double edge = (width - (2 * radius - 1)) / 2;  // weight of the two end taps
  if (radius > 0) w.front() = w.back() = std::clamp(edge, 0.0, 1.0);
  return w;
}

}  // namespace

absl::StatusOr<PhantomStyle> ParsePhantomStyle(const std::string& name) {
  if (name == "classic") return PhantomStyle::kClassic;
  if (name == "randomized") return PhantomStyle::kRandomized;
  return absl::InvalidArgumentError(
      absl::StrFormat("phantom style '%s': choose randomized or classic", name));
}

PhantomCase PhantomGenerator::GenerateRandomized(uint64_t seed, int index) const {
  // A seed sequence of its own: the randomised case i of seed S is not the classic one.
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index), 0x52414e44u};
  std::mt19937_64 rng(seq);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * unit(rng); };
  const auto& out_dims = options_.dims;
  const auto& in_dims = t1_.geometry.dims;
  const int64_t nx = out_dims[0], ny = out_dims[1], nz = out_dims[2], n = nx * ny * nz;

  // 1. Anatomy: rigid jitter, anisotropic scale, smooth warp (peak 1-5 mm, wavelengths
  //    50-150 mm), trilinear on the output grid.
  const double deg = M_PI / 180.0;
  const Mat3 rotation = Rotation(uniform(-4, 4) * deg, uniform(-4, 4) * deg, uniform(-8, 8) * deg);
  const Vec3 scale = {uniform(0.92, 1.08), uniform(0.92, 1.08), uniform(0.92, 1.08)};
  const Vec3 shift = {uniform(-6, 6), uniform(-6, 6), uniform(-2, 2)};
  const double warp_mm = uniform(1, 5);
  const SineField warp[3] = {RandomSineField(3, 50, 150, warp_mm, rng),
                             RandomSineField(3, 50, 150, warp_mm, rng),
                             RandomSineField(3, 50, 150, warp_mm, rng)};
  std::vector<float> t1(n, 0.0f);
  std::vector<uint8_t> brain(n, 0);
  for (int64_t k = 0; k < nz; ++k) {
    for (int64_t j = 0; j < ny; ++j) {
      for (int64_t i = 0; i < nx; ++i) {
        const Vec3 p = {i - 0.5 * (nx - 1), j - 0.5 * (ny - 1), k - 0.5 * (nz - 1)};
        const Vec3 w = {p[0] / scale[0] + warp[0](p), p[1] / scale[1] + warp[1](p),
                        p[2] / scale[2] + warp[2](p)};
        const Vec3 r = Apply(rotation, w);
        const Vec3 q = {r[0] + brain_centre_[0] + shift[0], r[1] + brain_centre_[1] + shift[1],
                        r[2] + brain_centre_[2] + shift[2]};
        const int64_t v = (k * ny + j) * nx + i;
        t1[v] = SampleTrilinear(t1_.voxels, in_dims, q);
        brain[v] = t1[v] > 0.5f * centroids_[0];
      }
    }
  }
  auto voxel = [&](int64_t i, int64_t j, int64_t k) { return (k * ny + j) * nx + i; };
  auto inside = [&](double x, double y, double z) {
    const int64_t i = std::lround(x), j = std::lround(y), k = std::lround(z);
    return i >= 0 && j >= 0 && k >= 0 && i < nx && j < ny && k < nz && brain[voxel(i, j, k)];
  };

  // 2. Tumours.
  const double focal = unit(rng);
  const int count = focal < 0.55 ? 1 : (focal < 0.85 ? 2 : (focal < 0.95 ? 3 : 4));
  const bool small_case = unit(rng) < 0.2;  // every lesion of the case under 1 mL
  std::vector<RandomTumour> tumours(count);
  for (RandomTumour& t : tumours) {
    const bool small = small_case || unit(rng) < 0.1;
    if (small) {
      t.r_edema = uniform(2.5, 5.0);  // a sphere of 5 mm holds 0.52 mL
      t.r_core = t.r_edema * uniform(0.4, 0.75);
    } else {
      t.r_core = uniform(4, 20);
      t.r_edema = std::min(40.0, t.r_core * uniform(1.3, 2.8));
    }
    const double kind = unit(rng);
    t.kind = kind < 0.2 ? CoreKind::kNonEnhancing
                        : (kind < 0.45 ? CoreKind::kSolidEnhancing : CoreKind::kRimAndNecrosis);
    t.rim = uniform(1.5, 5);
    if (t.kind == CoreKind::kRimAndNecrosis && t.r_core - t.rim < 1.5) {
      t.kind = CoreKind::kSolidEnhancing;
    }
    t.contrast = uniform(0.4, 1.0);
    const bool irregular = !small && unit(rng) < 0.5;
    t.direction_amp = irregular ? 0.45 : 0.12;
    t.field_amp = irregular ? uniform(0.2, 0.45) : 0.0;
    t.field = RandomSineField(5, 8, 25, 1.0, rng);
    const Mat3 axes = Rotation(uniform(0, M_PI), uniform(0, M_PI), uniform(0, M_PI));
    for (int r = 0; r < 3; ++r) {
      const double s = small ? uniform(0.9, 1.1) : uniform(0.75, 1.25);
      for (int c = 0; c < 3; ++c) t.shape[r][c] = axes[c][r] * s;
    }
    t.core_noise = RandomDirectionNoise(rng);
    t.edema_noise = RandomDirectionNoise(rng);
    // Site: grey/white matter; against a ventricle (centre in deep CSF); at the cortex (a
    // voxel the edema's reach away along some axis is outside the brain).
    const double site_draw = unit(rng);
    const Site site =
        site_draw < 0.2 ? Site::kVentricle : (site_draw < 0.4 ? Site::kCortex : Site::kMatter);
    for (int attempt = 0; attempt < 20000; ++attempt) {
      const bool deep = site == Site::kVentricle;
      const double x = deep ? uniform(0.35 * nx, 0.65 * nx) : uniform(0, nx - 1);
      const double y = deep ? uniform(0.3 * ny, 0.7 * ny) : uniform(0, ny - 1);
      const double z = deep ? uniform(0.35 * nz, 0.65 * nz) : uniform(0.15 * nz, 0.85 * nz);
      t.centre = {std::round(x), std::round(y), std::round(z)};
      const int64_t v = voxel(static_cast<int64_t>(t.centre[0]), static_cast<int64_t>(t.centre[1]),
                              static_cast<int64_t>(t.centre[2]));
      if (!brain[v]) continue;
      if (site == Site::kVentricle) {
        if (t1[v] < 0.5 * (centroids_[0] + centroids_[1])) break;  // CSF
      } else if (site == Site::kCortex) {
        const double reach = std::max(3.0, 0.7 * t.r_edema);
        if (t1[v] > centroids_[0] && (!inside(x + reach, y, z) || !inside(x - reach, y, z) ||
                                      !inside(x, y + reach, z) || !inside(x, y - reach, z))) {
          break;
        }
      } else if (t1[v] > centroids_[1]) {
        break;
      }
    }
  }

  // Solid non-enhancing cores, from a stream of their own so that the draws above (and every
  // case made without them) stay as they were. A solid tumour keeps no necrosis: its core is
  // all label 1, or label 1 inside an enhancing rim. The look, per modality, sits between
  // white matter and edema: w + f (e - w), with f in [0.5, 0.9] on FLAIR and T2 (less bright
  // than edema) and in [0.6, 1.3] on T1 and T1ce (about edema's level, not enhancing). Its
  // contrast is 75-100% (not 40%): a faint solid core would look like grey matter, and a
  // bank taught that grey matter can be tumour core marks healthy tissue as core. The wide look
  // (session 36) draws f from [0.4, 0.95] on FLAIR, [0.1, 0.95] on T2 (down to near white
  // matter) and [0.3, 2.0] on T1 and T1ce (down to twice edema's distance below white matter),
  // from the same draws, so the classic cases are unchanged.
  std::array<double, 4> solid_blend{};
  if (options_.solid_core_fraction > 0) {
    std::seed_seq solid_seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                            static_cast<uint32_t>(index), 0x534f4c44u};
    std::mt19937_64 solid_rng(solid_seq);
    auto solid_uniform = [&](double lo, double hi) { return lo + (hi - lo) * unit(solid_rng); };
    // f's range per look (classic, wide) and modality (FLAIR, T1ce, T1, T2).
    constexpr double kBlendRange[2][4][2] = {{{0.5, 0.9}, {0.6, 1.3}, {0.6, 1.3}, {0.5, 0.9}},
                                             {{0.4, 0.95}, {0.3, 2.0}, {0.3, 2.0}, {0.1, 0.95}}};
    const auto& range =
        kBlendRange[options_.solid_look == PhantomOptions::SolidLook::kWide ? 1 : 0];
    for (int m = 0; m < 4; ++m) solid_blend[m] = solid_uniform(range[m][0], range[m][1]);
    // Every tumour takes the same three draws, solid or not, so one tumour's outcome does not
    // shift the next one's.
    for (RandomTumour& t : tumours) {
      t.solid = unit(solid_rng) < options_.solid_core_fraction;
      const bool rimmed = unit(solid_rng) < 0.5 && t.r_core - t.rim >= 1.5;
      const double contrast = solid_uniform(0.75, 1.0);
      if (!t.solid) continue;
      t.kind = rimmed ? CoreKind::kRimAndNecrosis : CoreKind::kNonEnhancing;
      t.contrast = contrast;
    }
  }

  PhantomCase out;
  out.case_id = absl::StrFormat("phantom_s%d_%03d", seed, index);
  out.tumours = count;
  out.seg.geometry = volume::MakeGeometry(out_dims, {1, 1, 1},
                                          {-0.5 * (nx - 1), -0.5 * (ny - 1), -0.5 * (nz - 1)});
  out.seg.labels.assign(n, 0);
  std::vector<float> contrast(n, 0.0f);
  std::vector<uint8_t> solid(n, 0);
  for (const RandomTumour& t : tumours) {
    const double reach = t.r_edema * 2.2 / 0.75;
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::max<int64_t>(0, static_cast<int64_t>(std::floor(t.centre[a] - reach)));
      hi[a] =
          std::min<int64_t>(out_dims[a] - 1, static_cast<int64_t>(std::ceil(t.centre[a] + reach)));
    }
    for (int64_t k = lo[2]; k <= hi[2]; ++k) {
      for (int64_t j = lo[1]; j <= hi[1]; ++j) {
        for (int64_t i = lo[0]; i <= hi[0]; ++i) {
          const int64_t v = voxel(i, j, k);
          if (!brain[v]) continue;
          const Vec3 off = {i - t.centre[0], j - t.centre[1], k - t.centre[2]};
          const Vec3 e = Apply(t.shape, off);
          const double r = std::sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]);
          const Vec3 u = r > 0 ? Vec3{e[0] / r, e[1] / r, e[2] / r} : Vec3{1, 0, 0};
          const double lumps = t.field_amp * t.field(off);
          const double core = t.r_core * (1 + t.direction_amp * t.core_noise(u) + lumps);
          const double edema = t.r_edema * (1 + 1.6 * t.direction_amp * t.edema_noise(u) + lumps);
          uint8_t label = 0;
          if (r < core) {
            switch (t.kind) {
              case CoreKind::kNonEnhancing:
                label = 1;
                break;
              case CoreKind::kSolidEnhancing:
                label = 4;
                break;
              case CoreKind::kRimAndNecrosis:
                label = r < core - t.rim ? 1 : 4;
                break;
            }
          } else if (r < std::max(edema, core + 1.5)) {
            label = 2;
          }
          if (label == 0) continue;
          if (out.seg.labels[v] == 0 || (label != 2 && out.seg.labels[v] == 2)) {
            out.seg.labels[v] = label;
            contrast[v] = static_cast<float>(t.contrast);
            solid[v] = t.solid && label == 1;
          }
        }
      }
    }
  }

  // 3. Appearance.
  const Appearance a = DrawAppearance(rng);
  out.image.geometry = out.seg.geometry;
  std::normal_distribution<double> gauss(0.0, 1.0);
  for (int m = 0; m < volume::kNumModalities; ++m) {
    double bias[9];
    for (double& b : bias) b = uniform(-1, 1) * a.bias_strength / 3.0;
    const double noise = a.noise_fraction * a.tissue[m][2];
    std::vector<float>& channel = out.image.channels[m];
    channel.assign(n, 0.0f);
    for (int64_t k = 0; k < nz; ++k) {
      const double z = 2.0 * k / (nz - 1) - 1;
      for (int64_t j = 0; j < ny; ++j) {
        const double y = 2.0 * j / (ny - 1) - 1;
        for (int64_t i = 0; i < nx; ++i) {
          const int64_t v = voxel(i, j, k);
          if (!brain[v]) continue;
          const double x = 2.0 * i / (nx - 1) - 1;
          double value;
          if (a.look == TissueLook::kPiecewiseConstant) {
            int best = 0;
            for (int c = 1; c < 3; ++c) {
              if (std::abs(t1[v] - centroids_[c]) < std::abs(t1[v] - centroids_[best])) best = c;
            }
            value = a.tissue[m][best];
          } else {
            value = phantom_internal::TissueValue(t1[v], centroids_, a.tissue[m]);
            if (a.look == TissueLook::kTextured) {
              const Vec3 p = {static_cast<double>(i), static_cast<double>(j),
                              static_cast<double>(k)};
              const int c = t1[v] < centroids_[0] ? 0 : (t1[v] < centroids_[1] ? 1 : 2);
              value *= 1 + a.texture_amp * a.texture[c](p);
            }
          }
          if (const uint8_t label = out.seg.labels[v]; label != 0) {
            const double target =
                solid[v] ? a.tissue[m][2] + solid_blend[m] * (a.tumour[m][1] - a.tissue[m][2])
                         : a.tumour[m][label == 4 ? 2 : label - 1];
            value += contrast[v] * (target - value) * (1 + 0.08 * gauss(rng));
          }
          const double field = PolynomialBias(bias, x, y, z);
          channel[v] = static_cast<float>(value * std::exp(field));
        }
      }
    }
    // Partial volume of thick slices and in-plane blur, then noise; the background stays 0.
    if (a.slice_mm > 1) FilterAxis(channel, out_dims, 2, BoxWeights(a.slice_mm));
    if (a.blur_sigma > 0) {
      FilterAxis(channel, out_dims, 0, GaussianWeights(a.blur_sigma));
      FilterAxis(channel, out_dims, 1, GaussianWeights(a.blur_sigma));
    }
    for (int64_t v = 0; v < n; ++v) {
      channel[v] =
          brain[v] ? static_cast<float>(std::max(1.0, channel[v] + noise * gauss(rng))) : 0.0f;
    }
  }
  for (int64_t k = 0; k < nz; ++k) {
    const auto begin = out.seg.labels.begin() + k * nx * ny;
    if (std::any_of(begin, begin + nx * ny, [](uint8_t l) { return l != 0; })) ++out.tumour_slices;
  }
  return out;
}

}  // namespace danet::data
