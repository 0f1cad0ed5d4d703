// The server-wide memory budget: leases grow, shrink and release; refusals say what was needed,
// the budget, and whether waiting can help; an upload reserves its buffered bytes as they
// arrive and its decoded volume from the NIfTI header before decoding.
#include "server/core/memory_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "models/volume/gzip.h"
#include "models/volume/nifti.h"
#include "server/core/upload.h"

namespace danet::service {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = 1 << 20;

TEST(MemoryBudgetTest, LeasesGrowShrinkAndReleaseOnDestruction) {
  MemoryBudget budget(10 * kMiB);
  {
    MemoryLease a(&budget);
    ASSERT_TRUE(a.Resize(4 * kMiB, "a").ok());
    MemoryLease b(&budget);
    ASSERT_TRUE(b.Resize(6 * kMiB, "b").ok());
    EXPECT_EQ(budget.in_use(), 10 * kMiB);
    ASSERT_TRUE(a.Resize(1 * kMiB, "a").ok());
    EXPECT_EQ(budget.in_use(), 7 * kMiB);
    MemoryLease moved = std::move(b);
    EXPECT_EQ(b.held(), 0);
    EXPECT_EQ(moved.held(), 6 * kMiB);
    EXPECT_EQ(budget.in_use(), 7 * kMiB);
  }
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(MemoryBudgetTest, RefusalsNameTheNeedTheBudgetAndWhetherToRetry) {
  MemoryBudget budget(10 * kMiB);
  MemoryLease other(&budget);
  ASSERT_TRUE(other.Resize(8 * kMiB, "other").ok());
  MemoryLease mine(&budget);
  ASSERT_TRUE(mine.Resize(1 * kMiB, "mine").ok());
  absl::Status s = mine.Resize(4 * kMiB, "decoding this volume");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("decoding this volume needs 4 MiB of the server's memory "
                                     "budget of 10 MiB (--memory_budget_mb), and other requests "
                                     "hold 8 MiB; retry later"));
  EXPECT_EQ(mine.held(), 1 * kMiB) << "a refused resize keeps the old size";
  EXPECT_EQ(budget.in_use(), 9 * kMiB);
  s = mine.Resize(11 * kMiB, "decoding this volume");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("needs 11 MiB, more than the server's memory budget of "
                                     "10 MiB (--memory_budget_mb); send a smaller volume"));
  other = MemoryLease();  // released
  EXPECT_TRUE(mine.Resize(10 * kMiB, "x").ok());
  EXPECT_EQ(budget.in_use(), 10 * kMiB);
}

TEST(MemoryBudgetTest, NoBudgetCountsButNeverRefuses) {
  MemoryBudget unlimited(0);
  MemoryLease lease(&unlimited);
  EXPECT_TRUE(lease.Resize(int64_t{1} << 50, "x").ok());
  EXPECT_EQ(unlimited.in_use(), int64_t{1} << 50);
  MemoryLease detached;
  EXPECT_TRUE(detached.Resize(123, "x").ok());
  EXPECT_EQ(detached.held(), 123);
}

// A gzip NIfTI case of dims x 16 x 2 per modality, and a header that lists its four files.
std::vector<std::string> Case(int64_t x) {
  std::vector<std::string> files;
  for (int m = 0; m < 4; ++m) {
    volume::Volume v;
    v.geometry = volume::MakeGeometry({x, 16, 2}, {1, 1, 1}, {0, 0, 0});
    v.voxels.assign(v.geometry.NumVoxels(), 1.0f + m);
    files.push_back(*volume::EncodeNiftiImage(v, volume::ImageStorage::kFloat32, true));
  }
  return files;
}

v1::Header CaseHeader(const std::vector<std::string>& files) {
  v1::Header h;
  h.set_input_kind(v1::INPUT_KIND_NIFTI);
  const char* modalities[] = {"flair", "t1ce", "t1", "t2"};
  for (size_t i = 0; i < files.size(); ++i) {
    v1::InputFile* f = h.add_files();
    f->set_name(std::string("case_") + modalities[i] + ".nii.gz");
    f->set_modality(modalities[i]);
    f->set_size(files[i].size());
  }
  return h;
}

absl::Status Send(Upload* upload, const std::vector<std::string>& files) {
  for (size_t i = 0; i < files.size(); ++i) {
    v1::Chunk c;
    c.set_file_index(static_cast<uint32_t>(i));
    c.set_data(files[i]);
    c.set_last(true);
    if (absl::Status s = upload->Add(c); !s.ok()) return s;
  }
  return absl::OkStatus();
}

const std::vector<std::string> kBrats = {"flair", "t1ce", "t1", "t2"};

TEST(MemoryBudgetTest, UploadsReserveTheirBytesAndTheDecodedVolumeFromTheHeader) {
  const std::vector<std::string> files = Case(1024);  // 1024 x 16 x 2 = 32768 voxels
  int64_t sent = 0;
  for (const std::string& f : files) sent += static_cast<int64_t>(f.size());
  const int64_t job = JobBytes(32768, 1024 * 16);
  MemoryBudget budget(sent + job);
  UploadLimits limits;
  limits.memory = &budget;
  {
    auto upload = *Upload::Create(CaseHeader(files), kBrats, limits);
    ASSERT_TRUE(Send(upload.get(), files).ok());
    EXPECT_EQ(budget.in_use(), sent);
    EXPECT_EQ(*upload->EstimateJobBytes(), job);
    ASSERT_TRUE(upload->Decode().ok());
    EXPECT_EQ(budget.in_use(), job) << "the raw bytes are released after decoding";
  }
  EXPECT_EQ(budget.in_use(), 0);

  // One byte less: the same case is refused before decoding, and nothing stays reserved.
  MemoryBudget tight(sent + job - 1);
  limits.memory = &tight;
  auto upload = *Upload::Create(CaseHeader(files), kBrats, limits);
  ASSERT_TRUE(Send(upload.get(), files).ok());
  const absl::Status s = upload->Decode().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("decoding and segmenting this volume needs"));
  EXPECT_EQ(tight.in_use(), sent);
  upload.reset();
  EXPECT_EQ(tight.in_use(), 0);
}

TEST(MemoryBudgetTest, BufferingPastTheBudgetIsRefusedNamingTheFile) {
  const std::vector<std::string> files = Case(1024);
  MemoryBudget budget(static_cast<int64_t>(files[0].size() + files[1].size() / 2));
  UploadLimits limits;
  limits.memory = &budget;
  auto upload = *Upload::Create(CaseHeader(files), kBrats, limits);
  const absl::Status s = Send(upload.get(), files);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("files[1] 'case_t1ce.nii.gz': buffering this upload needs"));
  EXPECT_EQ(budget.in_use(), static_cast<int64_t>(files[0].size()));
}

TEST(MemoryBudgetTest, HeaderPeekReadsOnlyTheHeader) {
  // A 512 x 512 x 400 header followed by no voxels at all: the peek gives its grid (the decoder
  // would call the file truncated).
  volume::Volume one;
  one.geometry = volume::MakeGeometry({1, 1, 1}, {1, 1, 1}, {0, 0, 0});
  one.voxels = {0.0f};
  std::string bytes = *volume::EncodeNiftiImage(one, volume::ImageStorage::kFloat32, false);
  // Patch dim[1..3] (offset 42, int16 each) of the NIfTI-1 header to 512, 512, 400.
  const int16_t dims[3] = {512, 512, 400};
  std::memcpy(bytes.data() + 42, dims, sizeof(dims));
  absl::StatusOr<volume::Geometry> g = volume::PeekNiftiGeometry(bytes, "big.nii");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->NumVoxels(), 512LL * 512 * 400);
  EXPECT_FALSE(volume::DecodeNifti(bytes, "big.nii").ok());
  absl::StatusOr<volume::Geometry> zipped =
      volume::PeekNiftiGeometry(*volume::Gzip(bytes), "big.nii.gz");
  ASSERT_TRUE(zipped.ok()) << zipped.status();
  EXPECT_EQ(zipped->dims, g->dims);
  volume::NiftiLimits limits;
  limits.max_dim = 256;
  EXPECT_THAT(volume::PeekNiftiGeometry(bytes, "big.nii", limits).status().message(),
              HasSubstr("big.nii"));
}

}  // namespace
}  // namespace danet::service
