// The metrics registry (prometheus-cpp families plus scrape-time gauges) and the /metrics
// endpoint: the exposition text we rely on, misuse, concurrency, the rendered text checked by the
// real `promtool check metrics`, the HTTP server over loopback, and slow or idle clients (they
// neither starve a scrape nor hold Stop up). test_slow_clients.py checks the same on the real
// programs.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/http_exporter.h"

namespace danet::metrics {
namespace {

using ::prometheus::BuildCounter;
using ::prometheus::BuildGauge;
using ::prometheus::BuildHistogram;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(MetricsTest, RendersFamiliesThenGaugeCallbacks) {
  Registry registry;
  double rss = 1;
  registry.AddGaugeCallback("process_resident_memory_bytes", "RSS.", [&rss] { return rss; });
  auto& requests =
      BuildCounter().Name("danet_requests_total").Help("Requests.").Register(registry.families());
  requests.Add({{"code", "OK"}, {"policy", "dynamic"}}).Increment(3);
  requests.Add({{"code", "INTERNAL"}, {"policy", "dynamic"}}).Increment(-5);  // ignored
  BuildGauge().Name("danet_ready").Help("Ready.").Register(registry.families()).Add({}).Set(1);
  rss = 4096;  // read at render time
  const std::string text = registry.Render();
  // Labels come out sorted by name; the children of a family in no particular order.
  EXPECT_THAT(text, HasSubstr("# HELP danet_requests_total Requests.\n"
                              "# TYPE danet_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr("danet_requests_total{code=\"OK\",policy=\"dynamic\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("danet_requests_total{code=\"INTERNAL\",policy=\"dynamic\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("# HELP danet_ready Ready.\n# TYPE danet_ready gauge\n"
                              "danet_ready 1\n"));
  EXPECT_THAT(text, testing::EndsWith("# HELP process_resident_memory_bytes RSS.\n"
                                      "# TYPE process_resident_memory_bytes gauge\n"
                                      "process_resident_memory_bytes 4096\n"));
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithTheBoundsWeGive) {
  Registry registry;
  prometheus::Histogram& h = BuildHistogram()
                                 .Name("latency_seconds")
                                 .Help("Latency.")
                                 .Register(registry.families())
                                 .Add({{"method", "Segment"}}, ExponentialBuckets(0.5, 2, 3));
  for (double v : {0.25, 1.0, 1.5, 100.0}) h.Observe(v);  // 1.0 is inside le="1"
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("latency_seconds_bucket{method=\"Segment\",le=\"0.5\"} 1\n"
                              "latency_seconds_bucket{method=\"Segment\",le=\"1\"} 2\n"
                              "latency_seconds_bucket{method=\"Segment\",le=\"2\"} 3\n"
                              "latency_seconds_bucket{method=\"Segment\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("latency_seconds_sum{method=\"Segment\"} 102.75\n"));
  EXPECT_THAT(text, HasSubstr("latency_seconds_count{method=\"Segment\"} 4\n"));
}

TEST(MetricsTest, ServiceBucketBoundsPrintAsTheAlertRulesSpellThem) {
  // deploy/prometheus/danet-rules.test.yml feeds le="10.24", "20.48", "40.96", "81.92" and
  // "163.84" for danet_request_duration_seconds (ExponentialBuckets(0.01, 2, 16)).
  Registry registry;
  BuildHistogram()
      .Name("h")
      .Help("H.")
      .Register(registry.families())
      .Add({}, ExponentialBuckets(0.01, 2, 16));
  const std::string text = registry.Render();
  for (const char* le : {"0.01", "0.64", "10.24", "20.48", "40.96", "81.92", "163.84", "327.68"}) {
    EXPECT_THAT(text, HasSubstr(std::string("h_bucket{le=\"") + le + "\"} 0\n")) << text;
  }
}

TEST(MetricsTest, ExponentialBuckets) {
  EXPECT_THAT(ExponentialBuckets(0.5, 2, 4), ElementsAre(0.5, 1, 2, 4));
  EXPECT_THROW(ExponentialBuckets(0, 2, 4), std::invalid_argument);
  EXPECT_THROW(ExponentialBuckets(1, 1, 4), std::invalid_argument);
  EXPECT_THROW(ExponentialBuckets(1, 2, 0), std::invalid_argument);
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  Registry registry;
  BuildGauge()
      .Name("g")
      .Help("G.")
      .Register(registry.families())
      .Add({{"path", "C:\\dir \"x\"\ny"}})
      .Set(1);
  EXPECT_THAT(registry.Render(), HasSubstr("g{path=\"C:\\\\dir \\\"x\\\"\\ny\"} 1\n"));
}

TEST(MetricsTest, MisuseThrows) {
  Registry registry;
  BuildGauge().Name("g").Help("G.").Register(registry.families());
  EXPECT_THROW(BuildGauge().Name("g").Help("G again.").Register(registry.families()),
               std::invalid_argument);
  EXPECT_THROW(BuildGauge().Name("bad-name").Help("B.").Register(registry.families()),
               std::invalid_argument);
  registry.AddGaugeCallback("up_seconds", "Up.", [] { return 1.0; });
  EXPECT_THROW(registry.AddGaugeCallback("up_seconds", "Again.", [] { return 2.0; }),
               std::invalid_argument);
  EXPECT_THROW(registry.AddGaugeCallback("bad-name", "B.", [] { return 1.0; }),
               std::invalid_argument);
  EXPECT_THROW(registry.AddGaugeCallback("empty", "E.", nullptr), std::invalid_argument);
}

TEST(MetricsTest, ConcurrentUpdatesAndScrapesAgree) {
  Registry registry;
  prometheus::Counter& counter =
      BuildCounter().Name("c_total").Help("C.").Register(registry.families()).Add({});
  auto& gauges = BuildGauge().Name("g").Help("G.").Register(registry.families());
  registry.AddGaugeCallback("cb", "Callback.", [] { return 1.0; });
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done) EXPECT_THAT(registry.Render(), HasSubstr("cb 1\n"));
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        counter.Increment();
        gauges.Add({{"thread", std::to_string(t % 2)}}).Increment(0.5);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  done = true;
  scraper.join();
  EXPECT_EQ(counter.Value(), kThreads * kIterations);
  EXPECT_EQ(gauges.Add({{"thread", "0"}}).Value() + gauges.Add({{"thread", "1"}}).Value(),
            kThreads * kIterations * 0.5);
}

// A registry with every kind of metric and label values that need escaping.
void FillRegistry(Registry& registry) {
  auto& requests = BuildCounter()
                       .Name("danet_requests_total")
                       .Help("Requests by method and code.")
                       .Register(registry.families());
  requests.Add({{"method", "Segment"}, {"code", "OK"}});
  requests.Add({{"method", "Segment"}, {"code", "INTERNAL"}});
  requests.Add({{"method", "Info"}, {"code", "OK"}}).Increment(7);
  BuildGauge()
      .Name("danet_inflight_requests")
      .Help("Requests in progress.")
      .Register(registry.families())
      .Add({})
      .Set(2);
  BuildGauge()
      .Name("danet_model_info")
      .Help("Loaded models.")
      .Register(registry.families())
      .Add({{"model", "path \"C:\\x\"\nnewline"}})
      .Set(1);
  auto& latency = BuildHistogram()
                      .Name("danet_request_duration_seconds")
                      .Help("Request latency.")
                      .Register(registry.families());
  for (double v : {0.001, 0.02, 0.7, 3.0, 50.0}) {
    latency.Add({{"method", "Segment"}}, ExponentialBuckets(0.005, 2, 12)).Observe(v);
  }
  latency.Add({{"method", "Info"}}, ExponentialBuckets(0.005, 2, 12));
  registry.AddGaugeCallback("danet_uptime_seconds", "Uptime.", [] { return 12.5; });
  registry.AddGaugeCallback("danet_odd_value", "Not a number.",
                            [] { return std::numeric_limits<double>::quiet_NaN(); });
}

TEST(MetricsTest, PromtoolAcceptsRenderedRegistry) {
  const char* const kPromtool = "/usr/bin/promtool";
  if (access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << kPromtool << " not found (Debian package 'prometheus'); cannot lint output";
  }
  Registry registry;
  FillRegistry(registry);
  const std::string path = testing::TempDir() + "/danet_metrics_promtool.txt";
  std::ofstream(path) << registry.Render();
  const std::string command = std::string(kPromtool) + " check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  std::remove(path.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "promtool says:\n"
                                    << output << "\non:\n"
                                    << registry.Render();
}

TEST(MetricsServerTest, ServesMetricsOverLoopbackOnAPickedPort) {
  Registry registry;
  FillRegistry(registry);
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());
  httplib::Result result = client.Get("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(result->body, registry.Render());

  httplib::Result other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  other = client.Get("/metrics/extra");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);

  EXPECT_TRUE((*server)->Stop(absl::Seconds(5)));
  EXPECT_TRUE((*server)->Stop(absl::Seconds(5)));  // idempotent
  EXPECT_FALSE(client.Get("/metrics"));
}

TEST(MetricsServerTest, TakenPortIsAnError) {
  Registry registry;
  absl::StatusOr<std::unique_ptr<MetricsServer>> first =
      MetricsServer::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = "127.0.0.1:" + std::to_string((*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsServer>> second = MetricsServer::Start(address, &registry);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(address));
}

TEST(MetricsServerTest, BadAddressesAndOptionsAreErrors) {
  Registry registry;
  for (const char* address :
       {"localhost", "127.0.0.1:http", "127.0.0.1:65536", "127.0.0.1:-1", "::1:80", "[::1:80"}) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server =
        MetricsServer::Start(address, &registry);
    ASSERT_FALSE(server.ok()) << address;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(server.status().message(), HasSubstr(address));
  }
  // A well-formed address that is not on this machine (TEST-NET-1) cannot be bound.
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("192.0.2.1:0", &registry);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(server.status().message(), HasSubstr("192.0.2.1:0"));

  MetricsServerOptions no_workers;
  no_workers.workers = 0;
  EXPECT_EQ(MetricsServer::Start("127.0.0.1:0", &registry, no_workers).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A loopback client that sends the start of a GET, then one byte every `interval` on its own
// thread until Finish or destruction (or, with interval zero, connects and sends nothing).
class SlowClient {
 public:
  SlowClient(int port, std::chrono::milliseconds interval) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (!connected_ || interval.count() == 0) return;
    Send("GET /metrics HTTP/1.1\r\nX-Slow: ");
    thread_ = std::thread([this, interval] {
      while (!stop_) {
        std::this_thread::sleep_for(interval);
        if (!stop_ && !Send("x")) return;
      }
    });
  }
  ~SlowClient() {
    StopTrickle();
    close(fd_);
  }
  bool connected() const { return connected_; }

  // Ends the request and returns the status line of the answer ("" if the server closed).
  std::string Finish() {
    StopTrickle();
    Send("\r\nHost: x\r\n\r\n");
    std::string answer;
    char buffer[4096];
    ssize_t n;
    while ((n = recv(fd_, buffer, sizeof(buffer), 0)) > 0) answer.append(buffer, n);
    return answer.substr(0, answer.find("\r\n"));
  }

 private:
  bool Send(const std::string& text) {
    return send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  void StopTrickle() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  int fd_ = -1;
  bool connected_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(MetricsServerTest, SlowAndIdleClientsDoNotStarveScrapes) {
  Registry registry;
  FillRegistry(registry);
  MetricsServerOptions options;
  options.workers = 2;
  options.read_timeout = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", &registry, options);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<std::unique_ptr<SlowClient>> clients;
  // More clients than workers: three sending slower than the read timeout, one silent (held for
  // the keep-alive timeout, whole seconds in httplib: 1 s).
  for (int i = 0; i < 3; ++i) {
    clients.push_back(
        std::make_unique<SlowClient>((*server)->port(), std::chrono::milliseconds(500)));
  }
  clients.push_back(std::make_unique<SlowClient>((*server)->port(), std::chrono::milliseconds(0)));
  for (const auto& client : clients) ASSERT_TRUE(client->connected());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int i = 0; i < 3; ++i) {
    httplib::Client scraper("127.0.0.1", (*server)->port());
    scraper.set_read_timeout(5, 0);
    const auto start = std::chrono::steady_clock::now();
    httplib::Result result = scraper.Get("/metrics");
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    EXPECT_EQ(result->status, 200);
    // The connections ahead of it hold the two workers for 3 x 0.2 s + 1 s in all.
    EXPECT_LT(seconds, 2.0);
  }
}

TEST(MetricsServerTest, StopDoesNotWaitForAClientThatKeepsSending) {
  Registry registry;
  std::atomic<int> renders{0};
  registry.AddGaugeCallback("renders", "Scrapes rendered.", [&renders] { return ++renders; });
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", &registry);  // read timeout 1 s
  ASSERT_TRUE(server.ok()) << server.status();
  SlowClient client((*server)->port(), std::chrono::milliseconds(100));  // never times out
  ASSERT_TRUE(client.connected());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE((*server)->Stop(absl::Milliseconds(300)));  // the client still holds a worker
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_FALSE((*server)->Stop(absl::Seconds(5)));  // the first call's result, at once
  // The request completed after Stop is answered without reading the registry.
  EXPECT_THAT(client.Finish(), HasSubstr(" 503 "));
  EXPECT_EQ(renders.load(), 0);
}

}  // namespace
}  // namespace danet::metrics
