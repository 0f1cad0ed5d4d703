#include "models/engine/segmenter.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "models/bank/device.h"
#include "models/engine/preprocess.h"

namespace danet::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The voxels that are tumour (non-zero) in both of two slices' labels.
int64_t SharedTumourVoxels(const uint8_t* a, const uint8_t* b, int64_t voxels) {
  int64_t shared = 0;
  for (int64_t v = 0; v < voxels; ++v) shared += a[v] != 0 && b[v] != 0;
  return shared;
}

}  // namespace

at::Tensor SliceStack(const volume::MultiModalVolume& v) {
  const auto& d = v.geometry.dims;
  const int64_t channels = static_cast<int64_t>(v.channels.size());
  const int64_t height = PaddedSliceExtent(d[1]), width = PaddedSliceExtent(d[0]);
  // One allocation, written once (fresh pages are costly to touch; device.h TuneHostMemory):
  // each modality is copied into its place, and only a padded stack is zeroed first.
  torch::Tensor stack = torch::empty({d[2], channels, height, width}, torch::kFloat32);
  if (height != d[1] || width != d[0]) stack.zero_();
  for (int64_t c = 0; c < channels; ++c) {
    const float* data = v.channels[c].data();
    stack.select(1, c)
        .narrow(1, 0, d[1])
        .narrow(2, 0, d[0])
        .copy_(torch::from_blob(const_cast<float*>(data), {d[2], d[1], d[0]}, torch::kFloat32));
  }
  return stack;
}

SliceBox BrainBox(const at::Tensor& slices) { return PlaneBox(ScanTissue(slices).plane); }

TissueScan ScanTissue(const at::Tensor& slices) {
  const torch::Tensor stack = slices.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t depth = stack.size(0), channels = stack.size(1);
  const int64_t pixels = stack.size(2) * stack.size(3);
  TissueScan scan;
  scan.has_tissue.assign(depth, false);
  std::vector<uint8_t> plane(pixels, 0);
  const float* voxels = stack.data_ptr<float>();
  for (int64_t z = 0; z < depth; ++z) {
    uint8_t any = 0;
    for (int64_t c = 0; c < channels; ++c) {
      const float* image = voxels + (z * channels + c) * pixels;
      for (int64_t i = 0; i < pixels; ++i) {  // branch-free, so that it vectorises
        const uint8_t nonzero = image[i] != 0.0f;
        plane[i] |= nonzero;
        any |= nonzero;
      }
    }
    scan.has_tissue[z] = any != 0;
  }
  scan.plane = torch::from_blob(plane.data(), {stack.size(2), stack.size(3)}, torch::kUInt8)
                   .to(torch::kBool);
  return scan;
}

SliceBox PlaneBox(const at::Tensor& plane, int64_t multiple) {
  const int64_t height = plane.size(0), width = plane.size(1);
  const torch::Tensor rows = torch::nonzero(plane.any(1)), cols = torch::nonzero(plane.any(0));
  if (rows.numel() == 0) return {0, height, 0, width};
  auto down = [multiple](int64_t v) { return v / multiple * multiple; };
  auto up = [multiple](int64_t v) { return (v + multiple - 1) / multiple * multiple; };
  return {down(rows.min().item<int64_t>()), std::min(height, up(rows.max().item<int64_t>() + 1)),
          down(cols.min().item<int64_t>()), std::min(width, up(cols.max().item<int64_t>() + 1))};
}

at::Tensor CropToBox(const at::Tensor& tensor, const SliceBox& box) {
  if (!tensor.defined()) return tensor;
  return tensor.slice(2, box.top, box.bottom).slice(3, box.left, box.right);
}

int64_t RemoveSmallTumourComponents(uint8_t* labels, int64_t width, int64_t height, int64_t depth,
                                    int64_t min_voxels) {
  constexpr uint8_t kSeen = 0x80;
  const int64_t plane = width * height, total = plane * depth;
  int64_t removed = 0;
  std::vector<int64_t> component, pending;
  for (int64_t start = 0; start < total; ++start) {
    if (labels[start] == 0 || (labels[start] & kSeen) != 0) continue;
    component.clear();
    pending.assign(1, start);
    labels[start] |= kSeen;
    auto visit = [&](int64_t n) {
      if (labels[n] != 0 && (labels[n] & kSeen) == 0) {
        labels[n] |= kSeen;
        pending.push_back(n);
      }
    };
    while (!pending.empty()) {
      const int64_t v = pending.back();
      pending.pop_back();
      component.push_back(v);
      const int64_t x = v % width, y = (v / width) % height, z = v / plane;
      if (x > 0) visit(v - 1);
      if (x + 1 < width) visit(v + 1);
      if (y > 0) visit(v - width);
      if (y + 1 < height) visit(v + width);
      if (z > 0) visit(v - plane);
      if (z + 1 < depth) visit(v + plane);
    }
    if (static_cast<int64_t>(component.size()) < min_voxels) {
      for (const int64_t v : component) labels[v] = 0;
      removed += static_cast<int64_t>(component.size());
    }
  }
  for (int64_t v = 0; v < total; ++v) labels[v] &= static_cast<uint8_t>(~kSeen);
  return removed;
}

int64_t RelabelSmallEnhancing(uint8_t* labels, int64_t voxels, int64_t min_voxels) {
  const int64_t enhancing = std::count(labels, labels + voxels, uint8_t{4});
  if (enhancing == 0 || enhancing >= min_voxels) return 0;
  std::replace(labels, labels + voxels, uint8_t{4}, uint8_t{1});
  return enhancing;
}

namespace {

using OnSlice = std::function<void(const SliceResult&, const uint8_t*)>;

// CancelledError when the caller's options.cancelled says so (polled between batches).
absl::Status CheckCancelled(const SegmentOptions& options) {
  if (options.cancelled && options.cancelled()) {
    return absl::CancelledError("segmentation cancelled");
  }
  return absl::OkStatus();
}

// The decision network's softmax for the slices `looked_at` of `slices`, in batches of
// options.decision_batch, on the brain's box (on the network's stride grid) or the whole slice
// as the options and the bundle say, each slice alone or averaged with its neighbours
// (Policy::decision_slices): each slice's probabilities into `out`.
absl::Status RunDecisionNetwork(const models::Bank& bank, const torch::Tensor& slices,
                                const TissueScan& tissue, const std::vector<int64_t>& looked_at,
                                int decision_slices, const SegmentOptions& options,
                                std::vector<SliceResult>* out) {
  const SliceBox box = options.crop_decision.value_or(bank.config().decision().crop_to_brain())
                           ? PlaneBox(tissue.plane, kDecisionStride)
                           : SliceBox{0, slices.size(2), 0, slices.size(3)};
  const torch::Tensor input = CropToBox(slices, box);
  const int64_t looked = static_cast<int64_t>(looked_at.size());
  for (int64_t begin = 0; begin < looked; begin += options.decision_batch) {
    if (absl::Status status = CheckCancelled(options); !status.ok()) return status;
    const int64_t end = std::min<int64_t>(looked, begin + options.decision_batch);
    torch::Tensor batch;
    if (decision_slices == 1) {
      batch = input.index_select(
          0, torch::tensor(std::vector<int64_t>(looked_at.begin() + begin, looked_at.begin() + end),
                           torch::kLong));
    } else {
      const int64_t reach = decision_slices / 2, depth = input.size(0);
      std::vector<torch::Tensor> means;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t first = std::max<int64_t>(0, looked_at[i] - reach);
        const int64_t last = std::min<int64_t>(depth - 1, looked_at[i] + reach);
        means.push_back(input.narrow(0, first, last - first + 1).mean(0));
      }
      batch = torch::stack(means);
    }
    const torch::Tensor probs =
        torch::softmax(
            bank.decision().Forward(batch.to(bank.device()).contiguous(bank.memory_format())), 1)
            .to(torch::kCPU);
    for (int64_t i = begin; i < end; ++i) {
      const float* p = probs[i - begin].data_ptr<float>();
      (*out)[looked_at[i]].probabilities.assign(p, p + probs.size(1));
    }
  }
  return absl::OkStatus();
}

// Stage 1: every slice's route, and under a dynamic policy its decision-network probabilities in
// `out` (taken from options.resume when it is set). A slice without one non-zero voxel holds no
// tissue, hence no tumour: it is skipped without the decision network (skip probability 1) and
// never widened into.
absl::StatusOr<std::vector<int>> DecideRoutes(const models::Bank& bank, const torch::Tensor& slices,
                                              const TissueScan& tissue, const Policy& policy,
                                              const SegmentOptions& options,
                                              const std::vector<double>& route_gmacs,
                                              std::vector<SliceResult>* out) {
  const int64_t depth = slices.size(0);
  if (policy.kind == Policy::Kind::kStatic) {
    return std::vector<int>(depth, policy.static_model + 1);
  }
  const std::vector<bool>& has_tissue = tissue.has_tissue;
  std::vector<int64_t> looked_at;
  for (int64_t z = 0; z < depth; ++z) {
    if (has_tissue[z]) {
      looked_at.push_back(z);
    } else {
      (*out)[z].probabilities.assign(route_gmacs.size(), 0.0f);
      (*out)[z].probabilities[0] = 1.0f;
    }
  }
  if (const VolumeResult* taken = options.resume != nullptr ? options.resume : options.decisions;
      taken == nullptr) {
    if (absl::Status s = RunDecisionNetwork(bank, slices, tissue, looked_at, policy.decision_slices,
                                            options, out);
        !s.ok()) {
      return s;
    }
  } else {
    for (const int64_t z : looked_at) {
      (*out)[z].probabilities = taken->slices[z].probabilities;
      if ((*out)[z].probabilities.size() != route_gmacs.size()) {
        return absl::InvalidArgumentError(
            "SegmentVolume: the probe to take decisions from was static");
      }
    }
  }
  std::vector<int> routes(depth, 0);
  for (const int64_t z : looked_at) {
    routes[z] = DecideRoute((*out)[z].probabilities.data(), route_gmacs, policy);
  }
  if (policy.skip_dip > 0) routes = RouteSkipDips(routes, *out, has_tissue, route_gmacs, policy);
  if (policy.fill_gaps > 0) routes = FillRouteGaps(routes, *out, has_tissue, route_gmacs, policy);
  if (policy.skip_margin > 0) {
    routes = WidenRoutes(routes, *out, route_gmacs, policy.cost_bias, policy.skip_margin,
                         policy.margin_min_run, policy.model_preference);
    for (int64_t z = 0; z < depth; ++z) {
      if (!has_tissue[z]) routes[z] = 0;
    }
  }
  return routes;
}

// Stage 2: routed slices through their models, on the brain's box where a model allows, or
// taken from the probe being resumed where it segmented them; labels, routes, GMACs and seconds
// into the result, and each slice's tumour voxel count (FollowTumour's input).
class RouteRunner {
 public:
  // `report` is called for each slice as it is done (may be empty).
  RouteRunner(const models::Bank& bank, const torch::Tensor& slices, const TissueScan& tissue,
              const std::array<int64_t, 3>& dims, const SegmentOptions& options, OnSlice report,
              VolumeResult* result)
      : bank_(bank),
        slices_(slices),
        dims_(dims),
        options_(options),
        report_(std::move(report)),
        result_(*result),
        box_(options.crop_to_brain ? PlaneBox(tissue.plane)
                                   : SliceBox{0, slices.size(2), 0, slices.size(3)}),
        cropped_(CropToBox(slices, box_)),  // a view: index_select copies each batch only
        window_{slices.size(2), slices.size(3), box_.top, box_.left},
        tumour_voxels_(dims[2], 0) {}

  // Runs the (slice, route) pairs route by route; `done` gets the slices in that order.
  absl::Status RunAll(const std::vector<std::pair<int64_t, int>>& routed,
                      std::vector<int64_t>* done) {
    done->clear();
    for (int route = 1; route <= bank_.size(); ++route) {
      std::vector<int64_t> members;
      for (const auto& [z, r] : routed) {
        if (r == route) members.push_back(z);
      }
      if (absl::Status status = Run(route, members); !status.ok()) return status;
      done->insert(done->end(), members.begin(), members.end());
    }
    return absl::OkStatus();
  }

  std::vector<int64_t>& tumour_voxels() { return tumour_voxels_; }

 private:
  int64_t SliceVoxels() const { return dims_[0] * dims_[1]; }

  // `members` (slice indices, all routed to `route`) through the route's model, or taken.
  absl::Status Run(int route, const std::vector<int64_t>& members) {
    const VolumeResult* resume = options_.resume;
    std::vector<int64_t> to_run;
    for (const int64_t z : members) {
      if (resume != nullptr && resume->slices[z].route == route) {
        Take(z, route);
      } else {
        to_run.push_back(z);
      }
    }
    models::Network& model = bank_.model(route - 1);
    const bool windowed = model.SupportsWindow();
    const torch::Tensor& input = windowed ? cropped_ : slices_;
    // The output's rows and columns that hold the volume's slice, and where they go.
    const int64_t top = windowed ? box_.top : 0, left = windowed ? box_.left : 0;
    const int64_t rows = std::min(dims_[1], top + input.size(2)) - top;
    const int64_t cols = std::min(dims_[0], left + input.size(3)) - left;
    if (!members.empty() && windowed) {
      result_.window_fraction = static_cast<double>(input.size(2) * input.size(3)) /
                                static_cast<double>(slices_.size(2) * slices_.size(3));
    }
    for (size_t begin = 0; begin < to_run.size(); begin += options_.model_batch) {
      if (absl::Status status = CheckCancelled(options_); !status.ok()) return status;
      const size_t end = std::min(to_run.size(), begin + options_.model_batch);
      const torch::Tensor index = torch::tensor(
          std::vector<int64_t>(to_run.begin() + begin, to_run.begin() + end), torch::kLong);
      const auto start = Clock::now();
      const torch::Tensor batch =
          input.index_select(0, index).to(bank_.device()).contiguous(bank_.memory_format());
      const torch::Tensor classes =
          (windowed ? model.ForwardWindow(batch, window_) : model.Forward(batch))
              .argmax(1)
              .slice(1, 0, rows)  // the padding off
              .slice(2, 0, cols)
              .to(torch::kCPU, torch::kUInt8)
              .contiguous();
      const double seconds = Since(start) / static_cast<double>(end - begin);
      for (size_t m = begin; m < end; ++m) {
        const int64_t z = to_run[m];
        const uint8_t* src = classes[m - begin].data_ptr<uint8_t>();
        uint8_t* dst = result_.labels.data() + z * SliceVoxels();
        for (int64_t y = 0; y < rows; ++y) {
          uint8_t* row = dst + (top + y) * dims_[0] + left;
          for (int64_t x = 0; x < cols; ++x) {
            row[x] = volume::ClassToLabel(src[y * cols + x]);
            tumour_voxels_[z] += row[x] != 0;
          }
        }
        Done(z, route, seconds);
      }
    }
    return absl::OkStatus();
  }

  // Slice z's mask taken from the probe being resumed.
  void Take(int64_t z, int route) {
    const uint8_t* src = options_.resume->labels.data() + z * SliceVoxels();
    std::copy(src, src + SliceVoxels(), result_.labels.data() + z * SliceVoxels());
    tumour_voxels_[z] = SliceVoxels() - std::count(src, src + SliceVoxels(), uint8_t{0});
    Done(z, route, options_.resume->slices[z].seconds);
  }

  void Done(int64_t z, int route, double seconds) {
    SliceResult& s = result_.slices[z];
    s.route = route;
    s.gmacs += bank_.model_config(route - 1).gmacs_per_slice();
    s.seconds = seconds;
    if (report_) report_(s, result_.labels.data() + z * SliceVoxels());
  }

  const models::Bank& bank_;
  const torch::Tensor& slices_;
  const std::array<int64_t, 3> dims_;
  const SegmentOptions& options_;
  const OnSlice report_;
  VolumeResult& result_;
  const SliceBox box_;
  const torch::Tensor cropped_;
  const models::SliceWindow window_;
  std::vector<int64_t> tumour_voxels_;
};

// Stage 3: up to policy.follow_tumour steps outward from the slices where a model found tumour
// (FollowTumour), each step's slices through `runner`; `routes` updated.
absl::Status FollowTheTumour(const Policy& policy, const std::vector<bool>& has_tissue,
                             const std::vector<double>& route_gmacs, int64_t slice_voxels,
                             std::vector<int64_t> segmented, std::vector<int>* routes,
                             RouteRunner* runner, VolumeResult* result) {
  std::vector<int64_t>& tumour_voxels = runner->tumour_voxels();
  const int64_t depth = static_cast<int64_t>(routes->size());
  for (int step = 0; step < policy.follow_tumour && !segmented.empty(); ++step) {
    const std::vector<std::pair<int64_t, int>> routed = FollowTumour(
        *routes, has_tissue, segmented, tumour_voxels, route_gmacs, policy.follow_min_voxels);
    const std::vector<int> before = *routes;
    for (const auto& [z, route] : routed) (*routes)[z] = route;
    if (absl::Status status = runner->RunAll(routed, &segmented); !status.ok()) return status;
    // A followed slice is followed further only as far as its tumour continues the tumour it
    // was reached from (3D connectivity): a model's false positives elsewhere in the slice do
    // not pull in the next one.
    for (const auto& [z, route] : routed) {
      tumour_voxels[z] = 0;
      for (const int64_t n : {z - 1, z + 1}) {
        if (n < 0 || n >= depth || before[n] == 0 || tumour_voxels[n] < policy.follow_min_voxels) {
          continue;
        }
        tumour_voxels[z] =
            std::max(tumour_voxels[z],
                     SharedTumourVoxels(result->labels.data() + z * slice_voxels,
                                        result->labels.data() + n * slice_voxels, slice_voxels));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VolumeResult> SegmentVolume(const models::Bank& bank,
                                           const volume::MultiModalVolume& normalized,
                                           const Policy& policy, const SegmentOptions& options) {
  const auto& dims = normalized.geometry.dims;
  const int64_t depth = dims[2], slice_voxels = dims[0] * dims[1];
  VolumeResult result;
  result.labels.assign(normalized.channels[0].size(), 0);
  result.slices.resize(depth);
  const VolumeResult* resume = options.resume;
  if (options.probe_stride < 1 ||
      (resume != nullptr && (static_cast<int64_t>(resume->slices.size()) != depth ||
                             resume->labels.size() != result.labels.size())) ||
      (options.decisions != nullptr &&
       static_cast<int64_t>(options.decisions->slices.size()) != depth)) {
    return absl::InvalidArgumentError(
        "SegmentVolume: probe_stride under 1, or a probe of another volume to resume or to take "
        "decisions from");
  }
  if (options.probe_route < 0 || options.probe_route > bank.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SegmentVolume: probe_route ", options.probe_route, " is not a bank route"));
  }
  const bool probe = options.probe_stride > 1;  // a sample of the routed slices only
  const OnSlice on_slice = probe ? nullptr : options.on_slice;
  const bool follow = !probe && policy.kind == Policy::Kind::kDynamic && policy.follow_tumour > 0;
  // Cleaning small components or enhancing tumour needs the whole volume: every mask is
  // reported at the end.
  const bool clean = !probe && (policy.min_component > 0 || policy.min_enhancing > 0);
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor slices = SliceStack(normalized);
    std::vector<double> route_gmacs = {0.0};
    for (int i = 0; i < bank.size(); ++i) {
      route_gmacs.push_back(bank.model_config(i).gmacs_per_slice());
    }

    // 1. Routes. One pass over the voxels serves the tissue check and the brain's box.
    const auto decide_start = Clock::now();
    const TissueScan tissue = ScanTissue(slices);
    absl::StatusOr<std::vector<int>> routes =
        DecideRoutes(bank, slices, tissue, policy, options, route_gmacs, &result.slices);
    if (!routes.ok()) return routes.status();
    result.decide_seconds = Since(decide_start);

    // 2. Each route's slices through its model.
    const auto segment_start = Clock::now();
    RouteRunner runner(bank, slices, tissue, dims, options, clean ? nullptr : on_slice, &result);
    std::vector<std::pair<int64_t, int>> routed;
    const int64_t routed_slices =
        std::count_if(routes->begin(), routes->end(), [](int r) { return r != 0; });
    const bool probe_route =
        probe && options.probe_route > 0 && routed_slices >= options.probe_route_min_slices;
    for (int64_t z = 0; z < depth; ++z) {
      result.slices[z].index = static_cast<int>(z);
      // The decision network's share, unless a probe's decisions were taken (it paid for them).
      result.slices[z].gmacs = policy.kind == Policy::Kind::kDynamic &&
                                       (resume != nullptr || options.decisions == nullptr)
                                   ? bank.config().decision().gmacs_per_slice()
                                   : 0.0;
      // Skipped slices are final now, unless following the tumour may still route them.
      if ((*routes)[z] == 0 && on_slice && !follow && !clean) {
        on_slice(result.slices[z], result.labels.data() + z * slice_voxels);
      }
      if ((*routes)[z] != 0 && z % options.probe_stride == 0) {
        routed.emplace_back(z, probe_route ? options.probe_route : (*routes)[z]);
      }
    }
    std::vector<int64_t> segmented;
    if (absl::Status status = runner.RunAll(routed, &segmented); !status.ok()) return status;

    // 3. Following the tumour outward from the slices where a model found it.
    if (follow) {
      if (absl::Status status =
              FollowTheTumour(policy, tissue.has_tissue, route_gmacs, slice_voxels,
                              std::move(segmented), &*routes, &runner, &result);
          !status.ok()) {
        return status;
      }
    }
    if (clean && policy.min_component > 0) {
      RemoveSmallTumourComponents(result.labels.data(), dims[0], dims[1], depth,
                                  policy.min_component);
    }
    if (clean && policy.min_enhancing > 0) {
      RelabelSmallEnhancing(result.labels.data(), static_cast<int64_t>(result.labels.size()),
                            policy.min_enhancing);
    }
    if ((follow || clean) && on_slice) {
      for (int64_t z = 0; z < depth; ++z) {
        if ((*routes)[z] == 0 || clean) {
          on_slice(result.slices[z], result.labels.data() + z * slice_voxels);
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
