// DICOM file bytes to and from DCMTK datasets, in memory (no temporary files: the bytes may
// hold patient data). Internal to models/dicom.
#ifndef DANET_MODELS_DICOM_DATASET_BYTES_H_
#define DANET_MODELS_DICOM_DATASET_BYTES_H_

#include <dcmtk/dcmdata/dcfilefo.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace danet::volume {

// Reads the bytes of a DICOM file (meta header and data set) into `format` with DCMTK, every value
// loaded into memory before it returns (nothing in `format` refers to `bytes` afterwards).
//
// DCMTK's buffer stream makes it allocate each value from its declared length before it finds the
// stream short (tests/fuzz: 1 kB files that declare 2-4 GB). This reads from a stream that can
// hand DCMTK a factory for a later read, as a file stream does: DCMTK then skips a value longer
// than `max_read_length`, refuses the file when fewer bytes remain than the value declares
// ("larger than remaining bytes in file"), and loads the value only once its length is known to
// fit. The guard rests on DCMTK's own parse, whatever encoding it chose. A deflated data set
// (no factory can point into an inflating stream) is inflated here first, at most 512 MiB, and
// read from the inflated bytes the same way.
// The DCMTK condition on failure.
OFCondition ReadFileFormat(std::string_view bytes, DcmFileFormat* format,
                           Uint32 max_read_length = DCM_MaxReadLength);

// ReadFileFormat with an InternalError whose message starts with `what` ("DICOM SEG", "failure
// report").
absl::Status ReadDatasetBytes(const std::string& bytes, const std::string& what,
                              DcmFileFormat* format);

// The file bytes of `dataset` (Explicit VR Little Endian with a meta header).
absl::StatusOr<std::string> DatasetFileBytes(DcmDataset& dataset, const std::string& what);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_DATASET_BYTES_H_
