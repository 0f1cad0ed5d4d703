// Bearer tokens: who may call danet.v1, by name (danet-server --auth_token_file).
//
// The token file has one client per line, `NAME:TOKEN`. Blank lines and lines starting with '#'
// are skipped; spaces around the name and the token are ignored. NAME is 1-64 characters of
// [A-Za-z0-9_.-] and not one of the reserved names below; it is what logs and metrics show.
// TOKEN is 16-4096 printable ASCII characters without spaces. A name may hold several tokens
// (to rotate one without downtime); a token may not appear twice. Clients send
// `authorization: Bearer TOKEN` metadata on every call.
//
// Only SHA-256 digests of the tokens are kept. Authenticate hashes the presented token and
// compares the digest with every entry in constant time (CRYPTO_memcmp), never stopping at a
// match, so the time a check takes tells nothing about the tokens. No message here contains a
// token or a line of the file.
//
// Thread safety: immutable once parsed; Authenticate may run on any number of threads.
#ifndef DANET_SERVER_SERVICE_TOKENS_H_
#define DANET_SERVER_SERVICE_TOKENS_H_

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace danet::service {

// The client name of every call when the server has no token file.
inline constexpr char kAnonymousClient[] = "anonymous";
// The client name of a call refused for a missing or wrong token.
inline constexpr char kUnauthenticatedClient[] = "unauthenticated";

class TokenTable {
 public:
  // Parses the contents of a token file; `path` only names it in errors, which give the line
  // ("tokens.txt:3: ..."). INVALID_ARGUMENT for a malformed line, a reserved or bad name, a
  // short token, a repeated token, or a file without tokens.
  static absl::StatusOr<std::unique_ptr<const TokenTable>> Parse(absl::string_view text,
                                                                 absl::string_view path);

  // The name whose token `authorization` (the value of the call's `authorization` metadata,
  // nullopt when absent) carries as "Bearer TOKEN". UNAUTHENTICATED when it is absent, not a
  // bearer token, or no entry's token; the message says which, never what was sent.
  absl::StatusOr<std::string> Authenticate(std::optional<absl::string_view> authorization) const;

  // The distinct client names, sorted.
  std::vector<std::string> names() const;
  // The number of tokens.
  int size() const { return static_cast<int>(entries_.size()); }

 private:
  using Digest = std::array<unsigned char, 32>;
  struct Entry {
    std::string name;
    Digest digest;  // SHA-256 of the token
  };

  explicit TokenTable(std::vector<Entry> entries) : entries_(std::move(entries)) {}
  static Digest Sha256(absl::string_view text);

  const std::vector<Entry> entries_;
};

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_TOKENS_H_
