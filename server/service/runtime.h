// Process-level pieces of the server: warming the bank up before SERVING, and process metrics.
#ifndef DANET_SERVER_SERVICE_RUNTIME_H_
#define DANET_SERVER_SERVICE_RUNTIME_H_

#include "absl/status/status.h"
#include "models/bank/bank.h"
#include "server/metrics/metrics.h"

namespace danet::service {

// Runs the decision network and every bank model on a blank batch of the bundle's slice size
// (twice: the first pass allocates), so the first request does not pay for it.
absl::Status WarmUp(const models::Bank& bank);

// process_resident_memory_bytes (now, /proc/self/statm), process_peak_resident_memory_bytes
// (getrusage) and process_start_time_seconds.
void AddProcessMetrics(metrics::Registry* registry);

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_RUNTIME_H_
