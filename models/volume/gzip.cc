#include "models/volume/gzip.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace danet::volume {
namespace {

constexpr int kGzipWindow = 15 + 16;  // zlib: gzip wrapper
constexpr int kRawWindow = -15;       // zlib: raw deflate data, no wrapper

}  // namespace

bool IsGzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

namespace {

// What a whole gzip stream will inflate to, to reserve the output once: the trailer's ISIZE
// (the size modulo 2^32), trusted only within `max_bytes` and deflate's largest ratio (1032:1),
// so a forged trailer cannot make a small upload reserve much. A wrong hint (several members,
// 4 GiB or more) only means the output grows as it would without one. Growing by doubling
// instead would write each volume through a chain of ever larger fresh buffers, and on the
// machines we measured every fresh page costs a fault of about 10 us (docs/benchmarks.md).
int64_t InflatedSizeHint(std::string_view bytes, int64_t max_bytes) {
  constexpr size_t kMinGzip = 18;  // 10-byte header, empty deflate data, 8-byte trailer
  if (bytes.size() < kMinGzip) return 0;
  const auto* trailer = reinterpret_cast<const unsigned char*>(bytes.data() + bytes.size() - 4);
  const int64_t isize = static_cast<int64_t>(trailer[0]) | static_cast<int64_t>(trailer[1]) << 8 |
                        static_cast<int64_t>(trailer[2]) << 16 |
                        static_cast<int64_t>(trailer[3]) << 24;
  return std::min({isize, max_bytes, static_cast<int64_t>(bytes.size()) * 1032});
}

// Inflates up to `max_bytes`. Whole: more is an error, and so is a stream that ends early.
// Prefix: stops at `max_bytes` (the result cut there) or where the data ends. `window`: zlib's
// windowBits, gzip-wrapped or raw; `kind` names the format in errors.
absl::StatusOr<std::string> Inflate(std::string_view bytes, int64_t max_bytes, bool prefix,
                                    int window = kGzipWindow, const char* kind = "gzip") {
  z_stream stream{};
  if (inflateInit2(&stream, window) != Z_OK) return absl::InternalError("zlib init failed");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  std::string out;
  if (!prefix && window == kGzipWindow) {
    out.reserve(static_cast<size_t>(InflatedSizeHint(bytes, max_bytes)));
  }
  char buffer[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(buffer);
    stream.avail_out = prefix ? static_cast<uInt>(std::min<int64_t>(
                                    sizeof(buffer), max_bytes - static_cast<int64_t>(out.size())))
                              : sizeof(buffer);
    const uInt offered = stream.avail_out;
    rc = inflate(&stream, Z_NO_FLUSH);
    const bool truncated =
        rc == Z_BUF_ERROR || (rc == Z_OK && stream.avail_in == 0 && stream.avail_out != 0);
    if (prefix && truncated) rc = Z_STREAM_END;  // a prefix ends where the data ends
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string reason =
          (rc == Z_BUF_ERROR)
              ? absl::StrCat("truncated ", kind, " stream (it ends before its end marker)")
              : absl::StrCat("corrupt ", kind, " data (",
                             stream.msg != nullptr ? stream.msg : "zlib error", ")");
      inflateEnd(&stream);
      return absl::InvalidArgumentError(reason);
    }
    out.append(buffer, offered - stream.avail_out);
    if (prefix && static_cast<int64_t>(out.size()) >= max_bytes) break;
    if (static_cast<int64_t>(out.size()) > max_bytes) {
      inflateEnd(&stream);
      return absl::InvalidArgumentError(
          absl::StrCat(kind, " data inflates to more than ", max_bytes, " bytes"));
    }
    if (!prefix && truncated) {
      inflateEnd(&stream);
      return absl::InvalidArgumentError(
          absl::StrCat("truncated ", kind, " stream (it ends before its end marker)"));
    }
  }
  inflateEnd(&stream);
  return out;
}

// libdeflate inflates a whole buffer about 4x faster than zlib's streaming inflate
// (docs/benchmarks.md, session 27), but only into an output of known size: the trailer's hint.
// Empty when it cannot (no hint, the hint too small, corrupt data): zlib then decides, with its
// errors and its bounds, so the fast path never changes what is accepted or what an error says.
// Like zlib's inflate, it reads the first gzip member only. The output is filled to the hint
// before it is known to be right, which touches no more memory than zlib would for a stream
// that really inflates to max_bytes (the hint is capped as InflatedSizeHint says).
std::optional<std::string> FastGunzip(std::string_view bytes, int64_t max_bytes) {
  const int64_t hint = InflatedSizeHint(bytes, max_bytes);
  if (hint <= 0) return std::nullopt;
  const std::unique_ptr<libdeflate_decompressor, decltype(&libdeflate_free_decompressor)>
      decompressor(libdeflate_alloc_decompressor(), &libdeflate_free_decompressor);
  if (decompressor == nullptr) return std::nullopt;
  std::string out(static_cast<size_t>(hint), '\0');
  size_t used = 0;
  size_t written = 0;
  if (libdeflate_gzip_decompress_ex(decompressor.get(), bytes.data(), bytes.size(), out.data(),
                                    out.size(), &used, &written) != LIBDEFLATE_SUCCESS) {
    return std::nullopt;
  }
  out.resize(written);
  return out;
}

}  // namespace

absl::StatusOr<std::string> Gunzip(std::string_view bytes, int64_t max_bytes) {
  if (std::optional<std::string> fast = FastGunzip(bytes, max_bytes)) return *std::move(fast);
  return Inflate(bytes, max_bytes, /*prefix=*/false);
}

absl::StatusOr<std::string> GunzipPrefix(std::string_view bytes, int64_t max_bytes) {
  return Inflate(bytes, max_bytes, /*prefix=*/true);
}

absl::StatusOr<std::string> InflateRaw(std::string_view bytes, int64_t max_bytes) {
  return Inflate(bytes, max_bytes, /*prefix=*/false, kRawWindow, "deflate");
}

absl::StatusOr<std::string> Gzip(std::string_view bytes) {
  z_stream stream{};
  if (deflateInit2(&stream, 6, Z_DEFLATED, kGzipWindow, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::InternalError("zlib init failed");
  }
  std::string out(deflateBound(&stream, bytes.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&stream, Z_FINISH);
  deflateEnd(&stream);
  if (rc != Z_STREAM_END) return absl::InternalError("gzip compression failed");
  out.resize(stream.total_out);
  return out;
}

}  // namespace danet::volume
