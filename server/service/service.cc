#include "server/service/service.h"

#include <chrono>
#include <deque>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/service/status.h"

namespace danet::service {

using Clock = std::chrono::steady_clock;

// One Segment call. States: reading the header and chunks -> (upload complete) job queued ->
// job running, its messages written as they come -> job done, remaining writes drained ->
// Finish -> OnDone deletes. Errors before the job Finish at once; after submission Finish
// waits for the job, which stops between slices once the call is cancelled.
class SegmentReactor : public grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse> {
 public:
  SegmentReactor(SegmentationService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), received_(Clock::now()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed or went away before the upload was complete.
      FinishWith(cancelled_ ? absl::CancelledError("cancelled during the upload")
                            : absl::InvalidArgumentError(
                                  "the request stream ended before every file was complete"));
      return;
    }
    absl::Status status = upload_ == nullptr ? OnHeader() : OnChunk();
    if (!status.ok()) {
      FinishWith(status);
    } else if (upload_ != nullptr && upload_->complete()) {
      SubmitJob();
    } else {
      StartRead(&request_);
    }
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mutex_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      pending_.clear();
    }
    WriteNextOrFinish(&lock);
  }

  void OnCancel() override { cancelled_ = true; }

  void OnDone() override {
    const double seconds = std::chrono::duration<double>(Clock::now() - received_).count();
    if (admitted_) service_->queue_.Release();
    if (service_->metrics_) {
      service_->metrics_->RequestFinished(GrpcCodeName(final_code_), static_kind_, seconds,
                                          admitted_);
    }
    if (service_->options_.log_requests) {
      // Request ids are client-chosen opaque strings; no file names or contents are logged.
      std::cerr << "request " << (request_id_.empty() ? "-" : request_id_) << " "
                << GrpcCodeName(final_code_) << " " << static_kind_ << " " << seconds << "s\n";
    }
    delete this;
  }

 private:
  absl::Status OnHeader() {
    if (!request_.has_header()) {
      return absl::InvalidArgumentError("the first message must be a header, not a chunk");
    }
    bank_ = service_->bank();
    if (bank_ == nullptr) return absl::UnavailableError("the server is still loading its bundle");
    if (service_->draining_) return absl::UnavailableError("the server is shutting down");
    if (!service_->queue_.TryAdmit()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the server is busy (", service_->queue_.capacity(),
          " requests admitted, the queue is full); retry later"));
    }
    admitted_ = true;
    request_id_ = request_.header().request_id().substr(0, 64);
    if (service_->metrics_) service_->metrics_->RequestStarted();
    static_kind_ = request_.header().policy().rfind("static:", 0) == 0 ? "static" : "dynamic";
    absl::StatusOr<std::unique_ptr<Upload>> upload = Upload::Create(
        request_.header(), {volume::kModalities.begin(), volume::kModalities.end()},
        service_->options_.limits);
    if (!upload.ok()) return upload.status();
    upload_ = *std::move(upload);
    return absl::OkStatus();
  }

  absl::Status OnChunk() {
    if (!request_.has_chunk()) return absl::InvalidArgumentError("a second header in one request");
    if (service_->metrics_) service_->metrics_->BytesReceived(request_.chunk().data().size());
    return upload_->Add(request_.chunk());
  }

  void SubmitJob() {
    receive_seconds_ = std::chrono::duration<double>(Clock::now() - received_).count();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_running_ = true;
    }
    const auto queued = Clock::now();
    service_->queue_.Submit([this, queued] { RunJob(queued); });
    if (service_->metrics_) service_->metrics_->QueueDepth(service_->queue_.waiting());
  }

  bool Stopped() const {
    return cancelled_ || broken_ || context_->deadline() < std::chrono::system_clock::now();
  }

  // On a worker thread.
  void RunJob(Clock::time_point queued) {
    if (service_->metrics_) service_->metrics_->QueueDepth(service_->queue_.waiting());
    JobContext job;
    job.received = received_;
    job.receive_seconds = receive_seconds_;
    job.queued_seconds = std::chrono::duration<double>(Clock::now() - queued).count();
    job.cancelled = [this] { return Stopped(); };
    job.emit = [this](v1::SegmentResponse response) { Enqueue(std::move(response)); };
    absl::Status status = Stopped() ? absl::CancelledError("cancelled while queued")
                                    : service::RunJob(*bank_, upload_.get(), job,
                                                      service_->options_.job);
    upload_.reset();
    std::unique_lock<std::mutex> lock(mutex_);
    job_running_ = false;
    final_status_ = status;
    WriteNextOrFinish(&lock);  // the last touch of `this` on this thread
  }

  void Enqueue(v1::SegmentResponse response) {
    if (service_->metrics_) {
      if (response.has_slice()) {
        const v1::SliceResult& s = response.slice();
        service_->metrics_->Slice(s.route_name(), s.gmacs(), s.seconds());
      } else if (response.has_summary()) {
        const v1::Summary& s = response.summary();
        service_->metrics_->Volume(s.gmacs(), s.gmacs_all_largest());
        const v1::Timing& t = s.seconds();
        for (auto [stage, seconds] : {std::pair{"receive", t.receive()}, {"decode", t.decode()},
                                      {"preprocess", t.preprocess()}, {"decide", t.decide()},
                                      {"segment", t.segment()}, {"encode", t.encode()},
                                      {"queued", t.queued()}}) {
          service_->metrics_->StageSeconds(stage, seconds);
        }
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) return;
    pending_.push_back(std::move(response));
    WriteNextOrFinish(&lock);
  }

  // Called with mutex_ held: starts the next write, or Finishes once the job is done and every
  // message is written. Finish is the last thing it does (OnDone may delete `this` right after).
  void WriteNextOrFinish(std::unique_lock<std::mutex>* lock) {
    if (writing_ || finished_) return;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (job_running_ || !final_status_.has_value()) return;
    finished_ = true;
    absl::Status status = *final_status_;
    if (!status.ok() && cancelled_) status = absl::CancelledError("request cancelled");
    final_code_ = static_cast<grpc::StatusCode>(status.code());
    lock->unlock();
    Finish(ToGrpcStatus(status));
  }

  // Ends the call before any job was submitted.
  void FinishWith(const absl::Status& status) {
    std::unique_lock<std::mutex> lock(mutex_);
    final_status_ = status;
    WriteNextOrFinish(&lock);
  }

  SegmentationService* const service_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point received_;
  std::shared_ptr<const models::Bank> bank_;
  v1::SegmentRequest request_;
  std::unique_ptr<Upload> upload_;
  bool admitted_ = false;
  std::string request_id_;
  std::string static_kind_ = "dynamic";
  double receive_seconds_ = 0;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> broken_{false};  // a write failed: the client is gone

  std::mutex mutex_;  // guards the write state below
  std::deque<v1::SegmentResponse> pending_;
  v1::SegmentResponse current_;
  bool writing_ = false;
  bool job_running_ = false;
  bool finished_ = false;
  std::optional<absl::Status> final_status_;
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;
};

SegmentationService::SegmentationService(const ServiceOptions& options, ServiceMetrics* metrics)
    : options_(options), metrics_(metrics), queue_(options.workers, options.queue_size) {}

SegmentationService::~SegmentationService() = default;

void SegmentationService::SetBank(std::shared_ptr<const models::Bank> bank) {
  std::lock_guard<std::mutex> lock(bank_mutex_);
  bank_ = std::move(bank);
}

std::shared_ptr<const models::Bank> SegmentationService::bank() const {
  std::lock_guard<std::mutex> lock(bank_mutex_);
  return bank_;
}

void SegmentationService::StartDraining() { draining_ = true; }

grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse>* SegmentationService::Segment(
    grpc::CallbackServerContext* context) {
  return new SegmentReactor(this, context);
}

grpc::ServerUnaryReactor* SegmentationService::DescribeBank(grpc::CallbackServerContext* context,
                                                            const v1::DescribeBankRequest*,
                                                            v1::DescribeBankResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::shared_ptr<const models::Bank> loaded = bank();
  if (loaded == nullptr) {
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("the server is still loading its bundle")));
  } else {
    service::DescribeBank(*loaded, options_.bundle_path, response);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace danet::service
