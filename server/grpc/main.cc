// danet-server: the segmentation service. Starts listening at once (health NOT_SERVING), loads
// the bundle, warms every network up, then reports SERVING. SIGTERM or SIGINT drains: health
// NOT_SERVING, new calls UNAVAILABLE "shutting down" (the listener stays up, so clients are
// told rather than refused), calls in flight get --drain_seconds to finish, exit 0 (within
// --drain_seconds + 5 s whatever /metrics clients do: server/metrics/http_exporter.h).
//
//   danet-server [--address 127.0.0.1:50051] [--metrics_address 127.0.0.1:9464]
//                [--bundle models/bundles/phantom-compact] [--device cpu|cuda|cuda:N]
//                [--threads N] [--workers 1] [--queue_size 4] [--prepare_ahead]
//                [--idle_release_seconds 2] [--max_uploads 32] [--upload_idle_seconds 30]
//                [--max_upload_seconds 300] [--max_upload_mb 1024]
//                [--max_dim 1024] [--max_voxels N] [--drain_seconds 30] [--port_file F]
//                [--model_batch 1] [--decision_batch 16] [--crop_to_brain=true]
//                [--fold_batch_norm=true] [--int8_linear] [--channels_last=true]
//                [--tls_cert_file F --tls_key_file F [--tls_client_ca_file F]]
//                [--auth_token_file F] [--reflection] [--health_address 0.0.0.0:50052]
//
// Transport security (server/grpc/security.h, docs/security.md): TLS, mutual TLS and bearer
// tokens on --address. grpc.health.v1 (and reflection, off unless --reflection) never ask for a
// token; --health_address adds a plaintext listener serving health alone, for probes that cannot
// speak TLS (the kubelet's).
//
// Logs: one JSON object per line on stderr (server/grpc/runtime.h), no patient data.
//
// Exit codes: 0 clean stop, 1 the bundle, the addresses or the TLS and token files could not be
// used, 2 usage (including flags that do not go together).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <string_view>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "models/bank/blas_kernels.h"
#include "models/bank/device.h"
#include "models/dicom/series_rules.h"
#include "models/engine/router.h"
#include "models/engine/summary.h"
#include "server/core/memory_budget.h"
#include "server/grpc/runtime.h"
#include "server/grpc/security.h"
#include "server/grpc/service.h"
#include "server/metrics/http_exporter.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "gRPC listen address (host:port; port 0 picks one).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Prometheus /metrics listen address; empty disables it.");
ABSL_FLAG(std::string, bundle, "models/bundles/phantom-compact", "Bundle directory.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int, threads, 0, "LibTorch threads per segmentation (0: all cores).");
ABSL_FLAG(int, workers, 1,
          "Segmentations running at once, each with --threads LibTorch threads (keep workers x "
          "threads at most the cores: docs/deploy.md).");
ABSL_FLAG(bool, prepare_ahead, false,
          "Decode and preprocess the next request on a thread of its own as soon as its upload "
          "is complete, so it is ready while a worker computes (one request ahead, when the "
          "memory budget has room). For machines with cores beyond --threads.");
ABSL_FLAG(double, idle_release_seconds, 2,
          "Hand the memory the last case freed back to the kernel once no case has run or "
          "waited for this long (0: at once). Sooner frees it between cases; later spares a "
          "steady stream of cases from faulting their buffers in again.");
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
ABSL_FLAG(int64_t, memory_budget_mb, 1536,
          "Memory for buffered uploads plus the volumes being decoded and segmented, MiB, all "
          "requests together (the bank is outside it); a request that would pass it gets "
          "RESOURCE_EXHAUSTED before it allocates. 0: no budget.");
ABSL_FLAG(int64_t, max_dim, 1024, "Largest volume size along any axis, voxels.");
ABSL_FLAG(int64_t, max_voxels, 512LL * 512 * 512, "Largest volume, voxels.");
ABSL_FLAG(std::string, series_rules, "",
          "DICOM series naming rules (protobuf text, danet.v1.SeriesRules; docs/dicom.md), "
          "tried before the built-in ones; a request's Header.series_rules comes first.");
ABSL_FLAG(bool, int8_linear, false,
          "CPU only: run TransBTS's transformer Linear layers with int8 weights (dynamic "
          "quantization; docs/benchmarks.md). false: as the bundle says (int8_linear).");
ABSL_FLAG(bool, bfloat16, false,
          "Run the bank models (not the decision network) in bfloat16: faster on CPUs with "
          "bfloat16 dot products (AVX512-BF16, AMX-BF16; refused on others); labels differ in "
          "a few voxels (docs/benchmarks.md).");
ABSL_FLAG(bool, fold_batch_norm, true,
          "Fold the BatchNorms into the convolutions before them at load (docs/benchmarks.md).");
ABSL_FLAG(bool, channels_last, true,
          "Convolution weights and inputs in channels-last (NHWC) memory format: the same "
          "labels, 1.1-1.4x faster models (docs/benchmarks.md).");
ABSL_FLAG(bool, crop_to_brain, true,
          "Run the bank models on the bounding box of the brain (the non-zero voxels) instead of "
          "the whole slice (docs/benchmarks.md).");
ABSL_FLAG(int, model_batch, 1,
          "Slices per bank-model pass (1 was fastest on the 2-core CPUs; larger helps on GPUs).");
ABSL_FLAG(int, decision_batch, 16, "Slices per decision-network pass.");
ABSL_FLAG(double, drain_seconds, 30, "On SIGTERM, how long calls in flight may take to finish.");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port here once listening (tests).");
ABSL_FLAG(bool, log_requests, true,
          "Log one JSON line per finished call: id, client, code, policy, seconds (no patient "
          "data).");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: serve --address over TLS (with --tls_key_file).");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file (not encrypted).");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: require client certificates signed by one of them (mutual TLS; "
          "needs --tls_cert_file).");
ABSL_FLAG(std::string, auth_token_file, "",
          "NAME:TOKEN lines: danet.v1 calls must send 'authorization: Bearer TOKEN' metadata, "
          "NAME goes into logs and metrics (needs TLS; docs/security.md).");
ABSL_FLAG(bool, reflection, false, "Serve gRPC server reflection on --address (no token asked).");
ABSL_FLAG(std::string, health_address, "",
          "Also serve grpc.health.v1 alone, in plaintext, here (for probes that cannot speak TLS, "
          "such as the kubelet's); empty: none.");

namespace {

using Clock = std::chrono::steady_clock;

// How long the exit waits for /metrics connections in progress (drain_seconds + this + the
// gRPC grace of 1 s stays inside drain_seconds + 5 s).
constexpr absl::Duration kMetricsStopTimeout = absl::Seconds(2);

// One JSON line: the event, a human-readable message, and any fields.
void Log(std::string_view event, const std::string& message,
         const danet::service::LogFields& fields = danet::service::LogFields::object()) {
  danet::service::LogFields line = {{"msg", message}};
  line.update(fields);
  danet::service::Log(event, line);
}

// grpc++_reflection registers its plugin with every ServerBuilder at static initialisation, so
// a server has reflection unless its builder drops the plugin: this option does.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
                         return dynamic_cast<grpc::reflection::ProtoServerReflectionPlugin*>(
                                    plugin.get()) != nullptr;
                       }),
        plugins->end());
  }
};

// The gRPC listeners: the service (with grpc.health.v1, and reflection when asked) on
// --address, and grpc.health.v1 alone, in plaintext, on --health_address.
struct Listeners {
  // The health listener's other methods: UNIMPLEMENTED (gRPC also needs one callback service
  // to poll a server that has only the built-in health service).
  std::unique_ptr<grpc::CallbackGenericService> unimplemented;
  std::unique_ptr<grpc::Server> health_server;  // null without --health_address
  std::unique_ptr<grpc::Server> server;
  int health_port = 0;
  int port = 0;

  void SetServing(bool serving) {
    server->GetHealthCheckService()->SetServingStatus(serving);
    if (health_server) health_server->GetHealthCheckService()->SetServingStatus(serving);
  }
  void Shutdown(std::chrono::system_clock::time_point deadline) {
    server->Shutdown(deadline);
    server->Wait();
    if (health_server) health_server->Shutdown(std::chrono::system_clock::now());
  }
};

// Starts both listeners, NOT_SERVING.
absl::StatusOr<Listeners> Listen(grpc::Service* service,
                                 const danet::service::ServerSecurity& security) {
  Listeners listeners;
  grpc::EnableDefaultHealthCheckService(true);
  if (const std::string address = absl::GetFlag(FLAGS_health_address); !address.empty()) {
    // Health and nothing else.
    grpc::ServerBuilder builder;
    builder.SetOption(std::make_unique<WithoutReflection>());
    listeners.unimplemented = std::make_unique<grpc::CallbackGenericService>();
    builder.RegisterCallbackGenericService(listeners.unimplemented.get());
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &listeners.health_port);
    listeners.health_server = builder.BuildAndStart();
    if (listeners.health_server == nullptr || listeners.health_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", address, " (--health_address)"));
    }
  }
  grpc::ServerBuilder builder;
  if (absl::GetFlag(FLAGS_reflection)) {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  } else {
    builder.SetOption(std::make_unique<WithoutReflection>());
  }
  builder.AddListeningPort(absl::GetFlag(FLAGS_address), security.credentials, &listeners.port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(4 << 20);
  listeners.server = builder.BuildAndStart();
  if (listeners.server == nullptr || listeners.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_address)));
  }
  listeners.SetServing(false);
  return listeners;
}

int Run(const sigset_t& signals) {
  absl::StatusOr<c10::Device> device = danet::models::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    Log("usage", std::string(device.status().message()));
    return 2;
  }
  danet::models::SetUpProcess(absl::GetFlag(FLAGS_threads));
  if (const std::string hint = danet::models::HugePageHint(); !hint.empty()) Log("hint", hint);
  if (const std::string blas = danet::models::BlasKernelReport(); !blas.empty()) {
    Log("blas", blas, {{"kernels", danet::models::OpenBlasCore()}});
  }
  const danet::service::SecurityOptions security_options{
      absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
      absl::GetFlag(FLAGS_tls_client_ca_file), absl::GetFlag(FLAGS_auth_token_file)};
  if (absl::Status flags = danet::service::CheckSecurityOptions(security_options); !flags.ok()) {
    Log("usage", std::string(flags.message()));
    return 2;
  }
  absl::StatusOr<danet::service::ServerSecurity> security =
      danet::service::LoadServerSecurity(security_options);
  if (!security.ok()) {
    Log("error", std::string(security.status().message()));
    return 1;
  }

  danet::metrics::Registry registry;
  danet::service::ServiceMetrics metrics(
      &registry, security->tokens ? security->tokens->names()
                                  : std::vector<std::string>{danet::service::kAnonymousClient});
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

  // Outlives the service, whose uploads hold leases on it.
  danet::service::MemoryBudget memory_budget(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_memory_budget_mb)) << 20);
  std::optional<danet::volume::SeriesRules> series_rules;
  if (!absl::GetFlag(FLAGS_series_rules).empty()) {
    absl::StatusOr<danet::volume::SeriesRules> loaded =
        danet::volume::LoadSeriesRules(absl::GetFlag(FLAGS_series_rules));
    if (!loaded.ok()) {
      Log("error", std::string(loaded.status().message()));
      return 1;
    }
    series_rules = *std::move(loaded);
  }
  danet::service::ServiceOptions options;
  options.limits.memory = &memory_budget;
  options.limits.series_rules = series_rules ? &*series_rules : nullptr;
  options.bundle_path = absl::GetFlag(FLAGS_bundle);
  options.workers = std::max(1, absl::GetFlag(FLAGS_workers));
  options.queue_size = std::max(0, absl::GetFlag(FLAGS_queue_size));
  options.prepare_ahead = absl::GetFlag(FLAGS_prepare_ahead);
  options.idle_release_seconds = std::max(0.0, absl::GetFlag(FLAGS_idle_release_seconds));
  options.max_uploads = std::max(1, absl::GetFlag(FLAGS_max_uploads));
  options.upload_idle_seconds = std::max(0.001, absl::GetFlag(FLAGS_upload_idle_seconds));
  options.max_upload_seconds = std::max(0.001, absl::GetFlag(FLAGS_max_upload_seconds));
  options.limits.max_upload_bytes = absl::GetFlag(FLAGS_max_upload_mb) << 20;
  options.limits.nifti.max_dim = absl::GetFlag(FLAGS_max_dim);
  options.limits.nifti.max_voxels = absl::GetFlag(FLAGS_max_voxels);
  options.log_requests = absl::GetFlag(FLAGS_log_requests);
  options.job.model_batch = std::max(1, absl::GetFlag(FLAGS_model_batch));
  options.job.crop_to_brain = absl::GetFlag(FLAGS_crop_to_brain);
  options.job.decision_batch = std::max(1, absl::GetFlag(FLAGS_decision_batch));
  options.tokens = security->tokens;
  danet::service::SegmentationService service(options, &metrics);

  absl::StatusOr<Listeners> listeners = Listen(&service, *security);
  if (!listeners.ok()) {
    Log("error", std::string(listeners.status().message()));
    return 1;
  }
  const int port = listeners->port;
  Log("listening",
      absl::StrCat("listening on port ", port, " (", security->Describe(),
                   "; NOT_SERVING while loading)",
                   metrics_server ? absl::StrCat("; metrics on port ", metrics_server->port()) : "",
                   listeners->health_server
                       ? absl::StrCat("; health on port ", listeners->health_port, " (plaintext)")
                       : ""),
      {{"port", port},
       {"metrics_port", metrics_server ? metrics_server->port() : 0},
       {"health_port", listeners->health_port},
       {"tls", security->tls},
       {"mutual_tls", security->mutual_tls},
       {"tokens", security->tokens ? security->tokens->size() : 0},
       {"reflection", absl::GetFlag(FLAGS_reflection)}});
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_port_file)) << port << "\n";
  }

  const auto load_start = Clock::now();
  danet::models::BankOptions bank_options;
  bank_options.device = *device;
  bank_options.fold_batch_norm = absl::GetFlag(FLAGS_fold_batch_norm);
  bank_options.channels_last = absl::GetFlag(FLAGS_channels_last);
  bank_options.bfloat16 = absl::GetFlag(FLAGS_bfloat16);
  if (absl::GetFlag(FLAGS_int8_linear))
    bank_options.int8_linear = true;  // else the bundle's choice
  // Loaded and warmed up on a thread that then ends, so that the worker's LibTorch thread pool
  // is the process's only one (device.h, RunOnOwnThread).
  absl::StatusOr<std::unique_ptr<danet::models::Bank>> bank;
  absl::Status warm;
  danet::models::RunOnOwnThread([&] {
    bank = danet::models::Bank::Load(options.bundle_path, bank_options);
    if (bank.ok()) warm = danet::service::WarmUp(**bank);
  });
  if (!bank.ok()) {
    Log("error", std::string(bank.status().message()));
    listeners->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  std::shared_ptr<const danet::models::Bank> shared(std::move(*bank));
  // The policy of requests that name none must work before we say SERVING.
  absl::StatusOr<danet::engine::Policy> fallback = danet::engine::ParsePolicy("", *shared);
  if (!fallback.ok()) {
    Log("error", absl::StrCat(options.bundle_path, "/bundle.pbtxt: ", fallback.status().message()));
    listeners->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  if (!warm.ok()) {
    Log("error", std::string(warm.message()));
    listeners->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  danet::models::ReleaseFreeHostMemory();  // what loading and the warm-up freed
  metrics.SetBundle(shared->config().name(), shared->device().str(),
                    danet::engine::RouteNames(*shared));
  service.SetBank(shared);
  listeners->SetServing(true);
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
  listeners->SetServing(false);
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
  listeners->Shutdown(std::chrono::system_clock::now() +
                      (drained ? std::chrono::seconds(1) : std::chrono::seconds(0)));
  // Scrapers get a short grace too; a slow or stuck HTTP client never holds the exit up.
  if (metrics_server != nullptr && !metrics_server->Stop(kMetricsStopTimeout)) {
    Log("metrics_stop_timeout",
        absl::StrCat("metrics: an HTTP client still held a connection after ",
                     absl::FormatDuration(kMetricsStopTimeout), "; not waiting for it"));
  }
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
