#include "models/dicom/dataset_bytes.h"

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcwcache.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/volume/gzip.h"

namespace danet::volume {
namespace {

// The most a deflated data set may inflate to: an Enhanced MR instance of 512 x 512 x 1000 16-bit
// frames is 500 MiB. More is refused before it is inflated further (a small upload must not
// inflate into gigabytes).
constexpr int64_t kMaxInflatedDataSet = int64_t{512} << 20;

// A buffer stream over `bytes` from `offset` on that, unlike DcmInputBufferStream, gives DCMTK a
// factory for reading again at its current position. It refuses an inflating filter: over one,
// no factory could point into the stream, and DCMTK would allocate values from their declared
// lengths again. Where DCMTK asked for one (a deflated data set) is kept for ReadFileFormat.
class MemoryInputStream : public DcmInputBufferStream {
 public:
  MemoryInputStream(std::string_view bytes, size_t offset) : bytes_(bytes), offset_(offset) {
    setBuffer(bytes.data() + offset, static_cast<offile_off_t>(bytes.size() - offset));
    setEos();
  }
  DcmInputStreamFactory* newFactory() const override;
  OFCondition installCompressionFilter(E_StreamCompression) override {
    deflated_at_ = offset_ + static_cast<size_t>(tell());
    return EC_UnsupportedEncoding;
  }
  std::optional<size_t> deflated_at() const { return deflated_at_; }

 private:
  std::string_view bytes_;
  size_t offset_;
  std::optional<size_t> deflated_at_;
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
  const size_t at = offset_ + static_cast<size_t>(tell());
  return at <= bytes_.size() ? new MemoryStreamFactory(bytes_, at) : nullptr;
}

// A deflated data set (DCMTK asked for an inflating filter at `at`, once its meta group was read):
// the data set inflated here (bounded) and read again from the inflated bytes as Explicit VR
// Little Endian through factories, every value then loaded.
OFCondition ReadDeflatedDataSet(std::string_view bytes, size_t at, DcmFileFormat* format,
                                Uint32 max_read_length) {
  absl::StatusOr<std::string> inflated = InflateRaw(bytes.substr(at), kMaxInflatedDataSet);
  if (!inflated.ok()) {
    return makeOFCondition(OFM_dcmdata, 1, OF_error,
                           std::string(inflated.status().message()).c_str());
  }
  MemoryInputStream in(*inflated, 0);
  DcmDataset* dataset = format->getDataset();
  dataset->clear();
  dataset->transferInit();
  OFCondition c = dataset->read(in, EXS_LittleEndianExplicit, EGL_noChange, max_read_length);
  dataset->transferEnd();
  if (c.good()) c = format->loadAllDataIntoMemory();  // before `inflated` goes
  return c;
}

}  // namespace

OFCondition ReadFileFormat(std::string_view bytes, DcmFileFormat* format, Uint32 max_read_length) {
  MemoryInputStream in(bytes, 0);
  format->transferInit();
  OFCondition c = format->read(in, EXS_Unknown, EGL_noChange, max_read_length);
  format->transferEnd();
  // Deferred values are loaded now, from lengths DCMTK's skip has checked, so that no element
  // keeps a factory pointing into `bytes`.
  if (c.good()) return format->loadAllDataIntoMemory();
  if (in.deflated_at()) {
    return ReadDeflatedDataSet(bytes, *in.deflated_at(), format, max_read_length);
  }
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
