// The Prometheus scrape endpoint: a small HTTP server (cpp-httplib) on its own threads that
// answers GET /metrics with Registry::Render() (prometheus-cpp's TextSerializer) and 404 for
// every other path. It is separate from the gRPC port so that scraping works with plain HTTP
// tooling and never competes with segmentation requests for gRPC's threads.
//
// Why not prometheus-cpp's own Exposer: it runs on Debian's civetweb, which creates its worker
// threads with a fixed 100 KiB stack; in a process that has LibTorch and OpenBLAS loaded the
// static TLS alone is larger than that, so civetweb cannot start (docs/api.md, Metrics, has the
// measurement).
//
// Slow and idle clients: a request must keep arriving (a gap longer than read_timeout between
// its bytes ends the connection), idle keep-alive connections are closed after read_timeout,
// and `workers` connections are served at once; Stop never waits longer than it is told to.
//
//   absl::StatusOr<std::unique_ptr<MetricsServer>> server =
//       MetricsServer::Start("0.0.0.0:9464", &registry);
//   if (!server.ok()) return server.status();
#ifndef DANET_SERVER_METRICS_HTTP_EXPORTER_H_
#define DANET_SERVER_METRICS_HTTP_EXPORTER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics/metrics.h"

namespace danet::metrics {

struct MetricsServerOptions {
  // Connections served at once; more wait for a worker. A client that keeps sending at least
  // one byte per read_timeout holds one worker for as long as it does so.
  int workers = 8;
  // Longest wait for the next bytes of a request, and for the next request on an idle
  // keep-alive connection (rounded up to whole seconds there).
  absl::Duration read_timeout = absl::Seconds(1);
  // Longest wait for a client to take the next part of an answer.
  absl::Duration write_timeout = absl::Seconds(2);
  // How long the destructor's Stop waits for connections in progress.
  absl::Duration stop_timeout = absl::Seconds(2);
};

// A running /metrics endpoint. Stops in its destructor. Thread-safe: Stop may be called from
// any thread, any number of times.
class MetricsServer {
 public:
  // Binds `address` ("host:port"; "[::1]:port" for IPv6 literals; an empty host means all IPv4
  // interfaces; port 0 picks a free port, see port()) and returns once the server accepts
  // connections (waiting at most a few seconds). `registry` is borrowed and must outlive the
  // server, or at least the return of Stop. Errors: InvalidArgument for a malformed address or
  // options, Unavailable when the address cannot be bound (port taken, host not local), both
  // naming the address; Internal if the listening thread fails to start.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, const Registry* registry,
      const MetricsServerOptions& options = {});

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the chosen one when Start was given port 0).
  int port() const { return port_; }

  // Closes the listening socket and waits up to `timeout` for the connections in progress to
  // end. Returns true when every server thread has ended. Returns false when a client still
  // held a connection at the deadline: its thread is then left to end on its own or with the
  // process (it keeps what it uses alive and no longer reads the registry), so a shutdown is
  // never held up by a client. After Stop returns, the registry is never read again. Later
  // calls return the first call's result at once.
  bool Stop(absl::Duration timeout);

 private:
  struct State;  // what the server threads use; shared with them, so it outlives an abandon

  MetricsServer(std::shared_ptr<State> state, int port, absl::Duration stop_timeout);

  const std::shared_ptr<State> state_;
  const int port_;
  const absl::Duration stop_timeout_;
  absl::Mutex mu_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);  // runs the accept loop until Stop
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_cleanly_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace danet::metrics

#endif  // DANET_SERVER_METRICS_HTTP_EXPORTER_H_
