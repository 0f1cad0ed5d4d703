// danet-bank: inspect and create model bundles.
//
//   danet-bank describe [--preset paper | --bundle DIR] [--json]
//   danet-bank init --out DIR [--preset paper] [--seed N] [--dtype float32|float16]
//   danet-bank check --bundle DIR
//
// Exit codes: 0 success, 1 the bundle or preset is bad, 2 usage error.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "models/bank/bank.h"
#include "models/bank/describe.h"
#include "models/bank/device.h"
#include "models/bundle/bundle_config.h"

ABSL_FLAG(std::string, preset, "",
          "Built-in bank to use instead of a bundle: paper, compact or tiny.");
ABSL_FLAG(std::string, bundle, "", "Bundle directory (holds bundle.pbtxt).");
ABSL_FLAG(bool, json, false, "describe: print JSON instead of a table.");
ABSL_FLAG(std::string, out, "", "init: directory to write the new bundle to.");
ABSL_FLAG(uint64_t, seed, 1, "init: random seed for the initial weights.");
ABSL_FLAG(std::string, dtype, "float32", "init: weight storage, float32 or float16.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0: all cores).");

namespace danet::models {
namespace {

constexpr char kUsage[] =
    "danet-bank COMMAND [flags]\n"
    "  describe [--preset paper | --bundle DIR] [--json]  print the bank: models, params, GMACs\n"
    "  init --out DIR [--preset paper] [--seed N] [--dtype float16]  write a randomly\n"
    "      initialised bundle (the starting point of training)\n"
    "  check --bundle DIR  validate and load a bundle";

int Fail(const absl::Status& status) {
  std::cerr << "danet-bank: " << status << "\n";
  return 1;
}

int Usage(const std::string& problem) {
  std::cerr << "danet-bank: " << problem << "\n\n" << kUsage << "\n";
  return 2;
}

absl::StatusOr<std::unique_ptr<Bank>> OpenBank(const std::string& default_preset) {
  const std::string bundle = absl::GetFlag(FLAGS_bundle);
  std::string preset = absl::GetFlag(FLAGS_preset);
  if (!bundle.empty() && !preset.empty()) {
    return absl::InvalidArgumentError("give --bundle or --preset, not both");
  }
  if (!bundle.empty()) return Bank::Load(bundle, BankOptions{});
  if (preset.empty()) preset = default_preset;
  absl::StatusOr<v1::BundleConfig> config = PresetConfig(preset);
  if (!config.ok()) return absl::InvalidArgumentError(config.status().message());
  BankOptions options;
  options.load_weights = false;
  options.seed = absl::GetFlag(FLAGS_seed);
  return Bank::Create(*std::move(config), ".", options);
}

int Describe() {
  absl::StatusOr<std::unique_ptr<Bank>> bank = OpenBank("paper");
  if (!bank.ok()) return Fail(bank.status());
  absl::StatusOr<nlohmann::json> description = DescribeBank(**bank);
  if (!description.ok()) return Fail(description.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << description->dump(2) << "\n";
  } else {
    std::cout << FormatBankDescription(*description);
  }
  return 0;
}

int Init() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Usage("init needs --out DIR");
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype != "float32" && dtype != "float16") return Usage("--dtype is float32 or float16");
  if (!absl::GetFlag(FLAGS_bundle).empty()) return Usage("init takes --preset, not --bundle");
  absl::StatusOr<std::unique_ptr<Bank>> bank = OpenBank("paper");
  if (!bank.ok()) return Fail(bank.status());
  const absl::Status saved =
      (*bank)->Save(out, dtype == "float16" ? WeightDtype::kFloat16 : WeightDtype::kFloat32);
  if (!saved.ok()) return Fail(saved);
  std::cout << "wrote an untrained bundle to " << out << "\n";
  return 0;
}

int Check() {
  if (absl::GetFlag(FLAGS_bundle).empty()) return Usage("check needs --bundle DIR");
  absl::StatusOr<std::unique_ptr<Bank>> bank = OpenBank("");
  if (!bank.ok()) return Fail(bank.status());
  std::cout << "ok: " << (*bank)->size() << " bank models and the decision network load\n";
  return 0;
}

}  // namespace
}  // namespace danet::models

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(danet::models::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  danet::models::SetUpProcess(absl::GetFlag(FLAGS_threads));
  if (args.size() != 2) return danet::models::Usage("expected exactly one command");
  const std::string command = args[1];
  if (command == "describe") return danet::models::Describe();
  if (command == "init") return danet::models::Init();
  if (command == "check") return danet::models::Check();
  return danet::models::Usage(absl::StrCat("unknown command '", command, "'"));
}
