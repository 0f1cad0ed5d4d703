// danet-pacs-bridge's core: studies arrive over DICOM (C-STORE), wait until stable (no new
// instance for `stable_seconds` and no association still open), go to danet-server over gRPC,
// and the resulting DICOM SEG is stored back to the PACS (C-STORE). Nothing is lost: a study
// lives on disk under work_dir/incoming/<key>/ until its SEG is stored (then
// work_dir/done/<key>/ keeps the SEG and a result line) or it fails for good
// (work_dir/failed/<key>/ keeps the instances and reason.txt). Retryable failures (server
// unavailable or busy, deadline, PACS unreachable) are retried with exponential backoff;
// studies left in incoming/ are picked up again at start.
//
// Idempotent: a PACS that auto-routes on "stable study" sends a study again once our SEG has
// made it change. Only MR instances are spooled (our SEG coming back is ignored), and a study
// whose MR series were all segmented before with the server's current bundle is not segmented
// again: done/<key>/sources.txt records the bundle and the series (as keys) of each SEG stored.
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
  double deadline_seconds = 600;  // per segmentation call
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
  // nothing to do (segmented before).
  enum class Done { kStored, kNoTumour, kAlreadySegmented };

  Bridge(const BridgeOptions& options, std::shared_ptr<grpc::Channel> channel,
         metrics::Registry* registry);
  void OnInstance(const ReceivedInstance& instance);
  void Recover();     // studies left in incoming/ from an earlier run
  void ProcessDue();  // one pass over the stable studies
  void Process(const std::string& key);
  absl::Status SegmentAndStore(const std::string& key, Done* done, std::string* note);
  void Finish(const std::string& key, const absl::Status& status, Done done,
              const std::string& note);

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
  prometheus::Gauge& pending_;
  prometheus::Histogram& study_seconds_;
};

// Stable short key of a UID (16 hex digits of its FNV-1a hash): studies' directory names and
// series keys in file names and sources.txt, so that no UID needs to be written out.
std::string StudyKey(const std::string& uid);

}  // namespace danet::pacs

#endif  // DANET_CLIENT_PACS_BRIDGE_H_
