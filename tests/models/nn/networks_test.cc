// Shapes, eval-mode determinism and trainability of the Med-DANet networks.
#include <gtest/gtest.h>
#include <torch/torch.h>

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
      {"decision", DecisionNet(DecisionNetOptions(3)).ptr()}};
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

}  // namespace
}  // namespace danet::models
