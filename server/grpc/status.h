// The one place where absl::Status becomes grpc::Status (codes map one to one), with the
// message made safe to send. (Client-chosen text inside messages is quoted with ClientText,
// server/core/upload.h, where it is echoed.)
#ifndef DANET_SERVER_GRPC_STATUS_H_
#define DANET_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace danet::service {

// Status messages go out as grpc-message metadata: a long one would be refused by the client's
// metadata limit (the caller would see a transport error instead of our code), and nobody reads
// 20 kB of an echoed policy. Longer messages are cut to this many characters.
inline constexpr size_t kMaxStatusMessageChars = 200;

// The message is passed through StatusText, so no control byte reaches a client's terminal.
grpc::Status ToGrpcStatus(const absl::Status& status);

// "INVALID_ARGUMENT" etc., for metrics labels and logs.
std::string GrpcCodeName(grpc::StatusCode code);

// A status message made safe to send: control bytes (not UTF-8 text) become \xNN, and the
// result is cut to kMaxStatusMessageChars (at a character boundary, ending with "...").
std::string StatusText(std::string_view message);

}  // namespace danet::service

#endif  // DANET_SERVER_GRPC_STATUS_H_
