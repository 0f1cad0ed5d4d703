#include "models/volume/bias.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "models/volume/parallel.h"

namespace danet::volume {
namespace {

// Fewer non-zero voxels than this in the fit's sample: no field.
constexpr int64_t kMinSamples = 200;

// The monomials x^i y^j z^k with i + j + k <= degree, as exponent triples.
std::vector<std::array<int, 3>> Monomials(int degree) {
  std::vector<std::array<int, 3>> terms;
  for (int i = 0; i <= degree; ++i) {
    for (int j = 0; i + j <= degree; ++j) {
      for (int k = 0; i + j + k <= degree; ++k) terms.push_back({i, j, k});
    }
  }
  return terms;
}

// Voxel index n of an axis of `size` voxels -> [-1, 1].
double AxisCoordinate(int64_t n, int64_t size) {
  return size > 1 ? 2.0 * static_cast<double>(n) / static_cast<double>(size - 1) - 1.0 : 0.0;
}

// The median of `values` (reordered).
double Median(std::vector<double>* values) {
  const auto middle = values->begin() + static_cast<std::ptrdiff_t>(values->size() / 2);
  std::nth_element(values->begin(), middle, values->end());
  return *middle;
}

// Solves the symmetric positive (semi-)definite system a x = b (n x n, row-major) by Cholesky
// with a small ridge; a singular direction gets 0.
std::vector<double> SolveSymmetric(std::vector<double> a, std::vector<double> b, int n) {
  double trace = 0;
  for (int i = 0; i < n; ++i) trace += a[i * n + i];
  const double ridge = 1e-9 * std::max(trace, 1e-30);
  for (int i = 0; i < n; ++i) a[i * n + i] += ridge;
  for (int j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    d = d > 0 ? std::sqrt(d) : 0.0;
    a[j * n + j] = d;
    for (int i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = d > 0 ? s / d : 0.0;
    }
  }
  for (int i = 0; i < n; ++i) {  // L y = b
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= a[i * n + k] * b[k];
    b[i] = a[i * n + i] > 0 ? s / a[i * n + i] : 0.0;
  }
  for (int i = n - 1; i >= 0; --i) {  // L^T x = y
    double s = b[i];
    for (int k = i + 1; k < n; ++k) s -= a[k * n + i] * b[k];
    b[i] = a[i * n + i] > 0 ? s / a[i * n + i] : 0.0;
  }
  return b;
}

// 1-D k-means of `values` into `classes` centres (started at evenly spaced quantiles between the
// 15th and 85th percentile): writes each value's class centre to `means`. `scratch` is reused
// (its contents are not kept).
void ClassMeans(const std::vector<double>& values, int classes, std::vector<double>* means,
                std::vector<double>* scratch) {
  std::vector<double>& order = *scratch;  // partially ordered to find each starting quantile
  order = values;
  std::vector<double> centres(classes);
  auto from = order.begin();  // the quantiles rise: each is searched for above the last
  for (int c = 0; c < classes; ++c) {
    const double q = classes > 1 ? 0.15 + 0.7 * c / (classes - 1) : 0.5;
    const auto at =
        order.begin() + static_cast<std::ptrdiff_t>(q * static_cast<double>(order.size() - 1));
    std::nth_element(from, at, order.end());
    centres[c] = *at;
    from = at;
  }
  // Each round assigns the values to the nearest centre and moves each centre to its values'
  // mean; Lloyd's rounds keep 1-D centres in order, so the nearest centre is found by counting
  // the midpoints between distinct centres that a value lies above. A tie goes to the lower
  // class, and of equal centres the lowest takes every value. A value's class is the one of the
  // last round's assignment.
  std::vector<double> midpoints;
  std::vector<int> level_class;  // the class of each distinct centre
  const auto nearest = [&midpoints, &level_class](double value) {
    size_t level = 0;
    for (double m : midpoints) level += value > m ? 1 : 0;
    return level_class[level];
  };
  for (int round = 0; round < 8; ++round) {
    midpoints.clear();
    level_class.assign(1, 0);
    for (int c = 1; c < classes; ++c) {
      if (!(centres[c] > centres[level_class.back()])) continue;
      midpoints.push_back(0.5 * (centres[level_class.back()] + centres[c]));
      level_class.push_back(c);
    }
    std::vector<double> total(classes, 0.0);
    std::vector<int64_t> count(classes, 0);
    for (double value : values) {
      const int c = nearest(value);
      total[c] += value;
      ++count[c];
    }
    for (int c = 0; c < classes; ++c) {
      if (count[c] > 0) centres[c] = total[c] / static_cast<double>(count[c]);
    }
  }
  means->resize(values.size());
  for (size_t s = 0; s < values.size(); ++s) (*means)[s] = centres[nearest(values[s])];
}

// The sample the fit runs on: about one in stride of the voxels that are positive in every channel
// and not excluded (those whose SampleKey is under 2^64 / stride), with its monomials (n_terms per
// sample) and each channel's log intensity there.
struct Sample {
  std::vector<double> basis;
  std::vector<std::vector<double>> log_value;  // [channel][sample]
  size_t size() const { return log_value.empty() ? 0 : log_value[0].size(); }
};

// powers[n * (degree + 1) + p]: the coordinate of voxel n of an axis of `size`, to the power p.
std::vector<double> AxisPowers(int64_t size, int degree) {
  std::vector<double> powers(static_cast<size_t>(size) * (degree + 1));
  for (int64_t n = 0; n < size; ++n) {
    double power = 1;
    for (int p = 0; p <= degree; ++p, power *= AxisCoordinate(n, size)) {
      powers[n * (degree + 1) + p] = power;
    }
  }
  return powers;
}

// Voxel index v's place in the sample: frac(v / golden ratio) in 64 bits (a Weyl sequence). A
// voxel is sampled when its key is under 2^64 / stride, so whether it is sampled depends on its
// position alone: a voxel that joins or leaves the mask (a channel resampled from another grid
// positive at one more edge voxel, a tumour found one voxel larger) changes that voxel's place in
// the sample and no other. And the sampled indices are as evenly spread as every stride-th voxel:
// the gaps between them take at most three lengths around the stride (the three-gap theorem), so
// the sample covers the volume as regularly as the storage-order sample did. That sample (every
// stride-th positive voxel, until session 40) shifted as a whole with each voxel joining or
// leaving, and a fit around a large excluded tumour moved with it; a hashed (random) one spread
// less evenly and fitted worse (docs/training.md, "Session 40").
uint64_t SampleKey(uint64_t v) { return v * 0x9e3779b97f4a7c15ULL; }

Sample TakeSample(const std::vector<const std::vector<float>*>& channels,
                  const std::array<int64_t, 3>& dims, const std::vector<std::array<int, 3>>& terms,
                  const std::array<std::vector<double>, 3>& powers, int degree, int64_t stride,
                  int64_t max_samples, const std::vector<uint8_t>* excluded) {
  // One pass picks the voxels, the stride doubled (and the picks whose key is not under the new
  // limit dropped: the sample at that stride) whenever there would be more than max_samples.
  std::vector<size_t> picked;
  const size_t size = channels[0]->size();
  picked.reserve(
      static_cast<size_t>(std::min<int64_t>(max_samples, static_cast<int64_t>(size) / stride)) + 1);
  uint64_t divisor = static_cast<uint64_t>(stride);
  uint64_t limit = UINT64_MAX / divisor;
  for (size_t v = 0; v < size; ++v) {
    if (SampleKey(v) > limit) continue;
    bool inside = excluded == nullptr || (*excluded)[v] == 0;
    for (const std::vector<float>* channel : channels) inside = inside && (*channel)[v] > 0;
    if (!inside) continue;
    picked.push_back(v);
    while (static_cast<int64_t>(picked.size()) > max_samples) {
      divisor *= 2;
      limit = UINT64_MAX / divisor;
      picked.erase(std::remove_if(picked.begin(), picked.end(),
                                  [limit](size_t p) { return SampleKey(p) > limit; }),
                   picked.end());
    }
  }
  const int width = degree + 1;
  Sample sample;
  sample.log_value.assign(channels.size(), std::vector<double>(picked.size()));
  sample.basis.resize(picked.size() * terms.size());
  double* basis = sample.basis.data();
  for (size_t s = 0; s < picked.size(); ++s) {
    const size_t v = picked[s];
    for (size_t c = 0; c < channels.size(); ++c) {
      sample.log_value[c][s] = std::log(static_cast<double>((*channels[c])[v]));
    }
    const int64_t x = static_cast<int64_t>(v) % dims[0];
    const int64_t y = static_cast<int64_t>(v) / dims[0] % dims[1];
    const int64_t z = static_cast<int64_t>(v) / (dims[0] * dims[1]);
    for (const auto& t : terms) {
      *basis++ =
          powers[0][x * width + t[0]] * powers[1][y * width + t[1]] * powers[2][z * width + t[2]];
    }
  }
  return sample;
}

// Buffers of one channel's fit, reused from round to round (fresh pages cost on these VMs).
struct FitBuffers {
  std::vector<double> corrected, means, residual, error, scratch;
  std::vector<uint8_t> outlier;
};

// Marks (sets to 1) the samples whose log intensity, less the current fit and its class mean,
// lies further than options.outlier_sigmas robust standard deviations from the median, or above
// it by more than bright_sigmas (when > 0), the rest 0; buffers->residual gets what the classes
// leave (the fit's target). Returns how many were marked.
size_t MarkOutliers(const std::vector<double>& log_value, const std::vector<double>& fitted,
                    const BiasCorrectionOptions& options, double bright_sigmas,
                    FitBuffers* buffers) {
  const size_t n = log_value.size();
  FitBuffers& b = *buffers;
  b.corrected.resize(n);
  for (size_t s = 0; s < n; ++s) b.corrected[s] = log_value[s] - fitted[s];
  ClassMeans(b.corrected, std::max(1, options.classes), &b.means, &b.scratch);
  b.residual.resize(n);
  b.error.resize(n);
  for (size_t s = 0; s < n; ++s) {
    b.residual[s] = log_value[s] - b.means[s];
    b.error[s] = b.residual[s] - fitted[s];
  }
  b.scratch = b.error;
  const double centre = Median(&b.scratch);
  for (size_t s = 0; s < n; ++s) b.error[s] -= centre;  // the signed deviation
  for (size_t s = 0; s < n; ++s) b.scratch[s] = std::abs(b.error[s]);
  const double sigma = 1.4826 * Median(&b.scratch);
  const double limit = options.outlier_sigmas * sigma + 1e-9;
  const double bright_limit =
      bright_sigmas > 0 ? bright_sigmas * sigma + 1e-9 : std::numeric_limits<double>::infinity();
  b.outlier.resize(n);
  size_t outliers = 0;
  for (size_t s = 0; s < n; ++s) {
    b.outlier[s] = std::abs(b.error[s]) >= limit || b.error[s] >= bright_limit ? 1 : 0;
    outliers += b.outlier[s];
  }
  return outliers;
}

// Adds weight * phi phi^T to the lower triangle of `normal` (n_terms x n_terms, row-major).
void AddOuterProduct(const double* phi, int n_terms, double weight, double* normal) {
  for (int a = 0; a < n_terms; ++a) {
    const double scaled = weight * phi[a];
    for (int b = 0; b <= a; ++b) normal[a * n_terms + b] += scaled * phi[b];
  }
}

// The lower triangle of the Gram matrix of all samples' monomials: the normal matrix of a fit
// without outliers. Shared by the channels; each fit takes its own outliers' terms back out.
std::vector<double> GramMatrix(const Sample& sample, int n_terms) {
  std::vector<double> gram(static_cast<size_t>(n_terms) * n_terms, 0.0);
  for (size_t s = 0; s < sample.size(); ++s) {
    AddOuterProduct(&sample.basis[s * n_terms], n_terms, 1.0, gram.data());
  }
  return gram;
}

// Least-squares coefficients of the polynomial through `target` over the samples not marked
// `excluded` (0 or 1; `outliers` of them are 1, as MarkOutliers counts); `gram` is GramMatrix of
// the whole sample.
std::vector<double> FitPolynomial(const std::vector<double>& basis, int n_terms,
                                  const std::vector<double>& gram,
                                  const std::vector<double>& target,
                                  const std::vector<uint8_t>& excluded, size_t outliers) {
  // Fewer outliers than inliers (as the default limit gives): the Gram matrix less the outliers'
  // terms; otherwise the inliers' terms summed, so that little is left to cancellation.
  const bool from_gram = 2 * outliers < target.size();
  std::vector<double> normal = from_gram ? gram : std::vector<double>(gram.size(), 0.0);
  std::vector<double> right(n_terms, 0.0);
  for (size_t s = 0; s < target.size(); ++s) {
    const double* phi = &basis[s * n_terms];
    if (excluded[s]) {
      if (from_gram) AddOuterProduct(phi, n_terms, -1.0, normal.data());
      continue;
    }
    if (!from_gram) AddOuterProduct(phi, n_terms, 1.0, normal.data());
    for (int a = 0; a < n_terms; ++a) right[a] += phi[a] * target[s];
  }
  for (int a = 0; a < n_terms; ++a) {
    for (int b = a + 1; b < n_terms; ++b) normal[a * n_terms + b] = normal[b * n_terms + a];
  }
  return SolveSymmetric(std::move(normal), std::move(right), n_terms);
}

// Each channel's fitted polynomial (empty coefficients: no field), and its mean over the sample.
struct FittedFields {
  int degree = 0;
  std::vector<std::array<int, 3>> terms;
  std::array<std::vector<double>, 3> powers;      // [axis]: AxisPowers
  std::vector<std::vector<double>> coefficients;  // [channel][term]
  std::vector<double> mean;                       // [channel]
};

FittedFields FitFields(const std::vector<const std::vector<float>*>& channels,
                       const std::array<int64_t, 3>& dims, const BiasCorrectionOptions& options) {
  FittedFields fitted;
  fitted.degree = std::clamp(options.degree, 1, kMaxBiasDegree);
  fitted.terms = Monomials(fitted.degree);
  for (int axis = 0; axis < 3; ++axis) fitted.powers[axis] = AxisPowers(dims[axis], fitted.degree);
  const size_t count = channels.size();
  fitted.coefficients.resize(count);
  fitted.mean.assign(count, 0.0);
  const int n_terms = static_cast<int>(fitted.terms.size());
  const Sample sample = TakeSample(channels, dims, fitted.terms, fitted.powers, fitted.degree,
                                   std::max<int64_t>(1, options.sample_stride),
                                   std::max(kMinSamples, options.max_samples), options.excluded);
  const size_t n = sample.size();
  if (static_cast<int64_t>(n) < kMinSamples) return fitted;
  const std::vector<double> gram = GramMatrix(sample, n_terms);

  // Alternately, per channel: the classes and outliers under the current fit, then the fit
  // without the outliers. (Leaving a voxel that is an outlier in any channel out of every
  // channel's fit was measured as well: 2-4 Dice points lower in distribution.)
  ForEachChannel(count, [&](size_t c) {
    std::vector<double> at_samples(n, 0.0);
    FitBuffers buffers;
    const double bright_sigmas = c < options.bright_sigmas.size() ? options.bright_sigmas[c] : 0;
    for (int iteration = 0; iteration < std::max(1, options.iterations); ++iteration) {
      // The first round runs without the bright limit: before any field is fitted, the bright
      // side of a strong field would stay out of every later round's fit (measured: a known
      // field left half in place).
      const size_t outliers = MarkOutliers(sample.log_value[c], at_samples, options,
                                           iteration > 0 ? bright_sigmas : 0, &buffers);
      fitted.coefficients[c] =
          FitPolynomial(sample.basis, n_terms, gram, buffers.residual, buffers.outlier, outliers);
      for (size_t s = 0; s < n; ++s) {
        const double* phi = &sample.basis[s * n_terms];
        double f = 0;
        for (int a = 0; a < n_terms; ++a) f += fitted.coefficients[c][a] * phi[a];
        at_samples[s] = f;
      }
    }
    for (double f : at_samples) fitted.mean[c] += f;
    fitted.mean[c] /= static_cast<double>(n);
  });
  return fitted;
}

// Calls visit(v, log field) for each positive voxel v of `channel` (channel index c of `fitted`),
// a row at a time: the polynomial in x with coefficients that depend on (y, z), shifted so that
// its mean over the sample is 0.
template <typename Visit>
void VisitField(const FittedFields& fitted, size_t c, const std::vector<float>& channel,
                const std::array<int64_t, 3>& dims, Visit visit) {
  if (fitted.coefficients[c].empty()) return;
  const int degree = fitted.degree;
  const int width = degree + 1;
  const std::array<std::vector<double>, 3>& powers = fitted.powers;
  std::vector<double> row_coefficients(width);
  for (int64_t z = 0; z < dims[2]; ++z) {
    for (int64_t y = 0; y < dims[1]; ++y) {
      std::fill(row_coefficients.begin(), row_coefficients.end(), 0.0);
      for (size_t a = 0; a < fitted.terms.size(); ++a) {
        const std::array<int, 3>& t = fitted.terms[a];
        row_coefficients[t[0]] +=
            fitted.coefficients[c][a] * powers[1][y * width + t[1]] * powers[2][z * width + t[2]];
      }
      const size_t row = static_cast<size_t>((z * dims[1] + y) * dims[0]);
      for (int64_t x = 0; x < dims[0]; ++x) {
        if (!(channel[row + x] > 0)) continue;
        double f = -fitted.mean[c];
        for (int p = 0; p <= degree; ++p) f += row_coefficients[p] * powers[0][x * width + p];
        visit(row + x, f);
      }
    }
  }
}

}  // namespace

std::vector<std::vector<float>> FitLogBiasFields(
    const std::vector<const std::vector<float>*>& channels, const std::array<int64_t, 3>& dims,
    const BiasCorrectionOptions& options) {
  const FittedFields fitted = FitFields(channels, dims, options);
  std::vector<std::vector<float>> fields;
  for (const std::vector<float>* channel : channels) fields.emplace_back(channel->size(), 0.0f);
  ForEachChannel(channels.size(), [&](size_t c) {
    VisitField(fitted, c, *channels[c], dims,
               [&field = fields[c]](size_t v, double f) { field[v] = static_cast<float>(f); });
  });
  return fields;
}

void CorrectBiasField(MultiModalVolume* volume, const BiasCorrectionOptions& options) {
  std::vector<const std::vector<float>*> channels;
  for (const auto& channel : volume->channels) channels.push_back(&channel);
  const FittedFields fitted = FitFields(channels, volume->geometry.dims, options);
  // Applied as it is evaluated: no field volume is allocated (fresh pages cost on these VMs).
  ForEachChannel(channels.size(), [&](size_t c) {
    std::vector<float>& channel = volume->channels[c];
    VisitField(fitted, c, channel, volume->geometry.dims,
               [&channel](size_t v, double f) { channel[v] *= std::exp(static_cast<float>(-f)); });
  });
}

absl::StatusOr<int> ParseBiasCorrection(const std::string& text) {
  if (text.empty() || text == "none") return 0;
  absl::string_view rest = text;
  int degree = 0;
  if (absl::ConsumePrefix(&rest, "poly") && absl::SimpleAtoi(rest, &degree) && degree >= 1 &&
      degree <= kMaxBiasDegree && absl::StrCat("poly", degree) == text) {
    return degree;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not one of: none, poly1 .. poly", kMaxBiasDegree));
}

}  // namespace danet::volume
