// Describing a bank: per model its architecture, parameters and analytic cost per slice next
// to the paper's number, plus the decision network. Used by `danet-bank describe` and, later,
// by the server's bank-description RPC.
#ifndef DANET_MODELS_BANK_DESCRIBE_H_
#define DANET_MODELS_BANK_DESCRIBE_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "models/bank/bank.h"

namespace danet::models {

// JSON description (stable names: other tools read it):
// {"name", "slice": [h, w], "convention",
//  "models": [{"id", "route", "arch", "params", "gmacs", "config_gmacs", "paper_gmacs"
//              (null unless the architecture is one of the paper's), "macs_by_op": {...}}],
//  "decision": {"arch", "params", "gmacs", "macs_by_op": {...}}}
// "gmacs" is the analytic count at the bundle's slice size for native networks and the
// config's stated cost for TorchScript networks. Counting runs one forward pass per network on
// the CPU; the bank's networks are returned to its device.
absl::StatusOr<nlohmann::json> DescribeBank(const Bank& bank);

// The same as a human-readable table.
std::string FormatBankDescription(const nlohmann::json& description);

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_DESCRIBE_H_
