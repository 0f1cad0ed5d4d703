// libFuzzer target: the NIfTI decoder (images and labels, gzip or not) on arbitrary bytes.
// Small limits keep each input cheap; every input must come back as a value or a Status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "models/volume/nifti.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  danet::volume::NiftiLimits limits;
  limits.max_dim = 256;
  limits.max_voxels = 1 << 20;
  (void)danet::volume::DecodeNifti(bytes, "fuzz.nii", limits);
  (void)danet::volume::DecodeNiftiLabels(bytes, "fuzz.nii", limits);
  return 0;
}
