// Network: one interface over the networks the bank can hold: our native LibTorch modules
// (UNet, TransBTS, the decision network) and any 2D network exported as TorchScript.
//
// Ownership: a Network owns its module. Thread safety: Forward on a network in eval mode may be
// called from several threads at once (no state changes); SetTraining, To and LoadWeights need
// exclusive access.
#ifndef DANET_MODELS_BANK_NETWORK_H_
#define DANET_MODELS_BANK_NETWORK_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/cost/cost.h"

namespace danet::models {

// Where a network's input lies in a larger slice (SegmentVolume runs the bank models on the
// brain's bounding box): rows top.. and columns left.. of a full_height x full_width slice.
struct SliceWindow {
  int64_t full_height = 0, full_width = 0, top = 0, left = 0;
};

// Storage precision of weight files.
enum class WeightDtype { kFloat32, kFloat16 };

class Network {
 public:
  virtual ~Network() = default;

  // N x C x H x W float -> network output (class scores or route logits). Tensor math only:
  // shape problems surface as c10::Error, which callers at component boundaries catch.
  virtual at::Tensor Forward(const at::Tensor& x) = 0;

  // Training the decision network: the route logits and, for a decision network with a tumour
  // head (DecisionArch.tumour_head), its tumour map (N x 1 x h x w logits); other networks
  // return Forward and an undefined tensor.
  virtual std::pair<at::Tensor, at::Tensor> ForwardWithTumourMap(const at::Tensor& x) {
    return {Forward(x), at::Tensor()};
  }

  // Whether ForwardWindow computes on a window what Forward computes on the full slice there,
  // up to effects at the window's edges: true for our convolutional and TransBTS networks
  // (translation-equivariant, TransBTS with its positional table cut to the window); false for
  // TorchScript networks, which may assume a fixed input size.
  virtual bool SupportsWindow() const { return false; }
  // Forward on a window of a slice; networks without SupportsWindow ignore the window.
  virtual at::Tensor ForwardWindow(const at::Tensor& x, const SliceWindow& /*window*/) {
    return Forward(x);
  }

  // Inference only: folds each BatchNorm into the convolution before it where that is exact
  // (native networks; TorchScript networks are left as they are). Call in eval mode after
  // loading the weights. A folded network computes what it did before, up to rounding, in
  // fewer passes over memory; it must not be trained again, and SaveWeights refuses it.
  virtual void FoldBatchNorm() {}
  virtual bool BatchNormFolded() const { return false; }
  // Inference only, CPU only: Linear layers with int8 weights and dynamic activation
  // quantization (TransBTS's transformer layers; other networks are left as they are).
  // FailedPrecondition when LibTorch has no quantized engine.
  virtual absl::Status QuantizeLinear() { return absl::OkStatus(); }
  // Inference only: the network computes in bfloat16, its weights converted once here, its
  // input converted on entry and its output returned as float32 (BankOptions.bfloat16; where
  // the CPU has bfloat16 dot products, oneDNN's convolutions run about twice as fast; labels
  // differ in a few voxels, docs/benchmarks.md). Call after FoldBatchNorm. Native networks only
  // (Unimplemented for TorchScript), and not with int8 Linear layers (FailedPrecondition).
  virtual absl::Status ComputeInBFloat16() {
    return absl::UnimplementedError("only native networks compute in bfloat16");
  }

  virtual void SetTraining(bool training) = 0;
  virtual void To(c10::Device device) = 0;
  virtual std::vector<at::Tensor> Parameters() = 0;

  // Parameters and buffers by dotted name, for weight files. Empty for TorchScript networks,
  // whose weights live in their own file.
  virtual std::vector<std::pair<std::string, at::Tensor>> NamedState() = 0;

  // Human-readable architecture, e.g. "unet(base_width=12)".
  virtual std::string Describe() const = 0;

  int64_t NumParameters();
};

// Builds a bank model from its config with freshly initialised weights (native) or loaded
// from its TorchScript file under `bundle_dir`. Random initialisation uses LibTorch's global
// generator: seed it (torch::manual_seed) for reproducible weights.
absl::StatusOr<std::unique_ptr<Network>> BuildBankNetwork(const v1::BankModel& model,
                                                          const std::filesystem::path& bundle_dir);

// Builds the decision network with `num_routes` outputs (bank size + 1).
absl::StatusOr<std::unique_ptr<Network>> BuildDecisionNetwork(const v1::DecisionArch& arch,
                                                              int64_t num_routes);

// Counts one forward pass's cost per sample at C x height x width (see cost.h) and the
// parameters. The network is put in eval mode and moved to the CPU for the count and is left
// there in eval mode.
absl::StatusOr<CostReport> CountCost(Network& network, int64_t channels, int64_t height,
                                     int64_t width);

// Writes NamedState() to `path` (a pickled dict of tensors, also readable by Python's
// torch.load). float16 storage halves the file; loading converts back to each tensor's own
// dtype, so float16 round-trips are exact after the first save.
absl::Status SaveWeights(Network& network, const std::filesystem::path& path, WeightDtype dtype);

// Copies `stored` (tensors by NamedState name) into the network. Every tensor must be present
// with the same shape and none left over: InvalidArgument names `source` and the tensor.
absl::Status AssignState(Network& network, std::map<std::string, at::Tensor> stored,
                         const std::string& source);

// Loads a file written by SaveWeights into the network. Every tensor must be present with the
// same shape: errors name the file and the tensor.
absl::Status LoadWeights(Network& network, const std::filesystem::path& path);

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_NETWORK_H_
