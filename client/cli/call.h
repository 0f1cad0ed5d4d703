// One Segment call as the client makes it: the header, the files in chunks, then the stream of
// results gathered into a CaseResult. Progress is reported through callbacks (the CLI draws a
// bar; `danet bench` ignores it).
//
// Thread safety: SegmentFiles may run on several threads at once with one shared stub.
#ifndef DANET_CLIENT_CLI_CALL_H_
#define DANET_CLIENT_CLI_CALL_H_

#include <grpcpp/channel.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/segmentation.grpc.pb.h"

namespace danet::client {

struct InputFile {
  std::filesystem::path path;
  std::string modality;  // flair, t1ce, t1, t2; empty for DICOM instances
};

// Resolves `args` into the files to upload: one BraTS case folder, or NIfTI files named
// *_flair / *_t1ce / *_t1 / *_t2 .nii[.gz] (one per modality); or folders and files of DICOM
// instances (found recursively by their DICM preamble; the server groups them into series).
// Errors name the argument.
absl::StatusOr<std::vector<InputFile>> ResolveInputs(const std::vector<std::string>& args);

// True when the inputs are DICOM instances.
bool IsDicom(const std::vector<InputFile>& files);

struct CallOptions {
  std::string request_id;
  std::string policy;  // empty: the server's default (the bundle's)
  double cost_bias = 0;
  int skip_margin = 0;
  std::map<std::string, std::string> series_modalities;  // DICOM: SeriesInstanceUID -> modality
  std::string series_rules;  // DICOM: naming rules (protobuf text, Header.series_rules)
  bool want_labelmap = true;
  bool want_dicom_seg = false;  // DICOM input only
  bool omit_masks = false;
  int64_t chunk_bytes = 512 * 1024;
  double deadline_seconds = 0;  // 0: none
  // Progress: bytes sent of total, then slices done of total.
  std::function<void(int64_t, int64_t)> on_upload;
  std::function<void(int, int)> on_slice;
};

struct CaseResult {
  v1::Accepted accepted;
  std::vector<v1::SliceResult> slices;  // by slice index
  std::vector<uint8_t> labels;          // BraTS labels assembled from the slice masks
  v1::Summary summary;
  std::string labelmap;   // the NIfTI output when requested
  std::string dicom_seg;  // the DICOM SEG output (DICOM input) when requested
  int64_t bytes_sent = 0;
  double wall_seconds = 0;  // client-side, first byte sent to status
  double upload_seconds = 0;
};

// Makes the call. A non-OK gRPC status comes back as the matching absl::Status with the
// server's message.
absl::StatusOr<CaseResult> SegmentFiles(v1::Segmentation::Stub* stub,
                                        const std::vector<InputFile>& files,
                                        const CallOptions& options);

// The server's bank (DescribeBank) within `deadline_seconds`; errors as for SegmentFiles.
absl::StatusOr<v1::DescribeBankResponse> DescribeBank(v1::Segmentation::Stub* stub,
                                                      double deadline_seconds = 10);

}  // namespace danet::client

#endif  // DANET_CLIENT_CLI_CALL_H_
