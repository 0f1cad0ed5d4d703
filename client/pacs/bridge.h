// danet-pacs-bridge's core: studies arrive over DICOM (C-STORE), wait until stable (no new
// instance for `stable_seconds` and no association still open), go to danet-server over gRPC,
// and the resulting DICOM SEG is stored back to the PACS (C-STORE). Nothing is lost: a study
// lives on disk under work_dir/incoming/<key>/ until its SEG is stored (then
// work_dir/done/<key>/ keeps the SEG and a result line) or it fails (work_dir/failed/<key>/
// keeps the instances, reason.txt and state.txt). Retryable failures (server unavailable or
// busy, deadline, PACS unreachable) are retried with exponential backoff, `max_attempts` times;
// studies left in incoming/ are picked up again at start.
//
// Failed studies come back on their own: one that failed retryably (the server or the PACS
// down for longer than the backoff) is moved back to incoming/ every `failed_retry_seconds`,
// and every failed study once at each start (the usual moment a configuration changes), both
// at most `failed_retry_rounds` times. A person can requeue any failed study at any time
// (`danet-pacs-bridge requeue KEY`, which leaves a `requeue` file in failed/<key>/ for the
// running bridge or the next start; RequestRequeue).
//
// Failures are visible in the PACS: when a study fails for good (not retryable, or the scheduled
// rounds spent), a DICOM Basic Text SR saying so and why is stored into the study (once per
// study; one the PACS did not take is tried again on the schedule), with the patient and study
// attributes the study itself holds and nothing else.
//
// Series naming rules: the bridge's --series_rules file, and a study's own rules in
// work_dir/rules/<key>.pbtxt (`danet-pacs-bridge requeue KEY --study_rules FILE` puts them
// there), are sent with the study (Header.series_rules) and tried before the server's rules.
//
// Idempotent: a PACS that auto-routes on "stable study" sends a study again once our SEG or
// report has made it change. Only MR instances are spooled (our SEG and SR coming back are
// ignored); a study whose MR series were all segmented before with the server's current bundle
// is not segmented again (done/<key>/sources.txt records the bundle and the series, as keys, of
// each SEG stored); and a study that failed for a reason a retry cannot change (bad input) with
// the same bundle and no new instance (spooled files are named by series and instance) is not
// tried again until someone requeues it. Anything new for a failed study joins the failed
// copy's instances, and the whole study is tried again (a missing slice sent later completes
// it).
//
// The server is reached through client/cli/channel.h: plaintext, TLS or mutual TLS, and a
// bearer token on every call. A missing or wrong token (UNAUTHENTICATED) is not retried: the
// study goes to failed/ with that reason.
//
// Logs are JSON lines on stderr with a study key (a hash of the StudyInstanceUID), never
// patient attributes. Thread safety: Run on one thread, Stop from any.
#ifndef DANET_CLIENT_PACS_BRIDGE_H_
#define DANET_CLIENT_PACS_BRIDGE_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli/channel.h"
#include "client/pacs/dicom_net.h"
#include "danet/v1/segmentation.grpc.pb.h"
#include "server/metrics/metrics.h"

namespace danet::pacs {

struct BridgeOptions {
  std::string ae_title = "DANET";
  int port = 11112;                              // DICOM listen port
  std::vector<std::string> allowed_calling_aes;  // empty: any
  std::vector<std::string> allowed_hosts;        // peer IP addresses; empty: any
  Peer peer;                                     // where SEGs go
  std::string server = "127.0.0.1:50051";
  client::ChannelSecurity security;  // TLS and the token file for `server`
  std::string work_dir = "danet-bridge";
  std::string policy;  // empty: the server's default (the bundle's)
  double stable_seconds = 5;
  int max_attempts = 8;
  double backoff_seconds = 2;  // first retry delay; doubles each time
  double max_backoff_seconds = 300;
  double deadline_seconds = 600;       // per segmentation call
  double failed_retry_seconds = 1800;  // a retryable failure is tried again after this long
  int failed_retry_rounds = 12;        // at most this many times (and at starts); 0: never
  bool failure_reports = true;         // store a Basic Text SR in the study when it fails
  // Series naming rules sent with every study (protobuf text, danet.v1.SeriesRules; checked by
  // Create); work_dir/rules/<key>.pbtxt, when present, goes before them for that study.
  std::string series_rules;
  std::string series_rules_file;  // for messages
};

class Bridge {
 public:
  // Creates the work directories, the channel to the server (errors name a TLS or token flag
  // and its file) and the metrics (in `registry`, borrowed).
  static absl::StatusOr<std::unique_ptr<Bridge>> Create(const BridgeOptions& options,
                                                        metrics::Registry* registry);

  // Listens and processes until Stop; returns an error if the DICOM port cannot be used.
  absl::Status Run();
  void Stop() { stop_ = true; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Study {
    Clock::time_point last_instance;
    Clock::time_point next_attempt;
    Clock::time_point first_attempt;  // the study's duration runs from here to Finish
    int attempts = 0;
    int instances = 0;
  };
  // How an attempt ended when it did not fail: a SEG stored, no tumour found (no SEG), or
  // nothing to do (segmented before, or failed before for a reason a retry cannot change).
  enum class Done { kStored, kNoTumour, kAlreadySegmented, kAlreadyFailed };
  struct Attempt {
    Done done = Done::kStored;
    std::string note;    // the result line, or why nothing was done
    std::string bundle;  // the server's bundle, once known
  };

  Bridge(const BridgeOptions& options, std::shared_ptr<grpc::Channel> channel,
         metrics::Registry* registry);
  void OnInstance(const ReceivedInstance& instance);
  void Recover();     // studies left in incoming/ from an earlier run
  void ProcessDue();  // one pass over the stable studies
  // One pass over failed/: requeues the studies asked for, those due on the retry schedule,
  // and (at_start) every one with rounds left.
  void RetryFailed(bool at_start);
  void Process(const std::string& key);
  absl::Status SegmentAndStore(const std::string& key, Attempt* attempt);
  void Finish(const std::string& key, const absl::Status& status, const Attempt& attempt);
  // Stores the Basic Text SR for a failed study (in `dir`); false when it could not.
  bool StoreFailureReport(const std::string& key, const std::string& dir, const std::string& reason,
                          const std::string& bundle);
  // Whether a failure is final enough to tell the PACS: not retryable, or the retry rounds
  // spent (and reports on).
  bool ReportDue(bool retryable, int rounds) const;

  const BridgeOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<int> open_associations_{0};  // a sender still connected: its study may go on
  std::unique_ptr<v1::Segmentation::Stub> stub_;
  std::mutex mutex_;
  std::map<std::string, Study> studies_;  // pending, by key

  prometheus::Family<prometheus::Counter>& instances_;
  prometheus::Family<prometheus::Counter>& outcomes_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Family<prometheus::Counter>& reports_;
  prometheus::Gauge& pending_;
  prometheus::Histogram& study_seconds_;
};

// Asks for the failed study `key` under `work_dir` to be tried again: by the running bridge
// within seconds, or at its next start. NotFound when failed/<key> does not exist. A non-empty
// `study_rules` (protobuf text, danet.v1.SeriesRules; InvalidArgument naming
// `study_rules_source` when it does not parse) becomes work_dir/rules/<key>.pbtxt, the study's
// own naming rules, tried before the bridge's and the server's.
absl::Status RequestRequeue(const std::string& work_dir, const std::string& key,
                            const std::string& study_rules = "",
                            const std::string& study_rules_source = "");

// One line per failed study under `work_dir`: key, rounds of retries so far, whether the
// failure was retryable, whether a failure report was stored, requeue requested, and the
// reason (a status: codes and our messages, which may quote SeriesDescriptions; no patient
// attributes).
absl::StatusOr<std::vector<std::string>> ListFailed(const std::string& work_dir);

// Stable short key of a UID (16 hex digits of its FNV-1a hash): studies' directory names and
// series keys in file names and sources.txt, so that no UID needs to be written out.
std::string StudyKey(const std::string& uid);

}  // namespace danet::pacs

#endif  // DANET_CLIENT_PACS_BRIDGE_H_
