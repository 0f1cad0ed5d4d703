// The gRPC adapter of the segmentation service (danet.v1.Segmentation, callback API).
//
// It converts only: messages into an Upload and a job (server/core/job.h), job output into
// stream writes, absl::Status into grpc::Status. One SegmentReactor per call owns that call's
// state and deletes itself in OnDone (or, if the upload watchdog is checking it at that moment,
// when the watchdog lets go); no callback blocks (the job runs on a WorkQueue worker, upload
// timers on the Watchdog thread).
//
// A call holds one of `max_uploads` upload slots from its header to its last chunk, then one of
// `workers + queue_size` compute slots until it ends. With prepare_ahead its decoding and
// preprocessing run on a prepare thread, its computation on a worker. Uploads that stall are ended
// by the watchdog, so idle streams can neither exhaust the compute slots nor hold memory for long.
//
// Every call is counted (danet_requests_total) and logged (one JSON line, see runtime.h) under
// the code its client saw: CANCELLED when the client cancelled, DEADLINE_EXCEEDED when its
// deadline passed, whatever the server was doing then; and under its client's name.
//
// Identity: with a token table (ServiceOptions::tokens) every danet.v1 call must carry
// `authorization: Bearer TOKEN` metadata naming a client of the table, or it ends at once with
// UNAUTHENTICATED (before any other check, so that a stranger learns nothing of the server's
// state); the name goes into the call's log line and its metrics. Without one, every call is
// "anonymous". grpc.health.v1 and reflection are other services and never ask for a token, so
// that probes work.
//
// Lifetime: construct, register with a grpc::ServerBuilder, start the server, then SetBank once
// the bank is loaded and warm (until then calls get UNAVAILABLE). Destroy only after the
// grpc::Server has shut down. Thread safety: SetBank, StartDraining, WaitUntilIdle and the
// accessors from any thread.
#ifndef DANET_SERVER_GRPC_SERVICE_H_
#define DANET_SERVER_GRPC_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "danet/v1/segmentation.grpc.pb.h"
#include "models/bank/bank.h"
#include "server/core/job.h"
#include "server/core/upload.h"
#include "server/core/work_queue.h"
#include "server/grpc/runtime.h"
#include "server/grpc/service_metrics.h"
#include "server/grpc/tokens.h"

namespace danet::service {

struct ServiceOptions {
  UploadLimits limits;
  JobOptions job;
  int workers = 1;     // segmentations running at once
  int queue_size = 4;  // uploaded requests waiting for a worker, beyond those running
  // Decode and preprocess the next request on a thread of its own as soon as its upload is
  // complete, so that it is ready while a worker computes: one request at a time ahead, and only
  // when the memory budget has room for it then (otherwise the worker decodes it in its turn).
  // false: the worker does both, one request after another. Off by default: on the 2-core
  // machine, where LibTorch already keeps both cores busy, it gained nothing measurable
  // (docs/benchmarks.md); it is for machines with cores to spare beyond LibTorch's threads.
  bool prepare_ahead = false;
  // The memory a case freed goes back to the kernel once no case has run or waited for this
  // long. Until then malloc keeps it for the next case, which would otherwise fault every page
  // of its buffers in again (docs/benchmarks.md). 0 (or less): at once, after every idle
  // moment.
  double idle_release_seconds = 2;
  // Calls between their header and their last chunk; more get RESOURCE_EXHAUSTED at the header.
  // Bounded apart from the compute slots because each holds its upload's buffers.
  int max_uploads = 32;
  // A call that receives no message for this long before its upload is complete (the header
  // included, counted from the call's start) ends with DEADLINE_EXCEEDED and frees its buffers.
  double upload_idle_seconds = 30;
  // The same for the whole upload, from the call's start to the last chunk, however steady.
  double max_upload_seconds = 300;
  std::string bundle_path;
  bool log_requests = true;  // one JSON line per finished call (id, code, policy, seconds)
  LogSink log;               // where those lines go; empty: stderr (WriteStderrLine)
  // Who may call (shared, immutable); null: no token is asked for and every client is
  // kAnonymousClient.
  std::shared_ptr<const TokenTable> tokens;
};

class SegmentationService final : public v1::Segmentation::CallbackService {
 public:
  // `metrics` may be null; borrowed, must outlive the service.
  SegmentationService(const ServiceOptions& options, ServiceMetrics* metrics);
  ~SegmentationService() override;

  void SetBank(std::shared_ptr<const models::Bank> bank);
  // New calls get UNAVAILABLE "the server is shutting down" (the listener stays up, so clients
  // are told rather than refused a connection); calls in flight go on.
  void StartDraining();
  // Waits until no call holds an upload or compute slot, or until `deadline`; true if idle.
  bool WaitUntilIdle(std::chrono::steady_clock::time_point deadline);
  // Calls uploading, queued or running.
  int inflight() const { return uploads() + queue_.admitted(); }
  int uploads() const { return uploads_.load(); }

  grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse>* Segment(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* DescribeBank(grpc::CallbackServerContext* context,
                                         const v1::DescribeBankRequest* request,
                                         v1::DescribeBankResponse* response) override;

 private:
  friend class SegmentReactor;
  std::shared_ptr<const models::Bank> bank() const;
  // The calling client's name (see Identity above), or UNAUTHENTICATED.
  absl::StatusOr<std::string> Authenticate(const grpc::CallbackServerContext& context) const;
  bool TakeUploadSlot();
  void ReleaseUploadSlot();
  // After a call gave its slots back: wakes WaitUntilIdle.
  void CallEnded();
  // Requests waiting for the prepare thread or a worker, to the queue-depth metric.
  void ReportQueueDepth();

  const ServiceOptions options_;
  ServiceMetrics* const metrics_;
  std::atomic<bool> draining_{false};
  mutable std::mutex bank_mutex_;
  std::shared_ptr<const models::Bank> bank_;
  std::atomic<int> uploads_{0};
  std::mutex idle_mutex_;
  std::condition_variable idle_;
  WorkQueue queue_;
  // One thread for ServiceOptions::prepare_ahead (none without it). Declared after queue_: on
  // destruction it finishes its work, which submits to queue_, before queue_ finishes.
  WorkQueue prepare_;
  std::atomic<int> prepared_waiting_{0};    // prepared ahead, not yet computing
  std::atomic<int> unprepared_waiting_{0};  // fell back to the worker, memory not yet reserved
  Watchdog watchdog_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_GRPC_SERVICE_H_
