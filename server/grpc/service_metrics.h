// What the service reports to Prometheus, as events; the names and label sets live in
// service_metrics.cc (docs/metrics.md lists them).
//
// Thread safety: every method may be called from any thread.
#ifndef DANET_SERVER_GRPC_SERVICE_METRICS_H_
#define DANET_SERVER_GRPC_SERVICE_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "server/metrics/metrics.h"

namespace danet::service {

class ServiceMetrics {
 public:
  // Registers the service's metrics in `registry` (borrowed; must outlive this).
  explicit ServiceMetrics(metrics::Registry* registry);

  // Build and bundle identity (info-style gauges set to 1) and the routes, so every
  // per-route series exists from the start.
  void SetBundle(const std::string& bundle, const std::string& device,
                 const std::vector<std::string>& routes);
  void SetReady(bool ready);
  void RequestStarted();
  // Every finished call: `code` as GrpcCodeName gives it; `policy` "dynamic" or "static";
  // `admitted` when RequestStarted was called for it.
  void RequestFinished(const std::string& code, const std::string& policy, double seconds,
                       bool admitted);
  void BytesReceived(int64_t bytes);
  void QueueDepth(int waiting);
  void Slice(const std::string& route, double gmacs, double model_seconds);
  void Volume(double gmacs, double gmacs_all_largest);
  void StageSeconds(const std::string& stage, double seconds);

 private:
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Histogram>& request_seconds_;
  metrics::Family<metrics::Gauge>& inflight_;
  metrics::Family<metrics::Gauge>& queue_depth_;
  metrics::Family<metrics::Counter>& bytes_;
  metrics::Family<metrics::Counter>& slices_;
  metrics::Family<metrics::Counter>& macs_;
  metrics::Family<metrics::Counter>& macs_all_largest_;
  metrics::Family<metrics::Counter>& macs_saved_;
  metrics::Family<metrics::Histogram>& model_seconds_;
  metrics::Family<metrics::Histogram>& stage_seconds_;
  metrics::Family<metrics::Gauge>& build_info_;
  metrics::Family<metrics::Gauge>& bundle_info_;
  metrics::Family<metrics::Gauge>& ready_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_GRPC_SERVICE_METRICS_H_
