// Metrics registry and /metrics endpoint: exact exposition text, concurrency, the HTTP server
// over loopback, and the rendered text checked by the real `promtool check metrics`.
#include "server/metrics/metrics.h"

#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/http_exporter.h"

namespace danet::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterRendersHelpTypeAndSortedChildren) {
  Registry registry;
  Family<Counter>& requests =
      registry.AddCounter("danet_requests_total", "Requests served.", {"method", "code"});
  requests.WithLabels({"Segment", "OK"}).Increment();
  requests.WithLabels({"Segment", "OK"}).Increment(2);
  requests.WithLabels({"Info", "OK"}).Increment(-5);  // ignored: counters never go down
  EXPECT_EQ(&requests.WithLabels({"Info", "OK"}), &requests.WithLabels({"Info", "OK"}));
  EXPECT_EQ(registry.Render(),
            "# HELP danet_requests_total Requests served.\n"
            "# TYPE danet_requests_total counter\n"
            "danet_requests_total{method=\"Info\",code=\"OK\"} 0\n"
            "danet_requests_total{method=\"Segment\",code=\"OK\"} 3\n");
}

TEST(MetricsTest, UnlabelledFamiliesAndPrecreatedChildrenStartAtZero) {
  Registry registry;
  registry.AddCounter("b_total", "B.");
  registry.AddGauge("a", "A.", {"kind"}).Precreate({{"y"}, {"x"}});
  EXPECT_EQ(registry.Render(),  // registration order, then label order
            "# HELP b_total B.\n# TYPE b_total counter\nb_total 0\n"
            "# HELP a A.\n# TYPE a gauge\na{kind=\"x\"} 0\na{kind=\"y\"} 0\n");
}

TEST(MetricsTest, GaugeValuesAreFormattedForPrometheus) {
  Registry registry;
  Family<Gauge>& gauge = registry.AddGauge("g", "G.", {"case"});
  gauge.WithLabels({"a"}).Set(1e6);
  gauge.WithLabels({"b"}).Set(0.1);
  gauge.WithLabels({"c"}).Set(-2.5);
  gauge.WithLabels({"d"}).Set(std::numeric_limits<double>::infinity());
  gauge.WithLabels({"e"}).Set(-std::numeric_limits<double>::infinity());
  gauge.WithLabels({"f"}).Set(std::numeric_limits<double>::quiet_NaN());
  gauge.WithLabels({"g"}).Set(1e300);
  gauge.WithLabels({"h"}).Set(3);
  gauge.WithLabels({"h"}).Add(-4);
  EXPECT_EQ(registry.Render(),
            "# HELP g G.\n# TYPE g gauge\n"
            "g{case=\"a\"} 1000000\ng{case=\"b\"} 0.1\ng{case=\"c\"} -2.5\n"
            "g{case=\"d\"} +Inf\ng{case=\"e\"} -Inf\ng{case=\"f\"} NaN\n"
            "g{case=\"g\"} 1e+300\ng{case=\"h\"} -1\n");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Registry registry;
  registry.AddGauge("g", "Back\\slash \"quoted\"\nnext line.", {"path"})
      .WithLabels({"C:\\dir \"x\"\ny"})
      .Set(1);
  EXPECT_EQ(registry.Render(),
            "# HELP g Back\\\\slash \"quoted\"\\nnext line.\n# TYPE g gauge\n"
            "g{path=\"C:\\\\dir \\\"x\\\"\\ny\"} 1\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Registry registry;
  Family<Histogram>& latency =
      registry.AddHistogram("latency_seconds", "Latency.", {"method"}, {0.5, 1, 10});
  Histogram& h = latency.WithLabels({"Segment"});
  for (double v : {0.25, 1.0, 5.0, 100.0}) h.Observe(v);  // 1.0 is inside le="1"
  EXPECT_EQ(registry.Render(),
            "# HELP latency_seconds Latency.\n# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{method=\"Segment\",le=\"0.5\"} 1\n"
            "latency_seconds_bucket{method=\"Segment\",le=\"1\"} 2\n"
            "latency_seconds_bucket{method=\"Segment\",le=\"10\"} 3\n"
            "latency_seconds_bucket{method=\"Segment\",le=\"+Inf\"} 4\n"
            "latency_seconds_sum{method=\"Segment\"} 106.25\n"
            "latency_seconds_count{method=\"Segment\"} 4\n");
}

TEST(MetricsTest, HistogramDropsTrailingInfAndExponentialBuckets) {
  EXPECT_THAT(Histogram({1, 2, std::numeric_limits<double>::infinity()}).upper_bounds(),
              ::testing::ElementsAre(1, 2));
  EXPECT_THAT(ExponentialBuckets(0.5, 2, 4), ::testing::ElementsAre(0.5, 1, 2, 4));
}

TEST(MetricsTest, GaugeCallbackIsEvaluatedAtRender) {
  Registry registry;
  double value = 1;
  registry.AddGaugeCallback("process_resident_memory_bytes", "RSS.", [&value] { return value; });
  value = 4096;
  EXPECT_EQ(registry.Render(),
            "# HELP process_resident_memory_bytes RSS.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 4096\n");
}

TEST(MetricsTest, ConcurrentUpdatesSumCorrectly) {
  Registry registry;
  Counter& counter = registry.AddCounter("c_total", "C.").WithLabels({});
  Family<Gauge>& gauges = registry.AddGauge("g", "G.", {"thread"});
  Histogram& histogram = registry.AddHistogram("h", "H.", {}, {1}).WithLabels({});
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        counter.Increment();
        gauges.WithLabels({std::to_string(t % 2)}).Add(0.5);
        histogram.Observe(i % 2 == 0 ? 0.5 : 2);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter.value(), kThreads * kIterations);
  EXPECT_EQ(gauges.WithLabels({"0"}).value() + gauges.WithLabels({"1"}).value(),
            kThreads * kIterations * 0.5);
  const Histogram::Snapshot snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.count, kThreads * kIterations);
  EXPECT_THAT(snapshot.cumulative_counts, ::testing::ElementsAre(kThreads * kIterations / 2));
  EXPECT_EQ(snapshot.sum, kThreads * kIterations * 1.25);
}

TEST(MetricsDeathTest, MisuseIsAProgrammingError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry registry;
  Family<Gauge>& gauge = registry.AddGauge("g", "G.", {"a"});
  EXPECT_DEATH(gauge.WithLabels({"x", "y"}), "'g' has 1 label name");
  EXPECT_DEATH(registry.AddCounter("requests", "R."), "must end in _total");
  EXPECT_DEATH(registry.AddGauge("bad-name", "B."), "invalid metric name");
  EXPECT_DEATH(registry.AddGauge("x", "X.", {"0a"}), "invalid label name");
  EXPECT_DEATH(registry.AddGauge("x", "X.", {"__a"}), "invalid label name");
  EXPECT_DEATH(registry.AddGauge("x", "X.", {"a", "a"}), "duplicate label name");
  EXPECT_DEATH(registry.AddGauge("g", "G again."), "already registered");
  EXPECT_DEATH(registry.AddHistogram("h", "H.", {"le"}, {1}), "label named 'le'");
  EXPECT_DEATH(registry.AddHistogram("h", "H.", {}, {2, 1}), "strictly increasing");
  registry.AddHistogram("h", "H.", {}, {1});
  EXPECT_DEATH(registry.AddGauge("h_count", "Clash."), "already registered");
}

// A registry with every kind of metric, labels and text that needs escaping.
void FillRegistry(Registry& registry) {
  Family<Counter>& requests = registry.AddCounter(
      "danet_requests_total", "Requests by method and code.\nSecond \\ line.", {"method", "code"});
  requests.Precreate({{"Segment", "OK"}, {"Segment", "INTERNAL"}});
  requests.WithLabels({"Info", "OK"}).Increment(7);
  registry.AddGauge("danet_in_flight_requests", "Requests in progress.").WithLabels({}).Set(2);
  registry.AddGauge("danet_model_info", "Loaded models.", {"model"})
      .WithLabels({"path \"C:\\x\"\nnewline"})
      .Set(1);
  Family<Histogram>& latency =
      registry.AddHistogram("danet_request_duration_seconds", "Request latency.", {"method"},
                            ExponentialBuckets(0.005, 2, 12));
  for (double v : {0.001, 0.02, 0.7, 3.0, 50.0}) latency.WithLabels({"Segment"}).Observe(v);
  latency.Precreate({{"Info"}});
  registry.AddGaugeCallback("danet_uptime_seconds", "Uptime.", [] { return 12.5; });
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

  (*server)->Stop();
  (*server)->Stop();  // idempotent
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

TEST(MetricsServerTest, BadAddressesAreErrors) {
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
}

}  // namespace
}  // namespace danet::metrics
