#include "models/nn/unet.h"

namespace danet::models {

UNetImpl::UNetImpl(const UNetOptions& options)
    : options(options),
      encoder_(
          register_module("encoder", UNetEncoder(options.in_channels(), options.base_width()))),
      decoder_(
          register_module("decoder", UNetDecoder(options.base_width(), options.num_classes()))) {}

torch::Tensor UNetImpl::forward(const torch::Tensor& x) {
  const EncoderFeatures features = encoder_(x);
  return decoder_(features.bottom, features);
}

void UNetImpl::FoldBatchNorm() {
  encoder_->FoldBatchNorm();
  decoder_->FoldBatchNorm();
}

}  // namespace danet::models
