#include "server/metrics/metrics.h"

#include <prometheus/check_names.h>
#include <prometheus/client_metric.h>
#include <prometheus/metric_type.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"

namespace danet::metrics {

prometheus::Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    throw std::invalid_argument(
        absl::StrCat("ExponentialBuckets(", start, ", ", factor, ", ", count, ") is invalid"));
  }
  prometheus::Histogram::BucketBoundaries bounds;
  for (int i = 0; i < count; ++i) bounds.push_back(start * std::pow(factor, i));
  return bounds;
}

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::AddGaugeCallback(const std::string& name, const std::string& help,
                                std::function<double()> callback) {
  if (!prometheus::CheckMetricName(name)) {
    throw std::invalid_argument(absl::StrCat("invalid metric name '", name, "'"));
  }
  if (!callback) throw std::invalid_argument(absl::StrCat("gauge callback '", name, "' is empty"));
  absl::MutexLock lock(&mu_);
  for (const CallbackGauge& gauge : callbacks_) {
    if (gauge.name == name) {
      throw std::invalid_argument(absl::StrCat("gauge callback '", name, "' already exists"));
    }
  }
  callbacks_.push_back({name, help, std::move(callback)});
}

std::vector<prometheus::MetricFamily> Registry::Collect() const {
  std::vector<prometheus::MetricFamily> collected = families_.Collect();
  absl::MutexLock lock(&mu_);
  for (const CallbackGauge& gauge : callbacks_) {
    prometheus::ClientMetric sample;
    sample.gauge.value = gauge.callback();
    collected.push_back({gauge.name, gauge.help, prometheus::MetricType::Gauge, {sample}});
  }
  return collected;
}

std::string Registry::Render() const { return prometheus::TextSerializer().Serialize(Collect()); }

}  // namespace danet::metrics
