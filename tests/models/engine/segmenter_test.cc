// The engine's reordered routing (decision network batched over the volume, slices grouped by
// route) gives exactly what plain slice-by-slice routing gives.
#include "models/engine/segmenter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "models/bundle/bundle_config.h"
#include "models/engine/preprocess.h"

namespace danet::engine {
namespace {

class SegmenterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    bank_ = MakeBank(/*channels_last=*/false);
    // A 64 x 48 x 24 volume whose slices differ a lot: two empty (no tissue),
    // then each slice lights one channel with its own sign, strength and texture.
    volume_.geometry = volume::MakeGeometry({64, 48, 24}, {1, 1, 1}, {0, 0, 0});
    std::mt19937 rng(3);
    std::normal_distribution<float> noise(0, 1);
    for (auto& channel : volume_.channels) channel.assign(64 * 48 * 24, 0.0f);
    for (int64_t z = 2; z < 24; ++z) {
      const float sign = (z % 2) ? 1.0f : -1.0f, strength = 1.0f + (z % 3) * 2.0f;
      for (int64_t v = 0; v < 64 * 48; ++v) {
        volume_.channels[z % 4][z * 64 * 48 + v] =
            sign * strength * ((v % 64) / 32.0f - 1.0f) + noise(rng) * (z % 5) * 0.5f;
      }
    }
  }

  // The tiny preset with seeded random weights, the decision network's classifier scaled so that
  // small differences between slices change the argmax (choices spread over every route).
  static std::unique_ptr<models::Bank> MakeBank(bool channels_last, bool crop_decision = false) {
    models::BankOptions options;
    options.load_weights = false;
    options.seed = 21;
    options.channels_last = channels_last;
    v1::BundleConfig config = *models::PresetConfig("tiny");
    config.mutable_preprocessing()->set_slice_height(48);
    config.mutable_preprocessing()->set_slice_width(64);
    config.mutable_decision()->set_crop_to_brain(crop_decision);
    std::unique_ptr<models::Bank> bank = *models::Bank::Create(config, ".", options);
    for (auto& [name, tensor] : bank->decision().NamedState()) {
      if (name == "classifier.weight") {
        torch::NoGradGuard no_grad;
        tensor.mul_(200.0);
      }
    }
    return bank;
  }

  // Zeroes every voxel outside columns [left, right) and rows [top, bottom) of every slice.
  void KeepOnlyPatch(int64_t left, int64_t right, int64_t top, int64_t bottom) {
    for (auto& channel : volume_.channels) {
      for (int64_t v = 0; v < static_cast<int64_t>(channel.size()); ++v) {
        const int64_t x = v % 64, y = (v / 64) % 48;
        if (x < left || x >= right || y < top || y >= bottom) channel[v] = 0;
      }
    }
  }

  // A stride-2 probe of `policy` altered to show what a later pass takes from it: the first
  // slice from z = 2 on that the probe segmented gets label 2 everywhere (`marked`), and the first
  // odd slice (with tissue, not sampled, so skipped in the probe) gets every probability on the
  // last model (`redirected`).
  struct AlteredProbe {
    VolumeResult probe;
    int marked = -1, redirected = -1;
  };
  AlteredProbe Altered(const Policy& policy) {
    SegmentOptions probe_options;
    probe_options.probe_stride = 2;
    AlteredProbe a{*SegmentVolume(*bank_, volume_, policy, probe_options)};
    for (int z = 2; z < 24; ++z) {
      if (a.probe.slices[z].route != 0 && a.marked < 0) {
        a.marked = z;
        std::fill(a.probe.labels.begin() + z * 64 * 48, a.probe.labels.begin() + (z + 1) * 64 * 48,
                  uint8_t{2});
      } else if (z % 2 == 1 && a.redirected < 0) {
        a.redirected = z;
        std::vector<float>& p = a.probe.slices[z].probabilities;
        std::fill(p.begin(), p.end(), 0);
        p.back() = 1;  // the last model, surely
      }
    }
    EXPECT_GE(a.marked, 0);
    EXPECT_GE(a.redirected, 0);
    return a;
  }

  // Route and mask of each slice, computed one slice at a time.
  std::vector<uint8_t> SliceBySlice(std::vector<int>* routes) {
    torch::NoGradGuard no_grad;
    std::vector<uint8_t> labels(volume_.channels[0].size());
    for (int64_t z = 0; z < 24; ++z) {
      std::vector<torch::Tensor> channels;
      for (auto& channel : volume_.channels) {
        channels.push_back(torch::from_blob(channel.data() + z * 64 * 48, {48, 64}).clone());
      }
      const torch::Tensor x = torch::stack(channels).unsqueeze(0);
      // A slice without tissue (all zero) is skipped without asking the decision network.
      const int route =
          x.ne(0).any().item<bool>()
              ? static_cast<int>(bank_->decision().Forward(x).argmax(1).item<int64_t>())
              : 0;
      routes->push_back(route);
      if (route == 0) continue;
      const torch::Tensor classes =
          bank_->model(route - 1).Forward(x).argmax(1)[0].to(torch::kUInt8);
      for (int64_t v = 0; v < 64 * 48; ++v) {
        labels[z * 64 * 48 + v] = volume::ClassToLabel(classes.data_ptr<uint8_t>()[v]);
      }
    }
    return labels;
  }

  std::unique_ptr<models::Bank> bank_;
  volume::MultiModalVolume volume_;
};

TEST_F(SegmenterTest, GroupedRoutingEqualsSliceBySliceRouting) {
  std::vector<int> expected_routes;
  const std::vector<uint8_t> expected = SliceBySlice(&expected_routes);
  ASSERT_GE(std::set<int>(expected_routes.begin(), expected_routes.end()).size(), 3u)
      << "the test volume should exercise several routes: "
      << ::testing::PrintToString(expected_routes);
  for (int decision_batch : {1, 7, 16}) {
    SegmentOptions options;
    options.decision_batch = decision_batch;
    absl::StatusOr<VolumeResult> result = SegmentVolume(*bank_, volume_, Policy{}, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->labels, expected) << "decision batch " << decision_batch;
    for (int z = 0; z < 24; ++z) EXPECT_EQ(result->slices[z].route, expected_routes[z]) << z;
  }
}

// A slice without tissue (all zero) is skipped with skip probability 1, without the decision
// network, and the skip margin leaves it alone even between routed slices.
TEST_F(SegmenterTest, SlicesWithoutTissueAreSkippedAndNeverWidenedInto) {
  const Policy policy = *ParsePolicy("dynamic+m1", *bank_);
  const VolumeResult before = *SegmentVolume(*bank_, volume_, policy);
  ASSERT_NE(before.slices[9].route, 0);
  ASSERT_NE(before.slices[11].route, 0);
  for (auto& channel : volume_.channels) {
    std::fill(channel.begin() + 10 * 64 * 48, channel.begin() + 11 * 64 * 48, 0.0f);
  }
  absl::StatusOr<VolumeResult> result = SegmentVolume(*bank_, volume_, policy);
  ASSERT_TRUE(result.ok()) << result.status();
  for (int z : {0, 10}) {
    EXPECT_EQ(result->slices[z].route, 0) << z;
    std::vector<float> skip(result->slices[z].probabilities.size(), 0.0f);
    skip[0] = 1.0f;
    EXPECT_EQ(result->slices[z].probabilities, skip) << z;
  }
  EXPECT_EQ(result->slices[9].route, before.slices[9].route);
  EXPECT_EQ(result->slices[11].route, before.slices[11].route);
}

TEST(BrainBoxTest, IsTheNonZeroBoxOnTheSixteenVoxelGrid) {
  torch::Tensor slices = torch::zeros({5, 4, 64, 80});
  EXPECT_EQ(BrainBox(slices).bottom, 64);  // nothing non-zero: the whole slice
  EXPECT_EQ(BrainBox(slices).right, 80);
  slices.index_put_({2, 3, 20, 5}, 1.0f);    // one channel of one slice is enough
  slices.index_put_({4, 0, 37, 50}, -2.0f);  // negative values are brain too
  const SliceBox box = BrainBox(slices);
  EXPECT_EQ(box.top, 16);
  EXPECT_EQ(box.bottom, 48);
  EXPECT_EQ(box.left, 0);
  EXPECT_EQ(box.right, 64);
  slices.index_put_({0, 1, 63, 79}, 1.0f);
  EXPECT_EQ(BrainBox(slices).bottom, 64);
  EXPECT_EQ(BrainBox(slices).right, 80);
}

TEST(BrainBoxTest, OnTheDecisionNetworksGridIsClampedToTheSlice) {
  torch::Tensor plane = torch::zeros({48, 80}, torch::kBool);
  plane.index_put_({36, 33}, true);
  plane.index_put_({43, 70}, true);
  const SliceBox box = PlaneBox(plane, kDecisionStride);
  EXPECT_EQ(box.top, 32);
  EXPECT_EQ(box.bottom, 48);  // 64 on the grid, clamped
  EXPECT_EQ(box.left, 32);
  EXPECT_EQ(box.right, 80);  // 96 on the grid, clamped
  const SliceBox fine = PlaneBox(plane);
  EXPECT_EQ(fine.left, 32);
  EXPECT_EQ(fine.right, 80);
  EXPECT_EQ(fine.top, 32);
  EXPECT_EQ(fine.bottom, 48);
  plane.index_put_({36, 33}, false);
  plane.index_put_({43, 70}, false);
  plane.index_put_({20, 40}, true);
  EXPECT_EQ(PlaneBox(plane, kDecisionStride).top, 0);
  EXPECT_EQ(PlaneBox(plane, kDecisionStride).bottom, 32);
  EXPECT_EQ(PlaneBox(plane).top, 16);
  EXPECT_EQ(PlaneBox(plane).bottom, 32);
}

TEST(ScanTissueTest, AgreesWithTheTensorReductions) {
  torch::manual_seed(3);
  // Sparse non-zeros (about one voxel in 2000), two slices left empty, one NaN.
  torch::Tensor slices = torch::randn({7, 4, 48, 32}) * (torch::rand({7, 4, 48, 32}) < 5e-4);
  slices.index_put_({2}, 0.0f);
  slices.index_put_({5}, 0.0f);
  slices.index_put_({6, 2, 40, 31}, std::nanf(""));
  const TissueScan scan = ScanTissue(slices);
  const torch::Tensor nonzero = slices.ne(0);
  const torch::Tensor occupied = nonzero.flatten(1).any(1);
  ASSERT_EQ(scan.has_tissue.size(), 7u);
  for (int64_t z = 0; z < 7; ++z) EXPECT_EQ(scan.has_tissue[z], occupied[z].item<bool>()) << z;
  EXPECT_FALSE(scan.has_tissue[2]);
  EXPECT_TRUE(scan.has_tissue[6]);
  EXPECT_TRUE(torch::equal(scan.plane, nonzero.any(0).any(0)));
}

TEST_F(SegmenterTest, BrainBoxLeavesLabelsOutsideItBackgroundAndKeepsThemInside) {
  // Only a 20 x 10 patch of every slice is brain; the models see a 32 x 16 box.
  KeepOnlyPatch(17, 37, 18, 28);
  const Policy policy = *ParsePolicy("static:M2", *bank_);
  SegmentOptions full;
  full.crop_to_brain = false;
  const VolumeResult cropped = *SegmentVolume(*bank_, volume_, policy);
  const VolumeResult whole = *SegmentVolume(*bank_, volume_, policy, full);
  EXPECT_NEAR(cropped.window_fraction, (32.0 * 16) / (64 * 48), 1e-9);
  EXPECT_EQ(whole.window_fraction, 1.0);
  int64_t inside = 0, inside_same = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(cropped.labels.size()); ++i) {
    const int64_t x = i % 64, y = (i / 64) % 48;
    if (x >= 16 && x < 48 && y >= 16 && y < 32) {
      ++inside;
      inside_same += cropped.labels[i] == whole.labels[i];
    } else {
      ASSERT_EQ(cropped.labels[i], 0) << "voxel " << i << " lies outside the box";
    }
  }
  // A random-weight network: edge effects are larger than a trained one's (the 0.1% bound on
  // the shipped bundle is tests/models/tools/test_danet_segment.py's), but most labels agree.
  EXPECT_GT(static_cast<double>(inside_same) / inside, 0.5);
}

// With the decision network on the brain's box, each slice's probabilities are those of the
// network on that box (rows 32-48, columns 32-64 on its 32-voxel grid) and no longer those of the
// whole slice; unset, the bundle's decision.crop_to_brain decides.
TEST_F(SegmenterTest, DecisionNetworkOnTheBrainBoxSeesTheBoxOnly) {
  KeepOnlyPatch(40, 60, 36, 44);
  const torch::Tensor stack = SliceStack(volume_);
  auto expected = [&](const torch::Tensor& input) {
    torch::NoGradGuard no_grad;
    return torch::softmax(bank_->decision().Forward(input), 1);
  };
  const torch::Tensor on_box = expected(stack.slice(2, 32, 48).slice(3, 32, 64).contiguous());
  const torch::Tensor on_slice = expected(stack);
  SegmentOptions box_options, slice_options;
  box_options.crop_decision = true;
  slice_options.crop_decision = false;
  const VolumeResult box = *SegmentVolume(*bank_, volume_, Policy{}, box_options);
  const VolumeResult slice = *SegmentVolume(*bank_, volume_, Policy{}, slice_options);
  const VolumeResult unset = *SegmentVolume(*bank_, volume_, Policy{});
  float largest_change = 0;
  for (int64_t z = 2; z < 24; ++z) {
    for (int64_t r = 0; r < on_box.size(1); ++r) {
      EXPECT_NEAR(box.slices[z].probabilities[r], on_box[z][r].item<float>(), 1e-5) << z;
      EXPECT_NEAR(slice.slices[z].probabilities[r], on_slice[z][r].item<float>(), 1e-5) << z;
      largest_change = std::max(
          largest_change, std::abs(on_box[z][r].item<float>() - on_slice[z][r].item<float>()));
    }
    EXPECT_EQ(unset.slices[z].probabilities, slice.slices[z].probabilities) << z;
  }
  EXPECT_GT(largest_change, 0.01f) << "the box should change what the network sees";

  const std::unique_ptr<models::Bank> cropping = MakeBank(false, /*crop_decision=*/true);
  const VolumeResult from_bundle = *SegmentVolume(*cropping, volume_, Policy{});
  for (int64_t z = 2; z < 24; ++z) {
    EXPECT_EQ(from_bundle.slices[z].probabilities, box.slices[z].probabilities) << z;
  }
}

// Policy::decision_slices ('+z3'): the decision network sees each tissue slice averaged with the
// slices beside it (the empty slice 1 counts as a neighbour of slice 2; the volume's last slice
// has one neighbour), and routes on that; the bank still segments each slice as it is.
TEST_F(SegmenterTest, DecisionNetworkOnNeighbourMeansSeesTheMean) {
  const Policy parsed = *ParsePolicy("dynamic+z5+d2+f4+c30", *bank_);
  EXPECT_EQ(parsed.decision_slices, 5);
  EXPECT_EQ(parsed.Name(*bank_), "dynamic+d2+f4+c30+z5");
  EXPECT_EQ(ParsePolicy(parsed.Name(*bank_), *bank_)->Name(*bank_), parsed.Name(*bank_));
  EXPECT_EQ(ParsePolicy("dynamic+z1", *bank_)->Name(*bank_), "dynamic");
  for (const char* bad : {"dynamic+z", "dynamic+z2", "dynamic+z0", "dynamic+z11", "dynamic+z-1",
                          "dynamic+zx", "dynamic+z3+z3", "static:M1+z3"}) {
    EXPECT_EQ(ParsePolicy(bad, *bank_).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(ParsePolicy("dynamic+z4", *bank_).status().message(),
              ::testing::HasSubstr("the decision slices after '+z' are not an odd number in 1..9"));

  const torch::Tensor stack = SliceStack(volume_);
  const int64_t depth = stack.size(0);
  std::vector<torch::Tensor> means;
  for (int64_t z = 0; z < depth; ++z) {
    const int64_t first = std::max<int64_t>(0, z - 1), last = std::min<int64_t>(depth - 1, z + 1);
    means.push_back(stack.slice(0, first, last + 1).mean(0));
  }
  torch::Tensor expected, alone;
  {
    torch::NoGradGuard no_grad;
    expected = torch::softmax(bank_->decision().Forward(torch::stack(means)), 1);
    alone = torch::softmax(bank_->decision().Forward(stack), 1);
  }
  SegmentOptions options;
  options.crop_decision = false;
  const Policy policy = *ParsePolicy("dynamic+z3", *bank_);
  ASSERT_EQ(policy.decision_slices, 3);
  const VolumeResult averaged = *SegmentVolume(*bank_, volume_, policy, options);
  const VolumeResult plain = *SegmentVolume(*bank_, volume_, Policy{}, options);
  float largest_change = 0;
  for (int64_t z = 2; z < depth; ++z) {
    for (int64_t r = 0; r < expected.size(1); ++r) {
      EXPECT_NEAR(averaged.slices[z].probabilities[r], expected[z][r].item<float>(), 1e-5) << z;
      EXPECT_NEAR(plain.slices[z].probabilities[r], alone[z][r].item<float>(), 1e-5) << z;
      largest_change = std::max(largest_change,
                                std::abs(expected[z][r].item<float>() - alone[z][r].item<float>()));
    }
    // Where both send a slice to the same model, its mask is the same: the model saw the slice.
    const int64_t plane = 64 * 48;
    if (averaged.slices[z].route == plain.slices[z].route) {
      EXPECT_TRUE(std::equal(averaged.labels.begin() + z * plane,
                             averaged.labels.begin() + (z + 1) * plane,
                             plain.labels.begin() + z * plane))
          << z;
    }
  }
  EXPECT_GT(largest_change, 0.01f) << "the mean should change what the network sees";
  for (int64_t z = 0; z < 2; ++z) EXPECT_EQ(averaged.slices[z].route, 0) << "no tissue";
}

TEST_F(SegmenterTest, ChannelsLastGivesTheSameRoutesAndNearlyTheSameLabels) {
  // The same weights in NHWC: the same arithmetic in another order.
  std::unique_ptr<models::Bank> nhwc = MakeBank(/*channels_last=*/true);
  ASSERT_EQ(nhwc->memory_format(), at::MemoryFormat::ChannelsLast);
  int converted = 0;
  for (const at::Tensor& p : nhwc->model(0).Parameters()) {
    if (p.dim() == 4) {
      EXPECT_TRUE(p.is_contiguous(at::MemoryFormat::ChannelsLast));
      ++converted;
    }
  }
  EXPECT_GT(converted, 0);
  for (const char* text : {"dynamic", "static:M1", "static:M2", "static:M3", "static:M4"}) {
    const VolumeResult a = *SegmentVolume(*bank_, volume_, *ParsePolicy(text, *bank_));
    const VolumeResult b = *SegmentVolume(*nhwc, volume_, *ParsePolicy(text, *nhwc));
    for (size_t z = 0; z < a.slices.size(); ++z) {
      EXPECT_EQ(a.slices[z].route, b.slices[z].route) << text << " slice " << z;
    }
    int64_t same = 0;
    for (size_t i = 0; i < a.labels.size(); ++i) same += a.labels[i] == b.labels[i];
    EXPECT_GE(static_cast<double>(same) / static_cast<double>(a.labels.size()), 0.999) << text;
  }
}

TEST_F(SegmenterTest, StaticPolicySendsEverySliceToItsModelAndCountsCost) {
  const Policy policy = *ParsePolicy("static:M2", *bank_);
  absl::StatusOr<VolumeResult> result = SegmentVolume(*bank_, volume_, policy);
  ASSERT_TRUE(result.ok());
  for (const SliceResult& s : result->slices) {
    EXPECT_EQ(s.route, 2);
    EXPECT_TRUE(s.probabilities.empty());
  }
  EXPECT_NEAR(result->gmacs, 24 * bank_->model_config(1).gmacs_per_slice(), 1e-9);
}

TEST_F(SegmenterTest, EverySliceIsReportedOnceWithItsFinalMask) {
  // Following the tumour may still route a skipped slice, so its skipped slices come last;
  // cleaning small components (here: every component, the volume is smaller) reports all
  // slices at the end, cleaned.
  for (const char* name :
       {"dynamic", "dynamic@0.5+f4", "dynamic@0.5+f4+c100000", "dynamic@0.5+e100000"}) {
    std::vector<int> seen(24, 0);
    std::vector<uint8_t> streamed(64 * 48 * 24, 255);
    std::vector<int> streamed_routes(24, -1);
    SegmentOptions options;
    options.on_slice = [&](const SliceResult& s, const uint8_t* labels) {
      ++seen[s.index];
      streamed_routes[s.index] = s.route;
      std::copy(labels, labels + 64 * 48, streamed.begin() + s.index * 64 * 48);
    };
    absl::StatusOr<VolumeResult> result =
        SegmentVolume(*bank_, volume_, *ParsePolicy(name, *bank_), options);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(seen, std::vector<int>(24, 1)) << name;
    EXPECT_EQ(streamed, result->labels) << name;
    for (int z = 0; z < 24; ++z) EXPECT_EQ(streamed_routes[z], result->slices[z].route) << z;
  }
}

// A probe (probe_stride) segments only the routed slices on its stride, reports nothing and
// neither follows nor cleans; resuming it gives what one plain pass gives, streamed the same
// way, and runs the models only on the routed slices the probe left.
TEST_F(SegmenterTest, AResumedProbeGivesThePlainPass) {
  for (const char* name : {"dynamic", "dynamic@0.5+f4+c30+e20", "static:M2"}) {
    const Policy policy = *ParsePolicy(name, *bank_);
    const VolumeResult plain = *SegmentVolume(*bank_, volume_, policy);
    SegmentOptions probe_options;
    probe_options.probe_stride = 3;
    int probe_reports = 0;
    probe_options.on_slice = [&](const SliceResult&, const uint8_t*) { ++probe_reports; };
    const VolumeResult probe = *SegmentVolume(*bank_, volume_, policy, probe_options);
    EXPECT_EQ(probe_reports, 0) << name;
    int probed = 0;
    double model_gmacs_left = 0;
    for (int z = 0; z < 24; ++z) {
      EXPECT_EQ(probe.slices[z].probabilities, plain.slices[z].probabilities) << name << z;
      const auto begin = z * 64 * 48, end = (z + 1) * 64 * 48;
      const bool sampled = z % 3 == 0 && plain.slices[z].route != 0;
      // Following the tumour may route a slice the probe's routes skip: not sampled either.
      if (sampled && probe.slices[z].route == plain.slices[z].route) {
        ++probed;
        EXPECT_TRUE(std::equal(probe.labels.begin() + begin, probe.labels.begin() + end,
                               plain.labels.begin() + begin) ||
                    policy.min_component > 0)
            << name << z;
      } else {
        EXPECT_EQ(probe.slices[z].route, 0) << name << z;
        EXPECT_EQ(std::count(probe.labels.begin() + begin, probe.labels.begin() + end, 0), 64 * 48)
            << name << z;
        if (plain.slices[z].route != 0) {
          model_gmacs_left += bank_->model_config(plain.slices[z].route - 1).gmacs_per_slice();
        }
      }
    }
    EXPECT_GT(probed, 0) << name;

    std::vector<int> seen(24, 0);
    std::vector<uint8_t> streamed(64 * 48 * 24, 255);
    SegmentOptions resume_options;
    resume_options.resume = &probe;
    resume_options.on_slice = [&](const SliceResult& s, const uint8_t* labels) {
      ++seen[s.index];
      std::copy(labels, labels + 64 * 48, streamed.begin() + s.index * 64 * 48);
    };
    const VolumeResult resumed = *SegmentVolume(*bank_, volume_, policy, resume_options);
    EXPECT_EQ(resumed.labels, plain.labels) << name;
    EXPECT_NEAR(resumed.gmacs, plain.gmacs, 1e-9) << name;
    for (int z = 0; z < 24; ++z) {
      EXPECT_EQ(resumed.slices[z].route, plain.slices[z].route) << name << z;
      EXPECT_EQ(resumed.slices[z].probabilities, plain.slices[z].probabilities) << name << z;
    }
    EXPECT_EQ(seen, std::vector<int>(24, 1)) << name;
    EXPECT_EQ(streamed, resumed.labels) << name;
    // The models ran on the rest only: the probe's GMACs and what it left add up to the pass's.
    EXPECT_NEAR(probe.gmacs + model_gmacs_left, plain.gmacs, 1e-9) << name;
  }
  // What is taken from the probe: a probe whose masks and decisions were altered shows through.
  const Policy policy = *ParsePolicy("dynamic", *bank_);
  const AlteredProbe a = Altered(policy);
  ASSERT_FALSE(HasFailure());
  const VolumeResult& altered = a.probe;
  const int marked = a.marked, redirected = a.redirected;
  SegmentOptions resume_options;
  resume_options.resume = &altered;
  const VolumeResult resumed = *SegmentVolume(*bank_, volume_, policy, resume_options);
  EXPECT_EQ(std::count(resumed.labels.begin() + marked * 64 * 48,
                       resumed.labels.begin() + (marked + 1) * 64 * 48, 2),
            64 * 48);
  EXPECT_EQ(resumed.slices[marked].seconds, altered.slices[marked].seconds);
  EXPECT_EQ(resumed.slices[redirected].route, bank_->size());

  SegmentOptions bad;
  bad.probe_stride = 0;
  EXPECT_EQ(SegmentVolume(*bank_, volume_, Policy{}, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  VolumeResult other;
  other.slices.resize(3);
  bad.probe_stride = 1;
  bad.resume = &other;
  EXPECT_EQ(SegmentVolume(*bank_, volume_, Policy{}, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// SegmentOptions::decisions takes a probe's decision-network probabilities only: a probe whose
// decisions and masks were altered shows its decisions through, not its masks; every routed slice
// is segmented, and the slices' GMACs leave out the decision network's.
TEST_F(SegmenterTest, TakenDecisionsRouteButTheMasksAreComputed) {
  const Policy policy = *ParsePolicy("dynamic", *bank_);
  const VolumeResult plain = *SegmentVolume(*bank_, volume_, policy);
  const AlteredProbe a = Altered(policy);
  ASSERT_FALSE(HasFailure());
  const VolumeResult& altered = a.probe;
  const int redirected = a.redirected;
  SegmentOptions taken;
  taken.decisions = &altered;
  const VolumeResult result = *SegmentVolume(*bank_, volume_, policy, taken);
  double model_gmacs = 0;
  for (int z = 0; z < 24; ++z) {
    EXPECT_EQ(result.slices[z].probabilities, altered.slices[z].probabilities) << z;
    if (z != redirected) {
      EXPECT_EQ(result.slices[z].route, plain.slices[z].route) << z;
      EXPECT_TRUE(std::equal(result.labels.begin() + z * 64 * 48,
                             result.labels.begin() + (z + 1) * 64 * 48,
                             plain.labels.begin() + z * 64 * 48))
          << z;  // the marked slice's mask too: segmented, not taken
    }
    if (result.slices[z].route != 0) {
      model_gmacs += bank_->model_config(result.slices[z].route - 1).gmacs_per_slice();
      EXPECT_EQ(result.slices[z].gmacs,
                bank_->model_config(result.slices[z].route - 1).gmacs_per_slice())
          << z;
    } else {
      EXPECT_EQ(result.slices[z].gmacs, 0.0) << z;
    }
  }
  EXPECT_EQ(result.slices[redirected].route, bank_->size());
  EXPECT_NEAR(result.gmacs, model_gmacs, 1e-9);

  VolumeResult other;
  other.slices.resize(3);
  SegmentOptions bad;
  bad.decisions = &other;
  EXPECT_EQ(SegmentVolume(*bank_, volume_, policy, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  const VolumeResult fixed = *SegmentVolume(*bank_, volume_, *ParsePolicy("static:M1", *bank_));
  bad.decisions = &fixed;  // a static pass has no decisions to take
  const absl::Status status = SegmentVolume(*bank_, volume_, policy, bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), ::testing::HasSubstr("static"));
}

TEST_F(SegmenterTest, CostBiasMovesRoutesTowardCheaperOrStrongerModels) {
  const VolumeResult plain = *SegmentVolume(*bank_, volume_, *ParsePolicy("dynamic@0", *bank_));
  Policy cheap = *ParsePolicy("dynamic@1000", *bank_);
  Policy strong = *ParsePolicy("dynamic@-1000", *bank_);
  EXPECT_EQ(strong.Name(*bank_), "dynamic@-1000");
  const VolumeResult cheapest = *SegmentVolume(*bank_, volume_, cheap);
  const VolumeResult strongest = *SegmentVolume(*bank_, volume_, strong);
  EXPECT_LT(cheapest.gmacs, plain.gmacs);
  EXPECT_GT(strongest.gmacs, plain.gmacs);
  int largest = 0;  // the most expensive model (in the tiny preset that is not always M4)
  for (int i = 1; i < bank_->size(); ++i) {
    if (bank_->model_config(i).gmacs_per_slice() > bank_->model_config(largest).gmacs_per_slice()) {
      largest = i;
    }
  }
  for (int z = 0; z < 24; ++z) {
    EXPECT_EQ(cheapest.slices[z].route, 0) << z;  // skip costs nothing
    // Slices 0 and 1 hold no tissue: skipped whatever the bias.
    EXPECT_EQ(strongest.slices[z].route, z < 2 ? 0 : largest + 1) << z;
  }
  // A small bias only changes slices whose top routes were close.
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  const float p[] = {0.30f, 0.29f, 0.2f, 0.11f, 0.1f};
  EXPECT_EQ(BiasedRoute(p, costs, 0.0), 0);
  EXPECT_EQ(BiasedRoute(p, costs, -0.5), 1);
  EXPECT_EQ(ParsePolicy("dynamic@x", *bank_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SegmenterTest, SkipMarginRoutesTheSkippedNeighboursOfRoutedSlices) {
  // Routes skip skip skip M2 skip skip skip skip M1 skip: margin 1 routes slices 2, 4, 7, 9;
  // margin 2 also 1, 5, 6 (two-sided, from the original routes only).
  const std::vector<int> routes = {0, 0, 0, 2, 0, 0, 0, 0, 1, 0};
  std::vector<SliceResult> p(routes.size());
  for (SliceResult& s : p) s.probabilities = {0.6f, 0.1f, 0.2f, 0.05f, 0.05f};
  p[7].probabilities = {0.5f, 0.05f, 0.05f, 0.1f, 0.3f};  // its best non-skip route is M4
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  EXPECT_EQ(WidenRoutes(routes, p, costs, 0, 0), routes);
  EXPECT_EQ(WidenRoutes(routes, p, costs, 0, 1), (std::vector<int>{0, 0, 2, 2, 2, 0, 0, 4, 1, 2}));
  EXPECT_EQ(WidenRoutes(routes, p, costs, 0, 2), (std::vector<int>{0, 2, 2, 2, 2, 2, 2, 4, 1, 2}));
  // The cost bias applies to the non-skip choice too: a large bias picks the cheapest model.
  EXPECT_EQ(WidenRoutes(routes, p, costs, 1000, 1),
            (std::vector<int>{0, 0, 1, 2, 1, 0, 0, 1, 1, 1}));
  // With a minimum run of 2 the lone routed slices 3 and 8 widen nothing; the run 4..5 below
  // does (margin 1: slices 3 and 6).
  EXPECT_EQ(WidenRoutes(routes, p, costs, 0, 2, 2), routes);
  const std::vector<int> with_run = {0, 0, 0, 0, 2, 2, 0, 0, 1, 0};
  EXPECT_EQ(WidenRoutes(with_run, p, costs, 0, 1, 2),
            (std::vector<int>{0, 0, 0, 2, 2, 2, 2, 0, 1, 0}));
  EXPECT_EQ(WidenRoutes(with_run, p, costs, 0, 1, 3), with_run);
  std::vector<SliceResult> all_skip(5);
  for (SliceResult& s : all_skip) s.probabilities = {0.9f, 0.1f, 0, 0, 0};
  EXPECT_EQ(WidenRoutes(std::vector<int>(5, 0), all_skip, costs, 0, 3), std::vector<int>(5, 0));
}

TEST_F(SegmenterTest, SkipMarginInTheEngineSkipsOnlyFarFromRoutedSlices) {
  // The fixture's network routes every slice with tissue; a cost bias makes it skip some.
  // Take the first bias that leaves a skipped slice with tissue next to a routed one.
  bool tested = false;
  for (const char* bias : {"0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"}) {
    const Policy plain_policy = *ParsePolicy(absl::StrCat("dynamic@", bias), *bank_);
    const Policy policy = *ParsePolicy(absl::StrCat("dynamic@", bias, "+m1"), *bank_);
    EXPECT_EQ(policy.skip_margin, 1);
    const VolumeResult plain = *SegmentVolume(*bank_, volume_, plain_policy);
    bool widenable = false;
    for (int z = 3; z < 23; ++z) {
      widenable |= plain.slices[z].route == 0 &&
                   (plain.slices[z - 1].route != 0 || plain.slices[z + 1].route != 0);
    }
    if (!widenable) continue;
    const VolumeResult widened = *SegmentVolume(*bank_, volume_, policy);
    int changed = 0;
    for (int z = 0; z < 24; ++z) {
      // Slices 0 and 1 hold no tissue and are never widened into.
      const bool near_routed =
          z >= 2 && ((plain.slices[z - 1].route != 0) || plain.slices[z].route != 0 ||
                     (z < 23 && plain.slices[z + 1].route != 0));
      EXPECT_EQ(widened.slices[z].route != 0, near_routed) << bias << " " << z;
      if (plain.slices[z].route != 0) {
        EXPECT_EQ(widened.slices[z].route, plain.slices[z].route) << z;
      }
      changed += widened.slices[z].route != plain.slices[z].route;
    }
    EXPECT_GT(changed, 0);
    EXPECT_GT(widened.gmacs, plain.gmacs);
    tested = true;
    break;
  }
  EXPECT_TRUE(tested) << "no cost bias left a skipped slice next to a routed one";
  EXPECT_EQ(ParsePolicy("dynamic+m1", *bank_)->Name(*bank_), "dynamic+m1");
  const Policy both = *ParsePolicy("dynamic@0.5+m3", *bank_);
  EXPECT_EQ(both.cost_bias, 0.5);
  EXPECT_EQ(both.skip_margin, 3);
  EXPECT_EQ(both.Name(*bank_), "dynamic@0.5+m3");
  const Policy runs = *ParsePolicy("dynamic+m2r2", *bank_);
  EXPECT_EQ(runs.skip_margin, 2);
  EXPECT_EQ(runs.margin_min_run, 2);
  EXPECT_EQ(runs.Name(*bank_), "dynamic+m2r2");
  EXPECT_EQ(ParsePolicy("dynamic+m2r1", *bank_)->Name(*bank_), "dynamic+m2");
  const Policy follow = *ParsePolicy("dynamic+f4v20+m2", *bank_);
  EXPECT_EQ(follow.follow_tumour, 4);
  EXPECT_EQ(follow.follow_min_voxels, 20);
  EXPECT_EQ(follow.skip_margin, 2);
  EXPECT_EQ(follow.Name(*bank_), "dynamic+m2+f4v20");
  EXPECT_EQ(ParsePolicy("dynamic+f4", *bank_)->follow_min_voxels, kDefaultFollowMinVoxels);
  EXPECT_EQ(ParsePolicy(absl::StrCat("dynamic+f4v", kDefaultFollowMinVoxels), *bank_)->Name(*bank_),
            "dynamic+f4");
  const Policy clean = *ParsePolicy("dynamic+c30+f4", *bank_);
  EXPECT_EQ(clean.min_component, 30);
  EXPECT_EQ(clean.Name(*bank_), "dynamic+f4+c30");
  EXPECT_EQ(ParsePolicy("dynamic+c0", *bank_)->Name(*bank_), "dynamic");
  const Policy enhancing = *ParsePolicy("dynamic+e10+c30+f4", *bank_);
  EXPECT_EQ(enhancing.min_enhancing, 10);
  EXPECT_EQ(enhancing.min_component, 30);
  EXPECT_EQ(enhancing.Name(*bank_), "dynamic+f4+c30+e10");
  EXPECT_EQ(ParsePolicy("dynamic+e0", *bank_)->Name(*bank_), "dynamic");
  const absl::Status bad_enhancing = ParsePolicy("dynamic+ex", *bank_).status();
  EXPECT_NE(bad_enhancing.message().find("'+e'"), std::string::npos) << bad_enhancing;
  for (const char* bad :
       {"dynamic+m",       "dynamic+m-1",       "dynamic+m33",  "dynamic+mx",    "dynamic+2",
        "dynamicx",        "dynamic@+m1",       "dynamic+m2r0", "dynamic+m2r",   "dynamic+mr2",
        "dynamic+m2r33",   "dynamic+s",         "dynamic+s1.5", "dynamic+s-0.1", "dynamic+sx",
        "dynamic+m1+m2",   "dynamic+s0.5+s0.6", "dynamic+m2+",  "dynamic++m2",   "dynamic+f",
        "dynamic+f-1",     "dynamic+f33",       "dynamic+fx",   "dynamic+f2v",   "dynamic+f2v0",
        "dynamic+fv5",     "dynamic+f1+f2",     "dynamic+c",    "dynamic+c-1",   "dynamic+cx",
        "dynamic+c100001", "dynamic+c1+c2",     "dynamic+e",    "dynamic+e-1",   "dynamic+ex",
        "dynamic+e100001", "dynamic+e1+e2"}) {
    EXPECT_EQ(ParsePolicy(bad, *bank_).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(SegmenterTest, GapFillRoutesOnlyShortGapsBetweenRoutedSlices) {
  // Routed: 1 (M2), 4 (M3), 9 (M1). A gap of 2 (slices 2-3) and one of 4 (slices 5-8); the
  // slices before the first and after the last routed one lie in no gap.
  const std::vector<int> routes = {0, 2, 0, 0, 3, 0, 0, 0, 0, 1, 0, 0};
  std::vector<SliceResult> p(routes.size());
  for (SliceResult& s : p) s.probabilities = {0.6f, 0.1f, 0.2f, 0.05f, 0.05f};
  p[6].probabilities = {0.5f, 0.05f, 0.05f, 0.1f, 0.3f};  // its best model is M4
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  std::vector<bool> eligible(routes.size(), true);
  Policy policy;
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy), routes);
  policy.fill_gaps = 2;
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy),
            (std::vector<int>{0, 2, 2, 2, 3, 0, 0, 0, 0, 1, 0, 0}));
  policy.fill_gaps = 4;
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy),
            (std::vector<int>{0, 2, 2, 2, 3, 2, 4, 2, 2, 1, 0, 0}));
  // A slice without tissue stays skipped; the cost bias and the preference pick the model.
  eligible[7] = false;
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy),
            (std::vector<int>{0, 2, 2, 2, 3, 2, 4, 0, 2, 1, 0, 0}));
  eligible[7] = true;
  policy.cost_bias = 1000;
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy),
            (std::vector<int>{0, 2, 1, 1, 3, 1, 1, 1, 1, 1, 0, 0}));
  policy.cost_bias = 0;
  policy.model_preference = {0, 0, 5, 0};
  EXPECT_EQ(FillRouteGaps(routes, p, eligible, costs, policy)[2], 3);
  policy.model_preference.clear();
  // Unlike the skip margin, nothing grows around a lone routed slice.
  policy.fill_gaps = kMaxSkipMargin;
  const std::vector<int> lone = {0, 0, 0, 2, 0, 0, 0};
  EXPECT_EQ(FillRouteGaps(lone, std::vector<SliceResult>(p.begin(), p.begin() + 7),
                          std::vector<bool>(7, true), costs, policy),
            lone);

  // In the engine: under the first cost bias that leaves a short gap, "+g3" routes exactly what
  // FillRouteGaps adds to the plain routes and keeps every plain route.
  std::vector<double> route_gmacs = {0};
  for (int i = 0; i < bank_->size(); ++i)
    route_gmacs.push_back(bank_->model_config(i).gmacs_per_slice());
  bool tested = false;
  for (const char* bias : {"0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "4"}) {
    const VolumeResult plain =
        *SegmentVolume(*bank_, volume_, *ParsePolicy(absl::StrCat("dynamic@", bias), *bank_));
    const Policy gaps = *ParsePolicy(absl::StrCat("dynamic@", bias, "+g3"), *bank_);
    ASSERT_EQ(gaps.fill_gaps, 3);
    std::vector<int> plain_routes;
    std::vector<bool> tissue;
    for (const SliceResult& s : plain.slices) {
      plain_routes.push_back(s.route);
      tissue.push_back(s.index >= 2);  // the fixture's slices 0 and 1 hold no tissue
    }
    const std::vector<int> expected =
        FillRouteGaps(plain_routes, plain.slices, tissue, route_gmacs, gaps);
    if (expected == plain_routes) continue;
    const VolumeResult filled = *SegmentVolume(*bank_, volume_, gaps);
    for (size_t z = 0; z < expected.size(); ++z) {
      EXPECT_EQ(filled.slices[z].route, expected[z]) << bias << " " << z;
    }
    EXPECT_GT(filled.gmacs, plain.gmacs);
    tested = true;
    break;
  }
  EXPECT_TRUE(tested) << "no cost bias left a short gap between routed slices";

  EXPECT_EQ(ParsePolicy("dynamic+g4", *bank_)->Name(*bank_), "dynamic+g4");
  const Policy ordered = *ParsePolicy("dynamic+f4+g3+d2", *bank_);
  EXPECT_EQ(ordered.fill_gaps, 3);
  EXPECT_EQ(ordered.Name(*bank_), "dynamic+d2+g3+f4");
  EXPECT_EQ(ParsePolicy("dynamic+g0", *bank_)->Name(*bank_), "dynamic");
  for (const char* bad :
       {"dynamic+g", "dynamic+g-1", "dynamic+g33", "dynamic+gx", "dynamic+g1+g2", "static:M2+g2"}) {
    EXPECT_EQ(ParsePolicy(bad, *bank_).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(FollowTumourTest, StepsToTheSkippedNeighboursOfSlicesWithTumour) {
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  // Slice 2 (M2, 10 tumour voxels) and slice 5 (M3, 7) are followed; slice 8 (M1, 3 voxels) is
  // not, at the default minimum of 5; slice 9 is not eligible (no tissue).
  const std::vector<int> routes = {0, 0, 2, 0, 0, 3, 0, 0, 1, 0};
  std::vector<bool> eligible(10, true);
  eligible[9] = false;
  const std::vector<int64_t> tumour = {0, 0, 10, 0, 0, 7, 0, 0, 3, 0};
  using Grown = std::vector<std::pair<int64_t, int>>;
  EXPECT_EQ(FollowTumour(routes, eligible, {2, 5, 8}, tumour, costs, 5),
            (Grown{{1, 2}, {3, 2}, {4, 3}, {6, 3}}));
  EXPECT_EQ(FollowTumour(routes, eligible, {2, 5, 8}, tumour, costs, 1),
            (Grown{{1, 2}, {3, 2}, {4, 3}, {6, 3}, {7, 1}}));
  EXPECT_EQ(FollowTumour(routes, eligible, {2, 5, 8}, tumour, costs, 11), Grown{});
  // Only the slices of `grown_from` are followed, and routed slices are never re-routed.
  EXPECT_EQ(FollowTumour(routes, eligible, {5}, tumour, costs, 5), (Grown{{4, 3}, {6, 3}}));
  // A slice between two followed slices takes the costlier route.
  EXPECT_EQ(
      FollowTumour({0, 2, 0, 3, 0}, std::vector<bool>(5, true), {1, 3}, {0, 9, 0, 9, 0}, costs, 5),
      (Grown{{0, 2}, {2, 3}, {4, 3}}));
}

// Following the tumour grows from the slices whose masks hold enough tumour, with their models,
// and only from them: the minimum is set between the tumour counts of the routed slices beside
// skipped ones, so some are followed and some are not.
TEST_F(SegmenterTest, FollowingTheTumourGrowsOnlyWhereAModelFoundTumour) {
  auto tumour_voxels = [](const VolumeResult& r, int z) {
    return static_cast<int>(std::count_if(r.labels.begin() + z * 64 * 48,
                                          r.labels.begin() + (z + 1) * 64 * 48,
                                          [](uint8_t l) { return l != 0; }));
  };
  bool tested = false;
  for (const char* bias : {"0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"}) {
    const std::string plain_name = absl::StrCat("dynamic@", bias);
    const VolumeResult plain = *SegmentVolume(*bank_, volume_, *ParsePolicy(plain_name, *bank_));
    // The tumour counts of the routed slices beside a skipped slice with tissue.
    std::set<int> edge_counts;
    for (int z = 2; z < 24; ++z) {
      if (plain.slices[z].route == 0) continue;
      for (int n : {z - 1, z + 1}) {
        if (n >= 2 && n < 24 && plain.slices[n].route == 0) {
          edge_counts.insert(tumour_voxels(plain, z));
        }
      }
    }
    if (edge_counts.size() < 2 || *edge_counts.rbegin() < 1) continue;
    const int min_voxels = *edge_counts.rbegin();
    const std::string follow = absl::StrCat(plain_name, "+f1v", min_voxels);
    const VolumeResult one = *SegmentVolume(*bank_, volume_, *ParsePolicy(follow, *bank_));
    int grown = 0, blocked = 0;
    for (int z = 0; z < 24; ++z) {
      if (plain.slices[z].route != 0) {
        EXPECT_EQ(one.slices[z].route, plain.slices[z].route) << z;
        continue;
      }
      // One step: the costlier route among the neighbours whose masks hold enough tumour.
      int expected = 0;
      for (int n : {z - 1, z + 1}) {
        if (z < 2 || n < 0 || n >= 24 || plain.slices[n].route == 0) continue;
        if (tumour_voxels(plain, n) < min_voxels) {
          ++blocked;
        } else if (bank_->model_config(plain.slices[n].route - 1).gmacs_per_slice() >
                   (expected == 0 ? -1.0 : bank_->model_config(expected - 1).gmacs_per_slice())) {
          expected = plain.slices[n].route;
        }
      }
      EXPECT_EQ(one.slices[z].route, expected) << follow << ", slice " << z;
      grown += expected != 0;
    }
    EXPECT_GT(grown, 0) << follow;
    EXPECT_GT(blocked, 0) << follow;
    EXPECT_GT(one.gmacs, plain.gmacs);
    // Without a depth limit the routes are closed: no skipped slice with tissue lies beside a
    // routed slice with enough tumour to follow. For a slice the decision network routed that
    // is its tumour; for a followed slice, its tumour on the tumour of the slice it was reached
    // from (the neighbour on its other side).
    const VolumeResult all = *SegmentVolume(
        *bank_, volume_, *ParsePolicy(absl::StrCat(plain_name, "+f32v", min_voxels), *bank_));
    auto label = [&](int z, int v) { return all.labels[z * 64 * 48 + v] != 0; };
    for (int z = 2; z < 24; ++z) {
      if (all.slices[z].route != 0) continue;
      for (int n : {z - 1, z + 1}) {
        if (n < 0 || n >= 24 || all.slices[n].route == 0) continue;
        if (plain.slices[n].route != 0) {
          EXPECT_LT(tumour_voxels(all, n), min_voxels) << z << " beside " << n;
          continue;
        }
        const int from = 2 * n - z;
        int shared = 0;
        for (int v = 0; v < 64 * 48; ++v) shared += label(n, v) && label(from, v);
        EXPECT_LT(shared, min_voxels) << z << " beside " << n << " reached from " << from;
      }
    }
    EXPECT_GE(all.gmacs, one.gmacs);
    tested = true;
    break;
  }
  EXPECT_TRUE(tested) << "no cost bias left skipped slices beside routed slices of two tumour "
                         "counts";
}

TEST_F(SegmenterTest, SkipThresholdSkipsOnlyConfidentSlices) {
  const Policy threshold = *ParsePolicy("dynamic@0.5+m2r2+s0.9", *bank_);
  EXPECT_EQ(threshold.cost_bias, 0.5);
  EXPECT_EQ(threshold.skip_margin, 2);
  EXPECT_EQ(threshold.margin_min_run, 2);
  EXPECT_EQ(threshold.skip_threshold, 0.9);
  EXPECT_EQ(threshold.Name(*bank_), "dynamic@0.5+m2r2+s0.9");
  EXPECT_EQ(ParsePolicy("dynamic+s0.8+m1", *bank_)->Name(*bank_), "dynamic+m1+s0.8");
  EXPECT_EQ(ParsePolicy("dynamic+s0", *bank_)->Name(*bank_), "dynamic");

  const std::vector<double> costs = {0, 1, 2, 4, 8};
  const float unsure[] = {0.5f, 0.1f, 0.3f, 0.05f, 0.05f};
  Policy policy;
  EXPECT_EQ(DecideRoute(unsure, costs, policy), 0) << "no threshold: the argmax";
  policy.skip_threshold = 0.5;
  EXPECT_EQ(DecideRoute(unsure, costs, policy), 0) << "at the threshold: skipped";
  policy.skip_threshold = 0.6;
  EXPECT_EQ(DecideRoute(unsure, costs, policy), 2) << "below it: the best model, M2";
  policy.cost_bias = 1000;
  EXPECT_EQ(DecideRoute(unsure, costs, policy), 1) << "the cost bias still picks the model";
  const float model_first[] = {0.1f, 0.1f, 0.6f, 0.1f, 0.1f};
  policy = Policy{};
  policy.skip_threshold = 0.05;
  EXPECT_EQ(DecideRoute(model_first, costs, policy), 0)
      << "a threshold below the argmax skips more: the threshold alone decides skip";

  // In the engine, a threshold of 1 routes every slice whose skip probability is below 1, and
  // a higher threshold never skips more slices than a lower one.
  int previous_skipped = 1 << 30;
  for (double t : {0.5, 0.9, 0.999, 1.0}) {
    Policy p;
    p.skip_threshold = t;
    const VolumeResult r = *SegmentVolume(*bank_, volume_, p);
    int skipped = 0;
    for (const SliceResult& s : r.slices) {
      skipped += s.route == 0;
      EXPECT_EQ(s.route == 0, s.probabilities[0] >= t) << t;
    }
    EXPECT_LE(skipped, previous_skipped) << t;
    previous_skipped = skipped;
  }
}

TEST_F(SegmenterTest, SkipDipRoutesOnlyTheVolumesDeepDips) {
  const Policy dip = *ParsePolicy("dynamic+pM2:1+d1.5+f4", *bank_);
  EXPECT_EQ(dip.skip_dip, 1.5);
  EXPECT_EQ(dip.Name(*bank_), "dynamic+d1.5+pM2:1+f4");
  EXPECT_EQ(ParsePolicy(dip.Name(*bank_), *bank_)->Name(*bank_), dip.Name(*bank_));
  EXPECT_EQ(ParsePolicy("dynamic+d0", *bank_)->Name(*bank_), "dynamic");
  for (const char* bad : {"dynamic+d", "dynamic+d0.5", "dynamic+d101", "dynamic+dx", "dynamic+dnan",
                          "dynamic+d-1", "dynamic+d1+d2"}) {
    EXPECT_EQ(ParsePolicy(bad, *bank_).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(ParsePolicy("dynamic+d0.5", *bank_).status().message(),
              ::testing::HasSubstr("the skip dip after '+d' is not 0 or a number in 1..100"));

  // 40 slices: 0 and 39 without tissue, 10..19 routed to M3, the other 28 skipped with skip
  // probabilities 0.8 + 0.005 z, except 25..27, which dip to 0.5, 0.6 and 0.75. Over the 28
  // skipped slices the median is 0.9075 and the tenth percentile 0.7885.
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  std::vector<int> routes(40, 0);
  std::vector<bool> eligible(40, true);
  eligible[0] = eligible[39] = false;
  std::vector<SliceResult> slices(40);
  std::vector<float> skipped;
  for (int z = 0; z < 40; ++z) {
    float skip = 0.8f + 0.005f * static_cast<float>(z);
    if (z >= 25 && z <= 27) skip = std::array<float, 3>{0.5f, 0.6f, 0.75f}[z - 25];
    if (!eligible[z]) skip = 1.0f;
    const float rest = (1.0f - skip) / 4;
    slices[z].probabilities = {skip, rest, rest * 1.5f, rest * 0.5f, rest};  // best model: M2
    if (z >= 10 && z < 20) {
      routes[z] = 3;
      slices[z].probabilities = {0.1f, 0.1f, 0.2f, 0.5f, 0.1f};
    } else if (eligible[z]) {
      skipped.push_back(skip);
    }
  }
  ASSERT_EQ(skipped.size(), 28u);
  std::sort(skipped.begin(), skipped.end());
  const auto quantile = [&skipped](double q) {
    const double at = q * 27;
    const size_t below = static_cast<size_t>(at);
    return skipped[below] + (at - below) * (skipped[below + 1] - skipped[below]);
  };
  const double median = quantile(0.5), tenth = quantile(0.1);
  Policy policy;
  policy.skip_dip = 1.5;
  const std::vector<int> dipped = RouteSkipDips(routes, slices, eligible, costs, policy);
  for (int z = 0; z < 40; ++z) {
    const bool under = eligible[z] && routes[z] == 0 &&
                       slices[z].probabilities[0] < median - 1.5 * (median - tenth);
    EXPECT_EQ(dipped[z], under ? 2 : routes[z]) << z;
  }
  EXPECT_EQ(dipped[25], 2) << "the 0.5 dip is routed, to the network's best model";
  EXPECT_EQ(dipped[26], 2);
  EXPECT_EQ(dipped[27], 0) << "0.75 is not deep enough for a dip of 1.5 in this volume";
  policy.skip_dip = 1;
  EXPECT_EQ(RouteSkipDips(routes, slices, eligible, costs, policy)[27], 2);
  // The preference and the cost bias pick the model, as for every other route.
  policy.model_preference = {0, 0, 0, 5};
  EXPECT_EQ(RouteSkipDips(routes, slices, eligible, costs, policy)[25], 4);
  policy.model_preference.clear();
  policy.cost_bias = 1000;
  EXPECT_EQ(RouteSkipDips(routes, slices, eligible, costs, policy)[25], 1);
  policy.cost_bias = 0;
  // A very deep limit routes nothing; so do too few skipped slices, or no dip.
  policy.skip_dip = 100;
  EXPECT_EQ(RouteSkipDips(routes, slices, eligible, costs, policy), routes);
  policy.skip_dip = 1;
  std::vector<int> mostly_routed = routes;
  for (int z = 20; z < 30; ++z) mostly_routed[z] = 3;
  EXPECT_EQ(RouteSkipDips(mostly_routed, slices, eligible, costs, policy), mostly_routed)
      << "18 skipped slices are too few to say what is typical";
  policy.skip_dip = 0;
  EXPECT_EQ(RouteSkipDips(routes, slices, eligible, costs, policy), routes);

  // Whatever the probabilities, a dip of at least 1 routes only slices under the skipped
  // slices' tenth percentile: never more than a tenth of them.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<SliceResult> random(200);
    for (SliceResult& s : random) {
      const float skip = std::pow(uniform(rng), trial % 5 == 0 ? 0.05f : 1.0f);
      s.probabilities = {skip, (1 - skip) / 4, (1 - skip) / 4, (1 - skip) / 4, (1 - skip) / 4};
    }
    policy.skip_dip = 1 + trial % 3;
    const std::vector<int> r = RouteSkipDips(std::vector<int>(200, 0), random,
                                             std::vector<bool>(200, true), costs, policy);
    EXPECT_LE(std::count_if(r.begin(), r.end(), [](int route) { return route != 0; }), 20) << trial;
  }

  // In the engine: a taller volume (the fixture's slices repeated) with the dip routes exactly
  // what RouteSkipDips adds to the plain routes, and skips nothing the plain policy routes.
  volume::MultiModalVolume tall;
  tall.geometry = volume::MakeGeometry({64, 48, 72}, {1, 1, 1}, {0, 0, 0});
  for (size_t c = 0; c < 4; ++c) {
    for (int64_t z = 0; z < 72; ++z) {
      const auto from = volume_.channels[c].begin() + (z % 24) * 64 * 48;
      tall.channels[c].insert(tall.channels[c].end(), from, from + 64 * 48);
    }
  }
  // A softer classifier than the fixture's, leaning to skip, so that most slices are skipped
  // with skip probabilities that spread.
  std::unique_ptr<models::Bank> soft = MakeBank(/*channels_last=*/false);
  for (auto& [name, tensor] : soft->decision().NamedState()) {
    if (name == "classifier.weight") {
      torch::NoGradGuard no_grad;
      tensor.div_(200.0);  // the fixture's scale undone
      tensor[0].add_(2.0);
    }
  }
  const VolumeResult plain = *SegmentVolume(*soft, tall, *ParsePolicy("dynamic", *soft));
  const VolumeResult with_dip = *SegmentVolume(*soft, tall, *ParsePolicy("dynamic+d1", *soft));
  std::vector<int> plain_routes;
  std::vector<bool> tissue;
  for (const SliceResult& s : plain.slices) {
    plain_routes.push_back(s.route);
    tissue.push_back(s.index % 24 >= 2);
  }
  std::vector<double> route_gmacs = {0};
  for (int i = 0; i < soft->size(); ++i)
    route_gmacs.push_back(soft->model_config(i).gmacs_per_slice());
  Policy d1;
  d1.skip_dip = 1;
  const std::vector<int> expected =
      RouteSkipDips(plain_routes, plain.slices, tissue, route_gmacs, d1);
  int added = 0;
  for (int z = 0; z < 72; ++z) {
    EXPECT_EQ(with_dip.slices[z].route, expected[z]) << z;
    if (plain_routes[z] != 0) {
      EXPECT_EQ(with_dip.slices[z].route, plain_routes[z]) << z;
    }
    added += with_dip.slices[z].route != 0 && plain_routes[z] == 0;
  }
  EXPECT_GT(added, 0) << "the test volume should have a dip to route";
}

TEST_F(SegmenterTest, ModelPreferenceReranksTheModelsButNeverDecidesSkip) {
  const Policy prefer = *ParsePolicy("dynamic+pM2:1.5+f4+pM4:-2", *bank_);
  EXPECT_EQ(prefer.model_preference, (std::vector<double>{0, 1.5, 0, -2}));
  EXPECT_EQ(prefer.Name(*bank_), "dynamic+pM2:1.5+pM4:-2+f4");
  EXPECT_EQ(ParsePolicy(prefer.Name(*bank_), *bank_)->Name(*bank_), prefer.Name(*bank_));
  EXPECT_EQ(ParsePolicy("dynamic+pM2:0", *bank_)->Name(*bank_), "dynamic");
  EXPECT_TRUE(ParsePolicy("dynamic+pM2:0", *bank_)->model_preference.empty());
  EXPECT_THAT(ParsePolicy("dynamic+pM9:1", *bank_).status().message(),
              ::testing::HasSubstr("'+pM9:1' names no bank model (the bank has M1, M2, M3, M4)"));
  for (const char* bad : {"dynamic+pM2", "dynamic+pM2:x", "dynamic+pM2:101", "dynamic+pM2:nan",
                          "dynamic+pM2:1+pM2:2", "dynamic+pM2:0+pM2:1"}) {
    EXPECT_EQ(ParsePolicy(bad, *bank_).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }

  // M3 is the network's best model by a factor of 2 (log 2 = 0.69): a preference of 1 for M2
  // takes the slice to M2, 0.5 does not; skip wins over both and keeps winning.
  const std::vector<double> costs = {0, 1, 2, 4, 8};
  const float routed[] = {0.1f, 0.1f, 0.25f, 0.5f, 0.05f};
  const float skipped[] = {0.5f, 0.05f, 0.2f, 0.2f, 0.05f};
  Policy policy;
  policy.model_preference = {0, 0.5, 0, 0};
  EXPECT_EQ(DecideRoute(routed, costs, policy), 3);
  policy.model_preference = {0, 1, 0, 0};
  EXPECT_EQ(DecideRoute(routed, costs, policy), 2);
  EXPECT_EQ(DecideRoute(skipped, costs, policy), 0);
  policy.model_preference = {0, 100, 0, 0};
  EXPECT_EQ(DecideRoute(skipped, costs, policy), 0) << "no preference makes a skip a model";
  policy.skip_threshold = 0.6;
  EXPECT_EQ(DecideRoute(skipped, costs, policy), 2) << "under the threshold: the preferred model";
  // The skip margin's non-skip choice takes the preference too.
  std::vector<SliceResult> p(3);
  for (SliceResult& s : p) s.probabilities.assign(skipped, skipped + 5);
  EXPECT_EQ(WidenRoutes({0, 3, 0}, p, costs, 0, 1), (std::vector<int>{2, 3, 2}));
  EXPECT_EQ(WidenRoutes({0, 3, 0}, p, costs, 0, 1, 1, {0, 0, 1, 0}), (std::vector<int>{3, 3, 3}));

  // In the engine: the same slices are skipped with and without a preference, and a large
  // preference sends every routed slice to its model.
  const VolumeResult plain = *SegmentVolume(*bank_, volume_, *ParsePolicy("dynamic", *bank_));
  const VolumeResult to_m1 =
      *SegmentVolume(*bank_, volume_, *ParsePolicy("dynamic+pM1:50", *bank_));
  int routed_slices = 0;
  for (int z = 0; z < 24; ++z) {
    EXPECT_EQ(to_m1.slices[z].route == 0, plain.slices[z].route == 0) << z;
    if (plain.slices[z].route != 0) {
      ++routed_slices;
      EXPECT_EQ(to_m1.slices[z].route, 1) << z;
    }
  }
  EXPECT_GT(routed_slices, 0);
}

TEST_F(SegmenterTest, CancellationStopsBetweenSlices) {
  int reported = 0;
  SegmentOptions options;
  options.on_slice = [&](const SliceResult&, const uint8_t*) { ++reported; };
  options.cancelled = [&] { return reported >= 5; };
  absl::StatusOr<VolumeResult> result = SegmentVolume(*bank_, volume_, Policy{}, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(reported, 24);
}

TEST_F(SegmenterTest, UnknownPoliciesNameWhatExists) {
  EXPECT_THAT(ParsePolicy("static:M9", *bank_).status().message(),
              ::testing::HasSubstr("no bank model 'M9' (the bank has M1, M2, M3, M4)"));
  EXPECT_EQ(ParsePolicy("fastest", *bank_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ParsePolicy("static:M9+c30", *bank_).status().message(),
              ::testing::HasSubstr("no bank model 'M9'"));
}

// A static policy takes the dynamic policies' clean-up of the final masks, and nothing else.
TEST_F(SegmenterTest, StaticPoliciesTakeOnlyTheMaskCleanUp) {
  const Policy policy = *ParsePolicy("static:M3+c30+e20", *bank_);
  EXPECT_EQ(policy.kind, Policy::Kind::kStatic);
  EXPECT_EQ(policy.static_model, 2);
  EXPECT_EQ(policy.min_component, 30);
  EXPECT_EQ(policy.min_enhancing, 20);
  EXPECT_EQ(policy.Name(*bank_), "static:M3+c30+e20");
  EXPECT_EQ(ParsePolicy("static:M3+e5", *bank_)->Name(*bank_), "static:M3+e5");
  EXPECT_EQ(ParsePolicy("static:M3", *bank_)->Name(*bank_), "static:M3");
  for (const char* bad : {"static:M3+f4", "static:M3+c30+c30", "static:M3+m2", "static:M3+"}) {
    const absl::Status status = ParsePolicy(bad, *bank_).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(status.message(), ::testing::HasSubstr("the only options of a static policy"))
        << bad;
  }
  EXPECT_THAT(ParsePolicy("static:M3+c-1", *bank_).status().message(),
              ::testing::HasSubstr("smallest tumour component"));
}

// Any in-plane size: a 57 x 41 crop of the test volume segments exactly as the same crop padded
// with zeros (the normalised background) to 64 x 48, the labels cropped back.
TEST_F(SegmenterTest, AnyInPlaneSizeIsPaddedAndCroppedBack) {
  constexpr int64_t kX = 57, kY = 41, kZ = 24;
  volume::MultiModalVolume crop, padded;
  crop.geometry = volume::MakeGeometry({kX, kY, kZ}, {1, 1, 1}, {0, 0, 0});
  padded.geometry = volume_.geometry;
  for (int c = 0; c < volume::kNumModalities; ++c) {
    crop.channels[c].assign(kX * kY * kZ, 0.0f);
    padded.channels[c].assign(64 * 48 * kZ, 0.0f);
    for (int64_t z = 0; z < kZ; ++z) {
      for (int64_t y = 0; y < kY; ++y) {
        for (int64_t x = 0; x < kX; ++x) {
          const float v = volume_.channels[c][(z * 48 + y) * 64 + x];
          crop.channels[c][(z * kY + y) * kX + x] = v;
          padded.channels[c][(z * 48 + y) * 64 + x] = v;
        }
      }
    }
  }
  EXPECT_EQ(PaddedSliceExtent(kX), 64);
  EXPECT_EQ(PaddedSliceExtent(48), 48);
  for (const char* name : {"dynamic", "static:M3"}) {
    const Policy policy = *ParsePolicy(name, *bank_);
    const VolumeResult small = *SegmentVolume(*bank_, crop, policy);
    const VolumeResult big = *SegmentVolume(*bank_, padded, policy);
    ASSERT_EQ(small.labels.size(), static_cast<size_t>(kX * kY * kZ)) << name;
    int differ = 0;
    for (int64_t z = 0; z < kZ; ++z) {
      EXPECT_EQ(small.slices[z].route, big.slices[z].route) << name << " " << z;
      for (int64_t y = 0; y < kY; ++y) {
        for (int64_t x = 0; x < kX; ++x) {
          differ += small.labels[(z * kY + y) * kX + x] != big.labels[(z * 48 + y) * 64 + x];
        }
      }
    }
    EXPECT_EQ(differ, 0) << name;
  }
}

TEST(RemoveSmallTumourComponentsTest, ClearsOnlyComponentsUnderTheSizeFaceConnected) {
  const int64_t w = 8, h = 6, d = 4;
  std::vector<uint8_t> labels(w * h * d, 0);
  auto at = [&](int64_t x, int64_t y, int64_t z) -> uint8_t& {
    return labels[(z * h + y) * w + x];
  };
  // A 2 x 2 x 2 cube (8 voxels) of mixed labels across slices 1 and 2.
  for (int64_t z : {1, 2}) {
    for (int64_t y : {1, 2}) {
      for (int64_t x : {1, 2}) at(x, y, z) = 2;
    }
  }
  at(1, 1, 1) = 4;
  at(2, 2, 2) = 1;
  // Three voxels that touch only at edges or corners: three components of one voxel.
  at(6, 4, 0) = 2;
  at(5, 5, 0) = 2;
  at(6, 5, 1) = 4;
  // A 3-voxel line along z at the far corner.
  for (int64_t z : {1, 2, 3}) at(7, 0, z) = 1;
  std::vector<uint8_t> expected = labels;

  EXPECT_EQ(RemoveSmallTumourComponents(labels.data(), w, h, d, 1), 0);
  EXPECT_EQ(labels, expected);  // the visited marks are cleared again

  EXPECT_EQ(RemoveSmallTumourComponents(labels.data(), w, h, d, 2), 3);
  expected[(0 * h + 4) * w + 6] = 0;
  expected[(0 * h + 5) * w + 5] = 0;
  expected[(1 * h + 5) * w + 6] = 0;
  EXPECT_EQ(labels, expected);

  EXPECT_EQ(RemoveSmallTumourComponents(labels.data(), w, h, d, 4), 3);  // the line
  for (int64_t z : {1, 2, 3}) expected[(z * h + 0) * w + 7] = 0;
  EXPECT_EQ(labels, expected);
  EXPECT_EQ(at(1, 1, 1), 4);  // the cube keeps its labels
  EXPECT_EQ(at(2, 2, 2), 1);

  EXPECT_EQ(RemoveSmallTumourComponents(labels.data(), w, h, d, 9), 8);
  EXPECT_EQ(labels, std::vector<uint8_t>(w * h * d, 0));
}

TEST(RelabelSmallEnhancingTest, RelabelsEnhancingAsCoreOnlyUnderTheVolume) {
  const std::vector<uint8_t> labels = {0, 2, 4, 1, 4, 2, 0, 4};  // 3 enhancing voxels
  std::vector<uint8_t> kept = labels;
  EXPECT_EQ(RelabelSmallEnhancing(kept.data(), 8, 3), 0);  // 3 is not under 3
  EXPECT_EQ(kept, labels);
  std::vector<uint8_t> relabelled = labels;
  EXPECT_EQ(RelabelSmallEnhancing(relabelled.data(), 8, 4), 3);
  EXPECT_EQ(relabelled, (std::vector<uint8_t>{0, 2, 1, 1, 1, 2, 0, 1}));  // the core unchanged
  std::vector<uint8_t> none = {0, 1, 2, 0};
  EXPECT_EQ(RelabelSmallEnhancing(none.data(), 4, 100), 0);
  EXPECT_EQ(none, (std::vector<uint8_t>{0, 1, 2, 0}));
}

TEST_F(SegmenterTest, RelabellingSmallEnhancingKeepsRoutesAndTheTumourCore) {
  // With and without small components cleared first; the largest volume relabels every
  // enhancing voxel of the untrained bank's masks.
  int64_t relabelled = 0;
  for (const char* name : {"dynamic@0.5+f4", "dynamic@0.5+f4+c3", "static:M2", "static:M2+c3"}) {
    const VolumeResult plain = *SegmentVolume(*bank_, volume_, *ParsePolicy(name, *bank_));
    const VolumeResult relabel = *SegmentVolume(
        *bank_, volume_, *ParsePolicy(absl::StrCat(name, "+e", kMaxMinComponent), *bank_));
    for (int z = 0; z < 24; ++z) EXPECT_EQ(relabel.slices[z].route, plain.slices[z].route);
    std::vector<uint8_t> expected = plain.labels;
    relabelled += RelabelSmallEnhancing(expected.data(), static_cast<int64_t>(expected.size()),
                                        kMaxMinComponent);
    EXPECT_EQ(relabel.labels, expected) << name;
    EXPECT_EQ(std::count(relabel.labels.begin(), relabel.labels.end(), uint8_t{4}), 0) << name;
  }
  EXPECT_GT(relabelled, 0) << "the untrained bank's masks held no enhancing tumour";
}

TEST_F(SegmenterTest, CleaningSmallComponentsKeepsRoutesAndCleansTheFinalMasks) {
  // The same routes as without cleaning, and the masks the uncleaned ones cleaned. The untrained
  // bank's masks are large blobs, so the largest threshold (more than the volume's voxels) is
  // what shows the cleaning applied.
  int64_t removed = 0;
  for (const char* name : {"dynamic@0.5+f4", "dynamic@-1000", "static:M1"}) {
    const VolumeResult plain = *SegmentVolume(*bank_, volume_, *ParsePolicy(name, *bank_));
    for (int min_voxels : {3, kMaxMinComponent}) {
      const VolumeResult clean = *SegmentVolume(
          *bank_, volume_, *ParsePolicy(absl::StrCat(name, "+c", min_voxels), *bank_));
      for (int z = 0; z < 24; ++z) EXPECT_EQ(clean.slices[z].route, plain.slices[z].route);
      std::vector<uint8_t> expected = plain.labels;
      removed += RemoveSmallTumourComponents(expected.data(), 64, 48, 24, min_voxels);
      EXPECT_EQ(clean.labels, expected) << name << " +c" << min_voxels;
      EXPECT_DOUBLE_EQ(clean.gmacs, plain.gmacs);
    }
  }
  EXPECT_GT(removed, 0) << "the untrained bank's masks held no tumour";
}

}  // namespace
}  // namespace danet::engine
