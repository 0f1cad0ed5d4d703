// Preview images: PNGs that a second decoder (PIL) reads back pixel for pixel, the embedded
// font, and montages of a synthetic volume (size, overlay colours, route strip, orientation,
// input validation). Set DANET_PREVIEW_DEMO=/path.png to also write a demo montage to look at.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/preview/font.h"
#include "client/preview/montage.h"
#include "client/preview/png.h"

namespace danet::preview {

void PrintTo(const Rgb& c, std::ostream* os) {
  *os << "(" << int{c.r} << ", " << int{c.g} << ", " << int{c.b} << ")";
}

namespace {

using ::testing::HasSubstr;

Image Gradient(int width, int height) {
  Image image = Image::Filled(width, height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.SetPixel(x, y,
                     {static_cast<uint8_t>(x * 7), static_cast<uint8_t>(y * 11),
                      static_cast<uint8_t>((x * y) ^ 0x5A)});
    }
  }
  return image;
}

uint32_t BigEndian32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

TEST(PngTest, HeaderChunksAndPixels) {
  const Image image = Gradient(37, 23);
  const std::string png = EncodePng(image);
  ASSERT_GT(png.size(), 8u + 25 + 12 + 12);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(BigEndian32(png, 8), 13u);
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(BigEndian32(png, 16), 37u);
  EXPECT_EQ(BigEndian32(png, 20), 23u);
  EXPECT_EQ(png.substr(24, 5), std::string("\x08\x02\x00\x00\x00", 5));
  // The pixels, decoded by libpng's reader (PIL reads them back below).
  png_image decoded;
  std::memset(&decoded, 0, sizeof(decoded));
  decoded.version = PNG_IMAGE_VERSION;
  ASSERT_NE(png_image_begin_read_from_memory(&decoded, png.data(), png.size()), 0)
      << decoded.message;
  decoded.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(decoded));
  ASSERT_NE(png_image_finish_read(&decoded, nullptr, pixels.data(), 0, nullptr), 0)
      << decoded.message;
  EXPECT_EQ(pixels, image.rgb);
  EXPECT_EQ(png.substr(png.size() - 12), std::string("\0\0\0\0IEND\xae\x42\x60\x82", 12));
}

TEST(PngTest, InvalidImages) {
  EXPECT_EQ(EncodePng(Image{}), "");
  Image bad = Image::Filled(4, 4);
  bad.rgb.pop_back();
  EXPECT_EQ(EncodePng(bad), "");
  const absl::Status status = WritePng(bad, ::testing::TempDir() + "/bad.png");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("bad.png"));
}

TEST(PngTest, WriteErrorNamesThePath) {
  const std::string path = ::testing::TempDir() + "/no/such/dir/x.png";
  const absl::Status status = WritePng(Image::Filled(2, 2), path);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(path));
}

// Writes `image` as PNG and asks PIL, a second and independent decoder, for its pixels.
void ExpectPilReadsBack(const Image& image, const std::string& name) {
  const std::string python = DANET_PYTHON;
  if (std::system(("'" + python + "' -c 'import PIL' >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << python << " with PIL (Debian's python3-pil) is not available";
  }
  const std::string png_path = ::testing::TempDir() + "/" + name + ".png";
  const std::string raw_path = ::testing::TempDir() + "/" + name + ".rgb";
  ASSERT_TRUE(WritePng(image, png_path).ok());
  std::ofstream(raw_path, std::ios::binary)
      .write(reinterpret_cast<const char*>(image.rgb.data()), image.rgb.size());
  const std::string command = absl::StrCat("'", python, "' '", DANET_PNG_READER, "' '", png_path,
                                           "' '", raw_path, "' ", image.width, " ", image.height);
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

TEST(PngTest, PilDecodesTheSamePixels) {
  ExpectPilReadsBack(Gradient(37, 23), "gradient");
  ExpectPilReadsBack(Gradient(1, 1), "one_pixel");
}

TEST(FontTest, CoversTheCharactersPreviewsUse) {
  for (const char c : std::string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789 .:-%/()=,+")) {
    EXPECT_TRUE(HasGlyph(c)) << "'" << c << "'";
  }
  EXPECT_FALSE(HasGlyph('~'));
  EXPECT_EQ(TextWidth("", 2), 0);
  EXPECT_EQ(TextWidth("ab", 1), 11);
  EXPECT_EQ(TextWidth("ab", 3), 33);
}

std::string Bitmap(char c) {
  Image image = Image::Filled(kGlyphWidth, kGlyphHeight);
  DrawText(&image, 0, 0, std::string(1, c), {255, 255, 255});
  return std::string(image.rgb.begin(), image.rgb.end());
}

TEST(FontTest, GlyphsAreDistinctAndInked) {
  const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:-%/()=,+_?!'#[]<>*";
  std::set<std::string> seen;
  for (const char c : chars) {
    const std::string bitmap = Bitmap(c);
    EXPECT_NE(bitmap, Bitmap(' ')) << "'" << c << "' draws nothing";
    EXPECT_TRUE(seen.insert(bitmap).second) << "'" << c << "' looks like another glyph";
  }
  EXPECT_NE(Bitmap('~'), Bitmap(' '));  // unknown characters draw a box
}

TEST(FontTest, DrawTextSetsOnlyGlyphPixelsAndClips) {
  Image image = Image::Filled(40, 12, {1, 2, 3});
  DrawText(&image, 2, 2, "M4", {255, 0, 0}, 1);
  int red = 0;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const Rgb c = image.GetPixel(x, y);
      if (c == Rgb{255, 0, 0}) {
        ++red;
        EXPECT_TRUE(x >= 2 && x < 2 + TextWidth("M4") && y >= 2 && y < 2 + kGlyphHeight);
      } else {
        EXPECT_EQ(c, (Rgb{1, 2, 3}));
      }
    }
  }
  EXPECT_GT(red, 10);
  DrawText(&image, 35, 8, "clipped text", {0, 255, 0}, 2);  // must not crash
  DrawText(&image, -100, -100, "far away", {0, 255, 0}, 2);
}

// A 64x64x20 head: an ellipsoid of brain with a left-right and front-back gradient, and a
// spherical tumour (core 1, enhancing rim 4, edema 2) centred at voxel (44, 44, 10), which is
// right-anterior in RAS storage.
struct Phantom {
  std::vector<float> flair;
  std::vector<uint8_t> labels;
  MontageInput input;

  Phantom() : flair(64 * 64 * 20), labels(64 * 64 * 20) {
    for (int z = 0; z < 20; ++z) {
      for (int y = 0; y < 64; ++y) {
        for (int x = 0; x < 64; ++x) {
          const size_t at = x + 64 * (y + 64 * static_cast<size_t>(z));
          const double head = std::pow((x - 31.5) / 28, 2) + std::pow((y - 31.5) / 30, 2) +
                              std::pow((z - 9.5) / 12, 2);
          if (head < 1) flair[at] = 200 + x + 2 * y;
          const double r =
              std::sqrt(std::pow(x - 44, 2) + std::pow(y - 44, 2) + std::pow(1.5 * (z - 10), 2));
          labels[at] = r < 2.5 ? 1 : r < 4.5 ? 4 : r < 8 ? 2 : 0;
        }
      }
    }
    input.dims = {64, 64, 20};
    input.spacing = {1, 1, 1};
    input.background = &flair;
    input.labels = &labels;
    input.routes = {0, 0, 0, 0, 1, 1, 1, 2, 4, 4, 4, 4, 4, 3, 3, 2, 1, 0, 0, 0};
    input.route_names = {"skip", "M1", "M2", "M3", "M4"};
    input.title = "case 0001  dynamic  344 GMACs (24.8% of M4)";
  }

  // The first slice of largest tumour area (9, 10 and 11 tie).
  int LargestTumourSlice() const {
    std::vector<int> area(20);
    for (size_t at = 0; at < labels.size(); ++at) area[at / (64 * 64)] += labels[at] != 0;
    return std::max_element(area.begin(), area.end()) - area.begin();
  }
};

// Counts pixels of a tile whose colour the predicate accepts; returns their mean position.
template <typename Pred>
int CountInTile(const Image& image, const MontageLayout::Tile& t, Pred pred, double* mx = nullptr,
                double* my = nullptr) {
  int n = 0;
  double sx = 0, sy = 0;
  for (int y = t.y; y < t.y + t.height; ++y) {
    for (int x = t.x; x < t.x + t.width; ++x) {
      if (pred(image.GetPixel(x, y))) ++n, sx += x - t.x, sy += y - t.y;
    }
  }
  if (mx != nullptr) *mx = n ? sx / n / t.width : -1, *my = n ? sy / n / t.height : -1;
  return n;
}

bool Reddish(Rgb c) { return c.r > c.g + 60 && c.r > c.b + 60; }
bool Greenish(Rgb c) { return c.g > c.r + 60 && c.g > c.b + 60; }
bool Yellowish(Rgb c) { return c.r > c.b + 60 && c.g > c.b + 60 && std::abs(c.r - c.g) < 20; }

TEST(MontageTest, PicksTheLargestTumourSliceAndSpreadsOverTheTumour) {
  const Phantom p;
  const std::vector<int> slices = PickSlices(p.input, 6);
  ASSERT_EQ(slices.size(), 6u);
  EXPECT_EQ(p.LargestTumourSlice(), 9);
  EXPECT_THAT(slices, ::testing::Contains(9));
  EXPECT_TRUE(std::is_sorted(slices.begin(), slices.end()));
  EXPECT_GE(slices.front(), 5);  // the tumour spans z 5..15
  EXPECT_LE(slices.back(), 15);
  EXPECT_EQ(PickSlices(p.input, 50).size(), 20u);
}

TEST(MontageTest, ShortTumourIsPaddedWithNeighboursAndNoTumourSpreadsThroughTheBrain) {
  Phantom p;
  std::vector<uint8_t> thin(p.labels.size(), 0);
  for (size_t at = 64 * 64 * 9; at < 64 * 64 * 11; ++at) thin[at] = p.labels[at];
  p.input.labels = &thin;
  EXPECT_EQ(PickSlices(p.input, 6), (std::vector<int>{7, 8, 9, 10, 11, 12}));
  p.input.labels = nullptr;
  EXPECT_EQ(PickSlices(p.input, 4), (std::vector<int>{2, 7, 12, 17}));  // brain z 0..19
}

TEST(MontageTest, SizeTilesLabelColoursAndRouteStrip) {
  const Phantom p;
  MontageLayout layout;
  const absl::StatusOr<Image> image = RenderMontage(p.input, {}, &layout);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_TRUE(image->Valid());
  ASSERT_EQ(layout.tiles.size(), 6u);
  EXPECT_GE(image->width, 3 * 64);
  EXPECT_GE(image->height, 2 * 64 + layout.strip_height);
  for (const MontageLayout::Tile& t : layout.tiles) {
    EXPECT_EQ(t.width, 64);
    EXPECT_EQ(t.height, 64);
    EXPECT_TRUE(image->Contains(t.x, t.y) && image->Contains(t.x + 63, t.y + 63));
  }
  const auto middle_it = std::find_if(layout.tiles.begin(), layout.tiles.end(),
                                      [&p](auto& t) { return t.z == p.LargestTumourSlice(); });
  ASSERT_NE(middle_it, layout.tiles.end());
  const MontageLayout::Tile& middle = *middle_it;
  EXPECT_GT(CountInTile(*image, middle, Reddish), 5);
  EXPECT_GT(CountInTile(*image, middle, Greenish), 50);
  EXPECT_GT(CountInTile(*image, middle, Yellowish), 20);

  const int nz = p.input.dims[2];
  for (int z = 0; z < nz; ++z) {
    const int x = layout.strip_x + (2 * z + 1) * layout.strip_width / (2 * nz);
    EXPECT_EQ(image->GetPixel(x, layout.strip_y + layout.strip_height / 2),
              RouteColour(p.input.routes[z]))
        << "z " << z;
  }
  for (const MontageLayout::Tile& t : layout.tiles) {  // a tick under every slice shown
    const int x = layout.strip_x + (2 * t.z + 1) * layout.strip_width / (2 * nz);
    EXPECT_EQ(image->GetPixel(x, layout.strip_y + layout.strip_height + 2), (Rgb{255, 255, 255}));
  }
  std::set<std::pair<int, std::pair<int, int>>> distinct;
  for (int r = 0; r < 5; ++r)
    distinct.insert({RouteColour(r).r, {RouteColour(r).g, RouteColour(r).b}});
  EXPECT_EQ(distinct.size(), 5u);
}

TEST(MontageTest, RadiologicalOrientation) {
  const Phantom p;
  MontageOptions options;
  options.tiles = 1;
  MontageLayout layout;
  absl::StatusOr<Image> image = RenderMontage(p.input, options, &layout);
  ASSERT_TRUE(image.ok()) << image.status();
  // RAS storage: the right-anterior tumour shows on the image's upper left.
  double mx, my;
  ASSERT_GT(CountInTile(*image, layout.tiles[0], Greenish, &mx, &my), 0);
  EXPECT_LT(mx, 0.5);
  EXPECT_LT(my, 0.5);
  // The same voxels stored LPS (as BraTS ships them) are left-posterior: lower right.
  std::array<std::array<double, 4>, 4> lps{};
  lps[0][0] = -1, lps[1][1] = -1, lps[2][2] = 1, lps[3][3] = 1;
  SetFlipsFromVoxelToWorld(lps, &options);
  EXPECT_FALSE(options.flip_x || options.flip_y);
  image = RenderMontage(p.input, options, &layout);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_GT(CountInTile(*image, layout.tiles[0], Greenish, &mx, &my), 0);
  EXPECT_GT(mx, 0.5);
  EXPECT_GT(my, 0.5);
}

TEST(MontageTest, AnisotropicSpacingAndTileSize) {
  Phantom p;
  p.input.spacing = {1, 2, 3};
  MontageLayout layout;
  ASSERT_TRUE(RenderMontage(p.input, {}, &layout).ok());
  EXPECT_EQ(layout.tiles[0].width, 64);
  EXPECT_EQ(layout.tiles[0].height, 128);
  MontageOptions options;
  options.tile_size = 100;
  ASSERT_TRUE(RenderMontage(p.input, options, &layout).ok());
  EXPECT_EQ(layout.tiles[0].width, 50);
  EXPECT_EQ(layout.tiles[0].height, 100);
}

TEST(MontageTest, InvalidInputsNameTheField) {
  const Phantom good;
  std::vector<float> short_flair(10);
  std::vector<uint8_t> bad_labels = good.labels;
  bad_labels[123] = 7;
  const std::vector<std::pair<std::function<void(MontageInput&, MontageOptions&)>, std::string>>
      cases = {
          {[](MontageInput& in, MontageOptions&) { in.dims[1] = 0; }, "dims"},
          {[](MontageInput& in, MontageOptions&) { in.spacing[0] = NAN; }, "spacing"},
          {[](MontageInput& in, MontageOptions&) { in.background = nullptr; }, "background"},
          {[&](MontageInput& in, MontageOptions&) { in.background = &short_flair; }, "background"},
          {[&](MontageInput& in, MontageOptions&) { in.labels = &bad_labels; }, "labels"},
          {[](MontageInput& in, MontageOptions&) { in.routes.pop_back(); }, "routes"},
          {[](MontageInput& in, MontageOptions&) { in.routes[3] = 5; }, "routes[3]"},
          {[](MontageInput& in, MontageOptions&) { in.routes[4] = -1; }, "routes[4]"},
          {[](MontageInput& in, MontageOptions&) { in.route_names.clear(); }, "route_names"},
          {[](MontageInput&, MontageOptions& o) { o.columns = 0; }, "options.columns"},
          {[](MontageInput&, MontageOptions& o) { o.tiles = 0; }, "options.tiles"},
          {[](MontageInput&, MontageOptions& o) { o.label_alpha = 2; }, "options.label_alpha"},
      };
  for (const auto& [mutate, field] : cases) {
    MontageInput input = good.input;
    MontageOptions options;
    mutate(input, options);
    const absl::StatusOr<Image> image = RenderMontage(input, options);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(image.status().message(), HasSubstr(field + ":")) << image.status();
  }
}

TEST(MontageTest, DemoMontageReadsBackInPil) {
  const Phantom p;
  MontageOptions options;
  options.tile_size = 160;
  const absl::StatusOr<Image> image = RenderMontage(p.input, options);
  ASSERT_TRUE(image.ok()) << image.status();
  if (const char* demo = std::getenv("DANET_PREVIEW_DEMO"); demo != nullptr && *demo != '\0') {
    ASSERT_TRUE(WritePng(*image, demo).ok());
  }
  ExpectPilReadsBack(*image, "montage");
}

}  // namespace
}  // namespace danet::preview
