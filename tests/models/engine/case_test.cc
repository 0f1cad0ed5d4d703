// One case through the bank with the bias fields refitted around the tumour a probe finds: the
// widened tumour mask against a brute-force search, the probe's stride, and SegmentCase against
// the passes done by hand (labels, routes, cost, streamed slices), with and without the second
// pass.
#include "models/engine/case.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "models/bundle/bundle_config.h"
#include "models/engine/preprocess.h"

namespace danet::engine {
namespace {

constexpr int64_t kWidth = 64, kHeight = 48, kDepth = 24;

TEST(WidenedTumourTest, IsEveryVoxelWithinTheRadiusAlongEachAxis) {
  // Spacing 1 x 2 x 5 mm and a 5 mm radius: 5, 3 (2.5 rounded away from zero) and 1 voxels.
  const volume::Geometry g = volume::MakeGeometry({17, 13, 9}, {1, 2, 5}, {0, 0, 0});
  const int64_t n = g.NumVoxels();
  std::vector<uint8_t> labels(n, 0);
  std::mt19937 rng(7);
  for (int i = 0; i < 6; ++i) labels[rng() % n] = static_cast<uint8_t>(1 + i % 4);
  labels[0] = 2;      // a corner
  labels[n - 1] = 4;  // the opposite corner
  const std::vector<uint8_t> widened = WidenedTumour(labels, g, 5.0);
  const int64_t radius[3] = {5, 3, 1};
  for (int64_t v = 0; v < n; ++v) {
    const int64_t x = v % 17, y = v / 17 % 13, z = v / (17 * 13);
    bool near = false;
    for (int64_t u = 0; u < n && !near; ++u) {
      near = labels[u] != 0 && std::abs(u % 17 - x) <= radius[0] &&
             std::abs(u / 17 % 13 - y) <= radius[1] && std::abs(u / (17 * 13) - z) <= radius[2];
    }
    ASSERT_EQ(widened[v], near ? 1 : 0) << x << " " << y << " " << z;
  }
  EXPECT_EQ(WidenedTumour(std::vector<uint8_t>(n, 0), g, 5.0), std::vector<uint8_t>(n, 0));
  // A probe's unsegmented slices: along z two slices further.
  std::vector<uint8_t> one(n, 0);
  one[4 * 17 * 13 + 6 * 17 + 8] = 1;  // x 8, y 6, z 4
  const std::vector<uint8_t> deeper = WidenedTumour(one, g, 5.0, /*extra_slices=*/2);
  for (int64_t z = 0; z < 9; ++z) {
    EXPECT_EQ(deeper[z * 17 * 13 + 6 * 17 + 8], std::abs(z - 4) <= 3 ? 1 : 0) << z;
  }
}

TEST(ProbeStrideTest, IsTheProbeSpacingInSlices) {
  auto stride = [](double dz) {
    return ProbeStride(volume::MakeGeometry({8, 8, 8}, {1, 1, dz}, {0, 0, 0}));
  };
  ASSERT_EQ(kProbeSpacingMm, 2.0);
  EXPECT_EQ(stride(1.0), 2);
  EXPECT_EQ(stride(0.9), 2);
  EXPECT_EQ(stride(0.6), 3);
  EXPECT_EQ(stride(0.5), 4);
  EXPECT_EQ(stride(2.0), 1);
  EXPECT_EQ(stride(5.0), 1);
  EXPECT_EQ(stride(0.0), 2);  // no spacing: read as 1 mm
  // The bundle's spacing (preprocessing.bias_refit_probe_spacing_mm) when given.
  const volume::Geometry one_mm = volume::MakeGeometry({8, 8, 8}, {1, 1, 1}, {0, 0, 0});
  EXPECT_EQ(ProbeStride(one_mm, 4.0), 4);
  EXPECT_EQ(ProbeStride(one_mm, 3.5), 3);
  EXPECT_EQ(ProbeStride(one_mm, 0.5), 1);
  EXPECT_EQ(ProbeStride(volume::MakeGeometry({8, 8, 8}, {1, 1, 2}, {0, 0, 0}), 4.0), 2);
}

class SegmentCaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    // An ellipse of positive "tissue" in every slice, three intensity levels in 4-voxel
    // stripes, a smooth multiplicative field and noise; 0 outside.
    decoded_.geometry = volume::MakeGeometry({kWidth, kHeight, kDepth}, {1, 1, 1}, {0, 0, 0});
    std::mt19937 rng(5);
    std::normal_distribution<float> noise(1.0f, 0.05f);
    for (int m = 0; m < volume::kNumModalities; ++m) {
      auto& channel = decoded_.channels[m];
      channel.assign(kWidth * kHeight * kDepth, 0.0f);
      for (int64_t v = 0; v < static_cast<int64_t>(channel.size()); ++v) {
        const double x = (v % kWidth) / 32.0 - 1.0, y = (v / kWidth % kHeight) / 24.0 - 1.0;
        if (x * x + y * y > 0.8) continue;
        const double level = 100.0 + 60.0 * ((v % kWidth / 4 + m) % 3);
        channel[v] = static_cast<float>(level * std::exp(0.3 * x - 0.2 * y) * noise(rng));
      }
    }
  }

  // The tiny preset with seeded random weights, its preprocessing correcting bias fields and
  // refitting them around at least `refit_min_ml` of tumour (0: never), segmenting again when
  // that moves the input by at least `refit_min_change`.
  static std::unique_ptr<models::Bank> MakeBank(double refit_min_ml, double refit_min_change = 0) {
    v1::BundleConfig config = *models::PresetConfig("tiny");
    v1::Preprocessing* pre = config.mutable_preprocessing();
    pre->set_slice_height(kHeight);
    pre->set_slice_width(kWidth);
    pre->set_bias_correction("poly2");
    pre->set_bias_refit_min_ml(refit_min_ml);
    pre->set_bias_refit_min_change(refit_min_change);
    return BankOf(config);
  }

  // A bank of `config` with MakeBank's seeded random weights (a config derived from MakeBank's
  // gets the same weights).
  static std::unique_ptr<models::Bank> BankOf(const v1::BundleConfig& config) {
    models::BankOptions options;
    options.load_weights = false;
    options.seed = 21;
    return *models::Bank::Create(config, ".", options);
  }

  // SegmentCase on `bank` with a streaming callback: the result, and what was streamed.
  VolumeResult Streamed(const models::Bank& bank, const Policy& policy, std::vector<int>* seen,
                        std::vector<uint8_t>* streamed) {
    seen->assign(kDepth, 0);
    streamed->assign(decoded_.channels[0].size(), 255);
    SegmentOptions options;
    options.on_slice = [&](const SliceResult& s, const uint8_t* labels) {
      ++(*seen)[s.index];
      std::copy(labels, labels + kWidth * kHeight, streamed->begin() + s.index * kWidth * kHeight);
    };
    const PreparedCase prepared = *PrepareCase(bank.config().preprocessing(), decoded_);
    absl::StatusOr<VolumeResult> result = SegmentCase(bank, prepared, policy, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return *std::move(result);
  }

  // What SegmentCase does first, by hand: the probe (every other slice at 1 mm, or every
  // `stride`th) on the first input, its tumour widened by 5 mm (and half the stride more along z),
  // the input fitted again without it.
  struct ProbedCase {
    volume::MultiModalVolume first_input;
    VolumeResult probe;
    std::vector<uint8_t> excluded;
    volume::MultiModalVolume refitted;
  };
  ProbedCase Probed(const models::Bank& bank, const Policy& policy, int stride = 2) {
    const v1::Preprocessing& pre = bank.config().preprocessing();
    EXPECT_EQ(ProbeStride(decoded_.geometry, pre.bias_refit_probe_spacing_mm()), stride);
    SegmentOptions probe_options;
    probe_options.probe_stride = stride;
    ProbedCase c;
    c.first_input = *PrepareBankInput(pre, decoded_);
    c.probe = *SegmentVolume(bank, c.first_input, policy, probe_options);
    c.excluded = WidenedTumour(c.probe.labels, decoded_.geometry, kRefitMarginMm, stride / 2);
    c.refitted = *PrepareBankInput(pre, decoded_, &c.excluded);
    return c;
  }

  // SegmentCase's result says the second fit ran, and how far it moved the input.
  static void ExpectSecondFitMeasured(const VolumeResult& result, const ProbedCase& c) {
    EXPECT_GT(result.refit_seconds, 0.0);
    EXPECT_DOUBLE_EQ(result.refit_change,
                     RegionChange(SampleRegion(c.first_input, c.excluded), c.refitted));
  }

  // SegmentCase streamed on a case that must be refitted: the result, checked to be the second
  // fit's (measured as `c` says) and `second`'s labels, each slice streamed once with them.
  VolumeResult StreamedRefit(const models::Bank& bank, const Policy& policy, const ProbedCase& c,
                             const VolumeResult& second) {
    std::vector<int> seen;
    std::vector<uint8_t> streamed;
    VolumeResult result = Streamed(bank, policy, &seen, &streamed);
    EXPECT_TRUE(result.bias_refitted);
    ExpectSecondFitMeasured(result, c);
    EXPECT_EQ(result.labels, second.labels);
    EXPECT_EQ(seen, std::vector<int>(kDepth, 1));  // each slice once, the final pass's
    EXPECT_EQ(streamed, result.labels);
    return result;
  }

  volume::MultiModalVolume decoded_;
};

TEST_F(SegmentCaseTest, ALargeEnoughTumourIsSegmentedAgainOnTheRefittedInput) {
  const std::unique_ptr<models::Bank> bank = MakeBank(/*refit_min_ml=*/0.001);
  const Policy policy = *ParsePolicy("static:M1", *bank);
  const v1::Preprocessing& pre = bank->config().preprocessing();
  ASSERT_TRUE(RefitsBias(pre));
  // By hand: the probe, the second fit, the second pass.
  const ProbedCase c = Probed(*bank, policy);
  const VolumeResult& first = c.probe;
  const int64_t tumour =
      std::count_if(first.labels.begin(), first.labels.end(), [](uint8_t l) { return l != 0; });
  const int64_t left_out = std::count(c.excluded.begin(), c.excluded.end(), uint8_t{1});
  ASSERT_GT(tumour, 0);  // random weights: some voxels are labelled tumour
  ASSERT_LT(left_out, static_cast<int64_t>(c.excluded.size()));
  const VolumeResult second = *SegmentVolume(*bank, c.refitted, policy);

  const VolumeResult result = StreamedRefit(*bank, policy, c, second);
  EXPECT_FALSE(result.refit_probe_kept);
  EXPECT_GT(result.refit_change, 0.0);
  // The second fit changed the input: not the labels of one pass on the first.
  EXPECT_NE(result.labels, SegmentVolume(*bank, c.first_input, policy)->labels);
  EXPECT_NEAR(result.gmacs, first.gmacs + second.gmacs, 1e-9);
  EXPECT_EQ(result.first_pass_gmacs, first.gmacs);
  // A case given up (the server's jobs) gives the same, its first input freed on the way.
  PreparedCase given = *PrepareCase(pre, decoded_);
  const VolumeResult moved = *SegmentCase(*bank, std::move(given), policy);
  EXPECT_TRUE(moved.bias_refitted);
  EXPECT_EQ(moved.labels, second.labels);
}

// A second fit that moves the input less than preprocessing.bias_refit_min_change: the probe's
// decisions and masks stand, the rest is segmented on the refitted input, one pass's GMACs.
TEST_F(SegmentCaseTest, ARefitThatMovesTheInputLittleKeepsTheProbe) {
  const std::unique_ptr<models::Bank> bank =
      MakeBank(/*refit_min_ml=*/0.001, /*refit_min_change=*/1e9);
  const Policy policy = *ParsePolicy("static:M1", *bank);
  const v1::Preprocessing& pre = bank->config().preprocessing();
  const ProbedCase c = Probed(*bank, policy);
  SegmentOptions resume_options;
  resume_options.resume = &c.probe;
  const VolumeResult expected = *SegmentVolume(*bank, c.refitted, policy, resume_options);

  std::vector<int> seen;
  std::vector<uint8_t> streamed;
  const VolumeResult result = Streamed(*bank, policy, &seen, &streamed);
  EXPECT_FALSE(result.bias_refitted);
  EXPECT_TRUE(result.refit_probe_kept);
  ExpectSecondFitMeasured(result, c);
  EXPECT_EQ(result.first_pass_gmacs, 0.0);
  EXPECT_EQ(result.labels, expected.labels);
  // The probed slices keep the first input's masks; the others come from the refitted input.
  EXPECT_NE(result.labels, SegmentVolume(*bank, c.first_input, policy)->labels);
  const VolumeResult refitted_pass = *SegmentVolume(*bank, c.refitted, policy);
  EXPECT_NE(result.labels, refitted_pass.labels);
  EXPECT_NEAR(result.gmacs, refitted_pass.gmacs, 1e-9);  // one pass
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  EXPECT_EQ(streamed, result.labels);
  // A case given up (the server's jobs) gives the same.
  PreparedCase given = *PrepareCase(pre, decoded_);
  const VolumeResult moved = *SegmentCase(*bank, std::move(given), policy);
  EXPECT_TRUE(moved.refit_probe_kept);
  EXPECT_EQ(moved.labels, expected.labels);
}

// preprocessing.bias_refit_probe_model: the probe goes through that model, whatever the routes;
// over the gate its masks only place the tumour (the refit as by hand with that probe), under it
// the plain pass's labels, the probe's masks of other routes counted as spent.
TEST_F(SegmentCaseTest, AProbeModelTakesEveryProbeSliceAndPlacesTheRefit) {
  const std::unique_ptr<models::Bank> bank = MakeBank(/*refit_min_ml=*/0.001);
  ASSERT_EQ(*bank->FindModel("M1"), 0);
  v1::BundleConfig config = bank->config();
  config.mutable_preprocessing()->set_bias_refit_probe_model("M1");
  const std::unique_ptr<models::Bank> probing = BankOf(config);
  const Policy policy = *ParsePolicy("static:M2", *bank);
  const v1::Preprocessing& pre = probing->config().preprocessing();

  // By hand: the probe through M1 (route 1), its tumour left out of the second fit.
  SegmentOptions probe_options;
  probe_options.probe_stride = 2;
  probe_options.probe_route = 1;
  const volume::MultiModalVolume first_input = *PrepareBankInput(pre, decoded_);
  const VolumeResult probe = *SegmentVolume(*probing, first_input, policy, probe_options);
  for (int z = 0; z < kDepth; ++z) EXPECT_EQ(probe.slices[z].route, z % 2 == 0 ? 1 : 0) << z;
  const std::vector<uint8_t> excluded =
      WidenedTumour(probe.labels, decoded_.geometry, kRefitMarginMm, 1);
  const VolumeResult second =
      *SegmentVolume(*probing, *PrepareBankInput(pre, decoded_, &excluded), policy);
  const VolumeResult m2_probe = Probed(*bank, policy).probe;
  ASSERT_LT(probe.gmacs, m2_probe.gmacs);  // M1 is the cheaper model

  std::vector<int> seen;
  std::vector<uint8_t> streamed;
  const VolumeResult result = Streamed(*probing, policy, &seen, &streamed);
  EXPECT_TRUE(result.bias_refitted);
  EXPECT_EQ(result.labels, second.labels);
  EXPECT_EQ(result.first_pass_gmacs, probe.gmacs);
  EXPECT_NEAR(result.gmacs, probe.gmacs + second.gmacs, 1e-9);
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  EXPECT_EQ(streamed, result.labels);

  // Under the gate: the plain pass, its GMACs and the M1 probe's.
  config.mutable_preprocessing()->set_bias_refit_min_ml(1e9);
  const std::unique_ptr<models::Bank> gated = BankOf(config);
  const VolumeResult plain = *SegmentVolume(*gated, first_input, policy);
  const VolumeResult resumed = Streamed(*gated, policy, &seen, &streamed);
  EXPECT_FALSE(resumed.bias_refitted);
  EXPECT_EQ(resumed.labels, plain.labels);
  EXPECT_NEAR(resumed.gmacs, plain.gmacs + probe.gmacs, 1e-9);
  EXPECT_EQ(streamed, resumed.labels);
  // Static M1, the probe's own model: its masks are taken, one pass's GMACs.
  const Policy m1 = *ParsePolicy("static:M1", *gated);
  EXPECT_NEAR(Streamed(*gated, m1, &seen, &streamed).gmacs,
              SegmentVolume(*gated, first_input, m1)->gmacs, 1e-9);

  // preprocessing.bias_refit_probe_min_slices: with fewer routed slices (static M2 routes all
  // kDepth) the probe goes through the routes, as without a probe model; with as many, through M1.
  v1::BundleConfig routes_config = config;
  routes_config.mutable_preprocessing()->set_bias_refit_probe_min_slices(kDepth + 1);
  const std::unique_ptr<models::Bank> by_routes = BankOf(routes_config);
  const VolumeResult under = Streamed(*by_routes, policy, &seen, &streamed);
  EXPECT_EQ(under.labels, plain.labels);
  EXPECT_NEAR(under.gmacs, plain.gmacs, 1e-9);  // the probe's masks all taken
  routes_config.mutable_preprocessing()->set_bias_refit_probe_min_slices(kDepth);
  const std::unique_ptr<models::Bank> at = BankOf(routes_config);
  EXPECT_NEAR(Streamed(*at, policy, &seen, &streamed).gmacs, plain.gmacs + probe.gmacs, 1e-9);
}

// preprocessing.bias_refit_probe_spacing_mm: 4 mm on this 1 mm case is a probe of every fourth
// slice, its tumour widened by two slices more along z for the second fit.
TEST_F(SegmentCaseTest, TheBundlesProbeSpacingSetsTheProbesStride) {
  v1::BundleConfig config = MakeBank(/*refit_min_ml=*/0.001)->config();
  config.mutable_preprocessing()->set_bias_refit_probe_spacing_mm(4.0);
  const std::unique_ptr<models::Bank> bank = BankOf(config);
  const Policy policy = *ParsePolicy("static:M1", *bank);
  const ProbedCase c = Probed(*bank, policy, /*stride=*/4);
  for (int z = 0; z < kDepth; ++z) EXPECT_EQ(c.probe.slices[z].route, z % 4 == 0 ? 1 : 0) << z;
  const VolumeResult second = *SegmentVolume(*bank, c.refitted, policy);
  const VolumeResult result = StreamedRefit(*bank, policy, c, second);
  EXPECT_EQ(result.first_pass_gmacs, c.probe.gmacs);
  EXPECT_NEAR(result.gmacs, c.probe.gmacs + second.gmacs, 1e-9);
}

// preprocessing.bias_refit_keep_decisions: the refitted case's second pass takes the probe's
// decision-network probabilities (made on the first input) instead of running the network on the
// refitted one; every routed slice is still segmented on the refitted input, and its GMACs leave
// out the decision network's (the probe's count has them).
TEST_F(SegmentCaseTest, KeptDecisionsAreTheProbesAndTheRefittedInputIsSegmented) {
  v1::BundleConfig config = MakeBank(/*refit_min_ml=*/0.001)->config();
  config.mutable_preprocessing()->set_bias_refit_keep_decisions(true);
  const std::unique_ptr<models::Bank> bank = BankOf(config);
  const Policy policy = *ParsePolicy("dynamic", *bank);
  const ProbedCase c = Probed(*bank, policy);
  SegmentOptions taken;
  taken.decisions = &c.probe;
  const VolumeResult second = *SegmentVolume(*bank, c.refitted, policy, taken);
  const VolumeResult again = *SegmentVolume(*bank, c.refitted, policy);  // the network again
  int routed = 0, moved = 0;
  double model_gmacs = 0;
  for (int z = 0; z < kDepth; ++z) {
    EXPECT_EQ(second.slices[z].probabilities, c.probe.slices[z].probabilities) << z;
    moved += again.slices[z].probabilities != c.probe.slices[z].probabilities;
    if (const int route = second.slices[z].route; route != 0) {
      ++routed;
      model_gmacs += bank->model_config(route - 1).gmacs_per_slice();
    }
  }
  ASSERT_GT(routed, 0);  // random weights: the network routes some slices
  EXPECT_GT(moved, 0);   // the refitted input changes what the network says
  EXPECT_NEAR(second.gmacs, model_gmacs, 1e-9);
  EXPECT_NEAR(again.gmacs, model_gmacs + kDepth * bank->config().decision().gmacs_per_slice(),
              1e-9);

  const VolumeResult result = StreamedRefit(*bank, policy, c, second);
  for (int z = 0; z < kDepth; ++z) {
    EXPECT_EQ(result.slices[z].probabilities, c.probe.slices[z].probabilities) << z;
  }
  EXPECT_NEAR(result.gmacs, c.probe.gmacs + second.gmacs, 1e-9);
}

// RegionChange: the mean absolute change over the region's tissue voxels, the largest channel's.
TEST(RegionChangeTest, MeanAbsoluteChangeOverTheRegionsTissueLargestChannel) {
  volume::MultiModalVolume before;
  before.geometry.dims = {4, 1, 1};
  for (auto& channel : before.channels) channel = {1.0f, 2.0f, 0.0f, 3.0f};  // voxel 2: no tissue
  const std::vector<uint8_t> region = {1, 1, 1, 0};
  const RegionSample sample = SampleRegion(before, region);
  EXPECT_EQ(sample.voxels, (std::vector<int64_t>{0, 1}));
  volume::MultiModalVolume after = before;
  EXPECT_EQ(RegionChange(sample, after), 0.0);
  after.channels[2] = {1.5f, 1.0f, 9.0f, 3.0f};  // |0.5|, |-1| over the region's tissue
  after.channels[3] = {1.2f, 2.2f, 0.0f, 3.0f};
  EXPECT_NEAR(RegionChange(sample, after), 0.75, 1e-6);
  EXPECT_EQ(RegionChange(SampleRegion(before, {0, 0, 0, 1}), after), 0.0);  // voxel 3 unchanged
  EXPECT_EQ(RegionChange(SampleRegion(before, {0, 0, 1, 0}), after), 0.0);  // no tissue: empty
}

TEST_F(SegmentCaseTest, ASmallerTumourGetsOnePassTheProbeResumed) {
  const std::unique_ptr<models::Bank> bank = MakeBank(/*refit_min_ml=*/1e9);
  const Policy policy = *ParsePolicy("static:M1", *bank);
  const v1::Preprocessing& pre = bank->config().preprocessing();
  const VolumeResult plain = *SegmentVolume(*bank, *PrepareBankInput(pre, decoded_), policy);
  std::vector<int> seen;
  std::vector<uint8_t> streamed;
  const VolumeResult result = Streamed(*bank, policy, &seen, &streamed);
  EXPECT_FALSE(result.bias_refitted);
  EXPECT_EQ(result.refit_seconds, 0.0);
  EXPECT_EQ(result.labels, plain.labels);  // the probe resumed: the plain pass's labels
  EXPECT_NEAR(result.gmacs, plain.gmacs, 1e-9);
  for (int z = 0; z < kDepth; ++z) EXPECT_EQ(result.slices[z].route, plain.slices[z].route);
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  EXPECT_EQ(streamed, result.labels);
}

TEST_F(SegmentCaseTest, WithoutRefitNothingIsKeptAndOnePassRuns) {
  const std::unique_ptr<models::Bank> bank = MakeBank(/*refit_min_ml=*/0);
  EXPECT_FALSE(RefitsBias(bank->config().preprocessing()));
  const PreparedCase prepared = *PrepareCase(bank->config().preprocessing(), decoded_);
  EXPECT_FALSE(prepared.decoded.has_value());
  v1::Preprocessing uncorrected;
  uncorrected.set_bias_refit_min_ml(5);  // no correction: nothing to refit
  EXPECT_FALSE(RefitsBias(uncorrected));
  std::vector<int> seen;
  std::vector<uint8_t> streamed;
  const VolumeResult result = Streamed(*bank, *ParsePolicy("static:M1", *bank), &seen, &streamed);
  EXPECT_FALSE(result.bias_refitted);
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  EXPECT_EQ(streamed, result.labels);
}

// A case at half the bundle's in-plane spacing (every voxel repeated 2 x 2): the bank runs on the
// 1 mm grid (the resampled case is the 1 mm case exactly) and the labels, streamed and returned,
// come back onto the case's own grid, each 1 mm label on its 2 x 2 voxels.
TEST_F(SegmentCaseTest, ACaseAtAnotherInPlaneSpacingRunsOnTheBundlesAndComesBack) {
  std::unique_ptr<models::Bank> bank = MakeBank(/*refit_min_ml=*/0.001);
  v1::BundleConfig config = bank->config();
  config.mutable_preprocessing()->set_inplane_spacing_mm(1.0);
  bank = BankOf(config);
  const Policy policy = *ParsePolicy("static:M1", *bank);
  const VolumeResult at_1mm =
      *SegmentCase(*bank, *PrepareCase(config.preprocessing(), decoded_), policy);
  ASSERT_TRUE(at_1mm.bias_refitted);  // the refit runs on the bank's grid too

  volume::MultiModalVolume fine;
  fine.geometry =
      volume::MakeGeometry({2 * kWidth, 2 * kHeight, kDepth}, {0.5, 0.5, 1}, {-0.25, -0.25, 0});
  for (int m = 0; m < volume::kNumModalities; ++m) {
    fine.channels[m].resize(4 * kWidth * kHeight * kDepth);
    for (int64_t v = 0; v < static_cast<int64_t>(fine.channels[m].size()); ++v) {
      const int64_t x = v % (2 * kWidth), y = v / (2 * kWidth) % (2 * kHeight),
                    z = v / (4 * kWidth * kHeight);
      fine.channels[m][v] = decoded_.channels[m][(z * kHeight + y / 2) * kWidth + x / 2];
    }
  }
  const PreparedCase prepared = *PrepareCase(config.preprocessing(), fine);
  EXPECT_TRUE(prepared.geometry.SameGrid(fine.geometry));
  EXPECT_EQ(prepared.input.geometry.dims, decoded_.geometry.dims);
  std::vector<uint8_t> streamed(fine.channels[0].size(), 255);
  SegmentOptions segment_options;
  segment_options.on_slice = [&](const SliceResult& s, const uint8_t* labels) {
    std::copy(labels, labels + 4 * kWidth * kHeight,
              streamed.begin() + s.index * 4 * kWidth * kHeight);
  };
  const VolumeResult result = *SegmentCase(*bank, prepared, policy, segment_options);
  ASSERT_EQ(result.labels.size(), fine.channels[0].size());
  EXPECT_EQ(streamed, result.labels);
  int64_t tumour = 0;
  for (int64_t v = 0; v < static_cast<int64_t>(result.labels.size()); ++v) {
    const int64_t x = v % (2 * kWidth), y = v / (2 * kWidth) % (2 * kHeight),
                  z = v / (4 * kWidth * kHeight);
    ASSERT_EQ(result.labels[v], at_1mm.labels[(z * kHeight + y / 2) * kWidth + x / 2]) << v;
    tumour += result.labels[v] != 0;
  }
  EXPECT_GT(tumour, 0);
  EXPECT_TRUE(result.bias_refitted);
  EXPECT_TRUE(result.inplane_resampled);
  EXPECT_FALSE(at_1mm.inplane_resampled);
}

}  // namespace
}  // namespace danet::engine
