// Transport security and client identity of danet-server: server credentials for TLS (and
// mutual TLS) from PEM files, and the bearer-token table (tokens.h). Everything is read and
// checked once at start, so that a wrong flag or file stops the server with a message naming
// it instead of failing each handshake later.
//
// Certificates and tokens are read at start only: after rotating them (a renewed Kubernetes
// Secret), restart the server (a rolling restart keeps the service up).
#ifndef DANET_SERVER_SERVICE_SECURITY_H_
#define DANET_SERVER_SERVICE_SECURITY_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/grpc/tokens.h"

namespace danet::service {

// The server's flags of the same names; empty: unset.
struct SecurityOptions {
  std::string tls_cert_file;       // PEM certificate chain; with tls_key_file, TLS is on
  std::string tls_key_file;        // PEM private key of that certificate (not encrypted)
  std::string tls_client_ca_file;  // PEM CA certificates: clients must present a certificate
                                   // one of them signed (mutual TLS); needs TLS
  std::string auth_token_file;     // NAME:TOKEN lines (tokens.h); needs TLS, since a bearer
                                   // token must not cross the network in clear text
};

// What LoadServerSecurity made of them.
struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;  // insecure when TLS is off
  std::shared_ptr<const TokenTable> tokens;              // null: no token is asked for
  bool tls = false;
  bool mutual_tls = false;

  // For the start-up log: "plaintext", "TLS", "TLS, client certificates required, 2 tokens".
  std::string Describe() const;
};

// Checks which flags go together (INVALID_ARGUMENT naming them): the certificate and the key
// come as a pair, and the client CA and the token file need them. Reads no file.
absl::Status CheckSecurityOptions(const SecurityOptions& options);

// Reads and checks the files (after CheckSecurityOptions): the certificate and the CA files must
// hold PEM certificates, the certificate must be valid now, the key must be a PEM private key
// that belongs to the certificate, the token file must parse. Errors name the flag and the file
// (and, for the token file, the line).
absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityOptions& options);

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_SECURITY_H_
