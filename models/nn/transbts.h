// 2D TransBTS (Med-DANet bank models M3 and M4; 1 and 4 transformer layers).
//
// UNet encoder (b = 16: 128 channels at H/8), BN + ReLU, 3x3 conv to the embedding width,
// tokens over the H/8 x W/8 grid plus a learned positional embedding, L pre-norm transformer
// layers, a final LayerNorm, 3x3 conv back to 8b (BN + ReLU), a residual block, and the UNet
// decoder with skips.
#ifndef DANET_MODELS_NN_TRANSBTS_H_
#define DANET_MODELS_NN_TRANSBTS_H_

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <functional>

#include "models/nn/blocks.h"
#include "models/nn/ops.h"

namespace danet::models {

struct TransBTSOptions {
  explicit TransBTSOptions(int64_t num_layers) : num_layers_(num_layers) {}
  TORCH_ARG(int64_t, num_layers);
  TORCH_ARG(int64_t, base_width) = 16;
  TORCH_ARG(int64_t, embed_dim) = 512;
  TORCH_ARG(int64_t, num_heads) = 8;
  TORCH_ARG(int64_t, mlp_dim) = 2048;
  // The positional embedding covers an image_size/8 square grid; other input sizes use a
  // bilinear resize of it (as ViT fine-tuning does), so 128x128 training crops and 240x240
  // inference share one embedding.
  TORCH_ARG(int64_t, image_size) = 240;
  TORCH_ARG(double, dropout) = 0.1;  // active in training only
  TORCH_ARG(int64_t, in_channels) = 4;
  TORCH_ARG(int64_t, num_classes) = 4;
};

// Multi-head self-attention over N x T x D tokens; qkv without bias, output projection.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t dim, int64_t heads, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  void QuantizeLinear();  // see TransBTSImpl::QuantizeLinear

 private:
  int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  ops::Int8Weights qkv_int8_, proj_int8_;
  torch::nn::Dropout attn_drop_{nullptr}, proj_drop_{nullptr};
};
TORCH_MODULE(SelfAttention);

// Pre-norm transformer layer: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU.
class TransformerLayerImpl : public torch::nn::Module {
 public:
  TransformerLayerImpl(int64_t dim, int64_t heads, int64_t mlp_dim, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  void QuantizeLinear();  // see TransBTSImpl::QuantizeLinear

 private:
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  SelfAttention attention_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  ops::Int8Weights fc1_int8_, fc2_int8_;
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(TransformerLayer);

// Input N x in x H x W (H, W multiples of 8); output N x classes x H x W logits.
class TransBTSImpl : public torch::nn::Module {
 public:
  explicit TransBTSImpl(const TransBTSOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  // The same network on a window of a larger slice: x holds rows top.. and columns left.. of a
  // full_height x full_width slice (all multiples of 8). Each token gets the positional
  // embedding it has in the full slice (the full slice's table, cut to the window), not one
  // stretched over the window, so a token means the same place in both.
  torch::Tensor forward_window(const torch::Tensor& x, int64_t full_height, int64_t full_width,
                               int64_t top, int64_t left);

  // Inference only: BatchNorms folded into the convolutions before them (ops::FoldBatchNorm);
  // pre_norm follows the encoder's output through a ReLU and stays.
  void FoldBatchNorm();
  // Inference only, CPU only: the transformer layers' Linear layers run with int8 weights
  // (ops::PackInt8, dynamic quantization). The float weights stay for training and saving.
  void QuantizeLinear();

  TransBTSOptions options;

 private:
  torch::Tensor PositionalEmbedding(int64_t grid_h, int64_t grid_w) const;
  torch::Tensor Forward(
      const torch::Tensor& x,
      const std::function<torch::Tensor(int64_t grid_h, int64_t grid_w)>& position);

  UNetEncoder encoder_{nullptr};
  torch::nn::BatchNorm2d pre_norm_{nullptr};
  torch::nn::Conv2d to_tokens_{nullptr};
  torch::Tensor position_;  // 1 x (g*g) x D, g = image_size / 8
  torch::nn::Dropout embed_drop_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Conv2d from_tokens_{nullptr};
  torch::nn::BatchNorm2d from_tokens_norm_{nullptr};
  ResBlock bottleneck_block_{nullptr};
  UNetDecoder decoder_{nullptr};
};
TORCH_MODULE(TransBTS);

}  // namespace danet::models

#endif  // DANET_MODELS_NN_TRANSBTS_H_
