// An upload in progress: the request header checked against the bank, then the input files
// assembled from chunks, then decoded into one multi-modal volume.
//
// Every error names the header field or the file (by the name the client gave it, never by
// anything read from inside it) and the problem; codes follow the service contract in
// proto/danet/v1/segmentation.proto. No gRPC here: the service adapter feeds messages in.
//
// Thread safety: none; one Upload belongs to one request.
#ifndef DANET_SERVER_CORE_UPLOAD_H_
#define DANET_SERVER_CORE_UPLOAD_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "danet/v1/segmentation.pb.h"
#include "models/dicom/dicom.h"
#include "models/volume/brats.h"
#include "models/volume/nifti.h"
#include "server/core/memory_budget.h"

namespace danet::service {

// Longer policy strings are refused at the header (the longest real one, e.g.
// "dynamic@-0.25+m32" or "static:<model id>", is a few dozen characters), before any upload.
inline constexpr size_t kMaxPolicyChars = 128;
// Header.series_rules: the longest rules text a request may carry.
inline constexpr size_t kMaxSeriesRulesBytes = 64 << 10;

// Client-chosen text (request ids, policies, file names, modalities) made safe to echo in a
// status message or to log: printable ASCII is kept, a backslash is doubled and every other byte
// becomes \xNN, so that a newline or a terminal escape cannot forge a log line or reach an
// operator's terminal, and the result is ASCII. At most `max_chars` characters; a longer result
// is cut between escapes and ends with "...".
std::string ClientText(std::string_view text, size_t max_chars = 64);

struct UploadLimits {
  int64_t max_upload_bytes = 1LL << 30;  // all files together, as sent (compressed)
  volume::NiftiLimits nifti;             // per decoded volume: dims per axis, voxels
  // The server's memory budget (not owned; may be null: no budget). Buffered bytes are
  // reserved as they arrive, the job's decoded volumes before decoding (EstimateJobBytes).
  MemoryBudget* memory = nullptr;
  // DICOM: the site's series naming rules (--series_rules; not owned; null: the built-in ones
  // alone), tried after a request's Header.series_rules.
  const volume::SeriesRules* series_rules = nullptr;
};

class Upload {
 public:
  // Checks the header: input kind; the policy's length (not its meaning: the job parses it);
  // for NIfTI one file per modality of `modalities` (no
  // unknown, missing or repeated modality), for DICOM at least one file, known modalities in
  // series_modalities and valid series_rules; declared sizes within the limit; known outputs.
  static absl::StatusOr<std::unique_ptr<Upload>> Create(const v1::Header& header,
                                                        const std::vector<std::string>& modalities,
                                                        const UploadLimits& limits);

  // Appends one chunk. Files arrive in header order, each file's chunks contiguous by offset,
  // the file's last chunk flagged; anything else is InvalidArgument naming the file.
  absl::Status Add(const v1::Chunk& chunk);

  bool complete() const { return current_ == static_cast<int>(files_.size()); }
  int64_t bytes_received() const { return bytes_received_; }
  const v1::Header& header() const { return header_; }

  // Bytes the job will hold at its peak beyond the buffered files: the grid's voxels times
  // kJobBytesPerVoxel. NIfTI: the grid from the largest file's header (read before any voxel is
  // decoded; a bad header is InvalidArgument naming the file). DICOM: each instance's Rows,
  // Columns and NumberOfFrames read from its header (PeekDicomImageSize; compressed and
  // multi-frame instances alike), summed over four series.
  absl::StatusOr<int64_t> EstimateJobBytes() const;

  // Reserves the buffered bytes plus EstimateJobBytes in the memory budget and returns the
  // latter: RESOURCE_EXHAUSTED, naming the need and the budget, when it does not fit, and then
  // nothing changes (a later call may succeed). Decode calls it; the service calls it first to
  // decode a request ahead only when the memory is there now. Call when complete().
  absl::StatusOr<int64_t> Reserve();

  // Reserve (RESOURCE_EXHAUSTED when it does not fit: nothing is decoded), then decodes the
  // files (NIfTI, gzip or
  // not; or DICOM instances grouped into series and assigned to modalities) and stacks them in
  // volume::kModalities order on the flair's grid (others resampled onto it, with a note;
  // DICOM series must share one frame of reference). Releases the raw bytes; the
  // reservation lasts as long as the Upload. Call once, when complete().
  absl::StatusOr<volume::MultiModalVolume> Decode();

  // For DICOM input, after Decode: the source series on the flair's grid, in kModalities order
  // (the SEG's references).
  const std::vector<volume::DicomSeries>& dicom_series() const { return dicom_series_; }

 private:
  Upload(v1::Header header, const UploadLimits& limits);
  // NIfTI: one file per modality, none unknown or repeated; fills modality_of_file_.
  absl::Status MapModalities(const std::vector<std::string>& modalities);
  absl::StatusOr<volume::MultiModalVolume> DecodeNiftiFiles();
  absl::StatusOr<volume::MultiModalVolume> DecodeDicom();

  v1::Header header_;
  UploadLimits limits_;
  std::vector<std::string> files_;     // bytes, header order
  std::vector<int> modality_of_file_;  // index into volume::kModalities
  std::vector<volume::DicomSeries> dicom_series_;
  std::optional<volume::SeriesRules> request_rules_;  // Header.series_rules, parsed
  int current_ = 0;                                   // file receiving chunks
  int64_t bytes_received_ = 0;
  MemoryLease lease_;  // buffered bytes while uploading, then the job's estimate
};

}  // namespace danet::service

#endif  // DANET_SERVER_CORE_UPLOAD_H_
