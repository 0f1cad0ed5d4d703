#include "models/dicom/jpeg2000.h"

#include <openjpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace danet::volume {
namespace {

// The codestream in memory, read through OpenJPEG's stream callbacks.
struct Buffer {
  const uint8_t* data;
  size_t size;
  size_t position = 0;
};

OPJ_SIZE_T Read(void* out, OPJ_SIZE_T n, void* user) {
  auto* b = static_cast<Buffer*>(user);
  if (b->position >= b->size) return static_cast<OPJ_SIZE_T>(-1);  // end of stream
  n = std::min<OPJ_SIZE_T>(n, b->size - b->position);
  std::memcpy(out, b->data + b->position, n);
  b->position += n;
  return n;
}

OPJ_OFF_T Skip(OPJ_OFF_T n, void* user) {
  auto* b = static_cast<Buffer*>(user);
  const OPJ_OFF_T room =
      n < 0 ? -static_cast<OPJ_OFF_T>(b->position) : static_cast<OPJ_OFF_T>(b->size - b->position);
  n = n < 0 ? std::max(n, room) : std::min(n, room);
  b->position = static_cast<size_t>(static_cast<OPJ_OFF_T>(b->position) + n);
  return n;
}

OPJ_BOOL Seek(OPJ_OFF_T to, void* user) {
  auto* b = static_cast<Buffer*>(user);
  if (to < 0 || static_cast<size_t>(to) > b->size) return OPJ_FALSE;
  b->position = static_cast<size_t>(to);
  return OPJ_TRUE;
}

void Quiet(const char*, void*) {}

constexpr int64_t kMaxTiles = 4096;  // OpenJPEG's messages: our error says what failed

struct CodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct StreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct ImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

}  // namespace

absl::StatusOr<std::vector<int32_t>> DecodeJpeg2000(const uint8_t* data, size_t size, int columns,
                                                    int rows) {
  static constexpr uint8_t kJp2Signature[] = {0, 0, 0, 0x0c, 'j', 'P', ' ', ' '};
  static constexpr uint8_t kJ2kStart[] = {0xff, 0x4f, 0xff, 0x51};  // SOC, SIZ
  OPJ_CODEC_FORMAT format;
  if (size >= sizeof(kJp2Signature) && std::memcmp(data, kJp2Signature, 8) == 0) {
    format = OPJ_CODEC_JP2;
  } else if (size >= sizeof(kJ2kStart) && std::memcmp(data, kJ2kStart, 4) == 0) {
    format = OPJ_CODEC_J2K;
  } else {
    return absl::InvalidArgumentError("JPEG 2000: no codestream (bad start marker)");
  }
  // The SIZ segment first, by hand: OpenJPEG's header read allocates per tile, so the image
  // size, the component count and the tile count are checked before it runs.
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const size_t siz = bytes.find(std::string_view("\xff\x4f\xff\x51", 4));
  if (siz == std::string_view::npos || size - siz < 42) {
    return absl::InvalidArgumentError("JPEG 2000: no image and tile size (SIZ) segment");
  }
  auto u32 = [&](size_t at) -> int64_t {
    return int64_t{data[at]} << 24 | int64_t{data[at + 1]} << 16 | int64_t{data[at + 2]} << 8 |
           data[at + 3];
  };
  const int64_t x_end = u32(siz + 8), y_end = u32(siz + 12);
  const int64_t width = x_end - u32(siz + 16), height = y_end - u32(siz + 20);
  const int64_t tile_w = u32(siz + 24), tile_h = u32(siz + 28);
  const int64_t tile_x0 = u32(siz + 32), tile_y0 = u32(siz + 36);
  const int components = data[siz + 40] << 8 | data[siz + 41];
  if (width != columns || height != rows) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000: the codestream is ", width, "x",
                                                   height, ", the DICOM frame ", columns, "x",
                                                   rows));
  }
  if (components != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG 2000: ", components, " components (grey-scale has one)"));
  }
  if (tile_w <= 0 || tile_h <= 0 || tile_x0 > x_end || tile_y0 > y_end ||
      ((x_end - tile_x0 + tile_w - 1) / tile_w) * ((y_end - tile_y0 + tile_h - 1) / tile_h) >
          kMaxTiles) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000: tiles of ", tile_w, "x", tile_h,
                                                   " (at most ", kMaxTiles, " tiles decoded)"));
  }
  std::unique_ptr<opj_codec_t, CodecDeleter> codec(opj_create_decompress(format));
  Buffer buffer{data, size};
  std::unique_ptr<opj_stream_t, StreamDeleter> stream(opj_stream_create(1 << 16, OPJ_TRUE));
  if (!codec || !stream) return absl::ResourceExhaustedError("JPEG 2000: no decoder");
  opj_set_error_handler(codec.get(), Quiet, nullptr);
  opj_set_warning_handler(codec.get(), Quiet, nullptr);
  opj_set_info_handler(codec.get(), Quiet, nullptr);
  opj_stream_set_user_data(stream.get(), &buffer, nullptr);
  opj_stream_set_user_data_length(stream.get(), size);
  opj_stream_set_read_function(stream.get(), Read);
  opj_stream_set_skip_function(stream.get(), Skip);
  opj_stream_set_seek_function(stream.get(), Seek);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  if (!opj_setup_decoder(codec.get(), &parameters)) {
    return absl::InternalError("JPEG 2000: decoder set-up failed");
  }
  opj_image_t* raw = nullptr;
  if (!opj_read_header(stream.get(), codec.get(), &raw)) {
    return absl::InvalidArgumentError("JPEG 2000: unreadable header");
  }
  std::unique_ptr<opj_image_t, ImageDeleter> image(raw);
  // As the SIZ segment said (checked above), now as OpenJPEG read it.
  if (image->numcomps != 1 || static_cast<int64_t>(image->x1) - image->x0 != columns ||
      static_cast<int64_t>(image->y1) - image->y0 != rows) {
    return absl::InvalidArgumentError("JPEG 2000: the header disagrees with its SIZ segment");
  }
  if (!opj_decode(codec.get(), stream.get(), image.get()) ||
      !opj_end_decompress(codec.get(), stream.get())) {
    return absl::InvalidArgumentError("JPEG 2000: damaged codestream");
  }
  const opj_image_comp_t& component = image->comps[0];
  if (component.data == nullptr || component.w != static_cast<OPJ_UINT32>(columns) ||
      component.h != static_cast<OPJ_UINT32>(rows) || component.dx != 1 || component.dy != 1) {
    return absl::InvalidArgumentError("JPEG 2000: the component is subsampled or empty");
  }
  if (component.prec > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG 2000: ", component.prec, "-bit samples (at most 16 supported)"));
  }
  return std::vector<int32_t>(component.data, component.data + static_cast<size_t>(columns) * rows);
}

}  // namespace danet::volume
