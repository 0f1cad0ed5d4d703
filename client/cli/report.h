// What `danet segment` shows and writes: the summary table, the JSON report (its schema is in
// docs/api.md) and the preview montage.
#ifndef DANET_CLIENT_CLI_REPORT_H_
#define DANET_CLIENT_CLI_REPORT_H_

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/cli/call.h"

namespace danet::client {

nlohmann::json ReportJson(const CaseResult& result);

// The server's time split by stage (receive, decode, preprocess, decide, segment, encode,
// queued, total) and the client's wall time ("client_wall"), in that order: the report's
// "seconds" and the means `danet bench` reports.
std::vector<std::pair<std::string, double>> TimingSeconds(const v1::Timing& timing,
                                                          double client_wall);

// Routes with counts and share, GMACs and saving against the largest model, the time split,
// tumour volumes.
void PrintSummary(const CaseResult& result, std::ostream& out);

// Renders the montage (FLAIR from the inputs, read here again; the labels; the route of every
// slice) to a PNG.
absl::Status WritePreview(const CaseResult& result, const std::vector<InputFile>& inputs,
                          const CallOptions& call, const std::string& title,
                          const std::string& png_path);

}  // namespace danet::client

#endif  // DANET_CLIENT_CLI_REPORT_H_
