#include "server/core/memory_budget.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace danet::service {
namespace {

std::string MiB(int64_t bytes) { return absl::StrFormat("%.0f MiB", bytes / 1048576.0); }

}  // namespace

int64_t MemoryBudget::in_use() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_use_;
}

absl::Status MemoryBudget::Change(int64_t held, int64_t delta, std::string_view what) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (delta > 0 && capacity_ > 0 && in_use_ + delta > capacity_) {
    const int64_t need = held + delta;
    if (need > capacity_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          std::string(what), " needs ", MiB(need), ", more than the server's memory budget of ",
          MiB(capacity_), " (--memory_budget_mb); send a smaller volume"));
    }
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(what), " needs ", MiB(need), " of the server's memory budget of ",
                     MiB(capacity_), " (--memory_budget_mb), and other requests hold ",
                     MiB(in_use_ - held), "; retry later"));
  }
  in_use_ += delta;
  return absl::OkStatus();
}

MemoryLease::MemoryLease(MemoryLease&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)), held_(std::exchange(other.held_, 0)) {}

MemoryLease& MemoryLease::operator=(MemoryLease&& other) noexcept {
  if (this != &other) {
    if (budget_ != nullptr) (void)Resize(0, "");
    budget_ = std::exchange(other.budget_, nullptr);
    held_ = std::exchange(other.held_, 0);
  }
  return *this;
}

MemoryLease::~MemoryLease() {
  if (budget_ != nullptr) (void)Resize(0, "");
}

absl::Status MemoryLease::Resize(int64_t bytes, std::string_view what) {
  if (budget_ != nullptr && bytes != held_) {
    if (absl::Status s = budget_->Change(held_, bytes - held_, what); !s.ok()) return s;
  }
  held_ = bytes;
  return absl::OkStatus();
}

}  // namespace danet::service
