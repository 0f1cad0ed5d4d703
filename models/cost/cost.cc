#include "models/cost/cost.h"

#include <torch/torch.h>

#include <numeric>

#include "absl/strings/str_cat.h"

namespace danet::models {
namespace {

thread_local CostRecorder* current_recorder = nullptr;

}  // namespace

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kConv:
      return "conv";
    case OpKind::kTransposedConv:
      return "transposed_conv";
    case OpKind::kLinear:
      return "linear";
    case OpKind::kAttention:
      return "attention";
    case OpKind::kNorm:
      return "norm";
    case OpKind::kActivation:
      return "activation";
    case OpKind::kPool:
      return "pool";
    case OpKind::kElementwise:
      return "elementwise";
  }
  return "unknown";
}

double CostReport::TotalMacs() const { return std::accumulate(macs.begin(), macs.end(), 0.0); }

CostReport CostRecorder::Report(int64_t batch) const {
  CostReport report;
  for (int i = 0; i < kNumOpKinds; ++i) report.macs[i] = macs_[i] / static_cast<double>(batch);
  return report;
}

ScopedCostRecording::ScopedCostRecording(CostRecorder* recorder) : previous_(current_recorder) {
  current_recorder = recorder;
}

ScopedCostRecording::~ScopedCostRecording() { current_recorder = previous_; }

void RecordCost(OpKind kind, double macs) {
  if (current_recorder != nullptr) current_recorder->Add(kind, macs);
}

bool CostRecordingActive() { return current_recorder != nullptr; }

absl::StatusOr<CostReport> CountForwardCost(
    const std::function<at::Tensor(const at::Tensor&)>& forward, int64_t channels, int64_t height,
    int64_t width) {
  CostRecorder recorder;
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor input = torch::zeros({1, channels, height, width});
    ScopedCostRecording scope(&recorder);
    forward(input);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("cost count at ", channels, "x", height, "x",
                                                   width, " failed: ", e.what_without_backtrace()));
  }
  return recorder.Report(1);
}

}  // namespace danet::models
