// A walk over the element headers of one DICOM Part 10 file, before DCMTK reads it.
//
// DCMTK allocates an element's value from its declared length before it finds the stream short:
// a 1 kB file that declares a 2 GB value makes it request 2 GB (found by tests/fuzz/dicom_fuzz).
// CheckDeclaredLengths refuses such a file first, with the offending tag named: every value
// length must fit in the bytes that follow its header. It is not what keeps the allocation from
// happening (ReadFileFormat, dataset_bytes.h, makes DCMTK check lengths itself before it
// allocates, since this walk has disagreed with DCMTK's reading of odd encodings five times);
// it gives the clear message and, below, the image size for the memory estimate. Sequences and
// items are stepped into, so nested values are checked too; encapsulated pixel data fragments are
// checked and skipped. The walk does not validate anything else (DCMTK does); a deflated data set
// (transfer syntax 1.2.840.10008.1.2.1.99) is checked up to its meta header only.
#ifndef DANET_MODELS_DICOM_ELEMENT_SCAN_H_
#define DANET_MODELS_DICOM_ELEMENT_SCAN_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace danet::volume {

// `bytes`: the whole file, 128-byte preamble and "DICM" included. InvalidArgument names the
// offending tag and its declared length when a value runs past the end of the file.
absl::Status CheckDeclaredLengths(std::string_view bytes);

// Rows, Columns and NumberOfFrames (1 when absent) read by the same walk, for a memory estimate
// before anything is decoded (0 when absent; a deflated file gives 0 x 0). Errors as above.
struct DicomImageSize {
  int rows = 0;
  int columns = 0;
  int frames = 1;
};
absl::StatusOr<DicomImageSize> PeekDicomImageSize(std::string_view bytes);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_ELEMENT_SCAN_H_
