#include "server/grpc/service_metrics.h"

namespace danet::service {
namespace {

// Seconds: 10 ms .. ~5.5 min per request; 1 ms .. ~16 s per model pass.
std::vector<double> RequestBuckets() { return metrics::ExponentialBuckets(0.01, 2, 16); }
std::vector<double> ModelBuckets() { return metrics::ExponentialBuckets(0.001, 2, 15); }

}  // namespace

ServiceMetrics::ServiceMetrics(metrics::Registry* r)
    : requests_(r->AddCounter("danet_requests_total",
                              "Segment calls finished, by gRPC status code and policy kind.",
                              {"code", "policy"})),
      request_seconds_(r->AddHistogram("danet_request_duration_seconds",
                                       "Segment call duration, header to status.", {"policy"},
                                       RequestBuckets())),
      inflight_(r->AddGauge("danet_inflight_requests",
                            "Segment calls admitted and not finished (uploading, queued or "
                            "running).")),
      queue_depth_(r->AddGauge("danet_queue_depth",
                               "Uploaded requests waiting for a worker.")),
      bytes_(r->AddCounter("danet_received_bytes_total", "Input file bytes received.")),
      slices_(r->AddCounter("danet_slices_total", "Axial slices segmented, by route.",
                            {"route"})),
      macs_(r->AddCounter("danet_macs_total",
                           "Multiply-accumulate operations spent, by route; the decision "
                           "network's share is counted on each slice's route.",
                           {"route"})),
      macs_all_largest_(r->AddCounter(
          "danet_macs_all_largest_total",
          "Multiply-accumulate operations the same volumes would cost with every slice through "
          "the largest bank model.")),
      macs_saved_(r->AddCounter("danet_macs_saved_total",
                                 "danet_macs_all_largest_total minus what was spent.")),
      model_seconds_(r->AddHistogram("danet_model_inference_duration_seconds",
                                     "Bank model compute time per slice, by model.", {"model"},
                                     ModelBuckets())),
      stage_seconds_(r->AddHistogram("danet_stage_duration_seconds",
                                     "Time per request in each stage (receive, decode, "
                                     "preprocess, decide, segment, encode, queued).",
                                     {"stage"}, RequestBuckets())),
      build_info_(r->AddGauge("danet_build_info", "Server build (always 1).", {"version"})),
      bundle_info_(r->AddGauge("danet_bundle_info", "Loaded bundle (always 1).",
                               {"bundle", "device"})),
      ready_(r->AddGauge("danet_ready", "1 once the bank is loaded and warm, 0 otherwise.")) {
  build_info_.WithLabels({DANET_VERSION}).Set(1);
  ready_.WithLabels({}).Set(0);
  inflight_.WithLabels({}).Set(0);
  queue_depth_.WithLabels({}).Set(0);
  bytes_.WithLabels({});
  macs_all_largest_.WithLabels({});
  macs_saved_.WithLabels({});
  for (const char* policy : {"dynamic", "static"}) request_seconds_.WithLabels({policy});
  requests_.Precreate({{"OK", "dynamic"}, {"OK", "static"}});
}

void ServiceMetrics::SetBundle(const std::string& bundle, const std::string& device,
                               const std::vector<std::string>& routes) {
  bundle_info_.WithLabels({bundle, device}).Set(1);
  for (const std::string& route : routes) {
    slices_.WithLabels({route});
    macs_.WithLabels({route});
    if (route != "skip") model_seconds_.WithLabels({route});
  }
  for (const char* stage :
       {"receive", "decode", "preprocess", "decide", "segment", "encode", "queued"}) {
    stage_seconds_.WithLabels({stage});
  }
}

void ServiceMetrics::SetReady(bool ready) { ready_.WithLabels({}).Set(ready ? 1 : 0); }

void ServiceMetrics::RequestStarted() { inflight_.WithLabels({}).Add(1); }

void ServiceMetrics::RequestFinished(const std::string& code, const std::string& policy,
                                     double seconds, bool admitted) {
  requests_.WithLabels({code, policy}).Increment();
  request_seconds_.WithLabels({policy}).Observe(seconds);
  if (admitted) inflight_.WithLabels({}).Add(-1);
}

void ServiceMetrics::BytesReceived(int64_t bytes) {
  bytes_.WithLabels({}).Increment(static_cast<double>(bytes));
}

void ServiceMetrics::QueueDepth(int waiting) { queue_depth_.WithLabels({}).Set(waiting); }

void ServiceMetrics::Slice(const std::string& route, double gmacs, double model_seconds) {
  slices_.WithLabels({route}).Increment();
  macs_.WithLabels({route}).Increment(gmacs * 1e9);  // base unit: operations
  if (route != "skip") model_seconds_.WithLabels({route}).Observe(model_seconds);
}

void ServiceMetrics::Volume(double gmacs, double gmacs_all_largest) {
  macs_all_largest_.WithLabels({}).Increment(gmacs_all_largest * 1e9);
  macs_saved_.WithLabels({}).Increment(std::max(0.0, gmacs_all_largest - gmacs) * 1e9);
}

void ServiceMetrics::StageSeconds(const std::string& stage, double seconds) {
  stage_seconds_.WithLabels({stage}).Observe(seconds);
}

}  // namespace danet::service
