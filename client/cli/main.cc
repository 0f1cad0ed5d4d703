// danet: the command-line client of danet-server.
//
//   danet segment CASE_DIR|FILES...|DICOM_DIR [--out DIR] [--policy dynamic|static:M4]
//                 [--cost_bias X] [--skip_margin K] [--series UID=flair,...] [--json]
//                 [--series_rules RULES.pbtxt]
//                 [--preview PNG] [--deadline S]
//   danet models [--json]
//   danet health
//   danet bench CASES_ROOT [--cases N] [--concurrency C] [--policies dynamic,static:M1,...]
//               [--json]
// Every command takes --server HOST:PORT (default 127.0.0.1:50051, or $DANET_SERVER) and, for
// a server with TLS and tokens, --tls_ca_file, --tls_cert_file/--tls_key_file (mutual TLS) and
// --token_file (client/cli/channel.h, docs/security.md).
//
// Exit codes: 0 ok; 1 the request failed (bad input: the message says which file or field; or
// a missing or wrong token); 2 usage; 3 the server is unreachable, busy, draining or too slow
// (retry later), or the TLS handshake failed.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/bench.h"
#include "client/cli/call.h"
#include "client/cli/channel.h"
#include "client/cli/report.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "models/dicom/series_rules.h"
#include "models/volume/nifti.h"

ABSL_FLAG(std::string, server, "",
          "Server address or gRPC target, e.g. dns:///danet-server-headless:50051 (calls "
          "round-robin over its addresses); default $DANET_SERVER or 127.0.0.1:50051.");
ABSL_FLAG(std::string, out, "", "segment: write labels.nii.gz and report.json into this folder.");
ABSL_FLAG(std::string, policy, "",
          "segment: dynamic[@bias][+m<margin>][+s<threshold>][+d<dip>][+g<gap>]"
          "[+p<model>:<preference>][+f<follow>][+c<voxels>][+e<voxels>][+z<slices>] or "
          "static:<model id>[+c<voxels>]"
          "[+e<voxels>] (docs/routing.md); empty: the server's default (the bundle's, see `danet "
          "models`).");
ABSL_FLAG(double, cost_bias, 0, "segment: > 0 favours cheaper routes, < 0 stronger (dynamic).");
ABSL_FLAG(int, skip_margin, 0,
          "segment: never skip a slice within this many slices of a routed one (dynamic).");
ABSL_FLAG(std::vector<std::string>, series, {},
          "segment, DICOM: SERIES_UID=modality,... (default: by the series rules).");
ABSL_FLAG(std::string, series_rules, "",
          "segment, DICOM: series naming rules (protobuf text, danet.v1.SeriesRules; "
          "docs/dicom.md), sent with the request and tried before the server's.");
ABSL_FLAG(bool, json, false, "Print JSON instead of a table.");
ABSL_FLAG(std::string, preview, "", "segment: write a PNG montage (mask and routes) here.");
ABSL_FLAG(double, deadline, 0, "Seconds before the call is abandoned (0: none).");
ABSL_FLAG(int, cases, 4, "bench: cases per policy.");
ABSL_FLAG(int, concurrency, 1, "bench: calls at once.");
ABSL_FLAG(std::string, policies, "dynamic,static:M1,static:M4",
          "bench: policies, comma-separated.");
ABSL_FLAG(bool, progress, true, "Show progress on stderr.");

namespace {

constexpr char kUsage[] =
    "danet segment CASE_DIR|FILES... [--out DIR] [--policy P] [--json] [--preview PNG]\n"
    "  danet models [--json] | danet health | danet bench CASES_ROOT [--cases N] "
    "[--concurrency C]\n"
    "  every command: [--server HOST:PORT] [--tls_ca_file F] [--tls_cert_file F --tls_key_file F]"
    " [--token_file F]";

int ExitCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDeadlineExceeded:
      return 3;
    default:
      return 1;
  }
}

// What to try when a call fails before reaching the service: gRPC's own messages say only
// that the connection failed, which is also what a TLS mismatch looks like.
std::string Hint(const absl::Status& status) {
  const danet::client::ChannelSecurity security = danet::client::ChannelSecurityFromFlags();
  if (absl::IsUnauthenticated(status) && security.token_file.empty()) {
    return "\n  the server asks for a token: pass --token_file (and --tls_ca_file)";
  }
  // A plaintext client on a TLS port sees the socket closed; a TLS client on a plaintext port,
  // or one that does not trust the server's certificate, a failed handshake.
  bool tls_mismatch = false;
  for (const char* sign : {"Socket closed", "andshake", "Connection reset"}) {
    tls_mismatch = tls_mismatch || absl::StrContains(status.message(), sign);
  }
  if (!absl::IsUnavailable(status) || !tls_mismatch) return "";
  if (!security.tls()) {
    return "\n  the connection failed: if the server uses TLS, pass --tls_ca_file";
  }
  return "\n  the TLS connection failed: check that the server uses TLS, that --tls_ca_file "
         "signed its certificate, that --server names a host in it, and whether it requires a "
         "client certificate (--tls_cert_file, --tls_key_file)";
}

int Fail(const absl::Status& status) {
  std::cerr << "danet: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << Hint(status) << "\n";
  return ExitCode(status);
}

// The channel to the server, or a usage error (exit 2) for unusable TLS or token flags.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect() {
  std::string address = absl::GetFlag(FLAGS_server);
  if (address.empty()) address = getenv("DANET_SERVER") ? getenv("DANET_SERVER") : "";
  if (address.empty()) address = "127.0.0.1:50051";
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      danet::client::OpenChannel(address, danet::client::ChannelSecurityFromFlags(), args);
  if (!channel.ok()) std::cerr << "danet: " << channel.status().message() << "\n";
  return channel;
}

// A one-line bar on stderr, redrawn in place on a terminal, every 25% otherwise.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO)) {}
  void Update(const std::string& what, int64_t done, int64_t total) {
    if (!enabled_ || total <= 0) return;
    const int percent = static_cast<int>(100 * done / total);
    if (!tty_ && (what == last_ && percent / 25 == last_percent_ / 25) && done != total) return;
    const int width = 30, filled = width * percent / 100;
    std::cerr << (tty_ ? "\r" : "")
              << absl::StrFormat("%-8s [%s%s] %3d%%", what, std::string(filled, '#'),
                                 std::string(width - filled, '.'), percent)
              << (tty_ && done != total ? "" : "\n") << std::flush;
    last_ = what;
    last_percent_ = percent;
  }

 private:
  bool enabled_, tty_;
  std::string last_;
  int last_percent_ = -100;
};

int Segment(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << "usage: " << kUsage << "\n";
    return 2;
  }
  absl::StatusOr<std::vector<danet::client::InputFile>> files = danet::client::ResolveInputs(args);
  if (!files.ok()) return Fail(files.status());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  if (!channel.ok()) return 2;
  auto stub = danet::v1::Segmentation::NewStub(*channel);
  Progress progress(absl::GetFlag(FLAGS_progress));
  danet::client::CallOptions options;
  options.policy = absl::GetFlag(FLAGS_policy);
  options.cost_bias = absl::GetFlag(FLAGS_cost_bias);
  if (absl::GetFlag(FLAGS_skip_margin) < 0) {
    std::cerr << "danet: --skip_margin must be 0 or more\n";
    return 2;
  }
  options.skip_margin = absl::GetFlag(FLAGS_skip_margin);
  options.deadline_seconds = absl::GetFlag(FLAGS_deadline);
  for (const std::string& pair : absl::GetFlag(FLAGS_series)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (kv.second.empty()) {
      std::cerr << "danet: --series takes SERIES_UID=modality pairs, got '" << pair << "'\n";
      return 2;
    }
    options.series_modalities[kv.first] = kv.second;
  }
  if (!absl::GetFlag(FLAGS_series_rules).empty()) {
    absl::StatusOr<std::string> text =
        danet::volume::ReadSeriesRulesText(absl::GetFlag(FLAGS_series_rules));
    if (!text.ok()) {
      std::cerr << "danet: " << text.status().message() << "\n";
      return 2;
    }
    options.series_rules = *std::move(text);
  }
  options.want_labelmap = !absl::GetFlag(FLAGS_out).empty();
  options.want_dicom_seg = options.want_labelmap && danet::client::IsDicom(*files);
  options.request_id = absl::StrCat("cli-", getpid());
  options.on_upload = [&](int64_t done, int64_t total) { progress.Update("upload", done, total); };
  options.on_slice = [&](int done, int total) { progress.Update("slices", done, total); };
  absl::StatusOr<danet::client::CaseResult> result =
      danet::client::SegmentFiles(stub.get(), *files, options);
  if (!result.ok()) return Fail(result.status());

  const nlohmann::json report = danet::client::ReportJson(*result);
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    std::filesystem::create_directories(out);
    if (absl::Status s = danet::volume::WriteFileBytes(std::filesystem::path(out) / "labels.nii.gz",
                                                       result->labelmap);
        !s.ok()) {
      return Fail(s);
    }
    if (!result->dicom_seg.empty()) {
      if (absl::Status s = danet::volume::WriteFileBytes(std::filesystem::path(out) / "seg.dcm",
                                                         result->dicom_seg);
          !s.ok()) {
        return Fail(s);
      }
    }
    std::ofstream(std::filesystem::path(out) / "report.json") << report.dump(2) << "\n";
  }
  if (const std::string png = absl::GetFlag(FLAGS_preview); !png.empty()) {
    const auto& s = result->summary;
    const std::string title =
        absl::StrFormat("%s  %.0f GMACs (%.1f%% of all-%s)", result->accepted.policy(), s.gmacs(),
                        100 * s.gmacs() / std::max(1e-9, s.gmacs_all_largest()), s.largest_model());
    if (absl::Status p = danet::client::WritePreview(*result, *files, options, title, png);
        !p.ok()) {
      return Fail(p);
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump(2) << "\n";
  } else {
    danet::client::PrintSummary(*result, std::cout);
  }
  return 0;
}

int Models() {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  if (!channel.ok()) return 2;
  auto stub = danet::v1::Segmentation::NewStub(*channel);
  absl::StatusOr<danet::v1::DescribeBankResponse> described =
      danet::client::DescribeBank(stub.get());
  if (!described.ok()) return Fail(described.status());
  const danet::v1::DescribeBankResponse& bank = *described;
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json models = nlohmann::json::array();
    for (const auto& m : bank.models()) {
      models.push_back({{"id", m.id()},
                        {"architecture", m.architecture()},
                        {"gmacs_per_slice", m.gmacs_per_slice()},
                        {"parameters", m.parameters()},
                        {"dice_mean", m.validation().dice_mean()}});
    }
    std::cout << nlohmann::json{{"bundle", bank.bundle_name()},
                                {"device", bank.device()},
                                {"version", bank.version()},
                                {"decision_gmacs_per_slice", bank.decision_gmacs_per_slice()},
                                {"default_policy", bank.default_policy()},
                                {"models", models}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("bundle %s on %s (server %s)\n", bank.bundle_name(), bank.device(),
                               bank.version());
  std::cout << absl::StrFormat("  %-4s %-66s %9s %12s %8s\n", "id", "architecture", "GMACs",
                               "parameters", "Dice");
  for (const auto& m : bank.models()) {
    std::cout << absl::StrFormat("  %-4s %-66s %9.3f %12d %8.2f\n", m.id(), m.architecture(),
                                 m.gmacs_per_slice(), m.parameters(), m.validation().dice_mean());
  }
  std::cout << absl::StrFormat("  decision network %.4f GMACs per slice\n",
                               bank.decision_gmacs_per_slice());
  std::cout << absl::StrFormat("  default policy %s\n", bank.default_policy());
  return 0;
}

int Health() {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  if (!channel.ok()) return 2;
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return Fail(
        absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()));
  }
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 3;
}

int Bench(const std::vector<std::string>& args) {
  if (args.size() != 1 || !std::filesystem::is_directory(args[0])) {
    std::cerr << "usage: danet bench CASES_ROOT (a folder of case folders)\n";
    return 2;
  }
  danet::client::BenchOptions options;
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(args[0])) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& dir : dirs) {
    auto files = danet::client::ResolveInputs({dir.string()});
    if (files.ok()) options.cases.push_back(*files);
  }
  if (options.cases.empty()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(args[0], ": no case folders")));
  }
  options.count = absl::GetFlag(FLAGS_cases);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.policies = absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty());
  if (absl::GetFlag(FLAGS_progress)) {
    options.on_progress = [](const std::string& line) { std::cerr << line << "\n"; };
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  if (!channel.ok()) return 2;
  auto stub = danet::v1::Segmentation::NewStub(*channel);
  absl::StatusOr<nlohmann::json> bench = danet::client::RunBench(stub.get(), options);
  if (!bench.ok()) return Fail(bench.status());
  std::cout << (absl::GetFlag(FLAGS_json) ? bench->dump(2) + "\n"
                                          : danet::client::BenchTable(*bench));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::cerr << "usage: " << kUsage << "\n";
    return 2;
  }
  const std::string command = positional[1];
  const std::vector<std::string> args(positional.begin() + 2, positional.end());
  if (command == "segment") return Segment(args);
  if (command == "models") return Models();
  if (command == "health") return Health();
  if (command == "bench") return Bench(args);
  std::cerr << "danet: unknown command '" << command << "'\nusage: " << kUsage << "\n";
  return 2;
}
