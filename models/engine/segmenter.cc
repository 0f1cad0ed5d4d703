#include "models/engine/segmenter.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/bank/device.h"

namespace danet::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

at::Tensor SliceStack(const volume::MultiModalVolume& v) {
  const auto& d = v.geometry.dims;
  std::vector<torch::Tensor> channels;
  for (const auto& channel : v.channels) {
    channels.push_back(
        torch::from_blob(const_cast<float*>(channel.data()), {d[2], d[1], d[0]}, torch::kFloat32));
  }
  return torch::stack(channels, 1).contiguous();
}

std::string Policy::Name(const models::Bank& bank) const {
  if (kind == Kind::kDynamic) {
    return absl::StrCat("dynamic", cost_bias == 0 ? "" : absl::StrCat("@", cost_bias),
                        skip_margin == 0 ? "" : absl::StrCat("+m", skip_margin));
  }
  return absl::StrCat("static:", bank.model_config(static_model).id());
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
  if (text.rfind("dynamic", 0) == 0 &&
      (text.size() == 7 || text[7] == '@' || text.compare(7, 2, "+m") == 0)) {
    Policy policy;
    std::string rest = text.substr(7);
    if (const size_t plus = rest.find("+m"); plus != std::string::npos) {
      if (!absl::SimpleAtoi(rest.substr(plus + 2), &policy.skip_margin) ||
          policy.skip_margin < 0 || policy.skip_margin > kMaxSkipMargin) {
        return absl::InvalidArgumentError(absl::StrCat(
            "policy '", text, "': the skip margin after '+m' is not a whole number in 0..",
            kMaxSkipMargin));
      }
      rest.resize(plus);
    }
    if (!rest.empty() && (!absl::SimpleAtod(rest.substr(1), &policy.cost_bias) ||
                          !std::isfinite(policy.cost_bias))) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy '", text, "': the cost bias after '@' is not a number"));
    }
    return policy;
  }
  if (text.rfind("static:", 0) == 0) {
    const std::string id = text.substr(7);
    if (std::optional<int> index = bank.FindModel(id)) {
      return Policy{Policy::Kind::kStatic, *index};
    }
    std::vector<std::string> ids;
    for (int i = 0; i < bank.size(); ++i) ids.push_back(bank.model_config(i).id());
    return absl::InvalidArgumentError(absl::StrCat("policy '", text, "': no bank model '", id,
                                                   "' (the bank has ", absl::StrJoin(ids, ", "),
                                                   ")"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("policy '", text, "' is not 'dynamic', 'dynamic@<bias>' or 'static:<model id>'"));
}

int BiasedRoute(const float* probabilities, const std::vector<double>& route_gmacs,
                double cost_bias) {
  int best = 0;
  double best_score = -std::numeric_limits<double>::infinity();
  const double largest = *std::max_element(route_gmacs.begin(), route_gmacs.end());
  for (size_t i = 0; i < route_gmacs.size(); ++i) {
    // With no bias this is argmax p_i (ties to the first), exactly the unbiased route.
    const double score = cost_bias == 0 ? probabilities[i]
                                        : std::log(std::max(probabilities[i], 1e-30f)) -
                                              cost_bias * route_gmacs[i] / largest;
    if (score > best_score) {
      best_score = score;
      best = static_cast<int>(i);
    }
  }
  return best;
}

std::vector<int> WidenRoutes(const std::vector<int>& routes,
                             const std::vector<SliceResult>& slices,
                             const std::vector<double>& route_gmacs, double cost_bias,
                             int margin) {
  std::vector<int> widened = routes;
  const int64_t depth = static_cast<int64_t>(routes.size());
  const std::vector<double> model_gmacs(route_gmacs.begin() + 1, route_gmacs.end());
  for (int64_t z = 0; z < depth; ++z) {
    if (routes[z] != 0) continue;
    bool near_routed = false;
    for (int64_t n = std::max<int64_t>(0, z - margin);
         n <= std::min<int64_t>(depth - 1, z + margin) && !near_routed; ++n) {
      near_routed = routes[n] != 0;
    }
    if (near_routed) {
      widened[z] = 1 + BiasedRoute(slices[z].probabilities.data() + 1, model_gmacs, cost_bias);
    }
  }
  return widened;
}

absl::StatusOr<VolumeResult> SegmentVolume(const models::Bank& bank,
                                           const volume::MultiModalVolume& normalized,
                                           const Policy& policy, const SegmentOptions& options) {
  const auto& dims = normalized.geometry.dims;
  const int64_t depth = dims[2], slice_voxels = dims[0] * dims[1];
  if (dims[0] % 16 != 0 || dims[1] % 16 != 0) {
    // The UNets halve the slice four times; anything else is the caller's input, not a fault.
    return absl::InvalidArgumentError(absl::StrCat("slice size ", dims[0], "x", dims[1],
                                                   ": the bank needs multiples of 16"));
  }
  VolumeResult result;
  result.labels.assign(normalized.channels[0].size(), 0);
  result.slices.resize(depth);
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor slices = SliceStack(normalized);
    const double decision_gmacs = bank.config().decision().gmacs_per_slice();
    std::vector<double> route_gmacs = {0.0};
    for (int i = 0; i < bank.size(); ++i) {
      route_gmacs.push_back(bank.model_config(i).gmacs_per_slice());
    }
    auto stop = [&] { return options.cancelled && options.cancelled(); };

    // 1. Routes.
    const auto decide_start = Clock::now();
    std::vector<int> routes(depth, 0);
    if (policy.kind == Policy::Kind::kStatic) {
      std::fill(routes.begin(), routes.end(), policy.static_model + 1);
    } else {
      for (int64_t begin = 0; begin < depth; begin += options.decision_batch) {
        if (stop()) return absl::CancelledError("segmentation cancelled");
        const int64_t end = std::min<int64_t>(depth, begin + options.decision_batch);
        const torch::Tensor probs =
            torch::softmax(bank.decision().Forward(slices.slice(0, begin, end).to(bank.device())),
                           1)
                .to(torch::kCPU);
        for (int64_t z = begin; z < end; ++z) {
          const torch::Tensor p = probs[z - begin];
          result.slices[z].probabilities.assign(p.data_ptr<float>(),
                                                p.data_ptr<float>() + p.numel());
          routes[z] = BiasedRoute(p.data_ptr<float>(), route_gmacs, policy.cost_bias);
        }
      }
      if (policy.skip_margin > 0) {
        routes = WidenRoutes(routes, result.slices, route_gmacs, policy.cost_bias,
                             policy.skip_margin);
      }
    }
    result.decide_seconds = Since(decide_start);

    // 2. Each route's slices through its model.
    const auto segment_start = Clock::now();
    for (int64_t z = 0; z < depth; ++z) {
      result.slices[z].index = static_cast<int>(z);
      result.slices[z].route = routes[z];
      result.slices[z].gmacs = policy.kind == Policy::Kind::kDynamic ? decision_gmacs : 0.0;
      if (routes[z] == 0 && options.on_slice) {
        options.on_slice(result.slices[z], result.labels.data() + z * slice_voxels);
      }
    }
    for (int route = 1; route <= bank.size(); ++route) {
      std::vector<int64_t> members;
      for (int64_t z = 0; z < depth; ++z) {
        if (routes[z] == route) members.push_back(z);
      }
      models::Network& model = bank.model(route - 1);
      const double model_gmacs = bank.model_config(route - 1).gmacs_per_slice();
      for (size_t begin = 0; begin < members.size(); begin += options.model_batch) {
        if (stop()) return absl::CancelledError("segmentation cancelled");
        const size_t end = std::min(members.size(), begin + options.model_batch);
        const torch::Tensor index = torch::tensor(
            std::vector<int64_t>(members.begin() + begin, members.begin() + end), torch::kLong);
        const auto start = Clock::now();
        const torch::Tensor classes = model.Forward(slices.index_select(0, index).to(bank.device()))
                                          .argmax(1)
                                          .to(torch::kCPU, torch::kUInt8);
        const double seconds = Since(start) / static_cast<double>(end - begin);
        for (size_t m = begin; m < end; ++m) {
          const int64_t z = members[m];
          const uint8_t* src = classes[m - begin].data_ptr<uint8_t>();
          uint8_t* dst = result.labels.data() + z * slice_voxels;
          for (int64_t v = 0; v < slice_voxels; ++v) dst[v] = volume::ClassToLabel(src[v]);
          result.slices[z].gmacs += model_gmacs;
          result.slices[z].seconds = seconds;
          if (options.on_slice) options.on_slice(result.slices[z], dst);
        }
      }
    }
    result.segment_seconds = Since(segment_start);
  } catch (const c10::Error& e) {
    return models::TorchErrorStatus(e, "segmentation failed");
  }
  for (const SliceResult& s : result.slices) result.gmacs += s.gmacs;
  return result;
}

}  // namespace danet::engine
