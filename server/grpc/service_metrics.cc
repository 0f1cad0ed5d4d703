#include "server/grpc/service_metrics.h"

#include <algorithm>

namespace danet::service {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

}  // namespace

// Buckets, in seconds: 10 ms .. ~5.5 min per request; 1 ms .. ~16 s per model pass.
ServiceMetrics::ServiceMetrics(metrics::Registry* registry, const std::vector<std::string>& clients)
    : request_buckets_(metrics::ExponentialBuckets(0.01, 2, 16)),
      model_buckets_(metrics::ExponentialBuckets(0.001, 2, 15)),
      requests_(BuildCounter()
                    .Name("danet_requests_total")
                    .Help("Segment calls finished, by gRPC status code, policy kind and client "
                          "(its token's name).")
                    .Register(registry->families())),
      request_seconds_(BuildHistogram()
                           .Name("danet_request_duration_seconds")
                           .Help("Segment call duration, header to status.")
                           .Register(registry->families())),
      inflight_(BuildGauge()
                    .Name("danet_inflight_requests")
                    .Help("Segment calls admitted and not finished (uploading, queued or "
                          "running).")
                    .Register(registry->families())
                    .Add({})),
      queue_depth_(BuildGauge()
                       .Name("danet_queue_depth")
                       .Help("Uploaded requests waiting for a worker.")
                       .Register(registry->families())
                       .Add({})),
      bytes_(BuildCounter()
                 .Name("danet_received_bytes_total")
                 .Help("Input file bytes received.")
                 .Register(registry->families())
                 .Add({})),
      slices_(BuildCounter()
                  .Name("danet_slices_total")
                  .Help("Axial slices segmented, by route.")
                  .Register(registry->families())),
      macs_(BuildCounter()
                .Name("danet_macs_total")
                .Help("Multiply-accumulate operations spent, by route; the decision network's "
                      "share is counted on each slice's route.")
                .Register(registry->families())),
      macs_all_largest_(BuildCounter()
                            .Name("danet_macs_all_largest_total")
                            .Help("Multiply-accumulate operations the same volumes would cost "
                                  "with every slice through the largest bank model.")
                            .Register(registry->families())
                            .Add({})),
      bias_refits_(BuildCounter()
                       .Name("danet_bias_refits_total")
                       .Help("Volumes segmented twice: the bundle refitted their bias fields "
                             "without the tumour the first pass found.")
                       .Register(registry->families())
                       .Add({})),
      first_pass_macs_(BuildCounter()
                           .Name("danet_first_pass_macs_total")
                           .Help("Multiply-accumulate operations of those volumes' first passes "
                                 "(in no route of danet_macs_total).")
                           .Register(registry->families())
                           .Add({})),
      macs_saved_(BuildCounter()
                      .Name("danet_macs_saved_total")
                      .Help("danet_macs_all_largest_total minus what was spent.")
                      .Register(registry->families())
                      .Add({})),
      model_seconds_(BuildHistogram()
                         .Name("danet_model_inference_duration_seconds")
                         .Help("Bank model compute time per slice, by model.")
                         .Register(registry->families())),
      stage_seconds_(BuildHistogram()
                         .Name("danet_stage_duration_seconds")
                         .Help("Time per request in each stage (receive, decode, preprocess, "
                               "decide, segment, encode, queued).")
                         .Register(registry->families())),
      build_info_(BuildGauge()
                      .Name("danet_build_info")
                      .Help("Server build (always 1).")
                      .Register(registry->families())),
      bundle_info_(BuildGauge()
                       .Name("danet_bundle_info")
                       .Help("Loaded bundle (always 1).")
                       .Register(registry->families())),
      ready_(BuildGauge()
                 .Name("danet_ready")
                 .Help("1 once the bank is loaded and warm, 0 otherwise.")
                 .Register(registry->families())
                 .Add({})) {
  build_info_.Add({{"version", DANET_VERSION}}).Set(1);
  for (const std::string& client : clients) {
    for (const char* policy : {"dynamic", "static"}) {
      request_seconds_.Add({{"policy", policy}, {"client", client}}, request_buckets_);
      requests_.Add({{"code", "OK"}, {"policy", policy}, {"client", client}});
    }
  }
}

void ServiceMetrics::SetBundle(const std::string& bundle, const std::string& device,
                               const std::vector<std::string>& routes) {
  bundle_info_.Add({{"bundle", bundle}, {"device", device}}).Set(1);
  for (const std::string& route : routes) {
    slices_.Add({{"route", route}});
    macs_.Add({{"route", route}});
    if (route != "skip") model_seconds_.Add({{"model", route}}, model_buckets_);
  }
  for (const char* stage :
       {"receive", "decode", "preprocess", "decide", "segment", "encode", "queued"}) {
    stage_seconds_.Add({{"stage", stage}}, request_buckets_);
  }
}

void ServiceMetrics::SetReady(bool ready) { ready_.Set(ready ? 1 : 0); }

void ServiceMetrics::RequestStarted() { inflight_.Increment(); }

void ServiceMetrics::RequestFinished(const std::string& code, const std::string& policy,
                                     const std::string& client, double seconds, bool admitted) {
  requests_.Add({{"code", code}, {"policy", policy}, {"client", client}}).Increment();
  request_seconds_.Add({{"policy", policy}, {"client", client}}, request_buckets_).Observe(seconds);
  if (admitted) inflight_.Decrement();
}

void ServiceMetrics::BytesReceived(int64_t bytes) { bytes_.Increment(static_cast<double>(bytes)); }

void ServiceMetrics::QueueDepth(int waiting) { queue_depth_.Set(waiting); }

void ServiceMetrics::Slice(const std::string& route, double gmacs, double model_seconds) {
  slices_.Add({{"route", route}}).Increment();
  macs_.Add({{"route", route}}).Increment(gmacs * 1e9);  // base unit: operations
  if (route != "skip") {
    model_seconds_.Add({{"model", route}}, model_buckets_).Observe(model_seconds);
  }
}

void ServiceMetrics::Volume(double gmacs, double gmacs_all_largest, double first_pass_gmacs) {
  if (first_pass_gmacs > 0) {
    bias_refits_.Increment();
    first_pass_macs_.Increment(first_pass_gmacs * 1e9);
  }
  macs_all_largest_.Increment(gmacs_all_largest * 1e9);
  macs_saved_.Increment(std::max(0.0, gmacs_all_largest - gmacs) * 1e9);
}

void ServiceMetrics::StageSeconds(const std::string& stage, double seconds) {
  stage_seconds_.Add({{"stage", stage}}, request_buckets_).Observe(seconds);
}

}  // namespace danet::service
