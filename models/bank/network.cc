#include "models/bank/network.h"

#include <torch/script.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <map>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/bank/device.h"
#include "models/bundle/bundle_config.h"
#include "models/nn/decision_net.h"
#include "models/nn/ops.h"
#include "models/nn/transbts.h"
#include "models/nn/unet.h"

namespace danet::models {
namespace {

// A native LibTorch module behind the Network interface.
template <typename Holder>
class ModuleNetwork final : public Network {
 public:
  ModuleNetwork(Holder module, std::string description)
      : module_(std::move(module)), description_(std::move(description)) {}

  at::Tensor Forward(const at::Tensor& x) override {
    return InOwnPrecision(x, [this](const at::Tensor& in) { return module_->forward(in); });
  }
  std::pair<at::Tensor, at::Tensor> ForwardWithTumourMap(const at::Tensor& x) override {
    if constexpr (std::is_same_v<Holder, DecisionNet>) {
      return module_->ForwardWithTumourMap(x);
    } else {
      return {Forward(x), at::Tensor()};
    }
  }
  // The bank's networks; the decision network is never run on a window.
  bool SupportsWindow() const override {
    return std::is_same_v<Holder, UNet> || std::is_same_v<Holder, TransBTS>;
  }
  at::Tensor ForwardWindow(const at::Tensor& x, const SliceWindow& w) override {
    if constexpr (std::is_same_v<Holder, TransBTS>) {
      return InOwnPrecision(x, [&](const at::Tensor& in) {
        return module_->forward_window(in, w.full_height, w.full_width, w.top, w.left);
      });
    } else {
      return Forward(x);  // translation-equivariant: the window changes nothing
    }
  }
  void FoldBatchNorm() override {
    module_->FoldBatchNorm();
    folded_ = true;
  }
  bool BatchNormFolded() const override { return folded_; }
  absl::Status QuantizeLinear() override {
    if constexpr (std::is_same_v<Holder, TransBTS>) {
      if (!ops::SelectInt8Engine()) {
        return absl::FailedPreconditionError(
            "int8 Linear layers need LibTorch's FBGEMM or oneDNN quantized engine");
      }
      if (bfloat16_) {
        return absl::FailedPreconditionError("int8 Linear layers and bfloat16 do not combine");
      }
      try {
        module_->QuantizeLinear();
      } catch (const c10::Error& e) {
        return TorchErrorStatus(e, "cannot quantize the Linear layers");
      }
      quantized_ = true;
    }
    return absl::OkStatus();
  }
  absl::Status ComputeInBFloat16() override {
    if (quantized_) {
      return absl::FailedPreconditionError("int8 Linear layers and bfloat16 do not combine");
    }
    try {
      module_->to(torch::kBFloat16);
    } catch (const c10::Error& e) {
      return TorchErrorStatus(e, "cannot convert the weights to bfloat16");
    }
    bfloat16_ = true;
    return absl::OkStatus();
  }
  void SetTraining(bool training) override { module_->train(training); }
  void To(c10::Device device) override { module_->to(device); }
  std::vector<at::Tensor> Parameters() override { return module_->parameters(); }
  std::vector<std::pair<std::string, at::Tensor>> NamedState() override {
    std::vector<std::pair<std::string, at::Tensor>> state;
    for (const auto& item : module_->named_parameters())
      state.emplace_back(item.key(), item.value());
    for (const auto& item : module_->named_buffers()) state.emplace_back(item.key(), item.value());
    return state;
  }
  std::string Describe() const override { return description_; }

 private:
  // run(x) in the network's precision: in bfloat16 (ComputeInBFloat16) the input is converted on
  // entry and the output returned as float32; otherwise run(x) as it is.
  template <typename Run>
  at::Tensor InOwnPrecision(const at::Tensor& x, const Run& run) {
    if (!bfloat16_) return run(x);
    return run(x.to(torch::kBFloat16)).to(torch::kFloat32);
  }

  Holder module_;
  std::string description_;
  bool folded_ = false;
  bool quantized_ = false;
  bool bfloat16_ = false;
};

// A TorchScript module behind the Network interface.
class ScriptNetwork final : public Network {
 public:
  ScriptNetwork(torch::jit::Module module, std::string description)
      : module_(std::move(module)), description_(std::move(description)) {}

  at::Tensor Forward(const at::Tensor& x) override { return module_.forward({x}).toTensor(); }
  void SetTraining(bool training) override { module_.train(training); }
  void To(c10::Device device) override { module_.to(device); }
  std::vector<at::Tensor> Parameters() override {
    std::vector<at::Tensor> params;
    for (const auto& p : module_.parameters()) params.push_back(p);
    return params;
  }
  std::vector<std::pair<std::string, at::Tensor>> NamedState() override { return {}; }
  std::string Describe() const override { return description_; }

 private:
  torch::jit::Module module_;
  std::string description_;
};

std::unique_ptr<Network> BuildUNet(const v1::UNetArch& given) {
  const v1::UNetArch arch = WithDefaults(given);
  UNetOptions options(arch.base_width());
  options.in_channels(arch.in_channels()).num_classes(arch.num_classes());
  return std::make_unique<ModuleNetwork<UNet>>(
      UNet(options), absl::StrCat("unet(base_width=", arch.base_width(), ")"));
}

std::unique_ptr<Network> BuildTransBTS(const v1::TransBTSArch& given) {
  const v1::TransBTSArch arch = WithDefaults(given);
  TransBTSOptions options(arch.num_layers());
  options.base_width(arch.base_width())
      .embed_dim(arch.embed_dim())
      .num_heads(arch.num_heads())
      .mlp_dim(arch.mlp_dim())
      .image_size(arch.image_size())
      .in_channels(arch.in_channels())
      .num_classes(arch.num_classes());
  std::string description =
      absl::StrCat("transbts(layers=", options.num_layers(), ", base_width=", options.base_width(),
                   ", embed=", options.embed_dim(), ", heads=", options.num_heads(),
                   ", mlp=", options.mlp_dim(), ")");
  return std::make_unique<ModuleNetwork<TransBTS>>(TransBTS(options), std::move(description));
}

absl::StatusOr<std::unique_ptr<Network>> LoadScript(const v1::TorchScriptArch& arch,
                                                    const std::filesystem::path& bundle_dir) {
  const std::filesystem::path file = bundle_dir / arch.file();
  try {
    torch::jit::Module module = torch::jit::load(file.string(), torch::kCPU);
    module.eval();
    return std::make_unique<ScriptNetwork>(std::move(module),
                                           absl::StrCat("torchscript(", arch.file(), ")"));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("TorchScript file ", file.string(),
                                                   " does not load: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::vector<char>> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weight file ", path.string()));
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The tumour head in a decision network's description: "" without one.
std::string TumourHeadText(const DecisionNetOptions& options) {
  if (!options.tumour_head()) return "";
  if (options.tumour_head_stage() == 0) return ", tumour head";
  return absl::StrCat(", tumour head at stage ", options.tumour_head_stage());
}

}  // namespace

int64_t Network::NumParameters() {
  int64_t total = 0;
  for (const at::Tensor& p : Parameters()) total += p.numel();
  return total;
}

absl::StatusOr<std::unique_ptr<Network>> BuildBankNetwork(const v1::BankModel& model,
                                                          const std::filesystem::path& bundle_dir) {
  try {
    switch (model.arch_case()) {
      case v1::BankModel::kUnet:
        return BuildUNet(model.unet());
      case v1::BankModel::kTransbts:
        return BuildTransBTS(model.transbts());
      case v1::BankModel::kTorchscript:
        return LoadScript(model.torchscript(), bundle_dir);
      case v1::BankModel::ARCH_NOT_SET:
        break;
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", model.id(), ": ", e.what_without_backtrace()));
  }
  return absl::InvalidArgumentError(absl::StrCat("model ", model.id(), ": no architecture"));
}

absl::StatusOr<std::unique_ptr<Network>> BuildDecisionNetwork(const v1::DecisionArch& given,
                                                              int64_t num_routes) {
  const v1::DecisionArch arch = WithDefaults(given);
  DecisionNetOptions options(num_routes);
  options.stage_repeats({arch.stage_repeats().begin(), arch.stage_repeats().end()})
      .stage_widths({arch.stage_widths().begin(), arch.stage_widths().end()})
      .head_width(arch.head_width())
      .in_channels(arch.in_channels())
      .global_max_pool(arch.global_max_pool())
      .input_downsample(arch.input_downsample() == 0 ? 1 : arch.input_downsample())
      .tumour_head(arch.tumour_head())
      .tumour_head_stage(arch.tumour_head_stage())
      .stem_pool_stride(arch.stem_pool_stride() == 0 ? 2 : arch.stem_pool_stride());
  std::string description = absl::StrCat(
      "shufflenetv2_m(repeats=[", absl::StrJoin(options.stage_repeats(), ","), "], widths=[",
      absl::StrJoin(options.stage_widths(), ","), "], head=", options.head_width(),
      options.global_max_pool() ? ", avg+max pool" : "",
      options.input_downsample() > 1 ? absl::StrCat(", input /", options.input_downsample()) : "",
      options.stem_pool_stride() == 1 ? ", no stem pool" : "", TumourHeadText(options),
      ", routes=", num_routes, ")");
  try {
    return std::make_unique<ModuleNetwork<DecisionNet>>(DecisionNet(options),
                                                        std::move(description));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("decision network: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<CostReport> CountCost(Network& network, int64_t channels, int64_t height,
                                     int64_t width) {
  network.To(torch::kCPU);
  network.SetTraining(false);
  absl::StatusOr<CostReport> report = CountForwardCost(
      [&network](const at::Tensor& x) { return network.Forward(x); }, channels, height, width);
  if (report.ok()) report->params = network.NumParameters();
  return report;
}

absl::Status SaveWeights(Network& network, const std::filesystem::path& path, WeightDtype dtype) {
  if (network.BatchNormFolded()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot write weight file ", path.string(),
        ": the network's BatchNorms were folded for inference, so its weights are not the "
        "trained ones"));
  }
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, tensor] : network.NamedState()) {
    at::Tensor stored = tensor.detach().to(torch::kCPU).contiguous();
    if (dtype == WeightDtype::kFloat16 && stored.is_floating_point()) {
      stored = stored.to(torch::kHalf);
    }
    dict.insert(name, stored);
  }
  try {
    const std::vector<char> bytes = torch::pickle_save(dict);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      return absl::InternalError(absl::StrCat("cannot write weight file ", path.string()));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("cannot serialise weights to ", path.string(), ": ",
                                            e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(Network& network, const std::filesystem::path& path) {
  absl::StatusOr<std::vector<char>> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  std::map<std::string, at::Tensor> stored;
  try {
    const c10::IValue value = torch::pickle_load(*bytes);
    if (!value.isGenericDict()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight file ", path.string(), " does not hold a dict of tensors"));
    }
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) {
        return absl::InvalidArgumentError(
            absl::StrCat("weight file ", path.string(), " holds a non-tensor entry"));
      }
      stored.emplace(entry.key().toStringRef(), entry.value().toTensor());
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight file ", path.string(), " is not readable: ", e.what_without_backtrace()));
  }
  return AssignState(network, std::move(stored), absl::StrCat("weight file ", path.string()));
}

absl::Status AssignState(Network& network, std::map<std::string, at::Tensor> stored,
                         const std::string& source) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> state = network.NamedState();
  for (auto& [name, tensor] : state) {
    auto it = stored.find(name);
    if (it == stored.end()) {
      return absl::InvalidArgumentError(absl::StrCat(source, " lacks tensor '", name, "'"));
    }
    if (it->second.sizes() != tensor.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensor '", name, "' has shape [", absl::StrJoin(it->second.sizes(), ","),
          "], the network expects [", absl::StrJoin(tensor.sizes(), ","), "]"));
    }
    tensor.copy_(it->second);
    stored.erase(it);
  }
  if (!stored.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " has unexpected tensor '", stored.begin()->first, "'"));
  }
  return absl::OkStatus();
}

}  // namespace danet::models
