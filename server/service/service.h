// The gRPC adapter of the segmentation service (danet.v1.Segmentation, callback API).
//
// It converts only: messages into an Upload and a job (server/service/job.h), job output into
// stream writes, absl::Status into grpc::Status. One SegmentReactor per call owns that call's
// state and deletes itself in OnDone; no callback blocks (the job runs on a WorkQueue worker).
//
// Lifetime: construct, register with a grpc::ServerBuilder, start the server, then SetBank once
// the bank is loaded and warm (until then calls get UNAVAILABLE). Destroy only after the
// grpc::Server has shut down. Thread safety: SetBank/StartDraining from any thread.
#ifndef DANET_SERVER_SERVICE_SERVICE_H_
#define DANET_SERVER_SERVICE_SERVICE_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "danet/v1/segmentation.grpc.pb.h"
#include "models/bank/bank.h"
#include "server/service/job.h"
#include "server/service/service_metrics.h"
#include "server/service/upload.h"
#include "server/service/work_queue.h"

namespace danet::service {

struct ServiceOptions {
  UploadLimits limits;
  JobOptions job;
  int workers = 1;     // segmentations running at once
  int queue_size = 4;  // admitted requests beyond those (uploading or waiting)
  std::string bundle_path;
  bool log_requests = true;  // one line per finished call on stderr (id, code, seconds)
};

class SegmentationService final : public v1::Segmentation::CallbackService {
 public:
  // `metrics` may be null; borrowed, must outlive the service.
  SegmentationService(const ServiceOptions& options, ServiceMetrics* metrics);
  ~SegmentationService() override;

  void SetBank(std::shared_ptr<const models::Bank> bank);
  // New calls get UNAVAILABLE; calls in flight go on.
  void StartDraining();
  int inflight() const { return queue_.admitted(); }

  grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse>* Segment(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* DescribeBank(grpc::CallbackServerContext* context,
                                         const v1::DescribeBankRequest* request,
                                         v1::DescribeBankResponse* response) override;

 private:
  friend class SegmentReactor;
  std::shared_ptr<const models::Bank> bank() const;

  const ServiceOptions options_;
  ServiceMetrics* const metrics_;
  std::atomic<bool> draining_{false};
  mutable std::mutex bank_mutex_;
  std::shared_ptr<const models::Bank> bank_;
  WorkQueue queue_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_SERVICE_H_
