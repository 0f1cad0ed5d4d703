// The training objectives of Med-DANet (paper section 3.3) and the decision labels (Eq. 4).
#ifndef DANET_MODELS_TRAIN_OBJECTIVES_H_
#define DANET_MODELS_TRAIN_OBJECTIVES_H_

#include <ATen/core/Tensor.h>

#include <vector>

namespace danet::train {

// Soft Dice loss of Eq. 5 summed over the foreground classes 1..C-1 (background excluded),
// with the Dice computed over the whole batch: 1 - (2|P.G| + s) / (|P| + |G| + s), P the softmax
// of `logits` (N x C x H x W), G the one-hot of `target` (N x H x W, int64 classes). The
// smoothing s = 1 keeps a class that is absent from the batch pushing its prediction to 0.
at::Tensor SoftDiceLoss(const at::Tensor& logits, const at::Tensor& target, double smooth = 1.0);

// nnU-Net's segmentation loss: the soft Dice loss above averaged over the foreground classes,
// plus the pixel-wise cross-entropy. The cross-entropy term keeps a gradient on every pixel, so
// a small network cannot settle on "all background" (the first bundle's M1 did, on Dice alone).
at::Tensor DiceCrossEntropyLoss(const at::Tensor& logits, const at::Tensor& target);

// Weighted cross-entropy of Eq. 7: logits N x R, target N (int64 routes), weights R.
at::Tensor WeightedCrossEntropy(const at::Tensor& logits, const at::Tensor& target,
                                const std::vector<double>& weights);

// The decision network's tumour map (N x 1 x h x w logits) against the slices' tumour masks
// (N x 1 x H x W, 1 where tumour): binary cross-entropy per cell, where a cell's target is 1
// when any voxel under it (the mask max-pooled to h x w) is tumour. A tumour cell's term weighs
// `positive_weight` (a small lesion is one cell among a hundred tumour-free ones).
at::Tensor TumourMapLoss(const at::Tensor& map, const at::Tensor& tumour,
                         double positive_weight = 1);

// A teacher's probabilities of the bank models under a serving policy's model preference
// (Policy::model_preference, one value per model; empty: unchanged): p_i * exp(preference_i),
// renormalised, so that their argmax is the model the policy picks (argmax log p_i +
// preference_i, router.h) and Eq. 4 at alpha 0 gives it.
std::vector<double> PreferredProbabilities(const std::vector<double>& probabilities,
                                           const std::vector<double>& preference);

// Eq. 4. For a slice without foreground: 0 (skip). Otherwise 1 + argmax_i of
// (1 - alpha) * S_i + alpha * softmax(1 / F)_i, with S_i model i's score on the slice (in
// [0, 1]) and F_i its cost in GMACs. Ties go to the cheaper (lower) index.
int DecisionLabel(bool has_foreground, const std::vector<double>& scores,
                  const std::vector<double>& gmacs, double alpha);

// Cross-entropy weights of the decision routes for stage 2: route 0 (skip) weighs
// `skip_weight`; bank route i weighs (n_i / mean n)^-balance, with n_i its count in
// `histogram` (skip first) and the mean over the bank routes that occur. balance 0 gives every
// bank route 1; balance 0.5 weighs a route a quarter as frequent as the mean twice. A route
// with no slices gets the largest weight given to any route (it never occurs in a batch).
std::vector<double> RouteWeights(const std::vector<int>& histogram, double skip_weight,
                                 double balance);

// softmax(1 / F): the cost term of Eq. 4.
std::vector<double> InverseCostSoftmax(const std::vector<double>& gmacs);

// Learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps from
// base/warmup, then poly decay base * (1 - progress)^0.9.
double PolyLearningRate(double base, int step, int total, int warmup);

}  // namespace danet::train

#endif  // DANET_MODELS_TRAIN_OBJECTIVES_H_
