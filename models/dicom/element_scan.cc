#include "models/dicom/element_scan.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace danet::volume {
namespace {

constexpr uint32_t kUndefinedLength = 0xFFFFFFFF;
constexpr uint16_t kItemGroup = 0xFFFE;
constexpr uint16_t kItem = 0xE000;
constexpr uint16_t kSequenceDelimiter = 0xE0DD;

enum class Encoding { kExplicitLittle, kImplicitLittle, kExplicitBig };

// The standard value representations with two reserved bytes and a 32-bit length.
bool IsLongVr(std::string_view vr) {
  for (const char* long_vr :
       {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}) {
    if (vr == long_vr) return true;
  }
  return false;
}
bool IsStandardVr(std::string_view vr) {
  for (const char* short_vr : {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                               "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}) {
    if (vr == short_vr) return true;
  }
  return IsLongVr(vr);
}
// Value representations whose explicit-VR header has two reserved bytes and a 32-bit length. As
// DCMTK reads them (DcmVR::setVR): a VR it does not know that is two capital letters is taken for
// a future VR, with a 32-bit length (the upload_fuzz finding: "WS" declaring 4 GB); any other
// unknown VR has a 16-bit length.
bool HasLongLength(std::string_view vr) {
  if (IsStandardVr(vr)) return IsLongVr(vr);
  return vr.size() == 2 && absl::ascii_isupper(static_cast<unsigned char>(vr[0])) &&
         absl::ascii_isupper(static_cast<unsigned char>(vr[1]));
}

class Walker {
 public:
  Walker(std::string_view bytes, size_t pos) : bytes_(bytes), pos_(pos) {}

  // Walks elements from the current position to the end of the file, or (meta_only) to the
  // end of group 0002. Returns the transfer syntax UID when it passes (0002,0010).
  absl::Status Walk(Encoding encoding, bool meta_only, std::string* transfer_syntax,
                    DicomImageSize* size = nullptr) {
    bool in_fragments = false;  // inside encapsulated pixel data: items hold bytes, not elements
    // The encoding outside each open undefined-length value: as DCMTK does (CP-246), a UN or
    // unknown VR of undefined length in an explicit-VR data set holds a sequence in implicit VR
    // (the dicom_fuzz finding: VR "BO" on the pixel data, an item holding a 3.7 GB element).
    std::vector<Encoding> enclosing;
    while (pos_ < bytes_.size()) {
      if (bytes_.size() - pos_ < 8) return Short("an element header", pos_);
      const size_t start = pos_;
      const uint16_t group = U16(pos_, encoding);
      const uint16_t element = U16(pos_ + 2, encoding);
      if (meta_only && group != 0x0002) return absl::OkStatus();
      if (group == kItemGroup) {  // item, item delimiter or sequence delimiter: no VR
        const uint32_t length = U32(pos_ + 4, encoding);
        pos_ += 8;
        if (element == kSequenceDelimiter) {
          in_fragments = false;
          if (!enclosing.empty()) {
            encoding = enclosing.back();
            enclosing.pop_back();
          }
        }
        if (element == kItem && length != kUndefinedLength && in_fragments) {
          if (absl::Status s = Skip(group, element, length, start); !s.ok()) return s;
        }
        continue;  // a data set item is stepped into: its elements follow
      }
      std::string_view vr;
      uint32_t length = 0;
      if (encoding == Encoding::kImplicitLittle) {
        length = U32(pos_ + 4, encoding);
        pos_ += 8;
      } else {
        vr = bytes_.substr(pos_ + 4, 2);
        if (HasLongLength(vr)) {
          if (bytes_.size() - pos_ < 12) return Short("an element header", start);
          length = U32(pos_ + 8, encoding);
          pos_ += 12;
        } else {
          length = U16(pos_ + 6, encoding);
          pos_ += 8;
        }
      }
      if (length == kUndefinedLength) {  // a sequence, or encapsulated pixel data: step in
        enclosing.push_back(encoding);
        const bool implicit_sequence = !vr.empty() && (vr == "UN" || !IsStandardVr(vr));
        if (implicit_sequence) encoding = Encoding::kImplicitLittle;
        in_fragments = !implicit_sequence && group == 0x7FE0 && element == 0x0010;
        continue;
      }
      if (vr == "SQ" || LooksLikeItem(length, encoding)) continue;  // step into its items
      if (transfer_syntax != nullptr && group == 0x0002 && element == 0x0010 &&
          length <= bytes_.size() - pos_) {
        *transfer_syntax = std::string(bytes_.substr(pos_, length));
        while (!transfer_syntax->empty() &&
               (transfer_syntax->back() == '\0' || transfer_syntax->back() == ' ')) {
          transfer_syntax->pop_back();
        }
      }
      if (size != nullptr && group == 0x0028 && length <= bytes_.size() - pos_) {
        Capture(element, length, encoding, size);
      }
      if (absl::Status s = Skip(group, element, length, start); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  size_t pos() const { return pos_; }

 private:
  // Rows (0028,0010) and Columns (0028,0011), US; NumberOfFrames (0028,0008), IS. The largest
  // seen (an icon image nested in a sequence is smaller than the image).
  void Capture(uint16_t element, uint32_t length, Encoding encoding, DicomImageSize* size) {
    if ((element == 0x0010 || element == 0x0011) && length == 2) {
      int& field = element == 0x0010 ? size->rows : size->columns;
      field = std::max<int>(field, U16(pos_, encoding));
    } else if (element == 0x0008 && length <= 12) {
      int64_t frames = 0;
      std::string text(bytes_.substr(pos_, length));
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &frames) && frames > 0) {
        size->frames =
            static_cast<int>(std::max<int64_t>(size->frames, std::min<int64_t>(frames, 1 << 30)));
      }
    }
  }

  uint16_t U16(size_t at, Encoding e) const {
    const auto b = [&](size_t i) { return static_cast<uint16_t>(static_cast<uint8_t>(bytes_[i])); };
    return e == Encoding::kExplicitBig ? static_cast<uint16_t>(b(at) << 8 | b(at + 1))
                                       : static_cast<uint16_t>(b(at) | b(at + 1) << 8);
  }
  uint32_t U32(size_t at, Encoding e) const {
    return e == Encoding::kExplicitBig ? (uint32_t{U16(at, e)} << 16) | U16(at + 2, e)
                                       : U16(at, e) | (uint32_t{U16(at + 2, e)} << 16);
  }

  // A defined-length value that starts with an item tag holds a sequence (an implicit-VR SQ,
  // or UN): its elements are walked like any other.
  bool LooksLikeItem(uint32_t length, Encoding e) const {
    return length >= 8 && bytes_.size() - pos_ >= 8 && U16(pos_, e) == kItemGroup &&
           U16(pos_ + 2, e) == kItem;
  }

  absl::Status Skip(uint16_t group, uint16_t element, uint32_t length, size_t start) {
    if (length > bytes_.size() - pos_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("element (%04X,%04X) at byte %d declares %u bytes, but only %d follow",
                          group, element, start, length, bytes_.size() - pos_));
    }
    pos_ += length;
    return absl::OkStatus();
  }

  absl::Status Short(const char* what, size_t at) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("truncated: %s at byte %d runs past the end of the file", what, at));
  }

  std::string_view bytes_;
  size_t pos_;
};

}  // namespace

namespace {

absl::Status Scan(std::string_view bytes, DicomImageSize* size) {
  constexpr size_t kMetaStart = 132;  // 128-byte preamble, then "DICM"
  if (bytes.size() < kMetaStart) return absl::InvalidArgumentError("not a DICOM file");
  Walker walker(bytes, kMetaStart);
  std::string transfer_syntax;
  // The meta group is explicit VR little endian unless its first element's VR is not two
  // letters: then DCMTK reads it in implicit VR (DcmMetaInfo's check; the dicom_fuzz finding of
  // session 31: VR bytes 01 00 made the meta group end elsewhere, and DCMTK allocated 2.8 GB for
  // the data set's first element).
  const auto letter = [](char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)); };
  const Encoding meta_encoding =
      bytes.size() >= kMetaStart + 6 &&
              !(letter(bytes[kMetaStart + 4]) && letter(bytes[kMetaStart + 5]))
          ? Encoding::kImplicitLittle
          : Encoding::kExplicitLittle;
  if (absl::Status s = walker.Walk(meta_encoding, /*meta_only=*/true, &transfer_syntax); !s.ok()) {
    return s;
  }
  Encoding encoding = Encoding::kExplicitLittle;
  if (transfer_syntax == "1.2.840.10008.1.2") {
    encoding = Encoding::kImplicitLittle;
  } else if (transfer_syntax == "1.2.840.10008.1.2.2") {
    encoding = Encoding::kExplicitBig;
  } else if (transfer_syntax == "1.2.840.10008.1.2.1.99") {
    return absl::OkStatus();  // deflated: the data set is not readable without inflating it
  } else if (transfer_syntax.empty() && bytes.size() - walker.pos() >= 6) {
    // No transfer syntax in the meta header: implicit VR unless a VR follows the first tag,
    // as DCMTK guesses.
    const auto upper = [](char c) { return c >= 'A' && c <= 'Z'; };
    const size_t p = walker.pos();
    if (!upper(bytes[p + 4]) || !upper(bytes[p + 5])) encoding = Encoding::kImplicitLittle;
  }
  Walker data(bytes, walker.pos());
  return data.Walk(encoding, /*meta_only=*/false, nullptr, size);
}

}  // namespace

absl::Status CheckDeclaredLengths(std::string_view bytes) { return Scan(bytes, nullptr); }

absl::StatusOr<DicomImageSize> PeekDicomImageSize(std::string_view bytes) {
  DicomImageSize size;
  if (absl::Status s = Scan(bytes, &size); !s.ok()) return s;
  return size;
}

}  // namespace danet::volume
