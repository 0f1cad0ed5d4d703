#include "models/engine/summary.h"

namespace danet::engine {

std::vector<std::string> RouteNames(const models::Bank& bank) {
  std::vector<std::string> names = {"skip"};
  for (int i = 0; i < bank.size(); ++i) names.push_back(bank.model_config(i).id());
  return names;
}

int CostliestModel(const models::Bank& bank) {
  int largest = 0;
  for (int i = 1; i < bank.size(); ++i) {
    if (bank.model_config(i).gmacs_per_slice() > bank.model_config(largest).gmacs_per_slice()) {
      largest = i;
    }
  }
  return largest;
}

TumourVolumes MeasureTumourVolumes(const std::vector<uint8_t>& labels,
                                   const volume::Geometry& geometry) {
  int64_t wt = 0, tc = 0, et = 0;
  for (uint8_t l : labels) {
    wt += l != 0;
    tc += l == 1 || l == 4;
    et += l == 4;
  }
  const auto& s = geometry.spacing;
  const double ml = s[0] * s[1] * s[2] / 1000.0;
  return {wt * ml, tc * ml, et * ml};
}

std::map<std::string, int> CaseSummary::RouteCountsByName() const {
  std::map<std::string, int> counts;
  for (size_t r = 0; r < route_names.size(); ++r) counts[route_names[r]] += route_counts[r];
  return counts;
}

CaseSummary SummarizeCase(const models::Bank& bank, const VolumeResult& result,
                          const volume::Geometry& geometry) {
  CaseSummary summary;
  summary.route_names = RouteNames(bank);
  summary.route_counts.assign(summary.route_names.size(), 0);
  for (const SliceResult& s : result.slices) ++summary.route_counts[s.route];
  summary.gmacs = result.gmacs;
  const int largest = CostliestModel(bank);
  summary.largest_model = bank.model_config(largest).id();
  summary.gmacs_all_largest = bank.model_config(largest).gmacs_per_slice() * geometry.dims[2];
  summary.volumes_ml = MeasureTumourVolumes(result.labels, geometry);
  return summary;
}

}  // namespace danet::engine
