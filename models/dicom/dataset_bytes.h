// DICOM file bytes to and from DCMTK datasets, in memory (no temporary files: the bytes may
// hold patient data). Internal to models/dicom.
#ifndef DANET_MODELS_DICOM_DATASET_BYTES_H_
#define DANET_MODELS_DICOM_DATASET_BYTES_H_

#include <dcmtk/dcmdata/dcfilefo.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace danet::volume {

// Reads the bytes of a DICOM file (meta header and dataset) into `format`. `what` starts the
// error message ("DICOM SEG", "failure report").
absl::Status ReadDatasetBytes(const std::string& bytes, const std::string& what,
                              DcmFileFormat* format);

// The file bytes of `dataset` (Explicit VR Little Endian with a meta header).
absl::StatusOr<std::string> DatasetFileBytes(DcmDataset& dataset, const std::string& what);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_DATASET_BYTES_H_
