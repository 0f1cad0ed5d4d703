// A DICOM Basic Text SR that tells the PACS, in the study itself, that automatic segmentation
// failed and why (DCMTK dcmsr). It carries the patient and study attributes of one source
// instance of the study (nothing else about the patient), a new series, and a text that says
// what failed; a radiologist browsing the study sees it next to the images.
//
// Thread safety: reentrant.
#ifndef DANET_MODELS_DICOM_DICOM_REPORT_H_
#define DANET_MODELS_DICOM_DICOM_REPORT_H_

#include <string>

#include "absl/status/statusor.h"

namespace danet::volume {

struct FailureReportOptions {
  std::string reason;             // why it failed (a status message: no patient data)
  std::string algorithm_version;  // e.g. "danet 0.1.0, bundle phantom-compact"
  std::string series_description = "Med-DANet segmentation failed (not for diagnosis)";
  int series_number = 902;
};

// The bytes of a Basic Text SR file in the study of `source_instance` (the bytes of any DICOM
// file of the study). InvalidArgument when the source cannot be read or has no
// StudyInstanceUID; Internal when DCMTK cannot build the document.
absl::StatusOr<std::string> EncodeFailureReport(const std::string& source_instance,
                                                const FailureReportOptions& options);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_DICOM_REPORT_H_
