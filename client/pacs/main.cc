// danet-pacs-bridge: a DICOM node between a PACS and danet-server (see bridge.h).
//
//   danet-pacs-bridge --port 11112 --ae_title DANET --peer_host 127.0.0.1 --peer_port 4242
//       --peer_ae ORTHANC --server 127.0.0.1:50051 --work_dir /var/lib/danet-bridge
//       [--stable_seconds 5] [--max_attempts 8] [--backoff_seconds 2] [--max_backoff_seconds 300]
//       [--metrics_address 127.0.0.1:9465] [--policy P]
//       [--allowed_calling_aes ORTHANC,...] [--allowed_hosts 10.0.0.5,...]
//       [--tls_ca_file F] [--tls_cert_file F --tls_key_file F] [--token_file F]
//       [--failed_retry_seconds 1800] [--failed_retry_rounds 12] [--failure_reports=true]
//       [--series_rules RULES.pbtxt]
//   danet-pacs-bridge list --work_dir DIR          failed studies, one line each
//   danet-pacs-bridge requeue KEY... --work_dir DIR  try these failed studies again (`all`: all)
//       [--study_rules RULES.pbtxt]    ... with these naming rules for that study (one KEY)
//
// The TLS and token flags are the danet client's (client/cli/channel.h, docs/security.md).
// SIGTERM/SIGINT stop it between studies; studies not finished stay in work_dir/incoming/ and
// are picked up at the next start. Exit codes: 0 stopped, 1 cannot listen, bad work_dir, or
// unusable TLS or token flags (the message names the flag and file); `list` and `requeue`: 0
// done, 1 no such study or work_dir, 2 usage.
#include <dcmtk/oflog/oflog.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "client/cli/channel.h"
#include "client/pacs/bridge.h"
#include "models/volume/nifti.h"
#include "server/metrics/http_exporter.h"

ABSL_FLAG(std::string, ae_title, "DANET", "Our AE title.");
ABSL_FLAG(int, port, 11112,
          "DICOM listen port (every interface: DCMTK's listener cannot bind one address; "
          "restrict senders with --allowed_hosts and the network policy).");
ABSL_FLAG(std::vector<std::string>, allowed_calling_aes, {},
          "Comma-separated calling AE titles allowed to send (the PACS'); empty: any.");
ABSL_FLAG(std::vector<std::string>, allowed_hosts, {},
          "Comma-separated peer IP addresses allowed to connect; empty: any.");
ABSL_FLAG(std::string, peer_host, "127.0.0.1", "PACS host the SEGs are stored to.");
ABSL_FLAG(int, peer_port, 4242, "PACS DICOM port.");
ABSL_FLAG(std::string, peer_ae, "ORTHANC", "PACS AE title.");
ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "danet-server address, or a gRPC target such as dns:///danet-server-headless:50051 "
          "(calls round-robin over every address it resolves to).");
ABSL_FLAG(std::string, work_dir, "danet-bridge", "Spool, incoming, done and failed studies.");
ABSL_FLAG(std::string, policy, "",
          "Routing policy for every study; empty: the served bundle's default.");
ABSL_FLAG(double, stable_seconds, 5, "A study is complete after this long without instances.");
ABSL_FLAG(int, max_attempts, 8, "Attempts per study before it is moved to failed/.");
ABSL_FLAG(double, backoff_seconds, 2, "First retry delay (doubles per attempt).");
ABSL_FLAG(double, max_backoff_seconds, 300, "Longest retry delay.");
ABSL_FLAG(double, failed_retry_seconds, 1800,
          "A study that failed retryably (server or PACS down past every attempt) is tried again "
          "this long after its failure.");
ABSL_FLAG(int, failed_retry_rounds, 12,
          "Retries of a failed study on that schedule and at starts, at most (0: never; "
          "`requeue` always works).");
ABSL_FLAG(bool, failure_reports, true,
          "Store a DICOM Basic Text SR in a study that fails, saying so and why (once per "
          "study).");
ABSL_FLAG(std::string, series_rules, "",
          "DICOM series naming rules sent with every study (protobuf text, "
          "danet.v1.SeriesRules; docs/dicom.md), tried before the server's.");
ABSL_FLAG(std::string, study_rules, "",
          "requeue: naming rules for that one study (kept as work_dir/rules/KEY.pbtxt).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9465", "Prometheus /metrics; empty: off.");

namespace {

// `list` and `requeue`: work on work_dir/failed/ beside a running bridge (or none).
int FailedCommand(const std::vector<char*>& args) {
  const std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  absl::StatusOr<std::vector<std::string>> failed = danet::pacs::ListFailed(work_dir);
  if (!failed.ok()) {
    std::cerr << "danet-pacs-bridge: " << failed.status().message() << "\n";
    return 1;
  }
  const std::string command = args[1];
  if (command == "list") {
    for (const std::string& line : *failed) std::cout << line << "\n";
    return 0;
  }
  std::vector<std::string> keys;
  for (size_t i = 2; i < args.size(); ++i) keys.push_back(args[i]);
  if (keys.empty()) {
    std::cerr << "danet-pacs-bridge: requeue needs study keys (or `all`)\n";
    return 2;
  }
  if (keys == std::vector<std::string>{"all"}) {
    keys.clear();
    for (const std::string& line : *failed) keys.push_back(line.substr(0, line.find(' ')));
  }
  std::string study_rules;
  const std::string rules_file = absl::GetFlag(FLAGS_study_rules);
  if (!rules_file.empty()) {
    if (keys.size() != 1) {
      std::cerr << "danet-pacs-bridge: --study_rules is for one study key\n";
      return 2;
    }
    absl::StatusOr<std::string> text = danet::volume::ReadFileBytes(rules_file);
    if (!text.ok()) {
      std::cerr << "danet-pacs-bridge: --study_rules " << text.status().message() << "\n";
      return 1;
    }
    study_rules = *std::move(text);
  }
  int rc = 0;
  for (const std::string& key : keys) {
    const absl::Status status = danet::pacs::RequestRequeue(work_dir, key, study_rules, rules_file);
    if (status.ok()) {
      std::cout << key << ": requeued (a running bridge takes it within seconds, else the next "
                << "start)\n";
    } else {
      std::cerr << "danet-pacs-bridge: " << status.message() << "\n";
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  setenv("TCP_NODELAY", "1", 1);  // DCMTK: else ~90 ms per C-STORE
  absl::SetProgramUsageMessage("DICOM C-STORE in, danet-server, DICOM SEG back (see README).");
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) {
    const std::string command = args[1];
    if (command == "list" || command == "requeue") return FailedCommand(args);
    std::cerr << "danet-pacs-bridge: unknown command '" << command
              << "' (commands: list, requeue; none: run the bridge)\n";
    return 2;
  }
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);  // DCMTK's per-message INFO lines: off

  danet::pacs::BridgeOptions options;
  options.ae_title = absl::GetFlag(FLAGS_ae_title);
  options.port = absl::GetFlag(FLAGS_port);
  options.allowed_calling_aes = absl::GetFlag(FLAGS_allowed_calling_aes);
  options.allowed_hosts = absl::GetFlag(FLAGS_allowed_hosts);
  options.peer = {absl::GetFlag(FLAGS_peer_host), absl::GetFlag(FLAGS_peer_port),
                  absl::GetFlag(FLAGS_peer_ae)};
  options.server = absl::GetFlag(FLAGS_server);
  options.security = danet::client::ChannelSecurityFromFlags();
  options.work_dir = absl::GetFlag(FLAGS_work_dir);
  options.policy = absl::GetFlag(FLAGS_policy);
  options.stable_seconds = absl::GetFlag(FLAGS_stable_seconds);
  options.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  options.backoff_seconds = absl::GetFlag(FLAGS_backoff_seconds);
  options.max_backoff_seconds = absl::GetFlag(FLAGS_max_backoff_seconds);
  options.failed_retry_seconds = absl::GetFlag(FLAGS_failed_retry_seconds);
  options.failed_retry_rounds = absl::GetFlag(FLAGS_failed_retry_rounds);
  options.failure_reports = absl::GetFlag(FLAGS_failure_reports);
  options.series_rules_file = absl::GetFlag(FLAGS_series_rules);
  if (!options.series_rules_file.empty()) {
    absl::StatusOr<std::string> text = danet::volume::ReadFileBytes(options.series_rules_file);
    if (!text.ok()) {
      std::cerr << "danet-pacs-bridge: --series_rules " << text.status().message() << "\n";
      return 1;
    }
    options.series_rules = *std::move(text);
  }

  danet::metrics::Registry registry;
  std::unique_ptr<danet::metrics::MetricsServer> metrics;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto started =
        danet::metrics::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_address), &registry);
    if (!started.ok()) {
      std::cerr << "danet-pacs-bridge: " << started.status().message() << "\n";
      return 1;
    }
    metrics = *std::move(started);
  }
  auto bridge = danet::pacs::Bridge::Create(options, &registry);
  if (!bridge.ok()) {
    std::cerr << "danet-pacs-bridge: " << bridge.status().message() << "\n";
    return 1;
  }
  std::thread waiter([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    (*bridge)->Stop();
  });
  waiter.detach();
  const absl::Status status = (*bridge)->Run();
  if (!status.ok()) {
    std::cerr << "danet-pacs-bridge: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
