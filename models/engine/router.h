// The router: which slices go where. A Policy says how routes are chosen (the decision
// network's choice, biased toward cheaper or stronger models and widened by a skip margin, or
// one bank model for every slice); the functions here parse policies, apply a request's
// overrides, and turn the decision network's probabilities into routes. The segmenter
// (segmenter.h) runs them; docs/routing.md explains the knobs.
//
// Thread safety: pure functions; a Policy is a value.
#ifndef DANET_MODELS_ENGINE_ROUTER_H_
#define DANET_MODELS_ENGINE_ROUTER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/bank/bank.h"
#include "models/engine/result.h"

namespace danet::engine {

inline constexpr int kMaxSkipMargin = 32;
inline constexpr int kDefaultFollowMinVoxels = 5;
inline constexpr int kMaxMinComponent = 100000;
inline constexpr double kMaxModelPreference = 100;
inline constexpr double kMaxSkipDip = 100;
// Policy::skip_dip's reference: the median and this quantile of the skipped slices' skip
// probabilities, over at least kSkipDipMinSlices such slices.
inline constexpr double kSkipDipQuantile = 0.1;
inline constexpr int kSkipDipMinSlices = 20;
inline constexpr int kMaxDecisionSlices = 9;

// Which slices go where.
struct Policy {
  enum class Kind { kDynamic, kStatic };
  Kind kind = Kind::kDynamic;
  int static_model = -1;  // bank index for kStatic
  // kDynamic only: biases routes toward cheaper (> 0) or stronger (< 0) models. The route is
  // argmax_i [log p_i - cost_bias * gmacs_i / gmacs_max] with skip costing 0, so 0 keeps the
  // decision network's choice (docs/routing.md).
  double cost_bias = 0;
  // kDynamic only: a slice within skip_margin slices (along z) of a slice the decision network
  // sent to a model is not skipped; it takes its best non-skip route (same cost bias). Tumours
  // are contiguous in z and the skip decision's misses are mostly their thin first and last
  // slices, so a margin buys tumour-slice recall for a few cheap slices (docs/routing.md).
  int skip_margin = 0;
  // kDynamic with a skip margin: the margin grows only from runs of at least this many
  // consecutive routed slices. A lone routed slice is the decision network's typical false
  // positive on unfamiliar images; a tumour spans several slices (docs/routing.md).
  int margin_min_run = 1;
  // kDynamic only: a slice is skipped only when the decision network's skip probability is at
  // least this; otherwise it takes its best non-skip route (same cost bias). 0 keeps the argmax.
  // Under an appearance shift the skip probability of a small lesion's slices falls, but often
  // not below the other routes'; a threshold above 0.5 trades a few tumour-free slices for
  // tumour-slice recall (docs/routing.md).
  double skip_threshold = 0;
  // kDynamic only: route the volume's dips. Among the tissue slices the decision network skips,
  // with m the median of their skip probabilities and q the kSkipDipQuantile-th quantile, a
  // slice whose skip probability is under m - skip_dip * (m - q) takes its best model (cost
  // bias and preference as above). The network gives a small lesion's slices a lower skip
  // probability than the same volume's healthy slices, but often not under one half; under an
  // appearance shift every slice's skip probability falls and spreads, and the rule, measured
  // against the volume's own slices, asks for a deeper dip there. With skip_dip >= 1 it routes
  // only slices under the quantile: at most about a tenth of the skipped slices. Combined with
  // follow_tumour, one routed slice of a lesion is enough to segment the rest of it
  // (docs/routing.md). 0: off; otherwise 1..kMaxSkipDip.
  double skip_dip = 0;
  // kDynamic only: close the gaps of a tumour's routes. After the skip dip, a run of at most
  // fill_gaps skipped tissue slices with a routed slice on both sides is routed, each slice to its
  // best model (cost bias and preference as above). The decision network, unsure across a large
  // tumour whose appearance it has not seen, routes some of its slices and skips those between;
  // the models then find too little on the routed ones for the follow step to walk into the
  // gaps. Unlike the skip margin it adds nothing around a lone routed slice, the network's
  // typical false positive on a tumour-free slice (docs/routing.md). 0: off; otherwise
  // 1..kMaxSkipMargin.
  int fill_gaps = 0;
  // kDynamic only: follow the tumour. Once the routed slices are segmented, a skipped slice
  // next to (z +/- 1) a segmented slice whose mask holds at least follow_min_voxels tumour
  // voxels is segmented too, with that slice's model, and so on outward, at most follow_tumour
  // slices beyond the routes the decision network (and the skip margin) chose. A slice reached
  // this way counts only its tumour voxels that lie on tumour of the slice it was reached from
  // (the tumour continues in 3D). Unlike the skip margin it grows only where a model found
  // tumour: a decision-network false positive on a tumour-free slice gets no neighbours, while
  // a tumour's thin first and last slices, the skip decision's usual misses, are reached from
  // the slices beside them (docs/routing.md).
  int follow_tumour = 0;
  // kDynamic with follow_tumour: the tumour voxels a slice's mask must hold to be followed, so
  // that a few stray voxels of a model's noise do not pull in the next slice.
  int follow_min_voxels = kDefaultFollowMinVoxels;
  // Any policy (static ones since session 32): once every slice is segmented, tumour components
  // (face-connected in 3D) of fewer than min_component voxels are set to background
  // (RemoveSmallTumourComponents, segmenter.h). Under an appearance shift a model's false positives
  // are often speckle of a few voxels each (docs/routing.md). The masks then reach
  // SegmentOptions::on_slice only at the end, cleaned. 0: off.
  int min_component = 0;
  // Any policy: once every slice is segmented (and small components cleared), when the whole
  // volume holds fewer than min_enhancing enhancing-tumour voxels (label 4) they are relabelled
  // as necrotic/non-enhancing core (label 1): RelabelSmallEnhancing, segmenter.h. The tumour core
  // is unchanged; only the enhancing/non-enhancing split moves. nnU-Net's BraTS post-processing:
  // a model's few enhancing voxels in a tumour without enhancement cost that case's whole
  // enhancing-tumour score (docs/routing.md). The masks then reach SegmentOptions::on_slice only
  // at the end. 0: off.
  int min_enhancing = 0;
  // kDynamic only: a preference among the bank models, added to log p_i when a slice that is not
  // skipped picks its model (argmax over the models of log p_i - cost bias term + preference_i).
  // Indexed by bank model; empty: none. The skip decision never changes. A decision network
  // trained against an earlier bank keeps that bank's ranking of the models; a preference
  // re-ranks them for the bank it now serves without retraining (docs/routing.md).
  std::vector<double> model_preference;
  // kDynamic only: the decision network sees the mean of this many consecutive slices centred on
  // each slice (odd, 1..kMaxDecisionSlices; those beyond the volume's ends left out of the mean)
  // instead of the slice alone. A lesion spanning several slices keeps its contrast in the mean
  // while independent voxel noise falls; the bank still segments each slice as it is. danet-train
  // --thick_slices trains the network on similar means, of 2-5 slices at a random offset
  // (docs/routing.md). 1: the slice alone.
  int decision_slices = 1;
  // "dynamic", "dynamic@0.5", "dynamic+m2", "dynamic@0.5+m2", "dynamic+m2r2", "dynamic+m2+s0.9",
  // "dynamic+d1.5", "dynamic+d2+g4", "dynamic+f4", "dynamic+f4v20", "dynamic+f4+c30",
  // "dynamic+f4+c30+e10", "dynamic+pM2:1+f4", "dynamic+f4+z3", "static:<id>"
  std::string Name(const models::Bank& bank) const;
  // The '+p<model id>:<preference>' parts of Name, in bank order ("" without a preference).
  std::string PreferenceName(const models::Bank& bank) const;
};

// Parses "dynamic[@<cost bias>][+m<skip margin>[r<margin min run>]][+s<skip threshold>]
// [+d<skip dip>][+g<fill gaps>][+p<model id>:<preference>]...[+f<follow tumour>[v<follow min
// voxels>]][+c<min component>]
// [+e<min enhancing>][+z<decision slices>]" (the '+' parts in any order, each at most once, '+p'
// once per model) or "static:<model id>"; InvalidArgument names an unknown model and lists the
// known ones. An empty text is the bundle's default_policy ("dynamic" when it has none).
absl::StatusOr<Policy> ParsePolicy(const std::string& text, const models::Bank& bank);

// A request's separate cost bias and skip margin over a parsed policy (0 keeps the policy's
// own). InvalidArgument, its message starting with the field ("cost_bias: ..." or
// "skip_margin: ..."), when the value is out of range or the policy is not dynamic.
absl::Status ApplyPolicyOverrides(double cost_bias, int64_t skip_margin, Policy* policy);

// The route of one slice from the decision network's probabilities under a cost bias
// (Policy::cost_bias); route_gmacs[i] is route i's model cost (route 0, skip, costs 0).
// `preference`, empty or one value per route, is added to each route's log-probability score.
// With neither a bias nor a preference this is argmax p_i (ties to the first).
int BiasedRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                double cost_bias, const std::vector<double>& preference = {});

// The route of one slice under a dynamic policy's cost bias, skip threshold and model preference
// (before the skip margin): BiasedRoute, except that with a skip threshold the slice is skipped
// only when its skip probability reaches it, and that a slice not skipped takes its best model
// under the preference (the preference never decides skip).
int DecideRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                const Policy& policy);

// Applies Policy::skip_dip to the decision network's routes (slices[z].probabilities holds slice
// z's; eligible[z]: slice z holds tissue): the skipped eligible slices whose skip probability
// lies under the dip limit get their best model under the policy's cost bias and preference.
// Unchanged when the policy has no dip or fewer than kSkipDipMinSlices slices are skipped.
std::vector<int> RouteSkipDips(const std::vector<int>& routes,
                               const std::vector<SliceResult>& slices,
                               const std::vector<bool>& eligible,
                               const std::vector<double>& route_gmacs, const Policy& policy);

// Applies Policy::fill_gaps to the routes (slices[z].probabilities holds slice z's; eligible[z]:
// slice z holds tissue): every run of at most policy.fill_gaps skipped slices between two routed
// slices is routed, each eligible slice of it to its best model under the policy's cost bias and
// preference. Unchanged when the policy fills no gaps.
std::vector<int> FillRouteGaps(const std::vector<int>& routes,
                               const std::vector<SliceResult>& slices,
                               const std::vector<bool>& eligible,
                               const std::vector<double>& route_gmacs, const Policy& policy);

// Applies Policy::skip_margin to the decision network's routes (slices[z].probabilities holds
// slice z's): every skipped slice within `margin` slices of a routed one, in a run of at least
// `min_run` consecutive routed slices, gets its best non-skip route under the cost bias and the
// model preference (Policy::model_preference, empty: none). Decided from the original routes,
// so margins do not grow from slices that the margin itself routed.
std::vector<int> WidenRoutes(const std::vector<int>& routes, const std::vector<SliceResult>& slices,
                             const std::vector<double>& route_gmacs, double cost_bias, int margin,
                             int min_run = 1, const std::vector<double>& model_preference = {});

// One step of Policy::follow_tumour: the skipped slices (routes[z] == 0, eligible[z]) next to a
// slice of `grown_from` whose tumour_voxels reach `min_voxels`, each with that slice's route
// (the costlier one when a slice lies between two); returns them as (slice, route) pairs in z
// order. The caller segments them and calls again with them as `grown_from`.
std::vector<std::pair<int64_t, int>> FollowTumour(const std::vector<int>& routes,
                                                  const std::vector<bool>& eligible,
                                                  const std::vector<int64_t>& grown_from,
                                                  const std::vector<int64_t>& tumour_voxels,
                                                  const std::vector<double>& route_gmacs,
                                                  int min_voxels);

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_ROUTER_H_
