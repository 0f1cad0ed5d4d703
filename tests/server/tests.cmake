# tests/server: the metrics registry, the transport-free core, and the gRPC adapter in-process
# and out-of-process.
set(_server ${CMAKE_CURRENT_SOURCE_DIR}/server)

# server/metrics: the registry (prometheus-cpp), its text format (also checked by promtool when
# installed), the /metrics HTTP endpoint over loopback, and slow or idle HTTP clients.
danet_gtest(metrics_registry_test
  SOURCES ${_server}/metrics/metrics_test.cc
  LIBS danet_metrics httplib::httplib absl::status absl::statusor absl::time)

# The same slow and idle clients against the real programs: danet-server (LibTorch and OpenBLAS
# loaded; SIGTERM exits within --drain_seconds + 5 s) and danet-pacs-bridge.
add_test(NAME metrics_slow_clients
  COMMAND ${DANET_PYTHON} -m unittest -v test_slow_clients
  WORKING_DIRECTORY ${_server}/metrics)
set_tests_properties(metrics_slow_clients PROPERTIES
  TIMEOUT 300
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_PACS_BRIDGE=$<TARGET_FILE:danet-pacs-bridge>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/metrics_slow_clients")

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
# SIGTERM draining. RUN_SERIAL: it times nothing, but shares 2 cores badly.
add_test(NAME service_e2e
  COMMAND ${DANET_PYTHON} -m unittest -v test_service_e2e
  WORKING_DIRECTORY ${_server}/grpc)
set_tests_properties(service_e2e PROPERTIES
  TIMEOUT 900
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_CLI=$<TARGET_FILE:danet>;DANET_PHANTOM=$<TARGET_FILE:danet-phantom>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_PROTO_DIR=${PROJECT_SOURCE_DIR}/proto;DANET_GRPC_PROTO_DIR=${DANET_GRPC_PROTO_DIR};DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/service_e2e")

# DICOM input out-of-process: the phantom's DICOM study against dcm2niix, dciodvfy and pydicom,
# then through danet-server and the danet CLI (same labels as NIfTI, lossless RLE / JPEG-LS /
# JPEG recompression, --series mappings, bad studies as INVALID_ARGUMENT). RUN_SERIAL like
# service_e2e: it shares 2 cores badly.
add_test(NAME dicom_e2e
  COMMAND ${DANET_PYTHON} -m unittest -v test_dicom_e2e
  WORKING_DIRECTORY ${_server}/grpc)
set_tests_properties(dicom_e2e PROPERTIES
  TIMEOUT 600
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_CLI=$<TARGET_FILE:danet>;DANET_PHANTOM=$<TARGET_FILE:danet-phantom>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/dicom_e2e")

# TLS, mutual TLS and bearer tokens out of process: certificates made by openssl at test time,
# danet-server reached by the danet CLI, a Python grpcio client and danet-pacs-bridge (its SEG
# stored to DCMTK's storescp), health and reflection without tokens, bad flags refused at start.
# RUN_SERIAL like service_e2e: it shares 2 cores badly.
add_test(NAME tls_auth_e2e
  COMMAND ${DANET_PYTHON} -m unittest -v test_tls_auth
  WORKING_DIRECTORY ${_server}/grpc)
set_tests_properties(tls_auth_e2e PROPERTIES
  TIMEOUT 600
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_CLI=$<TARGET_FILE:danet>;DANET_PACS_BRIDGE=$<TARGET_FILE:danet-pacs-bridge>;DANET_PHANTOM=$<TARGET_FILE:danet-phantom>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_PROTO_DIR=${PROJECT_SOURCE_DIR}/proto;DANET_GRPC_PROTO_DIR=${DANET_GRPC_PROTO_DIR};DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/tls_auth_e2e")

# At least 40 distinct bad inputs (NIfTI, DICOM, protocol) against the real server from a Python
# client, each with its code and a message fragment, health SERVING after each (issue 12).
add_test(NAME bad_inputs
  COMMAND ${DANET_PYTHON} -m unittest -v test_bad_inputs
  WORKING_DIRECTORY ${_server}/grpc)
set_tests_properties(bad_inputs PROPERTIES
  TIMEOUT 600
  RUN_SERIAL TRUE
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>;DANET_CLI=$<TARGET_FILE:danet>;DANET_PHANTOM=$<TARGET_FILE:danet-phantom>;DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact;DANET_PROTO_DIR=${PROJECT_SOURCE_DIR}/proto;DANET_GRPC_PROTO_DIR=${DANET_GRPC_PROTO_DIR};DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/bad_inputs")
