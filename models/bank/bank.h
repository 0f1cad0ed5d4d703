// Bank: the decision network plus the bank of segmentation networks, built from a bundle
// config, resident on one device.
//
// Route 0 is "skip"; route i (1..size()) is model(i - 1). Ownership: the Bank owns its
// networks. Thread safety: after construction a Bank is read-only; its networks are in eval
// mode and may run forward from several threads at once (see network.h). Training code that
// flips modes or loads weights needs exclusive access.
#ifndef DANET_MODELS_BANK_BANK_H_
#define DANET_MODELS_BANK_BANK_H_

#include <c10/core/Device.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"
#include "models/bank/network.h"

namespace danet::models {

struct BankOptions {
  // Load the weight files named in the config. When false, native networks start from fresh
  // random weights (a preset, or the start of training) and need no files.
  bool load_weights = true;
  // Seeds LibTorch's generator before random initialisation, for reproducible weights.
  std::optional<uint64_t> seed;
  c10::Device device = c10::Device(c10::kCPU);
  // Inference only: fold the native networks' BatchNorms into their convolutions
  // (Network::FoldBatchNorm). Such a bank cannot be trained or saved.
  bool fold_batch_norm = false;
  // Inference only, CPU only: TransBTS's transformer Linear layers with int8 weights
  // (Network::QuantizeLinear; docs/benchmarks.md has what it costs in Dice and gains in time).
  // Unset: the bundle's `int8_linear`, on the CPU only. true on another device is an error.
  // Training tools set false.
  std::optional<bool> int8_linear;
  // Inference only: the bank models (not the decision network) compute in bfloat16
  // (Network::ComputeInBFloat16), after any BatchNorm folding. Not with int8_linear. On the CPU
  // only where it has bfloat16 dot products (CpuHasBFloat16Dot; FailedPrecondition elsewhere).
  bool bfloat16 = false;
  // Inference only: convolution weights in channels-last (NHWC) memory format, and inputs made
  // so by the engine (memory_format()); the same arithmetic in another order, so labels may
  // differ in a few voxels (docs/benchmarks.md has the measured speed and parity).
  bool channels_last = false;
};

class Bank {
 public:
  // Reads, validates and loads the bundle in `dir`.
  static absl::StatusOr<std::unique_ptr<Bank>> Load(const std::filesystem::path& dir,
                                                    const BankOptions& options);

  // Builds a bank from `config` (validated here). TorchScript files and, when
  // options.load_weights, weight files are read relative to `dir`. Costs not stated in the
  // config are counted (see cost.h) at the preprocessing slice size.
  static absl::StatusOr<std::unique_ptr<Bank>> Create(v1::BundleConfig config,
                                                      const std::filesystem::path& dir,
                                                      const BankOptions& options);

  // Writes a complete bundle to `dir`: one weight file per native network (named after its
  // id) in `dtype`, TorchScript files copied from the source bundle, and bundle.pbtxt.
  absl::Status Save(const std::filesystem::path& dir, WeightDtype dtype) const;

  // The config, with every cost filled in and weight file names as loaded.
  const v1::BundleConfig& config() const { return config_; }
  // For training tools: descriptive fields only (name, validation, provenance). Changing an
  // architecture or a cost here does not change the networks.
  v1::BundleConfig* mutable_config() { return &config_; }
  int size() const { return static_cast<int>(models_.size()); }
  Network& model(int index) const { return *models_.at(index); }
  const v1::BankModel& model_config(int index) const { return config_.models(index); }
  Network& decision() const { return *decision_; }
  c10::Device device() const { return device_; }
  // The memory format the networks' inputs should have (BankOptions.channels_last).
  at::MemoryFormat memory_format() const { return memory_format_; }
  // How the bank models compute, as loaded: "float32", "float32, int8 Linear"
  // (BankOptions.int8_linear or the bundle's) or "bfloat16" (BankOptions.bfloat16). The decision
  // network computes in float32 in every case.
  const std::string& numerics() const { return numerics_; }

  // Replaces the decision network with a freshly initialised one (LibTorch's generator), for
  // retraining it over a trained bank.
  absl::Status ReinitializeDecision();

  // Builds the decision network again from the config's architecture and keeps its trained
  // weights (`previous`: the architecture they were trained in), to fine-tune a trained network
  // in a changed architecture:
  // - input_downsample and stem_pool_stride change no weight: the same weights see pooled
  //   input, or the stages a finer grid;
  // - global_max_pool or tumour_head turned on adds features to the classifier's input: the
  //   trained columns stay where their features are, the new ones start at 0 and the tumour
  //   head's convolution is freshly initialised (LibTorch's generator), so the grown network
  //   computes the trained one's route logits until training moves it.
  // FailedPrecondition, naming the weight, for any other change (a feature turned off, other
  // widths); the old network then stays and the config's decision architecture is `previous`
  // again.
  absl::Status RebuildDecisionKeepingWeights(const v1::DecisionArch& previous);

  // Whether a network trained in `previous` can be grown into `grown` by
  // RebuildDecisionKeepingWeights as far as the architectures tell (the weights' shapes are
  // checked there): FailedPrecondition naming the pooled feature turned off, or the tumour head
  // moved to other features. Lets a trainer refuse before it trains anything.
  static absl::Status CheckDecisionGrowth(const v1::DecisionArch& previous,
                                          const v1::DecisionArch& grown);

  // Index of the model with this id, or nullopt.
  std::optional<int> FindModel(const std::string& id) const;

 private:
  Bank(v1::BundleConfig config, std::filesystem::path source_dir, c10::Device device)
      : config_(std::move(config)), source_dir_(std::move(source_dir)), device_(device) {}

  v1::BundleConfig config_;
  std::filesystem::path source_dir_;
  c10::Device device_;
  at::MemoryFormat memory_format_ = at::MemoryFormat::Contiguous;
  std::string numerics_ = "float32";
  std::unique_ptr<Network> decision_;
  std::vector<std::unique_ptr<Network>> models_;
};

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_BANK_H_
