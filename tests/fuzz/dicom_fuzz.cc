// libFuzzer target: the DICOM series decoder. The input is split into up to four instances at
// the separator "\xff\xfe\xfd\xfc" so that grouping, sorting and stacking across files are
// reached as well as the parsing of one file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "models/dicom/dicom.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr std::string_view kSeparator("\xff\xfe\xfd\xfc", 4);
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<danet::volume::DicomFile> files;
  while (files.size() < 4) {
    const size_t cut = files.size() == 3 ? std::string_view::npos : rest.find(kSeparator);
    files.push_back({"fuzz" + std::to_string(files.size()) + ".dcm", rest.substr(0, cut)});
    if (cut == std::string_view::npos) break;
    rest.remove_prefix(cut + kSeparator.size());
  }
  danet::volume::NiftiLimits limits;
  limits.max_dim = 256;
  limits.max_voxels = 1 << 20;
  (void)danet::volume::DecodeDicomSeries(files, limits);
  return 0;
}
