// libFuzzer target: the bundle config (protobuf text) parser and its semantic checks, which a
// server runs on every bundle it loads.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/bundle/bundle_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<danet::v1::BundleConfig> config =
      danet::models::ParseBundleConfig(text, "fuzz.pbtxt");
  if (config.ok()) (void)danet::models::ValidateBundleConfig(*config, {});
  return 0;
}
