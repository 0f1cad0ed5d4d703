#include "models/volume/nifti.h"

#include <nifti1.h>
#include <nifti2.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "models/volume/gzip.h"
#include "models/volume/resample.h"

namespace danet::volume {
namespace {

constexpr int kNifti1HeaderSize = 348;
constexpr int kNifti2HeaderSize = 540;

template <typename T>
T Swapped(T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  std::reverse(bytes, bytes + sizeof(T));
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

template <typename T>
T Fix(T value, bool swap) {
  return swap ? Swapped(value) : value;
}

// The fields we use, from either header version, in native byte order.
struct Header {
  int version = 1;
  bool swap = false;
  int64_t dim[8] = {};
  double pixdim[8] = {};
  int datatype = 0;
  int64_t vox_offset = 0;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern[3] = {}, qoffset[3] = {};
  double srow[3][4] = {};
  int xyzt_units = 0;
};

absl::Status Bad(const std::string& name, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", problem));
}

template <typename H>
void CopySpatial(const H& h, bool swap, Header* out) {
  for (int i = 0; i < 8; ++i) {
    out->dim[i] = Fix(h.dim[i], swap);
    out->pixdim[i] = Fix(h.pixdim[i], swap);
  }
  out->datatype = Fix(h.datatype, swap);
  // NIfTI-1 stores vox_offset as a float: one that is NaN or beyond int64 becomes -1, which the
  // decoder refuses as pointing inside the header (casting it would be undefined behaviour).
  const double vox_offset = static_cast<double>(Fix(h.vox_offset, swap));
  out->vox_offset = std::isfinite(vox_offset) && std::abs(vox_offset) < 0x1p62
                        ? static_cast<int64_t>(vox_offset)
                        : -1;
  out->scl_slope = Fix(h.scl_slope, swap);
  out->scl_inter = Fix(h.scl_inter, swap);
  out->qform_code = Fix(h.qform_code, swap);
  out->sform_code = Fix(h.sform_code, swap);
  out->quatern[0] = Fix(h.quatern_b, swap);
  out->quatern[1] = Fix(h.quatern_c, swap);
  out->quatern[2] = Fix(h.quatern_d, swap);
  out->qoffset[0] = Fix(h.qoffset_x, swap);
  out->qoffset[1] = Fix(h.qoffset_y, swap);
  out->qoffset[2] = Fix(h.qoffset_z, swap);
  for (int c = 0; c < 4; ++c) {
    out->srow[0][c] = Fix(h.srow_x[c], swap);
    out->srow[1][c] = Fix(h.srow_y[c], swap);
    out->srow[2][c] = Fix(h.srow_z[c], swap);
  }
  out->xyzt_units = Fix(h.xyzt_units, swap);
}

absl::StatusOr<Header> ParseHeader(std::string_view data, const std::string& name) {
  if (data.size() < 4) return Bad(name, "file too short to be NIfTI (under 4 bytes)");
  int32_t size;
  std::memcpy(&size, data.data(), 4);
  Header header;
  if (size == kNifti1HeaderSize || Swapped(size) == kNifti1HeaderSize) {
    header.swap = size != kNifti1HeaderSize;
    if (data.size() < kNifti1HeaderSize) return Bad(name, "truncated NIfTI-1 header");
    nifti_1_header h;
    std::memcpy(&h, data.data(), sizeof(h));
    if (std::memcmp(h.magic, "ni1", 4) == 0) {
      return Bad(name, "two-file NIfTI (.hdr/.img) is not supported: convert it to .nii");
    }
    if (std::memcmp(h.magic, "n+1", 4) != 0) return Bad(name, "bad NIfTI-1 magic");
    CopySpatial(h, header.swap, &header);
    header.version = 1;
  } else if (size == kNifti2HeaderSize || Swapped(size) == kNifti2HeaderSize) {
    header.swap = size != kNifti2HeaderSize;
    if (data.size() < kNifti2HeaderSize) return Bad(name, "truncated NIfTI-2 header");
    nifti_2_header h;
    std::memcpy(&h, data.data(), sizeof(h));
    if (std::memcmp(h.magic, "n+2\0\r\n\032\n", 8) != 0) {
      return Bad(name, "bad NIfTI-2 magic (two-file NIfTI-2 is not supported)");
    }
    CopySpatial(h, header.swap, &header);
    header.version = 2;
  } else {
    return Bad(name, absl::StrCat("not a NIfTI file: header size field is ", size,
                                  " (NIfTI-1 has 348, NIfTI-2 540)"));
  }
  return header;
}

absl::Status CheckDims(const Header& h, const std::string& name, const NiftiLimits& limits) {
  const int64_t ndim = h.dim[0];
  if (ndim < 3 || ndim > 7) {
    return Bad(name, absl::StrCat("has ", ndim, " dimensions; a 3-D volume is needed"));
  }
  for (int64_t d = 4; d <= ndim; ++d) {
    if (h.dim[d] != 1) {
      return Bad(name, absl::StrCat("is ", ndim, "-D with dim[", d, "] = ", h.dim[d],
                                    "; one 3-D volume per file is needed"));
    }
  }
  int64_t voxels = 1;
  for (int d = 1; d <= 3; ++d) {
    if (h.dim[d] < 1 || h.dim[d] > limits.max_dim) {
      return Bad(name,
                 absl::StrCat("dim[", d, "] = ", h.dim[d], " is outside 1..", limits.max_dim));
    }
    voxels *= h.dim[d];
    if (!(h.pixdim[d] > 0) || !std::isfinite(h.pixdim[d])) {
      return Bad(name, absl::StrCat("pixdim[", d, "] = ", h.pixdim[d],
                                    ": voxel spacing must be positive"));
    }
  }
  if (voxels > limits.max_voxels) {
    return Bad(name, absl::StrCat(voxels, " voxels exceed the limit of ", limits.max_voxels));
  }
  return absl::OkStatus();
}

// Bytes per voxel of the datatypes we read, 0 for the rest.
int BytesPerVoxel(int datatype) {
  switch (datatype) {
    case DT_UINT8:
    case DT_INT8:
      return 1;
    case DT_INT16:
    case DT_UINT16:
      return 2;
    case DT_INT32:
    case DT_UINT32:
    case DT_FLOAT32:
      return 4;
    case DT_INT64:
    case DT_UINT64:
    case DT_FLOAT64:
      return 8;
    default:
      return 0;
  }
}

template <typename T>
void Convert(const char* src, int64_t n, bool swap, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(Fix(v, swap));
  }
}

void ConvertAny(int datatype, const char* src, int64_t n, bool swap, float* dst) {
  switch (datatype) {
    case DT_UINT8:
      return Convert<uint8_t>(src, n, swap, dst);
    case DT_INT8:
      return Convert<int8_t>(src, n, swap, dst);
    case DT_INT16:
      return Convert<int16_t>(src, n, swap, dst);
    case DT_UINT16:
      return Convert<uint16_t>(src, n, swap, dst);
    case DT_INT32:
      return Convert<int32_t>(src, n, swap, dst);
    case DT_UINT32:
      return Convert<uint32_t>(src, n, swap, dst);
    case DT_FLOAT32:
      return Convert<float>(src, n, swap, dst);
    case DT_INT64:
      return Convert<int64_t>(src, n, swap, dst);
    case DT_UINT64:
      return Convert<uint64_t>(src, n, swap, dst);
    case DT_FLOAT64:
      return Convert<double>(src, n, swap, dst);
    default:
      return;
  }
}

Geometry ToGeometry(const Header& h) {
  Geometry g;
  for (int d = 0; d < 3; ++d) {
    g.dims[d] = h.dim[d + 1];
    g.spacing[d] = h.pixdim[d + 1];
  }
  g.nifti_version = h.version;
  g.qform_code = h.qform_code;
  g.sform_code = h.sform_code;
  for (int i = 0; i < 3; ++i) {
    g.quatern[i] = h.quatern[i];
    g.qoffset[i] = h.qoffset[i];
    for (int c = 0; c < 4; ++c) g.srow[i][c] = h.srow[i][c];
  }
  g.qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
  g.xyzt_units = h.xyzt_units;
  return g;
}

// The world transform in use (the sform, else the qform) must be finite and invertible: a NaN
// or singular matrix cannot place the grid in space, and resampling through it reads nothing.
absl::Status CheckTransform(const Geometry& g, const std::string& name) {
  if (!HasWorldTransform(g)) return absl::OkStatus();
  const char* which = g.sform_code > 0 ? "sform" : "qform";
  const Matrix4 m = g.VoxelToWorld();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) {
      if (!std::isfinite(m[r][c])) {
        return Bad(name, absl::StrCat(which, " holds a NaN or infinite value"));
      }
    }
  }
  const double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
                     m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                     m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  if (!(std::abs(det) > 1e-9)) {
    return Bad(name, absl::StrCat(which, " is singular (determinant ", det,
                                  "): the voxel grid cannot be placed in space"));
  }
  return absl::OkStatus();
}

template <typename H>
void FillHeader(const Geometry& g, int datatype, int bitpix, H* h) {
  h->dim[0] = 3;
  for (int d = 0; d < 3; ++d) {
    h->dim[d + 1] = g.dims[d];
    h->pixdim[d + 1] = g.spacing[d];
  }
  for (int d = 4; d < 8; ++d) h->dim[d] = 1;
  h->pixdim[0] = g.qfac;
  h->datatype = datatype;
  h->bitpix = bitpix;
  h->qform_code = g.qform_code;
  h->sform_code = g.sform_code;
  h->quatern_b = g.quatern[0];
  h->quatern_c = g.quatern[1];
  h->quatern_d = g.quatern[2];
  h->qoffset_x = g.qoffset[0];
  h->qoffset_y = g.qoffset[1];
  h->qoffset_z = g.qoffset[2];
  for (int c = 0; c < 4; ++c) {
    h->srow_x[c] = g.srow[0][c];
    h->srow_y[c] = g.srow[1][c];
    h->srow_z[c] = g.srow[2][c];
  }
  h->xyzt_units = g.xyzt_units;
}

// Header + 4-byte empty extension flag + raw voxels, in the geometry's NIfTI version.
std::string Encode(const Geometry& g, int datatype, int bitpix, const void* voxels,
                   size_t voxel_bytes) {
  std::string out;
  if (g.nifti_version == 2) {
    nifti_2_header h{};
    h.sizeof_hdr = kNifti2HeaderSize;
    std::memcpy(h.magic, "n+2\0\r\n\032\n", 8);
    FillHeader(g, datatype, bitpix, &h);
    h.vox_offset = kNifti2HeaderSize + 4;
    out.assign(reinterpret_cast<const char*>(&h), sizeof(h));
  } else {
    nifti_1_header h{};
    h.sizeof_hdr = kNifti1HeaderSize;
    std::memcpy(h.magic, "n+1", 4);
    FillHeader(g, datatype, bitpix, &h);
    h.vox_offset = kNifti1HeaderSize + 4;
    out.assign(reinterpret_cast<const char*>(&h), sizeof(h));
  }
  out.append(4, '\0');
  out.append(static_cast<const char*>(voxels), voxel_bytes);
  return out;
}

absl::StatusOr<std::string> MaybeGzip(std::string raw, bool gzip) {
  if (!gzip) return raw;
  return Gzip(raw);
}

// Inflates `bytes` when gzip (all of it, within the limits' bound; or only the header when
// `header_only`), parses the header and checks its dims. `bytes` is left pointing at the
// (inflated) data, which `inflated` holds.
absl::StatusOr<Header> OpenNifti(std::string_view* bytes, const std::string& name,
                                 const NiftiLimits& limits, bool header_only,
                                 std::string* inflated) {
  if (IsGzip(*bytes)) {
    const int64_t max_bytes = limits.max_voxels * 8 + 64 * 1024 * 1024;  // data + extensions
    absl::StatusOr<std::string> raw =
        header_only ? GunzipPrefix(*bytes, kNifti2HeaderSize) : Gunzip(*bytes, max_bytes);
    if (!raw.ok()) return Bad(name, std::string(raw.status().message()));
    *inflated = *std::move(raw);
    *bytes = *inflated;
  }
  absl::StatusOr<Header> header = ParseHeader(*bytes, name);
  if (!header.ok()) return header.status();
  if (absl::Status s = CheckDims(*header, name, limits); !s.ok()) return s;
  if (absl::Status s = CheckTransform(ToGeometry(*header), name); !s.ok()) return s;
  return header;
}

}  // namespace

absl::StatusOr<Geometry> PeekNiftiGeometry(std::string_view bytes, const std::string& name,
                                           const NiftiLimits& limits) {
  std::string inflated;
  absl::StatusOr<Header> header = OpenNifti(&bytes, name, limits, /*header_only=*/true, &inflated);
  if (!header.ok()) return header.status();
  return ToGeometry(*header);
}

absl::StatusOr<Volume> DecodeNifti(std::string_view bytes, const std::string& name,
                                   const NiftiLimits& limits) {
  std::string inflated;
  absl::StatusOr<Header> header = OpenNifti(&bytes, name, limits, /*header_only=*/false, &inflated);
  if (!header.ok()) return header.status();
  const int size = BytesPerVoxel(header->datatype);
  if (size == 0) {
    return Bad(name, absl::StrCat("unsupported datatype ", header->datatype,
                                  " (supported: 8/16/32/64-bit integers, float32, float64)"));
  }
  Volume volume;
  volume.geometry = ToGeometry(*header);
  const int64_t n = volume.geometry.NumVoxels();
  const int64_t header_size = header->version == 2 ? kNifti2HeaderSize : kNifti1HeaderSize;
  if (header->vox_offset < header_size) {
    return Bad(name, absl::StrCat("vox_offset ", header->vox_offset, " points inside the header"));
  }
  const int64_t available = static_cast<int64_t>(bytes.size()) - header->vox_offset;
  if (available < n * size) {
    return Bad(name, absl::StrCat("truncated: ", n * size, " bytes of voxel data expected, ",
                                  std::max<int64_t>(available, 0), " present"));
  }
  volume.voxels.resize(n);
  ConvertAny(header->datatype, bytes.data() + header->vox_offset, n, header->swap,
             volume.voxels.data());
  const double slope = header->scl_slope, inter = header->scl_inter;
  if (slope != 0 && std::isfinite(slope) && std::isfinite(inter) && !(slope == 1 && inter == 0)) {
    for (float& v : volume.voxels) v = static_cast<float>(v * slope + inter);
  }
  const int64_t bad = std::count_if(volume.voxels.begin(), volume.voxels.end(),
                                    [](float v) { return !std::isfinite(v); });
  if (bad > 0) return Bad(name, absl::StrCat("contains ", bad, " NaN or infinite voxels"));
  return volume;
}

absl::StatusOr<LabelVolume> DecodeNiftiLabels(std::string_view bytes, const std::string& name,
                                              const NiftiLimits& limits) {
  absl::StatusOr<Volume> volume = DecodeNifti(bytes, name, limits);
  if (!volume.ok()) return volume.status();
  LabelVolume labels;
  labels.geometry = volume->geometry;
  labels.labels.resize(volume->voxels.size());
  for (size_t i = 0; i < volume->voxels.size(); ++i) {
    const float v = volume->voxels[i];
    if (v < 0 || v > 255 || v != std::floor(v)) {
      return Bad(name, absl::StrCat("label value ", v, " is not an integer in 0..255"));
    }
    labels.labels[i] = static_cast<uint8_t>(v);
  }
  return labels;
}

absl::StatusOr<std::string> ReadFileBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot be read"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

absl::Status WriteFileBytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) return absl::InternalError(absl::StrCat(path.string(), ": cannot write"));
  return absl::OkStatus();
}

absl::StatusOr<Volume> ReadNifti(const std::filesystem::path& path, const NiftiLimits& limits) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeNifti(*bytes, path.filename().string(), limits);
}

absl::StatusOr<LabelVolume> ReadNiftiLabels(const std::filesystem::path& path,
                                            const NiftiLimits& limits) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeNiftiLabels(*bytes, path.filename().string(), limits);
}

absl::StatusOr<std::string> EncodeNiftiLabels(const LabelVolume& labels, bool gzip) {
  return MaybeGzip(Encode(labels.geometry, DT_UINT8, 8, labels.labels.data(), labels.labels.size()),
                   gzip);
}

absl::StatusOr<std::string> EncodeNiftiImage(const Volume& image, ImageStorage storage, bool gzip) {
  if (storage == ImageStorage::kFloat32) {
    return MaybeGzip(Encode(image.geometry, DT_FLOAT32, 32, image.voxels.data(),
                            image.voxels.size() * sizeof(float)),
                     gzip);
  }
  std::vector<int16_t> rounded(image.voxels.size());
  for (size_t i = 0; i < rounded.size(); ++i) {
    rounded[i] = static_cast<int16_t>(std::clamp(std::lround(image.voxels[i]), -32768L, 32767L));
  }
  return MaybeGzip(
      Encode(image.geometry, DT_INT16, 16, rounded.data(), rounded.size() * sizeof(int16_t)), gzip);
}

absl::Status WriteNiftiLabels(const std::filesystem::path& path, const LabelVolume& labels) {
  absl::StatusOr<std::string> bytes =
      EncodeNiftiLabels(labels, absl::EndsWith(path.string(), ".gz"));
  if (!bytes.ok()) return bytes.status();
  return WriteFileBytes(path, *bytes);
}

absl::Status WriteNiftiImage(const std::filesystem::path& path, const Volume& image,
                             ImageStorage storage) {
  absl::StatusOr<std::string> bytes =
      EncodeNiftiImage(image, storage, absl::EndsWith(path.string(), ".gz"));
  if (!bytes.ok()) return bytes.status();
  return WriteFileBytes(path, *bytes);
}

}  // namespace danet::volume
