// Prometheus metrics on prometheus-cpp (Debian's prometheus-cpp-dev 1.0.1). Counters, gauges and
// histograms are prometheus-cpp's own, registered with its builders on Registry::families();
// this file adds what prometheus-cpp 1.0 lacks: gauges computed at scrape time (e.g. resident
// memory) and an exponential bucket helper. http_exporter.h serves Render() over HTTP.
//
// Usage: register every family once at start-up, keep the returned references (a family's and
// each child's stay valid for the registry's lifetime), and update from any thread:
//
//   Registry registry;
//   prometheus::Family<prometheus::Counter>& requests =
//       prometheus::BuildCounter()
//           .Name("danet_requests_total")
//           .Help("Segmentation requests by result.")
//           .Register(registry.families());
//   requests.Add({{"code", "INTERNAL"}});  // a zero-valued series exported before traffic
//   prometheus::Counter& ok = requests.Add({{"code", "OK"}});  // cache this on hot paths
//   ok.Increment();
//
// Misuse is a programming error, reported the way prometheus-cpp reports it: an invalid metric
// or label name, or a name registered twice, throws std::invalid_argument at registration. Help
// texts must be one line without backslashes: prometheus-cpp 1.0.1 writes them unescaped.
//
// Exposition: prometheus::TextSerializer, text format 0.0.4. Labels come out sorted by name
// (prometheus-cpp keeps them in a std::map), families in the order prometheus-cpp collects them
// (counters, gauges, histograms), then the scrape-time gauges in the order they were added.
//
// Thread safety: every class here is thread-safe; metric updates are prometheus-cpp's (atomic
// counters and gauges, a per-histogram mutex).
#ifndef DANET_SERVER_METRICS_METRICS_H_
#define DANET_SERVER_METRICS_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace danet::metrics {

// `count` upper bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1,
// count >= 1; throws std::invalid_argument otherwise). ExponentialBuckets(0.005, 2, 12) covers
// 5 ms-10 s.
prometheus::Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count);

// The metrics one process exports: prometheus-cpp families (families()) followed by gauges read
// from callbacks at each scrape. A prometheus::Collectable, so prometheus-cpp's own exposers and
// serializers take it as it is. Typically one per process, created at start-up and outliving
// every MetricsServer that serves it.
class Registry final : public prometheus::Collectable {
 public:
  Registry();
  ~Registry() override;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Where families are registered: prometheus::BuildCounter()...Register(registry.families()).
  // A name registered twice throws (prometheus::Registry::InsertBehavior::Throw).
  prometheus::Registry& families() { return families_; }

  // An unlabelled gauge whose value is `callback()` at each Collect, e.g. resident memory. The
  // callback runs on the scraping thread with this registry's callback list locked: it must be
  // thread-safe, quick, and must not call back into this registry. Throws std::invalid_argument
  // for an invalid name, a name already given to a callback gauge, or an empty callback.
  void AddGaugeCallback(const std::string& name, const std::string& help,
                        std::function<double()> callback);

  // Every family's current samples: families() first, then the callback gauges.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Collect() in the text exposition format 0.0.4 (prometheus::TextSerializer).
  std::string Render() const;

 private:
  struct CallbackGauge {
    std::string name;
    std::string help;
    std::function<double()> callback;
  };

  prometheus::Registry families_{prometheus::Registry::InsertBehavior::Throw};
  mutable absl::Mutex mu_;
  std::vector<CallbackGauge> callbacks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace danet::metrics

#endif  // DANET_SERVER_METRICS_METRICS_H_
