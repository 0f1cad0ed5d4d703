// An upload without gRPC: the header checked against the modalities and limits, chunks
// assembled in order (every misordering named), and the files decoded in modality order.
#include "server/core/upload.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "models/dicom/dicom.h"
#include "models/volume/nifti.h"

namespace danet::service {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kBrats = {"flair", "t1ce", "t1", "t2"};

// A x-by-16-by-2 image, voxel i = value + i % 7 (gzip NIfTI bytes).
std::string NiftiBytes(float value, int64_t x = 16) {
  volume::Volume v;
  v.geometry = volume::MakeGeometry({x, 16, 2}, {1, 1, 1}, {0, 0, 0});
  for (int64_t i = 0; i < v.geometry.NumVoxels(); ++i) v.voxels.push_back(value + i % 7);
  return *volume::EncodeNiftiImage(v, volume::ImageStorage::kFloat32, /*gzip=*/true);
}

// A NIfTI header naming one file per entry of `modalities`, with the given sizes.
v1::Header NiftiHeader(const std::vector<std::string>& modalities,
                       const std::vector<std::string>& files) {
  v1::Header h;
  h.set_request_id("r");
  h.set_input_kind(v1::INPUT_KIND_NIFTI);
  h.add_outputs(v1::OUTPUT_KIND_LABELMAP_NIFTI);
  for (size_t i = 0; i < modalities.size(); ++i) {
    v1::InputFile* f = h.add_files();
    f->set_name("dir/case_" + modalities[i] + ".nii.gz");
    f->set_modality(modalities[i]);
    f->set_size(i < files.size() ? files[i].size() : 0);
  }
  return h;
}

v1::Chunk MakeChunk(uint32_t file, uint64_t offset, std::string data, bool last) {
  v1::Chunk c;
  c.set_file_index(file);
  c.set_offset(offset);
  c.set_data(std::move(data));
  c.set_last(last);
  return c;
}

// Sends every file in chunks of `step` bytes, in header order.
absl::Status SendAll(Upload* upload, const std::vector<std::string>& files, size_t step = 100) {
  for (size_t i = 0; i < files.size(); ++i) {
    for (size_t off = 0; off < files[i].size(); off += step) {
      absl::Status s =
          upload->Add(MakeChunk(static_cast<uint32_t>(i), off, files[i].substr(off, step),
                                off + step >= files[i].size()));
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

TEST(ClientTextTest, KeepsPrintableAsciiAndEscapesTheRest) {
  EXPECT_EQ(ClientText("case_01 flair.nii.gz"), "case_01 flair.nii.gz");
  EXPECT_EQ(ClientText("a\\b"), "a\\\\b");
  EXPECT_EQ(ClientText("a\nb\x1b[2J"), "a\\x0ab\\x1b[2J");
  EXPECT_EQ(ClientText("\xc3\xa9"), "\\xc3\\xa9");  // not ASCII: escaped bytes
}

TEST(ClientTextTest, LongTextIsCutBetweenEscapesWithinTheLimit) {
  const std::string cut = ClientText(std::string(100, 'x'), 10);
  EXPECT_EQ(cut, "xxxxxxx...");
  const std::string escaped = ClientText(std::string(20, '\n'), 10);
  EXPECT_LE(escaped.size(), 10u);
  EXPECT_THAT(escaped, ::testing::StartsWith("\\x0a"));
  EXPECT_THAT(escaped, ::testing::EndsWith("..."));
  EXPECT_EQ(ClientText("exactly10!", 10), "exactly10!");
}

TEST(UploadTest, HeaderErrorsNameTheField) {
  const UploadLimits limits;
  struct Bad {
    const char* name;
    std::function<void(v1::Header*)> mutate;
    absl::StatusCode code;
    const char* message;
  };
  const std::vector<Bad> cases = {
      {"no input kind", [](v1::Header* h) { h->clear_input_kind(); },
       absl::StatusCode::kInvalidArgument, "header.input_kind"},
      {"SEG from NIfTI", [](v1::Header* h) { h->add_outputs(v1::OUTPUT_KIND_DICOM_SEG); },
       absl::StatusCode::kInvalidArgument, "a DICOM SEG needs DICOM input"},
      {"unknown output", [](v1::Header* h) { h->add_outputs(static_cast<v1::OutputKind>(77)); },
       absl::StatusCode::kInvalidArgument, "unsupported output kind 77"},
      {"long policy", [](v1::Header* h) { h->set_policy(std::string(kMaxPolicyChars + 1, 'd')); },
       absl::StatusCode::kInvalidArgument, "header.policy: 129 characters"},
      {"unknown modality", [](v1::Header* h) { h->mutable_files(2)->set_modality("pd"); },
       absl::StatusCode::kInvalidArgument,
       "header.files[2] 'case_t1.nii.gz': modality 'pd' is not one of flair, t1ce, t1, t2"},
      {"repeated modality", [](v1::Header* h) { h->mutable_files(3)->set_modality("t1"); },
       absl::StatusCode::kInvalidArgument, "modality 't1' repeats files[2] 'case_t1.nii.gz'"},
      {"missing modality", [](v1::Header* h) { h->mutable_files()->RemoveLast(); },
       absl::StatusCode::kInvalidArgument, "header.files: no file for modality 't2'"},
      {"declared too big", [](v1::Header* h) { h->mutable_files(0)->set_size(2LL << 30); },
       absl::StatusCode::kResourceExhausted, "over this server's upload limit"},
  };
  for (const Bad& bad : cases) {
    v1::Header header = NiftiHeader(kBrats, {});
    bad.mutate(&header);
    absl::StatusOr<std::unique_ptr<Upload>> upload = Upload::Create(header, kBrats, limits);
    EXPECT_EQ(upload.status().code(), bad.code) << bad.name << ": " << upload.status();
    EXPECT_THAT(upload.status().message(), HasSubstr(bad.message)) << bad.name;
  }
}

TEST(UploadTest, DicomHeadersNeedInstancesAndKnownSeriesModalities) {
  v1::Header header;
  header.set_input_kind(v1::INPUT_KIND_DICOM);
  EXPECT_THAT(Upload::Create(header, kBrats, {}).status().message(),
              HasSubstr("header.files: no DICOM instances"));
  header.add_files()->set_name("IM0001");
  (*header.mutable_series_modalities())["1.2.3"] = "dwi";
  EXPECT_THAT(Upload::Create(header, kBrats, {}).status().message(),
              HasSubstr("header.series_modalities['1.2.3']: 'dwi' is not flair, t1ce, t1 or t2"));
  (*header.mutable_series_modalities())["1.2.3"] = "t2";
  header.add_outputs(v1::OUTPUT_KIND_DICOM_SEG);
  EXPECT_TRUE(Upload::Create(header, kBrats, {}).ok());
  // Series rules are checked at the header, before any upload, and escaped when echoed.
  header.set_series_rules("rule { modality: 'flair' all: 'seq_a' }");
  EXPECT_THAT(Upload::Create(header, kBrats, {}).status().message(),
              HasSubstr("header.series_rules: rule 1 (''): token 'seq_a' holds a word "
                        "separator"));
  header.set_series_rules("rule { \x1b[31m }");
  absl::Status status = Upload::Create(header, kBrats, {}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("header.series_rules: line 1, column"));
  EXPECT_EQ(status.message().find('\x1b'), std::string::npos) << status.message();
  header.set_series_rules(std::string(kMaxSeriesRulesBytes + 1, ' '));
  EXPECT_THAT(Upload::Create(header, kBrats, {}).status().message(),
              HasSubstr("header.series_rules: 65537 bytes, more than 65536"));
  header.set_series_rules("rule { modality: 'flair' all: '~seq_a' }");
  EXPECT_TRUE(Upload::Create(header, kBrats, {}).ok());
}

TEST(UploadTest, AssemblesChunksAndDecodesInModalityOrder) {
  // The header lists the files in another order than flair, t1ce, t1, t2.
  const std::vector<std::string> order = {"t2", "flair", "t1", "t1ce"};
  std::vector<std::string> files;
  for (const std::string& m : order) files.push_back(NiftiBytes(1.0f + volume::ModalityIndex(m)));
  absl::StatusOr<std::unique_ptr<Upload>> upload =
      Upload::Create(NiftiHeader(order, files), kBrats, {});
  ASSERT_TRUE(upload.ok()) << upload.status();
  EXPECT_FALSE((*upload)->complete());
  ASSERT_TRUE(SendAll(upload->get(), files).ok());
  EXPECT_TRUE((*upload)->complete());
  int64_t total = 0;
  for (const std::string& f : files) total += static_cast<int64_t>(f.size());
  EXPECT_EQ((*upload)->bytes_received(), total);
  absl::StatusOr<volume::MultiModalVolume> image = (*upload)->Decode();
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->geometry.dims, (std::array<int64_t, 3>{16, 16, 2}));
  for (int m = 0; m < volume::kNumModalities; ++m) {
    EXPECT_EQ(image->channels[m].front(), 1.0f + m) << volume::kModalities[m];
  }
}

TEST(UploadTest, ChunkErrorsNameTheFile) {
  const std::vector<std::string> files = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3),
                                          NiftiBytes(4)};
  auto fresh = [&] { return *Upload::Create(NiftiHeader(kBrats, files), kBrats, {}); };
  {
    auto upload = fresh();
    EXPECT_THAT(upload->Add(MakeChunk(1, 0, "x", false)).message(),
                HasSubstr("chunk out of order: got a chunk of files[1] 'case_t1ce.nii.gz' while "
                          "files[0] 'case_flair.nii.gz' is incomplete"));
  }
  {
    auto upload = fresh();
    ASSERT_TRUE(upload->Add(MakeChunk(0, 0, files[0].substr(0, 10), false)).ok());
    EXPECT_THAT(upload->Add(MakeChunk(0, 20, "x", false)).message(),
                HasSubstr("chunk at offset 20, expected 10"));
  }
  {
    auto upload = fresh();
    EXPECT_THAT(upload->Add(MakeChunk(9, 0, "x", false)).message(),
                HasSubstr("chunk.file_index 9 is out of range (4 files in the header)"));
  }
  {
    auto upload = fresh();
    EXPECT_THAT(upload->Add(MakeChunk(0, 0, files[0] + "extra", true)).message(),
                HasSubstr("more than the " + std::to_string(files[0].size()) + " bytes declared"));
  }
  {
    auto upload = fresh();
    EXPECT_THAT(upload->Add(MakeChunk(0, 0, files[0].substr(0, 5), true)).message(),
                HasSubstr("got 5 bytes, the header declared"));
  }
  {
    auto upload = fresh();
    ASSERT_TRUE(SendAll(upload.get(), files).ok());
    EXPECT_THAT(upload->Add(MakeChunk(3, 0, "x", false)).message(),
                HasSubstr("after every file was complete"));
  }
}

TEST(UploadTest, TheWholeUploadIsBoundedAsSent) {
  const std::vector<std::string> files = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3),
                                          NiftiBytes(4)};
  UploadLimits limits;
  limits.max_upload_bytes = static_cast<int64_t>(files[0].size() + files[1].size() / 2);
  v1::Header header = NiftiHeader(kBrats, files);
  for (auto& f : *header.mutable_files()) f.set_size(0);  // undeclared: counted as they arrive
  auto upload = *Upload::Create(header, kBrats, limits);
  const absl::Status s = SendAll(upload.get(), files);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("files[1] 'case_t1ce.nii.gz': the upload passed"));
}

TEST(UploadTest, DecodeErrorsNameTheFileTheClientNamed) {
  std::vector<std::string> files = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3), NiftiBytes(4)};
  files[2][files[2].size() / 2] ^= 0x55;  // breaks t1's gzip stream
  auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, {});
  ASSERT_TRUE(SendAll(upload.get(), files).ok());
  EXPECT_THAT(upload->Decode().status().message(), HasSubstr("files[2] 'case_t1.nii.gz'"));

  // A t2 covering a quarter of the flair's grid (4 of its 16 columns) cannot be resampled.
  std::vector<std::string> odd = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3), NiftiBytes(4, 4)};
  auto mismatched = *Upload::Create(NiftiHeader(kBrats, odd), kBrats, {});
  ASSERT_TRUE(SendAll(mismatched.get(), odd).ok());
  const absl::Status s = mismatched->Decode().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("files[3] 'case_t2.nii.gz' (t2) covers 25%"));
}

TEST(UploadTest, AWiderGridIsResampledOntoTheFlairsWithANote) {
  std::vector<std::string> files = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3), NiftiBytes(4, 32)};
  auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, {});
  ASSERT_TRUE(SendAll(upload.get(), files).ok());
  absl::StatusOr<volume::MultiModalVolume> image = upload->Decode();
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->geometry.dims, (std::array<int64_t, 3>{16, 16, 2}));
  ASSERT_EQ(image->notes.size(), 1u);
  EXPECT_THAT(image->notes[0], HasSubstr("t2 resampled (trilinear) from 32x16x2"));
  // Column 5 of row 0, slice 0: voxel 5 of the flair grid, voxel 5 of the wider t2.
  EXPECT_FLOAT_EQ(image->channels[3][5], 4.0f + 5 % 7);
}

TEST(UploadTest, VolumeLimitsApplyWhenDecoding) {
  const std::vector<std::string> files = {NiftiBytes(1), NiftiBytes(2), NiftiBytes(3),
                                          NiftiBytes(4)};
  UploadLimits limits;
  limits.nifti.max_dim = 8;
  auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, limits);
  ASSERT_TRUE(SendAll(upload.get(), files).ok());
  const absl::Status s = upload->Decode().status();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("case_flair.nii.gz"));
}

TEST(UploadTest, DicomJobEstimateComesFromTheInstancesHeaders) {
  // Four series of 6 slices of 32 x 24 (padded to 32 x 32 for the attention maps): the estimate
  // is the pixels the headers promise, not the bytes sent.
  volume::Volume image;
  volume::Matrix4 m{};
  m[0] = {1, 0, 0, 0};
  m[1] = {0, 1, 0, 0};
  m[2] = {0, 0, 2, 0};
  m[3] = {0, 0, 0, 1};
  image.geometry = volume::GeometryFromAffine({32, 24, 6}, m);
  image.voxels.assign(32 * 24 * 6, 7.0f);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("upload_test_" + std::to_string(::getpid()));
  v1::Header header;
  header.set_input_kind(v1::INPUT_KIND_DICOM);
  std::vector<std::string> files;
  const std::string study = volume::NewDicomUid(), frame = volume::NewDicomUid();
  for (const std::string& m : kBrats) {
    volume::DicomWriteOptions options;
    options.series_description = m;
    options.study_uid = study;
    options.frame_of_reference_uid = frame;
    ASSERT_TRUE(volume::WriteDicomSeries(image, options, dir / m, "IM").ok());
    for (int k = 1; k <= 6; ++k) {
      char name[16];
      std::snprintf(name, sizeof(name), "IM%04d.dcm", k);
      files.push_back(*volume::ReadFileBytes(dir / m / name));
      header.add_files()->set_name(m + "/" + name);
    }
  }
  std::filesystem::remove_all(dir);
  auto upload = *Upload::Create(header, kBrats, {});
  ASSERT_TRUE(SendAll(upload.get(), files, 1 << 20).ok());
  EXPECT_EQ(*upload->EstimateJobBytes(), JobBytes(32 * 24 * 6, 32 * 32));
  ASSERT_TRUE(upload->Decode().ok());
}

TEST(UploadTest, ReservesItsBytesAndTheDecodedVolumeFromTheHeaderInTheMemoryBudget) {
  // 1024 x 16 x 2 = 32768 voxels per modality, each file sent as one chunk.
  const std::vector<std::string> files = {NiftiBytes(1, 1024), NiftiBytes(2, 1024),
                                          NiftiBytes(3, 1024), NiftiBytes(4, 1024)};
  const size_t whole = 1 << 20;
  int64_t sent = 0;
  for (const std::string& f : files) sent += static_cast<int64_t>(f.size());
  const int64_t job = JobBytes(32768, 1024 * 16);
  MemoryBudget budget(sent + job);
  UploadLimits limits;
  limits.memory = &budget;
  {
    auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, limits);
    ASSERT_TRUE(SendAll(upload.get(), files, whole).ok());
    EXPECT_EQ(budget.in_use(), sent);
    EXPECT_EQ(*upload->EstimateJobBytes(), job);
    ASSERT_TRUE(upload->Decode().ok());
    EXPECT_EQ(budget.in_use(), job) << "the raw bytes are released after decoding";
  }
  EXPECT_EQ(budget.in_use(), 0);

  // One byte less: the same case is refused before decoding, and nothing stays reserved.
  MemoryBudget tight(sent + job - 1);
  limits.memory = &tight;
  auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, limits);
  ASSERT_TRUE(SendAll(upload.get(), files, whole).ok());
  const absl::Status s = upload->Decode().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("decoding and segmenting this volume needs"));
  EXPECT_EQ(tight.in_use(), sent);
  upload.reset();
  EXPECT_EQ(tight.in_use(), 0);
}

TEST(UploadTest, BufferingPastTheMemoryBudgetIsRefusedNamingTheFile) {
  const std::vector<std::string> files = {NiftiBytes(1, 1024), NiftiBytes(2, 1024),
                                          NiftiBytes(3, 1024), NiftiBytes(4, 1024)};
  MemoryBudget budget(static_cast<int64_t>(files[0].size() + files[1].size() / 2));
  UploadLimits limits;
  limits.memory = &budget;
  auto upload = *Upload::Create(NiftiHeader(kBrats, files), kBrats, limits);
  const absl::Status s = SendAll(upload.get(), files, 1 << 20);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("files[1] 'case_t1ce.nii.gz': buffering this upload needs"));
  EXPECT_EQ(budget.in_use(), static_cast<int64_t>(files[0].size()));
}

}  // namespace
}  // namespace danet::service
