// PNG encoding: signature, IHDR, one IDAT (zlib stream of filter-0 scanlines), IEND.
#include "client/preview/png.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace danet::preview {
namespace {

void AppendBigEndian32(uint32_t value, std::string* out) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xFF));
  }
}

// Appends length, type, data and the CRC-32 of type + data.
void AppendChunk(const char type[4], const std::string& data, std::string* out) {
  AppendBigEndian32(static_cast<uint32_t>(data.size()), out);
  const size_t type_at = out->size();
  out->append(type, 4);
  out->append(data);
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(out->data() + type_at), 4 + data.size());
  AppendBigEndian32(static_cast<uint32_t>(crc), out);
}

absl::Status ErrnoStatus(int error, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  if (error == ENOENT || error == ENOTDIR) return absl::NotFoundError(message);
  if (error == EACCES || error == EPERM || error == EROFS) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

Image Image::Filled(int width, int height, Rgb colour) {
  Image image;
  if (width <= 0 || height <= 0) return image;
  image.width = width;
  image.height = height;
  image.rgb.resize(3 * static_cast<size_t>(width) * height);
  for (size_t i = 0; i < image.rgb.size(); i += 3) {
    image.rgb[i] = colour.r;
    image.rgb[i + 1] = colour.g;
    image.rgb[i + 2] = colour.b;
  }
  return image;
}

bool Image::Valid() const {
  return width > 0 && height > 0 && rgb.size() == 3 * static_cast<size_t>(width) * height;
}

Rgb Image::GetPixel(int x, int y) const {
  if (!Contains(x, y)) return {};
  const size_t at = 3 * (static_cast<size_t>(y) * width + x);
  return {rgb[at], rgb[at + 1], rgb[at + 2]};
}

void Image::SetPixel(int x, int y, Rgb colour) {
  if (!Contains(x, y)) return;
  const size_t at = 3 * (static_cast<size_t>(y) * width + x);
  rgb[at] = colour.r;
  rgb[at + 1] = colour.g;
  rgb[at + 2] = colour.b;
}

void Image::BlendPixel(int x, int y, Rgb colour, double alpha) {
  if (!Contains(x, y)) return;
  alpha = std::clamp(alpha, 0.0, 1.0);
  const Rgb old = GetPixel(x, y);
  auto mix = [alpha](uint8_t under, uint8_t over) {
    return static_cast<uint8_t>(under + alpha * (over - under) + 0.5);
  };
  SetPixel(x, y, {mix(old.r, colour.r), mix(old.g, colour.g), mix(old.b, colour.b)});
}

void Image::FillRect(int x, int y, int w, int h, Rgb colour) {
  const int x0 = std::max(x, 0);
  const int y0 = std::max(y, 0);
  const int x1 = std::min<int64_t>(static_cast<int64_t>(x) + w, width);
  const int y1 = std::min<int64_t>(static_cast<int64_t>(y) + h, height);
  for (int yy = y0; yy < y1; ++yy) {
    for (int xx = x0; xx < x1; ++xx) SetPixel(xx, yy, colour);
  }
}

std::string EncodePng(const Image& image) {
  if (!image.Valid()) return {};
  const size_t row_bytes = 3 * static_cast<size_t>(image.width);
  // Scanlines, each prefixed by its filter type (0: none).
  std::string raw;
  raw.reserve((row_bytes + 1) * image.height);
  for (int y = 0; y < image.height; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(image.rgb.data() + y * row_bytes), row_bytes);
  }
  uLongf deflated_size = compressBound(raw.size());
  std::string deflated(deflated_size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(deflated.data()), &deflated_size,
                reinterpret_cast<const Bytef*>(raw.data()), raw.size(),
                Z_DEFAULT_COMPRESSION) != Z_OK) {
    return {};
  }
  deflated.resize(deflated_size);

  std::string header;
  AppendBigEndian32(static_cast<uint32_t>(image.width), &header);
  AppendBigEndian32(static_cast<uint32_t>(image.height), &header);
  header += std::string("\x08\x02\x00\x00\x00", 5);  // depth 8, RGB, deflate, filter 0, no lace

  std::string png("\x89PNG\r\n\x1a\n", 8);
  AppendChunk("IHDR", header, &png);
  AppendChunk("IDAT", deflated, &png);
  AppendChunk("IEND", "", &png);
  return png;
}

absl::Status WritePng(const Image& image, const std::string& path) {
  if (!image.Valid()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": invalid image ",
                                                   image.width, "x", image.height, " with ",
                                                   image.rgb.size(), " bytes"));
  }
  const std::string png = EncodePng(image);
  if (png.empty()) return absl::InternalError(absl::StrCat("cannot encode PNG for ", path));
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return ErrnoStatus(errno, absl::StrCat("cannot open ", path));
  errno = 0;
  const bool complete = std::fwrite(png.data(), 1, png.size(), file) == png.size();
  const int write_error = errno;
  const bool closed = std::fclose(file) == 0;
  if (!complete) {
    return ErrnoStatus(write_error != 0 ? write_error : EIO, absl::StrCat("cannot write ", path));
  }
  if (!closed) return ErrnoStatus(errno, absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace danet::preview
