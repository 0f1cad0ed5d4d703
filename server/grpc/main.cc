// danet-server: the segmentation service. Starts listening at once (health NOT_SERVING), loads
// the bundle, warms every network up, then reports SERVING. SIGTERM or SIGINT drains: health
// NOT_SERVING, new calls UNAVAILABLE "shutting down" (the listener stays up, so clients are
// told rather than refused), calls in flight get --drain_seconds to finish, exit 0.
//
//   danet-server [--address 127.0.0.1:50051] [--metrics_address 127.0.0.1:9464]
//                [--bundle models/bundles/phantom-compact] [--device cpu|cuda|cuda:N]
//                [--threads N] [--workers 1] [--queue_size 4] [--max_uploads 32]
//                [--upload_idle_seconds 30] [--max_upload_seconds 300] [--max_upload_mb 1024]
//                [--max_dim 1024] [--max_voxels N] [--drain_seconds 30] [--port_file F]
//                [--model_batch 1] [--decision_batch 16]
//
// Logs: one JSON object per line on stderr (server/grpc/runtime.h), no patient data.
//
// Exit codes: 0 clean stop, 1 the bundle or the addresses could not be used, 2 usage.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string_view>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "models/bank/device.h"
#include "models/engine/router.h"
#include "models/engine/summary.h"
#include "server/grpc/runtime.h"
#include "server/grpc/service.h"
#include "server/metrics/http_exporter.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "gRPC listen address (host:port; port 0 picks one).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Prometheus /metrics listen address; empty disables it.");
ABSL_FLAG(std::string, bundle, "models/bundles/phantom-compact", "Bundle directory.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int, threads, 0, "LibTorch threads per segmentation (0: all cores).");
ABSL_FLAG(int, workers, 1, "Segmentations running at once.");
ABSL_FLAG(int, queue_size, 4,
          "Uploaded requests waiting for a worker beyond the running ones; more get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_uploads, 32,
          "Calls uploading at once (header received, last chunk not yet); more get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, upload_idle_seconds, 30,
          "An upload that receives nothing for this long ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(double, max_upload_seconds, 300,
          "An upload that takes longer than this in all ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(int64_t, max_upload_mb, 1024, "Largest upload (all files, as sent), MiB.");
ABSL_FLAG(int64_t, max_dim, 1024, "Largest volume size along any axis, voxels.");
ABSL_FLAG(int64_t, max_voxels, 512LL * 512 * 512, "Largest volume, voxels.");
ABSL_FLAG(int, model_batch, 1,
          "Slices per bank-model pass (1 was fastest on the 2-core CPUs; larger helps on GPUs).");
ABSL_FLAG(int, decision_batch, 16, "Slices per decision-network pass.");
ABSL_FLAG(double, drain_seconds, 30, "On SIGTERM, how long calls in flight may take to finish.");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port here once listening (tests).");
ABSL_FLAG(bool, log_requests, true,
          "Log one JSON line per finished call: id, code, policy, seconds (no patient data).");

namespace {

using Clock = std::chrono::steady_clock;

// One JSON line: the event, a human-readable message, and any fields.
void Log(std::string_view event, const std::string& message,
         const danet::service::LogFields& fields = danet::service::LogFields::object()) {
  danet::service::LogFields line = {{"msg", message}};
  line.update(fields);
  danet::service::Log(event, line);
}

int Run(const sigset_t& signals) {
  absl::StatusOr<c10::Device> device = danet::models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    Log("usage", std::string(device.status().message()));
    return 2;
  }
  danet::models::SetThreads(absl::GetFlag(FLAGS_threads));

  danet::metrics::Registry registry;
  danet::service::ServiceMetrics metrics(&registry);
  danet::service::AddProcessMetrics(&registry);
  std::unique_ptr<danet::metrics::MetricsServer> metrics_server;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto started =
        danet::metrics::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_address), &registry);
    if (!started.ok()) {
      Log("error", absl::StrCat("metrics: ", started.status().message()));
      return 1;
    }
    metrics_server = *std::move(started);
  }

  danet::service::ServiceOptions options;
  options.bundle_path = absl::GetFlag(FLAGS_bundle);
  options.workers = std::max(1, absl::GetFlag(FLAGS_workers));
  options.queue_size = std::max(0, absl::GetFlag(FLAGS_queue_size));
  options.max_uploads = std::max(1, absl::GetFlag(FLAGS_max_uploads));
  options.upload_idle_seconds = std::max(0.001, absl::GetFlag(FLAGS_upload_idle_seconds));
  options.max_upload_seconds = std::max(0.001, absl::GetFlag(FLAGS_max_upload_seconds));
  options.limits.max_upload_bytes = absl::GetFlag(FLAGS_max_upload_mb) << 20;
  options.limits.nifti.max_dim = absl::GetFlag(FLAGS_max_dim);
  options.limits.nifti.max_voxels = absl::GetFlag(FLAGS_max_voxels);
  options.log_requests = absl::GetFlag(FLAGS_log_requests);
  options.job.model_batch = std::max(1, absl::GetFlag(FLAGS_model_batch));
  options.job.decision_batch = std::max(1, absl::GetFlag(FLAGS_decision_batch));
  danet::service::SegmentationService service(options, &metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_address), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(4 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log("error", absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_address)));
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  Log("listening",
      absl::StrCat(
          "listening on port ", port, " (NOT_SERVING while loading)",
          metrics_server ? absl::StrCat("; metrics on port ", metrics_server->port()) : ""),
      {{"port", port}, {"metrics_port", metrics_server ? metrics_server->port() : 0}});
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_port_file)) << port << "\n";
  }

  const auto load_start = Clock::now();
  danet::models::BankOptions bank_options;
  bank_options.device = *device;
  auto bank = danet::models::Bank::Load(options.bundle_path, bank_options);
  if (!bank.ok()) {
    Log("error", std::string(bank.status().message()));
    server->Shutdown();
    return 1;
  }
  std::shared_ptr<const danet::models::Bank> shared(std::move(*bank));
  // The policy of requests that name none must work before we say SERVING.
  absl::StatusOr<danet::engine::Policy> fallback = danet::engine::ParsePolicy("", *shared);
  if (!fallback.ok()) {
    Log("error", absl::StrCat(options.bundle_path, "/bundle.pbtxt: ", fallback.status().message()));
    server->Shutdown();
    return 1;
  }
  if (absl::Status warm = danet::service::WarmUp(*shared); !warm.ok()) {
    Log("error", std::string(warm.message()));
    server->Shutdown();
    return 1;
  }
  metrics.SetBundle(shared->config().name(), shared->device().str(),
                    danet::engine::RouteNames(*shared));
  service.SetBank(shared);
  health->SetServingStatus(true);
  metrics.SetReady(true);
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  Log("ready",
      absl::StrCat("bundle '", shared->config().name(), "' loaded and warm on ",
                   shared->device().str(), " in ", load_seconds, " s, default policy ",
                   fallback->Name(*shared), "; SERVING"),
      {{"bundle", shared->config().name()},
       {"device", shared->device().str()},
       {"load_seconds", load_seconds}});

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  // Drain with the listener up: new calls reach the handler and are told UNAVAILABLE "shutting
  // down" (retry elsewhere) instead of meeting a refused connection; the calls in flight get
  // --drain_seconds; then the server shuts down, cancelling what is left.
  const double drain_seconds = std::max(0.0, absl::GetFlag(FLAGS_drain_seconds));
  Log("draining",
      absl::StrCat("signal ", signal_number, ": draining (", service.inflight(),
                   " calls in flight, up to ", drain_seconds, " s)"),
      {{"signal", signal_number}, {"inflight", service.inflight()}});
  health->SetServingStatus(false);
  metrics.SetReady(false);
  service.StartDraining();
  const auto drain_start = Clock::now();
  const bool drained =
      service.WaitUntilIdle(drain_start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(drain_seconds)));
  if (!drained) {
    Log("drain_timeout",
        absl::StrCat("drain window over: cancelling ", service.inflight(), " calls"),
        {{"inflight", service.inflight()}});
  }
  // A short grace for calls being refused right now; none if the window is over.
  server->Shutdown(std::chrono::system_clock::now() +
                   (drained ? std::chrono::seconds(1) : std::chrono::seconds(0)));
  server->Wait();
  const double drained_for = std::chrono::duration<double>(Clock::now() - drain_start).count();
  Log("stopped", absl::StrCat("stopped after draining for ", drained_for, " s"),
      {{"drain_seconds", drained_for}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the stop signals in every thread (threads inherit the mask); Run waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::SetProgramUsageMessage("Serves Med-DANet segmentation over gRPC (see README).");
  absl::ParseCommandLine(argc, argv);
  return Run(signals);
}
