# tests/deploy: the Prometheus alert rules, the Kubernetes manifests, the Grafana dashboard and
# scale-out, each checked with its real tool.

# deploy/prometheus: the alert rules parse, and each alert fires on synthetic trouble and stays
# quiet on a healthy server (promtool from Debian's prometheus package).
find_program(DANET_PROMTOOL promtool REQUIRED)
add_test(NAME prometheus_rules_check
  COMMAND ${DANET_PROMTOOL} check rules danet-rules.yml
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/prometheus)
add_test(NAME prometheus_rules_unit
  COMMAND ${DANET_PROMTOOL} test rules danet-rules.test.yml
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/prometheus)

# deploy/k8s: overlays render (kubectl kustomize), lint, validate against the Kubernetes
# schemas offline (npm kubernetes-models), and match the server's real flags and ports. The npm
# packages and kubectl come from scripts/setup (build/deploy-tools; see tests/deploy/tools.py).
set(DANET_DEPLOY_TOOLS ${CMAKE_BINARY_DIR}/deploy-tools)
danet_python_test(k8s_manifests MODULE test_k8s DIR ${CMAKE_CURRENT_SOURCE_DIR}/deploy
  TIMEOUT 300
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>"
              "DANET_BRIDGE_BIN=$<TARGET_FILE:danet-pacs-bridge>"
              "DANET_DEPLOY_TOOLS=${DANET_DEPLOY_TOOLS}")

# deploy/grafana: the dashboard type-checks against @grafana/schema (tsc), and every metric it
# queries exists in a live scrape of danet-server; every query runs on a real Prometheus.
danet_python_test(grafana_dashboard MODULE test_grafana DIR ${CMAKE_CURRENT_SOURCE_DIR}/deploy
  TIMEOUT 600
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>"
              "DANET_BRIDGE_BIN=$<TARGET_FILE:danet-pacs-bridge>"
              "DANET_CLI=$<TARGET_FILE:danet>"
              "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
              "DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact"
              "DANET_DEPLOY_TOOLS=${DANET_DEPLOY_TOOLS}"
              "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/grafana_dashboard")

# Scale-out: two real replicas behind one multi-address gRPC target; the danet client's
# round-robin balancing spreads calls over both (docs/deploy.md).
danet_python_test(scale_out_round_robin MODULE test_scale_out DIR ${CMAKE_CURRENT_SOURCE_DIR}/deploy
  TIMEOUT 600
  ENVIRONMENT "DANET_SERVER_BIN=$<TARGET_FILE:danet-server>"
              "DANET_BRIDGE_BIN=$<TARGET_FILE:danet-pacs-bridge>"
              "DANET_CLI=$<TARGET_FILE:danet>"
              "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
              "DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact"
              "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/scale_out")
