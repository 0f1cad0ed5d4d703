// The shift phantom generator. Written apart from phantom.cc on purpose (see the header): no
// code or constants are shared with the training generators.
//
// Units: lengths are drawn in template millimetres and turned into output voxels by dividing by
// mm_per_voxel_, so the same seed draws the same anatomy and lesions on any grid.
#include "models/data/shift_phantom.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/volume/nifti.h"

namespace danet::data {
namespace {

using Vec3 = std::array<double, 3>;

// Only the engine's raw bits are used (no std:: distributions), so a case is the same bytes
// whichever standard library built it.
class Rng {
 public:
  Rng(uint64_t seed, int index) {
    // The last word tags the family so a shift series never replays another generator's
    // stream, even for the same numbers.
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                      static_cast<uint32_t>(index), 0x53484654u};
    engine_.seed(seq);
  }
  double Unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Unit(); }
  bool Chance(double p) { return Unit() < p; }
  // Two independent standard normals (Box-Muller); Rician noise needs exactly a pair.
  std::pair<double, double> GaussPair() {
    const double r = std::sqrt(-2.0 * std::log(1.0 - Unit())), a = 2.0 * M_PI * Unit();
    return {r * std::cos(a), r * std::sin(a)};
  }

 private:
  std::mt19937_64 engine_;
};

struct Grid {
  int64_t nx, ny, nz;
  int64_t Index(int64_t i, int64_t j, int64_t k) const { return (k * ny + j) * nx + i; }
  int64_t Size() const { return nx * ny * nz; }
};

// A 3-class 1-D Gaussian mixture (CSF, GM, WM) fitted by EM on a histogram of brain voxels:
// the histogram keeps EM cheap on 1.7 M voxels and its result independent of voxel order. The
// classes share one variance: with free variances the small CSF class (about 7% of Colin27's
// brain) widens into the CSF/GM partial-volume voxels and ends up between CSF and GM.
void FitMixture(const std::vector<float>& t1, std::array<double, 3>* mean,
                std::array<double, 3>* sd, std::array<double, 3>* weight) {
  constexpr int kBins = 256;
  const float top = *std::max_element(t1.begin(), t1.end());
  std::vector<double> count(kBins, 0.0), centre(kBins);
  for (int b = 0; b < kBins; ++b) centre[b] = (b + 0.5) * top / kBins;
  for (float v : t1) {
    if (v > 0) ++count[std::min(kBins - 1, static_cast<int>(v / top * kBins))];
  }
  // Start from quantiles so EM begins with the classes in CSF < GM < WM order.
  std::vector<double> cumulative(kBins);
  std::partial_sum(count.begin(), count.end(), cumulative.begin());
  const double total = cumulative.back();
  const double quantile[3] = {0.03, 0.4, 0.85};
  for (int c = 0; c < 3; ++c) {
    const int b = std::lower_bound(cumulative.begin(), cumulative.end(), quantile[c] * total) -
                  cumulative.begin();
    (*mean)[c] = centre[b];
    (*sd)[c] = 0.1 * top;
    (*weight)[c] = 1.0 / 3.0;
  }
  for (int iter = 0; iter < 20; ++iter) {
    std::array<double, 3> n{}, sum{}, sum_sq{};
    for (int b = 0; b < kBins; ++b) {
      if (count[b] == 0) continue;
      std::array<double, 3> p;
      double norm = 0;
      for (int c = 0; c < 3; ++c) {
        const double z = (centre[b] - (*mean)[c]) / (*sd)[c];
        p[c] = (*weight)[c] * std::exp(-0.5 * z * z);
        norm += p[c];
      }
      for (int c = 0; c < 3; ++c) {
        const double r = norm > 0 ? count[b] * p[c] / norm : 0.0;
        n[c] += r;
        sum[c] += r * centre[b];
        sum_sq[c] += r * centre[b] * centre[b];
      }
    }
    double scatter = 0;
    for (int c = 0; c < 3; ++c) {
      if (n[c] <= 0) continue;
      (*mean)[c] = sum[c] / n[c];
      (*weight)[c] = n[c] / total;
      scatter += sum_sq[c] - n[c] * (*mean)[c] * (*mean)[c];
    }
    const double shared_sd = std::max(0.01 * top, std::sqrt(std::max(0.0, scatter / total)));
    sd->fill(shared_sd);
  }
}

// Posterior class memberships of a T1 value: the soft tissue map. With one shared variance they
// change monotonically with T1, so values below the CSF mean (the partial-volume rim at the
// brain's edge) count as CSF and values above the WM mean as WM.
std::array<double, 3> Memberships(double t, const std::array<double, 3>& mean,
                                  const std::array<double, 3>& sd,
                                  const std::array<double, 3>& weight) {
  std::array<double, 3> log_p;
  for (int c = 0; c < 3; ++c) {
    const double z = (t - mean[c]) / sd[c];
    log_p[c] = std::log(weight[c] / sd[c]) - 0.5 * z * z;
  }
  const double top = *std::max_element(log_p.begin(), log_p.end());
  std::array<double, 3> p;
  double norm = 0;
  for (int c = 0; c < 3; ++c) norm += (p[c] = std::exp(log_p[c] - top));
  for (double& v : p) v /= norm;
  return p;
}

// A sum of isotropic 3-D Gaussian bumps in output voxels. Each bump is separable, so a row of
// the sum costs one multiply-add per bump and voxel from precomputed 1-D profiles.
class BumpSum {
 public:
  struct Bump {
    Vec3 centre;
    double sigma, amplitude;
  };
  BumpSum(std::vector<Bump> bumps, const Grid& grid) : bumps_(std::move(bumps)), grid_(grid) {
    const int64_t size[3] = {grid.nx, grid.ny, grid.nz};
    for (int a = 0; a < 3; ++a) {
      profile_[a].resize(bumps_.size() * size[a]);
      for (size_t b = 0; b < bumps_.size(); ++b) {
        for (int64_t x = 0; x < size[a]; ++x) {
          const double z = (x - bumps_[b].centre[a]) / bumps_[b].sigma;
          profile_[a][b * size[a] + x] = static_cast<float>(std::exp(-0.5 * z * z));
        }
      }
    }
  }
  // out[i - i0] = sum of the bumps at (i, j, k) for i in [i0, i1).
  void Row(int64_t j, int64_t k, int64_t i0, int64_t i1, float* out) const {
    std::fill(out, out + (i1 - i0), 0.0f);
    for (size_t b = 0; b < bumps_.size(); ++b) {
      const float w = static_cast<float>(bumps_[b].amplitude) * profile_[1][b * grid_.ny + j] *
                      profile_[2][b * grid_.nz + k];
      if (std::abs(w) < 1e-5f) continue;
      const float* px = &profile_[0][b * grid_.nx];
      for (int64_t i = i0; i < i1; ++i) out[i - i0] += w * px[i];
    }
  }

 private:
  std::vector<Bump> bumps_;
  Grid grid_;
  std::array<std::vector<float>, 3> profile_;
};

// `count` bumps centred in the box [lo, hi] (output voxels).
std::vector<BumpSum::Bump> RandomBumps(Rng& rng, int count, const Vec3& lo, const Vec3& hi,
                                       double sigma_lo, double sigma_hi, double amplitude) {
  std::vector<BumpSum::Bump> bumps(count);
  for (BumpSum::Bump& b : bumps) {
    for (int a = 0; a < 3; ++a) b.centre[a] = rng.Uniform(lo[a], hi[a]);
    b.sigma = rng.Uniform(sigma_lo, sigma_hi);
    b.amplitude = rng.Uniform(-amplitude, amplitude);
  }
  return bumps;
}

// The template on the output grid.
struct Anatomy {
  std::vector<float> t1;
  std::vector<uint8_t> brain;
  std::vector<std::pair<int64_t, int64_t>> span;  // per row (j, k): brain voxels lie in [a, b)
  Vec3 lo{}, hi{};                                // bounding box of the brain, output voxels
};

// Tumour tissue kinds; the numbering is also the precedence where lesions overlap.
enum TumourTissue : uint8_t { kHealthy = 0, kEdema, kEnhancing, kSolid, kNecrosis };
constexpr uint8_t kTumourLabel[] = {0, 2, 4, 1, 1};  // BraTS label of each kind

struct Lesion {
  std::vector<BumpSum::Bump> kernels;  // output voxels
  double edema, core, necrosis;        // cut levels, as fractions of the field's peak
  bool rim, necrotic;
};

struct Tumours {
  std::vector<uint8_t> tissue;  // TumourTissue per voxel
  std::vector<float> weight;    // how much of the voxel is tumour (edema fades out)
  int64_t labelled = 0;
};

// Rasterises one lesion's metaball field into `out` (brain voxels only).
void RasteriseLesion(const Lesion& lesion, const Grid& grid, const Anatomy& anatomy, Tumours* out) {
  Vec3 lo = {1e9, 1e9, 1e9}, hi = {-1e9, -1e9, -1e9};
  for (const BumpSum::Bump& b : lesion.kernels) {
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::min(lo[a], b.centre[a] - 3.5 * b.sigma);
      hi[a] = std::max(hi[a], b.centre[a] + 3.5 * b.sigma);
    }
  }
  const int64_t size[3] = {grid.nx, grid.ny, grid.nz};
  int64_t b0[3], b1[3];
  for (int a = 0; a < 3; ++a) {
    b0[a] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(lo[a])), 0, size[a]);
    b1[a] = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(hi[a])) + 1, b0[a], size[a]);
  }
  const Grid box{b1[0] - b0[0], b1[1] - b0[1], b1[2] - b0[2]};
  std::vector<BumpSum::Bump> local = lesion.kernels;
  for (BumpSum::Bump& b : local) {
    for (int a = 0; a < 3; ++a) b.centre[a] -= b0[a];
  }
  const BumpSum field(local, box);
  std::vector<float> values(box.Size());
  for (int64_t k = 0; k < box.nz; ++k) {
    for (int64_t j = 0; j < box.ny; ++j) field.Row(j, k, 0, box.nx, &values[box.Index(0, j, k)]);
  }
  if (values.empty()) return;
  const float peak = *std::max_element(values.begin(), values.end());
  if (peak <= 0) return;
  for (int64_t k = 0; k < box.nz; ++k) {
    for (int64_t j = 0; j < box.ny; ++j) {
      for (int64_t i = 0; i < box.nx; ++i) {
        const int64_t v = grid.Index(i + b0[0], j + b0[1], k + b0[2]);
        if (!anatomy.brain[v]) continue;
        const double f = values[box.Index(i, j, k)] / peak;
        // Edema fades into the brain: half tumour at its cut level, all tumour at 1.5 times it.
        const double w = std::clamp((f / lesion.edema - 0.75) * 2.0, 0.0, 1.0);
        if (w <= 0) continue;
        uint8_t kind = f < lesion.edema ? kHealthy : kEdema;
        if (f >= lesion.core) {
          const bool inner = f >= lesion.necrosis && lesion.necrotic;
          kind = inner ? kNecrosis : (lesion.rim ? kEnhancing : kSolid);
        }
        out->tissue[v] = std::max(out->tissue[v], kind);
        out->weight[v] =
            std::max(out->weight[v], kind >= kEnhancing ? 1.0f : static_cast<float>(w));
      }
    }
  }
}

struct MixtureRef {
  const std::array<double, 3>& mean;
  const std::array<double, 3>& sd;
  const std::array<double, 3>& weight;
  std::array<double, 3> operator()(double t) const { return Memberships(t, mean, sd, weight); }
};

struct TemplateRef {
  const std::vector<float>& t1;
  const std::vector<float>& brain;
  std::array<int64_t, 3> dims;
  Vec3 centre;  // voxels

  // Trilinear T1 and brain fraction at template voxel coordinates q; false outside.
  bool Sample(const Vec3& q, float* t1_out, float* brain_out) const {
    const int64_t x0 = static_cast<int64_t>(std::floor(q[0])),
                  y0 = static_cast<int64_t>(std::floor(q[1])),
                  z0 = static_cast<int64_t>(std::floor(q[2]));
    if (x0 < 0 || y0 < 0 || z0 < 0 || x0 + 1 >= dims[0] || y0 + 1 >= dims[1] || z0 + 1 >= dims[2]) {
      return false;
    }
    const double f[3] = {q[0] - x0, q[1] - y0, q[2] - z0};
    double t = 0, b = 0;
    for (int c = 0; c < 8; ++c) {
      const int dx = c & 1, dy = (c >> 1) & 1, dz = c >> 2;
      const double w = (dx ? f[0] : 1 - f[0]) * (dy ? f[1] : 1 - f[1]) * (dz ? f[2] : 1 - f[2]);
      const int64_t v = ((z0 + dz) * dims[1] + (y0 + dy)) * dims[0] + (x0 + dx);
      t += w * t1[v];
      b += w * brain[v];
    }
    *t1_out = static_cast<float>(t);
    *brain_out = static_cast<float>(b);
    return true;
  }
};

// Anatomy change: an anisotropic scale per axis and a radial displacement around a point near
// the brain centre, both as a pull-back (output point -> template point) so sampling is one
// pass. Lengths in template mm, relative to the grid centre.
struct Warp {
  Vec3 scale{}, shift{}, radial_centre{};
  double radial_amplitude = 0, radial_width = 1;
};

Warp DrawWarp(Rng& rng, const Grid& grid, const Vec3& extent, double mm_per_voxel) {
  const int64_t size[3] = {grid.nx, grid.ny, grid.nz};
  Warp w;
  for (int a = 0; a < 3; ++a) {
    // Never stretch the brain past the grid: BraTS's 155 slices leave no room to grow in z.
    const double hi = std::min(1.1, (size[a] - 2) * mm_per_voxel / extent[a]);
    w.scale[a] = rng.Uniform(std::min(0.9, hi), hi);
  }
  w.shift = {rng.Uniform(-3, 3), rng.Uniform(-3, 3), 0.0};
  w.radial_centre = {rng.Uniform(-12, 12), rng.Uniform(-12, 12), rng.Uniform(-8, 8)};
  // Along a ray from the centre the map's slope is 1 + A * h(r) with h in [-0.45, 1], so any
  // |A| < 1 keeps it monotonic (no folding).
  w.radial_amplitude = rng.Uniform(-0.3, 0.3);
  w.radial_width = rng.Uniform(20, 35);
  return w;
}

Anatomy SampleAnatomy(const TemplateRef& tpl, const Warp& warp, const Grid& grid, double s) {
  Anatomy out;
  out.t1.assign(grid.Size(), 0.0f);
  out.brain.assign(grid.Size(), 0);
  out.span.assign(grid.ny * grid.nz, {0, 0});
  out.lo = {1e9, 1e9, 1e9};
  out.hi = {-1e9, -1e9, -1e9};
  const double inv_2w2 = 0.5 / (warp.radial_width * warp.radial_width);
  const Vec3 half = {0.5 * (grid.nx - 1), 0.5 * (grid.ny - 1), 0.5 * (grid.nz - 1)};
  for (int64_t k = 0; k < grid.nz; ++k) {
    for (int64_t j = 0; j < grid.ny; ++j) {
      int64_t first = grid.nx, last = -1;
      for (int64_t i = 0; i < grid.nx; ++i) {
        const Vec3 p = {(i - half[0]) * s, (j - half[1]) * s, (k - half[2]) * s};
        const Vec3 d = {p[0] - warp.radial_centre[0], p[1] - warp.radial_centre[1],
                        p[2] - warp.radial_centre[2]};
        const double g =
            warp.radial_amplitude * std::exp(-(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) * inv_2w2);
        Vec3 q;
        for (int a = 0; a < 3; ++a) {
          q[a] = tpl.centre[a] + (p[a] + g * d[a] - warp.shift[a]) / warp.scale[a];
        }
        float t1 = 0, brain = 0;
        if (!tpl.Sample(q, &t1, &brain) || brain < 0.5f) continue;
        const int64_t v = grid.Index(i, j, k);
        out.t1[v] = t1;
        out.brain[v] = 1;
        first = std::min(first, i);
        last = i;
        const Vec3 idx = {static_cast<double>(i), static_cast<double>(j), static_cast<double>(k)};
        for (int a = 0; a < 3; ++a) {
          out.lo[a] = std::min(out.lo[a], idx[a]);
          out.hi[a] = std::max(out.hi[a], idx[a]);
        }
      }
      if (last >= first) out.span[k * grid.ny + j] = {first, last + 1};
    }
  }
  return out;
}

// A seed voxel for a lesion: in the brain, mostly grey or white matter (gliomas grow in
// parenchyma, not in ventricles), inside [lo, hi], and at least `min_dist` from `avoid`.
bool PickSeed(Rng& rng, const Anatomy& anatomy, const Grid& grid, const MixtureRef& mix,
              const Vec3& lo, const Vec3& hi, const Vec3* avoid, double min_dist, Vec3* seed) {
  for (int attempt = 0; attempt < 4000; ++attempt) {
    const Vec3 p = {std::round(rng.Uniform(lo[0], hi[0])), std::round(rng.Uniform(lo[1], hi[1])),
                    std::round(rng.Uniform(lo[2], hi[2]))};
    const int64_t v = grid.Index(static_cast<int64_t>(p[0]), static_cast<int64_t>(p[1]),
                                 static_cast<int64_t>(p[2]));
    if (!anatomy.brain[v] || mix(anatomy.t1[v])[0] > 0.3) continue;
    if (avoid != nullptr &&
        std::hypot(p[0] - (*avoid)[0], p[1] - (*avoid)[1], p[2] - (*avoid)[2]) < min_dist) {
      continue;
    }
    *seed = p;
    return true;
  }
  return false;
}

// One metaball lesion: 3..8 Gaussian kernels scattered within 1.5 `sigma` of the seed.
Lesion DrawLesion(Rng& rng, const Vec3& seed, double sigma) {
  Lesion lesion;
  lesion.kernels.resize(3 + std::min(5, static_cast<int>(rng.Unit() * 6)));
  for (BumpSum::Bump& kernel : lesion.kernels) {
    Vec3 offset;
    do {
      for (double& o : offset) o = rng.Uniform(-1, 1);
    } while (offset[0] * offset[0] + offset[1] * offset[1] + offset[2] * offset[2] > 1);
    for (int a = 0; a < 3; ++a) kernel.centre[a] = seed[a] + 1.5 * sigma * offset[a];
    kernel.sigma = sigma * rng.Uniform(0.4, 1.0);
    kernel.amplitude = rng.Uniform(0.6, 1.4);
  }
  lesion.edema = rng.Uniform(0.06, 0.16);
  lesion.core = rng.Uniform(0.38, 0.55);
  lesion.necrosis = rng.Uniform(0.68, 0.85);
  lesion.rim = !rng.Chance(0.2);
  lesion.necrotic = !rng.Chance(0.25);
  return lesion;
}

std::vector<Lesion> DrawLesions(Rng& rng, const Grid& grid, const Anatomy& anatomy,
                                const MixtureRef& mix, bool small, double s) {
  const double u = rng.Unit();
  const int count = small ? (u < 0.7 ? 1 : 2) : (u < 0.55 ? 1 : (u < 0.85 ? 2 : 3));
  // Foci of one case share its volume and a band of slices, so the case keeps a majority of
  // tumour-free slices as BraTS cases do.
  const double sigma =
      (small ? rng.Uniform(1.5, 3.0) : rng.Uniform(7.0, 12.0) * std::pow(count, -0.25)) / s;
  Vec3 lo = anatomy.lo, hi = anatomy.hi;
  const double margin = 0.2 * (hi[2] - lo[2]);
  lo[2] += margin;
  hi[2] -= margin;
  std::vector<Lesion> lesions;
  Vec3 first{};
  for (int n = 0; n < count; ++n) {
    Vec3 box_lo = lo, box_hi = hi;
    if (n > 0) {
      for (int a = 0; a < 3; ++a) {
        const double reach = (a == 2 ? 15.0 : 40.0) / s;
        box_lo[a] = std::max(lo[a], first[a] - reach);
        box_hi[a] = std::min(hi[a], first[a] + reach);
      }
    }
    Vec3 seed;
    if (!PickSeed(rng, anatomy, grid, mix, box_lo, box_hi, n > 0 ? &first : nullptr, 12.0 / s,
                  &seed)) {
      break;
    }
    if (n == 0) first = seed;
    lesions.push_back(DrawLesion(rng, seed, sigma));
  }
  return lesions;
}

// Draws lesions until their labelled volume fits the case's mode: under 1 mL (and not empty)
// for small-lesion cases, at least 2 mL otherwise. Too-large small lesions are shrunk about
// their kernels' mean rather than redrawn, so the mode does not skew where they lie.
absl::Status DrawTumours(Rng& rng, const Grid& grid, const Anatomy& anatomy, const MixtureRef& mix,
                         bool small, double s, std::vector<Lesion>* lesions, Tumours* out) {
  const double voxel_ml = s * s * s / 1000.0;
  lesions->clear();
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (lesions->empty()) *lesions = DrawLesions(rng, grid, anatomy, mix, small, s);
    if (lesions->empty()) continue;
    out->tissue.assign(grid.Size(), kHealthy);
    out->weight.assign(grid.Size(), 0.0f);
    for (const Lesion& lesion : *lesions) RasteriseLesion(lesion, grid, anatomy, out);
    out->labelled = std::count_if(out->tissue.begin(), out->tissue.end(),
                                  [](uint8_t t) { return t != kHealthy; });
    const double ml = out->labelled * voxel_ml;
    if (small ? (ml > 0 && ml < 1.0) : ml >= 2.0) return absl::OkStatus();
    if (!small || ml == 0) {
      lesions->clear();
      continue;
    }
    for (Lesion& lesion : *lesions) {
      Vec3 mean{};
      for (const BumpSum::Bump& k : lesion.kernels) {
        for (int a = 0; a < 3; ++a) mean[a] += k.centre[a] / lesion.kernels.size();
      }
      for (BumpSum::Bump& k : lesion.kernels) {
        for (int a = 0; a < 3; ++a) k.centre[a] = mean[a] + 0.8 * (k.centre[a] - mean[a]);
        k.sigma *= 0.8;
      }
    }
  }
  return absl::InternalError("shift phantom: no lesion placement fitted the case's size bounds");
}

// Per-case tissue means relative to white matter, [modality][CSF, GM, WM][lo, hi]: wide
// ranges, each keeping its modality's ordering.
constexpr double kTissueRange[4][3][2] = {
    {{0.15, 0.45}, {1.05, 1.3}, {1, 1}},  // flair: CSF suppressed, GM a little above WM
    {{0.2, 0.5}, {0.6, 0.85}, {1, 1}},    // t1ce
    {{0.2, 0.45}, {0.6, 0.82}, {1, 1}},   // t1
    {{2.0, 3.5}, {1.15, 1.5}, {1, 1}},    // t2: CSF bright
};
// Tumour means relative to white matter, [modality][TumourTissue][lo, hi].
constexpr double kTumourRange[4][5][2] = {
    // healthy (unused), edema, enhancing, solid non-enhancing core, necrosis
    {{0, 0}, {1.5, 2.3}, {1.1, 1.7}, {1.3, 1.9}, {0.7, 1.5}},       // flair: edema bright
    {{0, 0}, {0.65, 0.9}, {1.4, 2.2}, {0.6, 0.85}, {0.3, 0.55}},    // t1ce: the rim enhances
    {{0, 0}, {0.65, 0.9}, {0.65, 0.95}, {0.6, 0.85}, {0.3, 0.55}},  // t1: necrosis dark
    {{0, 0}, {1.6, 2.6}, {1.2, 1.8}, {1.4, 2.0}, {2.0, 3.2}},       // t2: edema, necrosis bright
};

struct Contrast {
  std::array<std::array<double, 3>, 4> tissue{};  // [modality][CSF, GM, WM]
  std::array<std::array<double, 5>, 4> tumour{};  // [modality][TumourTissue]
  std::array<double, 4> noise_sd{};               // Gaussian sigma of the Rician noise
};

Contrast DrawContrast(Rng& rng) {
  Contrast c;
  for (int m = 0; m < volume::kNumModalities; ++m) {
    const double wm = rng.Uniform(250, 1000);  // scanner units differ between sites
    for (int t = 0; t < 3; ++t) {
      c.tissue[m][t] = wm * rng.Uniform(kTissueRange[m][t][0], kTissueRange[m][t][1]);
    }
    for (int t = 0; t < 5; ++t) {
      c.tumour[m][t] = wm * rng.Uniform(kTumourRange[m][t][0], kTumourRange[m][t][1]);
    }
    c.noise_sd[m] = wm * rng.Uniform(0.015, 0.06);
  }
  return c;
}

// Clean signal: memberships times textured tissue means, tumour blended in by its weight.
// texture holds CSF, GM, WM and lesion texture (relative deviations from 1).
void RenderSignal(const Anatomy& anatomy, const Tumours& tumours, const Contrast& contrast,
                  const MixtureRef& mix, const std::vector<BumpSum>& texture, const Grid& grid,
                  volume::MultiModalVolume* image) {
  std::array<std::vector<float>, 4> rows;
  for (auto& row : rows) row.resize(grid.nx);
  for (int64_t k = 0; k < grid.nz; ++k) {
    for (int64_t j = 0; j < grid.ny; ++j) {
      const auto [i0, i1] = anatomy.span[k * grid.ny + j];
      if (i1 <= i0) continue;
      for (int t = 0; t < 4; ++t) texture[t].Row(j, k, i0, i1, rows[t].data());
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t v = grid.Index(i, j, k);
        if (!anatomy.brain[v]) continue;
        const std::array<double, 3> p = mix(anatomy.t1[v]);
        double tex[4];
        for (int t = 0; t < 4; ++t) tex[t] = std::clamp(1.0 + rows[t][i - i0], 0.5, 1.5);
        const double w = tumours.weight[v];
        const int kind = std::max<int>(tumours.tissue[v], kEdema);
        for (int m = 0; m < volume::kNumModalities; ++m) {
          double value = 0;
          for (int c = 0; c < 3; ++c) value += p[c] * contrast.tissue[m][c] * tex[c];
          if (w > 0) value = (1 - w) * value + w * contrast.tumour[m][kind] * tex[3];
          image->channels[m][v] = static_cast<float>(value);
        }
      }
    }
  }
}

// Thick-slice look: a Gaussian slice profile across slices only, normalised over brain voxels
// so no zeros from outside the brain darken its edge.
void BlurAcrossSlices(const Anatomy& anatomy, const Grid& grid, double sigma,
                      std::vector<float>* channel) {
  const int radius = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
  const int64_t plane = grid.nx * grid.ny;
  const std::vector<float> in = *channel;
  std::vector<float> num(plane), den(plane);
  for (int64_t k = 0; k < grid.nz; ++k) {
    std::fill(num.begin(), num.end(), 0.0f);
    std::fill(den.begin(), den.end(), 0.0f);
    for (int t = -radius; t <= radius; ++t) {
      const int64_t kk = k + t;
      if (kk < 0 || kk >= grid.nz) continue;
      const float w = static_cast<float>(std::exp(-0.5 * t * t / (sigma * sigma)));
      const float* src = &in[kk * plane];
      const uint8_t* brain = &anatomy.brain[kk * plane];
      for (int64_t p = 0; p < plane; ++p) {
        if (brain[p]) {
          num[p] += w * src[p];
          den[p] += w;
        }
      }
    }
    for (int64_t p = 0; p < plane; ++p) {
      if (anatomy.brain[k * plane + p]) (*channel)[k * plane + p] = num[p] / den[p];
    }
  }
}

// Lesion heterogeneity: bumps on the lesions' own kernels, so they land inside the lesions.
std::vector<BumpSum::Bump> LesionTexture(Rng& rng, const std::vector<Lesion>& lesions) {
  std::vector<BumpSum::Bump> bumps;
  for (const Lesion& lesion : lesions) {
    const size_t n = lesion.kernels.size();
    for (int b = 0; b < 4; ++b) {
      const BumpSum::Bump& k = lesion.kernels[std::min(n - 1, static_cast<size_t>(rng.Unit() * n))];
      BumpSum::Bump bump;
      for (int a = 0; a < 3; ++a) bump.centre[a] = k.centre[a] + rng.Uniform(-k.sigma, k.sigma);
      bump.sigma = std::max(0.5, k.sigma * rng.Uniform(0.5, 1.0));
      bump.amplitude = rng.Uniform(-0.2, 0.2);
      bumps.push_back(bump);
    }
  }
  return bumps;
}

// One log bias field per modality (receive fields differ between sequences): 3..5 wide bumps
// (sigma 50..110 mm), centred up to 30 mm outside the brain as coil sensitivity peaks there.
std::vector<BumpSum> LogBiasFields(Rng& rng, const Anatomy& anatomy, const Grid& grid, double s) {
  Vec3 lo, hi;
  for (int a = 0; a < 3; ++a) {
    lo[a] = anatomy.lo[a] - 30 / s;
    hi[a] = anatomy.hi[a] + 30 / s;
  }
  std::vector<BumpSum> fields;
  for (int m = 0; m < volume::kNumModalities; ++m) {
    const int bumps = 3 + std::min(2, static_cast<int>(rng.Unit() * 3));
    fields.emplace_back(RandomBumps(rng, bumps, lo, hi, 50 / s, 110 / s, 0.3), grid);
  }
  return fields;
}

// Multiplies in each modality's bias field (exp of a sum of wide bumps) and adds Rician noise:
// the magnitude of the signal plus complex Gaussian noise, as a magnitude image has.
void AddBiasAndNoise(Rng& rng, const Anatomy& anatomy, const std::vector<BumpSum>& log_bias,
                     const Contrast& contrast, const Grid& grid, volume::MultiModalVolume* image) {
  std::array<std::vector<float>, volume::kNumModalities> rows;
  for (auto& row : rows) row.resize(grid.nx);
  for (int64_t k = 0; k < grid.nz; ++k) {
    for (int64_t j = 0; j < grid.ny; ++j) {
      const auto [i0, i1] = anatomy.span[k * grid.ny + j];
      if (i1 <= i0) continue;
      for (int m = 0; m < volume::kNumModalities; ++m)
        log_bias[m].Row(j, k, i0, i1, rows[m].data());
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t v = grid.Index(i, j, k);
        if (!anatomy.brain[v]) continue;
        for (int m = 0; m < volume::kNumModalities; ++m) {
          const double signal = image->channels[m][v] * std::exp(rows[m][i - i0]);
          const auto [re, im] = rng.GaussPair();
          const double sd = contrast.noise_sd[m];
          const double value = std::hypot(signal + sd * re, sd * im);
          image->channels[m][v] = static_cast<float>(std::max(1.0, value));
        }
      }
    }
  }
}

}  // namespace

absl::StatusOr<ShiftPhantomGenerator> ShiftPhantomGenerator::Create(
    const std::filesystem::path& colin27, ShiftPhantomOptions options) {
  for (int64_t d : options.dims) {
    if (d < 8) return absl::InvalidArgumentError("shift phantom dims must be at least 8");
  }
  absl::StatusOr<volume::Volume> t1 = volume::ReadNifti(colin27);
  if (!t1.ok()) {
    return absl::Status(
        t1.status().code(),
        absl::StrCat("Colin27 template (install mricron-data): ", t1.status().message()));
  }
  for (double spacing : t1->geometry.spacing) {
    // Lengths are drawn in template millimetres and the template is read voxel = millimetre.
    if (std::abs(spacing - 1.0) > 0.01) {
      return absl::InvalidArgumentError("shift phantoms need a 1 mm template (Colin27 ch2bet)");
    }
  }
  ShiftPhantomGenerator g;
  g.options_ = options;
  g.template_dims_ = t1->geometry.dims;
  g.t1_ = std::move(t1->voxels);
  const auto& d = g.template_dims_;
  std::array<int64_t, 3> lo = d, hi = {-1, -1, -1};
  g.brain_.assign(g.t1_.size(), 0.0f);
  for (int64_t k = 0; k < d[2]; ++k) {
    for (int64_t j = 0; j < d[1]; ++j) {
      for (int64_t i = 0; i < d[0]; ++i) {
        const int64_t v = (k * d[1] + j) * d[0] + i;
        if (!(g.t1_[v] > 0)) continue;
        g.brain_[v] = 1.0f;
        const int64_t idx[3] = {i, j, k};
        for (int a = 0; a < 3; ++a) {
          lo[a] = std::min(lo[a], idx[a]);
          hi[a] = std::max(hi[a], idx[a]);
        }
      }
    }
  }
  if (hi[0] < 0) return absl::InvalidArgumentError("Colin27 template has no brain voxels");
  for (int a = 0; a < 3; ++a) {
    g.brain_centre_[a] = 0.5 * (lo[a] + hi[a]);
    g.brain_extent_[a] = hi[a] - lo[a] + 1;
    // Grids smaller than the brain see it through one coarser isotropic sampling step.
    g.mm_per_voxel_ = std::max(g.mm_per_voxel_, g.brain_extent_[a] / (options.dims[a] - 2));
  }
  FitMixture(g.t1_, &g.mix_mean_, &g.mix_sd_, &g.mix_weight_);
  return g;
}

absl::StatusOr<PhantomCase> ShiftPhantomGenerator::Generate(uint64_t seed, int index) const {
  if (seed < kShiftSeedBase) {
    return absl::InvalidArgumentError(absl::StrCat("shift phantom seed ", seed, " is below ",
                                                   kShiftSeedBase, ", the training seed range"));
  }
  if (index < 0) return absl::InvalidArgumentError("shift phantom index must be >= 0");
  Rng rng(seed, index);
  const Grid grid{options_.dims[0], options_.dims[1], options_.dims[2]};
  const double s = mm_per_voxel_;
  const MixtureRef mix{mix_mean_, mix_sd_, mix_weight_};

  const Warp warp = DrawWarp(rng, grid, brain_extent_, s);
  const Anatomy anatomy =
      SampleAnatomy(TemplateRef{t1_, brain_, template_dims_, brain_centre_}, warp, grid, s);
  const Contrast contrast = DrawContrast(rng);
  std::vector<BumpSum> texture;
  for (int t = 0; t < 3; ++t) {
    texture.emplace_back(RandomBumps(rng, 10, anatomy.lo, anatomy.hi, 6 / s, 20 / s, 0.12), grid);
  }
  const bool small = index % 5 == 1 || index % 5 == 3;
  std::vector<Lesion> lesions;
  Tumours tumours;
  if (absl::Status status = DrawTumours(rng, grid, anatomy, mix, small, s, &lesions, &tumours);
      !status.ok()) {
    return status;
  }
  texture.emplace_back(LesionTexture(rng, lesions), grid);

  PhantomCase out;
  out.case_id = absl::StrFormat("shift_s%d_%03d", seed, index);
  out.tumours = static_cast<int>(lesions.size());
  out.seg.geometry = volume::MakeGeometry(
      options_.dims, {1, 1, 1}, {-0.5 * (grid.nx - 1), -0.5 * (grid.ny - 1), -0.5 * (grid.nz - 1)});
  out.image.geometry = out.seg.geometry;
  for (auto& channel : out.image.channels) channel.assign(grid.Size(), 0.0f);
  RenderSignal(anatomy, tumours, contrast, mix, texture, grid, &out.image);
  if (rng.Chance(0.35)) {
    const double sigma = rng.Uniform(0.4, 0.9);
    for (auto& channel : out.image.channels) BlurAcrossSlices(anatomy, grid, sigma, &channel);
  }
  AddBiasAndNoise(rng, anatomy, LogBiasFields(rng, anatomy, grid, s), contrast, grid, &out.image);

  out.seg.labels.resize(grid.Size());
  std::transform(tumours.tissue.begin(), tumours.tissue.end(), out.seg.labels.begin(),
                 [](uint8_t t) { return kTumourLabel[t]; });
  const int64_t plane = grid.nx * grid.ny;
  for (int64_t k = 0; k < grid.nz; ++k) {
    const auto begin = out.seg.labels.begin() + k * plane;
    if (std::any_of(begin, begin + plane, [](uint8_t l) { return l != 0; })) ++out.tumour_slices;
  }
  return out;
}

}  // namespace danet::data
