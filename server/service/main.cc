// danet-server: the segmentation service. Starts listening at once (health NOT_SERVING), loads
// the bundle, warms every network up, then reports SERVING. SIGTERM or SIGINT drains: health
// NOT_SERVING, new calls UNAVAILABLE, calls in flight get --drain_seconds to finish, exit 0.
//
//   danet-server [--address 127.0.0.1:50051] [--metrics_address 127.0.0.1:9464]
//                [--bundle models/bundles/phantom-compact] [--device cpu|cuda|cuda:N]
//                [--threads N] [--workers 1] [--queue_size 4] [--max_upload_mb 1024]
//                [--max_dim 1024] [--max_voxels N] [--drain_seconds 30] [--port_file F]
//                [--model_batch 1] [--decision_batch 16]
//
// Exit codes: 0 clean stop, 1 the bundle or the addresses could not be used, 2 usage.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "models/bank/device.h"
#include "server/engine/segmenter.h"
#include "server/metrics/http_exporter.h"
#include "server/service/service.h"
#include "server/service/runtime.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "gRPC listen address (host:port; port 0 picks one).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Prometheus /metrics listen address; empty disables it.");
ABSL_FLAG(std::string, bundle, "models/bundles/phantom-compact", "Bundle directory.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int, threads, 0, "LibTorch threads per segmentation (0: all cores).");
ABSL_FLAG(int, workers, 1, "Segmentations running at once.");
ABSL_FLAG(int, queue_size, 4, "Requests admitted beyond the running ones; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_upload_mb, 1024, "Largest upload (all files, as sent), MiB.");
ABSL_FLAG(int64_t, max_dim, 1024, "Largest volume size along any axis, voxels.");
ABSL_FLAG(int64_t, max_voxels, 512LL * 512 * 512, "Largest volume, voxels.");
ABSL_FLAG(int, model_batch, 1,
          "Slices per bank-model pass (1 was fastest on the 2-core CPUs; larger helps on GPUs).");
ABSL_FLAG(int, decision_batch, 16, "Slices per decision-network pass.");
ABSL_FLAG(double, drain_seconds, 30, "On SIGTERM, how long calls in flight may take to finish.");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port here once listening (tests).");
ABSL_FLAG(bool, log_requests, true, "Log one line per finished call (no patient data).");

namespace {

using Clock = std::chrono::steady_clock;

void Log(const std::string& line) { std::cerr << "danet-server: " << line << std::endl; }

int Run(const sigset_t& signals) {
  absl::StatusOr<c10::Device> device = danet::models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    Log(std::string(device.status().message()));
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
      Log(absl::StrCat("metrics: ", started.status().message()));
      return 1;
    }
    metrics_server = *std::move(started);
  }

  danet::service::ServiceOptions options;
  options.bundle_path = absl::GetFlag(FLAGS_bundle);
  options.workers = std::max(1, absl::GetFlag(FLAGS_workers));
  options.queue_size = std::max(0, absl::GetFlag(FLAGS_queue_size));
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
    Log(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_address)));
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  Log(absl::StrCat("listening on port ", port, " (NOT_SERVING while loading)",
                   metrics_server ? absl::StrCat("; metrics on port ", metrics_server->port())
                                  : ""));
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_port_file)) << port << "\n";
  }

  const auto load_start = Clock::now();
  danet::models::BankOptions bank_options;
  bank_options.device = *device;
  auto bank = danet::models::Bank::Load(options.bundle_path, bank_options);
  if (!bank.ok()) {
    Log(std::string(bank.status().message()));
    server->Shutdown();
    return 1;
  }
  std::shared_ptr<const danet::models::Bank> shared(std::move(*bank));
  // The policy of requests that name none must work before we say SERVING.
  absl::StatusOr<danet::engine::Policy> fallback = danet::engine::ParsePolicy("", *shared);
  if (!fallback.ok()) {
    Log(absl::StrCat(options.bundle_path, "/bundle.pbtxt: ", fallback.status().message()));
    server->Shutdown();
    return 1;
  }
  if (absl::Status warm = danet::service::WarmUp(*shared); !warm.ok()) {
    Log(std::string(warm.message()));
    server->Shutdown();
    return 1;
  }
  std::vector<std::string> routes = {"skip"};
  for (int i = 0; i < shared->size(); ++i) routes.push_back(shared->model_config(i).id());
  metrics.SetBundle(shared->config().name(), shared->device().str(), routes);
  service.SetBank(shared);
  health->SetServingStatus(true);
  metrics.SetReady(true);
  Log(absl::StrCat("bundle '", shared->config().name(), "' loaded and warm on ",
                   shared->device().str(), " in ",
                   std::chrono::duration<double>(Clock::now() - load_start).count(),
                   " s, default policy ", fallback->Name(*shared), "; SERVING"));

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  Log(absl::StrCat("signal ", signal_number, ": draining (", service.inflight(),
                   " calls in flight, up to ", absl::GetFlag(FLAGS_drain_seconds), " s)"));
  health->SetServingStatus(false);
  metrics.SetReady(false);
  service.StartDraining();
  const auto drain_start = std::chrono::system_clock::now();
  server->Shutdown(drain_start + std::chrono::milliseconds(static_cast<int64_t>(
                                     absl::GetFlag(FLAGS_drain_seconds) * 1000)));
  server->Wait();
  Log(absl::StrCat("stopped after draining for ",
                   std::chrono::duration<double>(std::chrono::system_clock::now() - drain_start)
                       .count(),
                   " s"));
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
