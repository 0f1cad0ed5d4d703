// Running per-channel work of a multi-modal volume on threads: the channels of a case are
// independent in decoding (one file each), the bias fit, its application and the z-scoring, and a
// case's decoding and preprocessing run while no model does, so each channel gets a thread of its
// own (four on the two-core machine measured in docs/benchmarks.md).
//
// Thread safety: fn(c) runs concurrently for different c; it must touch only channel c's data
// (and read shared inputs). The same for ForEachPart's parts of a volume.
#ifndef DANET_MODELS_VOLUME_PARALLEL_H_
#define DANET_MODELS_VOLUME_PARALLEL_H_

#include <cstddef>
#include <thread>
#include <vector>

namespace danet::volume {

// Runs fn(p) for every part p in 0..parts-1, one thread each, and returns when all are done.
template <typename Fn>
void ForEachPart(size_t parts, Fn fn) {
  std::vector<std::thread> threads;
  threads.reserve(parts);
  for (size_t p = 0; p < parts; ++p) threads.emplace_back([&fn, p] { fn(p); });
  for (std::thread& t : threads) t.join();
}

// Runs fn(c) for every channel c in 0..channels-1, one thread each, and returns when all are done.
template <typename Fn>
void ForEachChannel(size_t channels, Fn fn) {
  ForEachPart(channels, fn);
}

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_PARALLEL_H_
