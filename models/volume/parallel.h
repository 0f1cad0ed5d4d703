// Running per-channel work of a multi-modal volume on threads: the channels of a case are
// independent in decoding (one file each), the bias fit, its application and the z-scoring, and a
// case's decoding and preprocessing run while no model does, so each channel gets a thread of its
// own (four on the two-core machine measured in docs/benchmarks.md).
//
// Thread safety: fn(c) runs concurrently for different c; it must touch only channel c's data
// (and read shared inputs).
#ifndef DANET_MODELS_VOLUME_PARALLEL_H_
#define DANET_MODELS_VOLUME_PARALLEL_H_

#include <cstddef>
#include <thread>
#include <vector>

namespace danet::volume {

// Runs fn(c) for every channel c in 0..channels-1, one thread each, and returns when all are done.
template <typename Fn>
void ForEachChannel(size_t channels, Fn fn) {
  std::vector<std::thread> threads;
  threads.reserve(channels);
  for (size_t c = 0; c < channels; ++c) threads.emplace_back([&fn, c] { fn(c); });
  for (std::thread& t : threads) t.join();
}

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_PARALLEL_H_
