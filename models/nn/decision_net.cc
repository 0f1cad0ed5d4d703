#include "models/nn/decision_net.h"

#include "models/nn/ops.h"

namespace danet::models {
namespace {

torch::nn::Conv2d Depthwise3x3(int64_t channels, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3)
                               .stride(stride)
                               .padding(1)
                               .groups(channels)
                               .bias(false));
}

}  // namespace

ShuffleUnitImpl::ShuffleUnitImpl(int64_t in_channels, int64_t out_channels, int64_t stride)
    : stride_(stride) {
  TORCH_CHECK(stride == 1 || stride == 2, "ShuffleNetV2 unit stride must be 1 or 2");
  TORCH_CHECK(stride == 2 || in_channels == out_channels,
              "a stride-1 ShuffleNetV2 unit keeps its width");
  const int64_t mid = out_channels / 2;
  // Stride 1: the main branch sees half the input and makes half the output. Stride 2: it sees
  // all of it and makes what the projection branch (in_channels wide) leaves.
  const int64_t main_in = stride == 1 ? in_channels / 2 : in_channels;
  const int64_t main_out = stride == 1 ? out_channels / 2 : out_channels - in_channels;
  main_pw1_ = register_module("main_pw1", ops::Conv1x1(main_in, mid, /*bias=*/false));
  main_bn1_ = register_module("main_bn1", torch::nn::BatchNorm2d(mid));
  main_dw_ = register_module("main_dw", Depthwise3x3(mid, stride));
  main_bn2_ = register_module("main_bn2", torch::nn::BatchNorm2d(mid));
  main_pw2_ = register_module("main_pw2", ops::Conv1x1(mid, main_out, /*bias=*/false));
  main_bn3_ = register_module("main_bn3", torch::nn::BatchNorm2d(main_out));
  if (stride == 2) {
    proj_dw_ = register_module("proj_dw", Depthwise3x3(in_channels, 2));
    proj_bn1_ = register_module("proj_bn1", torch::nn::BatchNorm2d(in_channels));
    proj_pw_ = register_module("proj_pw", ops::Conv1x1(in_channels, in_channels, false));
    proj_bn2_ = register_module("proj_bn2", torch::nn::BatchNorm2d(in_channels));
  }
}

torch::Tensor ShuffleUnitImpl::Main(const torch::Tensor& x) {
  torch::Tensor y = ops::Relu(ops::ConvBn(main_pw1_, main_bn1_, x));
  y = ops::ConvBn(main_dw_, main_bn2_, y);
  return ops::Relu(ops::ConvBn(main_pw2_, main_bn3_, y));
}

torch::Tensor ShuffleUnitImpl::Projection(const torch::Tensor& x) {
  torch::Tensor y = ops::ConvBn(proj_dw_, proj_bn1_, x);
  return ops::Relu(ops::ConvBn(proj_pw_, proj_bn2_, y));
}

void ShuffleUnitImpl::FoldBatchNorm() {
  ops::FoldBatchNorm(main_pw1_, main_bn1_);
  ops::FoldBatchNorm(main_dw_, main_bn2_);
  ops::FoldBatchNorm(main_pw2_, main_bn3_);
  if (stride_ == 2) {
    ops::FoldBatchNorm(proj_dw_, proj_bn1_);
    ops::FoldBatchNorm(proj_pw_, proj_bn2_);
  }
}

torch::Tensor ShuffleUnitImpl::forward(const torch::Tensor& x) {
  if (stride_ == 2) return torch::cat({Projection(x), Main(x)}, 1);
  // Channel shuffle as in the Megvii reference: even channels pass, odd ones are transformed.
  const torch::Tensor pairs = x.reshape({x.size(0), x.size(1) / 2, 2, x.size(2), x.size(3)});
  return torch::cat({pairs.select(2, 0), Main(pairs.select(2, 1))}, 1);
}

DecisionNetImpl::DecisionNetImpl(const DecisionNetOptions& options) : options(options) {
  const auto& widths = options.stage_widths();
  const auto& repeats = options.stage_repeats();
  TORCH_CHECK(widths.size() == repeats.size() + 1,
              "decision network needs one width for the stem plus one per stage");
  TORCH_CHECK(options.input_downsample() == 1 || options.input_downsample() == 2 ||
                  options.input_downsample() == 4,
              "decision network input_downsample must be 1, 2 or 4, not ",
              options.input_downsample());
  TORCH_CHECK(options.stem_pool_stride() == 1 || options.stem_pool_stride() == 2,
              "decision network stem_pool_stride must be 1 (no pool) or 2, not ",
              options.stem_pool_stride());
  stem_ = register_module("stem", ops::Conv3x3(options.in_channels(), widths[0], 2, false));
  stem_bn_ = register_module("stem_bn", torch::nn::BatchNorm2d(widths[0]));
  units_ = register_module("units", torch::nn::ModuleList());
  for (size_t stage = 0; stage < repeats.size(); ++stage) {
    for (int64_t i = 0; i < repeats[stage]; ++i) {
      const int64_t in = i == 0 ? widths[stage] : widths[stage + 1];
      units_->push_back(ShuffleUnit(in, widths[stage + 1], i == 0 ? 2 : 1));
    }
  }
  head_ = register_module("head", ops::Conv1x1(widths.back(), options.head_width(), false));
  head_bn_ = register_module("head_bn", torch::nn::BatchNorm2d(options.head_width()));
  TORCH_CHECK(options.tumour_head_stage() >= 0 &&
                  options.tumour_head_stage() <= static_cast<int64_t>(repeats.size()),
              "decision network tumour_head_stage must be 0 (the head) or a stage 1..",
              repeats.size(), ", not ", options.tumour_head_stage());
  if (options.tumour_head()) {
    const int64_t stage = options.tumour_head_stage();
    tumour_ = register_module(
        "tumour", ops::Conv1x1(stage == 0 ? options.head_width() : widths[stage], 1, true));
    if (stage > 0) {
      tap_after_ = 0;
      for (int64_t s = 0; s < stage; ++s) tap_after_ += repeats[s];
    }
  }
  const int64_t features =
      options.head_width() * (options.global_max_pool() ? 2 : 1) + (options.tumour_head() ? 1 : 0);
  classifier_ = register_module(
      "classifier",
      torch::nn::Linear(torch::nn::LinearOptions(features, options.num_routes()).bias(false)));
}

torch::Tensor DecisionNetImpl::forward(const torch::Tensor& x) {
  return ForwardWithTumourMap(x).first;
}

std::pair<torch::Tensor, torch::Tensor> DecisionNetImpl::ForwardWithTumourMap(
    const torch::Tensor& x) {
  const int64_t k = options.input_downsample();
  torch::Tensor y = ops::Relu(ops::ConvBn(stem_, stem_bn_, k > 1 ? ops::AvgPool(x, k) : x));
  if (options.stem_pool_stride() > 1) y = ops::MaxPool(y, 3, options.stem_pool_stride(), 1);
  torch::Tensor tapped;  // a stage's output, for a tumour head that reads there
  int64_t done = 0;
  for (const auto& unit : *units_) {
    y = unit->as<ShuffleUnitImpl>()->forward(y);
    if (++done == tap_after_) tapped = y;
  }
  y = ops::Relu(ops::ConvBn(head_, head_bn_, y));
  if (!options.global_max_pool() && !options.tumour_head()) {
    return {ops::Linear(classifier_, ops::GlobalAvgPool(y)), torch::Tensor()};
  }
  std::vector<torch::Tensor> pooled{ops::GlobalAvgPool(y)};
  if (options.global_max_pool()) pooled.push_back(ops::GlobalMaxPool(y));
  torch::Tensor map;
  if (options.tumour_head()) {
    map = ops::Conv(tumour_, tapped.defined() ? tapped : y);
    pooled.push_back(ops::GlobalMaxPool(map));
  }
  return {ops::Linear(classifier_, torch::cat(pooled, 1)), map};
}

void DecisionNetImpl::FoldBatchNorm() {
  ops::FoldBatchNorm(stem_, stem_bn_);
  for (const auto& unit : *units_) unit->as<ShuffleUnitImpl>()->FoldBatchNorm();
  ops::FoldBatchNorm(head_, head_bn_);
}

}  // namespace danet::models
