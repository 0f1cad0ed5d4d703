#include "models/dicom/dataset_bytes.h"

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcwcache.h>

#include <vector>

#include "absl/strings/str_cat.h"

namespace danet::volume {

absl::Status ReadDatasetBytes(const std::string& bytes, const std::string& what,
                              DcmFileFormat* format) {
  DcmInputBufferStream in;
  in.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  in.setEos();
  format->transferInit();
  const OFCondition c = format->read(in);
  format->transferEnd();
  if (c.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": reading the source instance: ", c.text()));
}

// DCMTK writes into a buffer stream and says when the buffer is full (EC_StreamNotifyClient);
// each full buffer is appended and the write resumes.
absl::StatusOr<std::string> DatasetFileBytes(DcmDataset& dataset, const std::string& what) {
  DcmFileFormat format(&dataset);  // a copy
  std::vector<char> buffer(1 << 20);
  DcmOutputBufferStream stream(buffer.data(), buffer.size());
  DcmWriteCache cache;
  std::string bytes;
  OFCondition c;
  format.transferInit();
  do {
    c = format.write(stream, EXS_LittleEndianExplicit, EET_ExplicitLength, &cache);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    bytes.append(static_cast<const char*>(data), static_cast<size_t>(length));
  } while (c == EC_StreamNotifyClient);
  format.transferEnd();
  if (c.bad()) return absl::InternalError(absl::StrCat(what, ": writing: ", c.text()));
  return bytes;
}

}  // namespace danet::volume
