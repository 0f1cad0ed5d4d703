#include "client/cli/call.h"

#include <grpcpp/grpcpp.h>
#include <zlib.h>

#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace danet::client {
namespace {

using Clock = std::chrono::steady_clock;

// "..._t1ce.nii.gz" -> "t1ce"; "" when the name ends in no known modality.
std::string ModalityOf(const std::filesystem::path& path) {
  std::string stem = path.filename().string();
  bool nifti = false;
  for (const char* ext : {".nii.gz", ".nii"}) {
    if (absl::EndsWith(stem, ext)) {
      stem.resize(stem.size() - std::string(ext).size());
      nifti = true;
      break;
    }
  }
  if (!nifti) return "";
  for (const char* m : {"flair", "t1ce", "t1", "t2"}) {
    if (absl::EndsWith(stem, absl::StrCat("_", m)) || stem == m) return m;
  }
  return "";
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status Inflate(const std::string& in, size_t size, uint8_t* out) {
  uLongf length = size;
  if (uncompress(out, &length, reinterpret_cast<const Bytef*>(in.data()), in.size()) != Z_OK ||
      length != size) {
    return absl::DataLossError("a slice mask from the server does not decompress to one slice");
  }
  return absl::OkStatus();
}

bool HasDicomPreamble(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char head[132] = {};
  return in.read(head, sizeof(head)) && std::string(head + 128, 4) == "DICM";
}

// Every DICOM file under the arguments (folders searched recursively), sorted by path.
std::vector<InputFile> FindDicom(const std::vector<std::string>& args) {
  std::vector<InputFile> files;
  for (const std::string& a : args) {
    if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::recursive_directory_iterator(a)) {
        if (e.is_regular_file() && HasDicomPreamble(e.path())) files.push_back({e.path(), ""});
      }
    } else if (std::filesystem::is_regular_file(a) && HasDicomPreamble(a)) {
      files.push_back({a, ""});
    }
  }
  std::sort(files.begin(), files.end(),
            [](const InputFile& x, const InputFile& y) { return x.path < y.path; });
  return files;
}

}  // namespace

bool IsDicom(const std::vector<InputFile>& files) {
  return !files.empty() && files[0].modality.empty();
}

absl::StatusOr<std::vector<InputFile>> ResolveInputs(const std::vector<std::string>& args) {
  std::vector<std::filesystem::path> paths;
  if (args.size() == 1 && std::filesystem::is_directory(args[0])) {
    // A case folder with NIfTI files at its top is NIfTI; otherwise look for DICOM below.
    for (const auto& entry : std::filesystem::directory_iterator(args[0])) {
      if (!ModalityOf(entry.path()).empty()) paths.push_back(entry.path());
    }
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) {
      std::vector<InputFile> dicom = FindDicom(args);
      if (!dicom.empty()) return dicom;
      return absl::InvalidArgumentError(
          absl::StrCat(args[0], ": neither NIfTI modality files nor DICOM files"));
    }
  } else if (std::vector<InputFile> dicom = FindDicom(args); !dicom.empty()) {
    return dicom;
  } else {
    for (const std::string& a : args) paths.emplace_back(a);
  }
  std::map<std::string, std::filesystem::path> by_modality;
  for (const auto& path : paths) {
    if (!std::filesystem::is_regular_file(path)) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    const std::string m = ModalityOf(path);
    if (m.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path.string(), ": cannot tell the modality (name files *_flair, *_t1ce, *_t1, *_t2)"));
    }
    if (by_modality.count(m)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path.string(), ": a second '", m, "' file (the first is ", by_modality[m].string(), ")"));
    }
    by_modality[m] = path;
  }
  std::vector<InputFile> files;
  for (const char* m : {"flair", "t1ce", "t1", "t2"}) {
    if (!by_modality.count(m)) {
      return absl::InvalidArgumentError(absl::StrCat("no '", m, "' file among the inputs"));
    }
    files.push_back({by_modality[m], m});
  }
  return files;
}

absl::StatusOr<CaseResult> SegmentFiles(v1::Segmentation::Stub* stub,
                                        const std::vector<InputFile>& files,
                                        const CallOptions& options) {
  CaseResult result;
  const auto start = Clock::now();
  grpc::ClientContext context;
  if (options.deadline_seconds > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(options.deadline_seconds * 1000)));
  }
  auto stream = stub->Segment(&context);

  v1::SegmentRequest request;
  v1::Header* header = request.mutable_header();
  header->set_request_id(options.request_id);
  header->set_input_kind(IsDicom(files) ? v1::INPUT_KIND_DICOM : v1::INPUT_KIND_NIFTI);
  for (const auto& [uid, modality] : options.series_modalities) {
    (*header->mutable_series_modalities())[uid] = modality;
  }
  header->set_series_rules(options.series_rules);
  header->set_policy(options.policy);
  header->set_cost_bias(options.cost_bias);
  header->set_skip_margin(static_cast<uint32_t>(options.skip_margin));
  header->set_omit_masks(options.omit_masks);
  if (options.want_labelmap) header->add_outputs(v1::OUTPUT_KIND_LABELMAP_NIFTI);
  if (options.want_dicom_seg) header->add_outputs(v1::OUTPUT_KIND_DICOM_SEG);
  int64_t total = 0;
  for (const InputFile& f : files) {
    v1::InputFile* file = header->add_files();
    file->set_name(f.path.filename().string());
    file->set_modality(f.modality);
    file->set_size(std::filesystem::file_size(f.path));
    total += static_cast<int64_t>(file->size());
  }
  bool writing = stream->Write(request);
  std::string buffer(options.chunk_bytes, '\0');
  for (size_t i = 0; writing && i < files.size(); ++i) {
    std::ifstream in(files[i].path, std::ios::binary);
    uint64_t offset = 0;
    const uint64_t size = header->files(i).size();
    do {
      in.read(buffer.data(), options.chunk_bytes);
      const auto got = static_cast<size_t>(in.gcount());
      v1::SegmentRequest chunk_request;
      v1::Chunk* chunk = chunk_request.mutable_chunk();
      chunk->set_file_index(static_cast<uint32_t>(i));
      chunk->set_offset(offset);
      chunk->set_data(buffer.data(), got);
      offset += got;
      chunk->set_last(offset >= size || got == 0);
      writing = stream->Write(chunk_request);
      result.bytes_sent += static_cast<int64_t>(got);
      if (options.on_upload) options.on_upload(result.bytes_sent, total);
      if (got == 0) break;
    } while (writing && offset < size);
  }
  if (writing) stream->WritesDone();
  result.upload_seconds = std::chrono::duration<double>(Clock::now() - start).count();

  v1::SegmentResponse response;
  int done = 0;
  while (stream->Read(&response)) {
    if (response.has_accepted()) {
      result.accepted = response.accepted();
      const auto& d = result.accepted.dims();
      result.slices.resize(result.accepted.num_slices());
      if (d.size() == 3) result.labels.assign(int64_t(d[0]) * d[1] * d[2], 0);
    } else if (response.has_slice()) {
      const v1::SliceResult& s = response.slice();
      if (s.index() < 0 || s.index() >= static_cast<int>(result.slices.size())) {
        context.TryCancel();
        return absl::DataLossError(
            absl::StrCat("the server sent slice ", s.index(), " of ", result.slices.size()));
      }
      const int64_t slice_voxels = int64_t(result.accepted.dims(0)) * result.accepted.dims(1);
      if (!s.mask().empty()) {
        absl::Status inflated =
            Inflate(s.mask(), slice_voxels, result.labels.data() + s.index() * slice_voxels);
        if (!inflated.ok()) {
          context.TryCancel();
          return inflated;
        }
      }
      result.slices[s.index()] = s;
      result.slices[s.index()].clear_mask();
      if (options.on_slice) options.on_slice(++done, result.accepted.num_slices());
    } else if (response.has_summary()) {
      result.summary = response.summary();
    } else if (response.has_output()) {
      (response.output().kind() == v1::OUTPUT_KIND_DICOM_SEG ? result.dicom_seg : result.labelmap)
          .append(response.output().data());
    }
  }
  const grpc::Status status = stream->Finish();
  result.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!status.ok()) return FromGrpc(status);
  return result;
}

absl::StatusOr<v1::DescribeBankResponse> DescribeBank(v1::Segmentation::Stub* stub,
                                                      double deadline_seconds) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  v1::DescribeBankResponse bank;
  if (grpc::Status status = stub->DescribeBank(&context, {}, &bank); !status.ok()) {
    return FromGrpc(status);
  }
  return bank;
}

}  // namespace danet::client
