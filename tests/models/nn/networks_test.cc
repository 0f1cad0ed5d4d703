// Shapes, eval-mode determinism and trainability of the Med-DANet networks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "models/cost/cost.h"
#include "models/nn/decision_net.h"
#include "models/nn/ops.h"
#include "models/nn/transbts.h"
#include "models/nn/unet.h"

namespace danet::models {
namespace {

class NetworksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    torch::manual_seed(3);
  }
  torch::NoGradGuard no_grad_;
};

TEST_F(NetworksTest, UNetKeepsSpatialSizeAndPredictsFourClasses) {
  UNet net(UNetOptions(12));
  net->eval();
  EXPECT_EQ(net->forward(torch::randn({2, 4, 240, 240})).sizes(),
            (std::vector<int64_t>{2, 4, 240, 240}));
  EXPECT_EQ(net->forward(torch::randn({1, 4, 96, 160})).sizes(),
            (std::vector<int64_t>{1, 4, 96, 160}));
}

TEST_F(NetworksTest, TransBTSRunsAtItsGridAndAtCropSizes) {
  TransBTS light(TransBTSOptions(1));
  light->eval();
  EXPECT_EQ(light->forward(torch::randn({1, 4, 240, 240})).sizes(),
            (std::vector<int64_t>{1, 4, 240, 240}));
  // 128x128 training crops use a resized positional embedding.
  TransBTS full(TransBTSOptions(4));
  full->eval();
  EXPECT_EQ(full->forward(torch::randn({2, 4, 128, 128})).sizes(),
            (std::vector<int64_t>{2, 4, 128, 128}));
}

TEST_F(NetworksTest, DecisionNetworkGivesOneLogitPerRoute) {
  DecisionNet net(DecisionNetOptions(5));
  net->eval();
  EXPECT_EQ(net->forward(torch::randn({3, 4, 240, 240})).sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(net->forward(torch::randn({1, 4, 128, 128})).sizes(), (std::vector<int64_t>{1, 5}));
}

TEST_F(NetworksTest, DecisionNetworkWithMaxPoolSeesTheMaximum) {
  DecisionNet net(DecisionNetOptions(5).global_max_pool(true));
  net->eval();
  const torch::Tensor x = torch::randn({2, 4, 240, 240});
  EXPECT_EQ(net->forward(x).sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(net->named_parameters()["classifier.weight"].size(1), 2 * 256);
  // One feature map with a single spike: its average is unchanged up to 1/57600, its maximum
  // is the spike.
  torch::Tensor features = torch::zeros({1, 3, 240, 240});
  features[0][1][17][200] = 9.0;
  const torch::Tensor pooled = ops::GlobalMaxPool(features);
  EXPECT_EQ(pooled.sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_FLOAT_EQ(pooled[0][1].item<float>(), 9.0f);
  EXPECT_FLOAT_EQ(pooled[0][0].item<float>(), 0.0f);
}

TEST_F(NetworksTest, DecisionNetworkWithTumourHeadMapsTheHeadGridAndClassifiesOnItsMaximum) {
  DecisionNet net(DecisionNetOptions(5).tumour_head(true));
  net->eval();
  const torch::Tensor x = torch::randn({2, 4, 240, 240});
  const auto [logits, map] = net->ForwardWithTumourMap(x);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(map.sizes(), (std::vector<int64_t>{2, 1, 8, 8}));  // 240 / 32, rounded up
  EXPECT_TRUE(torch::equal(net->forward(x), logits));
  EXPECT_EQ(net->named_parameters()["classifier.weight"].size(1), 256 + 1);
  // The classifier's last input is the map's maximum: raising the map everywhere by 1 moves
  // each logit by that input's weight.
  const torch::Tensor weight = net->named_parameters()["classifier.weight"].select(1, 256);
  net->named_parameters()["tumour.bias"].add_(1.0);
  const auto [raised, raised_map] = net->ForwardWithTumourMap(x);
  EXPECT_TRUE(torch::allclose(raised_map, map + 1, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(raised - logits, weight.unsqueeze(0).expand({2, 5}), 1e-4, 1e-5));
  // Without the head there is no map.
  DecisionNet plain(DecisionNetOptions(5));
  plain->eval();
  EXPECT_FALSE(plain->ForwardWithTumourMap(x).second.defined());
}

// tumour_head_stage: the map reads a stage's output, a finer grid (stage k: stride 4 * 2^k), its
// convolution as wide as that stage; gradients of the map reach the stem, the stage's last unit
// and the tumour convolution, but no unit after the tap and not the head's convolution. A stage
// the network lacks is refused.
TEST_F(NetworksTest, DecisionNetworkTumourHeadAtAStageMapsItsFinerGrid) {
  torch::GradMode::set_enabled(true);
  const torch::Tensor x = torch::randn({2, 4, 64, 96});
  for (const auto& [stage, side, width] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 8, 24}, {2, 16, 48}, {3, 32, 96}}) {
    DecisionNet net(DecisionNetOptions(5).tumour_head(true).tumour_head_stage(stage));
    const auto [logits, map] = net->ForwardWithTumourMap(x);
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 5}));
    EXPECT_EQ(map.sizes(), (std::vector<int64_t>{2, 1, 64 / side, 96 / side})) << stage;
    EXPECT_EQ(net->named_parameters()["tumour.weight"].size(1), width);
    EXPECT_EQ(net->named_parameters()["classifier.weight"].size(1), 256 + 1);
    map.sum().backward();
    auto params = net->named_parameters();
    EXPECT_GT(params["stem.weight"].grad().abs().sum().item<double>(), 0) << stage;
    EXPECT_GT(params["tumour.weight"].grad().abs().sum().item<double>(), 0) << stage;
    EXPECT_FALSE(params["head.weight"].grad().defined()) << stage;
    const int64_t tap = std::vector<int64_t>{4, 12, 16}[stage - 1];  // units up to the stage's end
    const auto unit = [](int64_t i) { return "units." + std::to_string(i) + ".main_pw1.weight"; };
    EXPECT_TRUE(params[unit(tap - 1)].grad().defined()) << stage;
    if (tap < 16) {
      EXPECT_FALSE(params[unit(tap)].grad().defined()) << stage;
    }
  }
  EXPECT_THROW(DecisionNet(DecisionNetOptions(5).tumour_head(true).tumour_head_stage(4)),
               c10::Error);
}

// stem_pool_stride 1: no max pool after the stem, so every stage works on a twice finer grid (the
// stage-1 tumour map has a cell per 4 x 4 voxels instead of 8 x 8) with the same weights' shapes.
// A stride other than 1 or 2 is refused.
TEST_F(NetworksTest, DecisionNetworkWithoutTheStemPoolSeesATwiceFinerGrid) {
  const torch::Tensor x = torch::randn({2, 4, 64, 96});
  DecisionNet pooled(DecisionNetOptions(5).tumour_head(true).tumour_head_stage(1));
  DecisionNet fine(
      DecisionNetOptions(5).tumour_head(true).tumour_head_stage(1).stem_pool_stride(1));
  pooled->eval();
  fine->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(pooled->ForwardWithTumourMap(x).second.sizes(),
            (std::vector<int64_t>{2, 1, 64 / 8, 96 / 8}));
  const auto [logits, map] = fine->ForwardWithTumourMap(x);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(map.sizes(), (std::vector<int64_t>{2, 1, 64 / 4, 96 / 4}));
  const auto pooled_state = pooled->named_parameters();
  const auto fine_state = fine->named_parameters();
  ASSERT_EQ(pooled_state.size(), fine_state.size());
  for (const auto& item : pooled_state) {
    EXPECT_EQ(fine_state[item.key()].sizes(), item.value().sizes()) << item.key();
  }
  for (int64_t bad : {0, 3}) {
    EXPECT_THROW(DecisionNet(DecisionNetOptions(5).stem_pool_stride(bad)), c10::Error) << bad;
  }
}

// ops::Relu and ops::Add write into their first argument only when autograd is off and nothing
// else holds its buffer; otherwise they leave every input as it was.
TEST_F(NetworksTest, ReluAndAddReuseOnlyBuffersNothingElseHolds) {
  const torch::Tensor base = torch::randn({2, 3, 4, 4});
  const torch::Tensor expected_relu = torch::relu(base), expected_sum = base + base;

  torch::Tensor fresh = base.clone();
  const void* buffer = fresh.data_ptr();
  torch::Tensor y = ops::Relu(std::move(fresh));
  EXPECT_EQ(y.data_ptr(), buffer);  // in place
  EXPECT_TRUE(torch::equal(y, expected_relu));
  torch::Tensor z = ops::Add(std::move(y), expected_relu);
  EXPECT_EQ(z.data_ptr(), buffer);
  EXPECT_TRUE(torch::allclose(z, 2 * expected_relu));

  const torch::Tensor kept = base.clone();  // still held by the caller: a new buffer
  EXPECT_NE(ops::Relu(kept).data_ptr(), kept.data_ptr());
  EXPECT_NE(ops::Add(kept, base).data_ptr(), kept.data_ptr());
  EXPECT_TRUE(torch::equal(kept, base));

  const torch::Tensor whole = base.clone();  // a view shares its buffer with `whole`
  EXPECT_NE(ops::Relu(whole.view({6, 16})).data_ptr(), whole.data_ptr());
  EXPECT_TRUE(torch::equal(whole, base));

  const torch::Tensor small = torch::randn({3, 4, 4});  // broadcast: a new buffer of a's shape
  torch::Tensor broadcast = ops::Add(small.clone(), base);
  EXPECT_EQ(broadcast.sizes(), base.sizes());

  torch::AutoGradMode grad(true);  // with autograd on, never in place
  torch::Tensor tracked = base.clone();
  const void* tracked_buffer = tracked.data_ptr();
  EXPECT_NE(ops::Relu(std::move(tracked)).data_ptr(), tracked_buffer);
  torch::Tensor summand = base.clone();
  const void* summand_buffer = summand.data_ptr();
  torch::Tensor sum = ops::Add(std::move(summand), base);
  EXPECT_NE(sum.data_ptr(), summand_buffer);
  EXPECT_TRUE(torch::equal(sum, expected_sum));
}

TEST_F(NetworksTest, EvalModeIsDeterministicAndTrainingModeUsesDropout) {
  TransBTS net(TransBTSOptions(1).image_size(64));
  const torch::Tensor x = torch::randn({1, 4, 64, 64});
  net->eval();
  EXPECT_TRUE(torch::equal(net->forward(x), net->forward(x)));
  net->train();
  EXPECT_FALSE(torch::equal(net->forward(x), net->forward(x)));
}

// Every parameter is reached by back-propagation. (Some gradients are legitimately zero: in
// ShuffleNetV2 a BN bias feeding a linear 1x1 conv and another BN in training mode is
// cancelled by that BN's mean subtraction, so only definedness is checked per parameter.)
TEST_F(NetworksTest, EveryParameterOfEveryNetworkGetsAGradient) {
  torch::GradMode::set_enabled(true);
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> nets = {
      {"unet", UNet(UNetOptions(4)).ptr()},
      {"transbts",
       TransBTS(
           TransBTSOptions(2).embed_dim(32).num_heads(4).mlp_dim(64).image_size(32).base_width(4))
           .ptr()},
      {"decision", DecisionNet(DecisionNetOptions(3)).ptr()},
      {"decision+tumour", DecisionNet(DecisionNetOptions(3).tumour_head(true)).ptr()}};
  const torch::Tensor x = torch::randn({2, 4, 32, 32});
  for (auto& [name, module] : nets) {
    module->train();
    torch::Tensor y;
    if (auto* u = module->as<UNetImpl>()) y = u->forward(x);
    if (auto* t = module->as<TransBTSImpl>()) y = t->forward(x);
    if (auto* d = module->as<DecisionNetImpl>()) y = d->forward(x);
    y.square().sum().backward();
    double total = 0;
    for (const auto& p : module->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << name << "." << p.key();
      total += p.value().grad().abs().sum().item<double>();
    }
    EXPECT_GT(total, 0.0) << name;
  }
}

// Gives every BatchNorm of `module` trained-looking statistics and affine parameters, so that
// folding has something to fold.
void RandomiseBatchNorms(torch::nn::Module& module) {
  for (const auto& child : module.modules()) {
    auto* norm = child->as<torch::nn::BatchNorm2dImpl>();
    if (norm == nullptr) continue;
    const int64_t c = norm->options.num_features();
    norm->weight.uniform_(0.5, 1.5);
    norm->bias.normal_(0.0, 0.2);
    norm->running_mean.normal_(0.0, 0.5);
    norm->running_var.uniform_(0.5, 2.0);
    ASSERT_EQ(norm->running_var.numel(), c);
  }
}

// The norm cost recorded by one forward pass (each BatchNorm and LayerNorm counts).
template <typename Forward>
double NormMacs(Forward forward, const torch::Tensor& x) {
  CostRecorder recorder;
  {
    ScopedCostRecording recording(&recorder);
    forward(x);
  }
  return recorder.Report(1).MacsOf(OpKind::kNorm);
}

// Folding BatchNorm into the convolution before it changes nothing but rounding, and the
// folded norms are no longer run: each network is checked against itself before folding.
TEST_F(NetworksTest, FoldingBatchNormKeepsTheOutputAndDropsTheNorms) {
  UNet unet(UNetOptions(8));
  TransBTS transbts(
      TransBTSOptions(1).embed_dim(64).num_heads(4).mlp_dim(128).image_size(64).base_width(8));
  DecisionNet decision(DecisionNetOptions(5));
  const torch::Tensor x = torch::randn({2, 4, 64, 64});
  // Returns the norm cost after folding as a share of that before.
  auto fold_and_compare = [&](const std::string& name, torch::nn::Module& module, auto forward,
                              auto fold) {
    RandomiseBatchNorms(module);
    module.eval();
    const torch::Tensor before = forward(x);
    const double norms_before = NormMacs(forward, x);
    fold();
    fold();  // a second fold is a no-op
    const torch::Tensor after = forward(x);
    const double scale = before.abs().max().item<double>();
    EXPECT_LT((after - before).abs().max().item<double>(), 1e-4 * scale) << name;
    return NormMacs(forward, x) / norms_before;
  };
  // UNet: one of each residual block's two norms folds (the other sees the residual sum).
  EXPECT_NEAR(fold_and_compare(
                  "unet", *unet, [&](const torch::Tensor& t) { return unet->forward(t); },
                  [&] { unet->FoldBatchNorm(); }),
              0.5, 1e-9);
  // The decision network: every norm follows a convolution.
  EXPECT_EQ(fold_and_compare(
                "decision", *decision, [&](const torch::Tensor& t) { return decision->forward(t); },
                [&] { decision->FoldBatchNorm(); }),
            0.0);
  // TransBTS also keeps pre_norm (after the encoder's residual sum) and its LayerNorms.
  const double transbts_share = fold_and_compare(
      "transbts", *transbts, [&](const torch::Tensor& t) { return transbts->forward(t); },
      [&] { transbts->FoldBatchNorm(); });
  EXPECT_GT(transbts_share, 0.5);
  EXPECT_LT(transbts_share, 0.9);
}

// ops::ConvTranspose on a bfloat16 input on the CPU: the shape and, up to bfloat16 rounding, the
// values of the float32 op (LibTorch 1.13's own bfloat16 op returns a forward conv's shape).
TEST_F(NetworksTest, BFloat16TransposedConvolutionKeepsItsShape) {
  torch::NoGradGuard no_grad;
  torch::nn::ConvTranspose2d up(torch::nn::ConvTranspose2dOptions(8, 8, 2).stride(2));
  const torch::Tensor x = torch::randn({1, 8, 12, 10});
  const torch::Tensor expected = ops::ConvTranspose(up, x);
  up->to(torch::kBFloat16);
  const torch::Tensor y = ops::ConvTranspose(up, x.to(torch::kBFloat16));
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(y.sizes(), expected.sizes());
  EXPECT_LT(((y.to(torch::kFloat32) - expected).norm() / expected.norm()).item<double>(), 0.02);
}

// int8 Linear layers (dynamic quantization) approximate the float transformer: a relative error
// of a few percent in the logits, and the cost count is unchanged.
TEST_F(NetworksTest, Int8LinearLayersStayCloseToFloat) {
  ASSERT_TRUE(ops::SelectInt8Engine()) << "Debian's LibTorch ships oneDNN";
  TransBTS net(
      TransBTSOptions(2).embed_dim(64).num_heads(4).mlp_dim(128).image_size(64).base_width(8));
  net->eval();
  const torch::Tensor x = torch::randn({2, 4, 64, 64});
  const torch::Tensor before = net->forward(x);
  auto forward = [&](const torch::Tensor& t) { return net->forward(t); };
  CostRecorder float_cost, int8_cost;
  {
    ScopedCostRecording recording(&float_cost);
    forward(x);
  }
  net->QuantizeLinear();
  const torch::Tensor after = net->forward(x);
  {
    ScopedCostRecording recording(&int8_cost);
    forward(x);
  }
  EXPECT_FALSE(torch::equal(after, before));  // the int8 path is really taken
  const double relative = ((after - before).norm() / before.norm()).item<double>();
  EXPECT_LT(relative, 0.05);
  EXPECT_GT(after.argmax(1).eq(before.argmax(1)).to(torch::kFloat).mean().item<double>(), 0.95);
  EXPECT_DOUBLE_EQ(int8_cost.Report(2).TotalMacs(), float_cost.Report(2).TotalMacs());
}

}  // namespace
}  // namespace danet::models
