#include "models/nn/transbts.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/nn/init.h>

#include <cmath>

#include "models/nn/ops.h"

namespace danet::models {

SelfAttentionImpl::SelfAttentionImpl(int64_t dim, int64_t heads, double dropout)
    : heads_(heads),
      qkv_(register_module("qkv",
                           torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(false)))),
      proj_(register_module("proj", torch::nn::Linear(dim, dim))),
      attn_drop_(register_module("attn_drop", torch::nn::Dropout(dropout))),
      proj_drop_(register_module("proj_drop", torch::nn::Dropout(dropout))) {
  TORCH_CHECK(dim % heads == 0, "embedding width ", dim, " is not divisible by ", heads, " heads");
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), t = x.size(1), d = x.size(2), head_dim = d / heads_;
  // N x T x 3D -> 3 x N x heads x T x head_dim
  const torch::Tensor qkv =
      ops::Linear(qkv_, qkv_int8_, x).reshape({n, t, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
  const torch::Tensor q = qkv[0] * (1.0 / std::sqrt(static_cast<double>(head_dim)));
  torch::Tensor attn = ops::Softmax(ops::AttentionMatmul(q, qkv[1].transpose(-2, -1)), -1);
  attn = attn_drop_(attn);
  const torch::Tensor mixed = ops::AttentionMatmul(attn, qkv[2]).transpose(1, 2).reshape({n, t, d});
  return proj_drop_(ops::Linear(proj_, proj_int8_, mixed));
}

void SelfAttentionImpl::QuantizeLinear() {
  qkv_int8_ = ops::PackInt8(qkv_);
  proj_int8_ = ops::PackInt8(proj_);
}

TransformerLayerImpl::TransformerLayerImpl(int64_t dim, int64_t heads, int64_t mlp_dim,
                                           double dropout)
    : norm1_(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
      norm2_(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
      attention_(register_module("attention", SelfAttention(dim, heads, dropout))),
      fc1_(register_module("fc1", torch::nn::Linear(dim, mlp_dim))),
      fc2_(register_module("fc2", torch::nn::Linear(mlp_dim, dim))),
      drop_(register_module("drop", torch::nn::Dropout(dropout))) {}

torch::Tensor TransformerLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = ops::Add(x, attention_(ops::LayerNorm(norm1_, x)));
  torch::Tensor hidden = drop_(ops::Gelu(ops::Linear(fc1_, fc1_int8_, ops::LayerNorm(norm2_, y))));
  return ops::Add(y, drop_(ops::Linear(fc2_, fc2_int8_, hidden)));
}

void TransformerLayerImpl::QuantizeLinear() {
  attention_->QuantizeLinear();
  fc1_int8_ = ops::PackInt8(fc1_);
  fc2_int8_ = ops::PackInt8(fc2_);
}

TransBTSImpl::TransBTSImpl(const TransBTSOptions& options)
    : options(options),
      encoder_(
          register_module("encoder", UNetEncoder(options.in_channels(), options.base_width()))),
      pre_norm_(register_module("pre_norm", torch::nn::BatchNorm2d(8 * options.base_width()))),
      to_tokens_(register_module("to_tokens",
                                 ops::Conv3x3(8 * options.base_width(), options.embed_dim()))),
      embed_drop_(register_module("embed_drop", torch::nn::Dropout(options.dropout()))),
      layers_(register_module("layers", torch::nn::ModuleList())),
      final_norm_(register_module(
          "final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.embed_dim()})))),
      from_tokens_(register_module("from_tokens",
                                   ops::Conv3x3(options.embed_dim(), 8 * options.base_width()))),
      from_tokens_norm_(
          register_module("from_tokens_norm", torch::nn::BatchNorm2d(8 * options.base_width()))),
      bottleneck_block_(register_module("bottleneck_block", ResBlock(8 * options.base_width()))),
      decoder_(
          register_module("decoder", UNetDecoder(options.base_width(), options.num_classes()))) {
  TORCH_CHECK(options.image_size() % 8 == 0, "image_size must be a multiple of 8");
  const int64_t grid = options.image_size() / 8;
  position_ = register_parameter("position", torch::zeros({1, grid * grid, options.embed_dim()}));
  torch::nn::init::normal_(position_, 0.0, 0.02);
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    layers_->push_back(TransformerLayer(options.embed_dim(), options.num_heads(), options.mlp_dim(),
                                        options.dropout()));
  }
}

torch::Tensor TransBTSImpl::PositionalEmbedding(int64_t grid_h, int64_t grid_w) const {
  const int64_t grid = options.image_size() / 8;
  if (grid_h == grid && grid_w == grid) return position_;
  const int64_t d = options.embed_dim();
  torch::Tensor square = position_.reshape({1, grid, grid, d}).permute({0, 3, 1, 2});
  torch::Tensor resized =
      torch::nn::functional::interpolate(square, torch::nn::functional::InterpolateFuncOptions()
                                                     .size(std::vector<int64_t>{grid_h, grid_w})
                                                     .mode(torch::kBilinear)
                                                     .align_corners(false));
  return resized.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, d});
}

torch::Tensor TransBTSImpl::forward(const torch::Tensor& x) {
  return Forward(x, [this](int64_t gh, int64_t gw) { return PositionalEmbedding(gh, gw); });
}

torch::Tensor TransBTSImpl::forward_window(const torch::Tensor& x, int64_t full_height,
                                           int64_t full_width, int64_t top, int64_t left) {
  TORCH_CHECK(full_height % 8 == 0 && full_width % 8 == 0 && top % 8 == 0 && left % 8 == 0,
              "a window's slice size and origin must be multiples of 8");
  TORCH_CHECK(top + x.size(2) <= full_height && left + x.size(3) <= full_width, "the window ",
              x.size(2), "x", x.size(3), " at (", top, ", ", left, ") leaves the slice ",
              full_height, "x", full_width);
  return Forward(x, [&](int64_t gh, int64_t gw) {
    const int64_t d = options.embed_dim(), full_gh = full_height / 8, full_gw = full_width / 8;
    return PositionalEmbedding(full_gh, full_gw)
        .reshape({1, full_gh, full_gw, d})
        .slice(1, top / 8, top / 8 + gh)
        .slice(2, left / 8, left / 8 + gw)
        .reshape({1, gh * gw, d});
  });
}

torch::Tensor TransBTSImpl::Forward(
    const torch::Tensor& x,
    const std::function<torch::Tensor(int64_t grid_h, int64_t grid_w)>& position) {
  const EncoderFeatures features = encoder_(x);
  torch::Tensor y = ops::Conv(to_tokens_, ops::Relu(ops::BatchNorm(pre_norm_, features.bottom)));
  const int64_t n = y.size(0), d = y.size(1), gh = y.size(2), gw = y.size(3);
  torch::Tensor tokens = y.flatten(2).transpose(1, 2);  // N x T x D
  tokens = embed_drop_(ops::Add(tokens, position(gh, gw)));
  for (const auto& layer : *layers_) tokens = layer->as<TransformerLayerImpl>()->forward(tokens);
  tokens = ops::LayerNorm(final_norm_, tokens);
  y = tokens.transpose(1, 2).reshape({n, d, gh, gw});
  y = ops::Relu(ops::ConvBn(from_tokens_, from_tokens_norm_, y));
  return decoder_(bottleneck_block_(y), features);
}

void TransBTSImpl::QuantizeLinear() {
  for (const auto& layer : *layers_) layer->as<TransformerLayerImpl>()->QuantizeLinear();
}

void TransBTSImpl::FoldBatchNorm() {
  encoder_->FoldBatchNorm();
  ops::FoldBatchNorm(from_tokens_, from_tokens_norm_);
  bottleneck_block_->FoldBatchNorm();
  decoder_->FoldBatchNorm();
}

}  // namespace danet::models
