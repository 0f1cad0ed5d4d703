// The per-case summary: route names and counts, the costliest model as the all-largest
// baseline wherever it sits in the bank, and tumour volumes in mL.
#include "models/engine/summary.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/bundle/bundle_config.h"

namespace danet::engine {
namespace {

// A tiny bank with stated costs per slice (no weights).
std::unique_ptr<models::Bank> TinyBank(const std::vector<double>& costs) {
  v1::BundleConfig config = *models::PresetConfig("tiny");
  for (int i = 0; i < config.models_size(); ++i) {
    config.mutable_models(i)->set_gmacs_per_slice(costs[i]);
  }
  models::BankOptions options;
  options.load_weights = false;
  options.seed = 1;
  return *models::Bank::Create(config, ".", options);
}

TEST(SummaryTest, RouteNamesAreSkipThenTheModelIds) {
  EXPECT_THAT(RouteNames(*TinyBank({1, 2, 3, 4})),
              ::testing::ElementsAre("skip", "M1", "M2", "M3", "M4"));
}

TEST(SummaryTest, TheBaselineIsTheCostliestModelWhereverItSits) {
  EXPECT_EQ(CostliestModel(*TinyBank({1, 2, 3, 4})), 3);
  EXPECT_EQ(CostliestModel(*TinyBank({1, 9, 3, 5})), 1);
  EXPECT_EQ(CostliestModel(*TinyBank({7, 2, 7, 4})), 0) << "the first of equals";
}

TEST(SummaryTest, TumourVolumesPerRegionInMl) {
  const volume::Geometry g = volume::MakeGeometry({10, 10, 2}, {1, 1, 2}, {0, 0, 0});
  std::vector<uint8_t> labels(200, 0);
  labels[0] = 1;  // TC, WT
  labels[1] = 2;  // WT
  labels[2] = 4;  // ET, TC, WT
  labels[3] = 4;
  const TumourVolumes v = MeasureTumourVolumes(labels, g);
  EXPECT_DOUBLE_EQ(v.wt, 4 * 0.002);
  EXPECT_DOUBLE_EQ(v.tc, 3 * 0.002);
  EXPECT_DOUBLE_EQ(v.et, 2 * 0.002);
}

TEST(SummaryTest, SummarizesRoutesCostAndVolumes) {
  const std::unique_ptr<models::Bank> bank = TinyBank({1, 9, 3, 5});
  const volume::Geometry g = volume::MakeGeometry({4, 4, 5}, {1, 1, 1}, {0, 0, 0});
  VolumeResult result;
  result.labels.assign(80, 0);
  result.labels[20] = 2;
  for (int route : {0, 1, 1, 4, 0}) {
    SliceResult s;
    s.index = static_cast<int>(result.slices.size());
    s.route = route;
    result.slices.push_back(s);
  }
  result.gmacs = 12.5;
  const CaseSummary summary = SummarizeCase(*bank, result, g);
  EXPECT_EQ(summary.route_names, RouteNames(*bank));
  EXPECT_THAT(summary.route_counts, ::testing::ElementsAre(2, 2, 0, 0, 1));
  EXPECT_EQ(summary.gmacs, 12.5);
  EXPECT_EQ(summary.largest_model, "M2");
  EXPECT_DOUBLE_EQ(summary.gmacs_all_largest, 9.0 * 5);
  EXPECT_DOUBLE_EQ(summary.volumes_ml.wt, 0.001);
  EXPECT_EQ(summary.volumes_ml.tc, 0.0);
  const std::map<std::string, int> expected = {
      {"skip", 2}, {"M1", 2}, {"M2", 0}, {"M3", 0}, {"M4", 1}};
  EXPECT_EQ(summary.RouteCountsByName(), expected);
}

}  // namespace
}  // namespace danet::engine
