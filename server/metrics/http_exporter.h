// The Prometheus scrape endpoint: a small HTTP server (cpp-httplib) on its own threads that
// answers GET /metrics with Registry::Render() and 404 for every other path. It is separate from
// the gRPC port so that scraping works with plain HTTP tooling and never competes with
// segmentation requests for gRPC's threads.
//
//   absl::StatusOr<std::unique_ptr<MetricsServer>> server =
//       MetricsServer::Start("0.0.0.0:9464", &registry);
//   if (!server.ok()) return server.status();
#ifndef DANET_SERVER_METRICS_HTTP_EXPORTER_H_
#define DANET_SERVER_METRICS_HTTP_EXPORTER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics/metrics.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace danet::metrics {

// A running /metrics endpoint. Stops in its destructor. Thread-safe: Stop may be called from
// any thread, any number of times.
class MetricsServer {
 public:
  // Binds `address` ("host:port"; "[::1]:port" for IPv6 literals; an empty host means all IPv4
  // interfaces; port 0 picks a free port, see port()) and returns once the server accepts
  // connections (waiting at most a few seconds). `registry` is borrowed and must outlive the
  // server. Errors: InvalidArgument for a malformed address, Unavailable when the address
  // cannot be bound (port taken, host not local), both naming the address; Internal if the
  // listening thread fails to start.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              const Registry* registry);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the chosen one when Start was given port 0).
  int port() const { return port_; }

  // Closes the listening socket and joins the server threads; waits for requests in progress
  // (and for idle keep-alive connections, at most about a second).
  void Stop();

 private:
  MetricsServer(std::unique_ptr<httplib::Server> server, int port);

  const std::unique_ptr<httplib::Server> server_;
  const int port_;
  std::atomic<bool> listen_returned_{false};  // the accept loop has ended
  absl::Mutex mu_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);  // runs the accept loop until Stop
};

}  // namespace danet::metrics

#endif  // DANET_SERVER_METRICS_HTTP_EXPORTER_H_
