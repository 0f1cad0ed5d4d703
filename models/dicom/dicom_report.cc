#include "models/dicom/dicom_report.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "absl/strings/str_cat.h"
#include "models/dicom/dataset_bytes.h"

namespace danet::volume {
namespace {

constexpr char kWhat[] = "failure report";

absl::Status Check(const OFCondition& c, const std::string& step) {
  if (c.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(kWhat, ": ", step, ": ", c.text()));
}

// A TEXT item below the current one, then back up to it.
absl::Status AddText(DSRDocumentTree& tree, const DSRCodedEntryValue& concept,
                     const std::string& text) {
  if (tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Text, DSRTypes::AM_belowCurrent) ==
      0) {
    return absl::InternalError(absl::StrCat(kWhat, ": adding a text item"));
  }
  if (absl::Status s = Check(tree.getCurrentContentItem().setConceptName(concept), "concept");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Check(tree.getCurrentContentItem().setStringValue(text.c_str()), "text");
      !s.ok()) {
    return s;
  }
  tree.goUp();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> EncodeFailureReport(const std::string& source_instance,
                                                const FailureReportOptions& options) {
  DcmFileFormat source;
  if (absl::Status s = ReadDatasetBytes(source_instance, kWhat, &source); !s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  OFString study_uid;
  if (source.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study_uid).bad() ||
      study_uid.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhat, ": the source instance has no StudyInstanceUID"));
  }
  DSRDocument document(DSRTypes::DT_BasicTextSR);
  // Patient and study from the source (readStudyData reads the Patient module too), then a new
  // series in that study.
  if (absl::Status s = Check(document.readStudyData(*source.getDataset()), "study data"); !s.ok()) {
    return s;
  }
  document.createNewSeries();
  // readStudyData does not carry the character set: without it a non-ASCII patient name would
  // be read in the default repertoire.
  OFString charset;
  if (source.getDataset()->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good() &&
      !charset.empty()) {
    if (absl::Status s = Check(document.setSpecificCharacterSet(charset, OFFalse), "charset");
        !s.ok()) {
      return s;
    }
  }
  const std::string version =
      options.algorithm_version.empty() ? "unknown" : options.algorithm_version;
  for (absl::Status s :
       {Check(document.setSeriesNumber(std::to_string(options.series_number).c_str()),
              "series number"),
        Check(document.setSeriesDescription(options.series_description.c_str()),
              "series description"),
        Check(document.setManufacturer("danet"), "manufacturer"),
        Check(document.setManufacturerModelName("Med-DANet"), "model name"),
        Check(document.setSoftwareVersions(version.c_str()), "software version")}) {
    if (!s.ok()) return s;
  }

  DSRDocumentTree& tree = document.getTree();
  if (tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
    return absl::InternalError(absl::StrCat(kWhat, ": adding the root container"));
  }
  if (absl::Status s = Check(tree.getCurrentContentItem().setConceptName(
                                 DSRCodedEntryValue("18748-4", "LN", "Diagnostic imaging report")),
                             "title");
      !s.ok()) {
    return s;
  }
  const std::string finding = absl::StrCat(
      "Automatic brain tumour segmentation (Med-DANet) failed for this study. No segmentation "
      "was stored. Reason: ",
      options.reason.empty() ? "unknown" : options.reason);
  for (absl::Status s : {AddText(tree, DSRCodedEntryValue("121071", "DCM", "Finding"), finding),
                         AddText(tree, DSRCodedEntryValue("121106", "DCM", "Comment"),
                                 absl::StrCat("Produced by ", version,
                                              ". Research software whose models were trained on "
                                              "synthetic data: not for diagnosis."))}) {
    if (!s.ok()) return s;
  }

  DcmFileFormat file;
  if (absl::Status s = Check(document.write(*file.getDataset()), "building the dataset"); !s.ok()) {
    return s;
  }
  return DatasetFileBytes(*file.getDataset(), kWhat);
}

}  // namespace danet::volume
