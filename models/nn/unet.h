// Modified 2D UNet (Med-DANet bank models M1 and M2; base width 12 and 16).
#ifndef DANET_MODELS_NN_UNET_H_
#define DANET_MODELS_NN_UNET_H_

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "models/nn/blocks.h"

namespace danet::models {

struct UNetOptions {
  explicit UNetOptions(int64_t base_width) : base_width_(base_width) {}
  TORCH_ARG(int64_t, base_width);       // b: widths b, 2b, 4b, 8b.
  TORCH_ARG(int64_t, in_channels) = 4;  // flair, t1ce, t1, t2
  TORCH_ARG(int64_t, num_classes) = 4;  // background, necrotic core, edema, enhancing
};

// Input N x in x H x W (H, W multiples of 8); output N x classes x H x W class scores
// (logits: softmax is left to the loss and argmax to inference).
class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  // Inference only: BatchNorms folded into the convolutions before them (ops::FoldBatchNorm).
  void FoldBatchNorm();

  UNetOptions options;

 private:
  UNetEncoder encoder_{nullptr};
  UNetDecoder decoder_{nullptr};
};
TORCH_MODULE(UNet);

}  // namespace danet::models

#endif  // DANET_MODELS_NN_UNET_H_
