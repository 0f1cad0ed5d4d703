#include "models/bundle/bundle_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/volume/bias.h"
#include "models/volume/brats.h"

namespace danet::models {
namespace {

class CollectErrors final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

absl::Status Invalid(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

bool IsValidId(const std::string& id) {
  if (id.empty() || id.size() > 32) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

// A bundle-relative file: non-empty, relative, no "..", existing when a directory is given.
absl::Status CheckFile(const std::string& field, const std::string& file,
                       const ValidateOptions& options) {
  if (file.empty()) return Invalid(field, "is empty");
  const std::filesystem::path path(file);
  if (path.is_absolute()) return Invalid(field, absl::StrCat("'", file, "' must be relative"));
  for (const auto& part : path) {
    if (part == "..") return Invalid(field, absl::StrCat("'", file, "' leaves the bundle"));
  }
  if (options.bundle_dir && !std::filesystem::is_regular_file(*options.bundle_dir / path)) {
    return absl::NotFoundError(absl::StrCat(field, ": file '", file, "' is not in the bundle ",
                                            options.bundle_dir->string()));
  }
  return absl::OkStatus();
}

absl::Status CheckChannels(const std::string& prefix, int32_t in, int32_t classes) {
  if (in != 0 && in != 4) return Invalid(prefix + ".in_channels", "must be 4 (or unset)");
  if (classes != 0 && classes != 4) {
    return Invalid(prefix + ".num_classes", "must be 4 (or unset)");
  }
  return absl::OkStatus();
}

absl::Status CheckUNet(const std::string& prefix, const v1::UNetArch& arch) {
  if (arch.base_width() < 1 || arch.base_width() > 256) {
    return Invalid(prefix + ".base_width", absl::StrCat(arch.base_width(), " is not in 1..256"));
  }
  return CheckChannels(prefix, arch.in_channels(), arch.num_classes());
}

absl::Status CheckTransBTS(const std::string& prefix, const v1::TransBTSArch& given) {
  const v1::TransBTSArch arch = WithDefaults(given);
  if (arch.num_layers() < 1 || arch.num_layers() > 64) {
    return Invalid(prefix + ".num_layers", absl::StrCat(arch.num_layers(), " is not in 1..64"));
  }
  if (arch.base_width() < 1 || arch.base_width() > 256) {
    return Invalid(prefix + ".base_width", absl::StrCat(arch.base_width(), " is not in 1..256"));
  }
  if (arch.embed_dim() < 1 || arch.num_heads() < 1 || arch.mlp_dim() < 1) {
    return Invalid(prefix, "embed_dim, num_heads and mlp_dim must be positive");
  }
  if (arch.embed_dim() % arch.num_heads() != 0) {
    return Invalid(prefix + ".num_heads",
                   absl::StrCat(arch.num_heads(), " does not divide embed_dim ", arch.embed_dim()));
  }
  if (arch.image_size() < 8 || arch.image_size() % 8 != 0) {
    return Invalid(prefix + ".image_size",
                   absl::StrCat(arch.image_size(), " is not a positive multiple of 8"));
  }
  return CheckChannels(prefix, arch.in_channels(), arch.num_classes());
}

absl::Status CheckModel(int index, const v1::BankModel& model, const ValidateOptions& options) {
  const std::string prefix = absl::StrCat("models[", index, "]");
  if (!IsValidId(model.id())) {
    return Invalid(prefix + ".id",
                   absl::StrCat("'", model.id(), "' is not 1-32 characters of [A-Za-z0-9_-]"));
  }
  if (model.id() == "skip") return Invalid(prefix + ".id", "'skip' is reserved for route 0");
  absl::Status arch_status;
  switch (model.arch_case()) {
    case v1::BankModel::kUnet:
      arch_status = CheckUNet(prefix + ".unet", model.unet());
      break;
    case v1::BankModel::kTransbts:
      arch_status = CheckTransBTS(prefix + ".transbts", model.transbts());
      break;
    case v1::BankModel::kTorchscript:
      arch_status = CheckFile(prefix + ".torchscript.file", model.torchscript().file(), options);
      if (arch_status.ok() && !model.weights().empty()) {
        return Invalid(prefix + ".weights", "must be empty: a TorchScript file holds its weights");
      }
      if (arch_status.ok() && model.gmacs_per_slice() <= 0) {
        return Invalid(prefix + ".gmacs_per_slice",
                       "is required for a TorchScript model (its cost cannot be counted)");
      }
      break;
    case v1::BankModel::ARCH_NOT_SET:
      return Invalid(prefix, "no architecture: set one of unet, transbts, torchscript");
  }
  if (!arch_status.ok()) return arch_status;
  if (model.gmacs_per_slice() < 0) return Invalid(prefix + ".gmacs_per_slice", "is negative");
  if (options.bundle_dir && model.arch_case() != v1::BankModel::kTorchscript) {
    if (absl::Status s = CheckFile(prefix + ".weights", model.weights(), options); !s.ok()) {
      return s;
    }
    if (model.gmacs_per_slice() <= 0) return Invalid(prefix + ".gmacs_per_slice", "is not set");
  }
  return absl::OkStatus();
}

absl::Status CheckDecision(const v1::DecisionNetwork& decision, const ValidateOptions& options) {
  const v1::DecisionArch arch = WithDefaults(decision.arch());
  if (arch.stage_widths_size() != arch.stage_repeats_size() + 1) {
    return Invalid("decision.arch.stage_widths",
                   absl::StrCat("needs ", arch.stage_repeats_size() + 1,
                                " entries (stem + one per stage), has ", arch.stage_widths_size()));
  }
  for (int i = 0; i < arch.stage_widths_size(); ++i) {
    if (arch.stage_widths(i) < 2 || arch.stage_widths(i) % 2 != 0) {
      return Invalid(absl::StrCat("decision.arch.stage_widths[", i, "]"),
                     absl::StrCat(arch.stage_widths(i), " is not a positive even width"));
    }
  }
  for (int i = 0; i < arch.stage_repeats_size(); ++i) {
    if (arch.stage_repeats(i) < 1) {
      return Invalid(absl::StrCat("decision.arch.stage_repeats[", i, "]"), "must be >= 1");
    }
  }
  if (arch.head_width() < 1) return Invalid("decision.arch.head_width", "must be positive");
  if (arch.in_channels() != 0 && arch.in_channels() != 4) {
    return Invalid("decision.arch.in_channels", "must be 4 (or unset)");
  }
  if (options.bundle_dir) return CheckFile("decision.weights", decision.weights(), options);
  return absl::OkStatus();
}

absl::Status CheckPreprocessing(const v1::Preprocessing& pre) {
  if (pre.modalities_size() > 0) {
    std::set<std::string> wanted(volume::kModalities.begin(), volume::kModalities.end());
    std::set<std::string> given(pre.modalities().begin(), pre.modalities().end());
    if (pre.modalities_size() != 4 || given != wanted) {
      return Invalid("preprocessing.modalities",
                     absl::StrCat("[", absl::StrJoin(pre.modalities(), ", "), "] must be ",
                                  absl::StrJoin(volume::kModalities, ", "), " in some order"));
    }
  }
  if (!pre.normalization().empty() && pre.normalization() != "zscore_brain") {
    return Invalid("preprocessing.normalization",
                   absl::StrCat("'", pre.normalization(), "' is not one of: zscore_brain"));
  }
  if (absl::StatusOr<int> degree = volume::ParseBiasCorrection(pre.bias_correction());
      !degree.ok()) {
    return Invalid("preprocessing.bias_correction", std::string(degree.status().message()));
  }
  if (!(pre.bias_refit_min_ml() >= 0) || !std::isfinite(pre.bias_refit_min_ml())) {
    return Invalid("preprocessing.bias_refit_min_ml",
                   absl::StrCat(pre.bias_refit_min_ml(), " is not a volume (mL, 0 or more)"));
  }
  if (!(pre.bias_flair_bright_sigmas() >= 0 &&
        pre.bias_flair_bright_sigmas() <= volume::kMaxBrightSigmas)) {
    return Invalid(
        "preprocessing.bias_flair_bright_sigmas",
        absl::StrCat(pre.bias_flair_bright_sigmas(), " is not a limit (standard deviations, 0 to ",
                     volume::kMaxBrightSigmas, ")"));
  }
  if (!(pre.bias_refit_min_change() >= 0) || !std::isfinite(pre.bias_refit_min_change())) {
    return Invalid("preprocessing.bias_refit_min_change",
                   absl::StrCat(pre.bias_refit_min_change(),
                                " is not a change (standard deviations, 0 or more)"));
  }
  if (pre.bias_refit_probe_min_slices() < 0) {
    return Invalid(
        "preprocessing.bias_refit_probe_min_slices",
        absl::StrCat(pre.bias_refit_probe_min_slices(), " is not a slice count (0 or more)"));
  }
  if (!(pre.bias_refit_probe_spacing_mm() >= 0 && pre.bias_refit_probe_spacing_mm() <= 20)) {
    return Invalid(
        "preprocessing.bias_refit_probe_spacing_mm",
        absl::StrCat(pre.bias_refit_probe_spacing_mm(), " is not a slice spacing (mm, 0 to 20)"));
  }
  if (!(pre.inplane_spacing_mm() >= 0 && pre.inplane_spacing_mm() <= 10)) {
    return Invalid("preprocessing.inplane_spacing_mm",
                   absl::StrCat(pre.inplane_spacing_mm(), " is not a voxel size (mm, 0 to 10)"));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, int32_t>{"slice_height", pre.slice_height()},
        {"slice_width", pre.slice_width()}}) {
    if (value < 0 || value % 16 != 0) {
      return Invalid(absl::StrCat("preprocessing.", name),
                     absl::StrCat(value, " is not a positive multiple of 16"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

v1::UNetArch WithDefaults(const v1::UNetArch& arch) {
  v1::UNetArch out = arch;
  if (out.in_channels() == 0) out.set_in_channels(4);
  if (out.num_classes() == 0) out.set_num_classes(4);
  return out;
}

v1::TransBTSArch WithDefaults(const v1::TransBTSArch& arch) {
  v1::TransBTSArch out = arch;
  if (out.base_width() == 0) out.set_base_width(16);
  if (out.embed_dim() == 0) out.set_embed_dim(512);
  if (out.num_heads() == 0) out.set_num_heads(8);
  if (out.mlp_dim() == 0) out.set_mlp_dim(2048);
  if (out.image_size() == 0) out.set_image_size(240);
  if (out.in_channels() == 0) out.set_in_channels(4);
  if (out.num_classes() == 0) out.set_num_classes(4);
  return out;
}

v1::DecisionArch WithDefaults(const v1::DecisionArch& arch) {
  v1::DecisionArch out = arch;
  if (out.stage_repeats_size() == 0) {
    for (int r : {4, 8, 4}) out.add_stage_repeats(r);
  }
  if (out.stage_widths_size() == 0) {
    for (int w : {12, 24, 48, 96}) out.add_stage_widths(w);
  }
  if (out.head_width() == 0) out.set_head_width(256);
  if (out.in_channels() == 0) out.set_in_channels(4);
  return out;
}

absl::StatusOr<v1::BundleConfig> ParseBundleConfig(const std::string& text,
                                                   const std::string& source_name) {
  v1::BundleConfig config;
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", errors.first()));
  }
  return config;
}

absl::StatusOr<v1::BundleConfig> ReadBundleConfig(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / kBundleConfigFile;
  std::ifstream in(file);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("no bundle config ", file.string(), " (is this a bundle directory?)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseBundleConfig(text.str(), file.string());
}

absl::Status WriteBundleConfig(const v1::BundleConfig& config, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  std::ofstream out(dir / kBundleConfigFile, std::ios::trunc);
  out << "# proto-file: proto/danet/v1/bundle.proto\n# proto-message: danet.v1.BundleConfig\n"
      << text;
  if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", dir.string()));
  return absl::OkStatus();
}

absl::Status ValidateBundleConfig(const v1::BundleConfig& config, const ValidateOptions& options) {
  if (config.models_size() == 0) return Invalid("models", "the bank is empty");
  if (config.models_size() > 15) return Invalid("models", "more than 15 bank models");
  std::set<std::string> ids;
  for (int i = 0; i < config.models_size(); ++i) {
    if (absl::Status s = CheckModel(i, config.models(i), options); !s.ok()) return s;
    if (!ids.insert(config.models(i).id()).second) {
      return Invalid(absl::StrCat("models[", i, "].id"),
                     absl::StrCat("duplicate id '", config.models(i).id(), "'"));
    }
  }
  if (absl::Status s = CheckDecision(config.decision(), options); !s.ok()) return s;
  if (absl::Status s = CheckPreprocessing(config.preprocessing()); !s.ok()) return s;
  if (const std::string& probe = config.preprocessing().bias_refit_probe_model();
      !probe.empty() && ids.count(probe) == 0) {
    return Invalid(
        "preprocessing.bias_refit_probe_model",
        absl::StrCat("'", probe, "' is not a bank model (one of: ", absl::StrJoin(ids, ", "), ")"));
  }
  if (!config.weight_dtype().empty() && config.weight_dtype() != "float32" &&
      config.weight_dtype() != "float16") {
    return Invalid("weight_dtype",
                   absl::StrCat("'", config.weight_dtype(), "' is not float32 or float16"));
  }
  return absl::OkStatus();
}

v1::BundleConfig PaperPresetConfig() {
  v1::BundleConfig config;
  config.set_name("paper");
  config.set_description(
      "Med-DANet bank of the paper (ECCV 2022, section 4.1): UNet-12, UNet-16, TransBTS-light, "
      "TransBTS, with the ShuffleNetV2-M decision network");
  v1::Preprocessing* pre = config.mutable_preprocessing();
  for (const char* m : volume::kModalities) pre->add_modalities(m);
  pre->set_normalization("zscore_brain");
  pre->set_slice_height(240);
  pre->set_slice_width(240);
  auto add = [&config](const char* id, const char* description) {
    v1::BankModel* model = config.add_models();
    model->set_id(id);
    model->set_description(description);
    return model;
  };
  add("M1", "modified 2D UNet, base width 12")->mutable_unet()->set_base_width(12);
  add("M2", "modified 2D UNet, base width 16")->mutable_unet()->set_base_width(16);
  add("M3", "2D TransBTS-light, 1 transformer layer")->mutable_transbts()->set_num_layers(1);
  add("M4", "2D TransBTS, 4 transformer layers")->mutable_transbts()->set_num_layers(4);
  *config.mutable_decision()->mutable_arch() = WithDefaults(v1::DecisionArch());
  return config;
}

absl::StatusOr<v1::BundleConfig> PresetConfig(const std::string& name) {
  v1::BundleConfig config = PaperPresetConfig();
  if (name == "paper") return config;
  if (name == "compact") {
    config.set_name("compact");
    config.set_description(
        "Med-DANet bank with the paper's UNets and a 256-wide TransBTS transformer (MLP 1024)");
    for (int i : {2, 3}) {
      v1::TransBTSArch* t = config.mutable_models(i)->mutable_transbts();
      t->set_embed_dim(256);
      t->set_mlp_dim(1024);
    }
    config.mutable_models(2)->set_description("2D TransBTS-light, 1 layer, width 256");
    config.mutable_models(3)->set_description("2D TransBTS, 4 layers, width 256");
    return config;
  }
  if (name == "tiny") {
    config.set_name("tiny");
    config.set_description("tiny bank for end-to-end tests (not a useful segmenter)");
    config.mutable_models(0)->mutable_unet()->set_base_width(4);
    config.mutable_models(1)->mutable_unet()->set_base_width(6);
    for (int i : {2, 3}) {
      v1::TransBTSArch* t = config.mutable_models(i)->mutable_transbts();
      t->set_base_width(4);
      t->set_embed_dim(32);
      t->set_num_heads(4);
      t->set_mlp_dim(64);
    }
    v1::DecisionArch* d = config.mutable_decision()->mutable_arch();
    d->clear_stage_widths();
    for (int w : {8, 16, 32, 64}) d->add_stage_widths(w);
    d->clear_stage_repeats();
    for (int r : {1, 2, 1}) d->add_stage_repeats(r);
    d->set_head_width(64);
    return config;
  }
  return absl::NotFoundError(
      absl::StrCat("unknown preset '", name, "' (known: paper, compact, tiny)"));
}

std::optional<double> PaperGMacs(const v1::BankModel& model) {
  // Table 3, setting 2 (240 x 240, no sliding window), per slice.
  static const struct {
    int index;
    double gmacs;
  } kTable[] = {{0, 2.13}, {1, 3.75}, {2, 8.88}, {3, 19.88}};
  static const v1::BundleConfig* preset = new v1::BundleConfig(PaperPresetConfig());
  using google::protobuf::util::MessageDifferencer;
  for (const auto& row : kTable) {
    const v1::BankModel& paper = preset->models(row.index);
    if (model.arch_case() != paper.arch_case()) continue;
    if (model.has_unet() &&
        MessageDifferencer::Equals(WithDefaults(model.unet()), WithDefaults(paper.unet()))) {
      return row.gmacs;
    }
    if (model.has_transbts() && MessageDifferencer::Equals(WithDefaults(model.transbts()),
                                                           WithDefaults(paper.transbts()))) {
      return row.gmacs;
    }
  }
  return std::nullopt;
}

}  // namespace danet::models
