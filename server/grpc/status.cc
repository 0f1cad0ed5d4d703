#include "server/grpc/status.h"

#include <string>

namespace danet::service {
namespace {

constexpr std::string_view kCut = "...";

void AppendEscaped(unsigned char c, std::string* out) {
  constexpr char kHex[] = "0123456789abcdef";
  *out += "\\x";
  *out += kHex[c >> 4];
  *out += kHex[c & 15];
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical code numbers.
  const absl::string_view message = status.message();  // not std::string_view in this absl
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      StatusText(std::string_view(message.data(), message.size())));
}

std::string GrpcCodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

std::string StatusText(std::string_view message) {
  std::string out;
  size_t i = 0;
  for (; i < message.size() && out.size() <= kMaxStatusMessageChars; ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (c < 0x20 || c == 0x7f) {
      AppendEscaped(c, &out);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i == message.size() && out.size() <= kMaxStatusMessageChars) return out;
  out.resize(kMaxStatusMessageChars - kCut.size());
  // Never end inside an escape or a UTF-8 sequence (continuation bytes are 10xxxxxx).
  const size_t slash = out.rfind('\\');
  if (slash != std::string::npos && out.size() - slash < 4) out.resize(slash);
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xc0) == 0x80) out.pop_back();
  if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xc0) out.pop_back();
  out += kCut;
  return out;
}

}  // namespace danet::service
