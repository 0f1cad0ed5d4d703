#include "models/dicom/series_rules.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "danet/v1/series_rules.pb.h"
#include "models/volume/nifti.h"

namespace danet::volume {

extern const char kDefaultSeriesRules[];  // default_series_rules.cc, generated from the .pbtxt

namespace {

// The first syntax error of a text-format parse, with its place.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (error.empty())
      error = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
  }
  std::string error;
};

// A description's words: lower case, split at spaces and _ - . / ( ) , : (not at + or *, which
// carry meaning: "SE+C", "T2*").
constexpr char kSeparators[] = " _-./(),:";

std::vector<std::string> Words(const std::string& lower) {
  return absl::StrSplit(lower, absl::ByAnyChar(kSeparators), absl::SkipEmpty());
}

}  // namespace

absl::StatusOr<SeriesRules> SeriesRules::Parse(const std::string& text, const std::string& source) {
  v1::SeriesRules proto;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &proto)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", errors.error));
  }
  SeriesRules rules;
  for (int i = 0; i < proto.rule_size(); ++i) {
    const v1::SeriesRule& r = proto.rule(i);
    auto where = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": rule ", i + 1, " ('", r.name(), "'): ", what));
    };
    Rule rule;
    const std::string modality = absl::AsciiStrToLower(r.modality());
    if (modality != "flair" && modality != "t1ce" && modality != "t1" && modality != "t2" &&
        modality != "none") {
      return where(
          absl::StrCat("modality '", r.modality(), "' is not flair, t1ce, t1, t2 or none"));
    }
    rule.modality = modality == "none" ? "" : modality;
    if (r.all_size() == 0) return where("no `all` entry: it would match every series");
    for (const auto* entries : {&r.all(), &r.none()}) {
      for (const std::string& entry : *entries) {
        std::vector<Token> any;
        for (absl::string_view raw : absl::StrSplit(entry, ' ', absl::SkipEmpty())) {
          const std::string t = absl::AsciiStrToLower(raw);
          Token token{Token::kWord, t};
          double ms = 0;
          if (t == "@contrast") {
            token.kind = Token::kContrast;
          } else if (absl::StartsWith(t, "@ti>=") && absl::SimpleAtod(t.substr(5), &ms)) {
            token = {Token::kTiAtLeast, t, ms};
          } else if (absl::StartsWith(t, "@ti<") && absl::SimpleAtod(t.substr(4), &ms)) {
            token = {Token::kTiBelow, t, ms};
          } else if (t[0] == '@') {
            return where(absl::StrCat("token '", t, "' is not @contrast, @ti>=MS or @ti<MS"));
          } else if (t[0] == '~') {
            if (t.size() == 1) return where("token '~' has no text");
            token = {Token::kContains, t.substr(1)};
          } else if (t.back() == '*') {
            if (t.size() == 1) return where("token '*' has no prefix");
            token = {Token::kPrefix, t.substr(0, t.size() - 1)};
          }
          if ((token.kind == Token::kWord || token.kind == Token::kPrefix) &&
              token.text.find_first_of(kSeparators) != std::string::npos) {
            return where(absl::StrCat("token '", t, "' holds a word separator: write '~", t,
                                      "' (text) or its words"));
          }
          any.push_back(token);
        }
        if (any.empty()) return where("an empty entry");
        (entries == &r.all() ? rule.all : rule.none).push_back(std::move(any));
      }
    }
    rules.rules_.push_back(std::move(rule));
  }
  return rules;
}

const SeriesRules& SeriesRules::Defaults() {
  static const SeriesRules* defaults = [] {
    absl::StatusOr<SeriesRules> parsed = Parse(kDefaultSeriesRules, "default_series_rules.pbtxt");
    // Compiled in and tested (dicom_test): a failure here is a build defect.
    if (!parsed.ok()) std::abort();
    return new SeriesRules(*std::move(parsed));
  }();
  return *defaults;
}

bool SeriesRules::Matches(const Token& token, const SeriesAttributes& series,
                          const std::vector<std::string>& words, const std::string& lower) {
  switch (token.kind) {
    case Token::kWord:
      for (const std::string& w : words) {
        if (w == token.text) return true;
      }
      return false;
    case Token::kPrefix:
      for (const std::string& w : words) {
        if (absl::StartsWith(w, token.text)) return true;
      }
      return false;
    case Token::kContains:
      return absl::StrContains(lower, token.text);
    case Token::kContrast:
      return series.contrast_agent;
    case Token::kTiAtLeast:
      return series.inversion_time_ms >= 0 && series.inversion_time_ms >= token.ms;
    case Token::kTiBelow:
      return series.inversion_time_ms >= 0 && series.inversion_time_ms < token.ms;
  }
  return false;
}

std::optional<std::string> SeriesRules::Match(const SeriesAttributes& series) const {
  const std::string lower = absl::AsciiStrToLower(series.description);
  const std::vector<std::string> words = Words(lower);
  auto any = [&](const std::vector<Token>& tokens) {
    for (const Token& t : tokens) {
      if (Matches(t, series, words, lower)) return true;
    }
    return false;
  };
  for (const Rule& rule : rules_) {
    bool match = true;
    for (const auto& entry : rule.all) match = match && any(entry);
    for (const auto& entry : rule.none) match = match && !any(entry);
    if (match) return rule.modality;
  }
  return std::nullopt;
}

absl::StatusOr<std::string> ReadSeriesRulesText(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileBytes(path);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  if (absl::Status s = SeriesRules::Parse(*text, path).status(); !s.ok()) return s;
  return text;
}

absl::StatusOr<SeriesRules> LoadSeriesRules(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileBytes(path);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  return SeriesRules::Parse(*text, path);
}

std::string ModalityByRules(const SeriesAttributes& series,
                            const std::vector<const SeriesRules*>& chain) {
  for (const SeriesRules* rules : chain) {
    if (rules == nullptr) continue;
    if (std::optional<std::string> m = rules->Match(series)) return *m;
  }
  return SeriesRules::Defaults().Match(series).value_or("");
}

}  // namespace danet::volume
