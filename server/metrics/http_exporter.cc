// MetricsServer on cpp-httplib 0.11 (Debian 12), which has no "wait until ready" call: Start
// binds synchronously (so bind errors come back as a Status), then runs the accept loop on a
// thread and waits, bounded, until the loop reports that it is running.
#include "server/metrics/http_exporter.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace danet::metrics {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr int kWorkerThreads = 2;  // scrapes are rare and Render is fast
constexpr auto kStartTimeout = std::chrono::seconds(5);

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseAddress(const std::string& address) {
  const auto invalid = [&address](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' is not host:port (", why, ")"));
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return invalid("no port");
  HostPort result;
  result.host = address.substr(0, colon);
  if (!result.host.empty() && result.host.front() == '[') {
    if (result.host.size() < 3 || result.host.back() != ']') return invalid("unclosed '['");
    result.host = result.host.substr(1, result.host.size() - 2);
  } else if (result.host.find(':') != std::string::npos) {
    return invalid("IPv6 hosts go in brackets");
  }
  if (result.host.empty()) result.host = "0.0.0.0";
  const std::string port_text = address.substr(colon + 1);
  if (!absl::SimpleAtoi(port_text, &result.port) || result.port < 0 || result.port > 65535 ||
      port_text.find_first_not_of("0123456789") != std::string::npos) {
    return invalid("port must be 0-65535");
  }
  return result;
}

// cpp-httplib's default sets SO_REUSEPORT, which would let a second server bind a port that is
// already in use. SO_REUSEADDR alone still allows a quick restart over TIME_WAIT connections.
void SetSocketOptions(int socket) {
  const int yes = 1;
  setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

std::string BindErrorReason(int error) {
  if (error == EADDRINUSE || error == EADDRNOTAVAIL || error == EACCES) {
    return std::strerror(error);
  }
  return "cannot resolve or bind the host";
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    const Registry* registry) {
  if (registry == nullptr) return absl::InvalidArgumentError("MetricsServer needs a registry");
  absl::StatusOr<HostPort> host_port = ParseAddress(address);
  if (!host_port.ok()) return host_port.status();

  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  server->set_socket_options(SetSocketOptions);
  server->set_keep_alive_timeout(1);  // bounds how long Stop waits for idle connections
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry->Render(), kContentType);
  });

  errno = 0;
  int port = host_port->port;
  if (port == 0) {
    port = server->bind_to_any_port(host_port->host);
  } else if (!server->bind_to_port(host_port->host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on metrics address '", address, "': ", BindErrorReason(errno)));
  }

  std::unique_ptr<MetricsServer> result(new MetricsServer(std::move(server), port));
  httplib::Server* const raw = result->server_.get();
  std::atomic<bool>* const returned = &result->listen_returned_;
  {
    absl::MutexLock lock(&result->mu_);
    result->thread_ = std::thread([raw, returned] {
      raw->listen_after_bind();
      returned->store(true);
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (!raw->is_running() && !returned->load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!raw->is_running()) {
    result->Stop();
    return absl::InternalError(
        absl::StrCat("metrics server on '", address, "' did not start listening"));
  }
  return result;
}

MetricsServer::MetricsServer(std::unique_ptr<httplib::Server> server, int port)
    : server_(std::move(server)), port_(port) {}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  absl::MutexLock lock(&mu_);
  if (!thread_.joinable()) return;
  // httplib's stop() is a no-op until the accept loop runs, so wait for it (it starts within
  // microseconds; Start only gives up on it if the thread never got scheduled).
  while (!listen_returned_.load()) {
    if (server_->is_running()) {
      server_->stop();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  thread_.join();
}

}  // namespace danet::metrics
