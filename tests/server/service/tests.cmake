# server/service: the gRPC service in-process over loopback (see service_test.cc), and the
# server, the CLI and a Python client out-of-process (test_service_e2e.py).
danet_gtest(service_test
  TORCH
  SOURCES server/service/service_test.cc
  LIBS danet_service ZLIB::ZLIB
  PROPERTIES TIMEOUT 300)
