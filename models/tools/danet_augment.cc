// danet-augment: shows what the training augmentation does to one slice of a case.
//
//   danet-augment --case_dir DIR [--slice Z] [--samples N] [--seed S] [--augment nnunet]
//                 --out FILE.npy
//
// Loads and z-scores the case as training does, takes slice Z (default: the tumour slice with
// the most tumour), and writes a float32 .npy array of shape (N + 1) x 5 x H x W: row 0 is the
// original, rows 1..N augmented draws; channels are the four modalities then the class map
// (0..3). scripts/plot-augment turns it into the figure in docs/training.md.
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "models/train/augment.h"
#include "models/train/dataset.h"

ABSL_FLAG(std::string, case_dir, "", "A case folder (BraTS layout, with seg).");
ABSL_FLAG(int, slice, -1, "Axial slice (default: the one with the most tumour).");
ABSL_FLAG(int, samples, 4, "Augmented draws.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the draws.");
ABSL_FLAG(std::string, augment, "nnunet", "Augmentation preset: nnunet, flip or none.");
ABSL_FLAG(std::string, out, "", "Output .npy file.");

namespace {

// Writes a float32 C-order tensor as NumPy's .npy (format 1.0).
bool WriteNpy(const std::string& path, const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.to(torch::kFloat32).contiguous();
  std::string shape = "(";
  for (int64_t d : t.sizes()) absl::StrAppend(&shape, d, ", ");
  shape += ")";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': ", shape, ", }");
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  const uint16_t length = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&length), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
  return static_cast<bool>(out.flush());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("danet-augment --case_dir DIR --out FILE.npy");
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (absl::GetFlag(FLAGS_case_dir).empty() || out.empty()) {
    std::cerr << "danet-augment: --case_dir and --out are required\n";
    return 2;
  }
  absl::StatusOr<danet::train::AugmentOptions> options =
      danet::train::AugmentPreset(absl::GetFlag(FLAGS_augment));
  if (!options.ok()) {
    std::cerr << "danet-augment: --augment: " << options.status().message() << "\n";
    return 2;
  }
  // The default preprocessing (BraTS channel order, z-scored over the brain).
  absl::StatusOr<std::vector<danet::train::TrainCase>> cases =
      danet::train::LoadTrainCases({absl::GetFlag(FLAGS_case_dir)}, danet::v1::Preprocessing());
  if (!cases.ok()) {
    std::cerr << "danet-augment: " << cases.status().message() << "\n";
    return 1;
  }
  const danet::train::TrainCase& c = cases->front();
  int64_t z = absl::GetFlag(FLAGS_slice);
  if (z < 0) z = (c.classes != 0).sum({1, 2}).argmax().item<int64_t>();
  if (z >= c.slices.size(0)) {
    std::cerr << "danet-augment: --slice " << z << " is past the case's " << c.slices.size(0)
              << " slices\n";
    return 2;
  }
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::vector<torch::Tensor> rows;
  const torch::Tensor image = c.slices[z], labels = c.classes[z];
  rows.push_back(torch::cat({image, labels.unsqueeze(0).to(torch::kFloat32)}));
  for (int i = 0; i < absl::GetFlag(FLAGS_samples); ++i) {
    const auto [augmented, moved] = danet::train::Augment(image, labels, *options, rng);
    rows.push_back(torch::cat({augmented, moved.unsqueeze(0).to(torch::kFloat32)}));
  }
  if (!WriteNpy(out, torch::stack(rows))) {
    std::cerr << "danet-augment: cannot write " << out << "\n";
    return 1;
  }
  std::printf("%s: slice %lld, %d draws\n", out.c_str(), static_cast<long long>(z),
              absl::GetFlag(FLAGS_samples));
  return 0;
}
