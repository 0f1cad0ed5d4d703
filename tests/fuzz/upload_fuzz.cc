// libFuzzer target: the request-stream assembler (Upload), fed a sequence of SegmentRequest
// messages the way the gRPC adapter feeds it. The input is a list of records, each a 2-byte
// little-endian length and that many bytes of a serialised SegmentRequest; the first header
// creates the upload, chunks are added, and a complete upload is decoded.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "danet/v1/segmentation.pb.h"
#include "server/core/upload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kModalities = {"flair", "t1ce", "t1", "t2"};
  danet::service::UploadLimits limits;
  limits.max_upload_bytes = 1 << 20;
  limits.nifti.max_dim = 256;
  limits.nifti.max_voxels = 1 << 20;
  // A budget below what the limits allow, so that both of its refusals are reached; every
  // reservation must be back when the upload is gone.
  static danet::service::MemoryBudget budget(16 << 20);
  limits.memory = &budget;
  std::unique_ptr<danet::service::Upload> upload;
  size_t at = 0;
  while (at + 2 <= size) {
    const size_t length = data[at] | (static_cast<size_t>(data[at + 1]) << 8);
    at += 2;
    if (length > size - at) break;
    danet::v1::SegmentRequest request;
    const bool parsed = request.ParseFromArray(data + at, static_cast<int>(length));
    at += length;
    if (!parsed) break;
    if (!upload) {
      if (!request.has_header()) break;
      absl::StatusOr<std::unique_ptr<danet::service::Upload>> created =
          danet::service::Upload::Create(request.header(), kModalities, limits);
      if (!created.ok()) break;
      upload = *std::move(created);
    } else if (!request.has_chunk() || !upload->Add(request.chunk()).ok()) {
      break;
    }
    if (upload->complete()) {
      (void)upload->Decode();
      break;
    }
  }
  upload.reset();
  if (budget.in_use() != 0) __builtin_trap();  // a leaked reservation
  return 0;
}
