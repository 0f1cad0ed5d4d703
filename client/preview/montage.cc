// Montage rendering: validation, slice choice, intensity window, then layout and drawing.
// Sampling is nearest-neighbour: previews must show the voxels the model saw, not smoothed
// ones.
#include "client/preview/montage.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/preview/font.h"

namespace danet::preview {
namespace {

constexpr Rgb kCanvasColour{12, 12, 12};
constexpr Rgb kTextColour{235, 235, 235};
constexpr Rgb kTickColour{255, 255, 255};
constexpr int kMaxTileSide = 4096;
constexpr int64_t kMaxPixels = int64_t{1} << 26;

absl::Status Invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("montage: ", field, ": ", why));
}

int64_t NumVoxels(const MontageInput& input) {
  return int64_t{input.dims[0]} * input.dims[1] * input.dims[2];
}

absl::Status ValidateOptions(const MontageOptions& o) {
  if (o.tiles < 1) return Invalid("options.tiles", absl::StrCat("must be >= 1, got ", o.tiles));
  if (o.columns < 1) {
    return Invalid("options.columns", absl::StrCat("must be >= 1, got ", o.columns));
  }
  if (o.tile_size < 0 || o.tile_size > kMaxTileSide) {
    return Invalid("options.tile_size", absl::StrCat("must be 0..", kMaxTileSide));
  }
  if (o.text_scale < 0 || o.text_scale > 8) return Invalid("options.text_scale", "must be 0..8");
  if (!(o.label_alpha >= 0 && o.label_alpha <= 1)) {
    return Invalid("options.label_alpha", "must be 0..1");
  }
  return absl::OkStatus();
}

// 1st and 99th percentiles of the nonzero voxels (zero is air or skull-stripped background).
std::pair<float, float> IntensityWindow(const std::vector<float>& voxels) {
  std::vector<float> values;
  for (const float v : voxels) {
    if (v != 0) values.push_back(v);
  }
  if (values.empty()) return {0.0f, 1.0f};
  auto percentile = [&values](double p) {
    auto at = values.begin() + static_cast<size_t>(p * (values.size() - 1));
    std::nth_element(values.begin(), at, values.end());
    return *at;
  };
  const float lo = percentile(0.01);
  const float hi = percentile(0.99);
  return hi > lo ? std::make_pair(lo, hi) : std::make_pair(hi - 1.0f, hi);
}

// A tile's size in pixels with square pixels in mm.
absl::StatusOr<std::pair<int, int>> TileSize(const MontageInput& input, int tile_size) {
  const double width_mm = input.dims[0] * input.spacing[0];
  const double height_mm = input.dims[1] * input.spacing[1];
  const double mm_per_px = tile_size > 0 ? std::max(width_mm, height_mm) / tile_size
                                         : std::min(input.spacing[0], input.spacing[1]);
  const int w = std::max(1, static_cast<int>(std::lround(width_mm / mm_per_px)));
  const int h = std::max(1, static_cast<int>(std::lround(height_mm / mm_per_px)));
  if (w > kMaxTileSide || h > kMaxTileSide) {
    return Invalid("spacing",
                   absl::StrCat("native tiles would be ", w, "x", h, " px; set options.tile_size"));
  }
  return std::make_pair(w, h);
}

void DrawTile(const MontageInput& input, const MontageOptions& options,
              std::pair<float, float> window, const MontageLayout::Tile& tile, Image* image) {
  const int nx = input.dims[0];
  const int ny = input.dims[1];
  const int64_t slice = int64_t{tile.z} * nx * ny;
  const float scale = 255.0f / (window.second - window.first);
  for (int v = 0; v < tile.height; ++v) {
    int j = std::min(ny - 1, static_cast<int>((v + 0.5) * ny / tile.height));
    if (options.flip_y) j = ny - 1 - j;
    for (int u = 0; u < tile.width; ++u) {
      int i = std::min(nx - 1, static_cast<int>((u + 0.5) * nx / tile.width));
      if (options.flip_x) i = nx - 1 - i;
      const int64_t at = slice + int64_t{j} * nx + i;
      const float grey = std::clamp(((*input.background)[at] - window.first) * scale, 0.f, 255.f);
      const auto g = static_cast<uint8_t>(grey + 0.5f);
      image->SetPixel(tile.x + u, tile.y + v, {g, g, g});
      const uint8_t label = input.labels != nullptr ? (*input.labels)[at] : 0;
      if (label != 0) {
        image->BlendPixel(tile.x + u, tile.y + v, LabelColour(label), options.label_alpha);
      }
    }
  }
}

struct LegendEntry {
  Rgb colour;
  std::string text;
};

// Swatch, a small gap, then the text.
int EntryWidth(const LegendEntry& entry, int scale) {
  return (kGlyphHeight + 3) * scale + TextWidth(entry.text, scale);
}

// Splits entries into lines no wider than `width`.
std::vector<std::vector<LegendEntry>> WrapLegend(const std::vector<LegendEntry>& entries, int width,
                                                 int scale) {
  std::vector<std::vector<LegendEntry>> lines(1);
  int used = 0;
  for (const LegendEntry& entry : entries) {
    const int need = (used > 0 ? 3 * kGlyphAdvance * scale : 0) + EntryWidth(entry, scale);
    if (used > 0 && used + need > width) {
      lines.emplace_back();
      used = 0;
    }
    used += used > 0 ? need : EntryWidth(entry, scale);
    lines.back().push_back(entry);
  }
  return lines;
}

// Draws wrapped legend lines from (x, y); returns the y below them.
int DrawLegend(const std::vector<std::vector<LegendEntry>>& lines, int x, int y, int scale,
               Image* image) {
  const int pitch = (kLineHeight + 3) * scale;
  for (const auto& line : lines) {
    int at = x;
    for (const LegendEntry& entry : line) {
      image->FillRect(at, y, kGlyphHeight * scale, kGlyphHeight * scale, entry.colour);
      DrawText(image, at + (kGlyphHeight + 3) * scale, y, entry.text, kTextColour, scale);
      at += EntryWidth(entry, scale) + 3 * kGlyphAdvance * scale;
    }
    y += pitch;
  }
  return y;
}

}  // namespace

Rgb RouteColour(int route) {
  // Okabe-Ito, which stays distinct under the common colour-vision deficiencies.
  static constexpr Rgb kPalette[] = {{0, 114, 178}, {230, 159, 0}, {86, 180, 233}, {204, 121, 167},
                                     {0, 158, 115}, {213, 94, 0},  {240, 228, 66}};
  if (route <= 0) return {72, 72, 72};
  return kPalette[(route - 1) % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

Rgb LabelColour(uint8_t label) {
  if (label == 1) return {255, 0, 0};                  // necrotic core
  if (label == 2) return {0, 255, 0};                  // edema
  if (label == 3 || label == 4) return {255, 255, 0};  // enhancing
  return {};
}

void SetFlipsFromVoxelToWorld(const std::array<std::array<double, 4>, 4>& voxel_to_world,
                              MontageOptions* options) {
  options->flip_x = voxel_to_world[0][0] > 0;  // i points to the patient's right
  options->flip_y = voxel_to_world[1][1] > 0;  // j points anterior
}

absl::Status ValidateMontageInput(const MontageInput& input) {
  for (int d = 0; d < 3; ++d) {
    if (input.dims[d] < 1) return Invalid("dims", absl::StrCat("dims[", d, "] must be >= 1"));
    if (!(std::isfinite(input.spacing[d]) && input.spacing[d] > 0)) {
      return Invalid("spacing", absl::StrCat("spacing[", d, "] must be positive"));
    }
  }
  const int64_t n = NumVoxels(input);
  if (input.background == nullptr) return Invalid("background", "is required");
  if (static_cast<int64_t>(input.background->size()) != n) {
    return Invalid("background",
                   absl::StrCat("has ", input.background->size(), " values, dims need ", n));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite((*input.background)[i])) {
      return Invalid("background", absl::StrCat("non-finite value at voxel ", i));
    }
  }
  if (input.labels != nullptr) {
    if (static_cast<int64_t>(input.labels->size()) != n) {
      return Invalid("labels",
                     absl::StrCat("has ", input.labels->size(), " values, dims need ", n));
    }
    for (int64_t i = 0; i < n; ++i) {
      if ((*input.labels)[i] > 4) {
        return Invalid("labels", absl::StrCat("value ", (*input.labels)[i], " at voxel ", i,
                                              " is not a BraTS label"));
      }
    }
  }
  if (input.route_names.empty()) return Invalid("route_names", "is empty");
  if (static_cast<int64_t>(input.routes.size()) != input.dims[2]) {
    return Invalid("routes", absl::StrCat("has ", input.routes.size(), " entries, dims[2] is ",
                                          input.dims[2]));
  }
  for (size_t z = 0; z < input.routes.size(); ++z) {
    const int r = input.routes[z];
    if (r < 0 || r >= static_cast<int>(input.route_names.size())) {
      return Invalid(absl::StrCat("routes[", z, "]"),
                     absl::StrCat("route ", r, " has no entry in route_names (",
                                  input.route_names.size(), " names)"));
    }
  }
  return absl::OkStatus();
}

std::vector<int> PickSlices(const MontageInput& input, int tiles) {
  const int nz = input.dims[2];
  const int64_t slice = int64_t{input.dims[0]} * input.dims[1];
  const int n = std::min(tiles, nz);
  if (n < 1) return {};
  std::vector<int64_t> tumour(nz, 0);
  int lo = nz, hi = -1, brain_lo = nz, brain_hi = -1;
  for (int z = 0; z < nz; ++z) {
    for (int64_t k = z * slice; k < (z + 1) * slice; ++k) {
      if (input.labels != nullptr && (*input.labels)[k] != 0) ++tumour[z];
      if ((*input.background)[k] != 0) brain_lo = std::min(brain_lo, z), brain_hi = z;
    }
    if (tumour[z] > 0) lo = std::min(lo, z), hi = z;
  }
  const bool has_tumour = hi >= 0;
  if (!has_tumour) lo = brain_hi >= 0 ? brain_lo : 0, hi = brain_hi >= 0 ? brain_hi : nz - 1;
  // The centres of n equal bins over [lo, hi].
  std::vector<int> picks;
  for (int k = 0; k < n; ++k) picks.push_back(lo + static_cast<int>((k + 0.5) * (hi - lo + 1) / n));
  if (has_tumour) {
    const int largest =
        static_cast<int>(std::max_element(tumour.begin(), tumour.end()) - tumour.begin());
    *std::min_element(picks.begin(), picks.end(), [largest](int a, int b) {
      return std::abs(a - largest) < std::abs(b - largest);
    }) = largest;
  }
  std::set<int> chosen(picks.begin(), picks.end());
  // A short extent gives repeats: fill with its other slices, then with its neighbours.
  for (int z = lo; z <= hi && static_cast<int>(chosen.size()) < n; ++z) chosen.insert(z);
  for (int d = 1; static_cast<int>(chosen.size()) < n; ++d) {
    if (lo - d >= 0) chosen.insert(lo - d);
    if (hi + d < nz && static_cast<int>(chosen.size()) < n) chosen.insert(hi + d);
  }
  return {chosen.begin(), chosen.end()};
}

absl::StatusOr<Image> RenderMontage(const MontageInput& input, const MontageOptions& options,
                                    MontageLayout* layout) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  if (absl::Status s = ValidateMontageInput(input); !s.ok()) return s;
  const absl::StatusOr<std::pair<int, int>> tile_size = TileSize(input, options.tile_size);
  if (!tile_size.ok()) return tile_size.status();
  const auto [tile_w, tile_h] = *tile_size;
  const int nz = input.dims[2];
  const std::vector<int> slices = PickSlices(input, options.tiles);
  const int n = static_cast<int>(slices.size());
  const int cols = std::min(options.columns, n);
  const int rows = (n + cols - 1) / cols;
  const int64_t grid_w_64 = int64_t{cols} * tile_w;
  if (grid_w_64 * rows * tile_h > kMaxPixels) {
    return Invalid("options.tile_size", "the montage would be too large");
  }
  const int s = options.text_scale > 0 ? options.text_scale : (grid_w_64 >= 400 ? 2 : 1);
  const int margin = 8 * s, gap = 4 * s, line = kLineHeight * s, label_h = line + s;
  const int grid_w = cols * tile_w + (cols - 1) * gap;

  std::vector<int> counts(input.route_names.size(), 0);
  for (const int r : input.routes) ++counts[r];
  std::vector<LegendEntry> route_entries, label_entries;
  for (size_t r = 0; r < counts.size(); ++r) {
    route_entries.push_back(
        {RouteColour(static_cast<int>(r)), absl::StrCat(input.route_names[r], " ", counts[r])});
  }
  label_entries = {{LabelColour(1), "necrotic core (1)"},
                   {LabelColour(2), "edema (2)"},
                   {LabelColour(4), "enhancing (4)"}};
  const std::string caption = absl::StrCat("route per slice, z 0-", nz - 1);
  int content_w = std::max({grid_w, TextWidth(input.title, s), TextWidth(caption, s), nz});
  for (const auto* entries : {&route_entries, &label_entries}) {
    for (const LegendEntry& e : *entries) content_w = std::max(content_w, EntryWidth(e, s));
  }
  const auto route_lines = WrapLegend(route_entries, content_w, s);
  const auto label_lines = WrapLegend(label_entries, content_w, s);

  // Vertical layout.
  MontageLayout out;
  int y = margin;
  const int title_y = y;
  if (!input.title.empty()) y += kGlyphHeight * s + margin;
  const int grid_x = margin + (content_w - grid_w) / 2;
  for (int t = 0; t < n; ++t) {
    out.tiles.push_back({slices[t], grid_x + (t % cols) * (tile_w + gap),
                         y + label_h + (t / cols) * (label_h + tile_h + gap), tile_w, tile_h});
  }
  y += rows * (label_h + tile_h) + (rows - 1) * gap + margin;
  const int caption_y = y;
  y += line + s;
  out.strip_x = margin;
  out.strip_y = y;
  out.strip_width = content_w;
  out.strip_height = 10 * s;
  y += out.strip_height;
  const int tick_y = y + s, tick_h = 4 * s;
  y = tick_y + tick_h + margin;
  const int route_legend_y = y;
  y += static_cast<int>(route_lines.size()) * (line + 3 * s);
  y += s * 2;
  const int label_legend_y = y;
  y += static_cast<int>(label_lines.size()) * (line + 3 * s) + margin;

  if (int64_t{content_w + 2 * margin} * y > kMaxPixels) {
    return Invalid("dims", "the montage would be too large");
  }
  Image image = Image::Filled(content_w + 2 * margin, y, kCanvasColour);
  DrawText(&image, margin, title_y, input.title, kTextColour, s);
  const std::pair<float, float> window = IntensityWindow(*input.background);
  for (const MontageLayout::Tile& tile : out.tiles) {
    DrawTile(input, options, window, tile, &image);
    DrawText(&image, tile.x, tile.y - label_h,
             absl::StrCat("z ", tile.z, " ", input.route_names[input.routes[tile.z]]), kTextColour,
             s);
  }
  DrawText(&image, margin, caption_y, caption, kTextColour, s);
  for (int z = 0; z < nz; ++z) {
    const int x0 = out.strip_x + static_cast<int>(int64_t{z} * content_w / nz);
    const int x1 = out.strip_x + static_cast<int>(int64_t{z + 1} * content_w / nz);
    image.FillRect(x0, out.strip_y, x1 - x0, out.strip_height, RouteColour(input.routes[z]));
  }
  for (const MontageLayout::Tile& tile : out.tiles) {
    // An upward triangle under the slice's column.
    const int cx = out.strip_x + static_cast<int>((2 * int64_t{tile.z} + 1) * content_w / (2 * nz));
    for (int r = 0; r < tick_h; ++r) {
      image.FillRect(cx - r / 2, tick_y + r, 2 * (r / 2) + 1, 1, kTickColour);
    }
  }
  DrawLegend(route_lines, margin, route_legend_y, s, &image);
  DrawLegend(label_lines, margin, label_legend_y, s, &image);
  if (layout != nullptr) *layout = std::move(out);
  return image;
}

}  // namespace danet::preview
