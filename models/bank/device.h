// Run-time device and thread selection shared by the tools (the engine never hard-codes a
// device: the same build runs on CPU and, where LibTorch has CUDA, on a GPU).
#ifndef DANET_MODELS_BANK_DEVICE_H_
#define DANET_MODELS_BANK_DEVICE_H_

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace danet::models {

// "cpu", "cuda" or "cuda:N". InvalidArgument for anything else, FailedPrecondition for CUDA on
// a machine (or a LibTorch build) without it.
absl::StatusOr<c10::Device> ParseDevice(const std::string& text);

// LibTorch intra-op threads: `threads` if positive, else every core. (LibTorch's own default
// on these machines is 1.)
void SetThreads(int threads);

// The one mapping of a LibTorch error to a Status: out of memory (CPU allocator or CUDA) is
// ResourceExhausted (the caller may retry with less in flight), anything else Internal (a bug
// or a broken model, not the client's input). `context` says what was being done.
absl::Status TorchErrorStatus(const c10::Error& error, const std::string& context);

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_DEVICE_H_
