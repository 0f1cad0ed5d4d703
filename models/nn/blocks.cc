#include "models/nn/blocks.h"

#include <array>

#include "models/nn/ops.h"

namespace danet::models {
namespace {

constexpr std::array<int, 4> kBlocksPerLevel = {1, 2, 2, 4};

}  // namespace

ResBlockImpl::ResBlockImpl(int64_t channels)
    : bn1_(register_module("bn1", torch::nn::BatchNorm2d(channels))),
      bn2_(register_module("bn2", torch::nn::BatchNorm2d(channels))),
      conv1_(register_module("conv1", ops::Conv3x3(channels, channels))),
      conv2_(register_module("conv2", ops::Conv3x3(channels, channels))) {}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = ops::ConvBn(conv1_, bn2_, ops::Relu(ops::BatchNorm(bn1_, x)));
  y = ops::Conv(conv2_, ops::Relu(std::move(y)));
  return ops::Add(std::move(y), x);
}

void ResBlockImpl::FoldBatchNorm() { ops::FoldBatchNorm(conv1_, bn2_); }

UpCatImpl::UpCatImpl(int64_t in_channels, int64_t out_channels)
    : reduce_(register_module("reduce", ops::Conv1x1(in_channels, out_channels))),
      fuse_(register_module("fuse", ops::Conv1x1(2 * out_channels, out_channels))),
      up_(register_module(
          "up", torch::nn::ConvTranspose2d(
                    torch::nn::ConvTranspose2dOptions(out_channels, out_channels, 2).stride(2)))) {}

torch::Tensor UpCatImpl::forward(const torch::Tensor& x, const torch::Tensor& skip) {
  torch::Tensor y = ops::ConvTranspose(up_, ops::Conv(reduce_, x));
  return ops::Conv(fuse_, torch::cat({skip, y}, 1));
}

UNetEncoderImpl::UNetEncoderImpl(int64_t in_channels, int64_t base_width)
    : stem_(register_module("stem", ops::Conv3x3(in_channels, base_width))),
      levels_(register_module("levels", torch::nn::ModuleList())),
      downs_(register_module("downs", torch::nn::ModuleList())) {
  int64_t width = base_width;
  for (size_t level = 0; level < kBlocksPerLevel.size(); ++level) {
    torch::nn::ModuleList blocks;
    for (int i = 0; i < kBlocksPerLevel[level]; ++i) blocks->push_back(ResBlock(width));
    levels_->push_back(blocks);
    if (level + 1 < kBlocksPerLevel.size()) {
      downs_->push_back(ops::Conv3x3(width, 2 * width, /*stride=*/2));
      width *= 2;
    }
  }
}

EncoderFeatures UNetEncoderImpl::forward(const torch::Tensor& x) {
  std::array<torch::Tensor, 4> outputs;
  torch::Tensor y = ops::Conv(stem_, x);
  for (size_t level = 0; level < levels_->size(); ++level) {
    for (const auto& block : *levels_->ptr<torch::nn::ModuleListImpl>(level)) {
      y = block->as<ResBlockImpl>()->forward(y);
    }
    outputs[level] = y;
    if (level < downs_->size()) {
      auto down = torch::nn::Conv2d(downs_->ptr<torch::nn::Conv2dImpl>(level));
      y = ops::Conv(down, y);
    }
  }
  return {outputs[0], outputs[1], outputs[2], outputs[3]};
}

void UNetEncoderImpl::FoldBatchNorm() {
  for (const auto& level : *levels_) {
    for (const auto& block : *level->as<torch::nn::ModuleListImpl>()) {
      block->as<ResBlockImpl>()->FoldBatchNorm();
    }
  }
}

UNetDecoderImpl::UNetDecoderImpl(int64_t base_width, int64_t num_classes)
    : up3_(register_module("up3", UpCat(8 * base_width, 4 * base_width))),
      up2_(register_module("up2", UpCat(4 * base_width, 2 * base_width))),
      up1_(register_module("up1", UpCat(2 * base_width, base_width))),
      block3_(register_module("block3", ResBlock(4 * base_width))),
      block2_(register_module("block2", ResBlock(2 * base_width))),
      block1_(register_module("block1", ResBlock(base_width))),
      head_(register_module("head", ops::Conv1x1(base_width, num_classes))) {}

torch::Tensor UNetDecoderImpl::forward(const torch::Tensor& bottom, const EncoderFeatures& skips) {
  torch::Tensor y = block3_(up3_(bottom, skips.skip3));
  y = block2_(up2_(y, skips.skip2));
  y = block1_(up1_(y, skips.skip1));
  return ops::Conv(head_, y);
}

void UNetDecoderImpl::FoldBatchNorm() {
  for (ResBlock* block : {&block3_, &block2_, &block1_}) (*block)->FoldBatchNorm();
}

}  // namespace danet::models
