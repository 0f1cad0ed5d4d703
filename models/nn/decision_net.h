// The decision network D: "ShuffleNetV2-M", a width-reduced Megvii-style ShuffleNetV2 that
// classifies a full 4 x 240 x 240 slice into n+1 routes (0 = skip, i = bank model i).
#ifndef DANET_MODELS_NN_DECISION_NET_H_
#define DANET_MODELS_NN_DECISION_NET_H_

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <utility>
#include <vector>

namespace danet::models {

struct DecisionNetOptions {
  explicit DecisionNetOptions(int64_t num_routes) : num_routes_(num_routes) {}
  TORCH_ARG(int64_t, num_routes);  // n + 1
  TORCH_ARG(std::vector<int64_t>, stage_repeats) = std::vector<int64_t>{4, 8, 4};
  // Stem width followed by one width per stage.
  TORCH_ARG(std::vector<int64_t>, stage_widths) = std::vector<int64_t>{12, 24, 48, 96};
  TORCH_ARG(int64_t, head_width) = 256;
  TORCH_ARG(int64_t, in_channels) = 4;
  // Concatenate the head's global maximum to its global average before the classifier.
  TORCH_ARG(bool, global_max_pool) = false;
  // Average-pool the input by this factor (1: no pooling) before the stem.
  TORCH_ARG(int64_t, input_downsample) = 1;
  // A tumour map (1x1 convolution on the head's features, one logit per cell); its maximum joins
  // the classifier's input. Trained with the slice's tumour mask (ForwardWithTumourMap).
  TORCH_ARG(bool, tumour_head) = false;
  // Where the tumour head reads: 0 the head's features; k >= 1 the output of stage k (stride
  // input_downsample * 2 * stem_pool_stride * 2^k), a finer map.
  TORCH_ARG(int64_t, tumour_head_stage) = 0;
  // Stride of the 3x3 max pool after the stem: 2 (ShuffleNetV2's), or 1 for none (every stage on
  // a twice finer grid, about 2.6x the MACs). No weight depends on it.
  TORCH_ARG(int64_t, stem_pool_stride) = 2;
};

// ShuffleNetV2 unit. Stride 1: the input's channels are shuffled into two halves, one passes
// through, the other goes 1x1 -> depthwise 3x3 -> 1x1; the two are concatenated. Stride 2:
// both branches transform the whole input (the pass-through becomes depthwise 3x3 -> 1x1).
class ShuffleUnitImpl : public torch::nn::Module {
 public:
  ShuffleUnitImpl(int64_t in_channels, int64_t out_channels, int64_t stride);
  torch::Tensor forward(const torch::Tensor& x);
  void FoldBatchNorm();  // every conv's norm (ops::FoldBatchNorm)

 private:
  torch::Tensor Main(const torch::Tensor& x);
  torch::Tensor Projection(const torch::Tensor& x);

  int64_t stride_;
  torch::nn::Conv2d main_pw1_{nullptr}, main_dw_{nullptr}, main_pw2_{nullptr};
  torch::nn::BatchNorm2d main_bn1_{nullptr}, main_bn2_{nullptr}, main_bn3_{nullptr};
  torch::nn::Conv2d proj_dw_{nullptr}, proj_pw_{nullptr};  // stride 2 only
  torch::nn::BatchNorm2d proj_bn1_{nullptr}, proj_bn2_{nullptr};
};
TORCH_MODULE(ShuffleUnit);

// Input N x in x H x W (any size; 240 x 240 is the BraTS slice); output N x num_routes logits.
// Stem, max pool (or none), ShuffleNetV2 stages, 1x1 head, global pooling (average, or average and
// maximum, and with the tumour head the tumour map's maximum), linear classifier.
class DecisionNetImpl : public torch::nn::Module {
 public:
  explicit DecisionNetImpl(const DecisionNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  // The route logits and, with options.tumour_head, the tumour map (N x 1 x h x w logits on the
  // grid of the features it reads: 1/32 of the input's side rounded up for the head's, finer for
  // an earlier stage's); without it, an undefined tensor.
  std::pair<torch::Tensor, torch::Tensor> ForwardWithTumourMap(const torch::Tensor& x);
  // Inference only: every BatchNorm folded into the convolution before it (ops::FoldBatchNorm).
  void FoldBatchNorm();

  DecisionNetOptions options;

 private:
  torch::nn::Conv2d stem_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr};
  torch::nn::ModuleList units_{nullptr};
  torch::nn::Conv2d head_{nullptr};
  torch::nn::BatchNorm2d head_bn_{nullptr};
  torch::nn::Conv2d tumour_{nullptr};  // tumour_head only
  int64_t tap_after_ = -1;  // the tumour head reads the output of this many units (-1: the head)
  torch::nn::Linear classifier_{nullptr};
};
TORCH_MODULE(DecisionNet);

}  // namespace danet::models

#endif  // DANET_MODELS_NN_DECISION_NET_H_
