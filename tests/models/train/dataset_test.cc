// The decision network's batches: half tumour, half other slices, each pool drawn by weight;
// training cases prepared with or without the bundle's bias correction, per case.
#include "models/train/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "models/data/phantom.h"
#include "models/train/augment.h"

namespace danet::train {
namespace {

TEST(SampleDecisionBatchTest, HalvesByPoolAndDrawsEachPoolByWeight) {
  // One case of three slices whose first channel holds the slice index.
  TrainCase c;
  c.slices = torch::zeros({3, 4, 16, 16});
  for (int z = 0; z < 3; ++z) c.slices[z][0].fill_(z);
  const std::vector<TrainCase> cases = {c};
  // Tumour slices 0 (route 1) and 1 (route 2, never drawn: weight 0); other slice 2 (skip).
  const std::vector<LabelledSlice> tumour = {{0, 0, 1, 1.0}, {0, 1, 2, 0.0}};
  const std::vector<LabelledSlice> other = {{0, 2, 0, 1.0}};
  std::mt19937_64 rng(7);
  const Batch batch = SampleDecisionBatch(cases, tumour, other, 8, *AugmentPreset("none"), rng);
  ASSERT_EQ(batch.images.size(0), 8);
  for (int i = 0; i < 8; ++i) {
    const int64_t route = batch.targets[i].item<int64_t>();
    EXPECT_EQ(route, i % 2 == 0 ? 1 : 0) << i;
    EXPECT_FLOAT_EQ(batch.images[i][0][5][5].item<float>(), i % 2 == 0 ? 0.0f : 2.0f) << i;
  }
  // Weights 1 : 3 over 4000 draws from the tumour pool.
  const std::vector<LabelledSlice> weighted = {{0, 0, 1, 1.0}, {0, 1, 2, 3.0}};
  int second = 0;
  for (int k = 0; k < 500; ++k) {
    const Batch b = SampleDecisionBatch(cases, weighted, other, 16, *AugmentPreset("none"), rng);
    for (int i = 0; i < 16; i += 2) second += b.targets[i].item<int64_t>() == 2;
  }
  EXPECT_NEAR(second / 4000.0, 0.75, 0.03);
}

TEST(SampleDecisionBatchTest, TumourMasksMoveWithTheImageAndLeaveTheDrawsAlone) {
  // One tumour slice: a bright square in every channel, labelled 2 underneath; one other slice.
  TrainCase c;
  c.slices = torch::zeros({2, 4, 48, 48});
  c.classes = torch::zeros({2, 48, 48}, torch::kUInt8);
  c.slices[0].slice(1, 10, 20).slice(2, 30, 40).fill_(1.0);
  c.classes[0].slice(0, 10, 20).slice(1, 30, 40).fill_(2);
  const std::vector<TrainCase> cases = {c};
  const std::vector<LabelledSlice> tumour = {{0, 0, 1, 1.0}}, other = {{0, 1, 0, 1.0}};
  AugmentOptions spatial = *AugmentPreset("none");
  spatial.rotation_deg = {1.0, -30, 30};  // rotations and mirroring: the mask must follow
  spatial.mirror_p = 0.5;
  std::mt19937_64 with_rng(5), without_rng(5);
  const Batch with = SampleDecisionBatch(cases, tumour, other, 8, spatial, with_rng, true);
  const Batch without = SampleDecisionBatch(cases, tumour, other, 8, spatial, without_rng);
  EXPECT_FALSE(without.tumour.defined());
  ASSERT_EQ(with.tumour.sizes(), (std::vector<int64_t>{8, 1, 48, 48}));
  EXPECT_TRUE(torch::equal(with.images, without.images));  // the same random draws
  for (int i = 0; i < 8; ++i) {
    const torch::Tensor mask = with.tumour[i][0];
    if (i % 2 == 1) {
      EXPECT_EQ(mask.sum().item<float>(), 0.0f) << i;
      continue;
    }
    // Where the moved square is bright, the moved mask is set, and the other way round.
    const torch::Tensor bright = with.images[i][0].gt(0.5);
    const double agree = bright.eq(mask.gt(0.5)).to(torch::kFloat).mean().item<double>();
    EXPECT_GT(mask.sum().item<float>(), 50.0f) << i;
    EXPECT_GT(agree, 0.98) << i;
  }
}

TEST(DrawUncorrectedTest, SeededPerCaseAndPrefixStable) {
  EXPECT_TRUE(DrawUncorrected(10, 0.0, 1).empty());
  EXPECT_EQ(DrawUncorrected(10, 1.0, 1), std::vector<bool>(10, true));
  const std::vector<bool> draw = DrawUncorrected(1000, 0.5, 7);
  EXPECT_EQ(DrawUncorrected(1000, 0.5, 7), draw);  // the same seed, the same cases
  EXPECT_NE(DrawUncorrected(1000, 0.5, 8), draw);
  const std::vector<bool> fewer = DrawUncorrected(10, 0.5, 7);  // --max_train_cases 10
  EXPECT_EQ(fewer, std::vector<bool>(draw.begin(), draw.begin() + 10));
  EXPECT_NEAR(std::count(draw.begin(), draw.end(), true), 500, 60);
}

TEST(LoadTrainCasesTest, UncorrectedCasesSkipOnlyTheBiasCorrection) {
  absl::StatusOr<data::PhantomGenerator> generator =
      data::PhantomGenerator::Create(data::kColin27Path, {.dims = {64, 64, 24}});
  ASSERT_TRUE(generator.ok()) << generator.status();
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / ("danet_dataset_test_" + std::to_string(::getpid()));
  std::vector<std::filesystem::path> dirs;
  bool written = true;
  for (int i = 0; i < 2 && written; ++i) {
    const data::PhantomCase phantom = generator->Generate(3, i);
    written = data::WritePhantomCase(phantom, root).ok();
    dirs.push_back(root / phantom.case_id);
  }
  v1::Preprocessing corrected;
  corrected.set_bias_correction("poly2");
  absl::StatusOr<std::vector<TrainCase>> plain = LoadTrainCases(dirs, v1::Preprocessing());
  absl::StatusOr<std::vector<TrainCase>> all = LoadTrainCases(dirs, corrected);
  absl::StatusOr<std::vector<TrainCase>> mixed =
      LoadTrainCases(dirs, corrected, nullptr, {false, true});
  absl::StatusOr<std::vector<TrainCase>> wrong = LoadTrainCases(dirs, corrected, nullptr, {true});
  std::filesystem::remove_all(root);
  ASSERT_TRUE(written);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_FALSE((*mixed)[0].uncorrected);
  EXPECT_TRUE((*mixed)[1].uncorrected);
  EXPECT_FALSE(torch::equal((*plain)[0].slices, (*all)[0].slices));  // the correction acts
  EXPECT_TRUE(torch::equal((*mixed)[0].slices, (*all)[0].slices));
  EXPECT_TRUE(torch::equal((*mixed)[1].slices, (*plain)[1].slices));
  EXPECT_TRUE(torch::equal((*mixed)[1].classes, (*all)[1].classes));  // labels never change
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("1 uncorrected flags for 2 case folders"),
            std::string::npos);
}

}  // namespace
}  // namespace danet::train
