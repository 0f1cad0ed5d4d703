#include "server/core/upload.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/dicom/element_scan.h"
#include "models/engine/preprocess.h"
#include "models/volume/parallel.h"

namespace danet::service {
namespace {

constexpr std::string_view kCut = "...";

void AppendEscaped(unsigned char c, std::string* out) {
  constexpr char kHex[] = "0123456789abcdef";
  *out += "\\x";
  *out += kHex[c >> 4];
  *out += kHex[c & 15];
}

// The client's base name of file `index`, quoted for messages.
std::string BaseName(const v1::Header& header, int index) {
  const std::string& name = header.files(index).name();
  const size_t slash = name.find_last_of('/');
  return ClientText(slash == std::string::npos ? std::string_view(name)
                                               : std::string_view(name).substr(slash + 1));
}

// How a file is named in messages: its index and the client's base name.
std::string FileLabel(const v1::Header& header, int index) {
  return absl::StrCat("files[", index, "] '", BaseName(header, index), "'");
}

// DICOM: instances, not one file per modality; the modality map, when given, must be valid.
absl::Status CheckDicomHeader(const v1::Header& header) {
  if (header.files_size() == 0) {
    return absl::InvalidArgumentError("header.files: no DICOM instances");
  }
  for (const auto& [uid, modality] : header.series_modalities()) {
    if (volume::ModalityIndex(modality) < 0) {
      return absl::InvalidArgumentError(absl::StrCat("header.series_modalities['", ClientText(uid),
                                                     "']: '", ClientText(modality, 16),
                                                     "' is not flair, t1ce, t1 or t2"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ClientText(std::string_view text, size_t max_chars) {
  std::string out;
  size_t fits = 0;  // the longest prefix, ending between escapes, that leaves room for kCut
  size_t i = 0;
  for (; i < text.size() && out.size() <= max_chars; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      AppendEscaped(c, &out);
    }
    if (out.size() + kCut.size() <= max_chars) fits = out.size();
  }
  if (i == text.size() && out.size() <= max_chars) return out;
  out.resize(fits);
  out += kCut.substr(0, max_chars - fits);
  return out;
}

Upload::Upload(v1::Header header, const UploadLimits& limits)
    : header_(std::move(header)), limits_(limits), lease_(limits.memory) {}

absl::StatusOr<std::unique_ptr<Upload>> Upload::Create(const v1::Header& header,
                                                       const std::vector<std::string>& modalities,
                                                       const UploadLimits& limits) {
  if (header.input_kind() != v1::INPUT_KIND_NIFTI && header.input_kind() != v1::INPUT_KIND_DICOM) {
    return absl::InvalidArgumentError(
        "header.input_kind: must be INPUT_KIND_NIFTI or INPUT_KIND_DICOM");
  }
  for (int output : header.outputs()) {
    if (output == v1::OUTPUT_KIND_DICOM_SEG && header.input_kind() != v1::INPUT_KIND_DICOM) {
      return absl::InvalidArgumentError("header.outputs: a DICOM SEG needs DICOM input");
    }
    if (output != v1::OUTPUT_KIND_LABELMAP_NIFTI && output != v1::OUTPUT_KIND_DICOM_SEG) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.outputs: unsupported output kind ", output));
    }
  }
  if (header.policy().size() > kMaxPolicyChars) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.policy: ", header.policy().size(), " characters, more than the ", kMaxPolicyChars,
        " a policy may have ('", ClientText(header.policy(), 24), "')"));
  }
  auto upload = std::unique_ptr<Upload>(new Upload(header, limits));
  const absl::Status files = header.input_kind() == v1::INPUT_KIND_DICOM
                                 ? CheckDicomHeader(header)
                                 : upload->MapModalities(modalities);
  if (!files.ok()) return files;
  if (header.input_kind() == v1::INPUT_KIND_DICOM && !header.series_rules().empty()) {
    if (header.series_rules().size() > kMaxSeriesRulesBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.series_rules: ", header.series_rules().size(), " bytes, more than ",
                       kMaxSeriesRulesBytes));
    }
    absl::StatusOr<volume::SeriesRules> rules =
        volume::SeriesRules::Parse(header.series_rules(), "header.series_rules");
    if (!rules.ok()) {
      return absl::InvalidArgumentError(ClientText(std::string(rules.status().message()), 240));
    }
    upload->request_rules_ = *std::move(rules);
  }
  uint64_t declared = 0;
  for (const v1::InputFile& file : header.files()) declared += file.size();
  if (declared > static_cast<uint64_t>(limits.max_upload_bytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("header.files: the declared sizes add up to ", declared,
                     " bytes, over this server's upload limit of ", limits.max_upload_bytes));
  }
  upload->files_.resize(header.files_size());
  return upload;
}

absl::Status Upload::MapModalities(const std::vector<std::string>& modalities) {
  const v1::Header& header = header_;
  std::vector<int> file_of_modality(modalities.size(), -1);
  for (int i = 0; i < header.files_size(); ++i) {
    const v1::InputFile& file = header.files(i);
    int m = 0;
    while (m < static_cast<int>(modalities.size()) && modalities[m] != file.modality()) ++m;
    if (m == static_cast<int>(modalities.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "header.", FileLabel(header, i), ": modality '", ClientText(file.modality(), 16),
          "' is not one of ", absl::StrJoin(modalities, ", ")));
    }
    if (file_of_modality[m] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "header.", FileLabel(header, i), ": modality '", ClientText(file.modality(), 16),
          "' repeats ", FileLabel(header, file_of_modality[m])));
    }
    file_of_modality[m] = i;
    modality_of_file_.push_back(volume::ModalityIndex(file.modality()));
  }
  for (size_t m = 0; m < modalities.size(); ++m) {
    if (file_of_modality[m] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.files: no file for modality '", modalities[m], "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status Upload::Add(const v1::Chunk& chunk) {
  if (complete()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk for files[", chunk.file_index(), "] after every file was complete"));
  }
  if (chunk.file_index() >= static_cast<uint32_t>(files_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("chunk.file_index ", chunk.file_index(),
                                                   " is out of range (", files_.size(),
                                                   " files in the header)"));
  }
  const int index = static_cast<int>(chunk.file_index());
  if (index != current_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk out of order: got a chunk of ", FileLabel(header_, index), " while ",
        FileLabel(header_, current_), " is incomplete (files are sent in header order)"));
  }
  std::string& bytes = files_[index];
  if (chunk.offset() != bytes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk out of order: ", FileLabel(header_, index), " chunk at offset ",
                     chunk.offset(), ", expected ", bytes.size()));
  }
  bytes_received_ += static_cast<int64_t>(chunk.data().size());
  if (bytes_received_ > limits_.max_upload_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(FileLabel(header_, index),
                                                     ": the upload passed this server's limit of ",
                                                     limits_.max_upload_bytes, " bytes"));
  }
  const uint64_t declared = header_.files(index).size();
  if (declared > 0 && bytes.size() + chunk.data().size() > declared) {
    return absl::InvalidArgumentError(absl::StrCat(FileLabel(header_, index), ": more than the ",
                                                   declared, " bytes declared in the header"));
  }
  if (absl::Status s = lease_.Resize(bytes_received_, "buffering this upload"); !s.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(FileLabel(header_, index), ": ", s.message()));
  }
  // The declared size is reserved with the first chunk, so the file is written once into one
  // buffer rather than through a chain of doubling ones, each of whose fresh pages faults
  // (docs/benchmarks.md). A reservation is address space: its pages become resident only as
  // chunks are written into them. At most kMaxReservation, so that a client's declaration
  // alone cannot make the server ask for a large block (files beyond it grow as they arrive).
  constexpr uint64_t kMaxReservation = uint64_t{64} << 20;
  if (bytes.empty() && declared > 0) bytes.reserve(std::min(declared, kMaxReservation));
  bytes.append(chunk.data());
  if (chunk.last()) {
    if (declared > 0 && bytes.size() != declared) {
      return absl::InvalidArgumentError(absl::StrCat(FileLabel(header_, index), ": got ",
                                                     bytes.size(), " bytes, the header declared ",
                                                     declared));
    }
    ++current_;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Upload::EstimateJobBytes() const {
  int64_t voxels = 0;
  int64_t slice_pixels = 0;
  if (header_.input_kind() == v1::INPUT_KIND_DICOM) {
    // Rows, Columns and frames from each instance's header (compressed or multi-frame alike);
    // the upload holds four series of the grid (extra series only make this larger). A file
    // whose header cannot be read counts as 16-bit pixels of its size (decoding will refuse it).
    int64_t pixels = 0;
    for (const std::string& file : files_) {
      absl::StatusOr<volume::DicomImageSize> size = volume::PeekDicomImageSize(file);
      if (!size.ok() || size->rows == 0 || size->columns == 0) {
        pixels += static_cast<int64_t>(file.size()) / 2;
        continue;
      }
      pixels += int64_t{size->rows} * size->columns * size->frames;
      slice_pixels = std::max(slice_pixels, engine::PaddedSliceExtent(size->rows) *
                                                engine::PaddedSliceExtent(size->columns));
    }
    voxels = pixels / volume::kNumModalities;
  } else {
    for (size_t i = 0; i < files_.size(); ++i) {
      absl::StatusOr<volume::Geometry> g = volume::PeekNiftiGeometry(
          files_[i], FileLabel(header_, static_cast<int>(i)), limits_.nifti);
      if (!g.ok()) return g.status();
      voxels = std::max(voxels, g->NumVoxels());
      slice_pixels = std::max(slice_pixels, engine::PaddedSliceExtent(g->dims[0]) *
                                                engine::PaddedSliceExtent(g->dims[1]));
    }
  }
  return JobBytes(voxels, slice_pixels);
}

absl::StatusOr<int64_t> Upload::Reserve() {
  absl::StatusOr<int64_t> need = EstimateJobBytes();
  if (!need.ok()) return need.status();
  if (absl::Status s =
          lease_.Resize(bytes_received_ + *need, "decoding and segmenting this volume");
      !s.ok()) {
    return s;
  }
  return need;
}

absl::StatusOr<volume::MultiModalVolume> Upload::Decode() {
  absl::StatusOr<int64_t> need = Reserve();
  if (!need.ok()) return need.status();
  absl::StatusOr<volume::MultiModalVolume> decoded =
      header_.input_kind() == v1::INPUT_KIND_DICOM ? DecodeDicom() : DecodeNiftiFiles();
  (void)lease_.Resize(*need, "");  // the raw bytes are gone; shrinking always succeeds
  return decoded;
}

absl::StatusOr<volume::MultiModalVolume> Upload::DecodeNiftiFiles() {
  // The four files inflate and decode on their own threads (inflating is most of a NIfTI
  // upload's decode time: docs/benchmarks.md); errors come back in file order.
  std::array<volume::Volume, volume::kNumModalities> volumes;
  std::array<std::string, volume::kNumModalities> names;
  std::vector<absl::Status> errors(files_.size());
  for (size_t i = 0; i < files_.size(); ++i) {
    names[modality_of_file_[i]] = FileLabel(header_, static_cast<int>(i));
  }
  volume::ForEachChannel(files_.size(), [this, &volumes, &names, &errors](size_t i) {
    const int m = modality_of_file_[i];
    absl::StatusOr<volume::Volume> decoded =
        volume::DecodeNifti(files_[i], names[m], limits_.nifti);
    std::string().swap(files_[i]);
    if (decoded.ok()) {
      volumes[m] = *std::move(decoded);
    } else {
      errors[i] = decoded.status();
    }
  });
  for (const absl::Status& e : errors) {
    if (!e.ok()) return e;
  }
  return volume::StackModalities(std::move(volumes), names);
}

absl::StatusOr<volume::MultiModalVolume> Upload::DecodeDicom() {
  std::vector<volume::DicomFile> files;
  for (size_t i = 0; i < files_.size(); ++i) {
    files.push_back(
        {absl::StrCat("files[", i, "] ", BaseName(header_, static_cast<int>(i))), files_[i]});
  }
  absl::StatusOr<std::vector<volume::DicomSeries>> series =
      volume::DecodeDicomSeries(files, limits_.nifti);
  std::vector<std::string>().swap(files_);
  if (!series.ok()) return series.status();
  const std::map<std::string, std::string> explicit_map(header_.series_modalities().begin(),
                                                        header_.series_modalities().end());
  absl::StatusOr<std::array<int, volume::kNumModalities>> assigned = volume::AssignModalities(
      *series, explicit_map, {request_rules_ ? &*request_rules_ : nullptr, limits_.series_rules});
  if (!assigned.ok()) return assigned.status();
  absl::StatusOr<volume::MultiModalVolume> stacked = volume::StackDicomSeries(*series, *assigned);
  if (!stacked.ok()) return stacked.status();
  for (std::string& note : volume::SetAsideNotes(*series, *assigned)) {
    stacked->notes.push_back(std::move(note));
  }
  for (int m : *assigned) {
    // The SEG lies on the flair's grid and references the series on that grid (resampled
    // series are not its sources voxel for voxel).
    if (!(*series)[m].volume.geometry.SameGrid(stacked->geometry)) continue;
    dicom_series_.push_back(std::move((*series)[m]));
    dicom_series_.back().volume.voxels.clear();  // keep references, not pixels
    dicom_series_.back().volume.voxels.shrink_to_fit();
  }
  return stacked;
}

}  // namespace danet::service
