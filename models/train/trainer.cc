#include "models/train/trainer.h"

#include <google/protobuf/text_format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "models/bank/device.h"
#include "models/bank/network.h"
#include "models/engine/segmenter.h"
#include "models/eval/metrics.h"
#include "models/train/objectives.h"
#include "models/train/progress.h"

namespace danet::train {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kStateFile[] = "state.json";
constexpr char kCheckpointDir[] = "checkpoint";
constexpr char kLabelsFile[] = "decision_labels.csv";
// state.json's key for the decision architecture a run will install when its stage 2 starts.
constexpr char kPendingArchKey[] = "pending_decision_arch";
constexpr char kArchFlags[] =
    "--decision_max_pool, --decision_input_downsample, --decision_stem_pool_stride or "
    "--decision_tumour_head[_stage]";

// The architecture with each default spelled as an unset field (input_downsample 1 and
// stem_pool_stride 2 read like 0), so that a flag restating a default changes nothing.
v1::DecisionArch Canonical(v1::DecisionArch arch) {
  if (arch.input_downsample() == 1) arch.clear_input_downsample();
  if (arch.stem_pool_stride() == 2) arch.clear_stem_pool_stride();
  return arch;
}

std::filesystem::path OptimizerPath(const std::filesystem::path& checkpoint,
                                    const std::string& id) {
  return checkpoint / absl::StrCat("adam_", id, ".pt");
}

// Restores an optimizer's state from a checkpoint, if the checkpoint has one.
absl::Status LoadOptimizer(torch::optim::Optimizer& optimizer, const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  try {
    torch::load(optimizer, path.string());
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat("optimizer state ", path.string(),
                                            " is unreadable: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

// Writes `text` to `path` through a temporary file and a rename, so a reader (or a resumed run)
// sees the old or the new content, never half of one.
absl::Status WriteAtomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot rename ", tmp.string(), ": ", ec.message()));
  return absl::OkStatus();
}

torch::optim::Adam MakeAdam(models::Network& network, double lr, double weight_decay) {
  return torch::optim::Adam(network.Parameters(),
                            torch::optim::AdamOptions(lr).weight_decay(weight_decay));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }
}

// Class predictions (Z' x H x W uint8) of `network` for the given slices of a case, in eval
// mode, a few slices at a time.
torch::Tensor Predict(models::Network& network, const torch::Tensor& slices, c10::Device device) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < slices.size(0); begin += 4) {
    const torch::Tensor x = slices.slice(0, begin, std::min(slices.size(0), begin + 4));
    out.push_back(network.Forward(x.to(device)).argmax(1).to(torch::kCPU, torch::kUInt8));
  }
  return torch::cat(out);
}

// The decision network's probabilities of the bank models (Z' x models, rows summing to 1:
// the skip route left out and the rest renormalised) for the given slices, in eval mode.
torch::Tensor ModelProbabilities(models::Network& decision, const torch::Tensor& slices,
                                 c10::Device device) {
  torch::NoGradGuard no_grad;
  decision.SetTraining(false);
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < slices.size(0); begin += 16) {
    const torch::Tensor x = slices.slice(0, begin, std::min(slices.size(0), begin + 16));
    const torch::Tensor models = torch::softmax(decision.Forward(x.to(device)), 1).slice(1, 1);
    out.push_back((models / models.sum(1, true)).to(torch::kCPU, torch::kDouble));
  }
  return torch::cat(out);
}

// At most `limit` of `items`, evenly spaced, first and last included (limit 0: all).
std::vector<int64_t> EvenlySpaced(const std::vector<int64_t>& items, int limit) {
  if (limit <= 0 || static_cast<int>(items.size()) <= limit) return items;
  std::vector<int64_t> out;
  for (int i = 0; i < limit; ++i) {
    const size_t at = limit == 1 ? items.size() / 2
                                 : static_cast<size_t>(std::llround(
                                       i * (items.size() - 1) / static_cast<double>(limit - 1)));
    out.push_back(items[at]);
  }
  return out;
}

// Runs one stage; an exception from LibTorch (a failed forward or backward, out of memory) or
// from parsing stored state becomes a Status naming the stage, so none escapes Run().
absl::Status Guarded(const char* stage, const std::function<absl::Status()>& run) {
  try {
    return run();
  } catch (const c10::Error& e) {
    return models::TorchErrorStatus(e, stage);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(stage, ": ", e.what()));
  }
}

}  // namespace

Trainer::Trainer(std::unique_ptr<models::Bank> bank, std::vector<TrainCase> train,
                 std::vector<TrainCase> validation, TrainOptions options)
    : bank_(std::move(bank)),
      train_(std::move(train)),
      validation_(std::move(validation)),
      options_(std::move(options)) {
  state_ = {{"bank_step", 0},
            {"labels_done", false},
            {"decision_step", 0},
            {"validated", false},
            {"uncorrected_cases", UncorrectedCaseIds()}};
}

std::vector<std::string> Trainer::UncorrectedCaseIds() const {
  std::vector<std::string> ids;
  for (const TrainCase& c : train_) {
    if (c.uncorrected) ids.push_back(c.id);
  }
  return ids;
}

void Trainer::Log(const nlohmann::json& line) {
  std::ofstream(options_.work_dir / "train.log", std::ios::app) << line.dump() << "\n";
}

absl::Status Trainer::SaveState() {
  return WriteAtomically(options_.work_dir / kStateFile, state_.dump(2) + "\n");
}

absl::Status Trainer::LoadState() {
  std::error_code ec;
  std::filesystem::create_directories(options_.work_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(options_.work_dir.string(), ": ", ec.message()));
  // A run killed between the two renames of Checkpoint() left only the previous checkpoint.
  const std::filesystem::path checkpoint = options_.work_dir / kCheckpointDir;
  const std::filesystem::path previous = checkpoint.string() + ".old";
  if (!std::filesystem::exists(checkpoint) && std::filesystem::exists(previous)) {
    std::filesystem::rename(previous, checkpoint, ec);
  }
  std::ifstream in(options_.work_dir / kStateFile);
  if (!in) return absl::OkStatus();  // a fresh run
  // The interrupted run's training cases without the bias correction (none before the option
  // existed): a resumed run that drew others (another --uncorrected_share, --seed or case list)
  // would train on other data than its checkpoint.
  std::vector<std::string> recorded;
  try {
    state_ = nlohmann::json::parse(in);
    recorded = state_.value("uncorrected_cases", std::vector<std::string>());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(kStateFile, " is corrupt: ", e.what()));
  }
  if (const std::vector<std::string> drawn = UncorrectedCaseIds(); recorded != drawn) {
    return absl::InvalidArgumentError(absl::StrCat(
        (options_.work_dir / kStateFile).string(), ": the interrupted run trained ",
        recorded.size(), " cases without the bias correction, this one would train ", drawn.size(),
        " (or other ones): resume with its --uncorrected_share, --seed and cases"));
  }
  models::BankOptions options;
  options.device = bank_->device();
  options.int8_linear = false;  // training needs the float layers
  absl::StatusOr<std::unique_ptr<models::Bank>> resumed =
      models::Bank::Load(options_.work_dir / kCheckpointDir, options);
  if (!resumed.ok()) return resumed.status();
  bank_ = *std::move(resumed);
  if (options_.redo_decision && state_["labels_done"].get<bool>()) {
    state_["decision_step"] = 0;  // RunDecisionStage starts over from a fresh network
    state_["validated"] = false;
  }
  std::fprintf(stderr, "resuming: bank step %d, labels %s, decision step %d\n",
               state_["bank_step"].get<int>(), state_["labels_done"].get<bool>() ? "done" : "to do",
               state_["decision_step"].get<int>());
  return absl::OkStatus();
}

absl::Status Trainer::Checkpoint(
    const std::vector<std::pair<std::string, torch::optim::Optimizer*>>& optimizers) {
  // Write everything into a fresh directory, swap it in with renames, and only then record the
  // step in state.json: a run killed at any point resumes from a complete checkpoint.
  const std::filesystem::path checkpoint = options_.work_dir / kCheckpointDir;
  const std::filesystem::path fresh = checkpoint.string() + ".tmp";
  const std::filesystem::path previous = checkpoint.string() + ".old";
  std::error_code ec;
  std::filesystem::remove_all(fresh, ec);
  if (absl::Status s = bank_->Save(fresh, models::WeightDtype::kFloat32); !s.ok()) return s;
  try {
    for (const auto& [id, optimizer] : optimizers) {
      torch::save(*optimizer, OptimizerPath(fresh, id).string());
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("cannot save optimizer state: ", e.what_without_backtrace()));
  }
  std::filesystem::remove_all(previous, ec);
  if (std::filesystem::exists(checkpoint)) std::filesystem::rename(checkpoint, previous, ec);
  if (!ec) std::filesystem::rename(fresh, checkpoint, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot swap in the checkpoint: ", ec.message()));
  std::filesystem::remove_all(previous, ec);
  return SaveState();
}

absl::Status Trainer::ApplyDecisionArch() {
  const v1::DecisionArch trained = Canonical(bank_->config().decision().arch());
  v1::DecisionArch arch = trained;
  // A run paused in stage 1 goes on towards the architecture it started with (kept in
  // state.json), the flags given now applied on top.
  if (state_.contains(kPendingArchKey)) {
    const std::string text = state_[kPendingArchKey].get<std::string>();
    if (!google::protobuf::TextFormat::ParseFromString(text, &arch)) {
      return absl::DataLossError(absl::StrCat((options_.work_dir / kStateFile).string(), ": ",
                                              kPendingArchKey, " does not parse"));
    }
  }
  if (options_.decision_stem_pool_stride && *options_.decision_stem_pool_stride != 1 &&
      *options_.decision_stem_pool_stride != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--decision_stem_pool_stride must be 1 (no pool) or 2, not ",
                     *options_.decision_stem_pool_stride));
  }
  if (options_.decision_max_pool) arch.set_global_max_pool(*options_.decision_max_pool);
  if (options_.decision_input_downsample) {
    arch.set_input_downsample(*options_.decision_input_downsample);
  }
  if (options_.decision_stem_pool_stride) {
    arch.set_stem_pool_stride(*options_.decision_stem_pool_stride);
  }
  if (options_.decision_tumour_head) arch.set_tumour_head(*options_.decision_tumour_head);
  if (options_.decision_tumour_head_stage) {
    if (!arch.tumour_head()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--decision_tumour_head_stage ", *options_.decision_tumour_head_stage,
                       ": needs a tumour head (--decision_tumour_head=true)"));
    }
    arch.set_tumour_head_stage(*options_.decision_tumour_head_stage);
  }
  arch = Canonical(arch);
  if (!arch.tumour_head() && (options_.tumour_map_weight || options_.tumour_map_positive_weight)) {
    return absl::InvalidArgumentError(
        "--tumour_map_weight and --tumour_map_positive_weight weigh the tumour map's loss, and "
        "the decision network has no tumour map: add --decision_tumour_head=true");
  }
  if (arch.SerializeAsString() == trained.SerializeAsString()) {
    state_.erase(kPendingArchKey);
    return absl::OkStatus();
  }
  if (options_.keep_decision) {
    return absl::InvalidArgumentError(absl::StrCat(
        kArchFlags, " changes the decision network, which --keep_decision keeps as it is"));
  }
  // The network checks its own architecture (a stage it lacks, for one): built once here, so
  // that a bad one is refused before anything is trained.
  if (absl::StatusOr<std::unique_ptr<models::Network>> built =
          models::BuildDecisionNetwork(arch, bank_->size() + 1);
      !built.ok()) {
    return absl::Status(built.status().code(),
                        absl::StrCat(kArchFlags, ": ", built.status().message()));
  }
  // A fine-tune must be able to grow the trained network into the new architecture: refused
  // here, before anything is trained, rather than when stage 2 starts.
  if (options_.decision_finetune) {
    if (absl::Status s = models::Bank::CheckDecisionGrowth(bank_->config().decision().arch(), arch);
        !s.ok()) {
      return s;
    }
  }
  if (state_["decision_step"].get<int>() > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kArchFlags,
                     " changes the decision network of a run whose stage 2 has begun; add "
                     "--redo_decision to train it again"));
  }
  if (options_.decision_steps == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kArchFlags,
                     " changes the decision network, which only stage 2 trains: it needs "
                     "--decision_steps above 0"));
  }
  // Installed when stage 2 starts, not now: until then the bank (and every stage-1 checkpoint)
  // holds the trained network with its own architecture, so a run resumed from stage 1 loads;
  // state.json remembers the new one for a resume without the flags.
  pending_decision_arch_ = arch;
  std::string text;
  google::protobuf::TextFormat::PrintToString(arch, &text);
  state_[kPendingArchKey] = text;
  return absl::OkStatus();
}

absl::Status Trainer::Run() {
  if (absl::Status s = LoadState(); !s.ok()) return s;
  // Name and default policy apply to a resumed bank too; a bad policy fails before training.
  if (!options_.name.empty()) bank_->mutable_config()->set_name(options_.name);
  if (options_.default_policy.has_value()) {
    bank_->mutable_config()->set_default_policy(*options_.default_policy);
    if (absl::StatusOr<engine::Policy> p = engine::ParsePolicy("", *bank_); !p.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--default_policy: ", p.status().message()));
    }
  }
  if (absl::Status s = ApplyDecisionArch(); !s.ok()) return s;
  if (options_.decision_crop_to_brain) {
    bank_->mutable_config()->mutable_decision()->set_crop_to_brain(
        *options_.decision_crop_to_brain);
  }
  torch::manual_seed(options_.seed + state_["bank_step"].get<int>());
  if (absl::Status s = Guarded("stage 1", [&] { return RunBankStage(); }); !s.ok()) return s;
  if (paused()) return absl::OkStatus();
  if (!options_.keep_decision) {
    if (absl::Status s = Guarded("labels", [&] { return ComputeDecisionLabels(); }); !s.ok()) {
      return s;
    }
    if (absl::Status s = Guarded("stage 2", [&] { return RunDecisionStage(); }); !s.ok()) {
      return s;
    }
  }
  return Guarded("validation", [&] { return Validate(); });
}

bool Trainer::paused() const {
  return options_.pause_after_bank_step > 0 && state_["bank_step"].get<int>() < options_.bank_steps;
}

absl::Status Trainer::RunBankStage() {
  const int total = options_.bank_steps, first = state_["bank_step"].get<int>();
  if (first >= total) return absl::OkStatus();
  const int end = options_.pause_after_bank_step > 0
                      ? std::min(total, std::max(first, options_.pause_after_bank_step))
                      : total;
  std::vector<torch::optim::Adam> optimizers;
  for (int i = 0; i < bank_->size(); ++i) {
    optimizers.push_back(MakeAdam(bank_->model(i), options_.bank_lr, options_.weight_decay));
    if (first > 0) {
      const auto path =
          OptimizerPath(options_.work_dir / kCheckpointDir, bank_->model_config(i).id());
      if (absl::Status s = LoadOptimizer(optimizers.back(), path); !s.ok()) return s;
    }
  }
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> named;
  for (int i = 0; i < bank_->size(); ++i)
    named.emplace_back(bank_->model_config(i).id(), &optimizers[i]);
  std::mt19937_64 rng(options_.seed * 7919 + first);
  // The sampling recipe, so that the log says how the bank was trained (resumed runs log again).
  Log({{"stage", "bank_recipe"},
       {"from_step", first},
       {"augment", options_.augment_name},
       {"tumour_crops", CropCentreName(options_.tumour_crops)}});
  Progress progress("stage 1: bank", total, first, options_.log_every);
  const c10::Device device = bank_->device();
  for (int step = first; step < end; ++step) {
    const Batch batch =
        SampleCropBatch(train_, options_.batch, options_.crop, options_.foreground_fraction,
                        options_.augment, rng, options_.tumour_crops);
    const torch::Tensor images = batch.images.to(device), targets = batch.targets.to(device);
    const double lr = PolyLearningRate(options_.bank_lr, step, total, options_.warmup);
    std::vector<torch::Tensor> losses;
    nlohmann::json per_model;
    for (int i = 0; i < bank_->size(); ++i) {
      const std::string& id = bank_->model_config(i).id();
      const auto stop = options_.stop_step.find(id);
      const bool active = stop == options_.stop_step.end() || step < stop->second;
      bank_->model(i).SetTraining(active);
      if (!active) continue;
      const torch::Tensor logits = bank_->model(i).Forward(images);
      losses.push_back(options_.loss == "dice" ? SoftDiceLoss(logits, targets)
                                               : DiceCrossEntropyLoss(logits, targets));
      per_model[id] = losses.back().item<double>();
      optimizers[i].zero_grad();
      const auto own = options_.model_lr.find(id);
      SetLearningRate(optimizers[i],
                      own == options_.model_lr.end() ? lr : lr * own->second / options_.bank_lr);
    }
    if (losses.empty()) break;
    const torch::Tensor loss = torch::stack(losses).mean();
    loss.backward();
    for (int i = 0; i < bank_->size(); ++i) {
      if (per_model.contains(bank_->model_config(i).id())) optimizers[i].step();
    }
    const double value = loss.item<double>();
    if (step == first && first == 0) report_["bank_loss_first"] = value;
    report_["bank_loss_last"] = value;
    if ((step + 1) % options_.log_every == 0 || step + 1 == total) {
      Log({{"stage", 1}, {"step", step + 1}, {"loss", value}, {"losses", per_model}, {"lr", lr}});
    }
    progress.Update(step + 1, absl::StrFormat("loss %.3f", value));
    if ((step + 1) % options_.checkpoint_every == 0 || step + 1 == end) {
      state_["bank_step"] = step + 1;
      state_["labels_done"] = false;  // labels and the decision network follow the bank
      state_["decision_step"] = 0;
      if (absl::Status s = Checkpoint(named); !s.ok()) return s;
    }
  }
  for (int i = 0; i < bank_->size(); ++i) bank_->model(i).SetTraining(false);
  progress.Finish(absl::StrFormat("loss %.3f", report_.value("bank_loss_last", 0.0)));
  return absl::OkStatus();
}

absl::Status Trainer::ComputeDecisionLabels() {
  if (!state_["labels_done"].get<bool>()) {
    if (absl::Status s = ScoreSlices(); !s.ok()) return s;
  }
  // Train on the routes as re-derived from the file (scores rounded as stored), the same
  // whether the scores were just computed, or this run resumes or redoes the decision stage.
  return LoadDecisionLabels();
}

absl::Status Trainer::LoadDecisionLabels() {
  // Rebuild the slice lists from the file, re-deriving each route from the stored scores with
  // the current alpha: alpha is a knob over one set of model runs.
  const std::filesystem::path path = options_.work_dir / kLabelsFile;
  const std::vector<double> gmacs = ModelGmacs();
  tumour_slices_.clear();
  other_slices_.clear();
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<int> histogram(bank_->size() + 1, 0);
  const std::string labels_from = state_.value("labels_from", "eq4");
  if (labels_from != options_.decision_labels) {
    return absl::FailedPreconditionError(absl::StrCat(
        path.string(), " holds routes from ", labels_from, "; --decision_labels ",
        options_.decision_labels, " needs them made again: start from a fresh work directory"));
  }
  const bool errors = options_.slice_score == "errors";
  // case, case_index, slice, foreground, the Dice scores, route, then the error scores (files
  // written before --slice_score existed end at the route).
  const size_t models = bank_->size(), dice_columns = models + 5;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() != dice_columns && f.size() != dice_columns + models) {
      return absl::DataLossError(absl::StrCat(path.string(), ": malformed line '", line, "'"));
    }
    if (errors && f.size() == dice_columns) {
      return absl::DataLossError(absl::StrCat(
          path.string(), " holds no error scores (written before --slice_score existed); ",
          "remove it to score the slices again"));
    }
    const bool tumour = f[3] == "1";
    std::vector<double> scores;
    const size_t first = errors ? dice_columns : 4;
    for (size_t i = 0; tumour && i < models; ++i) {
      double score = 0;
      if (!absl::SimpleAtod(f[first + i], &score)) {
        return absl::DataLossError(absl::StrCat(path.string(), ": bad score in '", line, "'"));
      }
      scores.push_back(score);
    }
    LabelledSlice s{0, 0, DecisionLabel(tumour, scores, gmacs, options_.alpha)};
    if (!absl::SimpleAtoi(f[1], &s.case_index) || !absl::SimpleAtoi(f[2], &s.slice)) {
      return absl::DataLossError(absl::StrCat(path.string(), ": bad slice in '", line, "'"));
    }
    if (tumour && options_.small_lesion_exponent != 0 && s.case_index >= 0 &&
        s.case_index < static_cast<int>(train_.size())) {
      const TrainCase& c = train_[s.case_index];
      const int64_t voxels = c.image.geometry.SliceVoxels();
      const uint8_t* labels = c.labels.data() + static_cast<int64_t>(s.slice) * voxels;
      const int64_t area = std::count_if(labels, labels + voxels, [](uint8_t v) { return v > 0; });
      s.weight = std::pow(static_cast<double>(std::max<int64_t>(area, 1)),
                          -options_.small_lesion_exponent);
    }
    ++histogram[s.route];
    (tumour ? tumour_slices_ : other_slices_).push_back(s);
  }
  report_["decision_label_histogram"] = histogram;
  return absl::OkStatus();
}

std::vector<double> Trainer::ModelGmacs() const {
  std::vector<double> gmacs;
  for (int i = 0; i < bank_->size(); ++i) gmacs.push_back(bank_->model_config(i).gmacs_per_slice());
  return gmacs;
}

absl::Status Trainer::ScoreSlices() {
  const std::filesystem::path path = options_.work_dir / kLabelsFile;
  const std::vector<double> gmacs = ModelGmacs();
  std::vector<LabelledSlice> other_slices;  // written after the tumour slices
  for (int i = 0; i < bank_->size(); ++i) bank_->model(i).SetTraining(false);
  std::ostringstream csv;
  csv << "case,case_index,slice,foreground";
  for (int i = 0; i < bank_->size(); ++i) csv << ",S_" << bank_->model_config(i).id();
  csv << ",route";
  for (int i = 0; i < bank_->size(); ++i) csv << ",E_" << bank_->model_config(i).id();
  csv << "\n";
  int total = 0;
  for (const TrainCase& c : train_) {
    const int n = static_cast<int>(std::count(c.foreground.begin(), c.foreground.end(), 1));
    total += options_.label_slices_per_case > 0 ? std::min(n, options_.label_slices_per_case) : n;
  }
  const bool teacher = options_.decision_labels != "eq4";
  // teacher_policy: the default policy's model preference, one value per bank model.
  std::vector<double> preference;
  if (options_.decision_labels == "teacher_policy") {
    absl::StatusOr<engine::Policy> policy = engine::ParsePolicy("", *bank_);
    if (!policy.ok()) return policy.status();
    preference = policy->model_preference;
  }
  Progress progress(teacher ? "labels: " + options_.decision_labels : "labels: Eq. 4", total, 0,
                    20);
  int done = 0;
  std::vector<int> histogram(bank_->size() + 1, 0);
  const bool by_errors = options_.slice_score == "errors";
  for (int ci = 0; ci < static_cast<int>(train_.size()); ++ci) {
    const TrainCase& c = train_[ci];
    std::vector<int64_t> tumour;
    for (int64_t z = 0; z < static_cast<int64_t>(c.foreground.size()); ++z) {
      if (c.foreground[z]) {
        tumour.push_back(z);
      } else {
        other_slices.push_back({ci, static_cast<int>(z), 0});
        ++histogram[0];
      }
    }
    tumour = EvenlySpaced(tumour, options_.label_slices_per_case);
    if (tumour.empty()) continue;
    const torch::Tensor index = torch::tensor(tumour, torch::kLong);
    const torch::Tensor slices = c.slices.index_select(0, index);
    std::vector<torch::Tensor> predictions;
    torch::Tensor taught;  // teacher: its model probabilities, one row per slice
    if (teacher) {
      taught = ModelProbabilities(bank_->decision(), slices, bank_->device());
    } else {
      for (int i = 0; i < bank_->size(); ++i) {
        predictions.push_back(Predict(bank_->model(i), slices, bank_->device()));
      }
    }
    const int64_t voxels = c.slices.size(2) * c.slices.size(3);
    for (size_t t = 0; t < tumour.size(); ++t) {
      const uint8_t* reference = c.labels.data() + tumour[t] * voxels;
      std::vector<double> dice, errors;
      if (teacher) {
        const double* row = taught[t].data_ptr<double>();
        dice = PreferredProbabilities(std::vector<double>(row, row + bank_->size()), preference);
        errors = dice;
      }
      for (const torch::Tensor& p : predictions) {
        std::vector<uint8_t> labels(voxels);
        const uint8_t* classes = p[t].data_ptr<uint8_t>();
        for (int64_t v = 0; v < voxels; ++v) labels[v] = volume::ClassToLabel(classes[v]);
        dice.push_back(eval::SliceScore(labels.data(), reference, voxels));
        errors.push_back(eval::SliceErrorScore(labels.data(), reference, voxels));
      }
      const int route = DecisionLabel(true, by_errors ? errors : dice, gmacs, options_.alpha);
      ++histogram[route];
      csv << c.id << "," << ci << "," << tumour[t] << ",1";
      for (double s : dice) csv << "," << absl::StrFormat("%.5f", s);
      csv << "," << route;
      for (double s : errors) csv << "," << absl::StrFormat("%.5f", s);
      csv << "\n";
      progress.Update(++done, "");
    }
  }
  // Tumour-free slices: an empty field for each model's Dice and error score, route 0.
  const std::string no_scores(bank_->size(), ',');
  for (const LabelledSlice& s : other_slices) {
    csv << train_[s.case_index].id << "," << s.case_index << "," << s.slice << ",0" << no_scores
        << ",0" << no_scores << "\n";
  }
  if (absl::Status s = WriteAtomically(path, csv.str()); !s.ok()) return s;
  report_["decision_label_histogram"] = histogram;
  Log({{"stage", "labels"},
       {"histogram", histogram},
       {"alpha", options_.alpha},
       {"from", options_.decision_labels}});
  progress.Finish(absl::StrCat("routes (skip, models...) = ", nlohmann::json(histogram).dump()));
  state_["labels_done"] = true;
  state_["labels_from"] = options_.decision_labels;
  return SaveState();
}

absl::Status Trainer::RunDecisionStage() {
  const int total = options_.decision_steps, first = state_["decision_step"].get<int>();
  if (first >= total) return absl::OkStatus();
  if (first == 0) {
    // Stage 2 starts from a decision network initialised from --seed, and draws from the
    // stream seeded as after stage 1, whether it follows stage 1 in the same run or comes
    // from --redo_decision: both give the same network from the same bank and labels.
    torch::manual_seed(options_.seed);
    std::optional<v1::DecisionArch> trained_arch;
    if (pending_decision_arch_) {
      v1::DecisionNetwork& config = *bank_->mutable_config()->mutable_decision();
      trained_arch = config.arch();
      *config.mutable_arch() = *pending_decision_arch_;
      config.set_gmacs_per_slice(0);  // counted again for the new network
      state_.erase(kPendingArchKey);  // saved with stage 2's first checkpoint
    }
    if (!options_.decision_finetune) {
      if (absl::Status s = bank_->ReinitializeDecision(); !s.ok()) return s;
    } else if (trained_arch) {
      // Fine-tuned in a changed architecture (pooled input, added features, no stem pool): the
      // trained weights in the network built for it (the teacher's labels above came from the
      // network as it was).
      if (absl::Status s = bank_->RebuildDecisionKeepingWeights(*trained_arch); !s.ok()) {
        return s;
      }
    }
    torch::manual_seed(options_.seed + state_["bank_step"].get<int>());
  }
  models::Network& decision = bank_->decision();
  torch::optim::Adam optimizer = MakeAdam(decision, options_.decision_lr, options_.weight_decay);
  if (first > 0) {
    const auto path = OptimizerPath(options_.work_dir / kCheckpointDir, "decision");
    if (absl::Status s = LoadOptimizer(optimizer, path); !s.ok()) return s;
  }
  // The histogram LoadDecisionLabels counted (it always runs before this stage).
  const std::vector<double> weights =
      RouteWeights(report_["decision_label_histogram"].get<std::vector<int>>(),
                   options_.skip_weight, options_.route_balance);
  Log({{"stage", 2}, {"route_weights", weights}});
  std::mt19937_64 rng(options_.seed * 104729 + first);
  const bool tumour_head = bank_->config().decision().arch().tumour_head();
  const bool on_box = bank_->config().decision().crop_to_brain();
  Progress progress("stage 2: decision", total, first, options_.log_every);
  decision.SetTraining(true);
  for (int step = first; step < total; ++step) {
    Batch batch = SampleDecisionBatch(train_, tumour_slices_, other_slices_,
                                      options_.decision_batch, options_.augment, rng, tumour_head);
    if (on_box) {
      const engine::SliceBox box =
          engine::PlaneBox(engine::ScanTissue(batch.images).plane, engine::kDecisionStride);
      batch.images = engine::CropToBox(batch.images, box).contiguous();
      batch.tumour = engine::CropToBox(batch.tumour, box);
      if (batch.tumour.defined()) batch.tumour = batch.tumour.contiguous();
    }
    const double lr = PolyLearningRate(options_.decision_lr, step, total, options_.warmup);
    SetLearningRate(optimizer, lr);
    optimizer.zero_grad();
    const auto [logits, map] = decision.ForwardWithTumourMap(batch.images.to(bank_->device()));
    torch::Tensor loss = WeightedCrossEntropy(logits, batch.targets.to(bank_->device()), weights);
    if (tumour_head) {
      loss = loss + options_.tumour_map_weight.value_or(TrainOptions::kDefaultTumourMapWeight) *
                        TumourMapLoss(map, batch.tumour.to(bank_->device()),
                                      options_.tumour_map_positive_weight.value_or(
                                          TrainOptions::kDefaultTumourMapWeight));
    }
    loss.backward();
    optimizer.step();
    const double value = loss.item<double>();
    if (step == first && first == 0) report_["decision_loss_first"] = value;
    report_["decision_loss_last"] = value;
    if ((step + 1) % options_.log_every == 0 || step + 1 == total) {
      Log({{"stage", 2}, {"step", step + 1}, {"loss", value}, {"lr", lr}});
    }
    progress.Update(step + 1, absl::StrFormat("loss %.3f", value));
    if ((step + 1) % options_.checkpoint_every == 0 || step + 1 == total) {
      decision.SetTraining(false);
      state_["decision_step"] = step + 1;
      if (absl::Status s = Checkpoint({{"decision", &optimizer}}); !s.ok()) return s;
      decision.SetTraining(true);
    }
  }
  decision.SetTraining(false);
  progress.Finish(absl::StrFormat("loss %.3f", report_.value("decision_loss_last", 0.0)));
  return absl::OkStatus();
}

absl::Status Trainer::Validate() {
  if (validation_.empty()) return absl::OkStatus();
  absl::StatusOr<engine::Policy> fallback = engine::ParsePolicy("", *bank_);
  if (!fallback.ok()) return fallback.status();
  const std::string default_name = fallback->Name(*bank_);
  std::vector<std::string> policies = options_.validation_policies;
  if (policies.empty()) {
    policies.push_back(default_name);
    for (int i = 0; i < bank_->size(); ++i) {
      policies.push_back(absl::StrCat("static:", bank_->model_config(i).id()));
    }
  }
  Progress progress("validation", static_cast<int>(policies.size() * validation_.size()), 0, 1);
  int done = 0;
  for (const std::string& name : policies) {
    absl::StatusOr<engine::Policy> policy = engine::ParsePolicy(name, *bank_);
    if (!policy.ok()) return policy.status();
    std::array<double, 3> dice{};
    for (const TrainCase& c : validation_) {
      absl::StatusOr<engine::VolumeResult> result = engine::SegmentVolume(*bank_, c.image, *policy);
      if (!result.ok()) return result.status();
      for (int r = 0; r < 3; ++r) {
        dice[r] += 100.0 *
                   eval::Dice(eval::RegionMask(result->labels, static_cast<eval::Region>(r)),
                              eval::RegionMask(c.labels, static_cast<eval::Region>(r))) /
                   static_cast<double>(validation_.size());
      }
      progress.Update(++done, name);
    }
    v1::Validation v;
    v.set_dice_wt(dice[0]);
    v.set_dice_tc(dice[1]);
    v.set_dice_et(dice[2]);
    v.set_dice_mean((dice[0] + dice[1] + dice[2]) / 3.0);
    v.set_cases(static_cast<int>(validation_.size()));
    v.set_data(
        absl::StrCat("held-out cases ", validation_.front().id, " .. ", validation_.back().id));
    report_["validation"][name] = {
        {"wt", dice[0]}, {"tc", dice[1]}, {"et", dice[2]}, {"mean", v.dice_mean()}};
    v1::BundleConfig* config = bank_->mutable_config();
    if (policy->kind == engine::Policy::Kind::kDynamic) {
      // The bundle's validation is its default policy's, else the first dynamic one's.
      if (name == default_name || !config->has_validation()) *config->mutable_validation() = v;
    } else {
      *config->mutable_models(policy->static_model)->mutable_validation() = v;
    }
  }
  progress.Finish("done");
  Log({{"stage", "validation"}, {"dice", report_["validation"]}});
  state_["validated"] = true;
  return SaveState();
}

absl::Status Trainer::SaveBundle(const std::filesystem::path& dir, models::WeightDtype dtype,
                                 const std::string& provenance) {
  bank_->mutable_config()->set_provenance(provenance);
  return bank_->Save(dir, dtype);
}

}  // namespace danet::train
