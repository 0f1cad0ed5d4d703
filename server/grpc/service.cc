#include "server/grpc/service.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "models/bank/device.h"
#include "server/grpc/status.h"

namespace danet::service {

using Clock = std::chrono::steady_clock;

// How close to its deadline a cancellation counts as the deadline (see OnCancel).
constexpr std::chrono::milliseconds kDeadlineSlack(500);

// One Segment call. States: reading the header and chunks (the upload: watched by the
// watchdog, holding an upload slot) -> (upload complete, compute slot taken) job queued -> job
// running, its messages written as they come -> job done, remaining writes drained -> Finish ->
// OnDone. Errors and upload timeouts before the job Finish at once; after submission Finish
// waits for the job, which stops between slices once the call is cancelled.
//
// Owned by a shared_ptr to itself (self_) that OnDone drops; the watchdog holds it weakly and
// pins it only while it calls Expire, so the reactor dies in OnDone or right after that call.
class SegmentReactor : public grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse>,
                       public Watchdog::Entry {
 public:
  SegmentReactor(SegmentationService* service, grpc::CallbackServerContext* context)
      : service_(service),
        context_(context),
        received_(Clock::now()),
        last_read_(received_.time_since_epoch().count()) {}

  // The first read, or UNAUTHENTICATED at once when `client` is an error; from now on the
  // reactor keeps itself alive until OnDone.
  void Start(std::shared_ptr<SegmentReactor> self, absl::StatusOr<std::string> client) {
    self_ = std::move(self);
    peer_ = context_->peer();
    std::unique_lock<std::mutex> lock(mutex_);
    if (!client.ok()) {
      client_ = kUnauthenticatedClient;
      FinishLocked(client.status(), &lock);
      return;
    }
    client_ = *std::move(client);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (final_status_.has_value()) return;  // ended (an upload timer) while the read was pending
    if (!ok) {
      // The client half-closed or went away before the upload was complete; if it went away,
      // OnDone counts the call as CANCELLED, which is what the client saw.
      FinishLocked(
          absl::InvalidArgumentError("the request stream ended before every file was complete"),
          &lock);
      return;
    }
    last_read_ = Clock::now().time_since_epoch().count();
    absl::Status status = upload_ == nullptr ? OnHeader() : OnChunk();
    if (!status.ok()) {
      FinishLocked(status, &lock);
    } else if (upload_ != nullptr && upload_->complete()) {
      SubmitJob(&lock);
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

  void OnCancel() override {
    // A client whose deadline passes cancels the call itself, so its cancellation can arrive a
    // moment before the server's copy of the deadline (that copy is later by the header's
    // transit); anything that close to the deadline is the deadline.
    by_deadline_ = context_->deadline() - kDeadlineSlack <= std::chrono::system_clock::now();
    cancelled_ = true;
  }

  void OnDone() override {
    const double seconds = std::chrono::duration<double>(Clock::now() - received_).count();
    // OnCancel, when it comes, comes before OnDone: a cancelled call's client saw CANCELLED or,
    // when its deadline had passed, DEADLINE_EXCEEDED, not the status the server chose.
    grpc::StatusCode code = final_code_;
    if (cancelled_) {
      code = by_deadline_ ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED;
    }
    if (service_->metrics_) {
      service_->metrics_->RequestFinished(GrpcCodeName(code), static_kind_, client_, seconds,
                                          counted_);
    }
    if (service_->options_.log_requests) {
      // Client-chosen strings only as ClientText made them; no file names, header contents or
      // status messages (which may name files).
      Log("request",
          {{"request_id", request_id_},
           {"client", client_},
           {"peer", peer_},
           {"code", GrpcCodeName(code)},
           {"policy", policy_},
           {"seconds", seconds},
           {"received_bytes", received_bytes_}},
          service_->options_.log);
    }
    if (holds_upload_slot_) service_->ReleaseUploadSlot();
    if (admitted_) service_->queue_.Release();
    SegmentationService* const service = service_;
    self_.reset();  // deletes `this` unless the watchdog is checking it right now
    service->CallEnded();
  }

  // Watchdog::Entry: the upload's idle and total limits, while it uploads.
  Clock::time_point deadline() const override {
    if (!watched_) return Clock::time_point::max();
    const Clock::time_point last{Clock::duration(last_read_.load())};
    return std::min(last + IdleLimit(), received_ + TotalLimit());
  }

  void Expire() override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!watched_ || final_status_.has_value() || Clock::now() < deadline()) return;
    const auto now = Clock::now();
    const absl::Status status =
        now >= received_ + TotalLimit()
            ? absl::DeadlineExceededError(absl::StrCat(
                  "the upload took longer than ", service_->options_.max_upload_seconds,
                  " s (the server's --max_upload_seconds); retry on a faster link"))
            : absl::DeadlineExceededError(
                  absl::StrCat("nothing received for ", service_->options_.upload_idle_seconds,
                               " s during the upload (the server's --upload_idle_seconds)"));
    upload_.reset();  // its buffers go now, not when the client goes
    FinishLocked(status, &lock);
  }

 private:
  Clock::duration IdleLimit() const {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(service_->options_.upload_idle_seconds));
  }
  Clock::duration TotalLimit() const {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(service_->options_.max_upload_seconds));
  }

  bool DeadlinePassed() const { return context_->deadline() <= std::chrono::system_clock::now(); }

  // With mutex_ held.
  absl::Status OnHeader() {
    if (!request_.has_header()) {
      return absl::InvalidArgumentError("the first message must be a header, not a chunk");
    }
    // Identify the call first, so that a refused one is logged and counted as itself.
    const v1::Header& header = request_.header();
    request_id_ = ClientText(header.request_id());
    policy_ = ClientText(header.policy());
    static_kind_ = header.policy().rfind("static:", 0) == 0 ? "static" : "dynamic";
    bank_ = service_->bank();
    if (bank_ == nullptr) return absl::UnavailableError("the server is still loading its bundle");
    if (service_->draining_) return absl::UnavailableError("the server is shutting down");
    if (service_->queue_.full()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server is busy (", service_->queue_.capacity(),
                       " requests computing or queued, the queue is full); retry later"));
    }
    if (!service_->TakeUploadSlot()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server is busy (", service_->options_.max_uploads,
                       " uploads in progress, its --max_uploads); retry later"));
    }
    holds_upload_slot_ = true;
    counted_ = true;
    if (service_->metrics_) service_->metrics_->RequestStarted();
    absl::StatusOr<std::unique_ptr<Upload>> upload =
        Upload::Create(header, {volume::kModalities.begin(), volume::kModalities.end()},
                       service_->options_.limits);
    if (!upload.ok()) return upload.status();
    upload_ = *std::move(upload);
    return absl::OkStatus();
  }

  // With mutex_ held.
  absl::Status OnChunk() {
    if (!request_.has_chunk()) return absl::InvalidArgumentError("a second header in one request");
    received_bytes_ += static_cast<int64_t>(request_.chunk().data().size());
    if (service_->metrics_) service_->metrics_->BytesReceived(request_.chunk().data().size());
    return upload_->Add(request_.chunk());
  }

  // With mutex_ held: the upload is complete; trade its upload slot for a compute slot.
  void SubmitJob(std::unique_lock<std::mutex>* lock) {
    if (!service_->queue_.TryAdmit()) {
      // Only when the queue filled up during the upload.
      FinishLocked(absl::ResourceExhaustedError(absl::StrCat(
                       "the server is busy (", service_->queue_.capacity(),
                       " requests computing or queued, the queue is full); retry later")),
                   lock);
      return;
    }
    admitted_ = true;
    watched_ = false;
    service_->ReleaseUploadSlot();
    holds_upload_slot_ = false;
    receive_seconds_ = std::chrono::duration<double>(Clock::now() - received_).count();
    job_running_ = true;
    const auto queued = Clock::now();
    if (service_->options_.prepare_ahead) {
      service_->prepare_.Submit([this, queued] { PrepareAhead(queued); });
    } else {
      service_->queue_.Submit([this, queued] { RunJob(queued); });
    }
    service_->ReportQueueDepth();
  }

  bool Stopped() const { return cancelled_ || broken_ || DeadlinePassed(); }

  // What a job needs from the call; queued_seconds counts from `queued`.
  JobContext Context(Clock::time_point queued) {
    JobContext job;
    job.received = received_;
    job.receive_seconds = receive_seconds_;
    job.queued_seconds = std::chrono::duration<double>(Clock::now() - queued).count();
    job.cancelled = [this] { return Stopped(); };
    job.emit = [this](v1::SegmentResponse response) { Enqueue(std::move(response)); };
    return job;
  }

  // On a worker thread. The upload is no longer touched by any callback (no read is pending).
  void RunJob(Clock::time_point queued) {
    service_->ReportQueueDepth();
    const JobContext job = Context(queued);
    JobEnded(Stopped() ? absl::CancelledError("cancelled while queued")
                       : service::RunJob(*bank_, upload_.get(), job, service_->options_.job));
  }

  // On the prepare thread (ServiceOptions::prepare_ahead): decodes and preprocesses while the
  // worker may still compute the request before, then queues the computation.
  void PrepareAhead(Clock::time_point queued) {
    if (Stopped()) return JobEnded(absl::CancelledError("cancelled while queued"));
    // At most one request decoded ahead, and only when the memory budget has room for it now;
    // otherwise the worker decodes it when its turn comes, as without prepare_ahead. A request
    // that fell back keeps later ones from being decoded ahead until its own memory is
    // reserved, so that none of them takes memory it waits for.
    if (service_->prepared_waiting_.load() >= 1 || service_->unprepared_waiting_.load() > 0 ||
        !upload_->Reserve().ok()) {
      ++service_->unprepared_waiting_;
      service_->queue_.Submit([this, queued] {
        (void)upload_->Reserve();  // Decode reports it if it still does not fit
        --service_->unprepared_waiting_;
        RunJob(queued);
      });
      return;
    }
    const JobContext job = Context(queued);
    absl::StatusOr<PreparedJob> prepared = service::PrepareJob(*bank_, upload_.get(), job);
    if (!prepared.ok()) return JobEnded(prepared.status());
    prepared_ = std::make_unique<PreparedJob>(*std::move(prepared));
    ++service_->prepared_waiting_;
    const auto ready = Clock::now();
    service_->queue_.Submit([this, ready] { ComputePrepared(ready); });
  }

  // On a worker thread, after PrepareAhead.
  void ComputePrepared(Clock::time_point ready) {
    --service_->prepared_waiting_;
    service_->ReportQueueDepth();
    const JobContext job = Context(ready);
    JobEnded(Stopped() ? absl::CancelledError("cancelled while queued")
                       : service::ComputeJob(*bank_, *upload_, std::move(*prepared_), job,
                                             service_->options_.job));
  }

  // The job's last step, on whichever thread ran it.
  void JobEnded(absl::Status status) {
    prepared_.reset();
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
        service_->metrics_->Volume(s.gmacs(), s.gmacs_all_largest(), s.first_pass_gmacs());
        const v1::Timing& t = s.seconds();
        for (auto [stage, seconds] : {std::pair{"receive", t.receive()},
                                      {"decode", t.decode()},
                                      {"preprocess", t.preprocess()},
                                      {"decide", t.decide()},
                                      {"segment", t.segment()},
                                      {"encode", t.encode()},
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
    // A stopped job reports CANCELLED whatever stopped it; say which.
    if (!status.ok() && (DeadlinePassed() || by_deadline_)) {
      status = absl::DeadlineExceededError("the call's deadline passed");
    } else if (!status.ok() && cancelled_) {
      status = absl::CancelledError("request cancelled");
    }
    final_code_ = static_cast<grpc::StatusCode>(status.code());
    lock->unlock();
    Finish(ToGrpcStatus(status));
  }

  // With mutex_ held, before any job was submitted: ends the call.
  void FinishLocked(const absl::Status& status, std::unique_lock<std::mutex>* lock) {
    watched_ = false;
    final_status_ = status;
    WriteNextOrFinish(lock);
  }

  SegmentationService* const service_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point received_;  // the call's start
  std::shared_ptr<SegmentReactor> self_;
  std::shared_ptr<const models::Bank> bank_;
  v1::SegmentRequest request_;
  std::unique_ptr<Upload> upload_;
  std::unique_ptr<PreparedJob> prepared_;  // between PrepareAhead and ComputePrepared
  std::atomic<Clock::rep> last_read_;      // when the last message arrived (for the watchdog)
  std::atomic<bool> watched_{true};        // uploading: the watchdog's timers apply
  bool holds_upload_slot_ = false;
  bool admitted_ = false;  // holds a compute slot
  bool counted_ = false;   // RequestStarted was reported
  std::string client_;     // the name its token maps to (tokens.h), fixed in Start
  std::string peer_;       // "ipv4:10.1.2.3:41234": where the call came from, for the log
  std::string request_id_;
  std::string policy_;
  std::string static_kind_ = "dynamic";
  int64_t received_bytes_ = 0;
  double receive_seconds_ = 0;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> by_deadline_{false};  // the cancellation came at the deadline
  std::atomic<bool> broken_{false};       // a write failed: the client is gone

  std::mutex mutex_;  // guards the upload and the write state below
  std::deque<v1::SegmentResponse> pending_;
  v1::SegmentResponse current_;
  bool writing_ = false;
  bool job_running_ = false;
  bool finished_ = false;
  std::optional<absl::Status> final_status_;
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;
};

SegmentationService::SegmentationService(const ServiceOptions& options, ServiceMetrics* metrics)
    : options_(options),
      metrics_(metrics),
      // Idle for a while: the memory the last case freed goes back to the kernel
      // (TuneHostMemory kept it for reuse).
      queue_(options.workers, options.queue_size, models::ReleaseFreeHostMemory,
             std::chrono::milliseconds(static_cast<int64_t>(options.idle_release_seconds * 1000))),
      prepare_(options.prepare_ahead ? 1 : 0, 0) {}

SegmentationService::~SegmentationService() = default;

void SegmentationService::ReportQueueDepth() {
  if (metrics_) metrics_->QueueDepth(queue_.waiting() + prepare_.waiting());
}

void SegmentationService::SetBank(std::shared_ptr<const models::Bank> bank) {
  std::lock_guard<std::mutex> lock(bank_mutex_);
  bank_ = std::move(bank);
}

std::shared_ptr<const models::Bank> SegmentationService::bank() const {
  std::lock_guard<std::mutex> lock(bank_mutex_);
  return bank_;
}

void SegmentationService::StartDraining() { draining_ = true; }

absl::StatusOr<std::string> SegmentationService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  if (options_.tokens == nullptr) return std::string(kAnonymousClient);
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  std::optional<absl::string_view> authorization;
  if (found != metadata.end()) {
    authorization = absl::string_view(found->second.data(), found->second.size());
  }
  return options_.tokens->Authenticate(authorization);
}

bool SegmentationService::WaitUntilIdle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(idle_mutex_);
  return idle_.wait_until(lock, deadline, [this] { return inflight() == 0; });
}

bool SegmentationService::TakeUploadSlot() {
  int uploads = uploads_.load();
  do {
    if (uploads >= options_.max_uploads) return false;
  } while (!uploads_.compare_exchange_weak(uploads, uploads + 1));
  return true;
}

void SegmentationService::ReleaseUploadSlot() { --uploads_; }

void SegmentationService::CallEnded() {
  // Taking the lock orders this after a waiter's check of inflight(): no wake-up is lost.
  { std::lock_guard<std::mutex> lock(idle_mutex_); }
  idle_.notify_all();
}

grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentResponse>* SegmentationService::Segment(
    grpc::CallbackServerContext* context) {
  auto reactor = std::make_shared<SegmentReactor>(this, context);
  reactor->Start(reactor, Authenticate(*context));
  watchdog_.Watch(reactor);  // after Start: OnDone cannot run before this returns
  return reactor.get();
}

grpc::ServerUnaryReactor* SegmentationService::DescribeBank(grpc::CallbackServerContext* context,
                                                            const v1::DescribeBankRequest*,
                                                            v1::DescribeBankResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::string> client = Authenticate(*context); !client.ok()) {
    reactor->Finish(ToGrpcStatus(client.status()));
    return reactor;
  }
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
