// Building blocks shared by the modified 2D UNet and 2D TransBTS: the pre-activation residual
// block, the decoder up-step, and the UNet encoder / decoder halves.
#ifndef DANET_MODELS_NN_BLOCKS_H_
#define DANET_MODELS_NN_BLOCKS_H_

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace danet::models {

// Pre-activation residual block: BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3, plus input.
class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  // Inference only (see ops::FoldBatchNorm): bn2 into conv1. bn1 sees the residual sum and
  // stays.
  void FoldBatchNorm();

 private:
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
};
TORCH_MODULE(ResBlock);

// Decoder up-step: 1x1 conv in->out, 2x2 transposed conv stride 2, concatenation with the
// skip (skip first), 1x1 conv 2*out->out.
class UpCatImpl : public torch::nn::Module {
 public:
  UpCatImpl(int64_t in_channels, int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& skip);

 private:
  torch::nn::Conv2d reduce_{nullptr}, fuse_{nullptr};
  torch::nn::ConvTranspose2d up_{nullptr};
};
TORCH_MODULE(UpCat);

// Encoder outputs: skips at full, 1/2 and 1/4 resolution and the 1/8 bottom.
struct EncoderFeatures {
  torch::Tensor skip1, skip2, skip3, bottom;
};

// UNet encoder: 3x3 conv in->b, then levels of 1, 2, 2, 4 residual blocks at widths b, 2b,
// 4b, 8b with stride-2 3x3 convs between them (skips taken before each down-sampling).
class UNetEncoderImpl : public torch::nn::Module {
 public:
  UNetEncoderImpl(int64_t in_channels, int64_t base_width);
  EncoderFeatures forward(const torch::Tensor& x);
  void FoldBatchNorm();  // each residual block's

 private:
  torch::nn::Conv2d stem_{nullptr};
  torch::nn::ModuleList levels_{nullptr};  // per level: a ModuleList of ResBlock
  torch::nn::ModuleList downs_{nullptr};   // Conv2d, stride 2
};
TORCH_MODULE(UNetEncoder);

// UNet decoder: three up-steps 8b->4b->2b->b, each followed by a residual block, then a 1x1
// conv to the class scores.
class UNetDecoderImpl : public torch::nn::Module {
 public:
  UNetDecoderImpl(int64_t base_width, int64_t num_classes);
  // `bottom` has 8b channels at 1/8 resolution.
  torch::Tensor forward(const torch::Tensor& bottom, const EncoderFeatures& skips);
  void FoldBatchNorm();  // each residual block's

 private:
  UpCat up3_{nullptr}, up2_{nullptr}, up1_{nullptr};
  ResBlock block3_{nullptr}, block2_{nullptr}, block1_{nullptr};
  torch::nn::Conv2d head_{nullptr};
};
TORCH_MODULE(UNetDecoder);

}  // namespace danet::models

#endif  // DANET_MODELS_NN_BLOCKS_H_
