// The evaluation report's text tables: every row lines up under its header, whatever the
// length of the policy names.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "models/eval/evaluate.h"

namespace danet::eval {
namespace {

nlohmann::json Policy(double mean, double gmacs) {
  return {{"dice", {{"et", mean}, {"tc", mean}, {"wt", mean}, {"mean", mean}}},
          {"gmacs_per_case", gmacs},
          {"seconds_per_case", 1.5},
          {"routes", {{"skip", 3}, {"M1", 2}}},
          {"tumour_slice_recall", 0.96},
          {"tumour_free_skip_rate", 0.98}};
}

nlohmann::json Evaluation() {
  nlohmann::json e = {{"cases", 5}, {"bundle", "b"}};
  e["policies"]["dynamic"] = Policy(71.9, 218.7);
  e["policies"]["dynamic+f4+c30"] = Policy(72.0, 218.7);  // longer than the old 12 columns
  e["policies"]["static:M4"] = Policy(68.3, 1387.3);
  return e;
}

// The lines of `text` that start with one of `prefixes`.
std::vector<std::string> LinesStartingWith(const std::string& text,
                                           const std::vector<std::string>& prefixes) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    for (const std::string& prefix : prefixes) {
      if (line.rfind(prefix, 0) == 0) {
        lines.push_back(line);
        break;
      }
    }
  }
  return lines;
}

// "name " for each policy of `e`, optionally after the header's "policy ".
std::vector<std::string> RowPrefixes(const nlohmann::json& e, bool header) {
  std::vector<std::string> prefixes;
  if (header) prefixes.push_back("policy ");
  for (const auto& [name, p] : e["policies"].items()) prefixes.push_back(name + " ");
  return prefixes;
}

void ExpectAligned(const std::vector<std::string>& lines, size_t rows) {
  ASSERT_EQ(lines.size(), rows);
  for (const std::string& line : lines) EXPECT_EQ(line.size(), lines[0].size()) << line;
}

TEST(ReportTest, RowsLineUpUnderTheHeaderWithLongPolicyNames) {
  const nlohmann::json e = Evaluation();
  const std::string text = FormatEvaluation(e);
  // The header and the three Dice rows; the routes block's lines follow the same names.
  std::vector<std::string> table =
      LinesStartingWith(text.substr(0, text.find("\nroutes")), RowPrefixes(e, true));
  ExpectAligned(table, 4);
  EXPECT_EQ(table[0].find("ET") + 2, table[1].find("71.90") + 5);
  // In the routes block the routes start in the same column on every line.
  const std::string routes = text.substr(text.find("\nroutes"));
  std::vector<std::string> route_lines = LinesStartingWith(routes, RowPrefixes(e, false));
  ASSERT_EQ(route_lines.size(), 3u);
  for (const std::string& line : route_lines) {
    EXPECT_EQ(line.find('{'), route_lines[0].find('{')) << line;
  }
}

TEST(ReportTest, SideBySideRowsLineUpUnderTheHeader) {
  const nlohmann::json e = Evaluation();
  ExpectAligned(LinesStartingWith(FormatSideBySide(e, e), RowPrefixes(e, true)), 4);
}

// The routes block says how many cases were segmented twice, and how many kept their first look
// after a second fit that moved their input little (preprocessing.bias_refit_min_change).
TEST(ReportTest, RefitsAndKeptFirstLooksAreCounted) {
  nlohmann::json e = Evaluation();
  e["policies"]["dynamic"]["bias_refits"] = 2;
  e["policies"]["dynamic"]["bias_refit_probes_kept"] = 1;
  const std::string text = FormatEvaluation(e);
  EXPECT_NE(text.find("bias fields refitted without the tumour on 2 of 5 cases"), std::string::npos)
      << text;
  EXPECT_NE(text.find("the first look kept (little change) on 1 of 5 cases"), std::string::npos)
      << text;
  // Policies without either say nothing about them.
  EXPECT_EQ(FormatEvaluation(Evaluation()).find("refitted"), std::string::npos);
}

// The header names the bank's numerics when they are not plain float32 (Bank::numerics).
TEST(ReportTest, TheHeaderSaysWhenTheBankRanInAnotherPrecision) {
  nlohmann::json e = Evaluation();
  EXPECT_EQ(FormatEvaluation(e).find("bank models in"), std::string::npos);  // older reports
  e["bank_numerics"] = "float32";
  EXPECT_EQ(FormatEvaluation(e).find("bank models in"), std::string::npos);
  e["bank_numerics"] = "bfloat16";
  EXPECT_EQ(FormatEvaluation(e).rfind("5 cases, bundle 'b', bank models in bfloat16 (", 0), 0u)
      << FormatEvaluation(e);
}

}  // namespace
}  // namespace danet::eval
