// PNG encoding with libpng's simplified write API (png_image_write_to_memory).
#include "client/preview/png.h"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace danet::preview {
namespace {

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
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  // First call: the size; second: the bytes. libpng frees its own state on failure and after a
  // completed write (png_image_free is then a no-op).
  png_alloc_size_t size = 0;
  if (png_image_write_to_memory(&png, nullptr, &size, /*convert_to_8_bit=*/0, image.rgb.data(),
                                /*row_stride=*/0, /*colormap=*/nullptr) == 0 ||
      size == 0) {
    png_image_free(&png);
    return {};
  }
  std::string bytes(size, '\0');
  if (png_image_write_to_memory(&png, bytes.data(), &size, 0, image.rgb.data(), 0, nullptr) == 0) {
    png_image_free(&png);
    return {};
  }
  bytes.resize(size);
  return bytes;
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
