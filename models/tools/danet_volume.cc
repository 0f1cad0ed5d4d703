// danet-volume: look at volumes the way the engine reads them.
//
//   danet-volume info FILE...   one JSON line per file: dims, spacing, NIfTI version,
//                               voxel-to-world matrix, min / max / mean
//   danet-volume case DIR       load a BraTS case folder and report its grid and labels
//   danet-volume compare A B    two label maps on one grid: the share of voxels with the same
//                               label, the voxels that differ, and the whole-tumour Dice
//                               (scripts/gpu-check's CPU/GPU parity)
//
// Exit codes: 0 ok, 1 a file or folder is bad (the message says which and why), 2 usage.
#include <algorithm>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "absl/flags/parse.h"
#include "models/eval/metrics.h"
#include "models/volume/brats.h"
#include "models/volume/nifti.h"

namespace {

nlohmann::json GeometryJson(const danet::volume::Geometry& g) {
  const danet::volume::Matrix4 m = g.VoxelToWorld();
  return {{"dims", g.dims},
          {"spacing", g.spacing},
          {"nifti_version", g.nifti_version},
          {"qform_code", g.qform_code},
          {"sform_code", g.sform_code},
          {"affine", m}};
}

int Info(const std::vector<char*>& files) {
  int rc = 0;
  for (const char* file : files) {
    absl::StatusOr<danet::volume::Volume> v = danet::volume::ReadNifti(file);
    if (!v.ok()) {
      std::cerr << "danet-volume: " << v.status().message() << "\n";
      rc = 1;
      continue;
    }
    const auto [lo, hi] = std::minmax_element(v->voxels.begin(), v->voxels.end());
    const double sum = std::accumulate(v->voxels.begin(), v->voxels.end(), 0.0);
    nlohmann::json out = GeometryJson(v->geometry);
    out["file"] = file;
    out["min"] = *lo;
    out["max"] = *hi;
    out["mean"] = sum / static_cast<double>(v->voxels.size());
    std::cout << out.dump() << "\n";
  }
  return rc;
}

int Case(const char* dir) {
  absl::StatusOr<danet::volume::BratsCase> c = danet::volume::LoadBratsCase(dir);
  if (!c.ok()) {
    std::cerr << "danet-volume: " << c.status().message() << "\n";
    return 1;
  }
  nlohmann::json out = GeometryJson(c->image.geometry);
  out["case"] = c->case_id;
  if (c->seg) {
    std::map<std::string, int64_t> counts;
    for (uint8_t l : c->seg->labels) ++counts[std::to_string(l)];
    out["label_voxels"] = counts;
  }
  std::cout << out.dump() << "\n";
  return 0;
}

int Compare(const char* a_path, const char* b_path) {
  absl::StatusOr<danet::volume::LabelVolume> a = danet::volume::ReadNiftiLabels(a_path);
  absl::StatusOr<danet::volume::LabelVolume> b = danet::volume::ReadNiftiLabels(b_path);
  for (const auto* v : {&a, &b}) {
    if (!v->ok()) {
      std::cerr << "danet-volume: " << v->status().message() << "\n";
      return 1;
    }
  }
  if (!a->geometry.SameGrid(b->geometry)) {
    std::cerr << "danet-volume: " << b_path << " is " << b->geometry.Describe() << " but " << a_path
              << " is " << a->geometry.Describe() << ": not one grid\n";
    return 1;
  }
  int64_t differ = 0;
  for (size_t i = 0; i < a->labels.size(); ++i) differ += a->labels[i] != b->labels[i];
  const auto n = static_cast<double>(a->labels.size());
  nlohmann::json out = {{"a", a_path},
                        {"b", b_path},
                        {"voxels", a->labels.size()},
                        {"differ", differ},
                        {"agreement", n > 0 ? 1.0 - static_cast<double>(differ) / n : 1.0},
                        // eval::Dice counts every non-zero label: the whole tumour.
                        {"whole_tumour_dice", danet::eval::Dice(a->labels, b->labels)}};
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string usage =
      "usage: danet-volume info FILE... | danet-volume case DIR | danet-volume compare A B";
  if (args.size() >= 3 && std::string(args[1]) == "info") {
    return Info(std::vector<char*>(args.begin() + 2, args.end()));
  }
  if (args.size() == 3 && std::string(args[1]) == "case") return Case(args[2]);
  if (args.size() == 4 && std::string(args[1]) == "compare") return Compare(args[2], args[3]);
  std::cerr << usage << "\n";
  return 2;
}
