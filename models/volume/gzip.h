// gzip in memory, with a bound on the inflated size (a small upload must not inflate into
// gigabytes) and errors that say what is wrong with the stream.
#ifndef DANET_MODELS_VOLUME_GZIP_H_
#define DANET_MODELS_VOLUME_GZIP_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace danet::volume {

// True when `bytes` starts with the gzip magic (1f 8b).
bool IsGzip(std::string_view bytes);

// Inflates a gzip stream (its first member, as gzip -d would read a single-member file):
// libdeflate in one pass when the trailer's size is right, else zlib. InvalidArgument for corrupt
// or truncated data, or when the output would exceed `max_bytes`.
absl::StatusOr<std::string> Gunzip(std::string_view bytes, int64_t max_bytes);

// The first `max_bytes` bytes a gzip stream inflates to (fewer when it is shorter), inflating
// no more than that. InvalidArgument for corrupt data before that point.
absl::StatusOr<std::string> GunzipPrefix(std::string_view bytes, int64_t max_bytes);

// Inflates raw deflate data (no gzip or zlib wrapper, as in DICOM's Deflated Explicit VR Little
// Endian transfer syntax). Errors and the bound as Gunzip's, named "deflate".
absl::StatusOr<std::string> InflateRaw(std::string_view bytes, int64_t max_bytes);

// Deflates into a gzip stream (level 6, what gzip(1) uses by default).
absl::StatusOr<std::string> Gzip(std::string_view bytes);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_GZIP_H_
