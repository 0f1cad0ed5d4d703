// One case's summary, built in one place for every caller: the route names ("skip", then the
// bank's model ids), the slices per route, the cost against the all-largest baseline (every
// slice through the costliest bank model, no decision network) and the tumour volumes. The
// service's Summary message (server/core/job.cc), danet-segment's report and danet-eval's
// per-case routes are all filled from it.
//
// Thread safety: pure functions; the bank is only read.
#ifndef DANET_MODELS_ENGINE_SUMMARY_H_
#define DANET_MODELS_ENGINE_SUMMARY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/bank/bank.h"
#include "models/engine/result.h"
#include "models/volume/volume.h"

namespace danet::engine {

// Route r's name: "skip" for 0, then bank model r-1's id.
std::vector<std::string> RouteNames(const models::Bank& bank);

// The all-largest baseline's model: the bank model with the highest gmacs_per_slice (the first
// of equals), whatever its position in the bank.
int CostliestModel(const models::Bank& bank);

// Tumour volumes in mL per BraTS region: WT (label > 0), TC (1 or 4), ET (4).
struct TumourVolumes {
  double wt = 0;
  double tc = 0;
  double et = 0;
};
TumourVolumes MeasureTumourVolumes(const std::vector<uint8_t>& labels,
                                   const volume::Geometry& geometry);

struct CaseSummary {
  std::vector<std::string> route_names;  // RouteNames
  std::vector<int> route_counts;         // slices per route, indexed like route_names
  double gmacs = 0;                      // the case as routed (decision network included)
  std::string largest_model;             // CostliestModel's id
  double gmacs_all_largest = 0;          // every slice through it
  TumourVolumes volumes_ml;

  // route_counts keyed by route name (for JSON and the Summary message's map).
  std::map<std::string, int> RouteCountsByName() const;
};

// Summarises `result`, the engine's output for a volume of `geometry`.
CaseSummary SummarizeCase(const models::Bank& bank, const VolumeResult& result,
                          const volume::Geometry& geometry);

}  // namespace danet::engine

#endif  // DANET_MODELS_ENGINE_SUMMARY_H_
