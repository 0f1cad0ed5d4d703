# server/metrics: the registry, its text format (also checked by promtool when installed) and
# the /metrics HTTP endpoint over loopback.
danet_gtest(metrics_registry_test
  SOURCES server/metrics/metrics_test.cc
  LIBS danet_metrics httplib::httplib absl::status absl::statusor)
