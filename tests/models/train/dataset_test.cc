// The decision network's batches: half tumour, half other slices, each pool drawn by weight;
// the bank's crops centred by tumour slice or by class; thick slices from blocks of whole slices;
// training cases prepared with or without the bundle's bias correction, per case.
#include "models/train/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
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

// Two cases: a large tumour (oedema on 20 slices, a small core on one) and a small lesion (a
// 3 x 3 enhancing patch on one slice). Crops of tumour only, no augmentation.
std::vector<TrainCase> LargeAndSmallTumour() {
  std::vector<TrainCase> cases(2);
  for (TrainCase& c : cases) {
    c.slices = torch::ones({24, 4, 32, 32});
    c.classes = torch::zeros({24, 32, 32}, torch::kUInt8);
  }
  cases[0].classes.slice(0, 2, 22).slice(1, 4, 28).slice(2, 4, 28).fill_(2);
  cases[0].classes[10].slice(0, 14, 16).slice(1, 14, 16).fill_(1);
  cases[1].classes[5].slice(0, 20, 23).slice(1, 6, 9).fill_(3);
  for (TrainCase& c : cases) {
    IndexClassVoxels(c);
    c.foreground.resize(24);
    for (int z = 0; z < 24; ++z) c.foreground[z] = c.classes[z].any().item<bool>();
  }
  return cases;
}

// The share of crops that hold class `k`, over `batches` batches of 8.
double ShareHolding(const std::vector<TrainCase>& cases, CropCentre centre, int k, int batches,
                    uint64_t seed) {
  std::mt19937_64 rng(seed);
  int holding = 0;
  for (int b = 0; b < batches; ++b) {
    const Batch batch = SampleCropBatch(cases, 8, 16, 1.0, *AugmentPreset("none"), rng, centre);
    for (int i = 0; i < 8; ++i) holding += batch.targets[i].eq(k).any().item<bool>();
  }
  return holding / (8.0 * batches);
}

TEST(SampleCropBatchTest, ClassCentredCropsDrawSmallLesionsAndSmallClassesAlike) {
  const std::vector<TrainCase> cases = LargeAndSmallTumour();
  EXPECT_EQ(cases[0].class_voxels[1].size(), 20u * 24 * 24 - 4);  // less the core
  EXPECT_EQ(cases[0].class_voxels[0].size(), 4u);
  EXPECT_EQ(cases[1].class_voxels[2].size(), 9u);
  EXPECT_EQ(cases[1].class_voxels[2][0], (5 * 32 + 20) * 32 + 6);
  // By slice: the small lesion's one slice against the large tumour's twenty, so about 1/21 of
  // the crops; by class: half the crops come from the small lesion, and half of the large
  // tumour's are centred on its core.
  const double slice_small = ShareHolding(cases, CropCentre::kTumourSlice, 3, 100, 3);
  const double class_small = ShareHolding(cases, CropCentre::kTumourClass, 3, 100, 3);
  const double slice_core = ShareHolding(cases, CropCentre::kTumourSlice, 1, 100, 4);
  const double class_core = ShareHolding(cases, CropCentre::kTumourClass, 1, 100, 4);
  EXPECT_LT(slice_small, 0.1);
  EXPECT_NEAR(class_small, 0.5, 0.08);
  EXPECT_LT(slice_core, 0.1);
  EXPECT_GT(class_core, 0.2);
  // Every crop of either kind holds tumour, and the same seed draws the same batch.
  std::mt19937_64 a(9), b(9);
  const Batch first =
      SampleCropBatch(cases, 8, 16, 1.0, *AugmentPreset("none"), a, CropCentre::kTumourClass);
  const Batch again =
      SampleCropBatch(cases, 8, 16, 1.0, *AugmentPreset("none"), b, CropCentre::kTumourClass);
  EXPECT_TRUE(torch::equal(first.targets, again.targets));
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(first.targets[i].ne(0).any().item<bool>()) << i;
}

TEST(CropCentreTest, NamesRoundTripAndOthersAreRefusedByName) {
  for (CropCentre centre : {CropCentre::kTumourSlice, CropCentre::kTumourClass}) {
    absl::StatusOr<CropCentre> parsed = ParseCropCentre(CropCentreName(centre));
    ASSERT_TRUE(parsed.ok()) << CropCentreName(centre);
    EXPECT_EQ(*parsed, centre);
  }
  EXPECT_STREQ(CropCentreName(CropCentre::kTumourClass), "class");
  EXPECT_STREQ(CropCentreName(CropCentre::kTumourSlice), "slice");
  const absl::StatusOr<CropCentre> bad = ParseCropCentre("Class");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "'Class': choose slice or class");
}

TEST(SliceImageTest, ThickSlicesAverageABlockHoldingTheSliceAndKeepItsLabels) {
  // Ten slices whose every voxel holds the slice index, so a block's mean says where it lies.
  TrainCase c;
  c.slices = torch::arange(10, torch::kFloat).view({10, 1, 1, 1}).expand({10, 4, 8, 8}).clone();
  AugmentOptions thick = *AugmentPreset("none");
  thick.thick_slices = {1.0, 3, 3};
  std::mt19937_64 rng(3);
  std::vector<int> seen(3, 0);
  for (int k = 0; k < 300; ++k) {
    const torch::Tensor image = SliceImage(c, 5, thick, rng);
    ASSERT_EQ(image.sizes(), (std::vector<int64_t>{4, 8, 8}));
    const float mean = image[0][0][0].item<float>();
    EXPECT_TRUE(torch::allclose(image, torch::full_like(image, mean)));
    // Blocks 3..5, 4..6 or 5..7: means 4, 5 or 6.
    ASSERT_TRUE(mean == 4.0f || mean == 5.0f || mean == 6.0f) << mean;
    ++seen[static_cast<int>(mean) - 4];
  }
  for (int n : seen) EXPECT_GT(n, 60);
  // At the volume's end the block is clipped: slice 0 averages 0..0, 0..1 or 0..2.
  for (int k = 0; k < 50; ++k) {
    const float mean = SliceImage(c, 0, thick, rng)[0][0][0].item<float>();
    EXPECT_TRUE(mean == 0.0f || mean == 0.5f || mean == 1.0f) << mean;
  }
  // Off (every preset), it is the slice itself and draws nothing.
  std::mt19937_64 off_rng(3), untouched(3);
  EXPECT_TRUE(torch::equal(SliceImage(c, 5, *AugmentPreset("nnunet"), off_rng), c.slices[5]));
  EXPECT_EQ(off_rng(), untouched());
  // In a crop batch the labels stay those of the drawn slice, the same seed draws the same batch.
  c.classes = torch::zeros({10, 8, 8}, torch::kUInt8);
  for (int z = 0; z < 10; ++z) c.classes[z].fill_(z % 4);
  for (int z = 0; z < 10; ++z) c.foreground.push_back(z % 4 != 0);
  IndexClassVoxels(c);
  const std::vector<TrainCase> cases = {c};
  std::mt19937_64 a(11), b(11);
  const Batch first = SampleCropBatch(cases, 8, 4, 1.0, thick, a);
  const Batch again = SampleCropBatch(cases, 8, 4, 1.0, thick, b);
  EXPECT_TRUE(torch::equal(first.images, again.images));
  for (int i = 0; i < 8; ++i) {
    // The image is the mean of a block of slices holding one labelled like the target.
    const float mean = first.images[i][0][0][0].item<float>();
    const int64_t label = first.targets[i][0][0].item<int64_t>();
    EXPECT_TRUE(torch::all(first.targets[i].eq(label)).item<bool>()) << i;
    bool fits = false;
    for (int z = static_cast<int>(label); z < 10; z += 4) fits = fits || std::abs(mean - z) <= 1;
    EXPECT_TRUE(fits) << i << ": mean " << mean << ", label " << label;
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
  absl::StatusOr<std::vector<TrainCase>> slices_only =
      LoadTrainCases(dirs, corrected, nullptr, {false, true}, /*keep_channels=*/false);
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
  for (int k = 0; k < 3; ++k) {  // the class index covers every tumour voxel of its class
    EXPECT_EQ(static_cast<int64_t>((*all)[0].class_voxels[k].size()),
              (*all)[0].classes.eq(k + 1).sum().item<int64_t>())
        << k;
  }
  // Without its channels a case trains alike: the same slices, classes and geometry.
  ASSERT_TRUE(slices_only.ok()) << slices_only.status();
  for (size_t i = 0; i < dirs.size(); ++i) {
    const TrainCase& kept = (*mixed)[i];
    const TrainCase& released = (*slices_only)[i];
    EXPECT_FALSE(kept.image.channels[0].empty());
    for (const std::vector<float>& channel : released.image.channels) {
      EXPECT_TRUE(channel.empty());
      EXPECT_EQ(channel.capacity(), 0u);
    }
    EXPECT_EQ(released.image.geometry.dims, kept.image.geometry.dims);
    EXPECT_TRUE(torch::equal(released.slices, kept.slices));
    EXPECT_TRUE(torch::equal(released.classes, kept.classes));
    EXPECT_EQ(released.labels, kept.labels);
    EXPECT_EQ(released.uncorrected, kept.uncorrected);
  }
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("1 uncorrected flags for 2 case folders"),
            std::string::npos);
}

}  // namespace
}  // namespace danet::train
