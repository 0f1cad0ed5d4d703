// Evaluation of a bank on labelled cases: for each routing policy (dynamic, static:<model>),
// per-case Dice and HD95 of WT, TC, ET, GMACs, wall time, routes and tumour-slice recall, then
// means over cases. All policies run in one process on the same cases, so their times compare.
#ifndef DANET_MODELS_EVAL_EVALUATE_H_
#define DANET_MODELS_EVAL_EVALUATE_H_

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/bank/bank.h"

namespace danet::eval {

struct EvalOptions {
  std::vector<std::string> policies;  // empty: dynamic and static:<each model>
  bool hd95 = true;                   // HD95 costs ~1 s per region per case
  bool crop_to_brain = true;          // engine::SegmentOptions.crop_to_brain
  std::optional<bool> crop_decision;  // engine::SegmentOptions.crop_decision
  std::function<void(const std::string& policy, const std::string& case_id)> on_case;
};

// Evaluates every case folder in `case_dirs` (each with a seg). The JSON has
// {"cases": N, "policies": {NAME: {"gmacs_per_case", "seconds_per_case",
//  "dice": {"et","tc","wt","mean"} (percent), "hd95": {"et","tc","wt","mean"} (mm),
//  "routes": {"skip": n, "<id>": n, ...}, "tumour_routes" (the same over the slices that hold
//  tumour), "tumour_slice_recall" (tumour slices routed to a
//  model / tumour slices), "tumour_free_skip_rate" (tumour-free slices skipped / tumour-free
//  slices), "per_case": [...]}}}.
absl::StatusOr<nlohmann::json> Evaluate(const models::Bank& bank,
                                        const std::vector<std::filesystem::path>& case_dirs,
                                        const EvalOptions& options);

// A terminal table of the JSON above, one row per policy.
std::string FormatEvaluation(const nlohmann::json& evaluation);

// The headline numbers of two evaluations of the same bundle (in distribution and under a
// shift in appearance) side by side: mean Dice, cost against the costliest policy, tumour-slice
// recall and tumour-free skip rate, one row per policy.
std::string FormatSideBySide(const nlohmann::json& in_distribution, const nlohmann::json& shift);

// One CSV row per (policy, case), with a header: set (e.g. "in_distribution" or "shift"),
// policy, case, dice_*, hd95_*, gmacs, seconds, tumour_slices, tumour_slices_kept,
// tumour_free_slices, tumour_free_skipped. AppendEvaluationCsvRows adds rows without a header.
std::string EvaluationCsv(const nlohmann::json& evaluation, const std::string& set);
void AppendEvaluationCsvRows(const nlohmann::json& evaluation, const std::string& set,
                             std::string* csv);

}  // namespace danet::eval

#endif  // DANET_MODELS_EVAL_EVALUATE_H_
