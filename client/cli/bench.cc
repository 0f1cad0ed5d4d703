#include "client/cli/bench.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/report.h"

namespace danet::client {
namespace {

using Clock = std::chrono::steady_clock;

// Nearest-rank percentile of sorted values.
double Percentile(const std::vector<double>& sorted, double p) {
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * sorted.size()));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

absl::StatusOr<nlohmann::json> RunPolicy(v1::Segmentation::Stub* stub, const BenchOptions& o,
                                         const std::string& policy) {
  std::vector<CaseResult> results(o.count);
  std::vector<absl::Status> errors(o.count);
  std::atomic<int> next{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, o.concurrency); ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < o.count; i = next++) {
        CallOptions call;
        call.policy = policy;
        call.request_id = absl::StrCat("bench-", policy, "-", i);
        absl::StatusOr<CaseResult> r = SegmentFiles(stub, o.cases[i % o.cases.size()], call);
        if (!r.ok()) {
          errors[i] = r.status();
          continue;
        }
        results[i] = *std::move(r);
        if (o.on_progress) {
          o.on_progress(absl::StrFormat("%s case %d/%d: %.1f s", policy, i + 1, o.count,
                                        results[i].wall_seconds));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  for (const absl::Status& e : errors) {
    if (!e.ok()) return absl::Status(e.code(), absl::StrCat(policy, ": ", e.message()));
  }
  std::vector<double> latency;
  double gmacs = 0, overhead = 0;
  nlohmann::json seconds = nlohmann::json::object();
  for (const CaseResult& r : results) {
    latency.push_back(r.wall_seconds);
    gmacs += r.summary.gmacs();
    const v1::Timing& t = r.summary.seconds();
    overhead += (r.wall_seconds - t.decide() - t.segment() - t.queued()) / r.wall_seconds;
    for (const auto& [k, v] : TimingSeconds(t, r.wall_seconds)) {
      seconds[k] = seconds.value(k, 0.0) + v / o.count;
    }
  }
  std::sort(latency.begin(), latency.end());
  return nlohmann::json{
      {"p50_s", Percentile(latency, 50)},        {"p95_s", Percentile(latency, 95)},
      {"cases_per_min", 60.0 * o.count / wall},  {"gmacs_mean", gmacs / o.count},
      {"overhead_fraction", overhead / o.count}, {"seconds_mean", seconds}};
}

}  // namespace

absl::StatusOr<nlohmann::json> RunBench(v1::Segmentation::Stub* stub, const BenchOptions& o) {
  if (o.cases.empty() || o.count < 1) return absl::InvalidArgumentError("bench: no cases");
  nlohmann::json out = {{"cases", o.count}, {"concurrency", o.concurrency}};
  for (const std::string& policy : o.policies) {
    absl::StatusOr<nlohmann::json> r = RunPolicy(stub, o, policy);
    if (!r.ok()) return r.status();
    out["policies"][policy] = *r;
  }
  return out;
}

std::string BenchTable(const nlohmann::json& bench) {
  std::string out = absl::StrFormat("%d cases per policy, concurrency %d\n",
                                    bench["cases"].get<int>(), bench["concurrency"].get<int>());
  absl::StrAppendFormat(&out, "  %-14s %8s %8s %10s %10s %9s\n", "policy", "p50 s", "p95 s",
                        "cases/min", "GMACs", "overhead");
  for (const auto& [name, p] : bench["policies"].items()) {
    absl::StrAppendFormat(&out, "  %-14s %8.2f %8.2f %10.2f %10.1f %8.1f%%\n", name,
                          p["p50_s"].get<double>(), p["p95_s"].get<double>(),
                          p["cases_per_min"].get<double>(), p["gmacs_mean"].get<double>(),
                          100 * p["overhead_fraction"].get<double>());
  }
  return out;
}

}  // namespace danet::client
