// The server-wide memory budget: leases grow, shrink and release; refusals say what was needed,
// the budget, and whether waiting can help; the NIfTI header alone gives the grid. (Uploads
// holding leases are tested in upload_test.cc.)
#include "server/core/memory_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "models/volume/gzip.h"
#include "models/volume/nifti.h"

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
