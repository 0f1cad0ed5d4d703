// Series naming rules (proto/danet/v1/series_rules.proto, docs/dicom.md): which series of a
// study is the flair, t1ce, t1 or t2, from its SeriesDescription and, where the DICOM has them,
// its sequence attributes (InversionTime, ContrastBolusAgent). Rules are tried in order and the
// first match decides; the built-in defaults (default_series_rules.pbtxt, compiled in) come
// last, after a request's and a site's rules.
//
// Thread safety: a parsed SeriesRules is immutable; Match is reentrant.
#ifndef DANET_MODELS_DICOM_SERIES_RULES_H_
#define DANET_MODELS_DICOM_SERIES_RULES_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace danet::volume {

// What the rules look at, per series.
struct SeriesAttributes {
  std::string description;        // SeriesDescription
  double inversion_time_ms = -1;  // InversionTime; < 0: absent
  bool contrast_agent = false;    // ContrastBolusAgent present and not empty
};

class SeriesRules {
 public:
  // Parses protobuf text (danet.v1.SeriesRules). InvalidArgument names `source` (a file name or
  // "header.series_rules"), and the line and column or the rule (by number and name) and
  // token that is wrong.
  static absl::StatusOr<SeriesRules> Parse(const std::string& text, const std::string& source);
  // The built-in rules (models/dicom/default_series_rules.pbtxt).
  static const SeriesRules& Defaults();

  // The modality of the first matching rule ("flair", "t1ce", "t1", "t2", or "" for none);
  // nullopt when no rule matches.
  std::optional<std::string> Match(const SeriesAttributes& series) const;
  size_t size() const { return rules_.size(); }

 private:
  struct Token {
    enum Kind { kWord, kPrefix, kContains, kContrast, kTiAtLeast, kTiBelow } kind;
    std::string text;
    double ms = 0;
  };
  struct Rule {
    std::string modality;                  // "" for none
    std::vector<std::vector<Token>> all;   // AND of ORs
    std::vector<std::vector<Token>> none;  // no token may match
  };
  static bool Matches(const Token& token, const SeriesAttributes& series,
                      const std::vector<std::string>& words, const std::string& lower);
  std::vector<Rule> rules_;
};

// Reads and parses a rules file (--series_rules); errors name the file.
absl::StatusOr<SeriesRules> LoadSeriesRules(const std::string& path);

// A rules file's text, read once and checked to parse (for clients that send it on:
// Header.series_rules); errors as LoadSeriesRules.
absl::StatusOr<std::string> ReadSeriesRulesText(const std::string& path);

// The modality `chain` (then the defaults) gives a series ("" for none and for no match).
std::string ModalityByRules(const SeriesAttributes& series,
                            const std::vector<const SeriesRules*>& chain);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_SERIES_RULES_H_
