// Bundle config parsing and validation (errors name their field), weight round trips, and
// bank loading errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "models/bank/bank.h"
#include "models/bank/blas_kernels.h"
#include "models/bundle/bundle_config.h"

namespace danet::models {
namespace {

using ::testing::HasSubstr;

// Every test's folder sits under one per-process root, removed when the tests are done.
std::filesystem::path TempRoot() {
  return std::filesystem::temp_directory_path() /
         ("danet_bundle_test_" + std::to_string(::getpid()));
}

class RemoveTempRoot : public ::testing::Environment {
 public:
  void TearDown() override { std::filesystem::remove_all(TempRoot()); }
};
[[maybe_unused]] ::testing::Environment* const kRemoveTempRoot =
    ::testing::AddGlobalTestEnvironment(new RemoveTempRoot);

std::filesystem::path TempDir(const std::string& name) {
  const std::filesystem::path dir = TempRoot() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The tiny preset on 64 x 64 slices: fast to run.
v1::BundleConfig SmallConfig() {
  v1::BundleConfig config = *PresetConfig("tiny");
  config.mutable_preprocessing()->set_slice_height(64);
  config.mutable_preprocessing()->set_slice_width(64);
  return config;
}

std::unique_ptr<Bank> NewBank(const v1::BundleConfig& config, uint64_t seed) {
  BankOptions options;
  options.load_weights = false;
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(config, ".", options);
  EXPECT_TRUE(bank.ok()) << bank.status();
  return bank.ok() ? *std::move(bank) : nullptr;
}

// Every network's output on one fixed input, in route order (decision first).
std::vector<torch::Tensor> Outputs(const Bank& bank) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(99);
  const torch::Tensor x = torch::randn({2, 4, 64, 64});
  std::vector<torch::Tensor> out = {bank.decision().Forward(x)};
  for (int i = 0; i < bank.size(); ++i) out.push_back(bank.model(i).Forward(x));
  return out;
}

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(BundleTest, PaperPresetIsValid) {
  EXPECT_TRUE(ValidateBundleConfig(PaperPresetConfig(), {}).ok());
}

TEST_F(BundleTest, SyntaxErrorsGiveFileLineAndColumn) {
  absl::StatusOr<v1::BundleConfig> config =
      ParseBundleConfig("name: \"x\"\nmodels { id: \"M1\" unet { base_wdth: 3 } }\n", "b.pbtxt");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("b.pbtxt:2:"));
  EXPECT_THAT(config.status().message(), HasSubstr("base_wdth"));
}

struct BadConfigCase {
  std::string name;
  std::function<void(v1::BundleConfig&)> mutate;
  std::string field;  // what the error must name
};

void PrintTo(const BadConfigCase& c, std::ostream* os) { *os << c.name; }

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(BadConfigTest, ErrorNamesTheField) {
  v1::BundleConfig config = PaperPresetConfig();
  GetParam().mutate(config);
  const absl::Status status = ValidateBundleConfig(config, {});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    Validation, BadConfigTest,
    ::testing::Values(
        BadConfigCase{"EmptyBank", [](auto& c) { c.clear_models(); }, "models: the bank is empty"},
        BadConfigCase{"BadId", [](auto& c) { c.mutable_models(1)->set_id("M 2"); }, "models[1].id"},
        BadConfigCase{"SkipId", [](auto& c) { c.mutable_models(0)->set_id("skip"); },
                      "models[0].id: 'skip' is reserved"},
        BadConfigCase{"DuplicateId", [](auto& c) { c.mutable_models(3)->set_id("M1"); },
                      "models[3].id: duplicate id 'M1'"},
        BadConfigCase{"NoArch", [](auto& c) { c.mutable_models(2)->clear_transbts(); },
                      "models[2]: no architecture"},
        BadConfigCase{"UNetWidth",
                      [](auto& c) { c.mutable_models(0)->mutable_unet()->set_base_width(0); },
                      "models[0].unet.base_width"},
        BadConfigCase{"Heads",
                      [](auto& c) { c.mutable_models(3)->mutable_transbts()->set_num_heads(7); },
                      "models[3].transbts.num_heads: 7 does not divide embed_dim 512"},
        BadConfigCase{"Classes",
                      [](auto& c) { c.mutable_models(1)->mutable_unet()->set_num_classes(3); },
                      "models[1].unet.num_classes"},
        BadConfigCase{"ScriptCost",
                      [](auto& c) { c.mutable_models(1)->mutable_torchscript()->set_file("x.pt"); },
                      "models[1].gmacs_per_slice"},
        BadConfigCase{"ScriptWeights",
                      [](auto& c) {
                        c.mutable_models(1)->mutable_torchscript()->set_file("x.pt");
                        c.mutable_models(1)->set_weights("w.pt");
                      },
                      "models[1].weights"},
        BadConfigCase{
            "EscapingPath",
            [](auto& c) { c.mutable_models(1)->mutable_torchscript()->set_file("../x.pt"); },
            "models[1].torchscript.file"},
        BadConfigCase{"DecisionWidths",
                      [](auto& c) { c.mutable_decision()->mutable_arch()->add_stage_widths(192); },
                      "decision.arch.stage_widths"},
        BadConfigCase{
            "OddWidth",
            [](auto& c) { c.mutable_decision()->mutable_arch()->set_stage_widths(1, 25); },
            "decision.arch.stage_widths[1]"},
        BadConfigCase{"Modalities",
                      [](auto& c) { c.mutable_preprocessing()->set_modalities(1, "dwi"); },
                      "preprocessing.modalities"},
        BadConfigCase{"Normalization",
                      [](auto& c) { c.mutable_preprocessing()->set_normalization("minmax"); },
                      "preprocessing.normalization"},
        BadConfigCase{"BiasCorrection",
                      [](auto& c) { c.mutable_preprocessing()->set_bias_correction("poly9"); },
                      "preprocessing.bias_correction"},
        BadConfigCase{"BiasRefitVolume",
                      [](auto& c) { c.mutable_preprocessing()->set_bias_refit_min_ml(-1); },
                      "preprocessing.bias_refit_min_ml"},
        BadConfigCase{"BiasBrightLimit",
                      [](auto& c) { c.mutable_preprocessing()->set_bias_flair_bright_sigmas(-1); },
                      "preprocessing.bias_flair_bright_sigmas"},
        BadConfigCase{"BiasRefitChange",
                      [](auto& c) { c.mutable_preprocessing()->set_bias_refit_min_change(-0.1); },
                      "preprocessing.bias_refit_min_change"},
        BadConfigCase{
            "BiasRefitProbeModel",
            [](auto& c) { c.mutable_preprocessing()->set_bias_refit_probe_model("M9"); },
            "preprocessing.bias_refit_probe_model: 'M9' is not a bank model (one of: M1, M2"},
        BadConfigCase{
            "BiasRefitProbeSlices",
            [](auto& c) { c.mutable_preprocessing()->set_bias_refit_probe_min_slices(-1); },
            "preprocessing.bias_refit_probe_min_slices: -1 is not a slice count"},
        BadConfigCase{
            "BiasRefitProbeSpacing",
            [](auto& c) { c.mutable_preprocessing()->set_bias_refit_probe_spacing_mm(25); },
            "preprocessing.bias_refit_probe_spacing_mm: 25 is not a slice spacing (mm, 0 to 20)"},
        BadConfigCase{"InplaneSpacing",
                      [](auto& c) { c.mutable_preprocessing()->set_inplane_spacing_mm(-0.5); },
                      "preprocessing.inplane_spacing_mm"},
        BadConfigCase{"SliceSize",
                      [](auto& c) { c.mutable_preprocessing()->set_slice_height(100); },
                      "preprocessing.slice_height"},
        BadConfigCase{"Dtype", [](auto& c) { c.set_weight_dtype("int8"); }, "weight_dtype"}),
    [](const auto& info) { return info.param.name; });

TEST_F(BundleTest, MissingWeightFileIsNotFoundAndNamed) {
  const std::filesystem::path dir = TempDir("missing");
  v1::BundleConfig config = SmallConfig();
  for (auto& m : *config.mutable_models()) {
    m.set_weights(m.id() + ".pt");
    m.set_gmacs_per_slice(1.0);
  }
  config.mutable_decision()->set_weights("decision.pt");
  ValidateOptions options;
  options.bundle_dir = dir;
  const absl::Status status = ValidateBundleConfig(config, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("models[0].weights: file 'M1.pt'"));
}

TEST_F(BundleTest, SameSeedGivesSameWeights) {
  std::unique_ptr<Bank> a = NewBank(SmallConfig(), 5), b = NewBank(SmallConfig(), 5),
                        c = NewBank(SmallConfig(), 6);
  const auto out_a = Outputs(*a), out_b = Outputs(*b), out_c = Outputs(*c);
  for (size_t i = 0; i < out_a.size(); ++i) EXPECT_TRUE(torch::equal(out_a[i], out_b[i])) << i;
  EXPECT_FALSE(torch::equal(out_a[1], out_c[1]));
}

TEST_F(BundleTest, Float32WeightsRoundTripExactly) {
  const std::filesystem::path dir = TempDir("f32");
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 11);
  ASSERT_TRUE(bank->Save(dir, WeightDtype::kFloat32).ok());
  absl::StatusOr<std::unique_ptr<Bank>> loaded = Bank::Load(dir, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto before = Outputs(*bank), after = Outputs(**loaded);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i])) << i;
  EXPECT_EQ((*loaded)->config().weight_dtype(), "float32");
  for (int i = 0; i < bank->size(); ++i) {
    EXPECT_EQ((*loaded)->model_config(i).gmacs_per_slice(),
              bank->model_config(i).gmacs_per_slice());
  }
}

TEST_F(BundleTest, BankFoldedForInferenceRefusesToSave) {
  BankOptions options;
  options.load_weights = false;
  options.seed = 4;
  options.fold_batch_norm = true;
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(SmallConfig(), ".", options);
  ASSERT_TRUE(bank.ok()) << bank.status();
  EXPECT_TRUE((*bank)->decision().BatchNormFolded());
  const absl::Status saved = (*bank)->Save(TempDir("folded"), WeightDtype::kFloat32);
  EXPECT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(saved.message()), testing::HasSubstr("folded"));
}

// Rebuilding the decision network for pooled input keeps its weights (so its output is that of
// the same weights on the pooled slice); a change of weight shapes is refused and the old
// network stays.
TEST_F(BundleTest, DecisionRebuiltForPooledInputKeepsItsWeights) {
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 5);
  ASSERT_NE(bank, nullptr);
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 4, 64, 64});
  const torch::Tensor pooled = torch::avg_pool2d(x, 2);
  const torch::Tensor before = bank->decision().Forward(pooled);
  v1::DecisionArch* arch = bank->mutable_config()->mutable_decision()->mutable_arch();
  const v1::DecisionArch trained = *arch;
  arch->set_input_downsample(2);
  ASSERT_TRUE(bank->RebuildDecisionKeepingWeights(trained).ok());
  EXPECT_THAT(bank->decision().Describe(), HasSubstr("input /2"));
  EXPECT_TRUE(torch::allclose(bank->decision().Forward(x), before, 1e-5, 1e-6));
  // Other widths change the weights' shapes: refused, naming what changed; the pooled network
  // stays.
  const v1::DecisionArch pooled_arch = *arch;
  arch->set_head_width(arch->head_width() + 16);
  const absl::Status refused = bank->RebuildDecisionKeepingWeights(pooled_arch);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("head.weight"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("train it again"));
  EXPECT_TRUE(torch::allclose(bank->decision().Forward(x), before, 1e-5, 1e-6));
}

// Dropping the max pool after the stem (stem_pool_stride 1) changes no weight either: the rebuilt
// network holds the trained tensors, value for value, and runs them on the finer grid.
TEST_F(BundleTest, DecisionRebuiltWithoutTheStemPoolKeepsItsWeights) {
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 5);
  ASSERT_NE(bank, nullptr);
  std::map<std::string, torch::Tensor> trained;
  for (const auto& [name, tensor] : bank->decision().NamedState()) {
    trained.emplace(name, tensor.detach().clone());
  }
  v1::DecisionArch* arch = bank->mutable_config()->mutable_decision()->mutable_arch();
  const v1::DecisionArch previous = *arch;
  arch->set_stem_pool_stride(1);
  ASSERT_TRUE(Bank::CheckDecisionGrowth(previous, *arch).ok());
  ASSERT_TRUE(bank->RebuildDecisionKeepingWeights(previous).ok());
  EXPECT_THAT(bank->decision().Describe(), HasSubstr("no stem pool"));
  size_t seen = 0;
  for (const auto& [name, tensor] : bank->decision().NamedState()) {
    ASSERT_EQ(trained.count(name), 1u) << name;
    EXPECT_TRUE(torch::equal(tensor, trained.at(name))) << name;
    ++seen;
  }
  EXPECT_EQ(seen, trained.size());
  // A bundle whose decision network has a stride the network lacks is refused, naming it.
  v1::BundleConfig bad = SmallConfig();
  bad.mutable_decision()->mutable_arch()->set_stem_pool_stride(3);
  BankOptions options;
  options.load_weights = false;
  const absl::Status refused = Bank::Create(bad, ".", options).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("stem_pool_stride"));
}

// Features added to a trained decision network (its head's maximum, then a tumour map) start at
// a classifier weight of 0: the grown network gives the trained one's logits, its new weights
// are trainable, and each trained column sits where its feature now is. Turning a feature off
// again is refused.
TEST_F(BundleTest, DecisionGrownWithNewFeaturesKeepsItsLogits) {
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 5);
  ASSERT_NE(bank, nullptr);
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({3, 4, 64, 64});
  const auto logits = [&] {
    torch::NoGradGuard no_grad;
    return bank->decision().Forward(x);
  };
  const auto classifier = [&] {
    for (const auto& [name, tensor] : bank->decision().NamedState()) {
      if (name == "classifier.weight") return tensor.detach().clone();
    }
    return torch::Tensor();
  };
  const torch::Tensor before = logits();
  const torch::Tensor columns = classifier();
  v1::DecisionArch* arch = bank->mutable_config()->mutable_decision()->mutable_arch();
  const v1::DecisionArch plain = *arch;
  const int64_t head = columns.size(1);

  arch->set_tumour_head(true);
  ASSERT_TRUE(bank->RebuildDecisionKeepingWeights(plain).ok());
  EXPECT_THAT(bank->decision().Describe(), HasSubstr("tumour head"));
  EXPECT_TRUE(torch::allclose(logits(), before, 1e-5, 1e-6));
  torch::Tensor grown = classifier();
  ASSERT_EQ(grown.size(1), head + 1);
  EXPECT_TRUE(torch::equal(grown.narrow(1, 0, head), columns));
  EXPECT_EQ(grown.narrow(1, head, 1).abs().max().item<float>(), 0.0F);

  // The maximum goes between the average and the tumour map: the map's column moves.
  const v1::DecisionArch with_map = *arch;
  const torch::Tensor map_column = grown.narrow(1, head, 1).clone().fill_(0.5);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, tensor] : bank->decision().NamedState()) {
      if (name == "classifier.weight") tensor.narrow(1, head, 1).copy_(map_column);
    }
  }
  const torch::Tensor with_map_logits = logits();
  arch->set_global_max_pool(true);
  ASSERT_TRUE(bank->RebuildDecisionKeepingWeights(with_map).ok());
  EXPECT_TRUE(torch::allclose(logits(), with_map_logits, 1e-5, 1e-6));
  grown = classifier();
  ASSERT_EQ(grown.size(1), 2 * head + 1);
  EXPECT_TRUE(torch::equal(grown.narrow(1, 0, head), columns));
  EXPECT_EQ(grown.narrow(1, head, head).abs().max().item<float>(), 0.0F);
  EXPECT_TRUE(torch::equal(grown.narrow(1, 2 * head, 1), map_column));
  for (const torch::Tensor& p : bank->decision().Parameters()) EXPECT_TRUE(p.requires_grad());

  // Turning a feature off, or moving the map to a stage's features, is refused; the trained
  // network stays and the config describes it again.
  const v1::DecisionArch both = *arch;
  arch->set_tumour_head(false);
  absl::Status refused = bank->RebuildDecisionKeepingWeights(both);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("drops the tumour map"));
  EXPECT_TRUE(torch::allclose(logits(), with_map_logits, 1e-5, 1e-6));
  EXPECT_TRUE(bank->config().decision().arch().tumour_head());
  arch = bank->mutable_config()->mutable_decision()->mutable_arch();
  arch->set_tumour_head_stage(2);
  refused = bank->RebuildDecisionKeepingWeights(both);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("moves the trained tumour map"));
  EXPECT_EQ(bank->config().decision().arch().tumour_head_stage(), 0);
  EXPECT_TRUE(torch::allclose(logits(), with_map_logits, 1e-5, 1e-6));
}

// A bundle's int8_linear quantizes TransBTS's Linear layers on the CPU; BankOptions overrides
// it (the training tools set false). UNets and the decision network have none to quantize.
TEST_F(BundleTest, BundleInt8LinearQuantizesTheTransformersUnlessOverridden) {
  v1::BundleConfig config = SmallConfig();
  config.set_int8_linear(true);
  const auto plain = Outputs(*NewBank(SmallConfig(), 8));
  const auto int8 = Outputs(*NewBank(config, 8));
  bool some_transformer = false;
  for (int i = 0; i < config.models_size(); ++i) {
    const torch::Tensor &a = plain[i + 1], &b = int8[i + 1];
    if (config.models(i).has_transbts()) {
      some_transformer = true;
      EXPECT_FALSE(torch::equal(a, b)) << i;
      EXPECT_LT(((a - b).norm() / a.norm()).item<double>(), 0.05) << i;
    } else {
      EXPECT_TRUE(torch::equal(a, b)) << i;
    }
  }
  ASSERT_TRUE(some_transformer);
  BankOptions options;
  options.load_weights = false;
  options.seed = 8;
  options.int8_linear = false;
  const std::unique_ptr<Bank> float32 = *Bank::Create(config, ".", options);
  const auto overridden = Outputs(*float32);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(torch::equal(plain[i], overridden[i])) << i;
  // Bank::numerics says which (danet-eval's report records it).
  EXPECT_EQ(NewBank(config, 8)->numerics(), "float32, int8 Linear");
  EXPECT_EQ(float32->numerics(), "float32");
}

// BankOptions.bfloat16: the bank models compute in bfloat16 and return float32 outputs close
// to the float32 bank's, on the whole slice and on a window (TransBTS's positional table cut to
// it); the decision network is untouched; int8 Linear layers do not combine with it. On a CPU
// without bfloat16 dot products the bank is refused instead.
TEST_F(BundleTest, BFloat16BankModelsStayCloseToFloat32) {
  const v1::BundleConfig config = SmallConfig();
  BankOptions options;
  options.load_weights = false;
  options.seed = 8;
  options.fold_batch_norm = true;
  std::unique_ptr<Bank> plain = *Bank::Create(config, ".", options);
  options.bfloat16 = true;
  absl::StatusOr<std::unique_ptr<Bank>> created = Bank::Create(config, ".", options);
  if (!CpuHasBFloat16Dot()) {
    ASSERT_FALSE(created.ok());
    EXPECT_EQ(created.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(created.status().message()), HasSubstr("bfloat16 dot products"));
    return;
  }
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Bank> bf16 = *std::move(created);
  EXPECT_EQ(bf16->numerics(), "bfloat16");
  EXPECT_EQ(plain->numerics(), "float32");
  const auto a = Outputs(*plain), b = Outputs(*bf16);
  EXPECT_TRUE(torch::equal(a[0], b[0]));  // the decision network stays in float32
  torch::NoGradGuard no_grad;
  const torch::Tensor window = torch::randn({1, 4, 32, 48});
  const SliceWindow where{64, 64, 16, 8};
  for (int i = 0; i < config.models_size(); ++i) {
    EXPECT_EQ(b[i + 1].scalar_type(), torch::kFloat32) << i;
    EXPECT_EQ(b[i + 1].sizes(), a[i + 1].sizes()) << i;
    EXPECT_FALSE(torch::equal(a[i + 1], b[i + 1])) << i;  // really computed in bfloat16
    EXPECT_LT(((a[i + 1] - b[i + 1]).norm() / a[i + 1].norm()).item<double>(), 0.05) << i;
    const torch::Tensor wa = plain->model(i).ForwardWindow(window, where);
    const torch::Tensor wb = bf16->model(i).ForwardWindow(window, where);
    EXPECT_EQ(wb.sizes(), wa.sizes()) << i;
    EXPECT_LT(((wa - wb).norm() / wa.norm()).item<double>(), 0.05) << i;
  }
  options.int8_linear = true;
  absl::StatusOr<std::unique_ptr<Bank>> both = Bank::Create(config, ".", options);
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(both.status().message()), HasSubstr("bfloat16"));
}

TEST_F(BundleTest, Float16WeightsAreStableAfterTheFirstSave) {
  const std::filesystem::path first = TempDir("f16a"), second = TempDir("f16b"),
                              full = TempDir("f16_vs_f32");
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 12);
  ASSERT_TRUE(bank->Save(first, WeightDtype::kFloat16).ok());
  absl::StatusOr<std::unique_ptr<Bank>> once = Bank::Load(first, {});
  ASSERT_TRUE(once.ok()) << once.status();
  ASSERT_TRUE((*once)->Save(second, WeightDtype::kFloat16).ok());
  absl::StatusOr<std::unique_ptr<Bank>> twice = Bank::Load(second, {});
  ASSERT_TRUE(twice.ok()) << twice.status();
  const auto original = Outputs(*bank), a = Outputs(**once), b = Outputs(**twice);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
    EXPECT_TRUE(torch::allclose(original[i], a[i], /*rtol=*/1e-2, /*atol=*/1e-2)) << i;
  }
  ASSERT_TRUE(bank->Save(full, WeightDtype::kFloat32).ok());
  EXPECT_LT(std::filesystem::file_size(first / "M4.pt"),
            0.6 * std::filesystem::file_size(full / "M4.pt"));
}

TEST_F(BundleTest, WrongOrCorruptWeightFilesAreNamed) {
  const std::filesystem::path dir = TempDir("corrupt");
  std::unique_ptr<Bank> bank = NewBank(SmallConfig(), 13);
  ASSERT_TRUE(bank->Save(dir, WeightDtype::kFloat32).ok());
  // M1's weights where M2's belong: shapes differ.
  std::filesystem::copy_file(dir / "M1.pt", dir / "M2.pt",
                             std::filesystem::copy_options::overwrite_existing);
  absl::StatusOr<std::unique_ptr<Bank>> loaded = Bank::Load(dir, {});
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("models[1].weights"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("has shape"));
  // A truncated file.
  std::filesystem::resize_file(dir / "M2.pt", 100);
  loaded = Bank::Load(dir, {});
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("M2.pt"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("not readable"));
}

TEST_F(BundleTest, MissingConfigIsNotFound) {
  absl::StatusOr<std::unique_ptr<Bank>> loaded = Bank::Load(TempDir("empty"), {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("bundle.pbtxt"));
}

TEST_F(BundleTest, ConfigWrittenIsConfigRead) {
  const std::filesystem::path dir = TempDir("text");
  ASSERT_TRUE(WriteBundleConfig(PaperPresetConfig(), dir).ok());
  absl::StatusOr<v1::BundleConfig> read = ReadBundleConfig(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), PaperPresetConfig().SerializeAsString());
}

}  // namespace
}  // namespace danet::models
