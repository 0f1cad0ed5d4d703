#include "client/cli/report.h"

#include <optional>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/preview/montage.h"
#include "client/preview/png.h"
#include "models/dicom/dicom.h"
#include "models/volume/nifti.h"

namespace danet::client {

nlohmann::json ReportJson(const CaseResult& r) {
  const v1::Summary& s = r.summary;
  nlohmann::json routes = nlohmann::json::object();
  for (const std::string& name : r.accepted.routes()) {
    auto it = s.route_counts().find(name);
    routes[name] = it == s.route_counts().end() ? 0 : it->second;
  }
  nlohmann::json slices = nlohmann::json::array();
  for (const v1::SliceResult& slice : r.slices) {
    nlohmann::json j = {{"index", slice.index()},
                        {"route", slice.route_name()},
                        {"gmacs", slice.gmacs()},
                        {"ms", slice.seconds() * 1000.0}};
    if (slice.probabilities_size() > 0) {
      j["probabilities"] =
          std::vector<float>(slice.probabilities().begin(), slice.probabilities().end());
    }
    slices.push_back(j);
  }
  nlohmann::json seconds = nlohmann::json::object();
  for (const auto& [stage, value] : TimingSeconds(s.seconds(), r.wall_seconds)) {
    seconds[stage] = value;
  }
  return {
      {"request_id", s.request_id()},
      {"policy", r.accepted.policy()},
      {"dims", std::vector<int>(r.accepted.dims().begin(), r.accepted.dims().end())},
      {"spacing_mm", std::vector<double>(r.accepted.spacing().begin(), r.accepted.spacing().end())},
      {"routes", routes},
      {"gmacs", s.gmacs()},
      {"gmacs_all_m4", s.gmacs_all_largest()},
      {"largest_model", s.largest_model()},
      {"seconds", seconds},
      {"volumes_ml",
       {{"wt", s.volumes_ml().wt()}, {"tc", s.volumes_ml().tc()}, {"et", s.volumes_ml().et()}}},
      {"slices", slices},
      {"notes", std::vector<std::string>(s.notes().begin(), s.notes().end())},
  };
}

std::vector<std::pair<std::string, double>> TimingSeconds(const v1::Timing& t, double client_wall) {
  return {{"receive", t.receive()}, {"decode", t.decode()},   {"preprocess", t.preprocess()},
          {"decide", t.decide()},   {"segment", t.segment()}, {"encode", t.encode()},
          {"queued", t.queued()},   {"total", t.total()},     {"client_wall", client_wall}};
}

void PrintSummary(const CaseResult& r, std::ostream& out) {
  const v1::Summary& s = r.summary;
  const int n = std::max(1, r.accepted.num_slices());
  out << absl::StrFormat("policy %s, %d slices (%s)\n", r.accepted.policy(), n,
                         absl::StrJoin(r.accepted.dims(), "x"));
  out << "  route    slices   share\n";
  for (const std::string& name : r.accepted.routes()) {
    auto it = s.route_counts().find(name);
    const int count = it == s.route_counts().end() ? 0 : it->second;
    out << absl::StrFormat("  %-7s %7d  %5.1f%%\n", name, count, 100.0 * count / n);
  }
  const double share = s.gmacs_all_largest() > 0 ? s.gmacs() / s.gmacs_all_largest() : 0;
  out << absl::StrFormat("  cost     %.1f GMACs = %.1f%% of all-%s (%.1f), %.2fx saving\n",
                         s.gmacs(), 100 * share, s.largest_model(), s.gmacs_all_largest(),
                         share > 0 ? 1 / share : 0);
  const v1::Timing& t = s.seconds();
  out << absl::StrFormat(
      "  seconds  receive %.2f  decode %.2f  preprocess %.2f  decide %.2f  segment %.2f  "
      "encode %.2f  queued %.2f  total %.2f\n",
      t.receive(), t.decode(), t.preprocess(), t.decide(), t.segment(), t.encode(), t.queued(),
      t.total());
  out << absl::StrFormat("  tumour   WT %.1f mL  TC %.1f mL  ET %.1f mL\n", s.volumes_ml().wt(),
                         s.volumes_ml().tc(), s.volumes_ml().et());
  for (const std::string& note : s.notes()) out << "  note     " << note << "\n";
}

namespace {

// The FLAIR volume of the inputs: the NIfTI file, or the DICOM series the server would pick.
absl::StatusOr<volume::Volume> ReadFlair(const std::vector<InputFile>& inputs,
                                         const CallOptions& call) {
  if (!IsDicom(inputs)) return volume::ReadNifti(inputs[0].path);
  std::vector<std::string> bytes;
  for (const InputFile& f : inputs) {
    absl::StatusOr<std::string> b = volume::ReadFileBytes(f.path);
    if (!b.ok()) return b.status();
    bytes.push_back(*std::move(b));
  }
  std::vector<volume::DicomFile> files;
  for (size_t i = 0; i < inputs.size(); ++i) {
    files.push_back({inputs[i].path.filename().string(), bytes[i]});
  }
  absl::StatusOr<std::vector<volume::DicomSeries>> series = volume::DecodeDicomSeries(files);
  if (!series.ok()) return series.status();
  std::optional<volume::SeriesRules> rules;
  if (!call.series_rules.empty()) {
    absl::StatusOr<volume::SeriesRules> parsed =
        volume::SeriesRules::Parse(call.series_rules, "--series_rules");
    if (!parsed.ok()) return parsed.status();
    rules = *std::move(parsed);
  }
  auto assigned =
      volume::AssignModalities(*series, call.series_modalities, {rules ? &*rules : nullptr});
  if (!assigned.ok()) return assigned.status();
  return std::move((*series)[(*assigned)[0]].volume);
}

}  // namespace

absl::Status WritePreview(const CaseResult& r, const std::vector<InputFile>& inputs,
                          const CallOptions& call, const std::string& title,
                          const std::string& png_path) {
  absl::StatusOr<volume::Volume> background = ReadFlair(inputs, call);
  if (!background.ok()) return background.status();
  const auto& d = background->geometry.dims;
  if (r.accepted.dims_size() != 3 || d[0] != r.accepted.dims(0) || d[1] != r.accepted.dims(1) ||
      d[2] != r.accepted.dims(2)) {
    return absl::InvalidArgumentError("preview: the FLAIR file's grid differs from the result's");
  }
  preview::MontageInput input;
  input.dims = {int(d[0]), int(d[1]), int(d[2])};
  input.spacing = background->geometry.spacing;
  input.background = &background->voxels;
  input.labels = &r.labels;
  for (const v1::SliceResult& s : r.slices) input.routes.push_back(s.route());
  input.route_names.assign(r.accepted.routes().begin(), r.accepted.routes().end());
  input.title = title;
  preview::MontageOptions options;
  preview::SetFlipsFromVoxelToWorld(background->geometry.VoxelToWorld(), &options);
  absl::StatusOr<preview::Image> image = preview::RenderMontage(input, options);
  if (!image.ok()) return image.status();
  return preview::WritePng(*image, png_path);
}

}  // namespace danet::client
