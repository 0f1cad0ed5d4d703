// danet-volume: look at volumes the way the engine reads them.
//
//   danet-volume info FILE...   one JSON line per file: dims, spacing, NIfTI version,
//                               voxel-to-world matrix, min / max / mean
//   danet-volume case DIR       load a BraTS case folder and report its grid and labels
//
// Exit codes: 0 ok, 1 a file or folder is bad (the message says which and why), 2 usage.
#include <algorithm>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "absl/flags/parse.h"
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

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string usage = "usage: danet-volume info FILE... | danet-volume case DIR";
  if (args.size() >= 3 && std::string(args[1]) == "info") {
    return Info(std::vector<char*>(args.begin() + 2, args.end()));
  }
  if (args.size() == 3 && std::string(args[1]) == "case") return Case(args[2]);
  std::cerr << usage << "\n";
  return 2;
}
