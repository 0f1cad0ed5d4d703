// WriteDicomSeries: a volume as one MR Image Storage instance per axial slice (see dicom.h).
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/dicom/dicom.h"

namespace danet::volume {
namespace {

std::string Ds(double v) { return absl::StrFormat("%.6g", v); }

std::string Triple(const std::array<double, 3>& v) {
  return absl::StrCat(Ds(v[0]), "\\", Ds(v[1]), "\\", Ds(v[2]));
}

// Column `c` of the voxel-to-RAS matrix in LPS.
std::array<double, 3> LpsColumn(const Matrix4& m, int c) { return {-m[0][c], -m[1][c], m[2][c]}; }

double Norm(const std::array<double, 3>& v) {
  return std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> WriteDicomSeries(const Volume& image,
                                                          const DicomWriteOptions& o,
                                                          const std::filesystem::path& dir,
                                                          const std::string& prefix) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat(dir.string(), ": ", error.message()));
  const Geometry& g = image.geometry;
  const Matrix4 m = g.VoxelToWorld();
  std::array<double, 3> row = LpsColumn(m, 0), column = LpsColumn(m, 1), normal = LpsColumn(m, 2);
  const double di = Norm(row), dj = Norm(column), dk = Norm(normal);
  for (int a = 0; a < 3; ++a) {
    row[a] /= di;
    column[a] /= dj;
  }
  const std::string study = o.study_uid.empty() ? NewDicomUid() : o.study_uid;
  const std::string series = o.series_uid.empty() ? NewDicomUid() : o.series_uid;
  const std::string frame =
      o.frame_of_reference_uid.empty() ? NewDicomUid() : o.frame_of_reference_uid;
  const int64_t plane = g.SliceVoxels();
  std::vector<std::string> uids;
  for (int64_t k = 0; k < g.dims[2]; ++k) {
    DcmFileFormat file;
    DcmDataset* ds = file.getDataset();
    const std::string uid = NewDicomUid();
    std::array<double, 3> position = LpsColumn(m, 3);
    for (int a = 0; a < 3; ++a) position[a] += k * normal[a];
    const std::pair<DcmTagKey, std::string> strings[] = {
        {DCM_SpecificCharacterSet, "ISO_IR 100"},
        {DCM_ImageType, "ORIGINAL\\PRIMARY\\OTHER"},
        {DCM_SOPClassUID, UID_MRImageStorage},
        {DCM_SOPInstanceUID, uid},
        {DCM_StudyDate, o.study_date},
        {DCM_SeriesDate, o.study_date},
        {DCM_StudyTime, "120000"},
        {DCM_AccessionNumber, ""},
        {DCM_Modality, "MR"},
        {DCM_Manufacturer, "danet phantom (synthetic)"},
        {DCM_ReferringPhysicianName, ""},
        {DCM_StudyDescription, "synthetic brain tumour phantom"},
        {DCM_SeriesDescription, o.series_description},
        {DCM_PatientName, o.patient_name},
        {DCM_PatientID, o.patient_id},
        {DCM_PatientBirthDate, ""},
        {DCM_PatientSex, "O"},
        {DCM_PatientPosition, "HFS"},
        {DCM_BodyPartExamined, "BRAIN"},
        {DCM_ScanningSequence, "SE"},
        {DCM_SequenceVariant, "NONE"},
        {DCM_ScanOptions, ""},
        {DCM_MRAcquisitionType, "3D"},
        {DCM_SliceThickness, Ds(dk)},
        {DCM_SpacingBetweenSlices, Ds(dk)},
        {DCM_EchoTime, ""},
        {DCM_EchoTrainLength, ""},
        {DCM_RepetitionTime, ""},
        {DCM_StudyInstanceUID, study},
        {DCM_SeriesInstanceUID, series},
        {DCM_StudyID, "1"},
        {DCM_SeriesNumber, std::to_string(o.series_number)},
        {DCM_InstanceNumber, std::to_string(k + 1)},
        {DCM_ImagePositionPatient, Triple(position)},
        {DCM_ImageOrientationPatient, absl::StrCat(Triple(row), "\\", Triple(column))},
        {DCM_FrameOfReferenceUID, frame},
        {DCM_PositionReferenceIndicator, ""},
        {DCM_SliceLocation, Ds(k * dk)},
        {DCM_PhotometricInterpretation, "MONOCHROME2"},
        {DCM_PixelSpacing, absl::StrCat(Ds(dj), "\\", Ds(di))},
        {DCM_RescaleIntercept, Ds(o.rescale_intercept)},
        {DCM_RescaleSlope, Ds(o.rescale_slope)},
        {DCM_RescaleType, "US"},
    };
    OFCondition c = EC_Normal;
    for (const auto& [tag, value] : strings) {
      if (c.good()) c = ds->putAndInsertString(tag, value.c_str());
    }
    const std::pair<DcmTagKey, Uint16> shorts[] = {{DCM_SamplesPerPixel, 1},
                                                   {DCM_Rows, static_cast<Uint16>(g.dims[1])},
                                                   {DCM_Columns, static_cast<Uint16>(g.dims[0])},
                                                   {DCM_BitsAllocated, 16},
                                                   {DCM_BitsStored, 16},
                                                   {DCM_HighBit, 15},
                                                   {DCM_PixelRepresentation, 1}};
    for (const auto& [tag, value] : shorts) {
      if (c.good()) c = ds->putAndInsertUint16(tag, value);
    }
    std::vector<Uint16> pixels(plane);
    for (int64_t v = 0; v < plane; ++v) {
      const double stored =
          std::round((image.voxels[k * plane + v] - o.rescale_intercept) / o.rescale_slope);
      pixels[v] = static_cast<Uint16>(static_cast<int16_t>(std::clamp(stored, -32768.0, 32767.0)));
    }
    if (c.good()) c = ds->putAndInsertUint16Array(DCM_PixelData, pixels.data(), plane);
    const std::filesystem::path path = dir / absl::StrFormat("%s%04d.dcm", prefix, k + 1);
    if (c.good()) c = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
    if (c.bad()) {
      return absl::InternalError(absl::StrCat(path.string(), ": cannot write (", c.text(), ")"));
    }
    uids.push_back(uid);
  }
  return uids;
}

}  // namespace danet::volume
