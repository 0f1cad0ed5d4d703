// MetricsServer on cpp-httplib 0.11 (Debian 12), which has no "wait until ready" call and no
// bound on how long a whole request may take: Start binds synchronously (so bind errors come back
// as a Status), then runs the accept loop on a thread and waits, bounded, until the loop reports
// that it is running. httplib reads with a per-read timeout, and its stop() joins every worker,
// so Stop waits for them with a deadline and leaves behind (detached, with the State they use)
// any that a client still holds.
#include "server/metrics/http_exporter.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace danet::metrics {

struct MetricsServer::State {
  httplib::Server http;
  absl::Notification listen_returned;  // the accept loop and every worker have ended
  absl::Mutex mu;
  const Registry* registry ABSL_GUARDED_BY(mu);  // null once Stop has begun
};

namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr absl::Duration kStartTimeout = absl::Seconds(5);

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

absl::Status CheckOptions(const MetricsServerOptions& options) {
  if (options.workers < 1 || options.read_timeout <= absl::ZeroDuration() ||
      options.write_timeout <= absl::ZeroDuration() ||
      options.stop_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "metrics server options: workers and timeouts must be positive");
  }
  return absl::OkStatus();
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

// httplib takes timeouts as (seconds, microseconds).
void SetTimeouts(httplib::Server& http, const MetricsServerOptions& options) {
  const int64_t read_us = absl::ToInt64Microseconds(options.read_timeout);
  const int64_t write_us = absl::ToInt64Microseconds(options.write_timeout);
  http.set_read_timeout(read_us / 1000000, read_us % 1000000);
  http.set_write_timeout(write_us / 1000000, write_us % 1000000);
  http.set_keep_alive_timeout(
      static_cast<time_t>(std::ceil(absl::ToDoubleSeconds(options.read_timeout))));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, const Registry* registry, const MetricsServerOptions& options) {
  if (registry == nullptr) return absl::InvalidArgumentError("MetricsServer needs a registry");
  if (absl::Status checked = CheckOptions(options); !checked.ok()) return checked;
  absl::StatusOr<HostPort> host_port = ParseAddress(address);
  if (!host_port.ok()) return host_port.status();

  auto state = std::make_shared<State>();
  {
    absl::MutexLock lock(&state->mu);
    state->registry = registry;
  }
  httplib::Server& http = state->http;
  const int workers = options.workers;
  http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  http.set_socket_options(SetSocketOptions);
  SetTimeouts(http, options);
  State* const raw = state.get();  // the handler lives inside *state, so never outlives it
  http.Get("/metrics", [raw](const httplib::Request&, httplib::Response& response) {
    absl::ReaderMutexLock lock(&raw->mu);
    if (raw->registry == nullptr) {
      response.status = 503;  // stopping
      return;
    }
    response.set_content(raw->registry->Render(), kContentType);
  });

  errno = 0;
  int port = host_port->port;
  if (port == 0) {
    port = http.bind_to_any_port(host_port->host);
  } else if (!http.bind_to_port(host_port->host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on metrics address '", address, "': ", BindErrorReason(errno)));
  }

  std::unique_ptr<MetricsServer> result(new MetricsServer(state, port, options.stop_timeout));
  {
    absl::MutexLock lock(&result->mu_);
    result->thread_ = std::thread([state] {
      state->http.listen_after_bind();
      state->listen_returned.Notify();
    });
  }
  const absl::Time deadline = absl::Now() + kStartTimeout;
  while (!http.is_running() && !state->listen_returned.HasBeenNotified() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (!http.is_running()) {
    result->Stop(absl::ZeroDuration());
    return absl::InternalError(
        absl::StrCat("metrics server on '", address, "' did not start listening"));
  }
  return result;
}

MetricsServer::MetricsServer(std::shared_ptr<State> state, int port, absl::Duration stop_timeout)
    : state_(std::move(state)), port_(port), stop_timeout_(stop_timeout) {}

MetricsServer::~MetricsServer() { Stop(stop_timeout_); }

bool MetricsServer::Stop(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return stopped_cleanly_;
  stopped_ = true;
  {
    absl::MutexLock registry_lock(&state_->mu);  // waits for a Render in progress
    state_->registry = nullptr;
  }
  const absl::Time deadline = absl::Now() + timeout;
  // httplib's stop() is a no-op until the accept loop runs, so wait for it (it starts within
  // microseconds; Start only gives up on it if the thread never got scheduled).
  while (!state_->listen_returned.HasBeenNotified()) {
    if (state_->http.is_running()) {
      state_->http.stop();
      break;
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(1));
  }
  stopped_cleanly_ = state_->listen_returned.WaitForNotificationWithDeadline(deadline);
  if (stopped_cleanly_) {
    thread_.join();
  } else {
    thread_.detach();  // it holds a reference to *state_
  }
  return stopped_cleanly_;
}

}  // namespace danet::metrics
