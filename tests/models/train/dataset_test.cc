// The decision network's batches: half tumour, half other slices, each pool drawn by weight.
#include "models/train/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

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

}  // namespace
}  // namespace danet::train
