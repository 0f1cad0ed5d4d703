// Internal to models/data: the vocabulary that the training phantom generators (classic and
// domain-randomised) share: small vector maths, the tissue classes of the Colin27 T1, the base
// tissue and tumour intensities, and smooth random functions of direction. The shift family
// (shift_phantom.cc) deliberately uses none of it.
#ifndef DANET_MODELS_DATA_PHANTOM_INTERNAL_H_
#define DANET_MODELS_DATA_PHANTOM_INTERNAL_H_

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace danet::data::phantom_internal {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<Vec3, 3>;

// Intensities per modality (kModalities order: flair, t1ce, t1, t2) of the three tissues and
// the three tumour labels. Arbitrary units in the range of BraTS scanner values.
inline constexpr double kTissue[4][3] = {
    // CSF, GM, WM
    {120, 480, 400},   // flair: CSF suppressed, GM a little brighter than WM
    {250, 450, 600},   // t1ce
    {250, 450, 600},   // t1
    {1100, 600, 420},  // t2: CSF bright
};
inline constexpr double kTumour[4][3] = {
    // necrotic core (1), edema (2), enhancing (4)
    {350, 850, 700},   // flair: edema bright
    {200, 380, 950},   // t1ce: the rim enhances
    {220, 380, 500},   // t1
    {1000, 850, 700},  // t2
};

inline Vec3 Apply(const Mat3& m, const Vec3& v) {
  Vec3 out{};
  for (int r = 0; r < 3; ++r) out[r] = m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2];
  return out;
}

inline Mat3 Rotation(double ax, double ay, double az) {
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay),
               cz = std::cos(az), sz = std::sin(az);
  // Rz * Ry * Rx
  return {{{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
           {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
           {-sy, cy * sx, cy * cx}}};
}

// 1-D k-means with three centroids (CSF, GM, WM) over brain voxels.
inline std::array<float, 3> TissueCentroids(const std::vector<float>& t1) {
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
inline double TissueValue(double t, const std::array<float, 3>& c, const double (&v)[3]) {
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

inline DirectionNoise RandomDirectionNoise(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> f(-4.0, 4.0), p(0, 2 * M_PI), a(0.15, 0.35);
  DirectionNoise n;
  for (int m = 0; m < 4; ++m) {
    n.freq[m] = {f(rng), f(rng), f(rng)};
    n.phase[m] = p(rng);
    n.amp[m] = a(rng);
  }
  return n;
}

// The log of a smooth bias field at normalised coordinates x, y, z in [-1, 1]: a quadratic
// polynomial with the nine coefficients `bias`.
inline double PolynomialBias(const double (&bias)[9], double x, double y, double z) {
  return bias[0] * x + bias[1] * y + bias[2] * z + bias[3] * x * y + bias[4] * y * z +
         bias[5] * x * z + bias[6] * x * x + bias[7] * y * y + bias[8] * z * z;
}

// Trilinear sample of a volume (x fastest) at voxel coordinates `q`; 0 outside.
inline float SampleTrilinear(const std::vector<float>& voxels, const std::array<int64_t, 3>& dims,
                             const Vec3& q) {
  const int64_t x0 = static_cast<int64_t>(std::floor(q[0])),
                y0 = static_cast<int64_t>(std::floor(q[1])),
                z0 = static_cast<int64_t>(std::floor(q[2]));
  if (x0 < 0 || y0 < 0 || z0 < 0 || x0 + 1 >= dims[0] || y0 + 1 >= dims[1] || z0 + 1 >= dims[2]) {
    return 0.0f;
  }
  const double fx = q[0] - x0, fy = q[1] - y0, fz = q[2] - z0;
  double v = 0;
  for (int dz = 0; dz < 2; ++dz) {
    for (int dy = 0; dy < 2; ++dy) {
      for (int dx = 0; dx < 2; ++dx) {
        const double w = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy) * (dz ? fz : 1 - fz);
        v += w * voxels[((z0 + dz) * dims[1] + (y0 + dy)) * dims[0] + (x0 + dx)];
      }
    }
  }
  return static_cast<float>(v);
}

}  // namespace danet::data::phantom_internal

#endif  // DANET_MODELS_DATA_PHANTOM_INTERNAL_H_
