// DICOM MR series <-> volumes (DCMTK): decoding uploaded instances into per-series volumes with
// their patient-space geometry, assigning series to modalities, and writing a volume as a
// series (test data, the phantom tool).
//
// Decoding: instances are grouped by SeriesInstanceUID, slices sorted by their position along
// the slice normal (ImagePositionPatient . (row x column direction), never InstanceNumber),
// pixel values rescaled (RescaleSlope/Intercept), and every series checked for one orientation,
// one in-plane grid and evenly spaced slices. The volume's voxel-to-world matrix is NIfTI's RAS
// (DICOM's LPS with x and y negated); voxel i runs along the rows (column index), j down the
// columns (row index), k along the normal. Uncompressed, RLE, JPEG lossless, JPEG-LS and JPEG
// 2000 transfer syntaxes are decoded. Errors name the instance by the client's file name (never by
// patient attributes) and say what is wrong.
//
// Thread safety: the functions are reentrant (codecs are registered once, thread-safely).
#ifndef DANET_MODELS_DICOM_DICOM_H_
#define DANET_MODELS_DICOM_DICOM_H_

#include <array>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/dicom/series_rules.h"
#include "models/volume/brats.h"
#include "models/volume/nifti.h"
#include "models/volume/volume.h"

namespace danet::volume {

// One uploaded instance: a display name for messages and the file's bytes (borrowed).
struct DicomFile {
  std::string name;
  std::string_view bytes;
};

// The source attributes a derived object (DICOM SEG) needs to reference the series.
struct DicomSeries {
  std::string series_uid;
  std::string study_uid;
  std::string frame_of_reference_uid;
  std::string description;        // SeriesDescription (may be empty)
  double inversion_time_ms = -1;  // InversionTime of the first instance; < 0: absent
  bool contrast_agent = false;    // ContrastBolusAgent present and not empty
  std::string sop_class_uid;
  Volume volume;                           // rescaled intensities, RAS geometry
  std::vector<std::string> instance_uids;  // SOPInstanceUID of slice k
  std::vector<int> frame_numbers;  // slice k's frame in a multi-frame instance (1-based); 0: none
  std::vector<int> file_index;     // index into the input files of slice k
  std::string first_instance;      // bytes of slice 0's file: patient/study for derived objects
  // Why the series cannot be used (not one even stack of slices: a localizer's several
  // orientations, DWI's b-values at repeated positions, a gap), or empty. An unusable series
  // carries its UIDs and description but no volume.
  std::string unusable;
};

// Decodes and groups `files` (each one DICOM instance). Series come back in order of their
// first instance. Every instance must be MR with pixel data and from one study. A multi-frame
// (Enhanced MR) instance gives one slice per frame, placed and rescaled by its per-frame (or
// shared) functional groups; a series whose frames form several stacks (StackID) gives one
// entry per stack, all but the largest marked `unusable`. A series that is not one even stack
// comes back marked `unusable` (AssignModalities decides whether that matters).
absl::StatusOr<std::vector<DicomSeries>> DecodeDicomSeries(const std::vector<DicomFile>& files,
                                                           const NiftiLimits& limits = {});

// The modality a SeriesDescription names by the built-in series rules ("" when none; the rules
// are default_series_rules.pbtxt, docs/dicom.md): T2*/SWI/diffusion/perfusion/localizers are
// none; T1-weighted names (t1*, mprage, spgr, ...) are t1ce with a contrast marker (+c, gd, KM,
// post, ...) and t1 without; then flair (flair, dark-fluid, T2 tirm); then t2 (t2*).
std::string ModalityFromDescription(const std::string& description);

// For each of kModalities, the index of its usable series: from `explicit_map`
// (SeriesInstanceUID -> modality) when it is not empty, else by the series rules: `rules` in
// order (a request's, a site's), then the built-in defaults, on each series' description,
// InversionTime and ContrastBolusAgent.
// Unusable series are no candidates. A modality with no series or several is InvalidArgument
// listing the series found (UID and description); one whose only series is unusable is
// InvalidArgument giving the reason.
absl::StatusOr<std::array<int, kNumModalities>> AssignModalities(
    const std::vector<DicomSeries>& series, const std::map<std::string, std::string>& explicit_map,
    const std::vector<const SeriesRules*>& rules = {});

// One note per series not assigned (for the Summary): "series 'DESC' set aside: REASON".
std::vector<std::string> SetAsideNotes(const std::vector<DicomSeries>& series,
                                       const std::array<int, kNumModalities>& assigned);

// The four assigned series as one volume; they must share one frame of reference and one grid.
absl::StatusOr<MultiModalVolume> StackDicomSeries(const std::vector<DicomSeries>& series,
                                                  const std::array<int, kNumModalities>& assigned);

struct DicomWriteOptions {
  std::string patient_name = "PHANTOM^SYNTHETIC";
  std::string patient_id = "PHANTOM";
  std::string study_uid;               // empty: a new one
  std::string series_uid;              // empty: a new one
  std::string frame_of_reference_uid;  // empty: a new one
  std::string series_description;
  int series_number = 1;
  std::string study_date = "20260101";
  double rescale_slope = 1.0;  // stored = round((value - intercept) / slope), int16
  double rescale_intercept = 0.0;
};

// Writes `image` as MR Image Storage instances, one per axial slice, named
// `<prefix><k+1, 4 digits>.dcm` in `dir` (created). Returns the SOP instance UIDs.
absl::StatusOr<std::vector<std::string>> WriteDicomSeries(const Volume& image,
                                                          const DicomWriteOptions& options,
                                                          const std::filesystem::path& dir,
                                                          const std::string& prefix);

// A new globally unique DICOM UID (DCMTK's site root).
std::string NewDicomUid();

}  // namespace danet::volume

#endif  // DANET_MODELS_DICOM_DICOM_H_
