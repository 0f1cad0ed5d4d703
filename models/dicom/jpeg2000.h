// JPEG 2000 (ISO 15444-1) decoding of one grey-scale frame, for DICOM's JPEG 2000 transfer
// syntaxes (1.2.840.10008.1.2.4.90 lossless only, .91 lossless or lossy), with OpenJPEG
// (libopenjp2). DCMTK's free edition has no JPEG 2000 codec. The codestream is untrusted: its
// SIZ segment (image size, components, tiles: at most 4096) is read by hand and checked against
// the DICOM Rows and Columns before OpenJPEG reads anything.
//
// Thread safety: reentrant.
#ifndef DANET_MODELS_DICOM_JPEG2000_H_
#define DANET_MODELS_DICOM_JPEG2000_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace danet::volume {

// Decodes a J2K codestream (or a JP2 file) of one component of `columns` x `rows` samples
// into row-major integers (signed or not as the codestream says). InvalidArgument, saying what
// is wrong, for a damaged stream, another size, or more than one component.
absl::StatusOr<std::vector<int32_t>> DecodeJpeg2000(const uint8_t* data, size_t size, int columns,
                                                    int rows);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_JPEG2000_H_
