// Prometheus metrics: counters, gauges and histograms grouped into labelled families, held by a
// Registry that renders them in the Prometheus text exposition format 0.0.4. Debian ships no
// prometheus-cpp, so this is a small library of our own; http_exporter.h serves Render() over
// HTTP.
//
// Usage: register every family once at start-up, keep the returned references, and update the
// metrics from any thread:
//
//   Registry registry;
//   Family<Counter>& requests = registry.AddCounter(
//       "danet_requests_total", "Segmentation requests by result.", {"code"});
//   requests.Precreate({{"OK"}, {"INTERNAL"}});  // zero-valued series appear before traffic
//   Counter& ok = requests.WithLabels({"OK"});    // cache this on hot paths
//   ok.Increment();
//
// Misuse is a programming error, not a runtime condition, so it aborts with a message instead
// of returning a Status: invalid metric or label names, a counter name without "_total", a
// name registered twice, unsorted histogram buckets, or the wrong number of label values.
//
// Thread safety: every class here is thread-safe. Metric updates are lock-free (Counter, Gauge)
// or take one short per-metric lock (Histogram, so Render sees consistent buckets).
#ifndef DANET_SERVER_METRICS_METRICS_H_
#define DANET_SERVER_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace danet::metrics {

// A monotonically increasing value, e.g. requests served. Lock-free.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `v`. Negative and NaN amounts are ignored: a counter never goes down.
  void Increment(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down, e.g. requests in flight. Lock-free.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  // Adds `v`, which may be negative.
  void Add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets with fixed upper bounds (inclusive, Prometheus "le") plus an
// implicit +Inf bucket, and keeps their sum. Each Observe takes this histogram's own mutex.
class Histogram {
 public:
  // What Render needs, read under one lock so that the numbers agree with each other.
  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per upper bound; +Inf is `count`
    double sum = 0;
    uint64_t count = 0;
  };

  // `upper_bounds` must be strictly increasing and not NaN; a trailing +Inf is dropped (it is
  // always implied). Aborts otherwise.
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // NaN observations land in the +Inf bucket (and make the sum NaN), as in client_golang.
  void Observe(double v);
  Snapshot snapshot() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  const std::vector<double> upper_bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, last one is +Inf
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// `count` bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1, count >= 1;
// aborts otherwise). For latencies in seconds, ExponentialBuckets(0.005, 2, 12) covers 5 ms-10 s.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

namespace internal {
// The type-erased face of a Family that Registry renders. Not for use outside this library.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  virtual void RenderTo(std::string* out) const = 0;
};
}  // namespace internal

// One metric name with its help text and label names, and one child metric per distinct tuple of
// label values. Owned by the Registry that created it; references to the family and to its
// children stay valid for the registry's lifetime.
template <typename T>
class Family final : public internal::FamilyBase {
 public:
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // The child for `label_values` (one per label name, in order), created on first use. Takes
  // the family's mutex and looks up a map, so cache the reference where it matters. Aborts if
  // the number of values differs from the number of label names.
  T& WithLabels(const std::vector<std::string>& label_values);

  // Creates these children now so that their zero-valued series are exported before the first
  // update (a family without label names has its single child from the start).
  void Precreate(const std::vector<std::vector<std::string>>& label_value_sets);

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class Registry;

  Family(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
         std::function<std::unique_ptr<T>()> make_child);
  void RenderTo(std::string* out) const override;

  const std::string name_;
  const std::string help_;
  const std::string type_;  // "counter", "gauge" or "histogram"
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<T>()> make_child_;
  mutable absl::Mutex mu_;
  // Sorted by label values, which makes the exposition order deterministic.
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

// Defined in metrics.cc for these three types only.
extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// Owns metric families and renders them. Typically one per process, created at start-up and
// outliving every MetricsServer that serves it. Thread-safe: families may be added while other
// threads update metrics or render.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a family. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* and be new to this registry
  // (counters: end in "_total"); label names must match [a-zA-Z_][a-zA-Z0-9_]*, not start with
  // "__" and be distinct (histograms: not "le"). `help` may be any UTF-8 text. Aborts otherwise.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              const std::vector<std::string>& label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          const std::vector<std::string>& label_names = {});
  // `buckets` as for Histogram's constructor; every child shares them.
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  const std::vector<std::string>& label_names,
                                  std::vector<double> buckets);

  // An unlabelled gauge whose value is `callback()` at each Render, e.g. resident memory. The
  // callback runs on the rendering thread with the registry locked: it must be thread-safe,
  // quick, and must not call back into this registry.
  void AddGaugeCallback(const std::string& name, const std::string& help,
                        std::function<double()> callback);

  // All families in the text exposition format 0.0.4, in registration order, each family's
  // series sorted by label values. Ends with a newline unless empty.
  std::string Render() const;

 private:
  // Takes ownership of `family` after checking that none of the sample names it will expose
  // (for a histogram: name_bucket, name_sum, name_count too) is taken.
  void Register(const std::vector<std::string>& series_names,
                std::unique_ptr<internal::FamilyBase> family);

  mutable absl::Mutex mu_;
  std::set<std::string> series_names_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace danet::metrics

#endif  // DANET_SERVER_METRICS_METRICS_H_
