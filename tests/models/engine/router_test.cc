// The router's request overrides: which fields apply to which policies, and their ranges.
// (Parsing and routing over a bank are covered in segmenter_test.cc.)
#include "models/engine/router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

namespace danet::engine {
namespace {

using ::testing::HasSubstr;

TEST(ApplyPolicyOverridesTest, ZeroKeepsThePolicysOwnValues) {
  Policy policy;
  policy.cost_bias = 0.25;
  policy.skip_margin = 3;
  ASSERT_TRUE(ApplyPolicyOverrides(0, 0, &policy).ok());
  EXPECT_EQ(policy.cost_bias, 0.25);
  EXPECT_EQ(policy.skip_margin, 3);
  Policy fixed;
  fixed.kind = Policy::Kind::kStatic;
  fixed.static_model = 2;
  EXPECT_TRUE(ApplyPolicyOverrides(0, 0, &fixed).ok()) << "nothing asked of a static policy";
}

TEST(ApplyPolicyOverridesTest, SetsBiasAndMarginOnDynamicPolicies) {
  Policy policy;
  ASSERT_TRUE(ApplyPolicyOverrides(-0.5, kMaxSkipMargin, &policy).ok());
  EXPECT_EQ(policy.cost_bias, -0.5);
  EXPECT_EQ(policy.skip_margin, kMaxSkipMargin);
}

TEST(ApplyPolicyOverridesTest, ErrorsNameTheField) {
  Policy fixed;
  fixed.kind = Policy::Kind::kStatic;
  fixed.static_model = 0;
  EXPECT_THAT(ApplyPolicyOverrides(1, 0, &fixed).message(),
              HasSubstr("cost_bias: must be a finite number, and only applies to the dynamic"));
  EXPECT_THAT(ApplyPolicyOverrides(0, 1, &fixed).message(),
              HasSubstr("skip_margin: must be at most 32, and only applies to the dynamic"));
  Policy dynamic;
  for (double bad :
       {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    const absl::Status s = ApplyPolicyOverrides(bad, 0, &dynamic);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("cost_bias"));
  }
  for (int64_t bad : {int64_t{-1}, int64_t{kMaxSkipMargin + 1}}) {
    const absl::Status s = ApplyPolicyOverrides(0, bad, &dynamic);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("skip_margin"));
  }
  EXPECT_EQ(dynamic.cost_bias, 0.0) << "a refused override changes nothing";
  EXPECT_EQ(dynamic.skip_margin, 0);
}

TEST(BiasedRouteTest, NoBiasIsTheArgmaxWithTiesToTheFirst) {
  const std::vector<double> costs = {0, 1, 2};
  const float tie[] = {0.4f, 0.4f, 0.2f};
  EXPECT_EQ(BiasedRoute(tie, costs, 0.0), 0);
  const float model[] = {0.1f, 0.2f, 0.7f};
  EXPECT_EQ(BiasedRoute(model, costs, 0.0), 2);
  EXPECT_EQ(BiasedRoute(model, costs, 100.0), 0) << "a large bias prefers the free skip";
}

}  // namespace
}  // namespace danet::engine
