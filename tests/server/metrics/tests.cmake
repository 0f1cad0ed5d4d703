# server/metrics: the registry (prometheus-cpp), its text format (also checked by promtool when
# installed), the /metrics HTTP endpoint over loopback, and slow or idle HTTP clients.
danet_gtest(metrics_registry_test
  SOURCES server/metrics/metrics_test.cc
  LIBS danet_metrics httplib::httplib absl::status absl::statusor absl::time)

# The same slow and idle clients against the real programs: danet-server (LibTorch and OpenBLAS
# loaded; SIGTERM exits within --drain_seconds + 5 s) and danet-pacs-bridge.
add_test(NAME metrics_slow_clients
  COMMAND ${DANET_PYTHON} -m unittest -v test_slow_clients
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/server/metrics)
set_tests_properties(metrics_slow_clients PROPERTIES
  TIMEOUT 300
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_PACS_BRIDGE=$<TARGET_FILE:danet-pacs-bridge>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/metrics_slow_clients")
