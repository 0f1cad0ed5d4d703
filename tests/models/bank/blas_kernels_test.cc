// PreferredBlasCore's rule (models/bank/blas_kernels.h): only OpenBLAS's pre-AVX2 cores are
// replaced, by the widest kernels the CPU can run. The exec itself is tested out of process
// (test_blas_kernels.py).
#include "models/bank/blas_kernels.h"

#include <gtest/gtest.h>

namespace danet::models {
namespace {

TEST(BlasKernelsTest, AFallbackCoreGivesWayToTheCpusWidestKernels) {
  EXPECT_EQ(PreferredBlasCore("Prescott", VectorIsa::kAvx512), "SkylakeX");
  EXPECT_EQ(PreferredBlasCore("prescott", VectorIsa::kAvx2), "Haswell");
  EXPECT_EQ(PreferredBlasCore("Nehalem", VectorIsa::kAvx2), "Haswell");
  EXPECT_EQ(PreferredBlasCore("Sandybridge", VectorIsa::kAvx512), "SkylakeX");
  EXPECT_EQ(PreferredBlasCore("Core2", VectorIsa::kAvx512), "SkylakeX");
}

TEST(BlasKernelsTest, CoresThatUseAvx2OrMoreAreKept) {
  for (const char* core :
       {"Haswell", "Zen", "Excavator", "SkylakeX", "COOPERLAKE", "SapphireRapids"}) {
    EXPECT_EQ(PreferredBlasCore(core, VectorIsa::kAvx512), "") << core;
    EXPECT_EQ(PreferredBlasCore(core, VectorIsa::kAvx2), "") << core;
  }
}

TEST(BlasKernelsTest, CoreNamesItDoesNotKnowAreKept) {
  EXPECT_EQ(PreferredBlasCore("Zen4", VectorIsa::kAvx512), "");
  EXPECT_EQ(PreferredBlasCore("Prescott2", VectorIsa::kAvx512), "");
}

TEST(BlasKernelsTest, NothingToChooseWithoutAvx2OrWithoutOpenBlas) {
  EXPECT_EQ(PreferredBlasCore("Prescott", VectorIsa::kNone), "");
  EXPECT_EQ(PreferredBlasCore("", VectorIsa::kAvx512), "");
}

}  // namespace
}  // namespace danet::models
