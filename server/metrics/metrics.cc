// Metric types, families and the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
#include "server/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace danet::metrics {
namespace {

// Misuse of the API (see metrics.h): report and abort, like a failed CHECK.
[[noreturn]] void Fatal(const std::string& message) {
  std::fprintf(stderr, "danet::metrics: %s\n", message.c_str());
  std::abort();
}

void AtomicAdd(std::atomic<double>& value, double v) {
  double old = value.load(std::memory_order_relaxed);
  while (!value.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

// Integers (up to 2^53) without exponent or decimal point, other values in the shortest form
// that reads back exactly, and the spellings of infinities and NaN that Prometheus parses.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) <= 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, result.ptr);
}

// Label values escape backslash, double quote and newline; help text only the first and last.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

bool IsValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit) || (allow_colon && c == ':'))) return false;
  }
  return true;
}

void CheckMetricName(const std::string& name) {
  if (!IsValidName(name, /*allow_colon=*/true)) {
    Fatal(absl::StrCat("invalid metric name '", name, "'"));
  }
}

void CheckLabelNames(const std::string& metric, const std::vector<std::string>& label_names,
                     bool histogram) {
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    if (!IsValidName(label, /*allow_colon=*/false) || label.rfind("__", 0) == 0) {
      Fatal(absl::StrCat("invalid label name '", label, "' for metric '", metric, "'"));
    }
    if (histogram && label == "le") {
      Fatal(absl::StrCat("histogram '", metric, "' may not have a label named 'le'"));
    }
    if (std::find(label_names.begin(), label_names.begin() + i, label) != label_names.begin() + i) {
      Fatal(absl::StrCat("duplicate label name '", label, "' for metric '", metric, "'"));
    }
  }
}

std::vector<double> NormalizeBuckets(std::vector<double> bounds) {
  if (!bounds.empty() && bounds.back() == std::numeric_limits<double>::infinity()) {
    bounds.pop_back();
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (std::isnan(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      Fatal(absl::StrCat("histogram buckets must be strictly increasing and not NaN, got [",
                         absl::StrJoin(bounds, ", "), "]"));
    }
  }
  return bounds;
}

// `{a="x",b="y"}` with an optional extra pair (a histogram's "le"), or "" without labels.
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra_name = "", const std::string& extra_value = "") {
  std::vector<std::string> pairs;
  for (size_t i = 0; i < names.size(); ++i) {
    pairs.push_back(absl::StrCat(names[i], "=\"", Escape(values[i], /*quote=*/true), "\""));
  }
  if (!extra_name.empty()) pairs.push_back(absl::StrCat(extra_name, "=\"", extra_value, "\""));
  return pairs.empty() ? "" : absl::StrCat("{", absl::StrJoin(pairs, ","), "}");
}

void RenderHeader(const std::string& name, const std::string& help, const std::string& type,
                  std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", Escape(help, /*quote=*/false), "\n", "# TYPE ", name,
                  " ", type, "\n");
}

void RenderChild(const std::string& name, const std::vector<std::string>& label_names,
                 const std::vector<std::string>& label_values, double value, std::string* out) {
  absl::StrAppend(out, name, LabelSet(label_names, label_values), " ", FormatValue(value), "\n");
}

// Counters and gauges: one sample.
template <typename T>
void RenderChild(const std::string& name, const std::vector<std::string>& label_names,
                 const std::vector<std::string>& label_values, const T& metric, std::string* out) {
  RenderChild(name, label_names, label_values, metric.value(), out);
}

void RenderChild(const std::string& name, const std::vector<std::string>& label_names,
                 const std::vector<std::string>& label_values, const Histogram& histogram,
                 std::string* out) {
  const Histogram::Snapshot snapshot = histogram.snapshot();
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i < histogram.upper_bounds().size(); ++i) {
    absl::StrAppend(
        out, bucket,
        LabelSet(label_names, label_values, "le", FormatValue(histogram.upper_bounds()[i])), " ",
        snapshot.cumulative_counts[i], "\n");
  }
  absl::StrAppend(out, bucket, LabelSet(label_names, label_values, "le", "+Inf"), " ",
                  snapshot.count, "\n");
  RenderChild(absl::StrCat(name, "_sum"), label_names, label_values, snapshot.sum, out);
  absl::StrAppend(out, name, "_count", LabelSet(label_names, label_values), " ", snapshot.count,
                  "\n");
}

// An unlabelled gauge read from a callback at render time.
class CallbackGauge final : public internal::FamilyBase {
 public:
  CallbackGauge(std::string name, std::string help, std::function<double()> callback)
      : name_(std::move(name)), help_(std::move(help)), callback_(std::move(callback)) {}

  void RenderTo(std::string* out) const override {
    RenderHeader(name_, help_, "gauge", out);
    RenderChild(name_, {}, {}, callback_(), out);
  }

 private:
  const std::string name_;
  const std::string help_;
  const std::function<double()> callback_;
};

}  // namespace

void Counter::Increment(double v) {
  if (!(v >= 0)) return;  // also rejects NaN
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(NormalizeBuckets(std::move(upper_bounds))),
      counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  const size_t bucket =
      std::isnan(v)
          ? upper_bounds_.size()
          : std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) - upper_bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  absl::MutexLock lock(&mu_);
  snapshot.cumulative_counts.reserve(upper_bounds_.size());
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    snapshot.count += counts_[i];
    snapshot.cumulative_counts.push_back(snapshot.count);
  }
  snapshot.count += counts_.back();
  snapshot.sum = sum_;
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    Fatal(absl::StrCat("ExponentialBuckets(", start, ", ", factor, ", ", count, ") is invalid"));
  }
  std::vector<double> bounds;
  for (int i = 0; i < count; ++i) bounds.push_back(start * std::pow(factor, i));
  return bounds;
}

template <typename T>
Family<T>::Family(std::string name, std::string help, std::string type,
                  std::vector<std::string> label_names,
                  std::function<std::unique_ptr<T>()> make_child)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(std::move(type)),
      label_names_(std::move(label_names)),
      make_child_(std::move(make_child)) {
  if (label_names_.empty()) WithLabels({});
}

template <typename T>
T& Family<T>::WithLabels(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    Fatal(absl::StrCat("metric '", name_, "' has ", label_names_.size(), " label name(s) [",
                       absl::StrJoin(label_names_, ", "), "] but got ", label_values.size(),
                       " label value(s)"));
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<T>& child = children_[label_values];
  if (child == nullptr) child = make_child_();
  return *child;
}

template <typename T>
void Family<T>::Precreate(const std::vector<std::vector<std::string>>& label_value_sets) {
  for (const std::vector<std::string>& values : label_value_sets) WithLabels(values);
}

template <typename T>
void Family<T>::RenderTo(std::string* out) const {
  RenderHeader(name_, help_, type_, out);
  absl::MutexLock lock(&mu_);
  for (const auto& [label_values, child] : children_) {
    RenderChild(name_, label_names_, label_values, *child, out);
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Registry::Registry() = default;
Registry::~Registry() = default;

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      const std::vector<std::string>& label_names) {
  CheckMetricName(name);
  if (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0) {
    Fatal(absl::StrCat("counter name '", name, "' must end in _total"));
  }
  CheckLabelNames(name, label_names, /*histogram=*/false);
  auto* family = new Family<Counter>(name, help, "counter", label_names,
                                     [] { return std::make_unique<Counter>(); });
  Register({name}, std::unique_ptr<internal::FamilyBase>(family));
  return *family;
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  const std::vector<std::string>& label_names) {
  CheckMetricName(name);
  CheckLabelNames(name, label_names, /*histogram=*/false);
  auto* family =
      new Family<Gauge>(name, help, "gauge", label_names, [] { return std::make_unique<Gauge>(); });
  Register({name}, std::unique_ptr<internal::FamilyBase>(family));
  return *family;
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          const std::vector<std::string>& label_names,
                                          std::vector<double> buckets) {
  CheckMetricName(name);
  CheckLabelNames(name, label_names, /*histogram=*/true);
  auto* family = new Family<Histogram>(name, help, "histogram", label_names,
                                       [bounds = NormalizeBuckets(std::move(buckets))] {
                                         return std::make_unique<Histogram>(bounds);
                                       });
  Register({name, name + "_bucket", name + "_sum", name + "_count"},
           std::unique_ptr<internal::FamilyBase>(family));
  return *family;
}

void Registry::AddGaugeCallback(const std::string& name, const std::string& help,
                                std::function<double()> callback) {
  CheckMetricName(name);
  if (!callback) Fatal(absl::StrCat("gauge callback '", name, "' is empty"));
  Register({name}, std::make_unique<CallbackGauge>(name, help, std::move(callback)));
}

void Registry::Register(const std::vector<std::string>& series_names,
                        std::unique_ptr<internal::FamilyBase> family) {
  absl::MutexLock lock(&mu_);
  for (const std::string& series : series_names) {
    if (series_names_.count(series) > 0) {
      Fatal(absl::StrCat("metric name '", series, "' is already registered"));
    }
  }
  series_names_.insert(series_names.begin(), series_names.end());
  families_.push_back(std::move(family));
}

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) family->RenderTo(&out);
  return out;
}

}  // namespace danet::metrics
