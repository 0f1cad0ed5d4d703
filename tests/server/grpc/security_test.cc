// Bearer-token files and the server's security flags, without a server: what parses, what is
// refused (each error naming the file and line, never showing a token), what Authenticate
// accepts, and which flag combinations stop the server before it reads anything.
// (TLS and mutual TLS with real certificates: tests/server/grpc/test_tls_auth.py.)
#include "server/grpc/security.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/grpc/tokens.h"

namespace danet::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "s3cret-0123456789abcdef";

TEST(TokenTableTest, ParsesNamesCommentsAndRotatedTokens) {
  const std::string text = absl::StrCat("# clients of the ward\n\n  pacs-bridge : ", kSecret,
                                        "  \nward_7.viewer:another-0123456789abcdef\n"
                                        "pacs-bridge:rotated-0123456789abcdef\n");
  auto table = TokenTable::Parse(text, "tokens.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ((*table)->size(), 3);
  EXPECT_EQ((*table)->names(), (std::vector<std::string>{"pacs-bridge", "ward_7.viewer"}));
  EXPECT_EQ(*(*table)->Authenticate(absl::StrCat("Bearer ", kSecret)), "pacs-bridge");
  EXPECT_EQ(*(*table)->Authenticate("Bearer rotated-0123456789abcdef"), "pacs-bridge");
  EXPECT_EQ(*(*table)->Authenticate("bearer another-0123456789abcdef"), "ward_7.viewer");
}

TEST(TokenTableTest, RefusesWhatItCannotAuthenticate) {
  auto table = *TokenTable::Parse(absl::StrCat("bridge:", kSecret), "tokens.txt");
  for (const std::optional<absl::string_view>& sent :
       {std::optional<absl::string_view>(), std::optional<absl::string_view>(kSecret),
        std::optional<absl::string_view>("Bearer "),
        std::optional<absl::string_view>("Basic czNjcmV0LTAxMjM0NTY3ODlhYmNkZWY="),
        std::optional<absl::string_view>("Bearer s3cret-0123456789abcde"),
        std::optional<absl::string_view>("Bearer s3cret-0123456789abcdefg"),
        std::optional<absl::string_view>("Bearer  s3cret-0123456789abcdef")}) {
    const absl::StatusOr<std::string> client = table->Authenticate(sent);
    ASSERT_FALSE(client.ok()) << (sent ? *sent : "(none)");
    EXPECT_EQ(client.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(client.status().message(), Not(HasSubstr("0123456789")));
  }
}

TEST(TokenTableTest, BadLinesNameTheFileAndLineButNeverShowIt) {
  const struct {
    std::string text;
    std::string error;
  } cases[] = {
      {absl::StrCat("ok:", kSecret, "\n", kSecret, "\n"), "tokens.txt:2: expected NAME:TOKEN"},
      {absl::StrCat("\n# c\nbad name:", kSecret), "tokens.txt:3: the name must be"},
      {absl::StrCat(":", kSecret), "tokens.txt:1: the name must be"},
      {absl::StrCat(std::string(65, 'n'), ":", kSecret), "tokens.txt:1: the name must be"},
      {absl::StrCat("anonymous:", kSecret), "tokens.txt:1: the name 'anonymous' is reserved"},
      {absl::StrCat("unauthenticated:", kSecret), "is reserved"},
      {"short:0123456789abcde", "tokens.txt:1: the token must be 16-4096 characters long"},
      {"spaced:0123456789 abcdef", "tokens.txt:1: the token must be printable ASCII"},
      {absl::StrCat("a:", kSecret, "\nb:", kSecret), "tokens.txt:2: this token is already"},
      {"# nothing\n\n", "tokens.txt: no NAME:TOKEN line"},
  };
  for (const auto& c : cases) {
    const auto table = TokenTable::Parse(c.text, "tokens.txt");
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(table.status().message(), HasSubstr(c.error));
    EXPECT_THAT(table.status().message(), Not(HasSubstr("0123456789")));
  }
}

TEST(SecurityOptionsTest, FlagsThatDoNotGoTogetherAreUsageErrors) {
  const struct {
    SecurityOptions options;
    std::string error;
  } cases[] = {
      {{"server.crt", "", "", ""}, "--tls_key_file is missing"},
      {{"", "server.key", "", ""}, "--tls_cert_file is missing"},
      {{"", "", "ca.crt", ""}, "--tls_client_ca_file (client certificates) needs TLS"},
      {{"", "", "", "tokens.txt"}, "--auth_token_file needs TLS"},
  };
  for (const auto& c : cases) {
    const absl::Status status = CheckSecurityOptions(c.options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.error;
    EXPECT_THAT(status.message(), HasSubstr(c.error));
  }
  EXPECT_TRUE(CheckSecurityOptions({}).ok());
  EXPECT_TRUE(CheckSecurityOptions({"a.crt", "a.key", "ca.crt", "tokens.txt"}).ok());
}

TEST(SecurityOptionsTest, NoFlagsIsPlaintextAndAMissingFileIsNamed) {
  const auto plain = LoadServerSecurity({});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->tls);
  EXPECT_EQ(plain->tokens, nullptr);
  EXPECT_EQ(plain->Describe(), "plaintext");
  const auto missing =
      LoadServerSecurity({"/nonexistent/server.crt", "/nonexistent/server.key", "", ""});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "--tls_cert_file /nonexistent/server.crt: no such file");
}

}  // namespace
}  // namespace danet::service
