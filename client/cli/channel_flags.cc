// The client programs' transport-security flags, defined once for danet and danet-pacs-bridge
// (an object of the danet_client library, linked into a program only when it calls
// ChannelSecurityFromFlags).
#include "absl/flags/flag.h"
#include "client/cli/channel.h"

ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA certificates that sign the server's certificate: connect over TLS.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate chain, for servers that require one (mutual TLS; with "
          "--tls_key_file).");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, token_file, "",
          "A file holding the bearer token the server gave this client; sent on every call "
          "(needs TLS).");

namespace danet::client {

ChannelSecurity ChannelSecurityFromFlags() {
  ChannelSecurity security;
  security.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  security.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  security.token_file = absl::GetFlag(FLAGS_token_file);
  return security;
}

}  // namespace danet::client
