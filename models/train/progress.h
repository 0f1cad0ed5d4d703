// A progress line for long work: done/total, a bar, the latest loss, time per step and ETA.
// On a terminal it redraws one line; elsewhere (CI logs) it prints a line every `every` steps.
#ifndef DANET_MODELS_TRAIN_PROGRESS_H_
#define DANET_MODELS_TRAIN_PROGRESS_H_

#include <chrono>
#include <string>

namespace danet::train {

class Progress {
 public:
  Progress(std::string label, int total, int first = 0, int every = 10);
  // Reports that `done` steps are complete; `detail` is e.g. "loss 0.84".
  void Update(int done, const std::string& detail);
  void Finish(const std::string& detail);

 private:
  std::string label_;
  int total_, first_, every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

// "1h02m", "9m40s", "12s".
std::string FormatDuration(double seconds);

}  // namespace danet::train

#endif  // DANET_MODELS_TRAIN_PROGRESS_H_
