// The bundle config: parsing `bundle.pbtxt`, validating it field by field, writing it, and the
// paper preset.
//
// Parsing and validation are separate steps (as Triton does it): a config that parses can
// still be wrong, and every validation error names the field that holds the problem, e.g.
// `models[2].transbts.num_heads: 7 does not divide embed_dim 512`.
#ifndef DANET_MODELS_BUNDLE_BUNDLE_CONFIG_H_
#define DANET_MODELS_BUNDLE_BUNDLE_CONFIG_H_

#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "danet/v1/bundle.pb.h"

namespace danet::models {

inline constexpr char kBundleConfigFile[] = "bundle.pbtxt";

// Parses protobuf text. Syntax errors come back as InvalidArgument with line:column.
absl::StatusOr<v1::BundleConfig> ParseBundleConfig(const std::string& text,
                                                   const std::string& source_name);

// Reads and parses DIR/bundle.pbtxt (NotFound when absent). Does not validate.
absl::StatusOr<v1::BundleConfig> ReadBundleConfig(const std::filesystem::path& dir);

// Writes DIR/bundle.pbtxt (creating DIR).
absl::Status WriteBundleConfig(const v1::BundleConfig& config, const std::filesystem::path& dir);

struct ValidateOptions {
  // When set, native models and the decision network must name weight files, every named
  // file must exist under this directory, and every model must state its cost. Unset for a
  // config that is about to be initialised or trained (presets).
  std::optional<std::filesystem::path> bundle_dir;
};

// Checks the config's semantics; the first problem found comes back as InvalidArgument (or
// NotFound for a missing file) naming its field.
absl::Status ValidateBundleConfig(const v1::BundleConfig& config, const ValidateOptions& options);

// The bank of the paper (section 4.1): M1 UNet-12, M2 UNet-16, M3 TransBTS-1, M4 TransBTS-4,
// ShuffleNetV2-M decision network, BraTS preprocessing. No weights, costs filled in by the
// caller from the analytic count.
v1::BundleConfig PaperPresetConfig();

// Named presets: "paper" (above); "compact", the shipped default's bank: the paper's UNets and
// TransBTS with a 256-wide transformer (MLP 1024) so the whole bundle stays small; "tiny", a
// few-thousand-parameter bank for fast end-to-end tests. NotFound for other names.
absl::StatusOr<v1::BundleConfig> PresetConfig(const std::string& name);

// The paper's per-slice GMACs at 240x240 (Table 3, setting 2) when `model` has exactly the
// architecture of one of the paper's bank models, else nullopt.
std::optional<double> PaperGMacs(const v1::BankModel& model);

// Copies of an architecture with every unset (zero) field replaced by its documented default,
// so that an explicit default and an omitted field describe the same network.
v1::UNetArch WithDefaults(const v1::UNetArch& arch);
v1::TransBTSArch WithDefaults(const v1::TransBTSArch& arch);
v1::DecisionArch WithDefaults(const v1::DecisionArch& arch);

}  // namespace danet::models

#endif  // DANET_MODELS_BUNDLE_BUNDLE_CONFIG_H_
