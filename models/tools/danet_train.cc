// danet-train: Med-DANet's two training stages, producing a bundle the server loads.
//
//   danet-train --train_data DIR --val_data DIR --out BUNDLE --work WORK
//               [--preset compact|paper|tiny | --init_bundle DIR] [stage flags...]
//
// Re-running with the same --work continues an interrupted run. See models/train/trainer.h for
// what each stage does and docs/training.md for the flags and the defaults' reasons.
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <type_traits>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "models/bank/device.h"
#include "models/bundle/bundle_config.h"
#include "models/train/trainer.h"
#include "models/volume/bias.h"

ABSL_FLAG(std::string, train_data, "", "Folder of training case folders (BraTS layout, with seg).");
ABSL_FLAG(std::string, val_data, "", "Folder of held-out case folders (with seg).");
ABSL_FLAG(int, max_train_cases, 0, "Use at most this many training cases (0: all).");
ABSL_FLAG(int, max_val_cases, 0, "Use at most this many validation cases (0: all).");
ABSL_FLAG(std::string, out, "", "Bundle directory to write.");
ABSL_FLAG(std::string, work, "", "Work directory: checkpoints, labels, log (default OUT.work).");
ABSL_FLAG(std::string, preset, "compact", "Bank to start from: compact, paper or tiny.");
ABSL_FLAG(std::string, init_bundle, "", "Start from this bundle instead of a preset.");
ABSL_FLAG(std::string, name, "", "Name written into the bundle (default: the preset's).");
ABSL_FLAG(std::string, bias_correction, "",
          "The bundle's preprocessing.bias_correction (none or polyN: each modality divided by a "
          "fitted smooth field before normalisation, in training and in serving; "
          "docs/training.md). Empty: the starting bundle's (none for a preset).");
ABSL_FLAG(double, bias_flair_bright_sigmas, -1,
          "The bundle's preprocessing.bias_flair_bright_sigmas: FLAIR samples brighter than the "
          "bias fit by more than this many robust standard deviations stay out of its fit, from "
          "its second round (0..10; 0: the symmetric limit only). Negative: the starting "
          "bundle's (0 for a preset).");
ABSL_FLAG(double, uncorrected_share, 0,
          "Share of the training cases prepared without the bias correction (a per-case draw "
          "from --seed; validation cases always as the bundle serves them), so that a bank served "
          "with the correction also sees uncorrected images. 0..1; needs a bias correction.");
ABSL_FLAG(int, bank_steps, 300, "Stage 1 steps.");
ABSL_FLAG(int, batch, 8, "Stage 1 batch size.");
ABSL_FLAG(int, crop, 128, "Stage 1 crop side (the paper uses 128).");
ABSL_FLAG(double, bank_lr, 1e-3, "Stage 1 Adam learning rate.");
ABSL_FLAG(double, foreground_fraction, 0.7,
          "Stage 1: share of crops centred on tumour (the rest come from tumour-free slices).");
ABSL_FLAG(std::string, tumour_crops, "slice",
          "Stage 1: where a tumour crop is centred. slice: a random tumour slice (a case's share "
          "grows with its tumour's height), then a random tumour voxel of it; class: nnU-Net's "
          "foreground oversampling, a random case, one of its tumour classes, a random voxel of "
          "that class (small lesions and small classes drawn as often as large ones).");
ABSL_FLAG(int, warmup, 20, "Warm-up steps of the poly schedule (both stages).");
ABSL_FLAG(std::string, stop_steps, "", "Per-model stage-1 stop step, e.g. M1=200,M2=200.");
ABSL_FLAG(int, pause_after_bank_step, 0,
          "Checkpoint and stop after this stage-1 step (0: never); re-run to continue, possibly "
          "with another --bank_steps.");
ABSL_FLAG(std::string, model_lr, "",
          "Per-model stage-1 peak learning rate, e.g. M3=0.0005,M4=0.0005 (default --bank_lr).");
ABSL_FLAG(std::string, loss, "dice_ce",
          "Stage 1 loss: dice_ce (soft Dice + cross-entropy) or dice (Eq. 5-6 alone).");
ABSL_FLAG(std::string, augment, "nnunet",
          "Augmentation of both stages: nnunet (spatial + intensity, docs/training.md), strong "
          "(the appearance transforms more often and wider), flip (flips and brightness only) "
          "or none.");
ABSL_FLAG(double, thick_slices, 0,
          "Probability that a training slice (both stages) is replaced by the mean of a block of "
          "2 to 5 whole slices holding it, its labels kept: thick-slice acquisitions on the thin "
          "grid (0: off, and the random stream is that of a run without it).");
ABSL_FLAG(double, alpha, 0.001, "Eq. 4 cost weight.");
ABSL_FLAG(int, label_slices_per_case, 0,
          "Score at most this many tumour slices per case for the Eq. 4 labels, evenly spaced "
          "(0: all).");
ABSL_FLAG(std::string, slice_score, "dice",
          "Eq. 4's per-slice score S_i: dice (the mean of the slice's WT/TC/ET Dice, the "
          "paper's) or errors (1 - wrong voxels / (3 x tumour voxels): regions weigh by size).");
ABSL_FLAG(std::string, decision_labels, "eq4",
          "Where the tumour slices' routes come from: eq4 (the bank models' slice scores, "
          "Eq. 4), teacher (the model the --init_bundle's decision network ranks first; its "
          "probabilities stored as the scores) or teacher_policy (the model it picks under "
          "--default_policy's model preference, +p<id>:<v>, as serving picks it). Tumour-free "
          "slices are skip either way.");
ABSL_FLAG(int, decision_steps, 300, "Stage 2 steps.");
ABSL_FLAG(int, decision_batch, 16, "Stage 2 batch size (full slices).");
ABSL_FLAG(double, decision_lr, 1e-3, "Stage 2 Adam learning rate.");
ABSL_FLAG(double, skip_weight, 0.3, "Stage 2 cross-entropy weight of the skip route.");
ABSL_FLAG(double, route_balance, 0,
          "Stage 2 weighs each bank route by (its count / the mean)^-X in the cross-entropy: "
          "0 alike, 0.5 keeps rare routes from collapsing onto the most frequent model.");
ABSL_FLAG(double, small_lesion_exponent, 0,
          "Stage 2 draws tumour slices with chance (tumour voxels)^-X: 0 uniform, 0.5 favours "
          "small lesions.");
ABSL_FLAG(std::optional<bool>, decision_max_pool, std::nullopt,
          "Decision network pools its head by average and maximum (DecisionArch.global_max_pool; "
          "default: the bank's). When stage 2 starts (new run or --redo_decision); with "
          "--decision_finetune the trained classifier reads the maximum from a weight of 0.");
ABSL_FLAG(std::optional<int>, decision_input_downsample, std::nullopt,
          "Decision network input average-pooled by 1, 2 or 4 (DecisionArch.input_downsample; "
          "default: the bank's): a cheaper pass. A fresh stage 2, or with --decision_finetune the "
          "trained network's weights on pooled input (the teacher's labels from it unpooled).");
ABSL_FLAG(std::optional<int>, decision_stem_pool_stride, std::nullopt,
          "Stride of the decision network's max pool after its stem: 2, or 1 for none (the "
          "stages on a twice finer grid, about 2.6x its MACs; DecisionArch.stem_pool_stride; "
          "default: the bank's). Changes no weight: with --decision_finetune the trained weights "
          "see the finer grid.");
ABSL_FLAG(std::optional<bool>, decision_tumour_head, std::nullopt,
          "Decision network maps tumour on its head's grid and its classifier sees the map's "
          "maximum (DecisionArch.tumour_head; default: the bank's). When stage 2 starts; with "
          "--decision_finetune the trained network gains a fresh head, read from a weight of 0.");
ABSL_FLAG(std::optional<int>, decision_tumour_head_stage, std::nullopt,
          "Where the tumour head reads (DecisionArch.tumour_head_stage; default: the bank's): 0 "
          "the head's features, 1..3 that stage's output, a finer map.");
ABSL_FLAG(std::optional<bool>, decision_crop_to_brain, std::nullopt,
          "Serve the decision network on the brain's bounding box (the bundle's "
          "decision.crop_to_brain; default: the bank's), and train stage 2 on that box.");
ABSL_FLAG(bool, decision_finetune, false,
          "Stage 2 continues from --init_bundle's trained decision network instead of a fresh "
          "one (with --decision_labels teacher: its routing kept while it learns, e.g., the "
          "brain's box).");
ABSL_FLAG(std::optional<double>, tumour_map_weight, std::nullopt,
          "Stage 2 weight of the tumour map's binary cross-entropy (default 1; only for a "
          "decision network with a tumour map, see --decision_tumour_head).");
ABSL_FLAG(std::optional<double>, tumour_map_positive_weight, std::nullopt,
          "A tumour cell's weight in the tumour map's binary cross-entropy (default 1; only "
          "with a tumour map).");
ABSL_FLAG(uint64_t, seed, 1, "Random seed (weights, sampling).");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0: all cores).");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, dtype, "float16", "Weight storage of the output bundle.");
ABSL_FLAG(int, checkpoint_every, 50, "Checkpoint every N steps.");
ABSL_FLAG(std::vector<std::string>, validation_policies, {},
          "Policies to validate (default: dynamic and every static model).");
ABSL_FLAG(std::optional<std::string>, default_policy, std::nullopt,
          "The bundle's policy for requests that name none, e.g. dynamic+m2 (default: "
          "dynamic).");
ABSL_FLAG(bool, redo_decision, false,
          "Keep the work directory's trained bank and Eq. 4 scores, but relabel with --alpha and "
          "retrain the decision network (for alpha sweeps).");
ABSL_FLAG(bool, keep_decision, false,
          "Fine-tune the bank only: after stage 1, keep --init_bundle's decision network as it "
          "is (no Eq. 4 labels, no stage 2); validation still runs.");

namespace danet::train {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "danet-train: " << status.message() << "\n";
  return 1;
}

// Loads up to `max_cases` case folders of `dir`; a share `uncorrected_share` of them, drawn per
// case from `seed`, without the bias correction (LoadTrainCases). Training cases (`keep_channels`
// false) keep their slices only; validation cases their whole volumes too.
absl::StatusOr<std::vector<TrainCase>> Load(const std::string& dir, int max_cases,
                                            const v1::Preprocessing& preprocessing,
                                            const char* what, bool keep_channels,
                                            double uncorrected_share = 0, uint64_t seed = 0) {
  absl::StatusOr<std::vector<std::filesystem::path>> dirs = ListCaseDirs(dir);
  if (!dirs.ok()) return dirs.status();
  if (max_cases > 0 && static_cast<int>(dirs->size()) > max_cases) dirs->resize(max_cases);
  const std::vector<bool> uncorrected = DrawUncorrected(dirs->size(), uncorrected_share, seed);
  if (!uncorrected.empty()) {
    std::fprintf(stderr, "%s cases without the bias correction: %zu of %zu\n", what,
                 static_cast<size_t>(std::count(uncorrected.begin(), uncorrected.end(), true)),
                 dirs->size());
  }
  return LoadTrainCases(
      *dirs, preprocessing,
      [what](int done, int total) {
        std::fprintf(stderr, "\rloading %s cases %d/%d", what, done, total);
        if (done == total) std::fprintf(stderr, "\n");
      },
      uncorrected, keep_channels);
}

// "ID=VALUE,ID=VALUE" into a map; `flag` and `what` name the flag and the value in errors.
template <typename T>
absl::StatusOr<std::map<std::string, T>> ParsePerModel(const std::string& text, const char* flag,
                                                       const char* what) {
  std::map<std::string, T> out;
  if (text.empty()) return out;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    std::vector<std::string> kv = absl::StrSplit(item, '=');
    T value{};
    bool parsed = false;
    if constexpr (std::is_same_v<T, int>) {
      parsed = kv.size() == 2 && absl::SimpleAtoi(kv[1], &value);
    } else {
      parsed = kv.size() == 2 && absl::SimpleAtod(kv[1], &value) && value > 0;
    }
    if (!parsed) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": '", item, "' is not ID=", what));
    }
    out[kv[0]] = value;
  }
  return out;
}

int Main(const std::string& command_line) {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (absl::GetFlag(FLAGS_train_data).empty() || out.empty()) {
    std::cerr << "danet-train: --train_data and --out are required (see --help)\n";
    return 2;
  }
  const double foreground_fraction = absl::GetFlag(FLAGS_foreground_fraction);
  if (!(foreground_fraction >= 0 && foreground_fraction <= 1)) {
    std::cerr << "danet-train: --foreground_fraction must be in 0..1\n";
    return 2;
  }
  const absl::StatusOr<CropCentre> tumour_crops =
      ParseCropCentre(absl::GetFlag(FLAGS_tumour_crops));
  if (!tumour_crops.ok()) {
    std::cerr << "danet-train: --tumour_crops: " << tumour_crops.status().message() << "\n";
    return 2;
  }
  const double uncorrected_share = absl::GetFlag(FLAGS_uncorrected_share);
  if (!(uncorrected_share >= 0 && uncorrected_share <= 1)) {
    std::cerr << "danet-train: --uncorrected_share must be in 0..1\n";
    return 2;
  }
  absl::StatusOr<c10::Device> device = models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  absl::StatusOr<std::map<std::string, int>> stops =
      ParsePerModel<int>(absl::GetFlag(FLAGS_stop_steps), "--stop_steps", "STEP");
  if (!stops.ok()) return Fail(stops.status());
  absl::StatusOr<std::map<std::string, double>> model_lr =
      ParsePerModel<double>(absl::GetFlag(FLAGS_model_lr), "--model_lr", "LR");
  if (!model_lr.ok()) return Fail(model_lr.status());
  absl::StatusOr<AugmentOptions> augment = AugmentPreset(absl::GetFlag(FLAGS_augment));
  if (!augment.ok()) return Fail(augment.status());
  const double thick_slices = absl::GetFlag(FLAGS_thick_slices);
  if (!(thick_slices >= 0 && thick_slices <= 1)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--thick_slices: ", thick_slices, " is not a probability (0 to 1)")));
  }
  augment->thick_slices.p = thick_slices;
  const std::string loss = absl::GetFlag(FLAGS_loss);
  if (loss != "dice_ce" && loss != "dice") {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("--loss: '", loss, "': choose dice_ce or dice")));
  }

  // The flags that change the decision network's shape (they need stage 2).
  const bool new_decision_arch =
      absl::GetFlag(FLAGS_decision_max_pool) || absl::GetFlag(FLAGS_decision_input_downsample) ||
      absl::GetFlag(FLAGS_decision_stem_pool_stride) || absl::GetFlag(FLAGS_decision_tumour_head) ||
      absl::GetFlag(FLAGS_decision_tumour_head_stage);
  const bool no_init = absl::GetFlag(FLAGS_init_bundle).empty();
  if (absl::GetFlag(FLAGS_keep_decision) &&
      (no_init || absl::GetFlag(FLAGS_redo_decision) || new_decision_arch)) {
    return Fail(absl::InvalidArgumentError(
        "--keep_decision keeps --init_bundle's trained decision network: it needs --init_bundle "
        "and excludes --redo_decision and the --decision_* architecture flags"));
  }

  // A trained network can be fine-tuned on pooled input (no weight changes) or with pooled
  // features added (the classifier reads them from a weight of 0); the trainer refuses a feature
  // turned off or a tumour map moved, naming it, before it trains anything.
  if (absl::GetFlag(FLAGS_decision_finetune) && (no_init || absl::GetFlag(FLAGS_keep_decision))) {
    return Fail(absl::InvalidArgumentError(
        "--decision_finetune trains --init_bundle's decision network further: it needs "
        "--init_bundle and excludes --keep_decision"));
  }

  constexpr double kUnsetWeight = TrainOptions::kDefaultTumourMapWeight;
  if (!(absl::GetFlag(FLAGS_tumour_map_weight).value_or(kUnsetWeight) >= 0) ||
      !(absl::GetFlag(FLAGS_tumour_map_positive_weight).value_or(kUnsetWeight) > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--tumour_map_weight must be at least 0 and --tumour_map_positive_weight above 0"));
  }

  if (absl::GetFlag(FLAGS_decision_labels) != "eq4" && no_init) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--decision_labels ", absl::GetFlag(FLAGS_decision_labels),
                     " learns the routes of --init_bundle's trained decision network: it needs "
                     "--init_bundle")));
  }

  models::BankOptions bank_options;
  bank_options.device = *device;
  bank_options.seed = absl::GetFlag(FLAGS_seed);
  bank_options.int8_linear = false;  // training needs the float layers
  absl::StatusOr<std::unique_ptr<models::Bank>> bank;
  if (const std::string init = absl::GetFlag(FLAGS_init_bundle); !init.empty()) {
    bank = models::Bank::Load(init, bank_options);
  } else {
    absl::StatusOr<v1::BundleConfig> config = models::PresetConfig(absl::GetFlag(FLAGS_preset));
    if (!config.ok()) return Fail(config.status());
    bank_options.load_weights = false;
    bank = models::Bank::Create(*std::move(config), ".", bank_options);
  }
  if (!bank.ok()) return Fail(bank.status());
  if (const std::string name = absl::GetFlag(FLAGS_name); !name.empty()) {
    (*bank)->mutable_config()->set_name(name);
  }
  if (const std::string bias = absl::GetFlag(FLAGS_bias_correction); !bias.empty()) {
    if (absl::StatusOr<int> degree = volume::ParseBiasCorrection(bias); !degree.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--bias_correction: ", degree.status().message())));
    }
    (*bank)->mutable_config()->mutable_preprocessing()->set_bias_correction(bias);
  }
  if (const double bright = absl::GetFlag(FLAGS_bias_flair_bright_sigmas); bright >= 0) {
    if (bright > volume::kMaxBrightSigmas) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--bias_flair_bright_sigmas: ", bright, " is not a limit (standard deviations, 0 to ",
          volume::kMaxBrightSigmas, ")")));
    }
    (*bank)->mutable_config()->mutable_preprocessing()->set_bias_flair_bright_sigmas(bright);
  }

  if (absl::StatusOr<int> degree =
          volume::ParseBiasCorrection((*bank)->config().preprocessing().bias_correction());
      uncorrected_share > 0 && (!degree.ok() || *degree == 0)) {
    return Fail(absl::InvalidArgumentError(
        "--uncorrected_share: the bundle has no bias correction (set --bias_correction)"));
  }
  absl::StatusOr<std::vector<TrainCase>> train =
      Load(absl::GetFlag(FLAGS_train_data), absl::GetFlag(FLAGS_max_train_cases),
           (*bank)->config().preprocessing(), "training", /*keep_channels=*/false,
           uncorrected_share, absl::GetFlag(FLAGS_seed));
  if (!train.ok()) return Fail(train.status());
  std::vector<TrainCase> validation;
  if (const std::string val = absl::GetFlag(FLAGS_val_data); !val.empty()) {
    absl::StatusOr<std::vector<TrainCase>> loaded = Load(
        val, absl::GetFlag(FLAGS_max_val_cases), (*bank)->config().preprocessing(), "validation",
        /*keep_channels=*/true);
    if (!loaded.ok()) return Fail(loaded.status());
    validation = *std::move(loaded);
  }

  TrainOptions options;
  options.foreground_fraction = foreground_fraction;
  options.tumour_crops = *tumour_crops;
  options.bank_steps = absl::GetFlag(FLAGS_bank_steps);
  options.batch = absl::GetFlag(FLAGS_batch);
  options.crop = absl::GetFlag(FLAGS_crop);
  options.bank_lr = absl::GetFlag(FLAGS_bank_lr);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.stop_step = *stops;
  options.pause_after_bank_step = absl::GetFlag(FLAGS_pause_after_bank_step);
  options.model_lr = *model_lr;
  options.loss = loss;
  options.augment = *augment;
  options.augment_name = absl::GetFlag(FLAGS_augment);
  if (thick_slices > 0) absl::StrAppend(&options.augment_name, "+thick_slices:", thick_slices);
  options.alpha = absl::GetFlag(FLAGS_alpha);
  options.slice_score = absl::GetFlag(FLAGS_slice_score);
  if (options.slice_score != "dice" && options.slice_score != "errors") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--slice_score must be dice or errors, not '", options.slice_score, "'")));
  }
  options.label_slices_per_case = absl::GetFlag(FLAGS_label_slices_per_case);
  options.decision_labels = absl::GetFlag(FLAGS_decision_labels);
  if (options.decision_labels != "eq4" && options.decision_labels != "teacher" &&
      options.decision_labels != "teacher_policy") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--decision_labels must be eq4, teacher or teacher_policy, not '",
                     options.decision_labels, "'")));
  }
  options.decision_steps = absl::GetFlag(FLAGS_decision_steps);
  options.decision_batch = absl::GetFlag(FLAGS_decision_batch);
  options.decision_lr = absl::GetFlag(FLAGS_decision_lr);
  options.skip_weight = absl::GetFlag(FLAGS_skip_weight);
  options.route_balance = absl::GetFlag(FLAGS_route_balance);
  options.decision_max_pool = absl::GetFlag(FLAGS_decision_max_pool);
  options.decision_input_downsample = absl::GetFlag(FLAGS_decision_input_downsample);
  options.decision_stem_pool_stride = absl::GetFlag(FLAGS_decision_stem_pool_stride);
  options.decision_tumour_head = absl::GetFlag(FLAGS_decision_tumour_head);
  options.decision_tumour_head_stage = absl::GetFlag(FLAGS_decision_tumour_head_stage);
  options.tumour_map_weight = absl::GetFlag(FLAGS_tumour_map_weight);
  options.tumour_map_positive_weight = absl::GetFlag(FLAGS_tumour_map_positive_weight);
  options.decision_crop_to_brain = absl::GetFlag(FLAGS_decision_crop_to_brain);
  options.decision_finetune = absl::GetFlag(FLAGS_decision_finetune);
  options.small_lesion_exponent = absl::GetFlag(FLAGS_small_lesion_exponent);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  options.redo_decision = absl::GetFlag(FLAGS_redo_decision);
  options.keep_decision = absl::GetFlag(FLAGS_keep_decision);
  options.validation_policies = absl::GetFlag(FLAGS_validation_policies);
  options.name = absl::GetFlag(FLAGS_name);
  options.default_policy = absl::GetFlag(FLAGS_default_policy);
  options.work_dir = absl::GetFlag(FLAGS_work).empty() ? out + ".work" : absl::GetFlag(FLAGS_work);

  Trainer trainer(*std::move(bank), *std::move(train), std::move(validation), options);
  if (absl::Status s = trainer.Run(); !s.ok()) return Fail(s);
  if (trainer.paused()) {
    std::cout << "paused after stage-1 step " << options.pause_after_bank_step << " (checkpoint in "
              << options.work_dir << "); re-run to continue\n";
    return 0;
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (absl::Status s = trainer.SaveBundle(
          out, dtype == "float32" ? models::WeightDtype::kFloat32 : models::WeightDtype::kFloat16,
          command_line);
      !s.ok()) {
    return Fail(s);
  }
  std::ofstream(std::filesystem::path(options.work_dir) / "report.json")
      << trainer.report().dump(2);
  std::cout << trainer.report().dump(2) << "\nwrote bundle " << out << "\n";
  return 0;
}

}  // namespace
}  // namespace danet::train

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "danet-train --train_data DIR --val_data DIR --out BUNDLE [--preset compact] ...");
  std::vector<std::string> words(argv, argv + argc);
  words[0] = "danet-train";
  absl::ParseCommandLine(argc, argv);
  danet::models::SetUpProcess(absl::GetFlag(FLAGS_threads));
  return danet::train::Main(absl::StrJoin(words, " "));
}
