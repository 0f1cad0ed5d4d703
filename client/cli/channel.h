// How the danet client and danet-pacs-bridge reach danet-server: one gRPC channel whose calls
// round-robin over every address the target resolves to, in plaintext or over TLS (with a
// client certificate for servers that require one), with a bearer token on every call. The one
// place where the clients build channel credentials (docs/security.md).
//
// Thread safety: the functions are; the channel they return is shared by any number of stubs
// and threads.
#ifndef DANET_CLIENT_CLI_CHANNEL_H_
#define DANET_CLIENT_CLI_CHANNEL_H_

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace danet::client {

// The client flags of the same names; empty: unset.
struct ChannelSecurity {
  // PEM CA certificates the server's certificate must chain to; setting it (or a client
  // certificate) turns TLS on. With a client certificate but no CA file, the system's roots.
  std::string tls_ca_file;
  std::string tls_cert_file;  // PEM client certificate chain (mutual TLS), with tls_key_file
  std::string tls_key_file;   // its PEM private key
  // A file holding the bearer token (surrounding whitespace ignored), sent as
  // `authorization: Bearer TOKEN` on every call. Needs TLS: a token is never sent in clear text.
  std::string token_file;

  bool tls() const { return !tls_ca_file.empty() || !tls_cert_file.empty(); }
};

// The credentials `security` describes, every file read now. INVALID_ARGUMENT (naming the flags)
// for a certificate without its key or a token without TLS; NOT_FOUND / INVALID_ARGUMENT naming
// the flag and file when one cannot be read or the token file is empty.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurity& security);

// A channel to `target` (an address or any gRPC target, e.g. dns:/// of a headless Kubernetes
// Service: one address per replica) with those credentials and the round_robin policy; `args`
// adds other settings. Errors: as MakeChannelCredentials. Connecting happens later: a server
// that is down, or speaks TLS to a plaintext client (or the reverse), fails the first call with
// UNAVAILABLE.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                           const ChannelSecurity& security,
                                                           grpc::ChannelArguments args = {});

// The four flags --tls_ca_file, --tls_cert_file, --tls_key_file and --token_file, defined once
// (channel_flags.cc) for both client programs.
ChannelSecurity ChannelSecurityFromFlags();

}  // namespace danet::client

#endif  // DANET_CLIENT_CLI_CHANNEL_H_
