#include "server/core/job.h"

#include <zlib.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "models/dicom/dicom_seg.h"
#include "models/engine/case.h"
#include "models/engine/preprocess.h"
#include "models/engine/router.h"
#include "models/engine/segmenter.h"
#include "models/engine/summary.h"
#include "models/volume/nifti.h"

namespace danet::service {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A slice mask, zlib-compressed. With compressBound's room compress2 fails only when zlib
// cannot allocate its state: RESOURCE_EXHAUSTED, like any other out-of-memory on a request.
absl::StatusOr<std::string> Deflate(const uint8_t* data, size_t size) {
  uLongf length = compressBound(size);
  std::string out(length, '\0');
  const int z = compress2(reinterpret_cast<Bytef*>(out.data()), &length, data, size, Z_BEST_SPEED);
  if (z == Z_MEM_ERROR) return absl::ResourceExhaustedError("out of memory compressing a mask");
  if (z != Z_OK) return absl::InternalError(absl::StrCat("zlib compress2 failed (", z, ")"));
  out.resize(length);
  return out;
}

// The engine's case summary as the Summary message's routes, cost and volumes.
void FillSummary(const engine::CaseSummary& c, v1::Summary* out) {
  for (const auto& [route, count] : c.RouteCountsByName()) {
    (*out->mutable_route_counts())[route] = count;
  }
  out->set_gmacs(c.gmacs);
  out->set_gmacs_all_largest(c.gmacs_all_largest);
  out->set_largest_model(c.largest_model);
  out->mutable_volumes_ml()->set_wt(c.volumes_ml.wt);
  out->mutable_volumes_ml()->set_tc(c.volumes_ml.tc);
  out->mutable_volumes_ml()->set_et(c.volumes_ml.et);
}

void EmitChunks(v1::OutputKind kind, const std::string& name, const std::string& bytes,
                const JobContext& context, const JobOptions& options) {
  const size_t step = static_cast<size_t>(options.output_chunk_bytes);
  for (size_t offset = 0; offset == 0 || offset < bytes.size(); offset += step) {
    v1::SegmentResponse response;
    v1::OutputChunk* chunk = response.mutable_output();
    chunk->set_kind(kind);
    chunk->set_name(name);
    chunk->set_offset(offset);
    chunk->set_data(bytes.substr(offset, step));
    chunk->set_last(offset + step >= bytes.size());
    context.emit(std::move(response));
  }
}

// Encodes the requested outputs; notes say why one is absent.
absl::Status EmitOutputs(const models::Bank& bank, const Upload& upload,
                         const volume::LabelVolume& labels, const JobContext& context,
                         const JobOptions& options, v1::Summary* summary) {
  for (int kind : upload.header().outputs()) {
    if (kind == v1::OUTPUT_KIND_LABELMAP_NIFTI) {
      absl::StatusOr<std::string> bytes = volume::EncodeNiftiLabels(labels, true);
      if (!bytes.ok()) return bytes.status();
      EmitChunks(v1::OUTPUT_KIND_LABELMAP_NIFTI, "labels.nii.gz", *bytes, context, options);
    } else if (kind == v1::OUTPUT_KIND_DICOM_SEG) {
      volume::SegOptions seg_options;
      seg_options.algorithm_version =
          absl::StrCat("danet ", DANET_VERSION, ", bundle ", bank.config().name());
      absl::StatusOr<std::string> bytes =
          volume::EncodeDicomSeg(labels, upload.dicom_series(), seg_options);
      if (absl::IsNotFound(bytes.status())) {
        summary->add_notes(std::string(bytes.status().message()));
        continue;
      }
      if (!bytes.ok()) return bytes.status();
      EmitChunks(v1::OUTPUT_KIND_DICOM_SEG, "seg.dcm", *bytes, context, options);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PreparedJob> PrepareJob(const models::Bank& bank, Upload* upload,
                                       const JobContext& context) {
  const v1::Header& header = upload->header();
  absl::StatusOr<engine::Policy> policy =
      engine::ParsePolicy(header.policy(), bank);  // empty: the bundle's default
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("header.policy: ", policy.status().message()));
  }
  if (absl::Status s =
          engine::ApplyPolicyOverrides(header.cost_bias(), header.skip_margin(), &*policy);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("header.", s.message()));
  }
  v1::Timing timing;
  timing.set_receive(context.receive_seconds);
  timing.set_queued(context.queued_seconds);

  auto start = Clock::now();
  absl::StatusOr<volume::MultiModalVolume> image = upload->Decode();
  if (!image.ok()) return image.status();
  timing.set_decode(Since(start));
  const std::vector<std::string> input_notes = image->notes;  // e.g. resampled modalities
  if (context.cancelled && context.cancelled()) return absl::CancelledError("request cancelled");

  start = Clock::now();
  absl::StatusOr<engine::PreparedCase> input =
      engine::PrepareCase(bank.config().preprocessing(), *std::move(image));
  if (!input.ok()) return input.status();
  timing.set_preprocess(Since(start));

  const volume::Geometry& g = input->geometry;
  const std::vector<std::string> routes = engine::RouteNames(bank);
  v1::SegmentResponse accepted;
  accepted.mutable_accepted()->set_request_id(header.request_id());
  for (int64_t d : g.dims) accepted.mutable_accepted()->add_dims(static_cast<int32_t>(d));
  for (double s : g.spacing) accepted.mutable_accepted()->add_spacing(s);
  accepted.mutable_accepted()->set_num_slices(static_cast<int32_t>(g.dims[2]));
  accepted.mutable_accepted()->set_policy(policy->Name(bank));
  for (const std::string& r : routes) accepted.mutable_accepted()->add_routes(r);
  context.emit(std::move(accepted));
  return PreparedJob{*std::move(policy), *std::move(input), input_notes, timing};
}

absl::Status ComputeJob(const models::Bank& bank, const Upload& upload, PreparedJob job,
                        const JobContext& context, const JobOptions& options) {
  const v1::Header& header = upload.header();
  const engine::Policy& policy = job.policy;
  v1::Timing& timing = job.timing;
  timing.set_queued(timing.queued() + context.queued_seconds);
  const volume::Geometry g = job.input.geometry;  // the case's grid (a copy: SegmentCase frees)
  const std::vector<std::string> routes = engine::RouteNames(bank);

  double encode_seconds = 0;
  absl::Status encode_status;  // the first mask that could not be encoded stops the job
  engine::SegmentOptions engine_options;
  engine_options.decision_batch = options.decision_batch;
  engine_options.model_batch = options.model_batch;
  engine_options.crop_to_brain = options.crop_to_brain;
  engine_options.cancelled = [&] {
    return !encode_status.ok() || (context.cancelled && context.cancelled());
  };
  engine_options.on_slice = [&](const engine::SliceResult& s, const uint8_t* labels) {
    const auto encode_start = Clock::now();
    v1::SegmentResponse response;
    v1::SliceResult* out = response.mutable_slice();
    out->set_index(s.index);
    out->set_route(s.route);
    out->set_route_name(routes[s.route]);
    for (float p : s.probabilities) out->add_probabilities(p);
    if (s.route != 0 && !header.omit_masks()) {
      absl::StatusOr<std::string> mask = Deflate(labels, g.SliceVoxels());
      if (!mask.ok()) {
        if (encode_status.ok()) encode_status = mask.status();
        return;
      }
      out->set_mask_encoding(v1::MASK_ENCODING_ZLIB_U8);
      out->set_mask(*std::move(mask));
    }
    out->set_gmacs(s.gmacs);
    out->set_seconds(s.seconds);
    context.emit(std::move(response));
    encode_seconds += Since(encode_start);
  };
  absl::StatusOr<engine::VolumeResult> result =
      engine::SegmentCase(bank, std::move(job.input), policy, engine_options);
  if (!encode_status.ok()) return encode_status;
  if (!result.ok()) return result.status();
  timing.set_preprocess(timing.preprocess() + result->refit_seconds);
  timing.set_decide(result->decide_seconds);
  timing.set_segment(std::max(0.0, result->segment_seconds - encode_seconds));

  v1::SegmentResponse summary;
  v1::Summary* sum = summary.mutable_summary();
  sum->set_request_id(header.request_id());
  FillSummary(engine::SummarizeCase(bank, *result, g), sum);
  sum->set_first_pass_gmacs(result->first_pass_gmacs);
  for (const std::string& note : job.input_notes) sum->add_notes(note);

  const auto start = Clock::now();
  // Outputs are encoded before the summary is sent so that its timing is complete; they are
  // sent after it.
  std::vector<v1::SegmentResponse> outputs;
  JobContext collect = context;
  collect.emit = [&](v1::SegmentResponse r) { outputs.push_back(std::move(r)); };
  if (absl::Status s =
          EmitOutputs(bank, upload, {g, std::move(result->labels)}, collect, options, sum);
      !s.ok()) {
    return s;
  }
  // After the outputs' notes: the PACS bridge reports the first note when no SEG came back.
  if (result->bias_refitted) sum->add_notes(std::string(engine::kBiasRefitNote));
  if (result->refit_probe_kept) sum->add_notes(std::string(engine::kBiasRefitKeptNote));
  if (result->inplane_resampled) sum->add_notes(std::string(engine::kInplaneNote));
  timing.set_encode(encode_seconds + Since(start));
  timing.set_total(Since(context.received));
  *sum->mutable_seconds() = timing;
  context.emit(std::move(summary));
  for (v1::SegmentResponse& r : outputs) context.emit(std::move(r));
  return absl::OkStatus();
}

absl::Status RunJob(const models::Bank& bank, Upload* upload, const JobContext& context,
                    const JobOptions& options) {
  absl::StatusOr<PreparedJob> job = PrepareJob(bank, upload, context);
  if (!job.ok()) return job.status();
  JobContext computing = context;
  computing.queued_seconds = 0;  // counted once, by PrepareJob
  return ComputeJob(bank, *upload, *std::move(job), computing, options);
}

void DescribeBank(const models::Bank& bank, const std::string& bundle_path,
                  v1::DescribeBankResponse* response) {
  const v1::BundleConfig& config = bank.config();
  response->set_bundle_name(config.name());
  response->set_bundle_path(bundle_path);
  response->set_decision_gmacs_per_slice(config.decision().gmacs_per_slice());
  if (absl::StatusOr<engine::Policy> fallback = engine::ParsePolicy("", bank); fallback.ok()) {
    response->set_default_policy(fallback->Name(bank));
  }
  response->add_policies("dynamic");
  response->add_policies("dynamic@<cost bias>");
  response->add_policies("dynamic+m<skip margin>[r<min run>]");
  response->add_policies("dynamic+s<skip threshold>");
  response->add_policies("dynamic+d<skip dip>");
  response->add_policies("dynamic+g<gap fill>");
  response->add_policies("dynamic+p<model id>:<preference>");
  response->add_policies("dynamic+f<follow tumour>[v<min tumour voxels>]");
  response->add_policies("dynamic+c<smallest tumour component, voxels>");
  response->add_policies("dynamic+e<smallest enhancing tumour, voxels>");
  response->add_policies("dynamic+z<decision network's slices, odd>");
  for (int i = 0; i < bank.size(); ++i) {
    const v1::BankModel& m = bank.model_config(i);
    v1::BankModelInfo* info = response->add_models();
    info->set_id(m.id());
    info->set_architecture(bank.model(i).Describe());
    info->set_gmacs_per_slice(m.gmacs_per_slice());
    info->set_parameters(bank.model(i).NumParameters());
    *info->mutable_validation() = m.validation();
    response->add_policies(absl::StrCat("static:", m.id()));
  }
  for (const char* m : volume::kModalities) response->add_modalities(m);
  response->add_slice_size(config.preprocessing().slice_height());
  response->add_slice_size(config.preprocessing().slice_width());
  response->set_device(bank.device().str());
  response->set_version(DANET_VERSION);
}

}  // namespace danet::service
