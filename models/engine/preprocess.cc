#include "models/engine/preprocess.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/volume/bias.h"
#include "models/volume/normalize.h"

namespace danet::engine {

absl::StatusOr<std::array<int, volume::kNumModalities>> ChannelOrder(
    const v1::Preprocessing& preprocessing) {
  std::array<int, volume::kNumModalities> order{};
  const auto& names = preprocessing.modalities();
  if (names.empty()) {
    for (int c = 0; c < volume::kNumModalities; ++c) order[c] = c;
    return order;
  }
  std::array<bool, volume::kNumModalities> used{};
  bool ok = names.size() == volume::kNumModalities;
  for (int c = 0; ok && c < volume::kNumModalities; ++c) {
    order[c] = volume::ModalityIndex(names[c]);
    ok = order[c] >= 0 && !used[order[c]];
    if (ok) used[order[c]] = true;
  }
  if (ok) return order;
  return absl::InvalidArgumentError(
      absl::StrCat("preprocessing.modalities: [", absl::StrJoin(preprocessing.modalities(), ", "),
                   "] must be ", absl::StrJoin(volume::kModalities, ", "), " in some order"));
}

absl::StatusOr<volume::MultiModalVolume> PrepareBankInput(const v1::Preprocessing& preprocessing,
                                                          volume::MultiModalVolume decoded,
                                                          const std::vector<uint8_t>* excluded) {
  absl::StatusOr<std::array<int, volume::kNumModalities>> order = ChannelOrder(preprocessing);
  if (!order.ok()) return order.status();
  const std::string& normalization = preprocessing.normalization();
  if (!normalization.empty() && normalization != "zscore_brain") {
    return absl::InvalidArgumentError(absl::StrCat("preprocessing.normalization: '", normalization,
                                                   "' is not one of: zscore_brain"));
  }
  absl::StatusOr<int> degree = volume::ParseBiasCorrection(preprocessing.bias_correction());
  if (!degree.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocessing.bias_correction: ", degree.status().message()));
  }
  volume::MultiModalVolume input;
  input.geometry = decoded.geometry;
  for (int c = 0; c < volume::kNumModalities; ++c) {
    input.channels[c] = std::move(decoded.channels[(*order)[c]]);
  }
  if (*degree > 0) {
    volume::BiasCorrectionOptions options;
    options.degree = *degree;
    options.excluded = excluded;
    const int flair = volume::ModalityIndex("flair");
    options.bright_sigmas.assign(volume::kNumModalities, 0.0);
    for (int c = 0; c < volume::kNumModalities; ++c) {
      if ((*order)[c] == flair) options.bright_sigmas[c] = preprocessing.bias_flair_bright_sigmas();
    }
    volume::CorrectBiasField(&input, options);
  }
  volume::NormalizeZScoreBrain(&input);
  return input;
}

}  // namespace danet::engine
