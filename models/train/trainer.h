// Med-DANet's two training stages (paper section 3.3) on a bank, resumable from checkpoints.
//
//   stage 1  joint bank training: every active model on the same crop batches, loss = mean over
//            models of the soft Dice loss (Eq. 5-6); Adam with weight decay, poly LR with
//            warm-up; a model may stop early (its stop step).
//   labels   Eq. 4 decision labels for every training slice: 0 without tumour, else the model
//            maximising (1 - alpha) * S_i + alpha * softmax(1/F)_i, S_i its slice score.
//            Written to WORK/decision_labels.csv with every S_i, so alpha can be swept later
//            without re-running the models.
//   stage 2  the decision network on full slices with weighted cross-entropy (Eq. 7).
//   validate per-model (static) and dynamic Dice on held-out cases, written into the bundle.
//
// WORK holds state.json (what is done), checkpoint/ (a bundle plus optimizer states) and
// train.log (one JSON line per logged step). Run() continues where an earlier run stopped.
#ifndef DANET_MODELS_TRAIN_TRAINER_H_
#define DANET_MODELS_TRAIN_TRAINER_H_

#include <torch/optim/optimizer.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/bank/bank.h"
#include "models/train/dataset.h"

namespace danet::train {

struct TrainOptions {
  // Stage 1.
  int bank_steps = 300;
  int batch = 8;
  int crop = 128;
  double bank_lr = 1e-3;
  int warmup = 20;
  double weight_decay = 1e-5;
  double foreground_fraction = 0.7;
  CropCentre tumour_crops = CropCentre::kTumourSlice;  // where tumour crops are centred
  std::map<std::string, int> stop_step;  // model id -> steps it trains for (default: all)
  // Stop (checkpointed) after this stage-1 step and return, leaving the rest for a later run
  // (0: never). A resumed run with another bank_steps changes the schedule's length from here:
  // how the shipped bundle's run was shortened to fit its time budget.
  int pause_after_bank_step = 0;
  // model id -> its own peak learning rate (default: bank_lr). Transformers want a lower one.
  std::map<std::string, double> model_lr;
  // Stage 1 loss: "dice_ce" (soft Dice + cross-entropy, nnU-Net's) or "dice" (Eq. 5-6 alone,
  // the first release's).
  std::string loss = "dice_ce";
  // Augmentation of both stages' batches (models/train/augment.h); `augment_name` is recorded.
  AugmentOptions augment;
  std::string augment_name = "nnunet";
  // Labels and stage 2.
  double alpha = 0.001;
  // S_i in Eq. 4: "dice" (eval::SliceScore, the paper's per-slice Dice) or "errors"
  // (eval::SliceErrorScore, the slice's wrong voxels against its tumour size). Both are stored
  // in decision_labels.csv, so either can be chosen again with --redo_decision.
  std::string slice_score = "dice";
  // Eq. 4 scores for at most this many tumour slices per case, evenly spaced along z so that
  // tumour ends and centres both count (0: all). Scoring runs every model on every scored
  // slice at full size: the labels stage's cost.
  int label_slices_per_case = 0;
  // Where the tumour slices' routes come from: "eq4" (the bank models' slice scores, Eq. 4) or
  // "teacher" (the starting bundle's trained decision network: its probabilities of the bank
  // models, renormalised over them, are stored as both scores, so Eq. 4 at alpha 0 gives the
  // model it ranks first). "teacher" keeps a network's routing among the models while stage 2
  // trains a new one, on other cases or with stronger augmentation; tumour-free slices are
  // skip as always. "teacher_policy": the same under the default policy's model preference
  // (Policy::model_preference: PreferredProbabilities stored as the scores), so the labels are
  // the models the teacher is served with, not its unpreferred ranking. The starting bundle's
  // decision network must be trained (--init_bundle).
  std::string decision_labels = "eq4";
  int decision_steps = 300;
  int decision_batch = 16;
  double decision_lr = 1e-3;
  // Weighted cross-entropy: route 0 (skip) weighs skip_weight, every bank route 1. Below 1
  // because a skipped tumour slice is a miss no model can repair, while a tumour-free slice
  // sent to a model costs only compute (the paper lowers the skip weight for the same reason).
  double skip_weight = 0.3;
  // Weighs each bank route by (its count / the mean count)^-route_balance in the same
  // cross-entropy (RouteWeights): 0 weighs them alike; above 0 a rare route (M2 among many M3
  // labels) keeps a voice, so the network does not collapse onto the most frequent model.
  double route_balance = 0;
  // Sets DecisionArch.global_max_pool of the decision network that stage 2 trains (unset keeps
  // the bank's). It applies when stage 2 starts (a new run, or --redo_decision): on a fresh
  // network, or with decision_finetune on the trained one, whose classifier then reads the new
  // feature from a weight of 0 (Bank::RebuildDecisionKeepingWeights).
  std::optional<bool> decision_max_pool;
  // Sets DecisionArch.input_downsample (1, 2 or 4: the decision network's input average-pooled
  // by this factor), under the same rule as decision_max_pool.
  std::optional<int> decision_input_downsample;
  // Sets DecisionArch.stem_pool_stride (2: the stem's max pool; 1: none, the stages on a twice
  // finer grid), under the same rule as decision_max_pool.
  std::optional<int> decision_stem_pool_stride;
  // Sets DecisionArch.tumour_head (a tumour map on the head's grid whose maximum the classifier
  // sees), under the same rule as decision_max_pool. Stage 2 then adds tumour_map_weight times
  // the map's binary cross-entropy against the slice's tumour mask, max-pooled to the map's grid.
  std::optional<bool> decision_tumour_head;
  // Sets DecisionArch.tumour_head_stage (0: the head's features; 1..3: a stage's output, a finer
  // map), under the same rule as decision_max_pool.
  std::optional<int> decision_tumour_head_stage;
  // The map's loss weight and a tumour cell's weight in its cross-entropy (unset:
  // kDefaultTumourMapWeight). Set for a network that stage 2 trains without a tumour head, they
  // are refused rather than ignored.
  static constexpr double kDefaultTumourMapWeight = 1.0;
  std::optional<double> tumour_map_weight;
  std::optional<double> tumour_map_positive_weight;
  // Sets the bundle's decision.crop_to_brain (unset keeps the bank's). Where it is set, stage 2
  // trains on the brain's box as serving runs it: each batch cropped to its non-zero voxels'
  // box on a 32-voxel grid, the decision network's output stride or a multiple of it
  // (augmentation moves the brain first).
  std::optional<bool> decision_crop_to_brain;
  // Stage 2 continues from the starting bundle's trained decision network (--init_bundle)
  // instead of a fresh one; with teacher labels it keeps the network's routing while it learns
  // a new input, such as the brain's box.
  bool decision_finetune = false;
  // Stage 2 draws a tumour slice with chance proportional to (its tumour voxels)^-exponent:
  // 0 draws them uniformly; 0.5 draws a 25-voxel slice 10 times as often as a 2500-voxel one,
  // for a decision network that must not skip small lesions.
  double small_lesion_exponent = 0;
  // Bookkeeping.
  uint64_t seed = 1;
  int log_every = 10;
  int checkpoint_every = 50;
  std::filesystem::path work_dir;
  // Resume with the bank and the stored slice scores, but redo the decision stage (new alpha).
  bool redo_decision = false;
  // Fine-tune the bank only: after stage 1, skip the Eq. 4 labels and stage 2 and keep the
  // starting bundle's decision network as it is (it must have been trained: --init_bundle).
  bool keep_decision = false;
  // Policies to validate ("dynamic", "static:<id>"); empty: the default policy and every
  // static one.
  std::vector<std::string> validation_policies;
  // Written into the bundle (also when resuming): its name, and the policy for requests that
  // name none (BundleConfig.default_policy; unset keeps the bank's).
  std::string name;
  std::optional<std::string> default_policy;
};

class Trainer {
 public:
  // `bank` is the starting point (fresh or a bundle); its config is the output's config.
  Trainer(std::unique_ptr<models::Bank> bank, std::vector<TrainCase> train,
          std::vector<TrainCase> validation, TrainOptions options);

  // Runs what state.json says is not done yet; on return the bank holds trained weights and
  // its config the measured validation (unless paused(): see pause_after_bank_step). Progress
  // goes to stderr.
  absl::Status Run();
  bool paused() const;

  // Writes the trained bundle (weights in `dtype`, config with validation and provenance).
  absl::Status SaveBundle(const std::filesystem::path& dir, models::WeightDtype dtype,
                          const std::string& provenance);

  const models::Bank& bank() const { return *bank_; }
  // Loss at the first and last logged steps of stage 1 and 2, validation numbers, timings.
  const nlohmann::json& report() const { return report_; }

 private:
  absl::Status LoadState();
  // The ids of the training cases prepared without the bias correction (TrainCase::uncorrected),
  // recorded in the state so that a resumed run trains on the same data.
  std::vector<std::string> UncorrectedCaseIds() const;
  absl::Status SaveState();
  absl::Status Checkpoint(
      const std::vector<std::pair<std::string, torch::optim::Optimizer*>>& optimizers);
  absl::Status RunBankStage();
  // Eq. 4 labels: ScoreSlices (once per work directory) runs every bank model on every
  // tumour slice and writes decision_labels.csv; LoadDecisionLabels derives the routes from
  // it with the current alpha.
  absl::Status ComputeDecisionLabels();
  absl::Status ScoreSlices();
  absl::Status LoadDecisionLabels();
  std::vector<double> ModelGmacs() const;  // each bank model's GMACs per slice (Eq. 4's F_i)
  // --decision_max_pool, --decision_input_downsample, --decision_stem_pool_stride and
  // --decision_tumour_head[_stage] into the architecture stage 2 installs (pending_decision_arch_);
  // they change the network, so only before stage 2 has begun, and only with stage 2 to run.
  absl::Status ApplyDecisionArch();
  absl::Status RunDecisionStage();
  absl::Status Validate();
  void Log(const nlohmann::json& line);

  std::unique_ptr<models::Bank> bank_;
  std::vector<TrainCase> train_, validation_;
  TrainOptions options_;
  nlohmann::json state_;  // {"bank_step", "labels_done", "decision_step", "validated"}
  nlohmann::json report_;
  std::vector<LabelledSlice> tumour_slices_, other_slices_;
  // Set when ApplyDecisionArch found a new architecture for the decision network: stage 2 puts it
  // into the config and builds the network again when it starts (with --decision_finetune from
  // the trained network's weights). Stage 1 and its checkpoints keep the trained network and its
  // own architecture.
  std::optional<v1::DecisionArch> pending_decision_arch_;
};

}  // namespace danet::train

#endif  // DANET_MODELS_TRAIN_TRAINER_H_
