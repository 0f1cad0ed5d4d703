#include "models/bank/describe.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/bundle/bundle_config.h"

namespace danet::models {
namespace {

nlohmann::json MacsByOp(const CostReport& cost) {
  nlohmann::json by_op = nlohmann::json::object();
  for (int i = 0; i < kNumOpKinds; ++i) {
    by_op[OpKindName(static_cast<OpKind>(i))] = cost.macs[i] * 1e-9;
  }
  return by_op;
}

// Counts `network` at the slice size and puts it back on `device` in eval mode.
absl::StatusOr<CostReport> CountOnCpu(Network& network, int64_t h, int64_t w, c10::Device device) {
  absl::StatusOr<CostReport> cost = CountCost(network, 4, h, w);
  network.To(device);
  return cost;
}

std::string Thousands(int64_t n) {
  std::string digits = absl::StrCat(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

absl::StatusOr<nlohmann::json> DescribeBank(const Bank& bank) {
  const v1::BundleConfig& config = bank.config();
  const int64_t h =
      config.preprocessing().slice_height() != 0 ? config.preprocessing().slice_height() : 240;
  const int64_t w =
      config.preprocessing().slice_width() != 0 ? config.preprocessing().slice_width() : 240;
  nlohmann::json out;
  out["name"] = config.name();
  out["slice"] = {h, w};
  out["convention"] =
      "multiply-accumulates per slice; conv/linear/attention MACs plus norm (2/element), "
      "activation, pooling and residual adds (1/element); docs/cost.md";
  out["models"] = nlohmann::json::array();
  for (int i = 0; i < bank.size(); ++i) {
    const v1::BankModel& model = bank.model_config(i);
    Network& network = bank.model(i);
    nlohmann::json entry = {{"id", model.id()},
                            {"route", i + 1},
                            {"arch", network.Describe()},
                            {"params", network.NumParameters()},
                            {"config_gmacs", model.gmacs_per_slice()}};
    if (model.has_torchscript()) {
      entry["gmacs"] = model.gmacs_per_slice();
      entry["macs_by_op"] = nullptr;
    } else {
      absl::StatusOr<CostReport> cost = CountOnCpu(network, h, w, bank.device());
      if (!cost.ok()) return cost.status();
      entry["gmacs"] = cost->GMacs();
      entry["macs_by_op"] = MacsByOp(*cost);
    }
    const std::optional<double> paper = PaperGMacs(model);
    entry["paper_gmacs"] = paper ? nlohmann::json(*paper) : nlohmann::json(nullptr);
    if (!model.description().empty()) entry["description"] = model.description();
    out["models"].push_back(std::move(entry));
  }
  absl::StatusOr<CostReport> cost = CountOnCpu(bank.decision(), h, w, bank.device());
  if (!cost.ok()) return cost.status();
  out["decision"] = {{"arch", bank.decision().Describe()},
                     {"params", bank.decision().NumParameters()},
                     {"gmacs", cost->GMacs()},
                     {"macs_by_op", MacsByOp(*cost)}};
  return out;
}

std::string FormatBankDescription(const nlohmann::json& d) {
  std::string out = absl::StrFormat("Bank '%s': GMACs per %dx%d slice (%s)\n\n",
                                    d["name"].get<std::string>(), d["slice"][0].get<int>(),
                                    d["slice"][1].get<int>(), d["convention"].get<std::string>());
  absl::StrAppendFormat(&out, "%-5s %-6s %-74s %12s %8s %7s %7s\n", "route", "id", "architecture",
                        "params", "GMACs", "paper", "diff");
  for (const auto& m : d["models"]) {
    std::string paper = "-", diff = "-";
    if (!m["paper_gmacs"].is_null()) {
      const double p = m["paper_gmacs"].get<double>();
      paper = absl::StrFormat("%.2f", p);
      diff = absl::StrFormat("%+.1f%%", 100.0 * (m["gmacs"].get<double>() - p) / p);
    }
    absl::StrAppendFormat(&out, "%-5d %-6s %-74s %12s %8.3f %7s %7s\n", m["route"].get<int>(),
                          m["id"].get<std::string>(), m["arch"].get<std::string>(),
                          Thousands(m["params"].get<int64_t>()), m["gmacs"].get<double>(), paper,
                          diff);
  }
  const auto& dn = d["decision"];
  absl::StrAppendFormat(&out, "%-5s %-6s %-74s %12s %8.4f\n", "-", "D",
                        dn["arch"].get<std::string>(), Thousands(dn["params"].get<int64_t>()),
                        dn["gmacs"].get<double>());
  absl::StrAppendFormat(&out, "\nRoute 0 (skip) costs only the decision network: %.4f GMACs.\n",
                        dn["gmacs"].get<double>());
  return out;
}

}  // namespace danet::models
