// NIfTI decoding and encoding: round trips keep voxels and geometry; every kind of bad file is
// a clear InvalidArgument, never a crash.
#include "models/volume/nifti.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "models/volume/gzip.h"

namespace danet::volume {
namespace {

using ::testing::HasSubstr;

// An oblique grid with qfac -1 and distinct qform and sform, so that nothing is trivially 0.
Geometry ObliqueGeometry(int version) {
  Geometry g = MakeGeometry({5, 4, 3}, {0.9, 1.1, 2.5}, {-10, 20, 5});
  g.nifti_version = version;
  g.quatern = {0.1, -0.2, 0.05};
  g.qfac = -1;
  g.srow[0] = {0.9, 0.01, 0, -10};
  g.srow[1] = {0.02, 1.1, 0.1, 20};
  g.srow[2] = {0, -0.03, 2.5, 5};
  g.qform_code = 1;
  g.sform_code = 2;
  return g;
}

LabelVolume SampleLabels(int version) {
  LabelVolume labels{ObliqueGeometry(version), std::vector<uint8_t>(60)};
  for (size_t i = 0; i < labels.labels.size(); ++i) labels.labels[i] = (i * 7) % 5;
  return labels;
}

void ExpectSameGeometry(const Geometry& a, const Geometry& b) {
  EXPECT_EQ(a.dims, b.dims);
  EXPECT_EQ(a.nifti_version, b.nifti_version);
  EXPECT_EQ(a.qform_code, b.qform_code);
  EXPECT_EQ(a.sform_code, b.sform_code);
  EXPECT_EQ(a.qfac, b.qfac);
  EXPECT_TRUE(a.SameGrid(b, 1e-5));
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(a.spacing[i], b.spacing[i], 1e-6);
    EXPECT_NEAR(a.quatern[i], b.quatern[i], 1e-6);
  }
}

// A raw NIfTI-1 file of float voxels, to patch header fields in.
std::string RawNifti1(const std::vector<float>& voxels) {
  Volume v{MakeGeometry({4, 3, 2}, {1, 1, 1}, {0, 0, 0}), voxels};
  return *EncodeNiftiImage(v, ImageStorage::kFloat32, /*gzip=*/false);
}

template <typename T>
void Patch(std::string& bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

absl::Status DecodeStatus(std::string_view bytes) {
  return DecodeNifti(bytes, "case_t1.nii").status();
}

TEST(NiftiTest, LabelsRoundTripInBothVersionsWithAndWithoutGzip) {
  for (int version : {1, 2}) {
    for (bool gzip : {false, true}) {
      const LabelVolume labels = SampleLabels(version);
      absl::StatusOr<std::string> bytes = EncodeNiftiLabels(labels, gzip);
      ASSERT_TRUE(bytes.ok());
      EXPECT_EQ(IsGzip(*bytes), gzip);
      absl::StatusOr<LabelVolume> back = DecodeNiftiLabels(*bytes, "seg.nii");
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(back->labels, labels.labels);
      ExpectSameGeometry(back->geometry, labels.geometry);
    }
  }
}

TEST(NiftiTest, ImagesRoundTripAsFloatOrRoundedInt16) {
  Volume image{ObliqueGeometry(1), std::vector<float>(60)};
  for (size_t i = 0; i < image.voxels.size(); ++i) image.voxels[i] = 0.5f + 123.25f * i;
  absl::StatusOr<Volume> f32 =
      DecodeNifti(*EncodeNiftiImage(image, ImageStorage::kFloat32, true), "x.nii.gz");
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->voxels, image.voxels);
  absl::StatusOr<Volume> i16 =
      DecodeNifti(*EncodeNiftiImage(image, ImageStorage::kInt16, false), "x.nii");
  ASSERT_TRUE(i16.ok()) << i16.status();
  for (size_t i = 0; i < image.voxels.size(); ++i) {
    EXPECT_EQ(i16->voxels[i], std::round(std::min(image.voxels[i], 32767.0f)));
  }
}

TEST(NiftiTest, QformWithoutSformGivesTheQuaternionMatrix) {
  Geometry g = MakeGeometry({2, 2, 2}, {2, 3, 4}, {1, 2, 3});
  g.sform_code = 0;
  const Matrix4 m = g.VoxelToWorld();
  EXPECT_DOUBLE_EQ(m[0][0], 2);
  EXPECT_DOUBLE_EQ(m[1][1], 3);
  EXPECT_DOUBLE_EQ(m[2][2], 4);
  EXPECT_DOUBLE_EQ(m[2][3], 3);
  g.qfac = -1;
  EXPECT_DOUBLE_EQ(g.VoxelToWorld()[2][2], -4);
}

TEST(NiftiTest, ScalingIsApplied) {
  std::string bytes = RawNifti1(std::vector<float>(24, 2.0f));
  Patch<float>(bytes, 112, 3.0f);  // scl_slope
  Patch<float>(bytes, 116, 1.0f);  // scl_inter
  absl::StatusOr<Volume> v = DecodeNifti(bytes, "x.nii");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->voxels[0], 7.0f);
}

TEST(NiftiTest, NotNifti) {
  EXPECT_THAT(DecodeStatus("").message(), HasSubstr("too short"));
  const absl::Status status = DecodeStatus(std::string(400, 'x'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("case_t1.nii: not a NIfTI file: header size field"));
}

TEST(NiftiTest, WrongHeaderSize) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int32_t>(bytes, 0, 352);
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("header size field is 352"));
}

TEST(NiftiTest, TwoFileNiftiIsRefusedByName) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  std::memcpy(bytes.data() + 344, "ni1", 4);
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr(".hdr/.img"));
}

TEST(NiftiTest, ZeroAbsurdAndFourDimensionalDims) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int16_t>(bytes, 42, 0);  // dim[1]
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("dim[1] = 0 is outside 1..1024"));
  Patch<int16_t>(bytes, 42, 30000);
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("dim[1] = 30000"));
  bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int16_t>(bytes, 40, 4);  // dim[0]
  Patch<int16_t>(bytes, 48, 3);  // dim[4]
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("one 3-D volume per file"));
  Patch<int16_t>(bytes, 40, 2);
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("2 dimensions"));
}

TEST(NiftiTest, BadSpacing) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<float>(bytes, 84, 0.0f);  // pixdim[2]
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("pixdim[2]"));
}

// Found by nifti_fuzz (docs/reliability.md): a NIfTI-1 vox_offset (a float) beyond int64 or NaN
// was cast to an integer, which is undefined behaviour; it is refused by name instead.
TEST(NiftiTest, VoxOffsetOutOfRangeOrNaN) {
  for (const float offset : {-3.12604e37f, 3.0e30f, std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity()}) {
    std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
    Patch<float>(bytes, 108, offset);  // vox_offset
    EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("vox_offset")) << offset;
  }
}

// Found by upload_fuzz in CI: a NaN or singular sform reached resampling, where a NaN source
// index was cast to an integer. The transform in use is checked when the file is read.
TEST(NiftiTest, NanOrSingularWorldTransformIsRefused) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<float>(bytes, 280, nan);  // srow_x[0]
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("sform holds a NaN"));

  bytes = RawNifti1(std::vector<float>(24, 1.0f));
  for (size_t row : {280, 296, 312}) Patch<float>(bytes, row, 0.0f);  // first column zero
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("sform is singular"));

  bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int16_t>(bytes, 254, 0);  // sform_code: the qform is used
  Patch<float>(bytes, 256, nan);  // quatern_b
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("qform holds a NaN"));

  bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int16_t>(bytes, 252, 0);  // neither transform: NIfTI's method 1, no check needed
  Patch<int16_t>(bytes, 254, 0);
  Patch<float>(bytes, 280, nan);
  EXPECT_TRUE(DecodeNifti(bytes, "x.nii", {}).ok());
}

TEST(NiftiTest, UnsupportedDatatype) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<int16_t>(bytes, 70, 32);  // DT_COMPLEX64
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("unsupported datatype 32"));
  Patch<int16_t>(bytes, 70, 128);  // DT_RGB24
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("unsupported datatype 128"));
}

TEST(NiftiTest, TruncatedVoxelData) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  bytes.resize(bytes.size() - 10);
  EXPECT_THAT(DecodeStatus(bytes).message(),
              HasSubstr("truncated: 96 bytes of voxel data expected, 86 present"));
}

TEST(NiftiTest, VoxOffsetInsideHeader) {
  std::string bytes = RawNifti1(std::vector<float>(24, 1.0f));
  Patch<float>(bytes, 108, 100.0f);
  EXPECT_THAT(DecodeStatus(bytes).message(), HasSubstr("vox_offset 100"));
}

TEST(NiftiTest, NanAndInfVoxels) {
  std::vector<float> voxels(24, 1.0f);
  voxels[3] = std::numeric_limits<float>::quiet_NaN();
  voxels[7] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(DecodeStatus(RawNifti1(voxels)).message(),
              HasSubstr("contains 2 NaN or infinite voxels"));
}

TEST(NiftiTest, TruncatedAndCorruptGzip) {
  const std::string gz = *Gzip(RawNifti1(std::vector<float>(24, 1.0f)));
  EXPECT_THAT(DecodeStatus(gz.substr(0, gz.size() / 2)).message(),
              HasSubstr("truncated gzip stream"));
  std::string corrupt = gz;
  for (size_t i = 12; i < corrupt.size() - 8; ++i)
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  EXPECT_THAT(DecodeStatus(corrupt).message(), HasSubstr("gzip"));
}

TEST(NiftiTest, GzipBombIsBounded) {
  const std::string zeros(64 * 1024 * 1024, '\0');
  const std::string gz = *Gzip(zeros);
  absl::StatusOr<std::string> out = Gunzip(gz, 1024 * 1024);
  EXPECT_THAT(out.status().message(), HasSubstr("inflates to more than 1048576 bytes"));
}

// Raw deflate (DICOM's deflated transfer syntax): a gzip stream's body between its 10-byte header
// and its 8-byte trailer; bounded and with errors as Gunzip's, named "deflate".
TEST(NiftiTest, RawDeflateInflatesBoundedWithNamedErrors) {
  std::string data(100'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 17);
  const std::string gz = *Gzip(data);
  const std::string raw = gz.substr(10, gz.size() - 18);
  absl::StatusOr<std::string> out = InflateRaw(raw, 1 << 20);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, data);
  EXPECT_THAT(InflateRaw(raw, 50'000).status().message(),
              HasSubstr("deflate data inflates to more than 50000 bytes"));
  EXPECT_THAT(InflateRaw(raw.substr(0, raw.size() / 2), 1 << 20).status().message(),
              HasSubstr("truncated deflate stream"));
  EXPECT_FALSE(InflateRaw(gz, 1 << 20).ok());  // a gzip header is not raw deflate data
}

TEST(NiftiTest, GunzipWritesItsOutputIntoOneBufferOfTheTrailersSize) {
  std::string data(3'000'001, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  absl::StatusOr<std::string> out = Gunzip(*Gzip(data), 64 * 1024 * 1024);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, data);
  // Reserved once from the trailer, not grown by doubling (which leaves capacity to spare).
  EXPECT_EQ(out->capacity(), data.size());
  // A forged trailer reserves no more than the bound and is caught by zlib's length check.
  std::string forged = *Gzip(std::string(1000, 'x'));
  forged[forged.size() - 1] = static_cast<char>(0x7f);
  EXPECT_THAT(Gunzip(forged, 1024 * 1024).status().message(), HasSubstr("gzip"));
}

TEST(NiftiTest, GunzipReadsTheFirstMemberWhateverTheLastTrailerSays) {
  // The trailer's size hint comes from the last member: larger than the first member's output
  // (libdeflate inflates the first member into a buffer too big, cut to size) or smaller (it
  // does not fit, and zlib's streaming inflate reads it). Both read the first member only.
  const std::string first(200'000, 'a');
  for (const size_t second_size : {size_t{10}, size_t{900'000}}) {
    const std::string gz = *Gzip(first) + *Gzip(std::string(second_size, 'b'));
    absl::StatusOr<std::string> out = Gunzip(gz, 64 * 1024 * 1024);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, first) << "second member of " << second_size << " bytes";
  }
  // A trailer whose size is wrong but within the bound fails zlib's length check too.
  std::string wrong = *Gzip(first);
  wrong[wrong.size() - 4] = static_cast<char>(wrong[wrong.size() - 4] ^ 1);
  EXPECT_THAT(Gunzip(wrong, 64 * 1024 * 1024).status().message(), HasSubstr("gzip"));
}

TEST(NiftiTest, LabelsMustBeSmallIntegers) {
  std::vector<float> voxels(24, 1.0f);
  voxels[5] = 2.5f;
  absl::StatusOr<LabelVolume> labels = DecodeNiftiLabels(RawNifti1(voxels), "x_seg.nii");
  EXPECT_THAT(labels.status().message(), HasSubstr("label value 2.5"));
}

TEST(NiftiTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadNifti("/nonexistent/x.nii.gz").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace danet::volume
