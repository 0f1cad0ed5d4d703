// Segmenting one volume with a bank: the decision network routes every axial slice to skip or
// to one bank model; each model then runs over the slices routed to it. This is the engine's
// core; the gRPC service (later) and the evaluation and training tools call it.
//
// Work is reordered for speed (the decision network runs over the whole volume in batches,
// then slices are grouped by route) but the result is the same as routing slice by slice:
// tests/models/engine/segmenter_test.cc checks that.
//
// Thread safety: SegmentVolume only reads the bank; several threads may segment at once.
#ifndef DANET_MODELS_ENGINE_SEGMENTER_H_
#define DANET_MODELS_ENGINE_SEGMENTER_H_

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/bank/bank.h"
#include "models/volume/brats.h"

namespace danet::engine {

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
  // "dynamic", "dynamic@0.5", "dynamic+m2", "dynamic@0.5+m2", "static:<id>"
  std::string Name(const models::Bank& bank) const;
};

inline constexpr int kMaxSkipMargin = 32;

// Parses "dynamic[@<cost bias>][+m<skip margin>]" or "static:<model id>"; InvalidArgument
// names an unknown model and lists the known ones. An empty text is the bundle's
// default_policy ("dynamic" when it has none).
absl::StatusOr<Policy> ParsePolicy(const std::string& text, const models::Bank& bank);

struct SliceResult {
  int index = 0;                     // axial slice (k)
  int route = 0;                     // 0 skip, i = bank model i-1
  std::vector<float> probabilities;  // decision network softmax (empty for static policies)
  double gmacs = 0;                  // decision network + the model that ran
  double seconds = 0;                // model time for this slice (decision time is shared)
};

struct VolumeResult {
  std::vector<uint8_t> labels;  // BraTS labels in volume order (i fastest)
  std::vector<SliceResult> slices;
  double gmacs = 0;
  double decide_seconds = 0;
  double segment_seconds = 0;
};

struct SegmentOptions {
  int decision_batch = 16;  // slices per decision-network forward pass
  int model_batch = 1;      // slices per bank-model pass (1 was fastest on CPU; see docs)
  // Called as each slice's result is complete (routes first known, then masks), in
  // completion order, with that slice's labels (dims[0] x dims[1], x fastest; all zero for
  // skipped slices), valid during the call only; may be empty.
  std::function<void(const SliceResult&, const uint8_t* labels)> on_slice;
  // Polled between slices; when it returns true the work stops with CancelledError (the
  // caller's deadline or cancellation). May be empty.
  std::function<bool()> cancelled;
};

// The route of one slice from the decision network's probabilities under a cost bias
// (Policy::cost_bias); route_gmacs[i] is route i's model cost (route 0, skip, costs 0).
int BiasedRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                double cost_bias);

// Applies Policy::skip_margin to the decision network's routes (slices[z].probabilities holds
// slice z's): every skipped slice within `margin` slices of a routed one gets its best
// non-skip route under the cost bias. Decided from the original routes, so margins do not
// grow from slices that the margin itself routed.
std::vector<int> WidenRoutes(const std::vector<int>& routes,
                             const std::vector<SliceResult>& slices,
                             const std::vector<double>& route_gmacs, double cost_bias,
                             int margin);

// The volume's axial slices as one Z x 4 x Y x X float tensor (a copy), the networks' input.
at::Tensor SliceStack(const volume::MultiModalVolume& volume);

// Segments a z-scored volume (volume::NormalizeZScoreBrain). The slice size must suit the bank
// (multiples of 16). Errors from LibTorch come back as InvalidArgument/Internal.
absl::StatusOr<VolumeResult> SegmentVolume(const models::Bank& bank,
                                           const volume::MultiModalVolume& normalized,
                                           const Policy& policy,
                                           const SegmentOptions& options = {});

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_SEGMENTER_H_
