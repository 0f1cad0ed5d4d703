# tests/server: the metrics registry, the transport-free core, and the gRPC adapter in-process
# and out-of-process.
set(_server ${CMAKE_CURRENT_SOURCE_DIR}/server)

# A Python unittest module run out of process against the built programs (paths in the
# environment, its own DANET_TMP), alone: RUN_SERIAL because it times nothing but shares the
# 2 cores badly.
function(danet_python_e2e name module dir timeout)
  danet_python_test(${name} MODULE ${module} DIR ${dir} TIMEOUT ${timeout} RUN_SERIAL
    ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>" "DANET_CLI=$<TARGET_FILE:danet>"
                "DANET_PACS_BRIDGE=$<TARGET_FILE:danet-pacs-bridge>"
                "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
                "DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact"
                "DANET_PROTO_DIR=${PROJECT_SOURCE_DIR}/proto"
                "DANET_GRPC_PROTO_DIR=${DANET_GRPC_PROTO_DIR}"
                "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/${name}")
endfunction()

# server/metrics: the registry (prometheus-cpp), its text format (also checked by promtool when
# installed), the /metrics HTTP endpoint over loopback, and slow or idle HTTP clients.
danet_gtest(metrics_registry_test
  SOURCES ${_server}/metrics/metrics_test.cc
  LIBS danet_metrics httplib::httplib absl::status absl::statusor absl::time)

# The same slow and idle clients against the real programs: danet-server (LibTorch and OpenBLAS
# loaded; SIGTERM exits within --drain_seconds + 5 s) and danet-pacs-bridge.
danet_python_e2e(metrics_slow_clients test_slow_clients ${_server}/metrics 300)

# server/core without gRPC: an upload fed chunk by chunk, a job's messages collected from its
# emit callback, the work queue and the watchdog on their own threads.
danet_gtest(server_core_test
  TORCH
  SOURCES ${_server}/core/upload_test.cc ${_server}/core/job_test.cc
          ${_server}/core/memory_budget_test.cc
          ${_server}/core/work_queue_test.cc
  LIBS danet_server_core danet_engine danet_bank danet_bundle danet_volume ZLIB::ZLIB
  PROPERTIES TIMEOUT 300)

# server/grpc: the gRPC service in-process over loopback (see service_test.cc), and the
# server, the CLI and a Python client out-of-process (test_service_e2e.py).
danet_gtest(service_test
  TORCH
  SOURCES ${_server}/grpc/service_test.cc
  LIBS danet_server_grpc danet_engine danet_bundle danet_data danet_volume ZLIB::ZLIB
  PROPERTIES TIMEOUT 300)

# Token files and the security flags without a server (TLS with real certificates: tls_auth_e2e).
danet_gtest(security_test
  SOURCES ${_server}/grpc/security_test.cc
  LIBS danet_server_grpc)

# Out-of-process, with the real peers: danet-server on the shipped bundle, the danet CLI, a
# Python grpcio client (stubs generated at test time), promtool and a Prometheus server,
# SIGTERM draining.
danet_python_e2e(service_e2e test_service_e2e ${_server}/grpc 900)

# DICOM input out-of-process: the phantom's DICOM study against dcm2niix, dciodvfy and pydicom,
# then through danet-server and the danet CLI (same labels as NIfTI, lossless RLE / JPEG-LS /
# JPEG recompression, --series mappings, bad studies as INVALID_ARGUMENT).
danet_python_e2e(dicom_e2e test_dicom_e2e ${_server}/grpc 600)

# TLS, mutual TLS and bearer tokens out of process: certificates made by openssl at test time,
# danet-server reached by the danet CLI, a Python grpcio client and danet-pacs-bridge (its SEG
# stored to DCMTK's storescp), health and reflection without tokens, bad flags refused at start.
danet_python_e2e(tls_auth_e2e test_tls_auth ${_server}/grpc 600)

# At least 40 distinct bad inputs (NIfTI, DICOM, protocol) against the real server from a Python
# client, each with its code and a message fragment, health SERVING after each (issue 12).
danet_python_e2e(bad_inputs test_bad_inputs ${_server}/grpc 600)
