#include "models/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace danet::eval {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One pass of the Felzenszwalb-Huttenlocher squared distance transform along a line:
// f holds squared distances (0 at sites, inf elsewhere), step is the voxel spacing.
void DistanceTransform1D(std::vector<double>& f, double step, std::vector<double>& d,
                         std::vector<int>& v, std::vector<double>& z) {
  const int n = static_cast<int>(f.size());
  int k = 0;
  v[0] = -1;
  for (int q = 0; q < n; ++q) {
    if (f[q] == kInf) continue;
    if (v[0] == -1) {
      v[0] = q;
      z[0] = -kInf;
      z[1] = kInf;
      continue;
    }
    while (true) {
      const int p = v[k];
      const double s =
          ((f[q] + q * q * step * step) - (f[p] + p * p * step * step)) / (2.0 * step * (q - p));
      if (s <= z[k]) {
        if (k == 0) {
          v[0] = q;
          z[0] = -kInf;
          z[1] = kInf;
          break;
        }
        --k;
        continue;
      }
      ++k;
      v[k] = q;
      z[k] = s;
      z[k + 1] = kInf;
      break;
    }
  }
  if (v[0] == -1) return;  // no site on this line: stays inf
  k = 0;
  for (int q = 0; q < n; ++q) {
    while (z[k + 1] < q * step) ++k;
    const double delta = (q - v[k]) * step;
    d[q] = delta * delta + f[v[k]];
  }
  f = d;
}

// Exact Euclidean distance (mm) from every voxel of a box to the nearest site.
std::vector<double> DistanceToSites(const std::vector<uint8_t>& sites,
                                    const std::array<int64_t, 3>& dims,
                                    const std::array<double, 3>& spacing) {
  std::vector<double> dist(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) dist[i] = sites[i] ? 0.0 : kInf;
  const int64_t stride[3] = {1, dims[0], dims[0] * dims[1]};
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t n = dims[axis];
    std::vector<double> f(n), d(n), z(n + 1);
    std::vector<int> v(n);
    const int a1 = (axis + 1) % 3, a2 = (axis + 2) % 3;
    for (int64_t x = 0; x < dims[a1]; ++x) {
      for (int64_t y = 0; y < dims[a2]; ++y) {
        const int64_t base = x * stride[a1] + y * stride[a2];
        for (int64_t q = 0; q < n; ++q) f[q] = dist[base + q * stride[axis]];
        d.assign(n, kInf);
        DistanceTransform1D(f, spacing[axis], d, v, z);
        for (int64_t q = 0; q < n; ++q) dist[base + q * stride[axis]] = f[q];
      }
    }
  }
  for (double& x : dist) x = std::sqrt(x);
  return dist;
}

// Mask voxels with a 6-neighbour outside the mask (or on the box border).
std::vector<uint8_t> Surface(const std::vector<uint8_t>& mask, const std::array<int64_t, 3>& d) {
  std::vector<uint8_t> surface(mask.size(), 0);
  for (int64_t k = 0; k < d[2]; ++k) {
    for (int64_t j = 0; j < d[1]; ++j) {
      for (int64_t i = 0; i < d[0]; ++i) {
        const int64_t v = (k * d[1] + j) * d[0] + i;
        if (!mask[v]) continue;
        const bool border =
            i == 0 || j == 0 || k == 0 || i == d[0] - 1 || j == d[1] - 1 || k == d[2] - 1;
        surface[v] = border || !mask[v - 1] || !mask[v + 1] || !mask[v - d[0]] || !mask[v + d[0]] ||
                     !mask[v - d[0] * d[1]] || !mask[v + d[0] * d[1]];
      }
    }
  }
  return surface;
}

}  // namespace

bool InRegion(uint8_t label, Region region) {
  switch (region) {
    case Region::kWT:
      return label > 0;
    case Region::kTC:
      return label == 1 || label == 4;
    case Region::kET:
      return label == 4;
  }
  return false;
}

std::vector<uint8_t> RegionMask(const std::vector<uint8_t>& labels, Region region) {
  std::vector<uint8_t> mask(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) mask[i] = InRegion(labels[i], region);
  return mask;
}

double Dice(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int64_t both = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    na += a[i] != 0;
    nb += b[i] != 0;
    both += (a[i] != 0) && (b[i] != 0);
  }
  if (na + nb == 0) return 1.0;
  return 2.0 * static_cast<double>(both) / static_cast<double>(na + nb);
}

double Hd95(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
            const std::array<int64_t, 3>& dims, const std::array<double, 3>& spacing) {
  // Work in the bounding box of both masks, grown by one voxel so surfaces stay interior.
  std::array<int64_t, 3> lo = dims, hi = {-1, -1, -1};
  bool any_a = false, any_b = false;
  for (int64_t k = 0; k < dims[2]; ++k) {
    for (int64_t j = 0; j < dims[1]; ++j) {
      for (int64_t i = 0; i < dims[0]; ++i) {
        const int64_t v = (k * dims[1] + j) * dims[0] + i;
        if (!a[v] && !b[v]) continue;
        any_a |= a[v] != 0;
        any_b |= b[v] != 0;
        const int64_t idx[3] = {i, j, k};
        for (int x = 0; x < 3; ++x) {
          lo[x] = std::min(lo[x], idx[x]);
          hi[x] = std::max(hi[x], idx[x]);
        }
      }
    }
  }
  if (!any_a && !any_b) return 0.0;
  if (!any_a || !any_b) return kHd95Missing;
  std::array<int64_t, 3> box;
  for (int x = 0; x < 3; ++x) {
    lo[x] -= 1;
    hi[x] += 1;
    box[x] = hi[x] - lo[x] + 1;
  }
  std::vector<uint8_t> ca(box[0] * box[1] * box[2], 0), cb(ca.size(), 0);
  for (int64_t k = std::max<int64_t>(lo[2], 0); k <= std::min(hi[2], dims[2] - 1); ++k) {
    for (int64_t j = std::max<int64_t>(lo[1], 0); j <= std::min(hi[1], dims[1] - 1); ++j) {
      for (int64_t i = std::max<int64_t>(lo[0], 0); i <= std::min(hi[0], dims[0] - 1); ++i) {
        const int64_t v = (k * dims[1] + j) * dims[0] + i;
        const int64_t c = ((k - lo[2]) * box[1] + (j - lo[1])) * box[0] + (i - lo[0]);
        ca[c] = a[v] != 0;
        cb[c] = b[v] != 0;
      }
    }
  }
  const std::vector<uint8_t> sa = Surface(ca, box), sb = Surface(cb, box);
  const std::vector<double> to_a = DistanceToSites(sa, box, spacing);
  const std::vector<double> to_b = DistanceToSites(sb, box, spacing);
  std::vector<double> distances;
  for (size_t c = 0; c < sa.size(); ++c) {
    if (sa[c]) distances.push_back(to_b[c]);
    if (sb[c]) distances.push_back(to_a[c]);
  }
  // 95th percentile, linear interpolation between order statistics (numpy's default).
  std::sort(distances.begin(), distances.end());
  const double pos = 0.95 * static_cast<double>(distances.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(pos));
  const size_t above = std::min(below + 1, distances.size() - 1);
  return distances[below] + (pos - below) * (distances[above] - distances[below]);
}

RegionScores ScoreLabels(const std::vector<uint8_t>& predicted,
                         const std::vector<uint8_t>& reference, const std::array<int64_t, 3>& dims,
                         const std::array<double, 3>& spacing) {
  RegionScores scores;
  for (int r = 0; r < 3; ++r) {
    const std::vector<uint8_t> p = RegionMask(predicted, static_cast<Region>(r));
    const std::vector<uint8_t> g = RegionMask(reference, static_cast<Region>(r));
    scores.dice[r] = Dice(p, g);
    scores.hd95[r] = Hd95(p, g, dims, spacing);
  }
  return scores;
}

namespace {

// Per region (WT, TC, ET): voxels in both, in the prediction, in the reference.
struct SliceCounts {
  int64_t both = 0, predicted = 0, reference = 0;
};

std::array<SliceCounts, 3> CountSliceRegions(const uint8_t* predicted, const uint8_t* reference,
                                             int64_t voxels) {
  std::array<SliceCounts, 3> counts;
  for (int r = 0; r < 3; ++r) {
    SliceCounts& c = counts[r];
    for (int64_t v = 0; v < voxels; ++v) {
      const bool p = InRegion(predicted[v], static_cast<Region>(r));
      const bool g = InRegion(reference[v], static_cast<Region>(r));
      c.predicted += p;
      c.reference += g;
      c.both += p && g;
    }
  }
  return counts;
}

}  // namespace

double SliceScore(const uint8_t* predicted, const uint8_t* reference, int64_t voxels) {
  double total = 0;
  for (const SliceCounts& c : CountSliceRegions(predicted, reference, voxels)) {
    const int64_t sum = c.predicted + c.reference;
    total += sum == 0 ? 1.0 : 2.0 * c.both / static_cast<double>(sum);
  }
  return total / 3.0;
}

double SliceErrorScore(const uint8_t* predicted, const uint8_t* reference, int64_t voxels) {
  const std::array<SliceCounts, 3> counts = CountSliceRegions(predicted, reference, voxels);
  int64_t wrong = 0;
  for (const SliceCounts& c : counts) wrong += c.predicted + c.reference - 2 * c.both;
  const int64_t whole = counts[static_cast<int>(Region::kWT)].reference;
  return 1.0 -
         static_cast<double>(wrong) / (3.0 * static_cast<double>(std::max<int64_t>(whole, 1)));
}

}  // namespace danet::eval
