// An RGB8 raster and its PNG encoding (libpng's simplified write API: 8-bit truecolour, no
// interlace), so that the `danet` client can write preview images. Nothing here decodes PNG.
//
// Image is a plain value type; it is not synchronised, so share it across threads read-only.
#ifndef DANET_CLIENT_PREVIEW_PNG_H_
#define DANET_CLIENT_PREVIEW_PNG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace danet::preview {

// One 8-bit sRGB colour.
struct Rgb {
  uint8_t r = 0;
  uint8_t g = 0;
  uint8_t b = 0;

  friend bool operator==(Rgb a, Rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }
  friend bool operator!=(Rgb a, Rgb b) { return !(a == b); }
};

// A row-major RGB8 raster: pixel (x, y) is rgb[3 * (y * width + x) + {0, 1, 2}], y = 0 on top.
// The drawing helpers clip to the image, so callers may draw partly outside it.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // 3 * width * height bytes

  // A width x height image filled with `colour` (empty when either side is not positive).
  static Image Filled(int width, int height, Rgb colour = {});

  // True when both sides are positive and rgb holds exactly 3 * width * height bytes.
  bool Valid() const;
  // True when (x, y) lies inside the image.
  bool Contains(int x, int y) const { return x >= 0 && y >= 0 && x < width && y < height; }
  // The pixel at (x, y); black outside the image.
  Rgb GetPixel(int x, int y) const;
  // Sets the pixel at (x, y); no-op outside the image.
  void SetPixel(int x, int y, Rgb colour);
  // Mixes `colour` into the pixel at (x, y) with opacity `alpha` (clamped to 0..1).
  void BlendPixel(int x, int y, Rgb colour, double alpha);
  // Fills the w x h rectangle with top-left corner (x, y), clipped to the image.
  void FillRect(int x, int y, int w, int h, Rgb colour);
};

// Encodes `image` as a PNG file's bytes (colour type 2, bit depth 8, by libpng). Returns an
// empty string when !image.Valid() or libpng fails (out of memory); WritePng reports those as
// errors.
std::string EncodePng(const Image& image);

// Encodes `image` and writes it to `path`, replacing the file. InvalidArgument for an invalid
// image; Internal / PermissionDenied / NotFound (naming the path) when the file cannot be
// written.
absl::Status WritePng(const Image& image, const std::string& path);

}  // namespace danet::preview

#endif  // DANET_CLIENT_PREVIEW_PNG_H_
