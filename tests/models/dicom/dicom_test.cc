// DICOM series decoding: what we write reads back to the same voxels and geometry (any file
// order, rescale applied), modalities are assigned by rule or explicitly, and every kind of bad
// instance is an error naming the instance.
#include "models/dicom/dicom.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openjpeg.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>

#include "models/dicom/dataset_bytes.h"
#include "models/dicom/dicom_report.h"
#include "models/dicom/dicom_seg.h"
#include "models/dicom/element_scan.h"
#include "models/volume/gzip.h"
#include "models/volume/nifti.h"

// DCMTK allocates element values with nothrow new[]. Outside the sanitizer build (ASan brings
// its own operator new; there the fuzzers' malloc limit watches instead), this test binary
// replaces it to record the largest request, so a test can show that a declared length was never
// allocated.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DANET_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define DANET_TEST_ASAN 1
#endif
#ifndef DANET_TEST_ASAN
namespace {
std::atomic<size_t> largest_nothrow_array{0};
}  // namespace
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  size_t seen = largest_nothrow_array.load();
  while (size > seen && !largest_nothrow_array.compare_exchange_weak(seen, size)) {
  }
  return std::malloc(size == 0 ? 1 : size);  // released by operator delete[], which frees
}
#endif

namespace danet::volume {
namespace {

using ::testing::HasSubstr;

// A J2K codestream of `samples` (signed 16-bit, width x height), made with OpenJPEG's encoder:
// reversible (lossless) or irreversible at `ratio`:1.
std::string EncodeJ2k(const std::vector<int32_t>& samples, int width, int height, bool lossless,
                      float ratio = 10) {
  opj_image_cmptparm_t component{};
  component.dx = component.dy = 1;
  component.w = width;
  component.h = height;
  component.prec = 16;
  component.sgnd = 1;
  opj_image_t* image = opj_image_create(1, &component, OPJ_CLRSPC_GRAY);
  image->x1 = width;
  image->y1 = height;
  std::copy(samples.begin(), samples.end(), image->comps[0].data);
  opj_cparameters_t parameters;
  opj_set_default_encoder_parameters(&parameters);
  parameters.tcp_numlayers = 1;
  parameters.cp_disto_alloc = 1;
  parameters.tcp_rates[0] = lossless ? 0 : ratio;
  parameters.irreversible = lossless ? 0 : 1;
  parameters.numresolution = 3;
  opj_codec_t* codec = opj_create_compress(OPJ_CODEC_J2K);
  opj_setup_encoder(codec, &parameters, image);
  std::string out;
  opj_stream_t* stream = opj_stream_create(1 << 16, OPJ_FALSE);
  opj_stream_set_user_data(stream, &out, nullptr);
  opj_stream_set_write_function(stream, [](void* data, OPJ_SIZE_T n, void* user) -> OPJ_SIZE_T {
    static_cast<std::string*>(user)->append(static_cast<const char*>(data), n);
    return n;
  });
  opj_stream_set_skip_function(stream, [](OPJ_OFF_T n, void* user) -> OPJ_OFF_T {
    static_cast<std::string*>(user)->append(static_cast<size_t>(n), '\0');
    return n;
  });
  opj_stream_set_seek_function(stream, [](OPJ_OFF_T, void*) -> OPJ_BOOL { return OPJ_FALSE; });
  const bool ok = opj_start_compress(codec, image, stream) && opj_encode(codec, stream) &&
                  opj_end_compress(codec, stream);
  opj_stream_destroy(stream);
  opj_destroy_codec(codec);
  opj_image_destroy(image);
  EXPECT_TRUE(ok);
  return out;
}

class DicomTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("danet_dicom_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    // An oblique-free but flipped grid (negative x step) with anisotropic spacing.
    Matrix4 m{};
    m[0] = {-0.9, 0, 0, 40};
    m[1] = {0, 1.1, 0, -30};
    m[2] = {0, 0, 2.5, -10};
    m[3] = {0, 0, 0, 1};
    image_.geometry = GeometryFromAffine({32, 24, 6}, m);
    std::mt19937 rng(5);
    std::uniform_int_distribution<int> value(-300, 3000);
    image_.voxels.resize(32 * 24 * 6);
    for (float& v : image_.voxels) v = static_cast<float>(value(rng) * 2 - 100);  // slope 2
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes the test image as series `name` and returns its files' bytes in slice order.
  std::vector<std::string> Write(const std::string& name, DicomWriteOptions options = {}) {
    options.series_description = name;
    options.rescale_slope = 2;
    options.rescale_intercept = -100;
    if (options.study_uid.empty()) options.study_uid = study_;
    if (options.frame_of_reference_uid.empty()) options.frame_of_reference_uid = frame_;
    EXPECT_TRUE(WriteDicomSeries(image_, options, dir_ / name, "IM").ok());
    std::vector<std::string> bytes;
    for (int k = 1; k <= 6; ++k) {
      char file[32];
      std::snprintf(file, sizeof(file), "IM%04d.dcm", k);
      bytes.push_back(*ReadFileBytes(dir_ / name / file));
    }
    return bytes;
  }

  // Every voxel of `v` equals the voxel of the test image at the same world position (the
  // decoded grid may run k the other way: k follows the slice normal, row x column).
  void ExpectSameWorldImage(const Volume& v) {
    ASSERT_EQ(v.geometry.dims, image_.geometry.dims);
    const Matrix4 a = v.geometry.VoxelToWorld(), b = image_.geometry.VoxelToWorld();
    for (int64_t k = 0; k < 6; ++k) {
      for (int64_t j = 0; j < 24; ++j) {
        for (int64_t i = 0; i < 32; ++i) {
          double w[3];
          for (int r = 0; r < 3; ++r) w[r] = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
          // b is diagonal in this test.
          const int64_t bi = std::lround((w[0] - b[0][3]) / b[0][0]);
          const int64_t bj = std::lround((w[1] - b[1][3]) / b[1][1]);
          const int64_t bk = std::lround((w[2] - b[2][3]) / b[2][2]);
          ASSERT_TRUE(bi >= 0 && bi < 32 && bj >= 0 && bj < 24 && bk >= 0 && bk < 6);
          ASSERT_EQ(v.voxels[(k * 24 + j) * 32 + i], image_.voxels[(bk * 24 + bj) * 32 + bi])
              << i << "," << j << "," << k;
        }
      }
    }
  }

  static std::vector<DicomFile> Files(const std::vector<std::string>& bytes,
                                      const std::string& prefix = "f") {
    std::vector<DicomFile> files;
    for (size_t i = 0; i < bytes.size(); ++i) {
      files.push_back({prefix + std::to_string(i) + ".dcm", bytes[i]});
    }
    return files;
  }

  // Rewrites an instance through `edit`. The file is this process's own: ctest runs the test
  // cases as parallel processes.
  static std::string Edit(const std::string& bytes, const std::function<void(DcmDataset*)>& edit,
                          E_TransferSyntax xfer = EXS_LittleEndianExplicit) {
    const std::filesystem::path tmp = std::filesystem::temp_directory_path() /
                                      ("danet_edit_" + std::to_string(::getpid()) + ".dcm");
    WriteFileBytes(tmp, bytes).IgnoreError();
    DcmFileFormat f;
    EXPECT_TRUE(f.loadFile(tmp.c_str()).good());
    edit(f.getDataset());
    EXPECT_TRUE(f.saveFile(tmp.c_str(), xfer).good());
    std::string out = *ReadFileBytes(tmp);
    std::filesystem::remove(tmp);
    return out;
  }

  // Writes an instance again in another transfer syntax.
  static std::string Save(const std::string& bytes, E_TransferSyntax xfer) {
    return Edit(
        bytes, [](DcmDataset*) {}, xfer);
  }

  // An instance again with its pixels as a JPEG 2000 codestream (`codestream` made from them,
  // or given), split into two fragments, in transfer syntax `xfer`.
  static std::string AsJpeg2000(const std::string& bytes, bool lossless,
                                const std::string& codestream = "") {
    const E_TransferSyntax xfer = lossless ? EXS_JPEG2000LosslessOnly : EXS_JPEG2000;
    return Edit(
        bytes,
        [&](DcmDataset* ds) {
          Uint16 rows = 0, columns = 0;
          const Uint16* pixels = nullptr;
          ds->findAndGetUint16(DCM_Rows, rows);
          ds->findAndGetUint16(DCM_Columns, columns);
          ASSERT_TRUE(ds->findAndGetUint16Array(DCM_PixelData, pixels).good() && pixels);
          std::vector<int32_t> samples(pixels, pixels + rows * columns);
          for (int32_t& v : samples) v = static_cast<int16_t>(v);
          const std::string stream =
              codestream.empty() ? EncodeJ2k(samples, columns, rows, lossless) : codestream;
          auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
          sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
          const size_t half = (stream.size() / 2) & ~size_t{1};
          for (const std::string& part : {stream.substr(0, half), stream.substr(half)}) {
            auto* item = new DcmPixelItem(DCM_PixelItemTag);
            std::string even = part;
            if (even.size() % 2) even.push_back('\0');
            item->putUint8Array(reinterpret_cast<const Uint8*>(even.data()), even.size());
            sequence->insert(item);
          }
          auto* pixel_data = new DcmPixelData(DCM_PixelData);
          pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
          ds->insert(pixel_data, /*replaceOld=*/true);
        },
        xfer);
  }

  // A multi-frame instance again with each frame's pixels as its own lossless J2K fragment.
  static std::string FramesAsJpeg2000(const std::string& bytes) {
    return Edit(
        bytes,
        [&](DcmDataset* ds) {
          Uint16 rows = 0, columns = 0;
          Sint32 frames = 1;
          const Uint16* pixels = nullptr;
          ds->findAndGetUint16(DCM_Rows, rows);
          ds->findAndGetUint16(DCM_Columns, columns);
          ds->findAndGetSint32(DCM_NumberOfFrames, frames);
          ASSERT_TRUE(ds->findAndGetUint16Array(DCM_PixelData, pixels).good() && pixels);
          auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
          sequence->insert(new DcmPixelItem(DCM_PixelItemTag));
          const size_t n = size_t{rows} * columns;
          for (Sint32 f = 0; f < frames; ++f) {
            std::vector<int32_t> samples(pixels + f * n, pixels + (f + 1) * n);
            for (int32_t& v : samples) v = static_cast<int16_t>(v);
            std::string stream = EncodeJ2k(samples, columns, rows, true);
            if (stream.size() % 2) stream.push_back('\0');
            auto* item = new DcmPixelItem(DCM_PixelItemTag);
            item->putUint8Array(reinterpret_cast<const Uint8*>(stream.data()), stream.size());
            sequence->insert(item);
          }
          auto* pixel_data = new DcmPixelData(DCM_PixelData);
          pixel_data->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, sequence);
          ds->insert(pixel_data, /*replaceOld=*/true);
        },
        EXS_JPEG2000LosslessOnly);
  }

  // The single-frame instances `bytes` as one Enhanced MR instance: frames in `order` (indices
  // into `bytes`), orientation and pixel measures shared, position, stack and rescale per
  // frame (`slope` of frame f: slopes[f], the stored values scaled to keep the voxels).
  static std::string AsEnhanced(const std::vector<std::string>& bytes,
                                const std::vector<int>& order, const std::string& stack = "1",
                                const std::vector<double>& slopes = {}) {
    std::vector<DcmFileFormat> sources(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
      DcmInputBufferStream in;
      in.setBuffer(bytes[i].data(), static_cast<offile_off_t>(bytes[i].size()));
      in.setEos();
      sources[i].transferInit();
      sources[i].read(in);
      sources[i].transferEnd();
    }
    return Edit(bytes[0], [&](DcmDataset* ds) {
      OFString orientation, spacing;
      ds->findAndGetOFStringArray(DCM_ImageOrientationPatient, orientation);
      ds->findAndGetOFStringArray(DCM_PixelSpacing, spacing);
      for (const DcmTagKey& tag : {DCM_ImagePositionPatient, DCM_ImageOrientationPatient,
                                   DCM_PixelSpacing, DCM_RescaleSlope, DCM_RescaleIntercept}) {
        delete ds->remove(tag);
      }
      ds->putAndInsertString(DCM_SOPClassUID, UID_EnhancedMRImageStorage);
      ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(order.size()).c_str());
      DcmItem *shared = nullptr, *item = nullptr;
      ds->findOrCreateSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
      shared->findOrCreateSequenceItem(DCM_PlaneOrientationSequence, item, 0);
      item->putAndInsertOFStringArray(DCM_ImageOrientationPatient, orientation);
      shared->findOrCreateSequenceItem(DCM_PixelMeasuresSequence, item, 0);
      item->putAndInsertOFStringArray(DCM_PixelSpacing, spacing);
      std::vector<Uint16> pixels;
      for (size_t f = 0; f < order.size(); ++f) {
        DcmDataset* source = sources[order[f]].getDataset();
        const double slope = slopes.empty() ? 2 : slopes[f];
        DcmItem* per = nullptr;
        ds->findOrCreateSequenceItem(DCM_PerFrameFunctionalGroupsSequence, per, -2);
        OFString position;
        source->findAndGetOFStringArray(DCM_ImagePositionPatient, position);
        per->findOrCreateSequenceItem(DCM_PlanePositionSequence, item, 0);
        item->putAndInsertOFStringArray(DCM_ImagePositionPatient, position);
        per->findOrCreateSequenceItem(DCM_FrameContentSequence, item, 0);
        item->putAndInsertString(DCM_StackID, stack.c_str());
        per->findOrCreateSequenceItem(DCM_PixelValueTransformationSequence, item, 0);
        item->putAndInsertString(DCM_RescaleSlope, absl::StrCat(slope).c_str());
        item->putAndInsertString(DCM_RescaleIntercept, "-100");
        const Uint16* data = nullptr;
        unsigned long count = 0;
        source->findAndGetUint16Array(DCM_PixelData, data, &count);
        for (unsigned long v = 0; v < count; ++v) {
          // value = stored * 2 - 100 in the source; here stored * slope - 100.
          pixels.push_back(static_cast<Uint16>(
              static_cast<int16_t>(std::lround(static_cast<int16_t>(data[v]) * 2 / slope))));
        }
      }
      ds->putAndInsertUint16Array(DCM_PixelData, pixels.data(), pixels.size());
    });
  }

  std::filesystem::path dir_;
  Volume image_;
  std::string study_ = NewDicomUid(), frame_ = NewDicomUid();
};

TEST_F(DicomTest, ReadsBackVoxelsAndGeometryInAnyFileOrder) {
  std::vector<std::string> bytes = Write("AX FLAIR");
  std::reverse(bytes.begin(), bytes.end());
  std::swap(bytes[1], bytes[4]);
  absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(bytes));
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->size(), 1u);
  const Volume& v = (*series)[0].volume;
  ExpectSameWorldImage(v);
  EXPECT_EQ((*series)[0].description, "AX FLAIR");
  EXPECT_EQ((*series)[0].instance_uids.size(), 6u);
  // Here row x column points down (x runs right-to-left): the highest slice comes first, and it
  // is in file 0 after the shuffle above.
  EXPECT_NEAR(v.geometry.VoxelToWorld()[2][2], -2.5, 1e-6);
  EXPECT_EQ((*series)[0].file_index.front(), 0);
}

TEST_F(DicomTest, InstanceNumbersDoNotDecideTheOrder) {
  std::vector<std::string> bytes = Write("AX T2");
  for (size_t k = 0; k < bytes.size(); ++k) {
    bytes[k] = Edit(bytes[k], [&](DcmDataset* ds) {
      ds->putAndInsertString(DCM_InstanceNumber, std::to_string(100 - k).c_str());
    });
  }
  absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(bytes));
  ASSERT_TRUE(series.ok()) << series.status();
  ExpectSameWorldImage((*series)[0].volume);
}

TEST_F(DicomTest, AssignsModalitiesByDescriptionOrExplicitly) {
  std::vector<std::string> all;
  for (const char* d : {"AX T2", "AX T1 POST GD", "AX FLAIR", "AX T1"}) {
    for (std::string& b : Write(d)) all.push_back(std::move(b));
  }
  std::vector<DicomSeries> series = *DecodeDicomSeries(Files(all));
  ASSERT_EQ(series.size(), 4u);
  const std::array<int, 4> assigned = *AssignModalities(series, {});
  EXPECT_EQ(assigned, (std::array<int, 4>{2, 1, 3, 0}));
  EXPECT_TRUE(StackDicomSeries(series, assigned).ok());
  // Explicit: swap flair and t2.
  std::map<std::string, std::string> map = {{series[0].series_uid, "flair"},
                                            {series[1].series_uid, "t1ce"},
                                            {series[2].series_uid, "t2"},
                                            {series[3].series_uid, "t1"}};
  EXPECT_EQ(*AssignModalities(series, map), (std::array<int, 4>{0, 1, 3, 2}));
  // Ambiguous: two T2 series by description.
  series[2].description = "T2 again";
  absl::Status ambiguous = AssignModalities(series, {}).status();
  EXPECT_THAT(ambiguous.message(), HasSubstr("no series for modality 'flair'"));
  EXPECT_THAT(ambiguous.message(), HasSubstr("'T2 again' (6 slices)"));
  EXPECT_EQ(ModalityFromDescription("Sag T1 MPRAGE"), "t1");
  EXPECT_EQ(ModalityFromDescription("t1c+"), "t1ce");
  EXPECT_EQ(ModalityFromDescription("DWI"), "");
}

TEST(ModalityFromDescriptionTest, VendorNamesAndSeriesThatAreNoneOfTheFour) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      // Siemens
      {"t2_tirm_tra_dark-fluid", "flair"},
      {"t1_se_tra_KM", "t1ce"},
      {"t1_mprage_sag_p2_iso KM", "t1ce"},
      {"t1_mprage_sag_p2_iso", "t1"},
      {"t2_tse_tra", "t2"},
      {"t1_fl3d_tra", "t1"},
      // Philips
      {"T2W_FLAIR", "flair"},
      {"T1W_SE+C", "t1ce"},
      {"T1W_3D_TFE", "t1"},
      {"T2W_TSE", "t2"},
      // GE
      {"AX T1 FLAIR", "t1"},
      {"AX T1 FLAIR +C", "t1ce"},
      {"Ax T2 FRFSE", "t2"},
      {"AX FLAIR", "flair"},
      {"Sag 3D FSPGR Gad", "t1ce"},
      {"AX T1 POST GD", "t1ce"},
      {"T1 w/ contrast", "t1ce"},
      // none of the four
      {"AX T2* GRE", ""},
      {"T2 FFE", ""},
      {"t2_swi_tra", ""},
      {"SWAN", ""},
      {"AX DWI b0 b1000", ""},
      {"ep2d_diff_3scan_trace", ""},
      {"ADC", ""},
      {"3-plane loc", ""},
      {"localizer", ""},
      {"ep2d_perf", ""},
      {"Survey", ""},
  };
  for (const auto& [description, modality] : cases) {
    EXPECT_EQ(ModalityFromDescription(description), modality) << description;
  }
}

TEST_F(DicomTest, OtherFrameOfReferenceIsAnError) {
  std::vector<std::string> all;
  for (const char* d : {"AX T2", "AX T1 POST GD", "AX FLAIR"}) {
    for (std::string& b : Write(d)) all.push_back(std::move(b));
  }
  DicomWriteOptions other;
  other.frame_of_reference_uid = NewDicomUid();
  for (std::string& b : Write("AX T1", other)) all.push_back(std::move(b));
  std::vector<DicomSeries> series = *DecodeDicomSeries(Files(all));
  EXPECT_THAT(StackDicomSeries(series, *AssignModalities(series, {})).status().message(),
              HasSubstr("another frame of reference"));
}

TEST_F(DicomTest, BadInstancesAreNamedErrors) {
  const std::vector<std::string> good = Write("AX FLAIR");
  struct Case {
    std::string name;
    std::vector<std::string> bytes;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({"not dicom", {std::string(300, 'x')}, "f0.dcm': not a DICOM file"});
  cases.push_back({"truncated", {good[0].substr(0, good[0].size() / 2)}, "f0.dcm'"});
  cases.push_back(
      {"ct",
       {Edit(good[0], [](DcmDataset* ds) { ds->putAndInsertString(DCM_Modality, "CT"); })},
       "Modality 'CT' is not MR"});
  cases.push_back({"no pixels",
                   {Edit(good[0], [](DcmDataset* ds) { delete ds->remove(DCM_PixelData); })},
                   "no pixel data"});
  cases.push_back(
      {"multi-frame",
       {Edit(good[0], [](DcmDataset* ds) { ds->putAndInsertString(DCM_NumberOfFrames, "3"); })},
       "PerFrameFunctionalGroupsSequence has no item for frame 1 of 3"});
  std::vector<std::string> two_studies = good;
  two_studies[4] = Edit(
      good[4], [](DcmDataset* ds) { ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.3.4"); });
  cases.push_back({"two studies", two_studies, "'f4.dcm' belongs to another study"});
  for (const Case& c : cases) {
    absl::Status status = DecodeDicomSeries(Files(c.bytes)).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.name;
  }
  NiftiLimits small;
  small.max_dim = 16;
  EXPECT_THAT(DecodeDicomSeries(Files(good), small).status().message(), HasSubstr("limit"));
}

// A series that is not one even stack decodes as `unusable`; when it is the only series of a
// needed modality, AssignModalities refuses with the reason, which names the instance.
TEST_F(DicomTest, SeriesThatAreNotOneStackAreUnusable) {
  const std::vector<std::string> good = Write("AX FLAIR");
  struct Case {
    std::string name;
    std::vector<std::string> bytes;
    std::string message;
    NiftiLimits limits;
  };
  std::vector<Case> cases;
  std::vector<std::string> gap = good;
  gap.erase(gap.begin() + 3);
  cases.push_back({"gap", gap, "gap in slice positions before instance 'f", {}});
  std::vector<std::string> twisted = good;
  twisted[2] = Edit(good[2], [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_ImageOrientationPatient, "0\\1\\0\\1\\0\\0");
  });
  cases.push_back({"orientation", twisted, "f2.dcm': its orientation differs", {}});
  std::vector<std::string> duplicate = good;
  duplicate.push_back(
      Edit(good[1], [](DcmDataset* ds) { ds->putAndInsertString(DCM_SOPInstanceUID, "1.2.3.5"); }));
  cases.push_back({"same position", duplicate, "lie at the same slice position", {}});
  for (const Case& c : cases) {
    absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(c.bytes), c.limits);
    ASSERT_TRUE(series.ok()) << c.name << ": " << series.status();
    ASSERT_EQ(series->size(), 1u) << c.name;
    EXPECT_THAT((*series)[0].unusable, HasSubstr(c.message)) << c.name;
    EXPECT_TRUE((*series)[0].volume.voxels.empty()) << c.name;
    absl::Status status = AssignModalities(*series, {}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(status.message(), HasSubstr("the only one for flair, cannot be used")) << c.name;
  }
}

// Series a study holds besides the four (a 3-plane localizer, DWI with two b-values at the same
// positions, here described as T2) are set aside with a note instead of failing the study.
TEST_F(DicomTest, UnusableAndUnneededSeriesAreSetAsideWithNotes) {
  std::vector<std::string> all;
  for (const char* d : {"AX T2", "AX T1 POST GD", "AX FLAIR", "AX T1"}) {
    for (std::string& b : Write(d)) all.push_back(std::move(b));
  }
  std::vector<std::string> localizer = Write("3-plane localizer");
  localizer[1] = Edit(localizer[1], [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_ImageOrientationPatient, "0\\1\\0\\0\\0\\-1");
  });
  for (std::string& b : localizer) all.push_back(std::move(b));
  std::vector<std::string> dwi = Write("AX T2 DWI b0 b1000");
  for (int k = 0; k < 6; ++k) {
    all.push_back(dwi[k]);
    all.push_back(Edit(dwi[k], [k](DcmDataset* ds) {
      ds->putAndInsertString(DCM_SOPInstanceUID, ("1.2.3.6." + std::to_string(k)).c_str());
    }));
  }
  std::vector<DicomSeries> series = *DecodeDicomSeries(Files(all));
  ASSERT_EQ(series.size(), 6u);
  const absl::StatusOr<std::array<int, 4>> assigned = AssignModalities(series, {});
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  EXPECT_EQ(*assigned, (std::array<int, 4>{2, 1, 3, 0}));
  EXPECT_TRUE(StackDicomSeries(series, *assigned).ok());
  const std::vector<std::string> notes = SetAsideNotes(series, *assigned);
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_THAT(notes[0], HasSubstr("series '3-plane localizer' set aside: instance"));
  EXPECT_THAT(notes[0], HasSubstr("its orientation differs"));
  EXPECT_THAT(notes[1], HasSubstr("series 'AX T2 DWI b0 b1000' set aside:"));
  EXPECT_THAT(notes[1], HasSubstr("lie at the same slice position"));
}

// A value length past the end of the file is refused before DCMTK allocates it (the dicom_fuzz
// finding: a 1 kB file declaring 2 GB), also inside a sequence item; files in the other
// transfer syntaxes, with sequences, still read back.
TEST_F(DicomTest, ValueLengthsPastTheEndAreRefusedBeforeAllocating) {
  const std::vector<std::string> good = Write("AX FLAIR");
  const auto patch32 = [](std::string bytes, size_t at, uint32_t v) {
    for (int b = 0; b < 4; ++b) bytes[at + b] = static_cast<char>(v >> (8 * b));
    return bytes;
  };
  // Pixel data, explicit VR little endian: tag, "OW", 2 reserved bytes, 32-bit length.
  const size_t pixels = good[1].rfind(std::string("\xE0\x7F\x10\x00OW", 6));
  ASSERT_NE(pixels, std::string::npos);
  std::vector<std::string> huge = good;
  huge[1] = patch32(good[1], pixels + 8, 0x7FFFFFF0u);
  absl::Status status = DecodeDicomSeries(Files(huge)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("f1.dcm': unreadable (element (7FE0,0010)"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("declares 2147483632 bytes"));

  // The same inside a sequence item: a UI value whose 16-bit length runs past the end.
  const std::string nested = Edit(good[0], [](DcmDataset* ds) {
    DcmItem* item = nullptr;
    ds->findOrCreateSequenceItem(DCM_ReferencedImageSequence, item, -2);
    item->putAndInsertString(DCM_ReferencedSOPInstanceUID, "1.2.3.77");
  });
  std::vector<std::string> sequence = good;
  sequence[0] = nested;
  ASSERT_TRUE(DecodeDicomSeries(Files(sequence)).ok());  // the sequence itself is fine
  const size_t uid = nested.find("1.2.3.77");
  ASSERT_NE(uid, std::string::npos);
  sequence[0][uid - 2] = sequence[0][uid - 1] = '\xFF';
  status = DecodeDicomSeries(Files(sequence)).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("element (0008,1155)"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("declares 65535 bytes"));

  // A VR that DCMTK does not know, two capital letters: DCMTK reads a 32-bit length after two
  // reserved bytes (a future VR), so the walk does too (the upload_fuzz finding: "WS" and 4 GB).
  const size_t samples = good[1].find(std::string("\x28\x00\x02\x00US\x02\x00", 8));
  ASSERT_NE(samples, std::string::npos);
  std::vector<std::string> unknown = good;
  unknown[1][samples + 4] = 'W';
  unknown[1][samples + 5] = 'S';
  unknown[1] = patch32(unknown[1], samples + 8, 0xFFFBFFD8u);
  status = DecodeDicomSeries(Files(unknown)).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("element (0028,0002)"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("declares 4294705112 bytes"));

  // A meta group whose first VR is not two letters is read in implicit VR, as DCMTK reads it:
  // (0002,0000)'s "UL" made 01 00 gives a 32-bit length of 0x00040001 (the dicom_fuzz finding).
  ASSERT_EQ(good[1].substr(132, 6), std::string("\x02\x00\x00\x00UL", 6));
  std::vector<std::string> meta = good;
  meta[1][136] = '\x01';
  meta[1][137] = '\x00';
  status = DecodeDicomSeries(Files(meta)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("element (0002,0000)"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("declares 262145 bytes"));

  // Implicit VR and big endian files walk as well.
  for (const E_TransferSyntax xfer : {EXS_LittleEndianImplicit, EXS_BigEndianExplicit}) {
    std::vector<std::string> other;
    for (const std::string& b : good) other.push_back(Save(b, xfer));
    other[0] = Save(nested, xfer);
    absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(other));
    ASSERT_TRUE(series.ok()) << series.status();
    ExpectSameWorldImage(series->front().volume);
  }
}

// CP-246, as DCMTK reads it: a UN value of undefined length in an explicit-VR data set holds a
// sequence whose items are in implicit VR; the walk reads them so, and goes back to explicit VR
// after the sequence's delimiter. Appended after the pixel data: a private (7FE1,1001) UN
// sequence, then an explicit LO element.
// The guard that does not depend on the pre-scan's reading of the encoding: DCMTK reads from a
// stream that can defer a value, so it skips a long one, finds the file short and refuses it
// without allocating the declared length; a good file's values are all in memory afterwards.
TEST_F(DicomTest, DcmtkChecksDeclaredLengthsBeforeAllocatingThem) {
  const std::vector<std::string> good = Write("AX FLAIR");
  const size_t pixels = good[1].rfind(std::string("\xE0\x7F\x10\x00OW", 6));
  ASSERT_NE(pixels, std::string::npos);
  std::string huge = good[1];
  for (int b = 0; b < 4; ++b) huge[pixels + 8 + b] = static_cast<char>(0x7FFFFFF0u >> (8 * b));
#ifndef DANET_TEST_ASAN
  largest_nothrow_array = 0;
#endif
  DcmFileFormat refused;
  const OFCondition c = ReadFileFormat(huge, &refused);  // no CheckDeclaredLengths before it
  EXPECT_TRUE(c.bad());
#ifndef DANET_TEST_ASAN
  EXPECT_LT(largest_nothrow_array.load(), huge.size());  // checked to be 2 GB with a buffer stream
#endif

  // A good instance read from bytes that are gone before its pixels are used (its pixels, 1.5 kB,
  // longer than the 256 bytes read at once here, deferred while reading).
  DcmFileFormat read;
  {
    const std::string copy = good[1];
    ASSERT_TRUE(ReadFileFormat(copy, &read, /*max_read_length=*/256).good());
  }
  DcmFileFormat reference;
  ASSERT_TRUE(ReadDatasetBytes(good[1], "reference", &reference).ok());
  const Uint16* a = nullptr;
  const Uint16* b = nullptr;
  unsigned long na = 0, nb = 0;
  ASSERT_TRUE(read.getDataset()->findAndGetUint16Array(DCM_PixelData, a, &na).good());
  ASSERT_TRUE(reference.getDataset()->findAndGetUint16Array(DCM_PixelData, b, &nb).good());
  ASSERT_EQ(na, nb);
  ASSERT_GT(na, 256u / 2);
  EXPECT_TRUE(std::equal(a, a + na, b));
}

// Raw deflate data (no wrapper), as the Deflated Explicit VR Little Endian transfer syntax holds.
std::string DeflateRaw(const std::string& bytes) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&stream, bytes.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// A deflated data set is inflated before DCMTK reads it, so the same guard holds: the series
// decodes as its explicit-VR original does, and a value that declares 2 GB inside the deflated
// data is refused without being allocated.
TEST_F(DicomTest, DeflatedDataSetsDecodeAndAreGuardedToo) {
  const std::vector<std::string> good = Write("AX FLAIR");
  std::vector<std::string> deflated;
  for (const std::string& b : good) deflated.push_back(Save(b, EXS_DeflatedLittleEndianExplicit));
  ASSERT_NE(deflated[1].find("1.2.840.10008.1.2.1.99"), std::string::npos);
  const absl::StatusOr<std::vector<DicomSeries>> plain = DecodeDicomSeries(Files(good));
  const absl::StatusOr<std::vector<DicomSeries>> read = DecodeDicomSeries(Files(deflated));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), plain->size());
  EXPECT_EQ((*read)[0].volume.voxels, (*plain)[0].volume.voxels);

  // The meta group ends 12 bytes after (0002,0000) plus its value; the deflated data set follows.
  const std::string& one = deflated[1];
  ASSERT_EQ(one.substr(132, 6), std::string("\x02\x00\x00\x00UL", 6));
  uint32_t meta_length = 0;
  for (int b = 0; b < 4; ++b)
    meta_length |= uint32_t{static_cast<uint8_t>(one[140 + b])} << (8 * b);
  const size_t data_set = 144 + meta_length;
  std::string inflated = *InflateRaw(one.substr(data_set), 1 << 24);
  const size_t pixels = inflated.rfind(std::string("\xE0\x7F\x10\x00OW", 6));
  ASSERT_NE(pixels, std::string::npos);
  for (int b = 0; b < 4; ++b) {
    inflated[pixels + 8 + b] = static_cast<char>(0x7FFFFFF0u >> (8 * b));
  }
  const std::string huge = one.substr(0, data_set) + DeflateRaw(inflated);
#ifndef DANET_TEST_ASAN
  largest_nothrow_array = 0;
#endif
  DcmFileFormat refused;
  EXPECT_TRUE(ReadFileFormat(huge, &refused).bad());
#ifndef DANET_TEST_ASAN
  EXPECT_LT(largest_nothrow_array.load(), inflated.size());
#endif
  std::vector<std::string> series = deflated;
  series[1] = huge;
  EXPECT_EQ(DecodeDicomSeries(Files(series)).status().code(), absl::StatusCode::kInvalidArgument);

  // Deflate data that does not inflate is refused with zlib's reason.
  std::string corrupt = one;
  for (size_t i = data_set; i < corrupt.size(); ++i) corrupt[i] = '\xFF';
  DcmFileFormat broken;
  EXPECT_TRUE(ReadFileFormat(corrupt, &broken).bad());
}

TEST_F(DicomTest, UndefinedLengthUnHoldsAnImplicitVrSequence) {
  const std::vector<std::string> good = Write("AX FLAIR");
  const auto le16 = [](uint16_t v) {
    return std::string{static_cast<char>(v), static_cast<char>(v >> 8)};
  };
  const auto le32 = [&](uint32_t v) {
    return le16(static_cast<uint16_t>(v)) + le16(static_cast<uint16_t>(v >> 16));
  };
  const auto tag = [&](uint16_t group, uint16_t element) { return le16(group) + le16(element); };
  // The UN sequence with one item holding (7FE1,1002), 4 bytes in implicit VR (its length
  // `inner_length`), then (7FE1,1003) LO "abcd" in explicit VR.
  const auto appended = [&](uint32_t inner_length) {
    return tag(0x7FE1, 0x1001) + "UN" + le16(0) + le32(0xFFFFFFFFu) +  // UN, undefined length
           tag(0xFFFE, 0xE000) + le32(0xFFFFFFFFu) +                   // item, undefined length
           tag(0x7FE1, 0x1002) + le32(inner_length) + "wxyz" +         // implicit VR element
           tag(0xFFFE, 0xE00D) + le32(0) +                             // item delimiter
           tag(0xFFFE, 0xE0DD) + le32(0) +                             // sequence delimiter
           tag(0x7FE1, 0x1003) + "LO" + le16(4) + "abcd";              // explicit VR again
  };
  std::vector<std::string> fine = good;
  fine[1] += appended(4);
  absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(fine));
  ASSERT_TRUE(series.ok()) << series.status();
  ExpectSameWorldImage(series->front().volume);

  std::vector<std::string> huge = good;
  huge[1] += appended(0xFFFFFFF0u);
  const absl::Status status = DecodeDicomSeries(Files(huge)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("element (7FE1,1002)"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("declares 4294967280 bytes"));
}

TEST_F(DicomTest, SegNeedsATumourAndTheSourceGrid) {
  std::vector<DicomSeries> series = *DecodeDicomSeries(Files(Write("AX FLAIR")));
  LabelVolume labels{series[0].volume.geometry,
                     std::vector<uint8_t>(series[0].volume.voxels.size(), 0)};
  EXPECT_EQ(EncodeDicomSeg(labels, series, {}).status().code(), absl::StatusCode::kNotFound);
  labels.labels[100] = 2;
  absl::StatusOr<std::string> seg = EncodeDicomSeg(labels, series, {});
  ASSERT_TRUE(seg.ok()) << seg.status();
  EXPECT_EQ(seg->substr(128, 4), "DICM");
  LabelVolume other = labels;
  other.geometry.dims[2] = 5;
  EXPECT_EQ(EncodeDicomSeg(other, series, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DicomTest, Jpeg2000LosslessIsExactAndLossyIsClose) {
  const std::vector<std::string> plain = Write("AX FLAIR");
  const std::vector<float> expected = (*DecodeDicomSeries(Files(plain)))[0].volume.voxels;
  std::vector<std::string> lossless, lossy;
  for (const std::string& b : plain) {
    lossless.push_back(AsJpeg2000(b, true));
    lossy.push_back(AsJpeg2000(b, false));
  }
  ASSERT_EQ(DcmXfer(EXS_JPEG2000LosslessOnly).getXferID(), std::string("1.2.840.10008.1.2.4.90"));
  ASSERT_NE(lossless[0].find("1.2.840.10008.1.2.4.90"), std::string::npos);
  ASSERT_NE(lossy[0].find("1.2.840.10008.1.2.4.91"), std::string::npos);
  absl::StatusOr<std::vector<DicomSeries>> exact = DecodeDicomSeries(Files(lossless));
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ((*exact)[0].volume.voxels, expected);
  ExpectSameWorldImage((*exact)[0].volume);

  // Lossy on noise says little; on a smooth image (as MR is, mostly) irreversible 10:1 must
  // stay close to the same codestream decoded losslessly.
  std::vector<int32_t> smooth(32 * 24);
  for (int y = 0; y < 24; ++y) {
    for (int x = 0; x < 32; ++x) {
      smooth[y * 32 + x] = static_cast<int32_t>(1000 + 20 * x + 30 * y +
                                                200 * std::sin(x / 3.0) * std::cos(y / 4.0));
    }
  }
  std::vector<std::string> smooth_exact, smooth_lossy;
  for (const std::string& b : plain) {
    smooth_exact.push_back(AsJpeg2000(b, true, EncodeJ2k(smooth, 32, 24, true)));
    smooth_lossy.push_back(AsJpeg2000(b, false, EncodeJ2k(smooth, 32, 24, false)));
  }
  absl::StatusOr<std::vector<DicomSeries>> reference = DecodeDicomSeries(Files(smooth_exact));
  absl::StatusOr<std::vector<DicomSeries>> close = DecodeDicomSeries(Files(smooth_lossy));
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_TRUE(close.ok()) << close.status();
  const std::vector<float>& want = (*reference)[0].volume.voxels;
  const std::vector<float>& got = (*close)[0].volume.voxels;
  ASSERT_EQ(got.size(), want.size());
  double error = 0, low = want[0], high = want[0];
  for (size_t i = 0; i < got.size(); ++i) {
    error += std::abs(got[i] - want[i]);
    low = std::min<double>(low, want[i]);
    high = std::max<double>(high, want[i]);
  }
  error /= static_cast<double>(got.size());
  EXPECT_LT(error, 0.05 * (high - low)) << "mean absolute error " << error;  // 1.7% seen

  // Damaged, or another size than the frame: named errors, nothing decoded.
  std::vector<std::string> broken = lossless;
  broken[2] = AsJpeg2000(plain[2], true, EncodeJ2k(std::vector<int32_t>(100, 0), 10, 10, true));
  absl::Status status = DecodeDicomSeries(Files(broken)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("'f2.dcm'"));
  EXPECT_THAT(status.message(),
              HasSubstr("JPEG 2000: the codestream is 10x10, the DICOM frame 32x24"));
  std::string cut = EncodeJ2k(std::vector<int32_t>(32 * 24, 7), 32, 24, true);
  broken[2] = AsJpeg2000(plain[2], true, cut.substr(0, cut.size() / 3));
  status = DecodeDicomSeries(Files(broken)).status();
  EXPECT_THAT(status.message(), HasSubstr("JPEG 2000"));
  broken[2] = AsJpeg2000(plain[2], true, "not a codestream");
  EXPECT_THAT(DecodeDicomSeries(Files(broken)).status().message(),
              HasSubstr("JPEG 2000: no codestream"));
}

TEST_F(DicomTest, EnhancedMultiFrameReadsLikeTheSingleFrameSeries) {
  const std::vector<std::string> plain = Write("AX FLAIR");
  const DicomSeries expected = (*DecodeDicomSeries(Files(plain)))[0];
  // Frames out of slice order; frame f rescaled by its own slope (1 or 2).
  const std::vector<int> order = {3, 0, 5, 1, 4, 2};
  const std::vector<double> slopes = {2, 1, 2, 1, 2, 1};
  const std::string enhanced = AsEnhanced(plain, order, "1", slopes);
  absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files({enhanced}));
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->size(), 1u);
  const DicomSeries& got = (*series)[0];
  EXPECT_TRUE(got.volume.geometry.SameGrid(expected.volume.geometry));
  EXPECT_EQ(got.volume.voxels, expected.volume.voxels);
  ExpectSameWorldImage(got.volume);
  // Slice k is the frame that holds the file slice k was read from in the single-frame series.
  ASSERT_EQ(got.frame_numbers.size(), 6u);
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ(got.instance_uids[k], got.instance_uids[0]);
    EXPECT_EQ(order[got.frame_numbers[k] - 1], expected.file_index[k]) << k;
  }
  // The SEG references each slice's frame.
  LabelVolume labels{got.volume.geometry, std::vector<uint8_t>(got.volume.voxels.size(), 0)};
  labels.labels[3 * 32 * 24 + 50] = 2;
  absl::StatusOr<std::string> seg = EncodeDicomSeg(labels, *series, {});
  ASSERT_TRUE(seg.ok()) << seg.status();
  DcmFileFormat file;
  ASSERT_TRUE(WriteFileBytes(dir_ / "seg.dcm", *seg).ok());
  ASSERT_TRUE(file.loadFile((dir_ / "seg.dcm").c_str()).good());
  DcmStack found;
  ASSERT_EQ(file.getDataset()->search(DCM_ReferencedFrameNumber, found, ESM_fromHere, OFTrue),
            EC_Normal);
  Sint32 frame = 0;
  static_cast<DcmElement*>(found.top())->getSint32(frame);
  EXPECT_EQ(order[frame - 1], expected.file_index[3]);

  // A second stack in the same series (two frames): set aside, the larger stack used.
  std::vector<std::string> two = {enhanced, AsEnhanced(plain, {0, 1}, "2")};
  two[1] = Edit(two[1], [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_SOPInstanceUID, NewDicomUid().c_str());
  });
  series = DecodeDicomSeries(Files(two));
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->size(), 2u);
  EXPECT_EQ((*series)[0].volume.voxels, expected.volume.voxels);
  EXPECT_THAT((*series)[1].unusable,
              HasSubstr("stack 2 of a series with several; stack 1 (6 slices) is used"));
  EXPECT_THAT(SetAsideNotes(*series, {0, 0, 0, 0}).back(), HasSubstr("stack 2"));

  // The same frames as one JPEG 2000 fragment each.
  absl::StatusOr<std::vector<DicomSeries>> compressed =
      DecodeDicomSeries(Files({FramesAsJpeg2000(enhanced)}));
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  EXPECT_EQ((*compressed)[0].volume.voxels, expected.volume.voxels);

  // The memory estimate reads the frames from the header, before any decoding.
  absl::StatusOr<DicomImageSize> size = PeekDicomImageSize(enhanced);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->rows, 24);
  EXPECT_EQ(size->columns, 32);
  EXPECT_EQ(size->frames, 6);
  size = PeekDicomImageSize(AsJpeg2000(plain[0], false));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->rows * size->columns * size->frames, 24 * 32);

  // Frames the per-frame groups do not describe are named errors.
  const std::string short_groups =
      Edit(enhanced, [](DcmDataset* ds) { ds->putAndInsertString(DCM_NumberOfFrames, "7"); });
  EXPECT_THAT(DecodeDicomSeries(Files({short_groups})).status().message(),
              HasSubstr("'f0.dcm': PerFrameFunctionalGroupsSequence has no item for frame 7"));
  const std::string no_position = Edit(enhanced, [](DcmDataset* ds) {
    DcmItem* per = nullptr;
    ds->findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, per, 2);
    delete per->remove(DCM_PlanePositionSequence);
  });
  EXPECT_THAT(DecodeDicomSeries(Files({no_position})).status().message(),
              HasSubstr("frame 3: missing or short ImagePositionPatient"));
}

TEST_F(DicomTest, FailureReportIsATextSrInTheSourceStudy) {
  const std::string source = Write("AX FLAIR")[0];
  FailureReportOptions options;
  options.reason = "INVALID_ARGUMENT: t1: slice gap between instances 15 and 17";
  options.algorithm_version = "danet test, bundle phantom-compact";
  absl::StatusOr<std::string> report = EncodeFailureReport(source, options);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->substr(128, 4), "DICM");

  DcmFileFormat in, out;
  const std::filesystem::path path = dir_ / "report.dcm";
  ASSERT_TRUE(WriteFileBytes(dir_ / "source.dcm", source).ok());
  ASSERT_TRUE(WriteFileBytes(path, *report).ok());
  ASSERT_TRUE(in.loadFile((dir_ / "source.dcm").c_str()).good());
  ASSERT_TRUE(out.loadFile(path.c_str()).good());
  auto get = [](DcmFileFormat& f, const DcmTagKey& tag) {
    OFString value;
    f.getDataset()->findAndGetOFStringArray(tag, value);
    return std::string(value.c_str());
  };
  EXPECT_EQ(get(out, DCM_SOPClassUID), UID_BasicTextSRStorage);
  EXPECT_EQ(get(out, DCM_Modality), "SR");
  for (const DcmTagKey& tag : {DCM_StudyInstanceUID, DCM_PatientID, DCM_PatientName}) {
    EXPECT_EQ(get(out, tag), get(in, tag)) << DcmTag(tag).getTagName();
  }
  EXPECT_FALSE(get(out, DCM_SeriesInstanceUID).empty());
  EXPECT_NE(get(out, DCM_SeriesInstanceUID), get(in, DCM_SeriesInstanceUID));
  EXPECT_EQ(get(out, DCM_SeriesNumber), "902");
  // The reason is in the document's text items.
  std::string texts;
  DcmStack found;
  if (out.getDataset()->search(DCM_TextValue, found, ESM_fromHere, OFTrue) == EC_Normal) {
    do {
      OFString value;
      static_cast<DcmElement*>(found.top())->getOFStringArray(value);
      texts += value.c_str();
    } while (out.getDataset()->search(DCM_TextValue, found, ESM_afterStackTop, OFTrue) ==
             EC_Normal);
  }
  EXPECT_THAT(texts, HasSubstr("failed"));
  EXPECT_THAT(texts, HasSubstr(options.reason));
  EXPECT_THAT(texts, HasSubstr("not for diagnosis"));

  // A non-ASCII name keeps its character set.
  const std::string utf8 = Edit(source, [](DcmDataset* d) {
    d->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    d->putAndInsertString(DCM_PatientName, "M\xc3\xbcller^J\xc3\xbcrgen");
  });
  absl::StatusOr<std::string> named = EncodeFailureReport(utf8, options);
  ASSERT_TRUE(named.ok()) << named.status();
  DcmFileFormat with_charset;
  ASSERT_TRUE(WriteFileBytes(dir_ / "named.dcm", *named).ok());
  ASSERT_TRUE(with_charset.loadFile((dir_ / "named.dcm").c_str()).good());
  EXPECT_EQ(get(with_charset, DCM_SpecificCharacterSet), "ISO_IR 192");
  EXPECT_EQ(get(with_charset, DCM_PatientName), "M\xc3\xbcller^J\xc3\xbcrgen");

  EXPECT_EQ(EncodeFailureReport("not dicom", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string no_study =
      Edit(source, [](DcmDataset* d) { d->findAndDeleteElement(DCM_StudyInstanceUID); });
  EXPECT_THAT(EncodeFailureReport(no_study, options).status().message(),
              HasSubstr("StudyInstanceUID"));
}

TEST(SeriesRulesTest, SiteRulesComeFirstAndTheDefaultsStillApply) {
  ASSERT_GT(SeriesRules::Defaults().size(), 5u);
  absl::StatusOr<SeriesRules> site = SeriesRules::Parse(
      R"pb(
        rule { name: "our scanner's FLAIR" modality: "flair" all: "~seq_a" }
        rule { name: "old protocol, not used" modality: "none" all: "t2*" all: "old" }
        rule { name: "research T1 after contrast" modality: "t1ce" all: "~vibe" none: "sub" }
      )pb",
      "site.pbtxt");
  ASSERT_TRUE(site.ok()) << site.status();
  const std::vector<const SeriesRules*> chain = {&*site};
  EXPECT_EQ(ModalityByRules({"SEQ_A"}, chain), "flair");
  EXPECT_EQ(ModalityByRules({"SEQ_A"}, {}), "");
  EXPECT_EQ(ModalityByRules({"AX T2 OLD"}, chain), "");
  EXPECT_EQ(ModalityByRules({"AX T2 OLD"}, {}), "t2");
  EXPECT_EQ(ModalityByRules({"ax vibe 3d"}, chain), "t1ce");
  EXPECT_EQ(ModalityByRules({"ax vibe sub"}, chain), "t1");  // `none` blocks; defaults: vibe
  EXPECT_EQ(ModalityByRules({"t2_tse_tra"}, chain), "t2");   // no site rule: the defaults
}

TEST(SeriesRulesTest, SequenceAttributesDecideWhereTheNameDoesNot) {
  // A T2 inversion recovery is a FLAIR with a long TI (about 2000-2500 ms), not a STIR (150).
  EXPECT_EQ(ModalityByRules({"AX T2 IR", 2200, false}, {}), "flair");
  EXPECT_EQ(ModalityByRules({"AX T2 IR", 150, false}, {}), "t2");
  EXPECT_EQ(ModalityByRules({"AX T2 IR", -1, false}, {}), "t2");
  // ContrastBolusAgent makes a T1 the t1ce, whatever its name says.
  EXPECT_EQ(ModalityByRules({"AX T1 SE", -1, true}, {}), "t1ce");
  EXPECT_EQ(ModalityByRules({"AX T1 SE", -1, false}, {}), "t1");
  EXPECT_EQ(ModalityByRules({"AX T1 SE PRE", -1, true}, {}), "t1");  // the agent of the exam
  absl::StatusOr<SeriesRules> ti =
      SeriesRules::Parse("rule { modality: 't2' all: '@ti<300' all: 'stir' }", "x");
  ASSERT_TRUE(ti.ok()) << ti.status();
  EXPECT_EQ(ti->Match({"AX STIR", 160, false}), "t2");
  EXPECT_EQ(ti->Match({"AX STIR", -1, false}), std::nullopt);  // absent TI matches nothing
}

TEST(SeriesRulesTest, BadRulesAreNamedErrors) {
  struct Case {
    std::string text, message;
  };
  for (const Case& c : std::vector<Case>{
           {"rule { modality: 'pd' all: 'x' }", "rule 1 (''): modality 'pd' is not flair"},
           {"rule { name: 'empty' modality: 't2' }", "rule 1 ('empty'): no `all` entry"},
           {"rule { modality: 't2' all: 'x' }\nrule { modality: 't2' all: '@tr>=5' }",
            "rule 2 (''): token '@tr>=5' is not @contrast"},
           {"rule { modality: 't2' all: '~' }", "token '~' has no text"},
           {"rule { modality: 't2' all: ' ' }", "an empty entry"},
           {"rule { modality: 'flair' all: 't2w_flair' }",
            "token 't2w_flair' holds a word separator: write '~t2w_flair'"},
           {"rule { modality: 't2'\n  al: 'x' }",
            "site.pbtxt: line 2, column 5: Message type \"danet.v1.SeriesRule\" has no field named "
            "\"al\""},
           {"rule { modality: 't2' all: 'x' ", "site.pbtxt: line 1"},
       }) {
    absl::StatusOr<SeriesRules> rules = SeriesRules::Parse(c.text, "site.pbtxt");
    EXPECT_EQ(rules.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(rules.status().message(), HasSubstr(c.message)) << c.text;
  }
}

TEST_F(DicomTest, SeriesRulesAssignSeriesTheDefaultsDoNotKnow) {
  std::vector<std::string> bytes;
  int n = 0;
  for (const char* name : {"SEQ 1", "SEQ 2", "SEQ 3", "SEQ 4"}) {
    DicomWriteOptions options;
    options.series_number = ++n;
    for (std::string& b : Write(name, options)) bytes.push_back(std::move(b));
  }
  absl::StatusOr<std::vector<DicomSeries>> series = DecodeDicomSeries(Files(bytes));
  ASSERT_TRUE(series.ok()) << series.status();
  absl::Status refused = AssignModalities(*series, {}).status();
  EXPECT_THAT(refused.message(), HasSubstr("no series for modality 'flair' by the series rules"));
  EXPECT_THAT(refused.message(), HasSubstr("'SEQ 3'"));
  absl::StatusOr<SeriesRules> site = SeriesRules::Parse(R"pb(
                                                          rule { modality: "flair" all: "1" }
                                                          rule { modality: "t1ce" all: "2" }
                                                          rule { modality: "t1" all: "3" }
                                                          rule { modality: "t2" all: "4" }
                                                        )pb",
                                                        "site.pbtxt");
  ASSERT_TRUE(site.ok()) << site.status();
  absl::StatusOr<std::array<int, kNumModalities>> assigned =
      AssignModalities(*series, {}, {&*site});
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  for (int m = 0; m < kNumModalities; ++m) {
    EXPECT_EQ((*series)[(*assigned)[m]].description, absl::StrCat("SEQ ", m + 1));
  }
}

}  // namespace
}  // namespace danet::volume
