// Eq. 4 decision labels, the soft Dice loss, weighted cross-entropy and the LR schedule.
#include "models/train/objectives.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>

#include "models/engine/router.h"

namespace danet::train {
namespace {

const std::vector<double> kPaperGmacs = {2.13, 3.75, 8.88, 19.88};

TEST(DecisionLabelTest, SliceWithoutTumourIsSkipped) {
  EXPECT_EQ(DecisionLabel(false, {0.9, 0.9, 0.9, 0.9}, kPaperGmacs, 0.001), 0);
}

TEST(DecisionLabelTest, SmallAlphaPicksTheMostAccurateModel) {
  EXPECT_EQ(DecisionLabel(true, {0.70, 0.80, 0.75, 0.79}, kPaperGmacs, 0.001), 2);
  EXPECT_EQ(DecisionLabel(true, {0.70, 0.80, 0.75, 0.81}, kPaperGmacs, 0.001), 4);
}

TEST(DecisionLabelTest, CostBreaksTiesTowardTheCheaperModel) {
  EXPECT_EQ(DecisionLabel(true, {0.8, 0.8, 0.8, 0.8}, kPaperGmacs, 0.001), 1);
  // An accuracy edge smaller than alpha times the cost-term gap loses to the cheaper model.
  EXPECT_EQ(DecisionLabel(true, {0.80, 0.80001, 0.8, 0.8}, kPaperGmacs, 0.001), 1);
}

TEST(DecisionLabelTest, LargeAlphaPicksTheCheapestModel) {
  EXPECT_EQ(DecisionLabel(true, {0.2, 0.9, 0.9, 0.95}, kPaperGmacs, 0.99), 1);
}

TEST(DecisionLabelTest, CostTermIsASoftmaxOfInverseCost) {
  const std::vector<double> c = InverseCostSoftmax(kPaperGmacs);
  EXPECT_NEAR(std::accumulate(c.begin(), c.end(), 0.0), 1.0, 1e-12);
  EXPECT_TRUE(std::is_sorted(c.rbegin(), c.rend()));
  // DESIGN.md: with F in GFLOPs the term spans only about 0.21 .. 0.32.
  EXPECT_NEAR(c.front(), 0.32, 0.01);
  EXPECT_NEAR(c.back(), 0.21, 0.01);
}

TEST(PreferredProbabilitiesTest, WithoutPreferenceTheTeachersRowIsKept) {
  const std::vector<double> row = {0.1, 0.2, 0.6, 0.1};
  EXPECT_EQ(PreferredProbabilities(row, {}), row);
  EXPECT_EQ(PreferredProbabilities(row, {0, 0, 0, 0}), row);
}

TEST(PreferredProbabilitiesTest, EqFourAtAlphaZeroPicksWhatTheServingRouterPicks) {
  // The router's pick for a slice that is not skipped: argmax log p_i + preference_i over the
  // models (engine::DecideRoute with a model preference, skip probability below the others).
  engine::Policy policy;
  policy.model_preference = {0, 6, 0, 0};  // dynamic+pM2:6
  const std::vector<double> route_gmacs = {0, 2.05, 3.62, 5.55, 8.95};
  const std::vector<std::vector<double>> rows = {
      {0.01, 0.01, 0.97, 0.01},    // M2 wins under the preference although M3 is ranked first
      {0.0, 0.001, 0.998, 0.001},  // M3 beats M2 by more than e^6
      {0.25, 0.25, 0.25, 0.25},    // a tie: M2 by its preference
      {0.7, 0.001, 0.2, 0.099}};   // M1 beats M2 by more than e^6
  const std::vector<int> expected = {2, 3, 2, 1};
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::vector<double> preferred = PreferredProbabilities(rows[r], policy.model_preference);
    EXPECT_NEAR(std::accumulate(preferred.begin(), preferred.end(), 0.0), 1.0, 1e-12);
    std::vector<float> routes = {0.0f};  // skip, then the models
    for (double p : rows[r]) routes.push_back(static_cast<float>(p));
    const int served = engine::DecideRoute(routes.data(), route_gmacs, policy);
    EXPECT_EQ(DecisionLabel(true, preferred, {2.05, 3.62, 5.55, 8.95}, 0.0), served) << r;
    EXPECT_EQ(served, expected[r]) << r;
  }
}

TEST(SoftDiceLossTest, PerfectPredictionIsNearZeroAndWrongIsNearMax) {
  torch::Tensor target = torch::zeros({2, 8, 8}, torch::kLong);
  target.slice(1, 2, 5).fill_(1);
  target.slice(1, 5, 6).fill_(3);
  target[1].slice(0, 0, 2).fill_(2);
  const torch::Tensor perfect =
      torch::one_hot(target, 4).permute({0, 3, 1, 2}).to(torch::kFloat) * 50;
  EXPECT_LT(SoftDiceLoss(perfect, target).item<double>(), 0.01);
  const torch::Tensor wrong =
      torch::one_hot((target + 1) % 4, 4).permute({0, 3, 1, 2}).to(torch::kFloat) * 50;
  EXPECT_GT(SoftDiceLoss(wrong, target).item<double>(), 2.9);  // 3 foreground classes, all wrong
}

TEST(SoftDiceLossTest, AbsentClassStillPushesItsPredictionDown) {
  const torch::Tensor target = torch::zeros({1, 4, 4}, torch::kLong);  // background only
  torch::Tensor logits = torch::zeros({1, 4, 4, 4}, torch::requires_grad());
  SoftDiceLoss(logits, target).backward();
  // Raising a foreground logit must raise the loss: its gradient is positive.
  EXPECT_GT(logits.grad()[0][1].sum().item<double>(), 0.0);
}

TEST(WeightedCrossEntropyTest, WeightsScaleTheirClass) {
  const torch::Tensor logits = torch::zeros({2, 3});
  const torch::Tensor target = torch::tensor({0, 1}, torch::kLong);
  const double plain = WeightedCrossEntropy(logits, target, {1, 1, 1}).item<double>();
  EXPECT_NEAR(plain, std::log(3.0), 1e-6);
  // Weighted mean: with equal per-sample losses, any weights give the same mean ...
  EXPECT_NEAR(WeightedCrossEntropy(logits, target, {0.3, 1, 1}).item<double>(), plain, 1e-6);
  // ... but the weights change which mistakes dominate.
  const torch::Tensor skewed = torch::tensor({{2.0, 0.0, 0.0}, {2.0, 0.0, 0.0}});
  EXPECT_GT(WeightedCrossEntropy(skewed, target, {0.3, 1, 1}).item<double>(),
            WeightedCrossEntropy(skewed, target, {1, 1, 1}).item<double>());
}

TEST(TumourMapLossTest, ACellIsTumourWhenAnyVoxelUnderItIs) {
  // A 240 x 240 mask with one tumour voxel; an 8 x 8 map (30 x 30 voxels per cell).
  torch::Tensor tumour = torch::zeros({1, 1, 240, 240});
  tumour[0][0][100][37] = 1;  // cell (3, 1)
  torch::Tensor right = torch::full({1, 1, 8, 8}, -20.0);
  right[0][0][3][1] = 20.0;
  EXPECT_LT(TumourMapLoss(right, tumour).item<double>(), 1e-6);
  // The same confident map one cell off is wrong twice, out of 64 cells.
  torch::Tensor off = torch::full({1, 1, 8, 8}, -20.0);
  off[0][0][3][2] = 20.0;
  EXPECT_NEAR(TumourMapLoss(off, tumour).item<double>(), 2 * 20.0 / 64, 1e-4);
  // A tumour-free slice asks for a map below zero everywhere.
  EXPECT_NEAR(
      TumourMapLoss(torch::zeros({1, 1, 8, 8}), torch::zeros({1, 1, 240, 240})).item<double>(),
      std::log(2.0), 1e-6);
  // A positive weight multiplies only the tumour cell's term: missing it costs 10x as much, a
  // false cell the same as before.
  torch::Tensor missed = torch::full({1, 1, 8, 8}, -20.0);
  EXPECT_NEAR(TumourMapLoss(missed, tumour, 10).item<double>(), 10 * 20.0 / 64, 1e-4);
  EXPECT_NEAR(TumourMapLoss(off, tumour, 10).item<double>(), (10 * 20.0 + 20.0) / 64, 1e-4);
}

TEST(RouteWeightsTest, ZeroBalanceWeighsEveryBankRouteAlike) {
  EXPECT_THAT(RouteWeights({500, 10, 20, 300, 5}, 0.3, 0),
              testing::ElementsAre(0.3, 1.0, 1.0, 1.0, 1.0));
}

TEST(RouteWeightsTest, BalanceRaisesRareRoutesAndLowersFrequentOnes) {
  // Bank counts 25, 100, 400 (mean 175) and one empty route; the skip count plays no part.
  const std::vector<double> w = RouteWeights({9999, 25, 100, 400, 0}, 0.5, 0.5);
  ASSERT_EQ(w.size(), 5u);
  EXPECT_DOUBLE_EQ(w[0], 0.5);
  EXPECT_NEAR(w[1], std::sqrt(175.0 / 25), 1e-12);
  EXPECT_NEAR(w[3], std::sqrt(175.0 / 400), 1e-12);
  EXPECT_GT(w[1], w[2]);
  EXPECT_GT(w[2], w[3]);
  EXPECT_LT(w[3], 1.0);
  EXPECT_DOUBLE_EQ(w[4], w[1]);  // an empty route takes the largest weight
}

TEST(PolyLearningRateTest, WarmsUpThenDecaysToZero) {
  EXPECT_DOUBLE_EQ(PolyLearningRate(1.0, 0, 100, 10), 0.1);
  EXPECT_DOUBLE_EQ(PolyLearningRate(1.0, 9, 100, 10), 1.0);
  EXPECT_DOUBLE_EQ(PolyLearningRate(1.0, 10, 100, 10), 1.0);
  EXPECT_LT(PolyLearningRate(1.0, 55, 100, 10), 0.6);
  EXPECT_DOUBLE_EQ(PolyLearningRate(1.0, 100, 100, 10), 0.0);
}

}  // namespace
}  // namespace danet::train
