// `danet bench`: N cases x concurrency against a running server, for several policies in the
// same run (so their ratios are fair on a noisy machine): latency p50/p95, throughput, cost,
// and the share of wall time that is not model compute.
#ifndef DANET_CLIENT_CLI_BENCH_H_
#define DANET_CLIENT_CLI_BENCH_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/call.h"

namespace danet::client {

struct BenchOptions {
  std::vector<std::vector<InputFile>> cases;  // each run in turn (cycled to reach `count`)
  int count = 4;                              // cases per policy
  int concurrency = 1;
  std::vector<std::string> policies = {"dynamic", "static:M1", "static:M4"};
  std::function<void(const std::string&)> on_progress;  // one line per finished case
};

// {"policies": {"dynamic": {"p50_s","p95_s","cases_per_min","gmacs_mean","overhead_fraction",
//  "seconds_mean": {...}}, ...}, "cases", "concurrency"}
absl::StatusOr<nlohmann::json> RunBench(v1::Segmentation::Stub* stub, const BenchOptions& options);

// The table `danet bench` prints.
std::string BenchTable(const nlohmann::json& bench);

}  // namespace danet::client

#endif  // DANET_CLIENT_CLI_BENCH_H_
