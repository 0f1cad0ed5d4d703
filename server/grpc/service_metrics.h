// What the service reports to Prometheus, as events; the names and label sets live in
// service_metrics.cc (listed in docs/api.md, Metrics). The metrics are prometheus-cpp's,
// registered in a metrics::Registry (server/metrics/metrics.h).
//
// Thread safety: every method may be called from any thread.
#ifndef DANET_SERVER_GRPC_SERVICE_METRICS_H_
#define DANET_SERVER_GRPC_SERVICE_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "server/grpc/tokens.h"
#include "server/metrics/metrics.h"

namespace danet::service {

class ServiceMetrics {
 public:
  // Registers the service's metrics in `registry` (borrowed; must outlive this). `clients`: the
  // client names the server knows (tokens.h; kAnonymousClient without a token file), whose
  // zero-valued request series exist from the start.
  explicit ServiceMetrics(metrics::Registry* registry,
                          const std::vector<std::string>& clients = {kAnonymousClient});

  // Build and bundle identity (info-style gauges set to 1) and the routes, so every
  // per-route series exists from the start.
  void SetBundle(const std::string& bundle, const std::string& device,
                 const std::vector<std::string>& routes);
  void SetReady(bool ready);
  void RequestStarted();
  // Every finished call: `code` as GrpcCodeName gives it; `policy` "dynamic" or "static";
  // `client` the caller's name (a token file's names, "anonymous" or "unauthenticated": a
  // bounded set, never client-chosen text); `admitted` when RequestStarted was called for it.
  void RequestFinished(const std::string& code, const std::string& policy,
                       const std::string& client, double seconds, bool admitted);
  void BytesReceived(int64_t bytes);
  void QueueDepth(int waiting);
  void Slice(const std::string& route, double gmacs, double model_seconds);
  // A volume's summary: its GMACs (both passes when it was segmented twice), the all-largest
  // baseline, and the first pass's GMACs (0 for one pass).
  void Volume(double gmacs, double gmacs_all_largest, double first_pass_gmacs);
  void StageSeconds(const std::string& stage, double seconds);

 private:
  const prometheus::Histogram::BucketBoundaries request_buckets_;
  const prometheus::Histogram::BucketBoundaries model_buckets_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Gauge& inflight_;
  prometheus::Gauge& queue_depth_;
  prometheus::Counter& bytes_;
  prometheus::Family<prometheus::Counter>& slices_;
  prometheus::Family<prometheus::Counter>& macs_;
  prometheus::Counter& macs_all_largest_;
  prometheus::Counter& bias_refits_;
  prometheus::Counter& first_pass_macs_;
  prometheus::Counter& macs_saved_;
  prometheus::Family<prometheus::Histogram>& model_seconds_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& bundle_info_;
  prometheus::Gauge& ready_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_GRPC_SERVICE_METRICS_H_
