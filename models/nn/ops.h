// Counted tensor ops: the layers of our networks run through these so that a forward pass
// under a ScopedCostRecording (models/cost/cost.h) reports its cost. Each op computes exactly
// what the plain LibTorch call computes; the recording is one thread-local check when off.
#ifndef DANET_MODELS_NN_OPS_H_
#define DANET_MODELS_NN_OPS_H_

#include <ATen/native/quantized/PackedParams.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

namespace danet::models::ops {

torch::Tensor Conv(torch::nn::Conv2d& conv, const torch::Tensor& x);
// A bfloat16 input on the CPU is computed in float32 and returned as bfloat16: LibTorch 1.13's
// CPU transposed convolution in bfloat16 returns the shape of a forward convolution through
// oneDNN (a 2x2 stride-2 up-step of 60 x 60 gives 30 x 30, not 120 x 120) and has no kernel
// without it. The op is a small share of a
// UNet's or TransBTS's cost (one output channel per input channel per pixel).
torch::Tensor ConvTranspose(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x);
torch::Tensor Linear(torch::nn::Linear& linear, const torch::Tensor& x);

// Inference only: a Linear's weights as int8 (symmetric, one scale per output feature) for
// LibTorch's dynamic quantization, which quantizes the activations on each call, multiplies in
// int8 with int32 sums and returns float. CPU only; needs a quantized engine (FBGEMM or oneDNN;
// see SelectInt8Engine). Empty: the float Linear.
using Int8Weights = c10::intrusive_ptr<LinearPackedParamsBase>;
Int8Weights PackInt8(torch::nn::Linear& linear);
// linear(x), through `int8` when it is set.
torch::Tensor Linear(torch::nn::Linear& linear, const Int8Weights& int8, const torch::Tensor& x);
// Makes FBGEMM, else oneDNN, LibTorch's quantized engine; false when it has neither.
bool SelectInt8Engine();
torch::Tensor BatchNorm(torch::nn::BatchNorm2d& norm, const torch::Tensor& x);
// `conv` followed by its BatchNorm `norm`; once FoldBatchNorm has moved the norm into the conv
// (`norm` is then empty), the conv alone.
torch::Tensor ConvBn(torch::nn::Conv2d& conv, torch::nn::BatchNorm2d& norm, const torch::Tensor& x);
torch::Tensor LayerNorm(torch::nn::LayerNorm& norm, const torch::Tensor& x);
// relu(x). With autograd off (inference) and `x` the only holder of its buffer (a fresh op
// output handed over with std::move), in place: no new buffer and one pass less of memory.
torch::Tensor Relu(torch::Tensor x);
torch::Tensor Gelu(const torch::Tensor& x);
torch::Tensor Softmax(const torch::Tensor& x, int64_t dim);
// Element-wise a + b (residual connections, positional embeddings).
// With autograd off and `a` the only holder of its buffer, of b's shape and dtype, a += b in
// place (as Relu).
torch::Tensor Add(torch::Tensor a, const torch::Tensor& b);
torch::Tensor MaxPool(const torch::Tensor& x, int64_t kernel, int64_t stride, int64_t padding);
// Mean over k x k blocks (stride k; a ragged edge is dropped).
torch::Tensor AvgPool(const torch::Tensor& x, int64_t k);
// N x C x H x W -> N x C.
torch::Tensor GlobalAvgPool(const torch::Tensor& x);
// N x C x H x W -> N x C: the maximum over each channel.
torch::Tensor GlobalMaxPool(const torch::Tensor& x);
// Batched matmul a @ b counted as attention (Q.K^T, A.V).
torch::Tensor AttentionMatmul(const torch::Tensor& a, const torch::Tensor& b);

// Inference only: folds the eval-mode BatchNorm `norm`, whose input is `conv`'s output and
// nothing else, into conv's weight and bias (a bias-free conv gains a "folded_bias" buffer),
// then empties the holder `norm` so that ConvBn skips it. The norm module stays registered
// with its statistics, so the network keeps its state names; its weights are no longer the
// trained ones and must not be saved. No-op when `norm` is already empty.
void FoldBatchNorm(torch::nn::Conv2d& conv, torch::nn::BatchNorm2d& norm);

// 3x3 convolution with padding 1 (the workhorse of the UNet family).
torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride = 1, bool bias = true);
torch::nn::Conv2d Conv1x1(int64_t in, int64_t out, bool bias = true);

}  // namespace danet::models::ops

#endif  // DANET_MODELS_NN_OPS_H_
