// The server-wide memory budget (--memory_budget_mb) for what requests hold: buffered upload
// bytes, and the decoded volumes with the engine's working set while a job runs. A request
// holds a MemoryLease and resizes it before it allocates; a resize that would take the total
// over the budget fails with RESOURCE_EXHAUSTED naming the need and the budget, and nothing is
// allocated. The bank's own weights are outside the budget (they are resident once).
//
// Thread safety: MemoryBudget is thread-safe; a MemoryLease belongs to one request (not
// synchronised) and must not outlive its budget.
#ifndef DANET_SERVER_CORE_MEMORY_BUDGET_H_
#define DANET_SERVER_CORE_MEMORY_BUDGET_H_

#include <cstdint>
#include <mutex>
#include <string_view>

#include "absl/status/status.h"

namespace danet::service {

// What a job adds to the server's resident memory at its peak, beyond its buffered upload
// (docs/reliability.md has the measurements behind both terms):
// - per voxel of the volume's grid: four float32 channels as decoded, the slice stack the
//   networks read, four inflated float32 files (the files decode in parallel), labels and
//   outputs. Measured 49.5 bytes per voxel through the server on a 512x512x100 case with
//   static:M1 when the files decoded one at a time; parallel decoding holds three more
//   inflated files (12 bytes per voxel);
// - per slice, the transformer models' attention maps at batch 1, which grow with the square of
//   the slice's pixel count (a token per 8x8 patch, 8 heads, float32, scores and softmax):
//   pixels^2 / 64 bytes, 1 GiB at 512x512 (measured: the default policy on that case peaked
//   0.95 GiB above static:M1), 50 MiB at 240x240.
inline constexpr int64_t kJobBytesPerVoxel = 62;
inline constexpr int64_t kAttentionPixelsSquaredPerByte = 64;

// The estimate above for a grid of `voxels` whose padded slices have `slice_pixels` pixels.
inline int64_t JobBytes(int64_t voxels, int64_t slice_pixels) {
  return voxels * kJobBytesPerVoxel + slice_pixels * slice_pixels / kAttentionPixelsSquaredPerByte;
}

class MemoryBudget {
 public:
  // `capacity_bytes` <= 0: no budget (every reservation succeeds; in_use is still counted).
  explicit MemoryBudget(int64_t capacity_bytes) : capacity_(capacity_bytes) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  int64_t capacity() const { return capacity_; }
  int64_t in_use() const;

 private:
  friend class MemoryLease;
  // Changes the reserved total by `delta` (a release when negative, which always succeeds).
  absl::Status Change(int64_t held, int64_t delta, std::string_view what);

  const int64_t capacity_;
  mutable std::mutex mutex_;
  int64_t in_use_ = 0;
};

// One request's share of a budget; released when destroyed. A default-constructed lease has
// no budget and reserves nothing.
class MemoryLease {
 public:
  MemoryLease() = default;
  explicit MemoryLease(MemoryBudget* budget) : budget_(budget) {}
  MemoryLease(MemoryLease&& other) noexcept;
  MemoryLease& operator=(MemoryLease&& other) noexcept;
  ~MemoryLease();

  // Holds exactly `bytes` from now on. Growing past the budget: RESOURCE_EXHAUSTED whose
  // message names `what`, the bytes needed and the budget (and whether other requests hold the
  // rest, i.e. whether a retry can succeed); the lease keeps its old size.
  absl::Status Resize(int64_t bytes, std::string_view what);
  int64_t held() const { return held_; }

 private:
  MemoryBudget* budget_ = nullptr;
  int64_t held_ = 0;
};

}  // namespace danet::service

#endif  // DANET_SERVER_CORE_MEMORY_BUDGET_H_
