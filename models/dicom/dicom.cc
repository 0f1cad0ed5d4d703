#include "models/dicom/dicom.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "models/dicom/dataset_bytes.h"
#include "models/dicom/element_scan.h"
#include "models/dicom/jpeg2000.h"

namespace danet::volume {
namespace {

using Vec3 = std::array<double, 3>;

Vec3 Cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
double Dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void RegisterCodecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK's own log would print file details on stderr; our errors say what matters.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

// One decoded slice: a single-frame instance, or one frame of a multi-frame one.
struct Slice {
  int file = 0;
  int frame = 0;      // 1-based frame of a multi-frame instance; 0: single-frame
  std::string stack;  // the frame's StackID ("" when none)
  std::string series_uid, study_uid, frame_uid, description, sop_class, sop_uid;
  double inversion_time_ms = -1;
  bool contrast_agent = false;
  int rows = 0, columns = 0;
  Vec3 position{}, row_dir{}, column_dir{};
  double row_spacing = 0, column_spacing = 0;  // PixelSpacing[0] (between rows), [1]
  std::vector<float> pixels;
};

std::string GetString(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  return item->findAndGetOFStringArray(tag, value).good() ? std::string(value.c_str()) : "";
}

absl::Status GetDoubles(DcmItem* item, const DcmTagKey& tag, int n, const std::string& what,
                        double* out) {
  for (int i = 0; i < n; ++i) {
    Float64 v = 0;
    if (item == nullptr || item->findAndGetFloat64(tag, v, i).bad()) {
      return absl::InvalidArgumentError(absl::StrCat("missing or short ", what));
    }
    out[i] = v;
  }
  return absl::OkStatus();
}

// Rescale slope and intercept from `item` (1 and 0 when absent).
void GetRescale(DcmItem* item, double* slope, double* intercept) {
  Float64 v = 0;
  *slope = item != nullptr && item->findAndGetFloat64(DCM_RescaleSlope, v).good() && v != 0 ? v : 1;
  *intercept = item != nullptr && item->findAndGetFloat64(DCM_RescaleIntercept, v).good() ? v : 0;
}

// Position (3 values), orientation (6) and pixel spacing (2) of a plane, each from its item
// (the dataset for a single-frame instance, functional group items for a frame), checked.
absl::Status ReadPlane(DcmItem* position, DcmItem* orientation, DcmItem* measures, Slice* s) {
  double iop[6], spacing[2];
  for (absl::Status st :
       {GetDoubles(position, DCM_ImagePositionPatient, 3, "ImagePositionPatient",
                   s->position.data()),
        GetDoubles(orientation, DCM_ImageOrientationPatient, 6, "ImageOrientationPatient", iop),
        GetDoubles(measures, DCM_PixelSpacing, 2, "PixelSpacing", spacing)}) {
    if (!st.ok()) return st;
  }
  s->row_dir = {iop[0], iop[1], iop[2]};
  s->column_dir = {iop[3], iop[4], iop[5]};
  s->row_spacing = spacing[0];
  s->column_spacing = spacing[1];
  if (spacing[0] <= 0 || spacing[1] <= 0) return absl::InvalidArgumentError("PixelSpacing <= 0");
  if (std::abs(Dot(s->row_dir, s->row_dir) - 1) > 1e-3 ||
      std::abs(Dot(s->column_dir, s->column_dir) - 1) > 1e-3 ||
      std::abs(Dot(s->row_dir, s->column_dir)) > 1e-3) {
    return absl::InvalidArgumentError("ImageOrientationPatient is not two orthonormal vectors");
  }
  return absl::OkStatus();
}

bool IsJpeg2000(E_TransferSyntax xfer) {
  return xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000;
}

// The fragments of a JPEG 2000 instance's encapsulated pixel data (views into `ds`, walked
// once), the offset table left out.
absl::StatusOr<std::vector<std::string_view>> Jpeg2000Fragments(DcmDataset* ds) {
  DcmElement* element = nullptr;
  DcmPixelSequence* sequence = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr ||
      static_cast<DcmPixelData*>(element)
          ->getEncapsulatedRepresentation(ds->getOriginalXfer(), nullptr, sequence)
          .bad() ||
      sequence == nullptr) {
    return absl::InvalidArgumentError("JPEG 2000: no encapsulated pixel data");
  }
  std::vector<std::string_view> fragments;
  bool offset_table = true;
  for (DcmObject* object = sequence->nextInContainer(nullptr); object != nullptr;
       object = sequence->nextInContainer(object)) {
    if (offset_table) {
      offset_table = false;
      continue;
    }
    auto* item = static_cast<DcmPixelItem*>(object);
    Uint8* bytes = nullptr;
    if (item->getUint8Array(bytes).bad() || (bytes == nullptr && item->getLength() > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("JPEG 2000: fragment ", fragments.size() + 1, " cannot be read"));
    }
    fragments.emplace_back(reinterpret_cast<const char*>(bytes), bytes ? item->getLength() : 0);
  }
  return fragments;
}

// Frame `frame` (0-based) of `frames` of a JPEG 2000 instance, decoded with OpenJPEG: a
// single frame's fragments joined, or one fragment per frame.
absl::Status ReadJpeg2000Pixels(const std::vector<std::string_view>& fragments, int frame,
                                int frames, double slope, double intercept, Slice* s) {
  std::string joined;
  std::string_view stream;
  if (frames == 1) {
    for (std::string_view f : fragments) joined.append(f.data(), f.size());
    stream = joined;
  } else if (static_cast<int>(fragments.size()) == frames) {
    stream = fragments[frame];
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG 2000: ", fragments.size(), " fragments for ", frames,
                     " frames (one fragment per frame is supported)"));
  }
  absl::StatusOr<std::vector<int32_t>> samples = DecodeJpeg2000(
      reinterpret_cast<const uint8_t*>(stream.data()), stream.size(), s->columns, s->rows);
  if (!samples.ok()) return samples.status();
  s->pixels.resize(samples->size());
  for (size_t i = 0; i < samples->size(); ++i) {
    s->pixels[i] = static_cast<float>((*samples)[i] * slope + intercept);
  }
  return absl::OkStatus();
}

// Frame `frame` (0-based) of decoded (native) pixel data.
absl::Status ReadPixels(DcmDataset* ds, int frame, double slope, double intercept, Slice* s) {
  Uint16 bits = 0, representation = 0;
  ds->findAndGetUint16(DCM_BitsAllocated, bits);
  ds->findAndGetUint16(DCM_PixelRepresentation, representation);
  const size_t n = static_cast<size_t>(s->rows) * s->columns;
  const size_t offset = n * static_cast<size_t>(frame);
  s->pixels.resize(n);
  unsigned long count = 0;
  if (bits == 16) {
    const Uint16* data = nullptr;
    if (ds->findAndGetUint16Array(DCM_PixelData, data, &count).bad() || data == nullptr) {
      return absl::InvalidArgumentError("no pixel data");
    }
    if (count < offset + n) {
      return absl::InvalidArgumentError("pixel data shorter than Rows x Columns x frames");
    }
    for (size_t i = 0; i < n; ++i) {
      const double raw = representation
                             ? static_cast<double>(static_cast<int16_t>(data[offset + i]))
                             : static_cast<double>(data[offset + i]);
      s->pixels[i] = static_cast<float>(raw * slope + intercept);
    }
  } else if (bits == 8) {
    const Uint8* data = nullptr;
    if (ds->findAndGetUint8Array(DCM_PixelData, data, &count).bad() || data == nullptr) {
      return absl::InvalidArgumentError("no pixel data");
    }
    if (count < offset + n) {
      return absl::InvalidArgumentError("pixel data shorter than Rows x Columns x frames");
    }
    for (size_t i = 0; i < n; ++i) {
      const double raw = representation ? static_cast<double>(static_cast<int8_t>(data[offset + i]))
                                        : static_cast<double>(data[offset + i]);
      s->pixels[i] = static_cast<float>(raw * slope + intercept);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("BitsAllocated ", bits, " is not supported"));
  }
  return absl::OkStatus();
}

// The first item of sequence `tag` in `item` (null when absent).
DcmItem* FirstItem(DcmItem* item, const DcmTagKey& tag) {
  DcmItem* inner = nullptr;
  if (item == nullptr || item->findAndGetSequenceItem(tag, inner, 0).bad()) return nullptr;
  return inner;
}

// The slices of one instance: one, or one per frame of a multi-frame (Enhanced MR) instance,
// whose per-frame functional groups (or the shared ones) give each frame's position,
// orientation, pixel measures and rescale, and its stack.
absl::StatusOr<std::vector<Slice>> DecodeInstance(const DicomFile& file, int index,
                                                  const NiftiLimits& limits) {
  if (file.bytes.size() < 132 || file.bytes.substr(128, 4) != "DICM") {
    return absl::InvalidArgumentError("not a DICOM file (no DICM preamble)");
  }
  // Before DCMTK: it would allocate a value's declared length before finding the file short.
  if (absl::Status lengths = CheckDeclaredLengths(file.bytes); !lengths.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unreadable (", lengths.message(), ")"));
  }
  DcmFileFormat format;
  const OFCondition read = ReadFileFormat(file.bytes, &format);
  if (read.bad()) return absl::InvalidArgumentError(absl::StrCat("unreadable (", read.text(), ")"));
  DcmDataset* ds = format.getDataset();
  Slice s;
  s.file = index;
  const std::string modality = GetString(ds, DCM_Modality);
  if (modality != "MR") {
    return absl::InvalidArgumentError(absl::StrCat("Modality '", modality, "' is not MR"));
  }
  s.series_uid = GetString(ds, DCM_SeriesInstanceUID);
  s.study_uid = GetString(ds, DCM_StudyInstanceUID);
  s.sop_uid = GetString(ds, DCM_SOPInstanceUID);
  if (s.series_uid.empty() || s.sop_uid.empty()) {
    return absl::InvalidArgumentError("no SeriesInstanceUID or SOPInstanceUID");
  }
  s.frame_uid = GetString(ds, DCM_FrameOfReferenceUID);
  s.description = GetString(ds, DCM_SeriesDescription);
  Float64 inversion_time = 0;
  if (ds->findAndGetFloat64(DCM_InversionTime, inversion_time).good()) {
    s.inversion_time_ms = inversion_time;
  }
  s.contrast_agent = !absl::StripAsciiWhitespace(GetString(ds, DCM_ContrastBolusAgent)).empty() ||
                     FirstItem(ds, DCM_ContrastBolusAgentSequence) != nullptr;
  s.sop_class = GetString(ds, DCM_SOPClassUID);
  Uint16 rows = 0, columns = 0;
  ds->findAndGetUint16(DCM_Rows, rows);
  ds->findAndGetUint16(DCM_Columns, columns);
  if (rows == 0 || columns == 0 || rows > limits.max_dim || columns > limits.max_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("Rows x Columns ", rows, "x", columns, " is empty or over the limit"));
  }
  s.rows = rows;
  s.columns = columns;
  Uint16 samples = 1;
  ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (samples != 1) return absl::InvalidArgumentError("not a grey-scale image (SamplesPerPixel)");
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) frames = 1;
  const bool multi_frame = frames > 1 || ds->tagExists(DCM_PerFrameFunctionalGroupsSequence);
  // Frames: at most a few stacks of the deepest volume allowed, and the volume limit.
  if (frames < 1 || frames > 4 * limits.max_dim ||
      static_cast<int64_t>(frames) * rows * columns > limits.max_voxels) {
    return absl::InvalidArgumentError(
        absl::StrCat("NumberOfFrames ", frames, " is not positive or over the volume limit"));
  }

  std::vector<Slice> slices;
  std::vector<std::pair<double, double>> rescale;  // per slice: slope, intercept
  if (!multi_frame) {
    if (absl::Status st = ReadPlane(ds, ds, ds, &s); !st.ok()) return st;
    double slope = 1, intercept = 0;
    GetRescale(ds, &slope, &intercept);
    slices.push_back(std::move(s));
    rescale.emplace_back(slope, intercept);
  } else {
    DcmItem* shared = FirstItem(ds, DCM_SharedFunctionalGroupsSequence);
    DcmSequenceOfItems* per_frame = nullptr;
    ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame);
    DcmObject* next = nullptr;  // the items, walked once (getItem(i) seeks from the start)
    for (int f = 0; f < frames; ++f) {
      next = per_frame == nullptr ? nullptr : per_frame->nextInContainer(next);
      auto* per = static_cast<DcmItem*>(next);
      if (per == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "PerFrameFunctionalGroupsSequence has no item for frame ", f + 1, " of ", frames));
      }
      // A functional group: the frame's own, else the shared one.
      auto group = [&](const DcmTagKey& tag) {
        DcmItem* item = FirstItem(per, tag);
        return item != nullptr ? item : FirstItem(shared, tag);
      };
      Slice frame = s;
      frame.frame = f + 1;
      if (absl::Status st =
              ReadPlane(group(DCM_PlanePositionSequence), group(DCM_PlaneOrientationSequence),
                        group(DCM_PixelMeasuresSequence), &frame);
          !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("frame ", f + 1, ": ", st.message()));
      }
      if (DcmItem* content = FirstItem(per, DCM_FrameContentSequence)) {
        frame.stack = GetString(content, DCM_StackID);
      }
      if (DcmItem* mr = group(DCM_MRModifierSequence)) {
        Float64 ti = 0;
        if (mr->findAndGetFloat64(DCM_InversionTimes, ti).good()) frame.inversion_time_ms = ti;
      }
      double slope = 1, intercept = 0;
      GetRescale(group(DCM_PixelValueTransformationSequence), &slope, &intercept);
      slices.push_back(std::move(frame));
      rescale.emplace_back(slope, intercept);
    }
  }

  if (ds->tagExists(DCM_PixelData) == OFFalse) return absl::InvalidArgumentError("no pixel data");
  const bool jpeg2000 = IsJpeg2000(ds->getOriginalXfer());
  std::vector<std::string_view> fragments;
  if (jpeg2000) {
    absl::StatusOr<std::vector<std::string_view>> found = Jpeg2000Fragments(ds);
    if (!found.ok()) return found.status();
    fragments = *std::move(found);
  } else if (ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad() ||
             !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
    const DcmXfer xfer(format.getDataset()->getOriginalXfer());
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode transfer syntax ", xfer.getXferName()));
  }
  for (size_t f = 0; f < slices.size(); ++f) {
    const int frame = static_cast<int>(f);
    const absl::Status st =
        jpeg2000 ? ReadJpeg2000Pixels(fragments, frame, frames, rescale[f].first, rescale[f].second,
                                      &slices[f])
                 : ReadPixels(ds, frame, rescale[f].first, rescale[f].second, &slices[f]);
    if (!st.ok()) {
      return multi_frame
                 ? absl::InvalidArgumentError(absl::StrCat("frame ", f + 1, ": ", st.message()))
                 : st;
    }
  }
  return slices;
}

bool Near(const Vec3& a, const Vec3& b, double tolerance) {
  return std::abs(a[0] - b[0]) <= tolerance && std::abs(a[1] - b[1]) <= tolerance &&
         std::abs(a[2] - b[2]) <= tolerance;
}

// Sorts one series' slices along the normal and checks they form one even grid.
absl::StatusOr<DicomSeries> BuildSeries(std::vector<Slice> slices,
                                        const std::vector<DicomFile>& files,
                                        const NiftiLimits& limits) {
  const Slice& first = slices.front();
  auto where = [&](const Slice& s) {
    return absl::StrCat("'", files[s.file].name, "'",
                        s.frame > 0 ? absl::StrCat(" frame ", s.frame) : std::string());
  };
  for (const Slice& s : slices) {
    if (s.rows != first.rows || s.columns != first.columns ||
        std::abs(s.row_spacing - first.row_spacing) > 1e-3 ||
        std::abs(s.column_spacing - first.column_spacing) > 1e-3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instance ", where(s), ": its in-plane grid differs from the rest of its series"));
    }
    if (!Near(s.row_dir, first.row_dir, 1e-4) || !Near(s.column_dir, first.column_dir, 1e-4)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instance ", where(s), ": its orientation differs from the rest of its series"));
    }
  }
  const Vec3 normal = Cross(first.row_dir, first.column_dir);
  std::sort(slices.begin(), slices.end(), [&](const Slice& a, const Slice& b) {
    return Dot(a.position, normal) < Dot(b.position, normal);
  });
  const int64_t depth = static_cast<int64_t>(slices.size());
  if (depth > limits.max_dim || depth * first.rows * first.columns > limits.max_voxels) {
    return absl::InvalidArgumentError(
        absl::StrCat("series of ", depth, " slices is over the volume limit"));
  }
  double step = 1.0;  // a single slice: its thickness is unknown, 1 mm
  if (depth > 1) step = Dot(slices[1].position, normal) - Dot(slices[0].position, normal);
  for (int64_t k = 1; k < depth; ++k) {
    const double d = Dot(slices[k].position, normal) - Dot(slices[k - 1].position, normal);
    if (d < 1e-3) {
      return absl::InvalidArgumentError(absl::StrCat("instances ", where(slices[k - 1]), " and ",
                                                     where(slices[k]),
                                                     " lie at the same slice position"));
    }
    if (std::abs(d - step) > 0.01 * step + 1e-3) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "gap in slice positions before instance %s: %.3f mm from the previous slice, %.3f mm "
          "elsewhere",
          where(slices[k]), d, step));
    }
    Vec3 expected;
    for (int a = 0; a < 3; ++a) expected[a] = slices[0].position[a] + k * step * normal[a];
    if (!Near(slices[k].position, expected, 0.01 * step + 1e-3)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instance ", where(slices[k]), ": not on the line of the series' slice positions"));
    }
  }
  DicomSeries series;
  series.series_uid = first.series_uid;
  series.study_uid = first.study_uid;
  series.frame_of_reference_uid = first.frame_uid;
  series.description = first.description;
  series.inversion_time_ms = first.inversion_time_ms;
  series.contrast_agent = first.contrast_agent;
  series.sop_class_uid = first.sop_class;
  // voxel (i, j, k) -> LPS = p0 + i * dc * row_dir + j * dr * column_dir + k * step * normal;
  // RAS negates x and y.
  Matrix4 m{};
  const double sign[3] = {-1, -1, 1};
  for (int a = 0; a < 3; ++a) {
    m[a][0] = sign[a] * first.column_spacing * first.row_dir[a];
    m[a][1] = sign[a] * first.row_spacing * first.column_dir[a];
    m[a][2] = sign[a] * step * normal[a];
    m[a][3] = sign[a] * slices[0].position[a];
  }
  m[3] = {0, 0, 0, 1};
  series.volume.geometry = GeometryFromAffine({first.columns, first.rows, depth}, m);
  const int64_t plane = int64_t(first.rows) * first.columns;
  series.volume.voxels.resize(plane * depth);
  for (int64_t k = 0; k < depth; ++k) {
    std::copy(slices[k].pixels.begin(), slices[k].pixels.end(),
              series.volume.voxels.begin() + k * plane);
    series.instance_uids.push_back(slices[k].sop_uid);
    series.frame_numbers.push_back(slices[k].frame);
    series.file_index.push_back(slices[k].file);
  }
  return series;
}

}  // namespace

absl::StatusOr<std::vector<DicomSeries>> DecodeDicomSeries(const std::vector<DicomFile>& files,
                                                           const NiftiLimits& limits) {
  RegisterCodecs();
  std::vector<std::string> order;
  std::map<std::string, std::vector<Slice>> by_series;
  std::string study;
  for (size_t i = 0; i < files.size(); ++i) {
    absl::StatusOr<std::vector<Slice>> decoded =
        DecodeInstance(files[i], static_cast<int>(i), limits);
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("instance '", files[i].name, "': ", decoded.status().message()));
    }
    if (study.empty()) study = decoded->front().study_uid;
    if (decoded->front().study_uid != study) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instance '", files[i].name, "' belongs to another study than the first instance"));
    }
    for (Slice& s : *decoded) {
      // A multi-frame series may hold several stacks (StackID): each is a volume of its own.
      const std::string key = s.stack.empty() ? s.series_uid : s.series_uid + '\x1f' + s.stack;
      if (!by_series.count(key)) order.push_back(key);
      by_series[key].push_back(std::move(s));
    }
  }
  if (order.empty()) return absl::InvalidArgumentError("no DICOM instances");
  std::vector<DicomSeries> out;
  std::vector<std::string> stacks;  // per entry of `out`: its StackID ("" when none)
  for (const std::string& key : order) {
    const Slice& first = by_series[key].front();
    const std::string uid = first.series_uid;
    stacks.push_back(first.stack);
    DicomSeries unusable;
    unusable.series_uid = uid;
    unusable.study_uid = first.study_uid;
    unusable.frame_of_reference_uid = first.frame_uid;
    unusable.description = first.description;
    unusable.inversion_time_ms = first.inversion_time_ms;
    unusable.contrast_agent = first.contrast_agent;
    unusable.sop_class_uid = first.sop_class;
    absl::StatusOr<DicomSeries> series = BuildSeries(std::move(by_series[key]), files, limits);
    if (series.ok()) {
      out.push_back(*std::move(series));
    } else {
      // Not one even stack (a localizer's three planes, DWI's b-values at one position, a
      // gap): set aside; an error only if a needed modality has no other series.
      unusable.unusable = std::string(series.status().message());
      out.push_back(std::move(unusable));
    }
  }
  // Several stacks of one series (e.g. an Enhanced MR holding an axial and a sagittal stack):
  // the usable one with the most slices is the series; the others are set aside with a note.
  for (size_t i = 0; i < out.size(); ++i) {
    if (stacks[i].empty() || !out[i].unusable.empty()) continue;
    for (size_t j = 0; j < out.size(); ++j) {
      if (j == i || out[j].series_uid != out[i].series_uid || !out[j].unusable.empty()) continue;
      if (out[j].instance_uids.size() > out[i].instance_uids.size() ||
          (out[j].instance_uids.size() == out[i].instance_uids.size() && j < i)) {
        out[i].unusable =
            absl::StrCat("stack ", stacks[i], " of a series with several; stack ", stacks[j], " (",
                         out[j].instance_uids.size(), " slices) is used");
        out[i].volume.voxels.clear();
        out[i].volume.voxels.shrink_to_fit();
        break;
      }
    }
  }
  // Patient and study for derived objects: one copy of a file per series that can be used
  // (a multi-frame file holds every stack: not one copy per stack).
  for (DicomSeries& series : out) {
    if (series.unusable.empty()) {
      series.first_instance = std::string(files[series.file_index[0]].bytes);
    }
  }
  return out;
}

std::string ModalityFromDescription(const std::string& description) {
  return ModalityByRules({description}, {});
}

absl::StatusOr<std::array<int, kNumModalities>> AssignModalities(
    const std::vector<DicomSeries>& series, const std::map<std::string, std::string>& explicit_map,
    const std::vector<const SeriesRules*>& rules) {
  std::array<std::vector<int>, kNumModalities> found, unusable;
  for (const auto& [uid, modality] : explicit_map) {
    if (ModalityIndex(modality) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.series_modalities: '", modality, "' is not flair, t1ce, t1 or t2"));
    }
  }
  for (size_t i = 0; i < series.size(); ++i) {
    std::string modality;
    if (!explicit_map.empty()) {
      auto it = explicit_map.find(series[i].series_uid);
      if (it != explicit_map.end()) modality = it->second;
    } else {
      modality = ModalityByRules(
          {series[i].description, series[i].inversion_time_ms, series[i].contrast_agent}, rules);
    }
    if (modality.empty()) continue;
    (series[i].unusable.empty() ? found : unusable)[ModalityIndex(modality)].push_back(
        static_cast<int>(i));
  }
  std::array<int, kNumModalities> assigned{};
  for (int m = 0; m < kNumModalities; ++m) {
    if (found[m].size() == 1) {
      assigned[m] = found[m][0];
      continue;
    }
    if (found[m].empty() && !unusable[m].empty()) {
      // The reason first: status messages are capped, and it names the instance.
      const DicomSeries& s = series[unusable[m][0]];
      return absl::InvalidArgumentError(absl::StrCat(s.unusable, " (series '", s.description,
                                                     "', the only one for ", kModalities[m],
                                                     ", cannot be used)"));
    }
    std::vector<std::string> listed;
    // By description where the rules decided (short: messages are capped); by UID, which is
    // what the map names, where the header did.
    for (const DicomSeries& s : series) {
      listed.push_back(absl::StrCat(explicit_map.empty() ? "" : s.series_uid + " ", "'",
                                    s.description, "' (", s.unusable.empty() ? "" : "unusable, ",
                                    s.instance_uids.size(), " slices)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        found[m].empty() ? "no series for modality '" : "several series for modality '",
        kModalities[m], "'", explicit_map.empty() ? " by the series rules" : " in the header",
        "; series found: ", absl::StrJoin(listed, "; ")));
  }
  return assigned;
}

std::vector<std::string> SetAsideNotes(const std::vector<DicomSeries>& series,
                                       const std::array<int, kNumModalities>& assigned) {
  std::vector<std::string> notes;
  for (size_t i = 0; i < series.size(); ++i) {
    if (std::find(assigned.begin(), assigned.end(), static_cast<int>(i)) != assigned.end()) {
      continue;
    }
    const DicomSeries& s = series[i];
    notes.push_back(s.unusable.empty()
                        ? absl::StrCat("series '", s.description, "' set aside: not needed")
                        : absl::StrCat("series '", s.description, "' set aside: ", s.unusable));
  }
  return notes;
}

absl::StatusOr<MultiModalVolume> StackDicomSeries(const std::vector<DicomSeries>& series,
                                                  const std::array<int, kNumModalities>& assigned) {
  std::array<Volume, kNumModalities> volumes;
  std::array<std::string, kNumModalities> names;
  const std::string& frame = series[assigned[0]].frame_of_reference_uid;
  for (int m = 0; m < kNumModalities; ++m) {
    const DicomSeries& s = series[assigned[m]];
    names[m] = absl::StrCat("series ", s.series_uid, " (", kModalities[m], ")");
    if (s.frame_of_reference_uid != frame) {
      return absl::InvalidArgumentError(absl::StrCat(
          names[m],
          ": another frame of reference than the flair series: its positions cannot be "
          "related to the flair's (registration is out of scope)"));
    }
    volumes[m] = s.volume;
  }
  return StackModalities(std::move(volumes), names);
}

std::string NewDicomUid() {
  char uid[100];
  dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
  return uid;
}

}  // namespace danet::volume
