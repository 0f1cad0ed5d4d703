// One segmentation request after its upload: decode, preprocess, route and segment with the
// engine, and turn the results into response messages (per-slice results as they complete,
// the summary, the requested outputs). Transport-free: the service adapter passes an `emit`
// that queues messages on the stream, so the same job runs in tests without gRPC.
//
// Thread safety: RunJob only reads the bank; any number may run at once.
#ifndef DANET_SERVER_CORE_JOB_H_
#define DANET_SERVER_CORE_JOB_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "danet/v1/segmentation.pb.h"
#include "models/bank/bank.h"
#include "models/engine/case.h"
#include "models/engine/router.h"
#include "models/volume/volume.h"
#include "server/core/upload.h"

namespace danet::service {

struct JobOptions {
  int64_t output_chunk_bytes = 512 * 1024;  // OutputChunk payload size
  int decision_batch = 16;                  // see engine::SegmentOptions
  int model_batch = 1;
  bool crop_to_brain = true;
};

struct JobContext {
  std::chrono::steady_clock::time_point received;  // header arrived
  double receive_seconds = 0;                      // header to last chunk
  double queued_seconds = 0;                       // waiting for a worker
  // Called with each response message in stream order; must not block for long.
  std::function<void(v1::SegmentResponse)> emit;
  // Polled between slices (the client's cancellation or deadline); may be empty.
  std::function<bool()> cancelled;
};

// A request decoded and preprocessed: the first half of RunJob. The service prepares the next
// queued request while the worker computes the one before it (ServiceOptions.prepare_ahead).
struct PreparedJob {
  engine::Policy policy;
  engine::PreparedCase input;            // the bank input (engine::PrepareCase)
  std::vector<std::string> input_notes;  // e.g. resampled modalities, for the summary
  v1::Timing timing;                     // receive, queued, decode and preprocess so far
};

// Checks the header's policy, decodes and preprocesses the upload, and emits Accepted. On error
// nothing is emitted and the status says why (InvalidArgument naming the file or field for bad
// input, Cancelled when `cancelled` fired).
absl::StatusOr<PreparedJob> PrepareJob(const models::Bank& bank, Upload* upload,
                                       const JobContext& context);

// The second half: routes and segments, emitting each slice as it completes, then the summary
// and the outputs. `context.queued_seconds` is added to the job's queued time (the wait for a
// worker after preparing). Errors as above.
absl::Status ComputeJob(const models::Bank& bank, const Upload& upload, PreparedJob job,
                        const JobContext& context, const JobOptions& options = {});

// Runs the whole request: PrepareJob, then ComputeJob.
absl::Status RunJob(const models::Bank& bank, Upload* upload, const JobContext& context,
                    const JobOptions& options = {});

// Fills `response` from the bank and its config (the DescribeBank RPC).
void DescribeBank(const models::Bank& bank, const std::string& bundle_path,
                  v1::DescribeBankResponse* response);

}  // namespace danet::service

#endif  // DANET_SERVER_CORE_JOB_H_
