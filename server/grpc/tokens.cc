#include "server/grpc/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace danet::service {
namespace {

constexpr size_t kMaxNameChars = 64;
constexpr size_t kMinTokenChars = 16;
constexpr size_t kMaxTokenChars = 4096;
constexpr absl::string_view kBearer = "Bearer ";

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameChars) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// Printable ASCII without spaces: what an HTTP/2 header value carries unchanged.
bool ValidToken(absl::string_view token) {
  return std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

TokenTable::Digest TokenTable::Sha256(absl::string_view text) {
  Digest digest{};
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

absl::StatusOr<std::unique_ptr<const TokenTable>> TokenTable::Parse(absl::string_view text,
                                                                    absl::string_view path) {
  std::vector<Entry> entries;
  std::set<Digest> seen;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    // Errors name the line, never show it: it holds a token.
    const auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", what));
    };
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) return error("expected NAME:TOKEN");
    const absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view token = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (!ValidName(name)) {
      return error("the name must be 1-64 characters of A-Z a-z 0-9 _ . -");
    }
    if (name == kAnonymousClient || name == kUnauthenticatedClient) {
      return error(absl::StrCat("the name '", name, "' is reserved"));
    }
    if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars) {
      return error(absl::StrCat("the token must be ", kMinTokenChars, "-", kMaxTokenChars,
                                " characters long"));
    }
    if (!ValidToken(token)) {
      return error("the token must be printable ASCII without spaces");
    }
    Entry entry{std::string(name), Sha256(token)};
    if (!seen.insert(entry.digest).second) return error("this token is already in the file");
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no NAME:TOKEN line"));
  }
  return std::unique_ptr<const TokenTable>(new TokenTable(std::move(entries)));
}

absl::StatusOr<std::string> TokenTable::Authenticate(
    std::optional<absl::string_view> authorization) const {
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "no bearer token: send the metadata 'authorization: Bearer <token>' (danet: "
        "--token_file)");
  }
  if (authorization->size() <= kBearer.size() ||
      !absl::StartsWithIgnoreCase(*authorization, kBearer)) {
    return absl::UnauthenticatedError("the authorization metadata is not 'Bearer <token>'");
  }
  const Digest digest = Sha256(authorization->substr(kBearer.size()));
  const Entry* match = nullptr;
  for (const Entry& entry : entries_) {
    // Every entry is compared, whatever matched before.
    const bool equal = CRYPTO_memcmp(entry.digest.data(), digest.data(), digest.size()) == 0;
    if (equal) match = &entry;
  }
  if (match == nullptr) return absl::UnauthenticatedError("the bearer token is not valid");
  return match->name;
}

std::vector<std::string> TokenTable::names() const {
  std::set<std::string> names;
  for (const Entry& entry : entries_) names.insert(entry.name);
  return {names.begin(), names.end()};
}

}  // namespace danet::service
