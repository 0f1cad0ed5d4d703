#include "models/train/dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "models/engine/preprocess.h"
#include "models/engine/segmenter.h"

namespace danet::train {

absl::StatusOr<std::vector<std::filesystem::path>> ListCaseDirs(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir.string(), ": ", ec.message()));
  if (dirs.empty()) return absl::NotFoundError(absl::StrCat(dir.string(), ": no case folders"));
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::vector<bool> DrawUncorrected(size_t count, double share, uint64_t seed) {
  if (share <= 0) return {};
  std::mt19937_64 rng(seed ^ 0x756e636f72726563ULL);  // "uncorrec": apart from other streams
  std::bernoulli_distribution draw(std::min(share, 1.0));
  std::vector<bool> uncorrected(count);
  for (size_t i = 0; i < count; ++i) uncorrected[i] = draw(rng);
  return uncorrected;
}

absl::StatusOr<std::vector<TrainCase>> LoadTrainCases(
    const std::vector<std::filesystem::path>& dirs, const v1::Preprocessing& preprocessing,
    const std::function<void(int done, int total)>& on_case, const std::vector<bool>& uncorrected,
    bool keep_channels) {
  if (!uncorrected.empty() && uncorrected.size() != dirs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("LoadTrainCases: ", uncorrected.size(),
                                                   " uncorrected flags for ", dirs.size(),
                                                   " case folders"));
  }
  v1::Preprocessing without_correction = preprocessing;
  without_correction.clear_bias_correction();
  std::vector<TrainCase> cases;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const std::filesystem::path& dir = dirs[i];
    const bool plain = !uncorrected.empty() && uncorrected[i];
    absl::StatusOr<volume::BratsCase> loaded = volume::LoadBratsCase(dir);
    if (!loaded.ok()) return loaded.status();
    if (!loaded->seg) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": training needs a *_seg.nii.gz label map"));
    }
    TrainCase c;
    c.id = loaded->case_id;
    c.uncorrected = plain;
    absl::StatusOr<volume::MultiModalVolume> input = engine::PrepareBankInput(
        plain ? without_correction : preprocessing, std::move(loaded->image));
    if (!input.ok()) return input.status();
    c.image = *std::move(input);
    c.labels = std::move(loaded->seg->labels);
    const auto& d = c.image.geometry.dims;
    c.slices = engine::SliceStack(c.image);
    if (!keep_channels) {
      for (std::vector<float>& channel : c.image.channels) std::vector<float>().swap(channel);
    }
    std::vector<uint8_t> classes(c.labels.size());
    for (size_t v = 0; v < classes.size(); ++v) classes[v] = volume::LabelToClass(c.labels[v]);
    // Padded like the slices (SliceStack), with background, so crops index both alike.
    c.classes =
        torch::constant_pad_nd(
            torch::from_blob(classes.data(), {d[2], d[1], d[0]}, torch::kUInt8),
            {0, engine::PaddedSliceExtent(d[0]) - d[0], 0, engine::PaddedSliceExtent(d[1]) - d[1]})
            .clone();
    IndexClassVoxels(c);
    c.foreground.resize(d[2]);
    for (int64_t z = 0; z < d[2]; ++z) {
      const auto begin = c.labels.begin() + z * d[0] * d[1];
      c.foreground[z] = std::any_of(begin, begin + d[0] * d[1], [](uint8_t l) { return l != 0; });
    }
    cases.push_back(std::move(c));
    if (on_case) on_case(static_cast<int>(cases.size()), static_cast<int>(dirs.size()));
  }
  return cases;
}

void IndexClassVoxels(TrainCase& c) {
  for (std::vector<int32_t>& voxels : c.class_voxels) voxels.clear();
  const torch::Tensor classes = c.classes.contiguous();
  const uint8_t* at = classes.data_ptr<uint8_t>();
  for (int64_t v = 0; v < classes.numel(); ++v) {
    if (at[v] >= 1 && at[v] <= 3) c.class_voxels[at[v] - 1].push_back(static_cast<int32_t>(v));
  }
}

at::Tensor SliceImage(const TrainCase& c, int64_t z, const AugmentOptions& augment,
                      std::mt19937_64& rng) {
  const TransformRange& thick = augment.thick_slices;
  if (thick.p <= 0 || std::uniform_real_distribution<double>(0, 1)(rng) >= thick.p) {
    return c.slices[z];
  }
  const int64_t lo = std::max<int64_t>(1, std::lround(thick.lo));
  const int64_t size =
      std::uniform_int_distribution<int64_t>(lo, std::max(lo, std::lround(thick.hi)))(rng);
  const int64_t start = z - std::uniform_int_distribution<int64_t>(0, size - 1)(rng);
  const int64_t begin = std::max<int64_t>(0, start);
  const int64_t end = std::min<int64_t>(c.slices.size(0), start + size);
  return c.slices.slice(0, begin, end).mean(0);
}

const char* CropCentreName(CropCentre centre) {
  return centre == CropCentre::kTumourClass ? "class" : "slice";
}

absl::StatusOr<CropCentre> ParseCropCentre(const std::string& name) {
  for (CropCentre centre : {CropCentre::kTumourSlice, CropCentre::kTumourClass}) {
    if (name == CropCentreName(centre)) return centre;
  }
  return absl::InvalidArgumentError(absl::StrCat("'", name, "': choose slice or class"));
}

Batch SampleCropBatch(const std::vector<TrainCase>& cases, int batch, int crop,
                      double foreground_fraction, const AugmentOptions& augment,
                      std::mt19937_64& rng, CropCentre centre) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<torch::Tensor> images, targets;
  while (static_cast<int>(images.size()) < batch) {
    const TrainCase& c = cases[std::uniform_int_distribution<size_t>(0, cases.size() - 1)(rng)];
    const int64_t depth = c.slices.size(0), h = c.slices.size(2), w = c.slices.size(3);
    const bool want_tumour = unit(rng) < foreground_fraction;
    int64_t z = std::uniform_int_distribution<int64_t>(0, depth - 1)(rng);
    const bool by_class = want_tumour && centre == CropCentre::kTumourClass;
    if (!by_class && c.foreground[z] != want_tumour) continue;  // rejection: slices are plenty
    int64_t y0 = std::uniform_int_distribution<int64_t>(0, h - crop)(rng);
    int64_t x0 = std::uniform_int_distribution<int64_t>(0, w - crop)(rng);
    if (want_tumour) {
      int64_t cy = 0, cx = 0;  // the tumour voxel to centre on, in slice z
      if (by_class) {
        std::vector<int> held;
        for (int k = 0; k < 3; ++k) {
          if (!c.class_voxels[k].empty()) held.push_back(k);
        }
        if (held.empty()) continue;  // a case without tumour: draw another
        const std::vector<int32_t>& voxels =
            c.class_voxels[held[std::uniform_int_distribution<size_t>(0, held.size() - 1)(rng)]];
        const int64_t at = voxels[std::uniform_int_distribution<size_t>(0, voxels.size() - 1)(rng)];
        z = at / (h * w);
        cy = (at / w) % h;
        cx = at % w;
      } else {
        const torch::Tensor where = c.classes[z].nonzero();
        const int64_t pick = std::uniform_int_distribution<int64_t>(0, where.size(0) - 1)(rng);
        cy = where[pick][0].item<int64_t>();
        cx = where[pick][1].item<int64_t>();
      }
      // Centre the crop on the tumour voxel, jittered.
      const int64_t jitter = crop / 4;
      y0 = std::clamp<int64_t>(
          cy - crop / 2 + std::uniform_int_distribution<int64_t>(-jitter, jitter)(rng), 0,
          h - crop);
      x0 = std::clamp<int64_t>(
          cx - crop / 2 + std::uniform_int_distribution<int64_t>(-jitter, jitter)(rng), 0,
          w - crop);
    } else if (c.slices[z].abs().sum().item<double>() == 0) {
      continue;  // an empty slice teaches nothing about tissue
    }
    // Spatial transforms act about the crop's centre on a window twice the crop's side
    // (zero-padded past the slice, as background), so rotations and zooms pull in real
    // neighbouring tissue rather than zeros; then the centre crop.
    namespace F = torch::nn::functional;
    const int64_t wy = y0 + crop / 2, wx = x0 + crop / 2;  // window start in padded coordinates
    const torch::Tensor padded_image =
        F::pad(SliceImage(c, z, augment, rng), F::PadFuncOptions({crop, crop, crop, crop}));
    const torch::Tensor padded_target =
        F::pad(c.classes[z].unsqueeze(0), F::PadFuncOptions({crop, crop, crop, crop}))[0];
    auto [image, target] = Augment(
        padded_image.slice(1, wy, wy + 2 * crop).slice(2, wx, wx + 2 * crop),
        padded_target.slice(0, wy, wy + 2 * crop).slice(1, wx, wx + 2 * crop), augment, rng);
    const int64_t c0 = crop / 2;
    images.push_back(image.slice(1, c0, c0 + crop).slice(2, c0, c0 + crop).contiguous());
    targets.push_back(target.slice(0, c0, c0 + crop).slice(1, c0, c0 + crop).to(torch::kLong));
  }
  return {torch::stack(images), torch::stack(targets), torch::Tensor()};
}

Batch SampleDecisionBatch(const std::vector<TrainCase>& cases,
                          const std::vector<LabelledSlice>& tumour,
                          const std::vector<LabelledSlice>& other, int batch,
                          const AugmentOptions& augment, std::mt19937_64& rng, bool tumour_masks) {
  std::vector<torch::Tensor> images, masks;
  std::vector<int64_t> routes;
  auto weights_of = [](const std::vector<LabelledSlice>& pool) {
    std::vector<double> w;
    for (const LabelledSlice& s : pool) w.push_back(s.weight);
    return std::discrete_distribution<size_t>(w.begin(), w.end());
  };
  auto draw_tumour = weights_of(tumour);
  auto draw_other = weights_of(other);
  for (int i = 0; i < batch; ++i) {
    const bool from_tumour = (i % 2 == 0 && !tumour.empty()) || other.empty();
    const auto& pool = from_tumour ? tumour : other;
    const LabelledSlice& s = pool[from_tumour ? draw_tumour(rng) : draw_other(rng)];
    const TrainCase& c = cases[s.case_index];
    auto [image, classes] =
        Augment(SliceImage(c, s.slice, augment, rng),
                tumour_masks ? c.classes[s.slice] : torch::Tensor(), augment, rng);
    images.push_back(image);
    if (tumour_masks) masks.push_back(classes.gt(0).unsqueeze(0));
    routes.push_back(s.route);
  }
  return {torch::stack(images), torch::tensor(routes, torch::kLong),
          tumour_masks ? torch::stack(masks).to(torch::kFloat) : torch::Tensor()};
}

}  // namespace danet::train
