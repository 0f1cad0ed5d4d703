#include "models/dicom/dicom_seg.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <cmath>
#include <memory>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/dicom/dataset_bytes.h"
#include "models/volume/nifti.h"

namespace danet::volume {
namespace {

struct Region {
  uint8_t label;
  const char* name;
  const char* type_code;
  const char* type_scheme;
  const char* type_meaning;
};

// BraTS labels as segments. Category: SCT 49755003 "Morphologically Abnormal Structure".
constexpr Region kRegions[] = {
    {1, "Necrotic core", "6574001", "SCT", "Necrosis"},
    {2, "Edema", "79654002", "SCT", "Edema"},
    {4, "Enhancing tumour", "C113842", "NCIt", "Enhancing Lesion"},
};

std::string Ds(double v) { return absl::StrFormat("%.6f", v); }

absl::Status Check(const OFCondition& c, const std::string& what) {
  if (c.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("DICOM SEG: ", what, ": ", c.text()));
}

}  // namespace

absl::StatusOr<std::string> EncodeDicomSeg(const LabelVolume& labels,
                                           const std::vector<DicomSeries>& sources,
                                           const SegOptions& options) {
  if (sources.empty()) return absl::InvalidArgumentError("DICOM SEG: no source series");
  const Geometry& g = labels.geometry;
  const int64_t plane = g.SliceVoxels();
  for (const DicomSeries& s : sources) {
    if (static_cast<int64_t>(s.instance_uids.size()) != g.dims[2] ||
        !s.volume.geometry.SameGrid(g)) {
      return absl::InvalidArgumentError("DICOM SEG: the label map is not on the source grid");
    }
  }
  std::vector<const Region*> present;
  for (const Region& r : kRegions) {
    if (std::find(labels.labels.begin(), labels.labels.end(), r.label) != labels.labels.end()) {
      present.push_back(&r);
    }
  }
  if (present.empty()) return absl::NotFoundError("no tumour voxel: no DICOM SEG to write");

  const std::string version =
      options.algorithm_version.empty() ? "unknown" : options.algorithm_version;
  IODGeneralEquipmentModule::EquipmentInfo equipment("danet", "none", "Med-DANet", version.c_str());
  ContentIdentificationMacro content("1", "TUMOUR", "Brain tumour regions (BraTS labels)",
                                     "danet^service");
  DcmSegmentation* raw = nullptr;
  if (absl::Status s = Check(DcmSegmentation::createBinarySegmentation(
                                 raw, static_cast<Uint16>(g.dims[1]),
                                 static_cast<Uint16>(g.dims[0]), equipment, content),
                             "creating");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<DcmSegmentation> seg(raw);
  DcmFileFormat source;
  if (absl::Status s = ReadDatasetBytes(sources[0].first_instance, "DICOM SEG", &source); !s.ok()) {
    return s;
  }
  if (absl::Status s = Check(seg->importFromSourceImage(*source.getDataset()), "importing");
      !s.ok()) {
    return s;
  }

  // Geometry in LPS: columns of the voxel-to-RAS matrix with x and y negated.
  const Matrix4 m = g.VoxelToWorld();
  auto lps = [&](int c, int a) { return (a < 2 ? -1.0 : 1.0) * m[a][c]; };
  auto norm = [&](int c) {
    return std::sqrt(lps(c, 0) * lps(c, 0) + lps(c, 1) * lps(c, 1) + lps(c, 2) * lps(c, 2));
  };
  const double di = norm(0), dj = norm(1), dk = norm(2);
  std::unique_ptr<FGPlaneOrientationPatient> orientation(FGPlaneOrientationPatient::createMinimal(
      Ds(lps(0, 0) / di).c_str(), Ds(lps(0, 1) / di).c_str(), Ds(lps(0, 2) / di).c_str(),
      Ds(lps(1, 0) / dj).c_str(), Ds(lps(1, 1) / dj).c_str(), Ds(lps(1, 2) / dj).c_str()));
  FGPixelMeasures measures;
  measures.setPixelSpacing(absl::StrCat(Ds(dj), "\\", Ds(di)).c_str());
  measures.setSliceThickness(Ds(dk).c_str());
  measures.setSpacingBetweenSlices(Ds(dk).c_str());
  for (absl::Status s : {Check(seg->addForAllFrames(*orientation), "orientation"),
                         Check(seg->addForAllFrames(measures), "pixel measures")}) {
    if (!s.ok()) return s;
  }
  char dimension_uid[100];
  dcmGenerateUniqueIdentifier(dimension_uid, SITE_INSTANCE_UID_ROOT);
  IODMultiframeDimensionModule& dims = seg->getDimensions();
  dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dimension_uid,
                         DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber");
  dims.addDimensionIndex(DCM_ImagePositionPatient, dimension_uid, DCM_PlanePositionSequence,
                         "ImagePositionPatient");

  // Study-level references to every source instance.
  auto& referenced = seg->getCommonInstanceReference().getReferencedSeriesItems();
  for (const DicomSeries& s : sources) {
    auto* item = new IODSeriesAndInstanceReferenceMacro::ReferencedSeriesItem;
    item->setSeriesInstanceUID(s.series_uid.c_str());
    std::set<std::string> listed;  // a multi-frame instance holds many slices: listed once
    for (const std::string& uid : s.instance_uids) {
      if (!listed.insert(uid).second) continue;
      auto* instance = new SOPInstanceReferenceMacro;
      instance->setReferencedSOPClassUID(s.sop_class_uid.c_str());
      instance->setReferencedSOPInstanceUID(uid.c_str());
      item->getReferencedInstanceItems().push_back(instance);
    }
    referenced.push_back(item);
  }

  const CodeSequenceMacro category("49755003", "SCT", "Morphologically Abnormal Structure");
  std::vector<Uint8> frame(plane);
  for (const Region* region : present) {
    DcmSegment* segment = nullptr;
    const CodeSequenceMacro type(region->type_code, region->type_scheme, region->type_meaning);
    if (absl::Status s =
            Check(DcmSegment::create(segment, region->name, category, type,
                                     DcmSegTypes::SAT_AUTOMATIC, options.algorithm_name.c_str()),
                  "segment");
        !s.ok()) {
      return s;
    }
    AlgorithmIdentificationMacro algorithm;
    algorithm.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence");
    algorithm.setAlgorithmName(options.algorithm_name.c_str());
    algorithm.setAlgorithmVersion(version.c_str());
    segment->setSegmentationAlgorithmIdentification(algorithm);
    Uint16 number = 0;
    if (absl::Status s = Check(seg->addSegment(segment, number), "adding a segment"); !s.ok()) {
      return s;
    }
    for (int64_t k = 0; k < g.dims[2]; ++k) {
      bool any = false;
      for (int64_t v = 0; v < plane; ++v) {
        frame[v] = labels.labels[k * plane + v] == region->label;
        any = any || frame[v];
      }
      if (!any) continue;
      std::unique_ptr<FGPlanePosPatient> position(FGPlanePosPatient::createMinimal(
          Ds(lps(3, 0) + k * lps(2, 0)).c_str(), Ds(lps(3, 1) + k * lps(2, 1)).c_str(),
          Ds(lps(3, 2) + k * lps(2, 2)).c_str()));
      FGFrameContent content_group;
      content_group.setDimensionIndexValues(number, 0);
      content_group.setDimensionIndexValues(static_cast<Uint32>(k + 1), 1);
      FGDerivationImage derivation;
      DerivationImageItem* item = nullptr;
      derivation.addDerivationImageItem(CodeSequenceMacro("113076", "DCM", "Segmentation"), "",
                                        item);
      for (const DicomSeries& s : sources) {
        auto* image = new SourceImageItem;
        image->getPurposeOfReferenceCode().set("121322", "DCM",
                                               "Source image for image processing operation");
        image->getImageSOPInstanceReference().setReferencedSOPClassUID(s.sop_class_uid.c_str());
        image->getImageSOPInstanceReference().setReferencedSOPInstanceUID(
            s.instance_uids[k].c_str());
        if (static_cast<size_t>(k) < s.frame_numbers.size() && s.frame_numbers[k] > 0) {
          image->getImageSOPInstanceReference().addReferencedFrameNumber(
              static_cast<Uint16>(s.frame_numbers[k]));
        }
        item->getSourceImageItems().push_back(image);
      }
      OFVector<FGBase*> groups;
      groups.push_back(position.get());
      groups.push_back(&content_group);
      groups.push_back(&derivation);
      if (absl::Status s = Check(seg->addFrame(frame.data(), number, groups), "adding a frame");
          !s.ok()) {
        return s;
      }
    }
  }
  seg->getSeries().setSeriesNumber(std::to_string(options.series_number).c_str());
  DcmDataset dataset;
  if (absl::Status s = Check(seg->writeDataset(dataset), "building the dataset"); !s.ok()) {
    return s;
  }
  dataset.putAndInsertString(DCM_SeriesDescription, options.series_description.c_str());
  dataset.putAndInsertString(DCM_SegmentsOverlap, "NO");
  return DatasetFileBytes(dataset, "DICOM SEG");
}

}  // namespace danet::volume
