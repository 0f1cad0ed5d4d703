// The preview montage the `danet` client writes next to a segmentation: a few axial slices of
// one modality with the predicted labels overlaid, and a strip showing which model the dynamic
// router sent every slice to.
//
// Layout, top to bottom: the title; a grid of tiles, each captioned above with its slice
// index and route name (outside the tile, where it hides no anatomy); a strip with one column
// per axial slice coloured by route, with a tick under each slice shown above; the route
// legend with slice counts; the label legend.
//
// Orientation: tiles are drawn in radiological convention, anterior up and the patient's right
// on the image's left. Which flips that takes depends on where the voxel axes point, so it is
// an option (MontageOptions::flip_x/flip_y); the defaults suit RAS-stored volumes (NIfTI's
// canonical orientation, a positive-diagonal sform such as our phantoms'). BraTS files are
// stored LPS (sform diagonal -1, -1, 1) and need no flip; SetFlipsFromVoxelToWorld picks the
// flips from a volume's voxel-to-world matrix.
//
// Pure functions of their inputs; thread-safe. The input's vectors are borrowed for the
// duration of the call only.
#ifndef DANET_CLIENT_PREVIEW_MONTAGE_H_
#define DANET_CLIENT_PREVIEW_MONTAGE_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/preview/png.h"

namespace danet::preview {

// What to draw. No patient data belongs in `title`: the PNG may leave the hospital network.
struct MontageInput {
  std::array<int, 3> dims{};                       // x, y, z voxels; x fastest in the arrays below
  std::array<double, 3> spacing{1, 1, 1};          // mm; x and y set the tiles' aspect ratio
  const std::vector<float>* background = nullptr;  // one modality (e.g. FLAIR), required
  // BraTS labels: 0 background, 1 necrotic core, 2 edema, 4 enhancing (3 is drawn as
  // enhancing, BraTS 2023's numbering). nullptr: no overlay, tiles spread through the brain.
  const std::vector<uint8_t>* labels = nullptr;
  std::vector<int> routes;               // per axial slice z: 0 skip, i = model i
  std::vector<std::string> route_names;  // route index -> name, e.g. {"skip", "M1", ..., "M4"}
  std::string title;                     // e.g. "case 0001  dynamic  344 GMACs (24.8% of M4)"
};

// How to draw it.
struct MontageOptions {
  int tiles = 6;             // slices shown; fewer when the volume has fewer slices
  int columns = 3;           // tiles per row
  int tile_size = 0;         // a tile's longer side in pixels; 0 = native (1 px per finest voxel)
  int text_scale = 0;        // font pixel size; 0 = auto (2 for tile grids 400 px wide or more)
  double label_alpha = 0.5;  // opacity of the label overlay, 0..1
  bool flip_x = true;        // draw voxel x from right to left (x points to the patient's right)
  bool flip_y = true;        // draw voxel y from bottom to top (y points anterior)
};

// Where RenderMontage put things, for callers that annotate the image further and for tests.
struct MontageLayout {
  struct Tile {
    int z = 0;  // axial slice shown
    int x = 0, y = 0, width = 0, height = 0;
  };
  std::vector<Tile> tiles;  // in increasing z
  // The route strip: slice z fills columns [x + z * width / nz, x + (z + 1) * width / nz).
  int strip_x = 0, strip_y = 0, strip_width = 0, strip_height = 0;
};

// Renders the montage. InvalidArgument naming the field (e.g. "routes[12]", "background",
// "options.columns") when the input or options are inconsistent; `layout`, when not null,
// receives the positions of the tiles and the strip.
absl::StatusOr<Image> RenderMontage(const MontageInput& input, const MontageOptions& options = {},
                                    MontageLayout* layout = nullptr);

// The checks RenderMontage makes on its input, for callers that want them early.
absl::Status ValidateMontageInput(const MontageInput& input);

// The axial slices RenderMontage shows, ascending: with a tumour, the slice of largest tumour
// area plus slices spread across the tumour's z extent (then its neighbours when it spans
// fewer than `tiles` slices); without one, slices evenly spaced through the brain (slices with
// nonzero background). Requires a valid input.
std::vector<int> PickSlices(const MontageInput& input, int tiles);

// The colour of route `route` in the strip and legend: dark grey for 0 (skip), then a
// colour-blind-safe palette (cycling past its end).
Rgb RouteColour(int route);

// The overlay colour of a BraTS label: necrotic core (1) red, edema (2) green, enhancing (3
// or 4) yellow; black for others.
Rgb LabelColour(uint8_t label);

// Sets options->flip_x/flip_y for radiological display from a volume's voxel-to-world matrix
// (NIfTI world axes are RAS: +x right, +y anterior). Uses the world x component of voxel axis
// i and the world y component of axis j, which suits the near-axial grids BraTS uses.
void SetFlipsFromVoxelToWorld(const std::array<std::array<double, 4>, 4>& voxel_to_world,
                              MontageOptions* options);

}  // namespace danet::preview

#endif  // DANET_CLIENT_PREVIEW_MONTAGE_H_
