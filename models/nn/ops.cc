#include "models/nn/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/torch.h>
#include <torch/utils.h>

#include <algorithm>
#include <vector>

#include "models/cost/cost.h"

namespace danet::models::ops {
namespace {

double Numel(const torch::Tensor& t) { return static_cast<double>(t.numel()); }

// Whether an op may write into `t`: autograd is off (nothing keeps t for a backward pass) and no
// other tensor or view shares its buffer, so no one else sees the change.
bool Reusable(const torch::Tensor& t) {
  return !torch::GradMode::is_enabled() && t.use_count() == 1 && t.has_storage() &&
         t.storage().use_count() == 1 && (!t.is_inference() || c10::InferenceMode::is_enabled());
}

}  // namespace

torch::Tensor Conv(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  torch::Tensor y = conv->forward(x);
  if (CostRecordingActive()) {
    const auto& o = conv->options;
    const auto& k = o.kernel_size();
    const double per_output =
        static_cast<double>(o.in_channels() / o.groups()) * k->at(0) * k->at(1);
    RecordCost(OpKind::kConv, Numel(y) * (per_output + (o.bias() ? 1 : 0)));
  }
  return y;
}

torch::Tensor ConvTranspose(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x) {
  torch::Tensor y;
  if (x.scalar_type() == torch::kBFloat16 && x.device().is_cpu()) {
    const auto& o = conv->options;
    namespace F = torch::nn::functional;
    auto options = F::ConvTranspose2dFuncOptions()
                       .stride(o.stride())
                       .padding(c10::get<torch::ExpandingArray<2>>(o.padding()))
                       .output_padding(o.output_padding())
                       .groups(o.groups())
                       .dilation(o.dilation());
    if (conv->bias.defined()) options.bias(conv->bias.to(torch::kFloat32));
    y = F::conv_transpose2d(x.to(torch::kFloat32), conv->weight.to(torch::kFloat32), options)
            .to(torch::kBFloat16);
  } else {
    y = conv->forward(x);
  }
  if (CostRecordingActive()) {
    const auto& o = conv->options;
    const auto& k = o.kernel_size();
    const double per_input =
        static_cast<double>(o.out_channels() / o.groups()) * k->at(0) * k->at(1);
    RecordCost(OpKind::kTransposedConv, Numel(x) * per_input + (o.bias() ? Numel(y) : 0.0));
  }
  return y;
}

torch::Tensor Linear(torch::nn::Linear& linear, const torch::Tensor& x) {
  return Linear(linear, Int8Weights(), x);
}

torch::Tensor Linear(torch::nn::Linear& linear, const Int8Weights& int8, const torch::Tensor& x) {
  torch::Tensor y = int8 ? int8->apply_dynamic(x, /*reduce_range=*/false) : linear->forward(x);
  if (CostRecordingActive()) {
    const auto& o = linear->options;
    RecordCost(OpKind::kLinear, Numel(y) * (o.in_features() + (o.bias() ? 1 : 0)));
  }
  return y;
}

Int8Weights PackInt8(torch::nn::Linear& linear) {
  TORCH_CHECK(SelectInt8Engine(), "this LibTorch has no quantized engine (FBGEMM or oneDNN)");
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = linear->weight.detach().to(torch::kCPU, torch::kFloat32);
  // Symmetric per output feature: the largest magnitude maps to 127.
  const torch::Tensor scales = (weight.abs().amax(1) / 127.0).clamp_min(1e-12).to(torch::kDouble);
  const torch::Tensor quantized = torch::quantize_per_channel(
      weight, scales, torch::zeros({weight.size(0)}, torch::kLong), 0, torch::kQInt8);
  c10::optional<torch::Tensor> bias;
  if (linear->bias.defined()) bias = linear->bias.detach().to(torch::kCPU, torch::kFloat32);
  static const auto prepack =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("quantized::linear_prepack", "")
          .typed<Int8Weights(torch::Tensor, c10::optional<torch::Tensor>)>();
  return prepack.call(quantized, bias);
}

bool SelectInt8Engine() {
  auto& context = at::globalContext();
  const std::vector<at::QEngine>& engines = context.supportedQEngines();
  for (const at::QEngine engine : {at::QEngine::FBGEMM, at::QEngine::ONEDNN}) {
    if (std::find(engines.begin(), engines.end(), engine) != engines.end()) {
      if (context.qEngine() != engine) context.setQEngine(engine);
      return true;
    }
  }
  return false;
}

torch::Tensor BatchNorm(torch::nn::BatchNorm2d& norm, const torch::Tensor& x) {
  torch::Tensor y = norm->forward(x);
  RecordCost(OpKind::kNorm, Numel(y) * (norm->options.affine() ? 2 : 1));
  return y;
}

torch::Tensor ConvBn(torch::nn::Conv2d& conv, torch::nn::BatchNorm2d& norm,
                     const torch::Tensor& x) {
  torch::Tensor y = Conv(conv, x);
  return norm ? BatchNorm(norm, y) : y;
}

void FoldBatchNorm(torch::nn::Conv2d& conv, torch::nn::BatchNorm2d& norm) {
  if (!norm) return;
  TORCH_CHECK(norm->options.affine() && norm->options.track_running_stats(),
              "FoldBatchNorm needs an affine BatchNorm with running statistics");
  torch::NoGradGuard no_grad;
  const torch::Tensor scale = norm->weight / torch::sqrt(norm->running_var + norm->options.eps());
  const torch::Tensor shift = norm->bias - norm->running_mean * scale;
  conv->weight.mul_(scale.reshape({-1, 1, 1, 1}));
  if (conv->bias.defined()) {
    conv->bias.mul_(scale).add_(shift);
  } else {
    // Registered so that moving the module moves it; the member is what forward reads.
    conv->bias = conv->register_buffer("folded_bias", shift.clone());
  }
  norm = nullptr;
}

torch::Tensor LayerNorm(torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  torch::Tensor y = norm->forward(x);
  RecordCost(OpKind::kNorm, Numel(y) * (norm->options.elementwise_affine() ? 2 : 1));
  return y;
}

torch::Tensor Relu(torch::Tensor x) {
  RecordCost(OpKind::kActivation, Numel(x));
  return Reusable(x) ? x.relu_() : torch::relu(x);
}

torch::Tensor Gelu(const torch::Tensor& x) {
  RecordCost(OpKind::kActivation, Numel(x));
  return torch::gelu(x);
}

torch::Tensor Softmax(const torch::Tensor& x, int64_t dim) {
  RecordCost(OpKind::kActivation, Numel(x));
  return torch::softmax(x, dim);
}

torch::Tensor Add(torch::Tensor a, const torch::Tensor& b) {
  const bool in_place = Reusable(a) && a.sizes() == b.sizes() && a.dtype() == b.dtype();
  torch::Tensor y = in_place ? a.add_(b) : a + b;
  RecordCost(OpKind::kElementwise, Numel(y));
  return y;
}

torch::Tensor MaxPool(const torch::Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  RecordCost(OpKind::kPool, Numel(x));
  return torch::max_pool2d(x, {kernel, kernel}, {stride, stride}, {padding, padding});
}

torch::Tensor AvgPool(const torch::Tensor& x, int64_t k) {
  RecordCost(OpKind::kPool, Numel(x));
  return torch::avg_pool2d(x, {k, k}, {k, k});
}

torch::Tensor GlobalAvgPool(const torch::Tensor& x) {
  RecordCost(OpKind::kPool, Numel(x));
  return x.mean({2, 3});
}

torch::Tensor GlobalMaxPool(const torch::Tensor& x) {
  RecordCost(OpKind::kPool, Numel(x));
  return x.amax({2, 3});
}

torch::Tensor AttentionMatmul(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor y = torch::matmul(a, b);
  RecordCost(OpKind::kAttention, Numel(y) * static_cast<double>(a.size(-1)));
  return y;
}

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride, bool bias) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(bias));
}

torch::nn::Conv2d Conv1x1(int64_t in, int64_t out, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(bias));
}

}  // namespace danet::models::ops
