#include "models/bank/bank.h"

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/bank/blas_kernels.h"
#include "models/bundle/bundle_config.h"

namespace danet::models {
namespace {

int64_t SliceSide(int32_t value) { return value != 0 ? value : 240; }

// The stated cost, or the analytic count when the config leaves it unset.
absl::StatusOr<double> StatedOrCounted(Network& network, const v1::Preprocessing& pre,
                                       const std::string& what, double stated) {
  if (stated > 0) return stated;
  absl::StatusOr<CostReport> cost =
      CountCost(network, 4, SliceSide(pre.slice_height()), SliceSide(pre.slice_width()));
  if (!cost.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", cost.status().message()));
  }
  return cost->GMacs();
}

// Where each pooled feature block sits in the decision classifier's input (DecisionNetImpl's
// order: the head's average, its maximum, the tumour map's maximum), by block name.
std::map<std::string, std::pair<int64_t, int64_t>> ClassifierBlocks(const v1::DecisionArch& arch,
                                                                    int64_t head_width) {
  std::map<std::string, std::pair<int64_t, int64_t>> blocks{{"average", {0, head_width}}};
  int64_t next = head_width;
  if (arch.global_max_pool()) {
    blocks["maximum"] = {next, head_width};
    next += head_width;
  }
  if (arch.tumour_head()) blocks["tumour map"] = {next, 1};
  return blocks;
}

// Adapts `trained` (weights of the decision network in `previous`) to the network built for
// `grown`, which may add pooled features (Bank::RebuildDecisionKeepingWeights): new tensors keep
// their fresh values in `network`, the classifier's trained columns move to where their features
// now are and the new columns are 0. A feature turned off is refused (its weights would be lost).
absl::Status GrowDecisionState(const v1::DecisionArch& previous, const v1::DecisionArch& grown,
                               Network& network, std::map<std::string, at::Tensor>& trained) {
  if (absl::Status s = Bank::CheckDecisionGrowth(previous, grown); !s.ok()) return s;
  auto classifier = trained.find("classifier.weight");
  if (classifier == trained.end()) return absl::OkStatus();  // AssignState names what is missing
  const int64_t pooled = classifier->second.size(1) - (previous.tumour_head() ? 1 : 0);
  const int64_t head_width = previous.global_max_pool() ? pooled / 2 : pooled;
  const auto from = ClassifierBlocks(previous, head_width);
  const auto to = ClassifierBlocks(grown, head_width);
  if (from.size() == to.size()) return absl::OkStatus();
  for (auto& [name, tensor] : network.NamedState()) {
    if (name == "classifier.weight") {
      int64_t width = 0;
      for (const auto& [block, place] : to) width = std::max(width, place.first + place.second);
      if (tensor.size(0) != classifier->second.size(0) || tensor.size(1) != width) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor 'classifier.weight' of the grown network has shape [",
            absl::StrJoin(tensor.sizes(), ","), "], not the trained one's routes and features"));
      }
      torch::NoGradGuard no_grad;
      at::Tensor widened = torch::zeros_like(tensor);
      for (const auto& [block, place] : from) {
        widened.narrow(1, to.at(block).first, place.second)
            .copy_(classifier->second.narrow(1, place.first, place.second));
      }
      classifier->second = widened;
    } else if (trained.count(name) == 0) {
      trained.emplace(name, tensor.detach().clone());  // new in the grown network
    }
  }
  return absl::OkStatus();
}

absl::Status LoadNamedWeights(Network& network, const std::filesystem::path& dir,
                              const std::string& file, const std::string& field) {
  absl::Status status = LoadWeights(network, dir / file);
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(field, ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Bank>> Bank::Load(const std::filesystem::path& dir,
                                                 const BankOptions& options) {
  absl::StatusOr<v1::BundleConfig> config = ReadBundleConfig(dir);
  if (!config.ok()) return config.status();
  return Create(*std::move(config), dir, options);
}

absl::StatusOr<std::unique_ptr<Bank>> Bank::Create(v1::BundleConfig config,
                                                   const std::filesystem::path& dir,
                                                   const BankOptions& options) {
  ValidateOptions validate;
  if (options.load_weights) validate.bundle_dir = dir;
  if (absl::Status s = ValidateBundleConfig(config, validate); !s.ok()) return s;
  if (options.seed) torch::manual_seed(*options.seed);

  std::unique_ptr<Bank> bank(new Bank(std::move(config), dir, options.device));
  v1::BundleConfig& cfg = bank->config_;
  for (int i = 0; i < cfg.models_size(); ++i) {
    v1::BankModel& model = *cfg.mutable_models(i);
    const std::string field = absl::StrCat("models[", i, "]");
    absl::StatusOr<std::unique_ptr<Network>> network = BuildBankNetwork(model, dir);
    if (!network.ok()) return network.status();
    if (options.load_weights && !model.has_torchscript()) {
      if (absl::Status s = LoadNamedWeights(**network, dir, model.weights(), field + ".weights");
          !s.ok()) {
        return s;
      }
    }
    absl::StatusOr<double> gmacs =
        StatedOrCounted(**network, cfg.preprocessing(), field, model.gmacs_per_slice());
    if (!gmacs.ok()) return gmacs.status();
    model.set_gmacs_per_slice(*gmacs);
    bank->models_.push_back(*std::move(network));
  }
  absl::StatusOr<std::unique_ptr<Network>> decision =
      BuildDecisionNetwork(cfg.decision().arch(), cfg.models_size() + 1);
  if (!decision.ok()) return decision.status();
  if (options.load_weights) {
    if (absl::Status s =
            LoadNamedWeights(**decision, dir, cfg.decision().weights(), "decision.weights");
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<double> gmacs = StatedOrCounted(**decision, cfg.preprocessing(), "decision",
                                                 cfg.decision().gmacs_per_slice());
  if (!gmacs.ok()) return gmacs.status();
  cfg.mutable_decision()->set_gmacs_per_slice(*gmacs);
  bank->decision_ = *std::move(decision);

  if (options.int8_linear.value_or(cfg.int8_linear() && options.device.is_cpu())) {
    if (!options.device.is_cpu()) {
      return absl::FailedPreconditionError(
          absl::StrCat("int8 Linear layers run on the CPU only, not on ", options.device.str()));
    }
    for (int i = 0; i < bank->size(); ++i) {
      if (absl::Status s = bank->models_[i]->QuantizeLinear(); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("models[", i, "]: ", s.message()));
      }
    }
    bank->numerics_ = "float32, int8 Linear";
  }
  try {
    for (auto& model : bank->models_) {
      model->To(options.device);
      model->SetTraining(false);
    }
    bank->decision_->To(options.device);
    bank->decision_->SetTraining(false);
    if (options.fold_batch_norm) {
      for (auto& model : bank->models_) model->FoldBatchNorm();
      bank->decision_->FoldBatchNorm();
    }
    if (options.bfloat16) {
      if (options.device.is_cpu() && !CpuHasBFloat16Dot()) {
        return absl::FailedPreconditionError(
            "bfloat16 bank models need a CPU with bfloat16 dot products (AVX512-BF16 or "
            "AMX-BF16); this one has none: oneDNN would emulate them, about 3x slower than "
            "float32 per convolution on AVX-512, and has no bfloat16 convolution on AVX2");
      }
      for (int i = 0; i < bank->size(); ++i) {
        if (absl::Status s = bank->models_[i]->ComputeInBFloat16(); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat("models[", i, "]: ", s.message()));
        }
      }
      bank->numerics_ = "bfloat16";
    }
    if (options.channels_last) {
      bank->memory_format_ = at::MemoryFormat::ChannelsLast;
      std::vector<Network*> networks = {bank->decision_.get()};
      for (auto& model : bank->models_) networks.push_back(model.get());
      for (Network* network : networks) {
        for (at::Tensor& p : network->Parameters()) {
          if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
        }
      }
    }
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot move the bank to ", options.device.str(), ": ", e.what_without_backtrace()));
  }
  return bank;
}

absl::Status Bank::Save(const std::filesystem::path& dir, WeightDtype dtype) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  v1::BundleConfig out = config_;
  out.set_weight_dtype(dtype == WeightDtype::kFloat16 ? "float16" : "float32");
  for (int i = 0; i < size(); ++i) {
    v1::BankModel& model = *out.mutable_models(i);
    if (model.has_torchscript()) {
      const std::filesystem::path from = source_dir_ / model.torchscript().file();
      const std::filesystem::path to = dir / model.torchscript().file();
      if (std::filesystem::absolute(from) != std::filesystem::absolute(to)) {
        std::filesystem::create_directories(to.parent_path(), ec);
        std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
        if (ec) {
          return absl::InternalError(
              absl::StrCat("cannot copy ", from.string(), ": ", ec.message()));
        }
      }
      continue;
    }
    model.set_weights(absl::StrCat(model.id(), ".pt"));
    if (absl::Status s = SaveWeights(*models_[i], dir / model.weights(), dtype); !s.ok()) return s;
  }
  out.mutable_decision()->set_weights("decision.pt");
  if (absl::Status s = SaveWeights(*decision_, dir / "decision.pt", dtype); !s.ok()) return s;
  return WriteBundleConfig(out, dir);
}

absl::Status Bank::ReinitializeDecision() {
  absl::StatusOr<std::unique_ptr<Network>> decision =
      BuildDecisionNetwork(config_.decision().arch(), config_.models_size() + 1);
  if (!decision.ok()) return decision.status();
  // A changed architecture comes with its cost unset (the trainer clears it): count it.
  absl::StatusOr<double> gmacs = StatedOrCounted(**decision, config_.preprocessing(), "decision",
                                                 config_.decision().gmacs_per_slice());
  if (!gmacs.ok()) return gmacs.status();
  config_.mutable_decision()->set_gmacs_per_slice(*gmacs);
  try {
    (*decision)->To(device_);
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(e.what_without_backtrace());
  }
  (*decision)->SetTraining(false);
  decision_ = *std::move(decision);
  return absl::OkStatus();
}

absl::Status Bank::RebuildDecisionKeepingWeights(const v1::DecisionArch& previous) {
  std::map<std::string, at::Tensor> trained;
  for (const auto& [name, tensor] : decision_->NamedState()) {
    trained.emplace(name, tensor.detach().clone());
  }
  std::unique_ptr<Network> old = std::move(decision_);
  const double old_gmacs = config_.decision().gmacs_per_slice();
  // On failure the trained network stays, and the config describes it again.
  const auto keep_old = [&] {
    decision_ = std::move(old);
    *config_.mutable_decision()->mutable_arch() = previous;
    config_.mutable_decision()->set_gmacs_per_slice(old_gmacs);
  };
  if (absl::Status s = ReinitializeDecision(); !s.ok()) {
    keep_old();
    return s;
  }
  absl::Status s;
  try {
    s = GrowDecisionState(previous, config_.decision().arch(), *decision_, trained);
    if (s.ok()) s = AssignState(*decision_, std::move(trained), "the trained decision network");
  } catch (const c10::Error& e) {
    s = absl::InvalidArgumentError(e.what_without_backtrace());
  }
  if (s.ok()) return s;
  keep_old();
  return absl::FailedPreconditionError(
      absl::StrCat("the decision network's new architecture changes its weights (", s.message(),
                   "): train it again instead of fine-tuning it"));
}

absl::Status Bank::CheckDecisionGrowth(const v1::DecisionArch& previous,
                                       const v1::DecisionArch& grown) {
  if (previous.global_max_pool() && !grown.global_max_pool()) {
    return absl::FailedPreconditionError(
        "the new architecture drops the head's maximum (global_max_pool), which the trained "
        "network reads");
  }
  if (previous.tumour_head() && !grown.tumour_head()) {
    return absl::FailedPreconditionError(
        "the new architecture drops the tumour map (tumour_head), which the trained network "
        "reads");
  }
  if (previous.tumour_head() && previous.tumour_head_stage() != grown.tumour_head_stage()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the new architecture moves the trained tumour map from tumour_head_stage ",
                     previous.tumour_head_stage(), " to ", grown.tumour_head_stage()));
  }
  return absl::OkStatus();
}

std::optional<int> Bank::FindModel(const std::string& id) const {
  for (int i = 0; i < config_.models_size(); ++i) {
    if (config_.models(i).id() == id) return i;
  }
  return std::nullopt;
}

}  // namespace danet::models
