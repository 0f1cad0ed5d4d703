#include "server/grpc/security.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace danet::service {
namespace {

constexpr std::uintmax_t kMaxFileBytes = 1 << 20;  // PEM files and token files are small

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Certificate = std::unique_ptr<X509, decltype(&X509_free)>;
using PrivateKey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

// "--flag path", how errors name a file.
std::string Named(absl::string_view flag, const std::string& path) {
  return absl::StrCat("--", flag, " ", path);
}

absl::StatusOr<std::string> ReadSmallFile(absl::string_view flag, const std::string& path) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(Named(flag, path), ": no such file"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(Named(flag, path), ": not a regular file"));
  }
  if (std::filesystem::file_size(path, error) > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(Named(flag, path), ": larger than 1 MiB"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat(Named(flag, path), ": cannot be read (", std::strerror(errno), ")"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Encrypted keys are refused, never prompted for on a terminal.
int NoPassword(char*, int, int, void*) { return -1; }

Certificate FirstCertificate(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  return Certificate(PEM_read_bio_X509(bio.get(), nullptr, NoPassword, nullptr), &X509_free);
}

std::string TimeText(const ASN1_TIME* time) {
  Bio bio(BIO_new(BIO_s_mem()), &BIO_free);
  ASN1_TIME_print(bio.get(), time);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// The certificate and its key: PEM, valid now, and belonging together.
absl::Status CheckKeyPair(const SecurityOptions& options, const std::string& cert_pem,
                          const std::string& key_pem) {
  const std::string cert_name = Named("tls_cert_file", options.tls_cert_file);
  Certificate cert = FirstCertificate(cert_pem);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(cert_name, ": no PEM certificate"));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    return absl::FailedPreconditionError(absl::StrCat(cert_name, ": the certificate expired on ",
                                                      TimeText(X509_get0_notAfter(cert.get()))));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(cert_name,
                                                      ": the certificate is not valid before ",
                                                      TimeText(X509_get0_notBefore(cert.get()))));
  }
  Bio bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), &BIO_free);
  PrivateKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr), &EVP_PKEY_free);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(Named("tls_key_file", options.tls_key_file),
                     ": no PEM private key (or an encrypted one, which is not supported)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(Named("tls_key_file", options.tls_key_file),
                     ": this key does not belong to the certificate in ", cert_name));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const SecurityOptions& options) {
  absl::StatusOr<std::string> cert = ReadSmallFile("tls_cert_file", options.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadSmallFile("tls_key_file", options.tls_key_file);
  if (!key.ok()) return key.status();
  absl::Status pair = CheckKeyPair(options, *cert, *key);
  ERR_clear_error();  // leave OpenSSL's per-thread error queue empty for gRPC's handshakes
  if (!pair.ok()) return pair;
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!options.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadSmallFile("tls_client_ca_file", options.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    const bool parsed = FirstCertificate(*ca) != nullptr;
    ERR_clear_error();
    if (!parsed) {
      return absl::InvalidArgumentError(absl::StrCat(
          Named("tls_client_ca_file", options.tls_client_ca_file), ": no PEM certificate"));
    }
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

std::string ServerSecurity::Describe() const {
  std::string text = tls ? "TLS" : "plaintext";
  if (mutual_tls) absl::StrAppend(&text, ", client certificates required");
  if (tokens != nullptr) {
    absl::StrAppend(&text, ", ", tokens->size(), tokens->size() == 1 ? " token" : " tokens");
  }
  return text;
}

absl::Status CheckSecurityOptions(const SecurityOptions& options) {
  const bool cert = !options.tls_cert_file.empty(), key = !options.tls_key_file.empty();
  if (cert != key) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert_file and --tls_key_file go together: ",
                     cert ? "--tls_key_file" : "--tls_cert_file", " is missing"));
  }
  if (!cert && !options.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file (client certificates) needs TLS: --tls_cert_file and "
        "--tls_key_file");
  }
  if (!cert && !options.auth_token_file.empty()) {
    return absl::InvalidArgumentError(
        "--auth_token_file needs TLS (--tls_cert_file and --tls_key_file): a bearer token must "
        "not cross the network in clear text");
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityOptions& options) {
  if (absl::Status flags = CheckSecurityOptions(options); !flags.ok()) return flags;
  ServerSecurity security;
  if (options.tls_cert_file.empty()) {
    security.credentials = grpc::InsecureServerCredentials();
    return security;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = TlsCredentials(options);
  if (!credentials.ok()) return credentials.status();
  security.credentials = *std::move(credentials);
  security.tls = true;
  security.mutual_tls = !options.tls_client_ca_file.empty();
  if (!options.auth_token_file.empty()) {
    absl::StatusOr<std::string> text = ReadSmallFile("auth_token_file", options.auth_token_file);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::unique_ptr<const TokenTable>> tokens =
        TokenTable::Parse(*text, Named("auth_token_file", options.auth_token_file));
    if (!tokens.ok()) return tokens.status();
    security.tokens = *std::move(tokens);
  }
  return security;
}

}  // namespace danet::service
