#include "models/engine/segmenter.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

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

absl::StatusOr<VolumeResult> SegmentVolume(const models::Bank& bank,
                                           const volume::MultiModalVolume& normalized,
                                           const Policy& policy, const SegmentOptions& options) {
  const auto& dims = normalized.geometry.dims;
  const int64_t depth = dims[2], slice_voxels = dims[0] * dims[1];
  VolumeResult result;
  result.labels.assign(normalized.channels[0].size(), 0);
  result.slices.resize(depth);
  const VolumeResult* resume = options.resume;
  const bool probe = options.probe_stride > 1;  // segments a sample of the routed slices only
  const std::function<void(const SliceResult&, const uint8_t*)> on_slice =
      probe ? nullptr : options.on_slice;
  if (options.probe_stride < 1 ||
      (resume != nullptr && (static_cast<int64_t>(resume->slices.size()) != depth ||
                             resume->labels.size() != result.labels.size()))) {
    return absl::InvalidArgumentError(
        "SegmentVolume: probe_stride under 1, or a probe of another volume to resume");
  }
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor slices = SliceStack(normalized);
    const double decision_gmacs = bank.config().decision().gmacs_per_slice();
    std::vector<double> route_gmacs = {0.0};
    for (int i = 0; i < bank.size(); ++i) {
      route_gmacs.push_back(bank.model_config(i).gmacs_per_slice());
    }
    auto stop = [&] { return options.cancelled && options.cancelled(); };

    // 1. Routes. A slice without one non-zero voxel holds no tissue, hence no tumour: it is
    // skipped without the decision network (skip probability 1) and never widened into.
    const auto decide_start = Clock::now();
    std::vector<int> routes(depth, 0);
    // One pass over the voxels serves the tissue check here and the brain's box below.
    const TissueScan tissue = ScanTissue(slices);
    const std::vector<bool>& has_tissue = tissue.has_tissue;
    if (policy.kind == Policy::Kind::kStatic) {
      std::fill(routes.begin(), routes.end(), policy.static_model + 1);
    } else {
      std::vector<int64_t> looked_at;
      for (int64_t z = 0; z < depth; ++z) {
        if (has_tissue[z]) {
          looked_at.push_back(z);
        } else {
          result.slices[z].probabilities.assign(route_gmacs.size(), 0.0f);
          result.slices[z].probabilities[0] = 1.0f;
        }
      }
      const int64_t looked = static_cast<int64_t>(looked_at.size());
      if (resume != nullptr) looked_at.clear();  // the probe's probabilities, below
      for (int64_t z = 0; resume != nullptr && z < depth; ++z) {
        if (!has_tissue[z]) continue;
        result.slices[z].probabilities = resume->slices[z].probabilities;
        if (result.slices[z].probabilities.size() != route_gmacs.size()) {
          return absl::InvalidArgumentError("SegmentVolume: the probe to resume was static");
        }
        routes[z] = DecideRoute(result.slices[z].probabilities.data(), route_gmacs, policy);
      }
      const SliceBox decision_box =
          options.crop_decision.value_or(bank.config().decision().crop_to_brain())
              ? PlaneBox(tissue.plane, kDecisionStride)
              : SliceBox{0, slices.size(2), 0, slices.size(3)};
      const torch::Tensor decision_input = CropToBox(slices, decision_box);
      for (int64_t begin = 0; resume == nullptr && begin < looked;
           begin += options.decision_batch) {
        if (stop()) return absl::CancelledError("segmentation cancelled");
        const int64_t end = std::min<int64_t>(looked, begin + options.decision_batch);
        const torch::Tensor index = torch::tensor(
            std::vector<int64_t>(looked_at.begin() + begin, looked_at.begin() + end), torch::kLong);
        const torch::Tensor probs =
            torch::softmax(bank.decision().Forward(decision_input.index_select(0, index)
                                                       .to(bank.device())
                                                       .contiguous(bank.memory_format())),
                           1)
                .to(torch::kCPU);
        for (int64_t i = begin; i < end; ++i) {
          const torch::Tensor p = probs[i - begin];
          const int64_t z = looked_at[i];
          result.slices[z].probabilities.assign(p.data_ptr<float>(),
                                                p.data_ptr<float>() + p.numel());
          routes[z] = DecideRoute(p.data_ptr<float>(), route_gmacs, policy);
        }
      }
      if (policy.skip_dip > 0) {
        routes = RouteSkipDips(routes, result.slices, has_tissue, route_gmacs, policy);
      }
      if (policy.skip_margin > 0) {
        routes = WidenRoutes(routes, result.slices, route_gmacs, policy.cost_bias,
                             policy.skip_margin, policy.margin_min_run, policy.model_preference);
        for (int64_t z = 0; z < depth; ++z) {
          if (!has_tissue[z]) routes[z] = 0;
        }
      }
    }
    result.decide_seconds = Since(decide_start);

    // 2. Each route's slices through its model, on the brain's box where the model allows.
    const auto segment_start = Clock::now();
    const int64_t padded_height = slices.size(2), padded_width = slices.size(3);
    const SliceBox box = options.crop_to_brain ? PlaneBox(tissue.plane)
                                               : SliceBox{0, padded_height, 0, padded_width};
    // A view: index_select below copies only each batch's slices.
    const torch::Tensor cropped = CropToBox(slices, box);
    const models::SliceWindow window{padded_height, padded_width, box.top, box.left};
    std::vector<int64_t> tumour_voxels(depth, 0);
    // Cleaning small components or enhancing tumour needs the whole volume: every mask is
    // reported at the end.
    const bool clean = !probe && (policy.min_component > 0 || policy.min_enhancing > 0);
    // Runs `members` (slice indices, all routed to `route`) through the route's model, or takes
    // their masks from the probe being resumed where it segmented them.
    std::vector<int64_t> to_run;
    auto segment = [&](int route, const std::vector<int64_t>& members) -> absl::Status {
      models::Network& model = bank.model(route - 1);
      const double model_gmacs = bank.model_config(route - 1).gmacs_per_slice();
      to_run.clear();
      for (const int64_t z : members) {
        if (resume == nullptr || resume->slices[z].route != route) {
          to_run.push_back(z);
          continue;
        }
        const uint8_t* src = resume->labels.data() + z * slice_voxels;
        uint8_t* dst = result.labels.data() + z * slice_voxels;
        std::copy(src, src + slice_voxels, dst);
        tumour_voxels[z] = slice_voxels - std::count(src, src + slice_voxels, uint8_t{0});
        result.slices[z].route = route;
        result.slices[z].gmacs += model_gmacs;
        result.slices[z].seconds = resume->slices[z].seconds;
        if (on_slice && !clean) on_slice(result.slices[z], dst);
      }
      const bool windowed = model.SupportsWindow();
      const torch::Tensor& input = windowed ? cropped : slices;
      // The output's rows and columns that hold the volume's slice, and where they go.
      const int64_t top = windowed ? box.top : 0, left = windowed ? box.left : 0;
      const int64_t rows = std::min(dims[1], top + input.size(2)) - top;
      const int64_t cols = std::min(dims[0], left + input.size(3)) - left;
      if (!members.empty() && windowed) {
        result.window_fraction = static_cast<double>(input.size(2) * input.size(3)) /
                                 static_cast<double>(padded_height * padded_width);
      }
      for (size_t begin = 0; begin < to_run.size(); begin += options.model_batch) {
        if (stop()) return absl::CancelledError("segmentation cancelled");
        const size_t end = std::min(to_run.size(), begin + options.model_batch);
        const torch::Tensor index = torch::tensor(
            std::vector<int64_t>(to_run.begin() + begin, to_run.begin() + end), torch::kLong);
        const auto start = Clock::now();
        const torch::Tensor batch =
            input.index_select(0, index).to(bank.device()).contiguous(bank.memory_format());
        const torch::Tensor classes =
            (windowed ? model.ForwardWindow(batch, window) : model.Forward(batch))
                .argmax(1)
                .slice(1, 0, rows)  // the padding off
                .slice(2, 0, cols)
                .to(torch::kCPU, torch::kUInt8)
                .contiguous();
        const double seconds = Since(start) / static_cast<double>(end - begin);
        for (size_t m = begin; m < end; ++m) {
          const int64_t z = to_run[m];
          const uint8_t* src = classes[m - begin].data_ptr<uint8_t>();
          uint8_t* dst = result.labels.data() + z * slice_voxels;
          for (int64_t y = 0; y < rows; ++y) {
            uint8_t* row = dst + (top + y) * dims[0] + left;
            for (int64_t x = 0; x < cols; ++x) {
              row[x] = volume::ClassToLabel(src[y * cols + x]);
              tumour_voxels[z] += row[x] != 0;
            }
          }
          result.slices[z].route = route;
          result.slices[z].gmacs += model_gmacs;
          result.slices[z].seconds = seconds;
          if (on_slice && !clean) on_slice(result.slices[z], dst);
        }
      }
      return absl::OkStatus();
    };
    const bool follow = policy.kind == Policy::Kind::kDynamic && policy.follow_tumour > 0;
    for (int64_t z = 0; z < depth; ++z) {
      result.slices[z].index = static_cast<int>(z);
      result.slices[z].gmacs = policy.kind == Policy::Kind::kDynamic ? decision_gmacs : 0.0;
      // Skipped slices are final now, unless following the tumour may still route them.
      if (routes[z] == 0 && on_slice && !follow && !clean) {
        on_slice(result.slices[z], result.labels.data() + z * slice_voxels);
      }
    }
    // Segments (slice, route) pairs route by route; `segmented` gets the slices in that order.
    std::vector<int64_t> segmented;
    auto segment_all = [&](const std::vector<std::pair<int64_t, int>>& routed) -> absl::Status {
      segmented.clear();
      for (int route = 1; route <= bank.size(); ++route) {
        std::vector<int64_t> members;
        for (const auto& [z, r] : routed) {
          if (r == route) members.push_back(z);
        }
        if (absl::Status status = segment(route, members); !status.ok()) return status;
        segmented.insert(segmented.end(), members.begin(), members.end());
      }
      return absl::OkStatus();
    };
    std::vector<std::pair<int64_t, int>> routed;
    for (int64_t z = 0; z < depth; ++z) {
      if (routes[z] != 0 && z % options.probe_stride == 0) routed.emplace_back(z, routes[z]);
    }
    if (absl::Status status = segment_all(routed); !status.ok()) return status;
    // 3. Following the tumour outward from the slices where a model found it.
    for (int step = 0; follow && !probe && step < policy.follow_tumour && !segmented.empty();
         ++step) {
      routed = FollowTumour(routes, has_tissue, segmented, tumour_voxels, route_gmacs,
                            policy.follow_min_voxels);
      const std::vector<int> before = routes;
      for (const auto& [z, route] : routed) routes[z] = route;
      if (absl::Status status = segment_all(routed); !status.ok()) return status;
      // A followed slice is followed further only as far as its tumour continues the tumour
      // it was reached from (3D connectivity): a model's false positives elsewhere in the
      // slice do not pull in the next one.
      for (const auto& [z, route] : routed) {
        tumour_voxels[z] = 0;
        for (const int64_t n : {z - 1, z + 1}) {
          if (n < 0 || n >= depth || before[n] == 0 ||
              tumour_voxels[n] < policy.follow_min_voxels) {
            continue;
          }
          tumour_voxels[z] =
              std::max(tumour_voxels[z],
                       SharedTumourVoxels(result.labels.data() + z * slice_voxels,
                                          result.labels.data() + n * slice_voxels, slice_voxels));
        }
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
        if (routes[z] == 0 || clean) {
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
