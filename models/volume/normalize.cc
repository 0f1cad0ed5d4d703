#include "models/volume/normalize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "models/volume/parallel.h"

namespace danet::volume {
namespace {

// The volume is split into this many runs of voxels, one thread each. Fixed (not the machine's
// core count) so that the partial sums, and hence the output, are the same on every machine.
constexpr size_t kParts = 4;

// Sums over the brain voxels of one part of the volume.
struct Moments {
  std::array<double, kNumModalities> total{}, total_sq{};
  int64_t count = 0;
};

// A brain voxel: the channels' sum is > 0 (summed in channel order, as a float).
bool InBrain(const MultiModalVolume& volume, size_t v) {
  float sum = 0;
  for (const auto& channel : volume.channels) sum += channel[v];
  return sum > 0;
}

}  // namespace

// Two passes over the four channels together, each split into kParts runs of voxels on threads
// of their own: the brain test and every channel's sums, then the rescaling (the brain test done
// again instead of kept in a mask: reading the channels is needed anyway, a mask is one more
// array to fault in). Memory traffic, not arithmetic, is what this costs (docs/benchmarks.md).
void NormalizeZScoreBrain(MultiModalVolume* volume) {
  const size_t n = volume->channels[0].size();
  const size_t part_size = (n + kParts - 1) / kParts;
  std::array<Moments, kParts> parts;
  ForEachPart(kParts, [&](size_t p) {
    Moments& m = parts[p];
    for (size_t v = p * part_size, end = std::min(n, v + part_size); v < end; ++v) {
      if (!InBrain(*volume, v)) continue;
      for (int c = 0; c < kNumModalities; ++c) {
        const double x = volume->channels[c][v];
        m.total[c] += x;
        m.total_sq[c] += x * x;
      }
      ++m.count;
    }
  });
  Moments all;  // the parts added in a fixed order
  for (const Moments& m : parts) {
    for (int c = 0; c < kNumModalities; ++c) {
      all.total[c] += m.total[c];
      all.total_sq[c] += m.total_sq[c];
    }
    all.count += m.count;
  }
  std::array<double, kNumModalities> mean{}, scale{};
  for (int c = 0; c < kNumModalities; ++c) {
    if (all.count == 0) continue;
    mean[c] = all.total[c] / all.count;
    const double var = std::max(0.0, all.total_sq[c] / all.count - mean[c] * mean[c]);
    scale[c] = var > 0 ? 1.0 / std::sqrt(var) : 0.0;
  }
  ForEachPart(kParts, [&](size_t p) {
    for (size_t v = p * part_size, end = std::min(n, v + part_size); v < end; ++v) {
      const bool brain = InBrain(*volume, v);
      for (int c = 0; c < kNumModalities; ++c) {
        float& x = volume->channels[c][v];
        x = brain ? static_cast<float>((x - mean[c]) * scale[c]) : 0.0f;
      }
    }
  });
}

}  // namespace danet::volume
