// Process-level pieces of the server: warming the bank up before SERVING, process metrics, and
// the log.
//
// The log is one JSON object per line on stderr, so that a collector can parse it and so that
// no client-chosen text can start a line of its own (JSON escapes newlines; client strings are
// passed through ClientText besides). Every line carries "time" (UTC, RFC 3339 with
// milliseconds) and "event". No patient data goes in: no file names, header contents or
// status messages (which may echo file names), only ids, codes, policies and timings.
#ifndef DANET_SERVER_GRPC_RUNTIME_H_
#define DANET_SERVER_GRPC_RUNTIME_H_

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

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

// A log line's fields, in the order given.
using LogFields = nlohmann::ordered_json;

// Where whole log lines go (without the newline). Called from any thread, one line per call.
using LogSink = std::function<void(const std::string& line)>;

// Writes `line` and a newline to stderr in one write, under a process-wide mutex, so that lines
// from concurrent calls never interleave.
void WriteStderrLine(const std::string& line);

// One log line: {"time": ..., "event": event, ...fields} on one line. Never throws (bytes that
// are not UTF-8 are replaced).
std::string FormatLogLine(std::string_view event, const LogFields& fields = {});

// FormatLogLine, then `sink` (WriteStderrLine when empty).
void Log(std::string_view event, const LogFields& fields = {}, const LogSink& sink = {});

}  // namespace danet::service

#endif  // DANET_SERVER_GRPC_RUNTIME_H_
