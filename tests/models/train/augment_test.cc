// Augmentation: deterministic per seed, spatial transforms move image and labels together and
// are invertible, intensity transforms never touch the labels or the background.
#include "models/train/augment.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace danet::train {
namespace {

constexpr int64_t kSide = 96;

// A 4-channel "brain" disc with a labelled cube (class 3) whose image value is 1 in channel 0.
std::pair<torch::Tensor, torch::Tensor> CubeSlice() {
  torch::Tensor image = torch::zeros({4, kSide, kSide});
  torch::Tensor labels = torch::zeros({kSide, kSide}, torch::kUInt8);
  const torch::Tensor ys = torch::arange(kSide).view({-1, 1}) - kSide / 2.0;
  const torch::Tensor xs = torch::arange(kSide).view({1, -1}) - kSide / 2.0;
  const torch::Tensor disc = (ys * ys + xs * xs) < 40.0 * 40.0;
  // Tissue: a ramp from -1 to 0 across the disc (so gamma and blur have something to act on).
  const torch::Tensor ramp = (xs + kSide / 2.0) / kSide - 1.0 + 0 * ys;
  for (int c = 0; c < 4; ++c) image[c] = torch::where(disc, ramp, image[c]);
  using torch::indexing::Slice;
  image.index_put_({0, Slice(30, 55), Slice(40, 70)}, 1.0);
  labels.index_put_({Slice(30, 55), Slice(40, 70)}, 3);
  return {image, labels};
}

double Dice(const torch::Tensor& a, const torch::Tensor& b) {
  const double inter = (a & b).sum().item<double>();
  return 2 * inter / (a.sum().item<double>() + b.sum().item<double>());
}

AugmentOptions SpatialOnly() {
  AugmentOptions o = *AugmentPreset("none");
  o.rotation_deg = {1, -30, 30};
  o.scale = {1, 0.8, 1.25};
  o.elastic_px = {1, 4, 8};
  o.mirror_p = 0.5;
  return o;
}

AugmentOptions IntensityOnly() {
  AugmentOptions o = *AugmentPreset("nnunet");
  o.rotation_deg.p = o.scale.p = o.elastic_px.p = 0;
  o.mirror_p = 0;
  for (TransformRange* r :
       {&o.brightness, &o.contrast, &o.gamma, &o.noise_sd, &o.blur_sigma, &o.low_res, &o.bias}) {
    r->p = 1;
  }
  return o;
}

TEST(AugmentTest, SameSeedSameResult) {
  const auto [image, labels] = CubeSlice();
  for (const AugmentOptions& options : {*AugmentPreset("nnunet"), SpatialOnly(), IntensityOnly()}) {
    std::mt19937_64 a(42), b(42), c(43);
    const auto first = Augment(image, labels, options, a);
    const auto second = Augment(image, labels, options, b);
    EXPECT_TRUE(torch::equal(first.first, second.first));
    EXPECT_TRUE(torch::equal(first.second, second.second));
    // Another seed gives another result where a transform always fires.
    if (options.brightness.p == 1 || options.elastic_px.p == 1) {
      EXPECT_FALSE(torch::equal(first.first, Augment(image, labels, options, c).first));
    }
  }
}

TEST(AugmentTest, SpatialTransformsMoveLabelsWithTheImage) {
  const auto [image, labels] = CubeSlice();
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed);
    const auto [moved_image, moved_labels] = Augment(image, labels, SpatialOnly(), rng);
    EXPECT_EQ(moved_labels.scalar_type(), torch::kUInt8);
    const torch::Tensor from_image = moved_image[0] > 0.25;
    const torch::Tensor from_labels = moved_labels == 3;
    EXPECT_GT(from_labels.sum().item<int64_t>(), 300) << "seed " << seed;
    EXPECT_GT(Dice(from_image, from_labels), 0.95) << "seed " << seed;
  }
}

TEST(AugmentTest, ForwardThenInverseGivesTheOriginalCube) {
  const auto [image, labels] = CubeSlice();
  SpatialTransform t;
  t.angle_rad = 25 * M_PI / 180;
  t.scale = 1.2;
  t.mirror_x = true;
  std::mt19937_64 rng(5);
  AugmentOptions elastic = *AugmentPreset("none");
  elastic.elastic_px = {1, 8, 8};
  t.displacement = DrawSpatial(elastic, kSide, kSide, rng).displacement;
  ASSERT_TRUE(t.displacement.defined());
  EXPECT_NEAR(t.displacement.abs().max().item<double>(), 8.0, 1e-3);
  const torch::Tensor moved = ResampleLabels(labels, SamplingGrid(t, kSide, kSide));
  EXPECT_FALSE(torch::equal(moved, labels));
  const torch::Tensor back = ResampleLabels(moved, InverseSamplingGrid(t, kSide, kSide));
  EXPECT_GT(Dice(back == 3, labels == 3), 0.97);
  // Away from the cube's edges the round trip is exact.
  const double agree = (back == labels).to(torch::kFloat32).mean().item<double>();
  EXPECT_GT(agree, 0.99);
}

TEST(AugmentTest, MirroringAloneIsAnExactFlip) {
  const auto [image, labels] = CubeSlice();
  AugmentOptions mirror = *AugmentPreset("none");
  mirror.mirror_p = 1;
  std::mt19937_64 rng(1);
  const auto [out_image, out_labels] = Augment(image, labels, mirror, rng);
  EXPECT_TRUE(torch::equal(out_image, image.flip({1, 2})));
  EXPECT_TRUE(torch::equal(out_labels, labels.flip({0, 1})));
}

TEST(AugmentTest, IntensityTransformsNeverTouchLabelsOrBackground) {
  const auto [image, labels] = CubeSlice();
  const torch::Tensor background = (image == 0).all(0);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    std::mt19937_64 rng(seed);
    const auto [out_image, out_labels] = Augment(image, labels, IntensityOnly(), rng);
    EXPECT_TRUE(torch::equal(out_labels, labels));
    EXPECT_FALSE(torch::equal(out_image, image));
    EXPECT_EQ(out_image.masked_select(background.unsqueeze(0).expand_as(out_image))
                  .abs()
                  .sum()
                  .item<double>(),
              0.0);
    EXPECT_TRUE(torch::isfinite(out_image).all().item<bool>());
  }
}

TEST(AugmentTest, EachIntensityTransformChangesTheImageAlone) {
  const auto [image, labels] = CubeSlice();
  AugmentOptions none = *AugmentPreset("none");
  const AugmentOptions all = IntensityOnly();
  const std::vector<std::pair<const char*, TransformRange AugmentOptions::*>> transforms = {
      {"brightness", &AugmentOptions::brightness},
      {"contrast", &AugmentOptions::contrast},
      {"gamma", &AugmentOptions::gamma},
      {"noise", &AugmentOptions::noise_sd},
      {"blur", &AugmentOptions::blur_sigma},
      {"low_res", &AugmentOptions::low_res},
      {"bias", &AugmentOptions::bias}};
  for (const auto& [name, member] : transforms) {
    AugmentOptions one = none;
    one.*member = all.*member;
    (one.*member).lo = (one.*member).hi = name == std::string("low_res") ? 0.5
                                          : name == std::string("noise") ? 0.2
                                          : name == std::string("blur")  ? 1.0
                                          : name == std::string("bias")  ? 0.4
                                                                         : 1.3;
    std::mt19937_64 rng(3);
    const torch::Tensor out = AugmentIntensity(image, one, rng);
    EXPECT_FALSE(torch::allclose(out, image)) << name;
  }
  std::mt19937_64 rng(3);
  EXPECT_TRUE(torch::equal(AugmentIntensity(image, none, rng), image));
}

TEST(AugmentTest, PresetsByName) {
  EXPECT_TRUE(AugmentPreset("nnunet").ok());
  EXPECT_TRUE(AugmentPreset("flip").ok());
  EXPECT_TRUE(AugmentPreset("none").ok());
  const absl::StatusOr<AugmentOptions> bad = AugmentPreset("heavy");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("nnunet"), std::string::npos);
  EXPECT_NE(bad.status().message().find("strong"), std::string::npos);
}

TEST(AugmentTest, StrongPresetKeepsTheSpatialTransformsAndWidensTheAppearanceOnes) {
  const AugmentOptions nnunet = *AugmentPreset("nnunet");
  const AugmentOptions strong = *AugmentPreset("strong");
  // The same spatial transforms: labels see what they see under nnunet.
  for (auto member :
       {&AugmentOptions::rotation_deg, &AugmentOptions::scale, &AugmentOptions::elastic_px}) {
    EXPECT_EQ((strong.*member).p, (nnunet.*member).p);
    EXPECT_EQ((strong.*member).lo, (nnunet.*member).lo);
    EXPECT_EQ((strong.*member).hi, (nnunet.*member).hi);
  }
  EXPECT_EQ(strong.mirror_p, nnunet.mirror_p);
  // Every appearance transform at least as often, none narrower.
  for (auto member :
       {&AugmentOptions::brightness, &AugmentOptions::contrast, &AugmentOptions::gamma,
        &AugmentOptions::noise_sd, &AugmentOptions::blur_sigma, &AugmentOptions::low_res,
        &AugmentOptions::bias}) {
    EXPECT_GE((strong.*member).p, (nnunet.*member).p);
    EXPECT_LE((strong.*member).lo, (nnunet.*member).lo);
    EXPECT_GE((strong.*member).hi, (nnunet.*member).hi);
  }
  EXPECT_GT(strong.bias.p, nnunet.bias.p);
  EXPECT_GT(strong.bias.hi, nnunet.bias.hi);
  EXPECT_GT(strong.gamma.hi, nnunet.gamma.hi);
}

}  // namespace
}  // namespace danet::train
