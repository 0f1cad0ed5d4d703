#include "models/train/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace danet::train {

std::string FormatDuration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

Progress::Progress(std::string label, int total, int first, int every)
    : label_(std::move(label)),
      total_(total),
      first_(first),
      every_(every),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::Update(int done, const std::string& detail) {
  if (!tty_ && done % every_ != 0 && done != total_) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int progressed = done - first_;
  const double per_step = progressed > 0 ? elapsed / progressed : 0.0;
  const double eta = per_step * (total_ - done);
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? kWidth * done / total_ : kWidth;
  const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
  std::fprintf(stderr, "%s[%s] %s %d/%d %s | %.2f s/step | ETA %s%s", tty_ ? "\r\033[K" : "",
               label_.c_str(), bar.c_str(), done, total_, detail.c_str(), per_step,
               FormatDuration(eta).c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::Finish(const std::string& detail) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "%s[%s] done: %s in %s\n", tty_ ? "\r\033[K" : "", label_.c_str(),
               detail.c_str(), FormatDuration(elapsed).c_str());
}

}  // namespace danet::train
