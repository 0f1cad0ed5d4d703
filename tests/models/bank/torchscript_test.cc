// Any 2D network exported as TorchScript joins the bank (the paper's "any 2D network can be
// incorporated"). The network is scripted by Debian's python3-torch at test time (ctest
// fixture make_torchscript_model).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "models/bank/bank.h"
#include "models/bundle/bundle_config.h"

namespace danet::models {
namespace {

std::filesystem::path ScriptDir() {
  const char* dir = std::getenv("DANET_TEST_TORCHSCRIPT_DIR");
  return dir != nullptr ? dir : "";
}

class TorchScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    if (ScriptDir().empty() || !std::filesystem::exists(ScriptDir() / "tiny_seg.pt")) {
      GTEST_SKIP() << "run through ctest: the make_torchscript_model fixture creates the model";
    }
  }

  // A bank of one small native UNet and the scripted network, under id "ext".
  static v1::BundleConfig Config() {
    v1::BundleConfig config = PaperPresetConfig();
    config.mutable_models()->DeleteSubrange(1, 3);
    config.mutable_models(0)->mutable_unet()->set_base_width(4);
    v1::BankModel* ext = config.add_models();
    ext->set_id("ext");
    ext->mutable_torchscript()->set_file("tiny_seg.pt");
    ext->set_gmacs_per_slice(0.02);
    return config;
  }
};

TEST_F(TorchScriptTest, ScriptedNetworkLoadsIntoTheBankAndComputesWhatPythonComputed) {
  BankOptions options;
  options.load_weights = false;
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(Config(), ScriptDir(), options);
  ASSERT_TRUE(bank.ok()) << bank.status();
  const std::optional<int> ext = (*bank)->FindModel("ext");
  ASSERT_TRUE(ext.has_value());
  EXPECT_EQ((*bank)->model_config(*ext).gmacs_per_slice(), 0.02);

  std::ifstream in(ScriptDir() / "reference.pt", std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  const c10::Dict<c10::IValue, c10::IValue> reference = torch::pickle_load(bytes).toGenericDict();
  const torch::Tensor x = reference.at("input").toTensor();
  torch::NoGradGuard no_grad;
  const torch::Tensor y = (*bank)->model(*ext).Forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(torch::allclose(y, reference.at("output").toTensor(), 1e-5, 1e-6));
}

TEST_F(TorchScriptTest, SavedBundleCarriesTheScriptAndReloads) {
  BankOptions options;
  options.load_weights = false;
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(Config(), ScriptDir(), options);
  ASSERT_TRUE(bank.ok()) << bank.status();
  const std::filesystem::path out =
      std::filesystem::temp_directory_path() / ("danet_ts_" + std::to_string(::getpid()));
  std::filesystem::remove_all(out);
  ASSERT_TRUE((*bank)->Save(out, WeightDtype::kFloat32).ok());
  EXPECT_TRUE(std::filesystem::exists(out / "tiny_seg.pt"));
  absl::StatusOr<std::unique_ptr<Bank>> loaded = Bank::Load(out, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({1, 4, 32, 32});
  EXPECT_TRUE(torch::equal((*bank)->model(1).Forward(x), (*loaded)->model(1).Forward(x)));
  EXPECT_TRUE(torch::equal((*bank)->model(0).Forward(x), (*loaded)->model(0).Forward(x)));
  std::filesystem::remove_all(out);
}

TEST_F(TorchScriptTest, BrokenScriptFileIsAClearError) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("danet_ts_bad_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tiny_seg.pt") << "not a torchscript archive";
  BankOptions options;
  options.load_weights = false;
  absl::StatusOr<std::unique_ptr<Bank>> bank = Bank::Create(Config(), dir, options);
  ASSERT_FALSE(bank.ok());
  EXPECT_EQ(bank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bank.status().message(), ::testing::HasSubstr("tiny_seg.pt"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace danet::models
