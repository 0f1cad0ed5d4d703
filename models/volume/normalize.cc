#include "models/volume/normalize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "models/volume/parallel.h"

namespace danet::volume {

void NormalizeZScoreBrain(MultiModalVolume* volume) {
  const size_t n = volume->channels[0].size();
  // One byte per voxel (not std::vector<bool>'s bits): read by every channel's thread below.
  std::vector<uint8_t> brain(n);
  for (size_t v = 0; v < n; ++v) {
    float sum = 0;
    for (const auto& channel : volume->channels) sum += channel[v];
    brain[v] = sum > 0;
  }
  ForEachChannel(volume->channels.size(), [&](size_t c) {
    std::vector<float>& channel = volume->channels[c];
    double total = 0, total_sq = 0;
    int64_t count = 0;
    for (size_t v = 0; v < n; ++v) {
      if (!brain[v]) continue;
      total += channel[v];
      total_sq += static_cast<double>(channel[v]) * channel[v];
      ++count;
    }
    const double mean = count > 0 ? total / count : 0.0;
    const double var = count > 0 ? std::max(0.0, total_sq / count - mean * mean) : 0.0;
    const double scale = var > 0 ? 1.0 / std::sqrt(var) : 0.0;
    for (size_t v = 0; v < n; ++v) {
      channel[v] = brain[v] ? static_cast<float>((channel[v] - mean) * scale) : 0.0f;
    }
  });
}

}  // namespace danet::volume
