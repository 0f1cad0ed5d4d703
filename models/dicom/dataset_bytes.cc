#include "models/dicom/dataset_bytes.h"

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcwcache.h>

#include <vector>

#include "absl/strings/str_cat.h"

namespace danet::volume {
namespace {

// A buffer stream over `bytes` from `offset` on that, unlike DcmInputBufferStream, gives DCMTK a
// factory for reading again at its current position (none once an inflating filter is on: the
// position is then in the inflated stream).
class MemoryInputStream : public DcmInputBufferStream {
 public:
  MemoryInputStream(std::string_view bytes, size_t offset) : bytes_(bytes), offset_(offset) {
    setBuffer(bytes.data() + offset, static_cast<offile_off_t>(bytes.size() - offset));
    setEos();
  }
  DcmInputStreamFactory* newFactory() const override;
  OFCondition installCompressionFilter(E_StreamCompression filter) override {
    compressed_ = true;
    return DcmInputBufferStream::installCompressionFilter(filter);
  }

 private:
  std::string_view bytes_;
  size_t offset_;
  bool compressed_ = false;
};

class MemoryStreamFactory : public DcmInputStreamFactory {
 public:
  MemoryStreamFactory(std::string_view bytes, size_t offset) : bytes_(bytes), offset_(offset) {}
  DcmInputStream* create() const override { return new MemoryInputStream(bytes_, offset_); }
  DcmInputStreamFactory* clone() const override { return new MemoryStreamFactory(*this); }
  // The file stream's kind: DCMTK only tells it from the temporary-file kind.
  DcmInputStreamFactoryType ident() const override { return DFT_DcmInputFileStreamFactory; }

 private:
  std::string_view bytes_;
  size_t offset_;
};

DcmInputStreamFactory* MemoryInputStream::newFactory() const {
  if (compressed_) return nullptr;
  const size_t at = offset_ + static_cast<size_t>(tell());
  return at <= bytes_.size() ? new MemoryStreamFactory(bytes_, at) : nullptr;
}

}  // namespace

OFCondition ReadFileFormat(std::string_view bytes, DcmFileFormat* format, Uint32 max_read_length) {
  MemoryInputStream in(bytes, 0);
  format->transferInit();
  OFCondition c = format->read(in, EXS_Unknown, EGL_noChange, max_read_length);
  format->transferEnd();
  // Deferred values are loaded now, from lengths DCMTK's skip has checked, so that no element
  // keeps a factory pointing into `bytes`.
  if (c.good()) c = format->loadAllDataIntoMemory();
  return c;
}

absl::Status ReadDatasetBytes(const std::string& bytes, const std::string& what,
                              DcmFileFormat* format) {
  const OFCondition c = ReadFileFormat(bytes, format);
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
