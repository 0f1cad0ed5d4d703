#include "models/train/dataset.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/engine/segmenter.h"

namespace danet::train {
namespace {

// Flips and intensity augmentation of one 4 x h x w image and its h x w target (if defined).
void Augment(torch::Tensor& image, torch::Tensor& target, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  if (unit(rng) < 0.5) {
    image = image.flip({2});
    if (target.defined()) target = target.flip({1});
  }
  if (unit(rng) < 0.5) {
    image = image.flip({1});
    if (target.defined()) target = target.flip({0});
  }
  const torch::Tensor brain = (image != 0).any(0, /*keepdim=*/true);
  for (int64_t c = 0; c < image.size(0); ++c) {
    const double scale = 0.9 + 0.2 * unit(rng), shift = -0.1 + 0.2 * unit(rng);
    image[c] = torch::where(brain[0], image[c] * scale + shift, image[c]);
  }
}

}  // namespace

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

absl::StatusOr<std::vector<TrainCase>> LoadTrainCases(
    const std::vector<std::filesystem::path>& dirs,
    const std::function<void(int done, int total)>& on_case) {
  std::vector<TrainCase> cases;
  for (const auto& dir : dirs) {
    absl::StatusOr<volume::BratsCase> loaded = volume::LoadBratsCase(dir);
    if (!loaded.ok()) return loaded.status();
    if (!loaded->seg) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": training needs a *_seg.nii.gz label map"));
    }
    TrainCase c;
    c.id = loaded->case_id;
    c.image = std::move(loaded->image);
    volume::NormalizeZScoreBrain(&c.image);
    c.labels = std::move(loaded->seg->labels);
    const auto& d = c.image.geometry.dims;
    c.slices = engine::SliceStack(c.image);
    std::vector<uint8_t> classes(c.labels.size());
    for (size_t v = 0; v < classes.size(); ++v) classes[v] = volume::LabelToClass(c.labels[v]);
    c.classes = torch::from_blob(classes.data(), {d[2], d[1], d[0]}, torch::kUInt8).clone();
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

Batch SampleCropBatch(const std::vector<TrainCase>& cases, int batch, int crop,
                      double foreground_fraction, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<torch::Tensor> images, targets;
  while (static_cast<int>(images.size()) < batch) {
    const TrainCase& c = cases[std::uniform_int_distribution<size_t>(0, cases.size() - 1)(rng)];
    const int64_t depth = c.slices.size(0), h = c.slices.size(2), w = c.slices.size(3);
    const bool want_tumour = unit(rng) < foreground_fraction;
    const int64_t z = std::uniform_int_distribution<int64_t>(0, depth - 1)(rng);
    if (c.foreground[z] != want_tumour) continue;  // rejection: cheap, slices are plenty
    int64_t y0 = std::uniform_int_distribution<int64_t>(0, h - crop)(rng);
    int64_t x0 = std::uniform_int_distribution<int64_t>(0, w - crop)(rng);
    if (want_tumour) {
      // Centre the crop on a random tumour pixel, jittered.
      const torch::Tensor where = c.classes[z].nonzero();
      const int64_t pick = std::uniform_int_distribution<int64_t>(0, where.size(0) - 1)(rng);
      const int64_t jitter = crop / 4;
      y0 = std::clamp<int64_t>(where[pick][0].item<int64_t>() - crop / 2 +
                                   std::uniform_int_distribution<int64_t>(-jitter, jitter)(rng),
                               0, h - crop);
      x0 = std::clamp<int64_t>(where[pick][1].item<int64_t>() - crop / 2 +
                                   std::uniform_int_distribution<int64_t>(-jitter, jitter)(rng),
                               0, w - crop);
    } else if (c.slices[z].abs().sum().item<double>() == 0) {
      continue;  // an empty slice teaches nothing about tissue
    }
    torch::Tensor image = c.slices[z].slice(1, y0, y0 + crop).slice(2, x0, x0 + crop).clone();
    torch::Tensor target = c.classes[z].slice(0, y0, y0 + crop).slice(1, x0, x0 + crop).clone();
    Augment(image, target, rng);
    images.push_back(image);
    targets.push_back(target.to(torch::kLong));
  }
  return {torch::stack(images), torch::stack(targets)};
}

Batch SampleDecisionBatch(const std::vector<TrainCase>& cases,
                          const std::vector<LabelledSlice>& tumour,
                          const std::vector<LabelledSlice>& other, int batch,
                          std::mt19937_64& rng) {
  std::vector<torch::Tensor> images;
  std::vector<int64_t> routes;
  for (int i = 0; i < batch; ++i) {
    const auto& pool = (i % 2 == 0 && !tumour.empty()) || other.empty() ? tumour : other;
    const LabelledSlice& s = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
    torch::Tensor image = cases[s.case_index].slices[s.slice].clone();
    torch::Tensor none;
    Augment(image, none, rng);
    images.push_back(image);
    routes.push_back(s.route);
  }
  return {torch::stack(images), torch::tensor(routes, torch::kLong)};
}

}  // namespace danet::train
