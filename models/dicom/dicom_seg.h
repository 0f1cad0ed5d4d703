// DICOM Segmentation objects (DCMTK dcmseg) from a BraTS label map: one binary segment per
// tumour region present (necrotic core, edema, enhancing tumour) with coded category and type,
// the algorithm's identification, the source patient and study, a new series, and references
// to the source series and instances. Frames exist only for slices where a segment has voxels,
// each with its own plane position and source-image reference, so viewers place them right.
//
// Thread safety: reentrant.
#ifndef DANET_MODELS_DICOM_DICOM_SEG_H_
#define DANET_MODELS_DICOM_DICOM_SEG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/dicom/dicom.h"
#include "models/volume/volume.h"

namespace danet::volume {

struct SegOptions {
  std::string algorithm_name = "Med-DANet";
  std::string algorithm_version;  // e.g. "danet 0.1.0, bundle phantom-compact"
  std::string series_description = "Med-DANet tumour segmentation (not for diagnosis)";
  int series_number = 901;
};

// Encodes `labels` (BraTS labels 0, 1, 2, 4 on the grid of `sources`, which all share one grid
// and slice order, e.g. the four modality series) as a Segmentation instance (a DICOM file's
// bytes). NotFound when no tumour voxel exists (a SEG needs at least one segment).
absl::StatusOr<std::string> EncodeDicomSeg(const LabelVolume& labels,
                                           const std::vector<DicomSeries>& sources,
                                           const SegOptions& options);

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_DICOM_SEG_H_
