#include "client/cli/channel.h"

#include <grpcpp/create_channel.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "models/volume/nifti.h"

namespace danet::client {
namespace {

absl::StatusOr<std::string> ReadFlagFile(const char* flag, const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("--", flag, " ", path, ": no such file"));
  }
  absl::StatusOr<std::string> bytes = volume::ReadFileBytes(path);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat("--", flag, " ", bytes.status().message()));
  }
  return bytes;
}

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFlagFile("token_file", path);
  if (!text.ok()) return text.status();
  const std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--token_file ", path, ": empty"));
  }
  for (const char c : token) {
    if (c <= 0x20 || c >= 0x7f) {
      // Never shown: it is a secret.
      return absl::InvalidArgumentError(
          absl::StrCat("--token_file ", path, ": the token must be one word of printable ASCII"));
    }
  }
  return token;
}

absl::Status CheckFlags(const ChannelSecurity& security) {
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file and --tls_key_file go together: ",
        security.tls_cert_file.empty() ? "--tls_cert_file" : "--tls_key_file", " is missing"));
  }
  if (!security.token_file.empty() && !security.tls()) {
    return absl::InvalidArgumentError(
        "--token_file needs TLS (--tls_ca_file): a bearer token is never sent in clear text");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurity& security) {
  if (absl::Status flags = CheckFlags(security); !flags.ok()) return flags;
  if (!security.tls()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;  // an empty pem_root_certs means the system's roots
  const struct {
    const char* flag;
    const std::string& path;
    std::string* pem;
  } files[] = {{"tls_ca_file", security.tls_ca_file, &ssl.pem_root_certs},
               {"tls_cert_file", security.tls_cert_file, &ssl.pem_cert_chain},
               {"tls_key_file", security.tls_key_file, &ssl.pem_private_key}};
  for (const auto& file : files) {
    if (file.path.empty()) continue;
    absl::StatusOr<std::string> pem = ReadFlagFile(file.flag, file.path);
    if (!pem.ok()) return pem.status();
    *file.pem = *std::move(pem);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(ssl);
  if (security.token_file.empty()) return credentials;
  absl::StatusOr<std::string> token = ReadToken(security.token_file);
  if (!token.ok()) return token.status();
  // "authorization: Bearer TOKEN" on every call. (gRPC's header warns against sending Google
  // OAuth tokens to other services; this token is ours and goes only to our server.)
  return grpc::CompositeChannelCredentials(credentials, grpc::AccessTokenCredentials(*token));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                           const ChannelSecurity& security,
                                                           grpc::ChannelArguments args) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(security);
  if (!credentials.ok()) return credentials.status();
  args.SetLoadBalancingPolicyName("round_robin");
  return grpc::CreateCustomChannel(target, *credentials, args);
}

}  // namespace danet::client
