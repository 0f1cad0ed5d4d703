#include "models/eval/evaluate.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/engine/case.h"
#include "models/engine/preprocess.h"
#include "models/engine/router.h"
#include "models/engine/segmenter.h"
#include "models/engine/summary.h"
#include "models/eval/metrics.h"
#include "models/volume/brats.h"

namespace danet::eval {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> DefaultPolicies(const models::Bank& bank) {
  std::vector<std::string> policies = {"dynamic"};
  // The bundle's default policy too, when it is not plain "dynamic" (e.g. with a skip margin).
  // (An invalid default stays "" here, so that evaluating it reports the bundle's error.)
  if (absl::StatusOr<engine::Policy> fallback = engine::ParsePolicy("", bank); !fallback.ok()) {
    policies.push_back("");
  } else if (fallback->Name(bank) != "dynamic") {
    policies.push_back(fallback->Name(bank));
  }
  for (int i = 0; i < bank.size(); ++i) {
    policies.push_back(absl::StrCat("static:", bank.model_config(i).id()));
  }
  return policies;
}

// Scores of one case under one policy.
nlohmann::json ScoreCase(const models::Bank& bank, const volume::BratsCase& c,
                         const engine::PreparedCase& prepared, const engine::Policy& policy,
                         const EvalOptions& options) {
  const auto start = Clock::now();
  engine::SegmentOptions segment_options;
  segment_options.crop_to_brain = options.crop_to_brain;
  segment_options.crop_decision = options.crop_decision;
  absl::StatusOr<engine::VolumeResult> result =
      engine::SegmentCase(bank, prepared, policy, segment_options);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!result.ok()) return {{"error", std::string(result.status().message())}};
  const auto& g = c.image.geometry;
  nlohmann::json out = {{"case", c.case_id}, {"seconds", seconds}, {"gmacs", result->gmacs}};
  for (int r = 0; r < 3; ++r) {
    const auto region = static_cast<Region>(r);
    const std::vector<uint8_t> p = RegionMask(result->labels, region);
    const std::vector<uint8_t> t = RegionMask(c.seg->labels, region);
    out["dice"][kRegionNames[r]] = 100.0 * Dice(p, t);
    if (options.hd95) out["hd95"][kRegionNames[r]] = Hd95(p, t, g.dims, g.spacing);
  }
  const engine::CaseSummary summary = engine::SummarizeCase(bank, *result, g);
  const nlohmann::json routes = summary.RouteCountsByName();
  nlohmann::json tumour_routes = routes;  // the same keys, over the slices that hold tumour
  for (auto& [route, count] : tumour_routes.items()) count = 0;
  int tumour_slices = 0, kept = 0, free_slices = 0, free_skipped = 0;
  const int64_t slice_voxels = g.dims[0] * g.dims[1];
  for (const engine::SliceResult& s : result->slices) {
    const std::string& name = summary.route_names[s.route];
    const auto begin = c.seg->labels.begin() + s.index * slice_voxels;
    if (std::any_of(begin, begin + slice_voxels, [](uint8_t l) { return l != 0; })) {
      ++tumour_slices;
      kept += s.route != 0;
      tumour_routes[name] = tumour_routes[name].get<int>() + 1;
    } else {
      ++free_slices;
      free_skipped += s.route == 0;
    }
  }
  out["routes"] = routes;
  out["tumour_routes"] = tumour_routes;
  out["tumour_slices"] = tumour_slices;
  out["tumour_slices_kept"] = kept;
  out["tumour_free_slices"] = free_slices;
  out["tumour_free_skipped"] = free_skipped;
  out["bias_refitted"] = result->bias_refitted;
  if (result->bias_refitted || result->refit_probe_kept) {  // a second fit ran (SegmentCase)
    out["refit_change"] = result->refit_change;
    out["refit_probe_kept"] = result->refit_probe_kept;
  }
  return out;
}

nlohmann::json Summarise(const std::vector<nlohmann::json>& cases, bool hd95) {
  nlohmann::json p = {{"routes", nlohmann::json::object()},
                      {"tumour_routes", nlohmann::json::object()}};
  const double n = static_cast<double>(cases.size());
  double gmacs = 0, seconds = 0;
  int tumour = 0, kept = 0, free = 0, skipped = 0, refits = 0, probes_kept = 0;
  for (const auto& c : cases) {
    refits += c.value("bias_refitted", false);
    probes_kept += c.value("refit_probe_kept", false);
    gmacs += c["gmacs"].get<double>() / n;
    seconds += c["seconds"].get<double>() / n;
    tumour += c["tumour_slices"].get<int>();
    kept += c["tumour_slices_kept"].get<int>();
    free += c["tumour_free_slices"].get<int>();
    skipped += c["tumour_free_skipped"].get<int>();
    for (const char* key : {"routes", "tumour_routes"}) {
      for (const auto& [route, count] : c[key].items()) {
        p[key][route] = p[key].value(route, 0) + count.get<int>();
      }
    }
  }
  for (const char* metric : {"dice", "hd95"}) {
    if (!hd95 && std::string(metric) == "hd95") continue;
    double mean = 0;
    for (const char* region : kRegionNames) {
      double v = 0;
      for (const auto& c : cases) v += c[metric][region].get<double>() / n;
      p[metric][region] = v;
      mean += v / 3.0;
    }
    p[metric]["mean"] = mean;
  }
  p["gmacs_per_case"] = gmacs;
  p["seconds_per_case"] = seconds;
  p["tumour_slice_recall"] = tumour > 0 ? static_cast<double>(kept) / tumour : 1.0;
  p["tumour_free_skip_rate"] = free > 0 ? static_cast<double>(skipped) / free : 0.0;
  p["bias_refits"] = refits;  // cases segmented twice (engine::SegmentCase)
  // Cases fitted again whose first look's masks were kept (bias_refit_min_change).
  p["bias_refit_probes_kept"] = probes_kept;
  p["per_case"] = cases;
  return p;
}

// The costliest policy's GMACs per case: the reference of the tables' cost columns.
double LargestGmacs(const nlohmann::json& e) {
  double largest = 0;
  for (const auto& [name, p] : e["policies"].items()) {
    largest = std::max(largest, p["gmacs_per_case"].get<double>());
  }
  return largest;
}

// The policy column: as wide as the longest policy name (at least 12), so that every row's
// numbers line up under their headers.
int NameWidth(const nlohmann::json& e) {
  size_t width = 12;
  for (const auto& [name, p] : e["policies"].items()) width = std::max(width, name.size());
  return static_cast<int>(width);
}

}  // namespace

absl::StatusOr<nlohmann::json> Evaluate(const models::Bank& bank,
                                        const std::vector<std::filesystem::path>& case_dirs,
                                        const EvalOptions& options) {
  const std::vector<std::string> names =
      options.policies.empty() ? DefaultPolicies(bank) : options.policies;
  std::vector<engine::Policy> policies;
  for (const std::string& name : names) {
    absl::StatusOr<engine::Policy> policy = engine::ParsePolicy(name, bank);
    if (!policy.ok()) return policy.status();
    policies.push_back(*policy);
  }
  std::vector<std::vector<nlohmann::json>> per_policy(policies.size());
  for (const auto& dir : case_dirs) {
    absl::StatusOr<volume::BratsCase> c = volume::LoadBratsCase(dir);
    if (!c.ok()) return c.status();
    if (!c->seg) {
      return absl::InvalidArgumentError(absl::StrCat(dir.string(), ": evaluation needs a seg"));
    }
    absl::StatusOr<engine::PreparedCase> input =
        engine::PrepareCase(bank.config().preprocessing(), c->image);
    if (!input.ok()) return input.status();
    for (size_t p = 0; p < policies.size(); ++p) {
      if (options.on_case) options.on_case(names[p], c->case_id);
      nlohmann::json scored = ScoreCase(bank, *c, *input, policies[p], options);
      if (scored.contains("error")) {
        return absl::InternalError(
            absl::StrCat(c->case_id, " (", names[p], "): ", scored["error"].get<std::string>()));
      }
      per_policy[p].push_back(std::move(scored));
    }
  }
  nlohmann::json out = {{"cases", case_dirs.size()},
                        {"bundle", bank.config().name()},
                        {"bank_numerics", bank.numerics()}};
  for (size_t p = 0; p < policies.size(); ++p) {
    out["policies"][names[p]] = Summarise(per_policy[p], options.hd95);
  }
  return out;
}

std::string FormatEvaluation(const nlohmann::json& e) {
  const bool hd95 = e["policies"].begin()->contains("hd95");
  const int w = NameWidth(e);
  const double largest = LargestGmacs(e);
  // Reports written before the field was added, and float32 banks, say nothing of it.
  const std::string numerics = e.value("bank_numerics", std::string("float32"));
  std::string out = absl::StrFormat(
      "%d cases, bundle '%s'%s (phantom data is synthetic: not clinical accuracy)\n\n"
      "%-*s %7s %7s %7s %7s %9s %9s %9s %8s %8s %7s\n",
      e["cases"].get<int>(), e["bundle"].get<std::string>(),
      numerics == "float32" ? "" : absl::StrCat(", bank models in ", numerics), w, "policy", "ET",
      "TC", "WT", "mean", "HD95 ET", "HD95 TC", "HD95 WT", "GMACs", "vs max", "s/case");
  for (const auto& [name, p] : e["policies"].items()) {
    const auto& d = p["dice"];
    absl::StrAppendFormat(&out, "%-*s %7.2f %7.2f %7.2f %7.2f ", w, name, d["et"].get<double>(),
                          d["tc"].get<double>(), d["wt"].get<double>(), d["mean"].get<double>());
    if (hd95) {
      absl::StrAppendFormat(&out, "%9.2f %9.2f %9.2f ", p["hd95"]["et"].get<double>(),
                            p["hd95"]["tc"].get<double>(), p["hd95"]["wt"].get<double>());
    } else {
      absl::StrAppendFormat(&out, "%9s %9s %9s ", "-", "-", "-");
    }
    absl::StrAppendFormat(&out, "%8.1f %7.1f%% %7.1f\n", p["gmacs_per_case"].get<double>(),
                          100.0 * p["gmacs_per_case"].get<double>() / largest,
                          p["seconds_per_case"].get<double>());
  }
  out += "\nroutes (slices over all cases), tumour-slice recall, tumour-free slices skipped:\n";
  for (const auto& [name, p] : e["policies"].items()) {
    absl::StrAppendFormat(&out, "%-*s %s  recall %.2f%%  tumour-free skipped %.2f%%\n", w, name,
                          p["routes"].dump(), 100.0 * p["tumour_slice_recall"].get<double>(),
                          100.0 * p.value("tumour_free_skip_rate", 0.0));
    if (p.contains("tumour_routes")) {
      absl::StrAppendFormat(&out, "%-*s tumour slices %s\n", w, "", p["tumour_routes"].dump());
    }
    if (const int refits = p.value("bias_refits", 0); refits > 0) {
      absl::StrAppendFormat(&out,
                            "%-*s bias fields refitted without the tumour on %d of %d cases\n", w,
                            "", refits, e["cases"].get<int>());
    }
    if (const int kept = p.value("bias_refit_probes_kept", 0); kept > 0) {
      absl::StrAppendFormat(&out,
                            "%-*s bias fields refitted, the first look kept (little change) on "
                            "%d of %d cases\n",
                            w, "", kept, e["cases"].get<int>());
    }
  }
  return out;
}

std::string FormatSideBySide(const nlohmann::json& in, const nlohmann::json& shift) {
  // Cost relative to the costliest policy of each set (static on the largest model).
  const double in_max = LargestGmacs(in), shift_max = LargestGmacs(shift);
  const int w = NameWidth(in);
  std::string out = absl::StrFormat(
      "in distribution (%d cases) | shift (%d cases)\n%-*s %7s %7s %8s %8s | %7s %7s %8s %8s\n",
      in["cases"].get<int>(), shift["cases"].get<int>(), w, "policy", "Dice", "cost", "recall",
      "tf-skip", "Dice", "cost", "recall", "tf-skip");
  for (const auto& [name, p] : in["policies"].items()) {
    absl::StrAppendFormat(&out, "%-*s %7.2f %6.1f%% %7.2f%% %7.2f%% |", w, name,
                          p["dice"]["mean"].get<double>(),
                          100.0 * p["gmacs_per_case"].get<double>() / in_max,
                          100.0 * p["tumour_slice_recall"].get<double>(),
                          100.0 * p["tumour_free_skip_rate"].get<double>());
    if (!shift["policies"].contains(name)) {
      out += "\n";
      continue;
    }
    const auto& q = shift["policies"][name];
    absl::StrAppendFormat(&out, " %7.2f %6.1f%% %7.2f%% %7.2f%%\n", q["dice"]["mean"].get<double>(),
                          100.0 * q["gmacs_per_case"].get<double>() / shift_max,
                          100.0 * q["tumour_slice_recall"].get<double>(),
                          100.0 * q["tumour_free_skip_rate"].get<double>());
  }
  return out;
}

std::string EvaluationCsv(const nlohmann::json& e, const std::string& set) {
  std::string out =
      "set,policy,case,dice_et,dice_tc,dice_wt,hd95_et,hd95_tc,hd95_wt,gmacs,seconds,"
      "tumour_slices,tumour_slices_kept,tumour_free_slices,tumour_free_skipped\n";
  AppendEvaluationCsvRows(e, set, &out);
  return out;
}

void AppendEvaluationCsvRows(const nlohmann::json& e, const std::string& set, std::string* csv) {
  std::string& out = *csv;
  for (const auto& [name, p] : e["policies"].items()) {
    for (const auto& c : p["per_case"]) {
      auto hd = [&](const char* r) {
        return c.contains("hd95") ? absl::StrFormat("%.3f", c["hd95"][r].get<double>())
                                  : std::string();
      };
      absl::StrAppendFormat(&out, "%s,%s,%s,%.3f,%.3f,%.3f,%s,%s,%s,%.3f,%.3f,%d,%d,%d,%d\n", set,
                            name, c["case"].get<std::string>(), c["dice"]["et"].get<double>(),
                            c["dice"]["tc"].get<double>(), c["dice"]["wt"].get<double>(), hd("et"),
                            hd("tc"), hd("wt"), c["gmacs"].get<double>(),
                            c["seconds"].get<double>(), c["tumour_slices"].get<int>(),
                            c["tumour_slices_kept"].get<int>(), c["tumour_free_slices"].get<int>(),
                            c["tumour_free_skipped"].get<int>());
    }
  }
}

}  // namespace danet::eval
