// Cost counting: multiply-accumulates (MACs) of one forward pass, per layer type.
//
// Our networks run every layer through the counted ops in models/nn/ops.h. While a
// ScopedCostRecording is alive on a thread, those ops add their analytic cost, computed from
// the layer's configuration and the actual tensor shapes, to its CostRecorder. CountCost runs one
// forward pass on a 1 x C x H x W zero input under such a scope, so the count follows the code
// that really runs and cannot drift from it.
//
// Convention (the one common PyTorch profilers such as ptflops use, applied to every network
// alike; see docs/cost.md):
//   conv            out_elements * (C_in / groups) * k_h * k_w, + out_elements for the bias
//   transposed conv in_elements * (C_out / groups) * k_h * k_w, + out_elements for the bias
//   linear          out_elements * in_features, + out_elements for the bias
//   attention       Q.K^T and A.V matmuls: 2 * heads * T * T * head_dim per sample
//   norm            BatchNorm / LayerNorm with affine: 2 per element
//   activation      ReLU, GELU, softmax: 1 per element
//   pool            max / average pooling: 1 per input element
//   elementwise     residual and positional-embedding adds: 1 per element
// Concatenation, reshapes and channel shuffles are free. A MAC counts as one op; achieved
// GFLOP/s figures elsewhere use 2 FLOPs per MAC.
//
// Thread safety: recording is per thread; a CostRecorder is used by one thread at a time.
#ifndef DANET_MODELS_COST_COST_H_
#define DANET_MODELS_COST_COST_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace at {
class Tensor;
}

namespace danet::models {

enum class OpKind : int {
  kConv = 0,
  kTransposedConv,
  kLinear,
  kAttention,
  kNorm,
  kActivation,
  kPool,
  kElementwise,
};
inline constexpr int kNumOpKinds = 8;

// Stable lower-case name of an op kind ("conv", "transposed_conv", ...), used in JSON output.
const char* OpKindName(OpKind kind);

// The cost of one forward pass for ONE sample, split by op kind, plus the parameter count.
struct CostReport {
  std::array<double, kNumOpKinds> macs{};  // per sample
  int64_t params = 0;

  double TotalMacs() const;
  double GMacs() const { return TotalMacs() * 1e-9; }
  double MacsOf(OpKind kind) const { return macs[static_cast<int>(kind)]; }
};

// Accumulates costs recorded by the counted ops. The recorded values are for the whole batch;
// Report(batch) divides by the batch size.
class CostRecorder {
 public:
  void Add(OpKind kind, double macs) { macs_[static_cast<int>(kind)] += macs; }
  CostReport Report(int64_t batch) const;

 private:
  std::array<double, kNumOpKinds> macs_{};
};

// Makes `recorder` the current thread's recorder for the scope's lifetime (restores the
// previous one after). `recorder` must outlive the scope.
class ScopedCostRecording {
 public:
  explicit ScopedCostRecording(CostRecorder* recorder);
  ~ScopedCostRecording();
  ScopedCostRecording(const ScopedCostRecording&) = delete;
  ScopedCostRecording& operator=(const ScopedCostRecording&) = delete;

 private:
  CostRecorder* previous_;
};

// Adds `macs` to the current thread's recorder, if any. Cheap when none is active.
void RecordCost(OpKind kind, double macs);
bool CostRecordingActive();

// Runs `forward` once, without gradients, on a zero input of shape 1 x channels x height x
// width on the CPU and returns the recorded cost per sample. The caller puts the network in
// eval mode; `params` is left 0 for the caller to fill. Errors (a c10::Error from the forward
// pass, for an unsupported size say) come back as InvalidArgument.
absl::StatusOr<CostReport> CountForwardCost(
    const std::function<at::Tensor(const at::Tensor&)>& forward, int64_t channels, int64_t height,
    int64_t width);

}  // namespace danet::models

#endif  // DANET_MODELS_COST_COST_H_
