#include "models/train/objectives.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace danet::train {

at::Tensor SoftDiceLoss(const at::Tensor& logits, const at::Tensor& target, double smooth) {
  const int64_t classes = logits.size(1);
  const torch::Tensor probs = torch::softmax(logits, 1);
  const torch::Tensor onehot =
      torch::one_hot(target, classes).permute({0, 3, 1, 2}).to(probs.dtype());
  const std::vector<int64_t> reduce = {0, 2, 3};
  const torch::Tensor intersection = (probs * onehot).sum(reduce);
  const torch::Tensor total = probs.sum(reduce) + onehot.sum(reduce);
  const torch::Tensor dice = (2 * intersection + smooth) / (total + smooth);
  return (1 - dice.slice(0, 1, classes)).sum();
}

at::Tensor DiceCrossEntropyLoss(const at::Tensor& logits, const at::Tensor& target) {
  const double foreground = static_cast<double>(logits.size(1) - 1);
  return SoftDiceLoss(logits, target) / foreground +
         torch::nn::functional::cross_entropy(logits, target);
}

at::Tensor WeightedCrossEntropy(const at::Tensor& logits, const at::Tensor& target,
                                const std::vector<double>& weights) {
  const torch::Tensor w = torch::tensor(weights, torch::kFloat32).to(logits.device());
  return torch::nn::functional::cross_entropy(
      logits, target, torch::nn::functional::CrossEntropyFuncOptions().weight(w));
}

at::Tensor TumourMapLoss(const at::Tensor& map, const at::Tensor& tumour, double positive_weight) {
  const torch::Tensor target =
      std::get<0>(torch::adaptive_max_pool2d(tumour, {map.size(2), map.size(3)})).to(map.dtype());
  return torch::nn::functional::binary_cross_entropy_with_logits(
      map, target,
      torch::nn::functional::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(
          torch::full({1}, positive_weight, map.options())));
}

std::vector<double> InverseCostSoftmax(const std::vector<double>& gmacs) {
  std::vector<double> out(gmacs.size());
  double max_inv = -1e300;
  for (double f : gmacs) max_inv = std::max(max_inv, 1.0 / f);
  double total = 0;
  for (size_t i = 0; i < gmacs.size(); ++i) {
    out[i] = std::exp(1.0 / gmacs[i] - max_inv);
    total += out[i];
  }
  for (double& x : out) x /= total;
  return out;
}

std::vector<double> PreferredProbabilities(const std::vector<double>& probabilities,
                                           const std::vector<double>& preference) {
  if (preference.empty()) return probabilities;
  std::vector<double> out(probabilities.size());
  double sum = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = probabilities[i] * std::exp(i < preference.size() ? preference[i] : 0.0);
    sum += out[i];
  }
  if (sum > 0) {
    for (double& v : out) v /= sum;
  }
  return out;
}

int DecisionLabel(bool has_foreground, const std::vector<double>& scores,
                  const std::vector<double>& gmacs, double alpha) {
  if (!has_foreground) return 0;
  const std::vector<double> cost = InverseCostSoftmax(gmacs);
  int best = 0;
  double best_value = -1e300;
  for (size_t i = 0; i < scores.size(); ++i) {
    const double value = (1 - alpha) * scores[i] + alpha * cost[i];
    if (value > best_value) {
      best_value = value;
      best = static_cast<int>(i);
    }
  }
  return best + 1;
}

std::vector<double> RouteWeights(const std::vector<int>& histogram, double skip_weight,
                                 double balance) {
  std::vector<double> weights(histogram.size(), 1.0);
  if (weights.empty()) return weights;
  weights[0] = skip_weight;
  if (balance == 0) return weights;
  double total = 0;
  int present = 0;
  for (size_t i = 1; i < histogram.size(); ++i) {
    if (histogram[i] > 0) {
      total += histogram[i];
      ++present;
    }
  }
  if (present == 0) return weights;
  const double mean = total / present;
  double largest = 0;
  for (size_t i = 1; i < histogram.size(); ++i) {
    if (histogram[i] == 0) continue;
    weights[i] = std::pow(histogram[i] / mean, -balance);
    largest = std::max(largest, weights[i]);
  }
  for (size_t i = 1; i < histogram.size(); ++i) {
    if (histogram[i] == 0) weights[i] = largest;
  }
  return weights;
}

double PolyLearningRate(double base, int step, int total, int warmup) {
  if (warmup > 0 && step < warmup) return base * (step + 1) / warmup;
  const double progress =
      std::clamp(static_cast<double>(step - warmup) / std::max(1, total - warmup), 0.0, 1.0);
  return base * std::pow(1.0 - progress, 0.9);
}

}  // namespace danet::train
