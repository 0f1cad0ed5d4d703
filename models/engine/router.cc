#include "models/engine/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace danet::engine {

namespace {

// A '+<letter><voxels>' part's count, a whole number in 0..kMaxMinComponent.
bool ParseVoxelCount(const std::string& part, int* count) {
  return absl::SimpleAtoi(part.substr(1), count) && *count >= 0 && *count <= kMaxMinComponent;
}

absl::Status VoxelCountError(const std::string& text, const char* what, char letter) {
  return absl::InvalidArgumentError(
      absl::StrCat("policy '", text, "': ", what, " after '+", std::string(1, letter),
                   "' is not a whole number in 0..", kMaxMinComponent));
}

// The clean-up parts every policy takes, '+c<voxels>' and '+e<voxels>', each at most once (the
// `seen` flags): nullopt when `part` is neither (or a repeat), else the parse's status.
struct CleanUpSeen {
  bool components = false;
  bool enhancing = false;
};
std::optional<absl::Status> ParseCleanUp(const std::string& text, const std::string& part,
                                         CleanUpSeen* seen, Policy* policy) {
  if (!part.empty() && part[0] == 'c' && !seen->components) {
    seen->components = true;
    if (!ParseVoxelCount(part, &policy->min_component)) {
      return VoxelCountError(text, "the smallest tumour component", 'c');
    }
    return absl::OkStatus();
  }
  if (!part.empty() && part[0] == 'e' && !seen->enhancing) {
    seen->enhancing = true;
    if (!ParseVoxelCount(part, &policy->min_enhancing)) {
      return VoxelCountError(text, "the smallest enhancing-tumour volume", 'e');
    }
    return absl::OkStatus();
  }
  return std::nullopt;
}

// The bank's model ids, "M1, M2, ...", for messages that name an unknown model.
std::string KnownModels(const models::Bank& bank) {
  std::vector<std::string> ids;
  for (int i = 0; i < bank.size(); ++i) ids.push_back(bank.model_config(i).id());
  return absl::StrJoin(ids, ", ");
}

// A '+p<model id>:<preference>' part: the model's bank index and its preference, a finite number
// with |value| <= kMaxModelPreference.
absl::Status ParsePreference(const std::string& text, const std::string& part,
                             const models::Bank& bank, std::vector<bool>* seen,
                             std::vector<double>* preference) {
  const size_t colon = part.rfind(':');
  const std::string id = part.substr(1, colon == std::string::npos ? std::string::npos : colon - 1);
  const std::optional<int> index = bank.FindModel(id);
  if (!index) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", text, "': '+", part,
                                                   "' names no bank model (the bank has ",
                                                   KnownModels(bank), ")"));
  }
  double value = 0;
  if (colon == std::string::npos || !absl::SimpleAtod(part.substr(colon + 1), &value) ||
      !(std::abs(value) <= kMaxModelPreference)) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", text, "': the preference in '+",
                                                   part, "' is not ':<number>' with a number in -",
                                                   kMaxModelPreference, "..", kMaxModelPreference));
  }
  seen->resize(bank.size(), false);
  if ((*seen)[*index]) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy '", text, "': model '", id, "' has two preferences"));
  }
  (*seen)[*index] = true;
  if (preference->empty()) preference->assign(bank.size(), 0.0);
  (*preference)[*index] = value;
  return absl::OkStatus();
}

// The q-th quantile of `sorted` (ascending, not empty), linearly interpolated between the values
// around position q * (size - 1).
double SortedQuantile(const std::vector<float>& sorted, double q) {
  const double at = q * static_cast<double>(sorted.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(at));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (at - static_cast<double>(below)) * (sorted[above] - sorted[below]);
}

// The best of routes first..N-1 (N = route_gmacs.size()) by BiasedRoute's score, with
// preference[i - first] added to route i's (preference empty: none). Route 0 costs 0, so the
// costliest route is the costliest model whatever `first` is.
int BestRouteFrom(int first, const float* probabilities, const std::vector<double>& route_gmacs,
                  double cost_bias, const std::vector<double>& preference) {
  int best = first;
  double best_score = -std::numeric_limits<double>::infinity();
  const double largest = *std::max_element(route_gmacs.begin(), route_gmacs.end());
  const bool plain = cost_bias == 0 && preference.empty();
  for (size_t i = static_cast<size_t>(first); i < route_gmacs.size(); ++i) {
    // With neither a bias nor a preference this is argmax p_i (ties to the first), exactly the
    // unbiased route.
    const double score = plain ? probabilities[i]
                               : std::log(std::max(probabilities[i], 1e-30f)) -
                                     cost_bias * route_gmacs[i] / largest +
                                     (preference.empty() ? 0.0 : preference[i - first]);
    if (score > best_score) {
      best_score = score;
      best = static_cast<int>(i);
    }
  }
  return best;
}

// The best model (a route >= 1) for a slice that is not skipped, under the cost bias and the
// model preference (one value per model, or empty).
int BestModelRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                   double cost_bias, const std::vector<double>& model_preference) {
  return BestRouteFrom(1, probabilities, route_gmacs, cost_bias, model_preference);
}

}  // namespace

std::string Policy::PreferenceName(const models::Bank& bank) const {
  std::string name;
  for (size_t i = 0; i < model_preference.size(); ++i) {
    if (model_preference[i] != 0) {
      absl::StrAppend(&name, "+p", bank.model_config(static_cast<int>(i)).id(), ":",
                      model_preference[i]);
    }
  }
  return name;
}

std::string Policy::Name(const models::Bank& bank) const {
  // The mask clean-up, which both kinds take, comes last.
  const std::string clean_up =
      absl::StrCat(min_component == 0 ? "" : absl::StrCat("+c", min_component),
                   min_enhancing == 0 ? "" : absl::StrCat("+e", min_enhancing));
  if (kind == Kind::kDynamic) {
    return absl::StrCat(
        "dynamic", cost_bias == 0 ? "" : absl::StrCat("@", cost_bias),
        skip_margin == 0 ? "" : absl::StrCat("+m", skip_margin),
        skip_margin == 0 || margin_min_run <= 1 ? "" : absl::StrCat("r", margin_min_run),
        skip_threshold == 0 ? "" : absl::StrCat("+s", skip_threshold),
        skip_dip == 0 ? "" : absl::StrCat("+d", skip_dip),
        fill_gaps == 0 ? "" : absl::StrCat("+g", fill_gaps), PreferenceName(bank),
        follow_tumour == 0 ? "" : absl::StrCat("+f", follow_tumour),
        follow_tumour == 0 || follow_min_voxels == kDefaultFollowMinVoxels
            ? ""
            : absl::StrCat("v", follow_min_voxels),
        clean_up, decision_slices == 1 ? "" : absl::StrCat("+z", decision_slices));
  }
  return absl::StrCat("static:", bank.model_config(static_model).id(), clean_up);
}

absl::StatusOr<Policy> ParsePolicy(const std::string& text, const models::Bank& bank) {
  if (text.empty()) {
    const std::string& fallback = bank.config().default_policy();
    if (fallback.empty()) return Policy{};
    absl::StatusOr<Policy> policy = ParsePolicy(fallback, bank);
    if (!policy.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the bundle's default_policy: ", policy.status().message()));
    }
    return policy;
  }
  if (text.rfind("dynamic", 0) == 0 && (text.size() == 7 || text[7] == '@' || text[7] == '+')) {
    Policy policy;
    const std::vector<std::string> parts = absl::StrSplit(text.substr(7), '+');
    if (!parts[0].empty() && (!absl::SimpleAtod(parts[0].substr(1), &policy.cost_bias) ||
                              !std::isfinite(policy.cost_bias))) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy '", text, "': the cost bias after '@' is not a number"));
    }
    bool margin_seen = false;
    bool threshold_seen = false;
    bool dip_seen = false;
    bool gaps_seen = false;
    bool follow_seen = false;
    bool slices_seen = false;
    CleanUpSeen clean_seen;
    std::vector<bool> preference_seen;
    for (size_t i = 1; i < parts.size(); ++i) {
      const std::string& part = parts[i];
      if (!part.empty() && part[0] == 'm' && !margin_seen) {
        margin_seen = true;
        std::string margin = part.substr(1);
        if (const size_t r = margin.find('r'); r != std::string::npos) {
          if (!absl::SimpleAtoi(margin.substr(r + 1), &policy.margin_min_run) ||
              policy.margin_min_run < 1 || policy.margin_min_run > kMaxSkipMargin) {
            return absl::InvalidArgumentError(absl::StrCat(
                "policy '", text, "': the run length after 'r' is not a whole number in 1..",
                kMaxSkipMargin));
          }
          margin.resize(r);
        }
        if (!absl::SimpleAtoi(margin, &policy.skip_margin) || policy.skip_margin < 0 ||
            policy.skip_margin > kMaxSkipMargin) {
          return absl::InvalidArgumentError(absl::StrCat(
              "policy '", text, "': the skip margin after '+m' is not a whole number in 0..",
              kMaxSkipMargin));
        }
      } else if (!part.empty() && part[0] == 's' && !threshold_seen) {
        threshold_seen = true;
        if (!absl::SimpleAtod(part.substr(1), &policy.skip_threshold) ||
            !(policy.skip_threshold >= 0 && policy.skip_threshold <= 1)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "policy '", text, "': the skip threshold after '+s' is not a number in 0..1"));
        }
      } else if (!part.empty() && part[0] == 'd' && !dip_seen) {
        dip_seen = true;
        if (!absl::SimpleAtod(part.substr(1), &policy.skip_dip) ||
            !(policy.skip_dip == 0 || (policy.skip_dip >= 1 && policy.skip_dip <= kMaxSkipDip))) {
          return absl::InvalidArgumentError(
              absl::StrCat("policy '", text,
                           "': the skip dip after '+d' is not 0 or a number in 1..", kMaxSkipDip));
        }
      } else if (!part.empty() && part[0] == 'g' && !gaps_seen) {
        gaps_seen = true;
        if (!absl::SimpleAtoi(part.substr(1), &policy.fill_gaps) || policy.fill_gaps < 0 ||
            policy.fill_gaps > kMaxSkipMargin) {
          return absl::InvalidArgumentError(absl::StrCat(
              "policy '", text, "': the gap length after '+g' is not a whole number in 0..",
              kMaxSkipMargin));
        }
      } else if (!part.empty() && part[0] == 'p') {
        if (absl::Status status =
                ParsePreference(text, part, bank, &preference_seen, &policy.model_preference);
            !status.ok()) {
          return status;
        }
      } else if (!part.empty() && part[0] == 'f' && !follow_seen) {
        follow_seen = true;
        std::string follow = part.substr(1);
        if (const size_t v = follow.find('v'); v != std::string::npos) {
          if (!absl::SimpleAtoi(follow.substr(v + 1), &policy.follow_min_voxels) ||
              policy.follow_min_voxels < 1) {
            return absl::InvalidArgumentError(absl::StrCat(
                "policy '", text,
                "': the tumour voxels after 'v' are not a whole number of at least 1"));
          }
          follow.resize(v);
        }
        if (!absl::SimpleAtoi(follow, &policy.follow_tumour) || policy.follow_tumour < 0 ||
            policy.follow_tumour > kMaxSkipMargin) {
          return absl::InvalidArgumentError(
              absl::StrCat("policy '", text,
                           "': the tumour-following depth after '+f' is not a whole number in 0..",
                           kMaxSkipMargin));
        }
      } else if (!part.empty() && part[0] == 'z' && !slices_seen) {
        slices_seen = true;
        if (!absl::SimpleAtoi(part.substr(1), &policy.decision_slices) ||
            policy.decision_slices < 1 || policy.decision_slices > kMaxDecisionSlices ||
            policy.decision_slices % 2 == 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "policy '", text, "': the decision slices after '+z' are not an odd number in 1..",
              kMaxDecisionSlices));
        }
      } else if (std::optional<absl::Status> clean =
                     ParseCleanUp(text, part, &clean_seen, &policy)) {
        if (!clean->ok()) return *clean;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "policy '", text, "': '+", part,
            "' is not a skip margin '+m<K>[r<N>]', a skip threshold '+s<T>', a skip dip '+d<K>', a "
            "gap fill '+g<K>', a model preference '+p<model id>:<P>', a tumour-following depth "
            "'+f<K>[v<N>]', a "
            "smallest tumour component '+c<K>', a smallest enhancing-tumour volume '+e<K>' or the "
            "decision network's slices '+z<K>' (each at most once, '+p' once per model)"));
      }
    }
    // Preferences of 0 only are none: the plain argmax, bit for bit.
    if (std::all_of(policy.model_preference.begin(), policy.model_preference.end(),
                    [](double p) { return p == 0; })) {
      policy.model_preference.clear();
    }
    return policy;
  }
  if (text.rfind("static:", 0) == 0) {
    // The model, then optionally the same clean-up of the final masks as a dynamic policy's.
    const std::vector<std::string> parts = absl::StrSplit(text.substr(7), '+');
    const std::optional<int> index = bank.FindModel(parts[0]);
    if (!index) {
      return absl::InvalidArgumentError(absl::StrCat("policy '", text, "': no bank model '",
                                                     parts[0], "' (the bank has ",
                                                     KnownModels(bank), ")"));
    }
    Policy policy;
    policy.kind = Policy::Kind::kStatic;
    policy.static_model = *index;
    CleanUpSeen clean_seen;
    for (size_t i = 1; i < parts.size(); ++i) {
      const std::string& part = parts[i];
      if (std::optional<absl::Status> clean = ParseCleanUp(text, part, &clean_seen, &policy)) {
        if (!clean->ok()) return *clean;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "policy '", text, "': '+", part,
            "' is not a smallest tumour component '+c<K>' or a smallest enhancing-tumour volume "
            "'+e<K>', the only options of a static policy (each at most once)"));
      }
    }
    return policy;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("policy '", text,
                   "' is not 'dynamic[@<bias>][+m<margin>[r<run>]][+s<threshold>][+d<dip>]"
                   "[+g<gap>][+p<model>:<preference>]"
                   "[+f<follow>[v<voxels>]][+c<voxels>][+e<voxels>][+z<slices>]' or "
                   "'static:<model id>[+c<voxels>][+e<voxels>]'"));
}

absl::Status ApplyPolicyOverrides(double cost_bias, int64_t skip_margin, Policy* policy) {
  if (cost_bias != 0) {
    if (policy->kind != Policy::Kind::kDynamic || !std::isfinite(cost_bias)) {
      return absl::InvalidArgumentError(
          "cost_bias: must be a finite number, and only applies to the dynamic policy");
    }
    policy->cost_bias = cost_bias;
  }
  if (skip_margin != 0) {
    if (policy->kind != Policy::Kind::kDynamic || skip_margin < 0 || skip_margin > kMaxSkipMargin) {
      return absl::InvalidArgumentError(absl::StrCat("skip_margin: must be at most ",
                                                     kMaxSkipMargin,
                                                     ", and only applies to the dynamic policy"));
    }
    policy->skip_margin = static_cast<int>(skip_margin);
  }
  return absl::OkStatus();
}

int BiasedRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                double cost_bias, const std::vector<double>& preference) {
  return BestRouteFrom(0, probabilities, route_gmacs, cost_bias, preference);
}

int DecideRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                const Policy& policy) {
  if (policy.skip_threshold <= 0) {
    const int route = BiasedRoute(probabilities, route_gmacs, policy.cost_bias);
    // Without a preference the argmax over every route, when not skip, is already the best model.
    if (route == 0 || policy.model_preference.empty()) return route;
  } else if (probabilities[0] >= policy.skip_threshold) {
    return 0;
  }
  return BestModelRoute(probabilities, route_gmacs, policy.cost_bias, policy.model_preference);
}

std::vector<int> RouteSkipDips(const std::vector<int>& routes,
                               const std::vector<SliceResult>& slices,
                               const std::vector<bool>& eligible,
                               const std::vector<double>& route_gmacs, const Policy& policy) {
  if (policy.skip_dip <= 0) return routes;
  std::vector<float> skipped;
  for (size_t z = 0; z < routes.size(); ++z) {
    if (routes[z] == 0 && eligible[z]) skipped.push_back(slices[z].probabilities[0]);
  }
  if (static_cast<int>(skipped.size()) < kSkipDipMinSlices) return routes;
  std::sort(skipped.begin(), skipped.end());
  const double median = SortedQuantile(skipped, 0.5);
  const double limit =
      median - policy.skip_dip * (median - SortedQuantile(skipped, kSkipDipQuantile));
  std::vector<int> dipped = routes;
  for (size_t z = 0; z < routes.size(); ++z) {
    if (routes[z] != 0 || !eligible[z] || !(slices[z].probabilities[0] < limit)) continue;
    dipped[z] = BestModelRoute(slices[z].probabilities.data(), route_gmacs, policy.cost_bias,
                               policy.model_preference);
  }
  return dipped;
}

std::vector<int> FillRouteGaps(const std::vector<int>& routes,
                               const std::vector<SliceResult>& slices,
                               const std::vector<bool>& eligible,
                               const std::vector<double>& route_gmacs, const Policy& policy) {
  std::vector<int> filled = routes;
  if (policy.fill_gaps <= 0) return filled;
  int64_t last_routed = -1;
  for (int64_t z = 0; z < static_cast<int64_t>(routes.size()); ++z) {
    if (routes[z] == 0) continue;
    if (last_routed >= 0 && z - last_routed - 1 <= policy.fill_gaps) {
      for (int64_t n = last_routed + 1; n < z; ++n) {
        if (!eligible[n]) continue;
        filled[n] = BestModelRoute(slices[n].probabilities.data(), route_gmacs, policy.cost_bias,
                                   policy.model_preference);
      }
    }
    last_routed = z;
  }
  return filled;
}

std::vector<int> WidenRoutes(const std::vector<int>& routes, const std::vector<SliceResult>& slices,
                             const std::vector<double>& route_gmacs, double cost_bias, int margin,
                             int min_run, const std::vector<double>& model_preference) {
  std::vector<int> widened = routes;
  const int64_t depth = static_cast<int64_t>(routes.size());
  // run[z]: the length of the run of consecutive routed slices that holds z (0 when skipped).
  std::vector<int64_t> run(depth, 0);
  for (int64_t begin = 0; begin < depth;) {
    int64_t end = begin;
    while (end < depth && routes[end] != 0) ++end;
    std::fill(run.begin() + begin, run.begin() + end, end - begin);
    begin = std::max(end, begin + 1);
  }
  for (int64_t z = 0; z < depth; ++z) {
    if (routes[z] != 0) continue;
    bool near_routed = false;
    for (int64_t n = std::max<int64_t>(0, z - margin);
         n <= std::min<int64_t>(depth - 1, z + margin) && !near_routed; ++n) {
      near_routed = run[n] >= std::max(min_run, 1);
    }
    if (near_routed) {
      widened[z] =
          BestModelRoute(slices[z].probabilities.data(), route_gmacs, cost_bias, model_preference);
    }
  }
  return widened;
}

std::vector<std::pair<int64_t, int>> FollowTumour(const std::vector<int>& routes,
                                                  const std::vector<bool>& eligible,
                                                  const std::vector<int64_t>& grown_from,
                                                  const std::vector<int64_t>& tumour_voxels,
                                                  const std::vector<double>& route_gmacs,
                                                  int min_voxels) {
  const int64_t depth = static_cast<int64_t>(routes.size());
  std::vector<int> grown(depth, 0);
  for (const int64_t z : grown_from) {
    if (tumour_voxels[z] < min_voxels) continue;
    for (const int64_t n : {z - 1, z + 1}) {
      if (n < 0 || n >= depth || routes[n] != 0 || !eligible[n]) continue;
      if (grown[n] == 0 || route_gmacs[routes[z]] > route_gmacs[grown[n]]) grown[n] = routes[z];
    }
  }
  std::vector<std::pair<int64_t, int>> next;
  for (int64_t z = 0; z < depth; ++z) {
    if (grown[z] != 0) next.emplace_back(z, grown[z]);
  }
  return next;
}

}  // namespace danet::engine
