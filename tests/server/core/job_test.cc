// One request's job without gRPC: an Upload fed directly, RunJob's messages collected from
// `emit`. The job streams what the engine computes (same routes and masks as PrepareBankInput +
// SegmentVolume on the same files), summarises against the costliest model, chunks its outputs,
// and refuses bad policies, odd slice sizes and cancelled requests.
#include "server/core/job.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>

#include "models/bundle/bundle_config.h"
#include "models/engine/case.h"
#include "models/engine/preprocess.h"
#include "models/engine/segmenter.h"
#include "models/volume/nifti.h"

namespace danet::service {
namespace {

using ::testing::HasSubstr;

constexpr int kX = 64, kY = 48, kDepth = 6;
const std::vector<std::string> kBrats = {"flair", "t1ce", "t1", "t2"};

// Four modality files of a kX x kY x depth volume whose slices differ (so routes differ).
std::vector<std::string> MakeFiles(int64_t x = kX, int depth = kDepth) {
  std::vector<std::string> files;
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0, 1);
  for (int m = 0; m < 4; ++m) {
    volume::Volume v;
    v.geometry = volume::MakeGeometry({x, kY, depth}, {1, 1, 2}, {-32, -24, 0});
    v.voxels.assign(x * kY * depth, 0);
    for (int z = 1; z < depth; ++z) {
      for (int64_t i = 0; i < x * kY; ++i) {
        v.voxels[z * x * kY + i] = 100 + 50 * ((z + m) % 3) * ((i % x) / 32.0f) + 10 * noise(rng);
      }
    }
    files.push_back(*volume::EncodeNiftiImage(v, volume::ImageStorage::kFloat32, true));
  }
  return files;
}

class JobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    bank_ = MakeBank(/*refit_min_ml=*/0);
  }

  // The tiny preset with seeded random weights; with refit_min_ml > 0 its preprocessing corrects
  // bias fields and fits them again without a tumour of that many mL (engine/case.h).
  // inplane_spacing_mm > 0 sets the bank's in-plane voxel size (engine/inplane.h), and
  // refit_min_change how far the second fit must move the input for a second pass.
  static std::unique_ptr<models::Bank> MakeBank(double refit_min_ml, double inplane_spacing_mm = 0,
                                                double refit_min_change = 0) {
    v1::BundleConfig config = *models::PresetConfig("tiny");
    config.mutable_preprocessing()->set_inplane_spacing_mm(inplane_spacing_mm);
    if (refit_min_ml > 0) {
      config.mutable_preprocessing()->set_bias_correction("poly2");
      config.mutable_preprocessing()->set_bias_refit_min_ml(refit_min_ml);
      config.mutable_preprocessing()->set_bias_refit_min_change(refit_min_change);
    }
    config.mutable_preprocessing()->set_slice_height(kY);
    config.mutable_preprocessing()->set_slice_width(kX);
    // Stated costs whose largest is not the last model: the baseline is the costliest model.
    const double costs[] = {1.0, 9.0, 3.0, 5.0};
    for (int i = 0; i < 4; ++i) config.mutable_models(i)->set_gmacs_per_slice(costs[i]);
    models::BankOptions options;
    options.load_weights = false;
    options.seed = 21;
    std::unique_ptr<models::Bank> bank = *models::Bank::Create(config, ".", options);
    for (auto& [name, tensor] : bank->decision().NamedState()) {
      torch::NoGradGuard no_grad;
      if (name == "classifier.weight") tensor.mul_(200.0);  // spread routes
    }
    return bank;
  }

  // An upload of `files` that is complete; `mutate` edits the header first.
  std::unique_ptr<Upload> Uploaded(const std::vector<std::string>& files,
                                   const std::function<void(v1::Header*)>& mutate = nullptr) {
    v1::Header h;
    h.set_request_id("job-1");
    h.set_input_kind(v1::INPUT_KIND_NIFTI);
    h.add_outputs(v1::OUTPUT_KIND_LABELMAP_NIFTI);
    for (int i = 0; i < 4; ++i) {
      v1::InputFile* f = h.add_files();
      f->set_name("case_" + kBrats[i] + ".nii.gz");
      f->set_modality(kBrats[i]);
      f->set_size(files[i].size());
    }
    if (mutate) mutate(&h);
    std::unique_ptr<Upload> upload = *Upload::Create(h, kBrats, {});
    for (int i = 0; i < 4; ++i) {
      v1::Chunk c;
      c.set_file_index(i);
      c.set_data(files[i]);
      c.set_last(true);
      EXPECT_TRUE(upload->Add(c).ok());
    }
    return upload;
  }

  absl::Status Run(Upload* upload, std::vector<v1::SegmentResponse>* out,
                   const JobOptions& options = {}, std::function<bool()> cancelled = nullptr) {
    JobContext context;
    context.received = std::chrono::steady_clock::now();
    context.emit = [out](v1::SegmentResponse r) { out->push_back(std::move(r)); };
    context.cancelled = std::move(cancelled);
    return RunJob(*bank_, upload, context, options);
  }

  // What the engine computes for the same files, called directly (engine::PrepareCase and
  // engine::SegmentCase: one SegmentVolume pass unless the bank refits or resamples).
  engine::VolumeResult Expected(const std::vector<std::string>& files,
                                const engine::Policy& policy) {
    std::array<volume::Volume, 4> volumes;
    for (int m = 0; m < 4; ++m) volumes[m] = *volume::DecodeNifti(files[m], "f");
    const engine::PreparedCase prepared = *engine::PrepareCase(
        bank_->config().preprocessing(), *volume::StackModalities(volumes, {"a", "b", "c", "d"}));
    return *engine::SegmentCase(*bank_, prepared, policy);
  }

  std::unique_ptr<models::Bank> bank_;
};

std::string Inflate(const std::string& z, size_t size) {
  std::string out(size, '\0');
  uLongf length = size;
  EXPECT_EQ(uncompress(reinterpret_cast<Bytef*>(out.data()), &length,
                       reinterpret_cast<const Bytef*>(z.data()), z.size()),
            Z_OK);
  out.resize(length);
  return out;
}

TEST_F(JobTest, StreamsAcceptedThenSlicesThenSummaryThenOutputs) {
  const std::vector<std::string> files = MakeFiles();
  std::unique_ptr<Upload> upload = Uploaded(files);
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  ASSERT_GE(messages.size(), 1u + kDepth + 1 + 1);

  const v1::Accepted& accepted = messages.front().accepted();
  EXPECT_EQ(accepted.request_id(), "job-1");
  EXPECT_THAT(accepted.dims(), ::testing::ElementsAre(kX, kY, kDepth));
  EXPECT_EQ(accepted.num_slices(), kDepth);
  EXPECT_EQ(accepted.policy(), "dynamic");
  EXPECT_THAT(accepted.routes(), ::testing::ElementsAre("skip", "M1", "M2", "M3", "M4"));

  const engine::VolumeResult expected = Expected(files, engine::Policy{});
  std::vector<int> seen(kDepth, 0);
  size_t i = 1;
  for (; i < messages.size() && messages[i].has_slice(); ++i) {
    const v1::SliceResult& s = messages[i].slice();
    ++seen[s.index()];
    EXPECT_EQ(s.route(), expected.slices[s.index()].route) << s.index();
    EXPECT_EQ(s.route_name(), accepted.routes(s.route()));
    EXPECT_EQ(s.probabilities_size(), 5);
    const auto begin = expected.labels.begin() + s.index() * kX * kY;
    if (s.route() == 0) {
      EXPECT_TRUE(s.mask().empty());
    } else {
      EXPECT_EQ(s.mask_encoding(), v1::MASK_ENCODING_ZLIB_U8);
      EXPECT_EQ(Inflate(s.mask(), kX * kY), std::string(begin, begin + kX * kY)) << s.index();
    }
  }
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  ASSERT_LT(i, messages.size());
  ASSERT_TRUE(messages[i].has_summary()) << "the summary follows the last slice";
  for (++i; i < messages.size(); ++i) EXPECT_TRUE(messages[i].has_output());
}

// The two halves the service runs on two threads (prepare ahead, compute on a worker) give what
// RunJob gives: Accepted from the first, then the slices, the summary and the outputs; the
// queued time of both halves adds up in the summary.
TEST_F(JobTest, PrepareThenComputeIsRunJobInTwoHalves) {
  const std::vector<std::string> files = MakeFiles();
  std::vector<v1::SegmentResponse> whole;
  std::unique_ptr<Upload> first = Uploaded(files);
  ASSERT_TRUE(Run(first.get(), &whole).ok());

  std::unique_ptr<Upload> upload = Uploaded(files);
  std::vector<v1::SegmentResponse> halves;
  JobContext context;
  context.received = std::chrono::steady_clock::now();
  context.queued_seconds = 0.25;
  context.emit = [&](v1::SegmentResponse r) { halves.push_back(std::move(r)); };
  absl::StatusOr<PreparedJob> prepared = PrepareJob(*bank_, upload.get(), context);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  ASSERT_EQ(halves.size(), 1u);
  EXPECT_TRUE(halves[0].has_accepted());
  EXPECT_EQ(prepared->policy.kind, engine::Policy::Kind::kDynamic);
  EXPECT_GT(prepared->timing.decode(), 0);
  context.queued_seconds = 0.5;  // the wait for a worker after preparing
  ASSERT_TRUE(ComputeJob(*bank_, *upload, *std::move(prepared), context).ok());

  ASSERT_EQ(halves.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    if (whole[i].has_summary()) {
      ASSERT_TRUE(halves[i].has_summary());
      EXPECT_DOUBLE_EQ(halves[i].summary().seconds().queued(), 0.75);
      const auto& a = halves[i].summary().route_counts();
      const auto& b = whole[i].summary().route_counts();
      EXPECT_EQ((std::map<std::string, int64_t>(a.begin(), a.end())),
                (std::map<std::string, int64_t>(b.begin(), b.end())));
      EXPECT_EQ(halves[i].summary().gmacs(), whole[i].summary().gmacs());
      continue;
    }
    if (whole[i].has_slice()) {  // slice times differ from run to run
      whole[i].mutable_slice()->clear_seconds();
      halves[i].mutable_slice()->clear_seconds();
    }
    EXPECT_EQ(halves[i].SerializeAsString(), whole[i].SerializeAsString()) << i;
  }
}

TEST_F(JobTest, SummaryComparesWithTheCostliestModelNotTheLast) {
  const std::vector<std::string> files = MakeFiles();
  std::unique_ptr<Upload> upload = Uploaded(files);
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  auto summary =
      std::find_if(messages.begin(), messages.end(), [](const auto& m) { return m.has_summary(); });
  ASSERT_NE(summary, messages.end());
  const v1::Summary& s = summary->summary();
  EXPECT_EQ(s.request_id(), "job-1");
  EXPECT_EQ(s.largest_model(), "M2");  // 9 GMACs per slice; M4, the last, costs 5
  EXPECT_DOUBLE_EQ(s.gmacs_all_largest(), 9.0 * kDepth);
  double slice_gmacs = 0;
  std::map<std::string, int> counts;
  for (const auto& m : messages) {
    if (!m.has_slice()) continue;
    slice_gmacs += m.slice().gmacs();
    ++counts[m.slice().route_name()];
  }
  EXPECT_NEAR(s.gmacs(), slice_gmacs, 1e-9);
  ASSERT_EQ(s.route_counts_size(), 5) << "every route, zeros included";
  for (const auto& [route, n] : s.route_counts()) EXPECT_EQ(n, counts[route]) << route;
  EXPECT_GE(s.volumes_ml().wt(), s.volumes_ml().tc());
  EXPECT_GE(s.volumes_ml().tc(), s.volumes_ml().et());
  EXPECT_GT(s.seconds().total(), 0);
}

TEST_F(JobTest, OutputsComeInChunksThatRebuildTheLabelMap) {
  const std::vector<std::string> files = MakeFiles();
  std::unique_ptr<Upload> upload = Uploaded(files);
  std::vector<v1::SegmentResponse> messages;
  JobOptions options;
  options.output_chunk_bytes = 100;
  ASSERT_TRUE(Run(upload.get(), &messages, options).ok());
  std::string bytes;
  int chunks = 0, last = 0;
  for (const auto& m : messages) {
    if (!m.has_output()) continue;
    EXPECT_EQ(m.output().kind(), v1::OUTPUT_KIND_LABELMAP_NIFTI);
    EXPECT_EQ(m.output().name(), "labels.nii.gz");
    EXPECT_EQ(m.output().offset(), bytes.size());
    EXPECT_LE(m.output().data().size(), 100u);
    bytes += m.output().data();
    last += m.output().last();
    ++chunks;
  }
  EXPECT_GT(chunks, 1);
  EXPECT_EQ(last, 1);
  EXPECT_TRUE(messages.back().output().last());
  absl::StatusOr<volume::LabelVolume> labels = volume::DecodeNiftiLabels(bytes, "labels");
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_EQ(labels->labels, Expected(files, engine::Policy{}).labels);
}

TEST_F(JobTest, PolicyAndOverridesFromTheHeader) {
  const std::vector<std::string> files = MakeFiles();
  std::vector<v1::SegmentResponse> messages;
  std::unique_ptr<Upload> upload = Uploaded(files, [](v1::Header* h) {
    h->set_policy("static:M3");
    h->set_omit_masks(true);
  });
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  EXPECT_EQ(messages.front().accepted().policy(), "static:M3");
  for (const auto& m : messages) {
    if (!m.has_slice()) continue;
    EXPECT_EQ(m.slice().route(), 3);
    EXPECT_TRUE(m.slice().mask().empty()) << "omit_masks";
  }
  messages.clear();
  upload = Uploaded(files, [](v1::Header* h) {
    h->set_cost_bias(0.5);
    h->set_skip_margin(2);
  });
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  EXPECT_EQ(messages.front().accepted().policy(), "dynamic@0.5+m2");
}

TEST_F(JobTest, BadRequestsAreInvalidArgumentAndEmitNothing) {
  const std::vector<std::string> files = MakeFiles();
  const std::vector<std::pair<std::function<void(v1::Header*)>, std::string>> cases = {
      {[](v1::Header* h) { h->set_policy("static:M9"); },
       "header.policy: policy 'static:M9': no bank model 'M9'"},
      {[](v1::Header* h) { h->set_policy("fastest"); }, "header.policy"},
      {[](v1::Header* h) {
         h->set_policy("static:M1");
         h->set_cost_bias(1);
       },
       "header.cost_bias: must be a finite number, and only applies to the dynamic policy"},
      {[](v1::Header* h) { h->set_skip_margin(33); },
       "header.skip_margin: must be at most 32, and only applies to the dynamic policy"},
  };
  for (const auto& [mutate, message] : cases) {
    std::unique_ptr<Upload> upload = Uploaded(files, mutate);
    std::vector<v1::SegmentResponse> messages;
    const absl::Status s = Run(upload.get(), &messages);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(message));
    EXPECT_TRUE(messages.empty()) << message;
  }
  // An in-plane size that is not a multiple of 16 is padded for the networks, not refused: the
  // slices' masks come back at the volume's own size.
  std::unique_ptr<Upload> odd = Uploaded(MakeFiles(/*x=*/40));
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(odd.get(), &messages).ok());
  EXPECT_THAT(messages.front().accepted().dims(), ::testing::ElementsAre(40, kY, kDepth));
  for (const v1::SegmentResponse& m : messages) {
    if (m.has_slice() && m.slice().route() != 0) {
      EXPECT_EQ(Inflate(m.slice().mask(), 40 * kY).size(), static_cast<size_t>(40 * kY));
    }
  }
}

TEST_F(JobTest, CancellationStopsTheJob) {
  std::unique_ptr<Upload> upload = Uploaded(MakeFiles());
  std::vector<v1::SegmentResponse> messages;
  const absl::Status before = Run(upload.get(), &messages, {}, [] { return true; });
  EXPECT_EQ(before.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(messages.empty()) << "cancelled before the volume was accepted";

  // Static: every slice runs a model, and the job polls before each one.
  upload = Uploaded(MakeFiles(), [](v1::Header* h) { h->set_policy("static:M1"); });
  messages.clear();
  const absl::Status during =
      Run(upload.get(), &messages, {}, [&] { return messages.size() >= 3; });
  EXPECT_EQ(during.code(), absl::StatusCode::kCancelled);
  for (const auto& m : messages) EXPECT_FALSE(m.has_summary());
}

TEST_F(JobTest, DescribeBankListsModelsPoliciesAndModalities) {
  v1::DescribeBankResponse response;
  DescribeBank(*bank_, "/bundles/tiny", &response);
  EXPECT_EQ(response.bundle_name(), "tiny");
  EXPECT_EQ(response.bundle_path(), "/bundles/tiny");
  EXPECT_EQ(response.default_policy(), "dynamic");
  ASSERT_EQ(response.models_size(), 4);
  EXPECT_EQ(response.models(1).id(), "M2");
  EXPECT_EQ(response.models(1).gmacs_per_slice(), 9.0);
  EXPECT_THAT(response.policies(), ::testing::Contains("static:M4"));
  EXPECT_THAT(response.modalities(), ::testing::ElementsAre("flair", "t1ce", "t1", "t2"));
  EXPECT_THAT(response.slice_size(), ::testing::ElementsAre(kY, kX));
}

// A bundle that refits the bias fields around the tumour: the job streams the second pass's
// slices once each (engine::SegmentCase's routes and masks), counts both passes' GMACs and says
// so in the summary's notes, after the outputs' own notes.
TEST_F(JobTest, ACaseSegmentedTwiceStreamsTheSecondPassAndSaysSo) {
  bank_ = MakeBank(/*refit_min_ml=*/0.001);
  const std::vector<std::string> files = MakeFiles();
  const engine::Policy policy = *engine::ParsePolicy("static:M1", *bank_);
  const engine::VolumeResult expected = Expected(files, policy);
  ASSERT_TRUE(expected.bias_refitted);  // random weights label some voxels tumour

  std::unique_ptr<Upload> upload =
      Uploaded(files, [](v1::Header* h) { h->set_policy("static:M1"); });
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  std::vector<int> seen(kDepth, 0);
  const v1::Summary* summary = nullptr;
  for (const v1::SegmentResponse& m : messages) {
    if (m.has_summary()) summary = &m.summary();
    if (!m.has_slice()) continue;
    const v1::SliceResult& s = m.slice();
    ++seen[s.index()];
    const auto begin = expected.labels.begin() + s.index() * kX * kY;
    EXPECT_EQ(Inflate(s.mask(), kX * kY), std::string(begin, begin + kX * kY)) << s.index();
  }
  EXPECT_EQ(seen, std::vector<int>(kDepth, 1));
  ASSERT_NE(summary, nullptr);
  EXPECT_DOUBLE_EQ(summary->gmacs(), expected.gmacs);
  EXPECT_GT(summary->first_pass_gmacs(), 0);
  EXPECT_DOUBLE_EQ(summary->first_pass_gmacs(), expected.first_pass_gmacs);
  ASSERT_GT(summary->notes_size(), 0);
  EXPECT_EQ(summary->notes(summary->notes_size() - 1), engine::kBiasRefitNote);
}

// A second fit that moves the input too little for a second pass: the summary says the first
// look was kept, and counts no first pass apart.
TEST_F(JobTest, ARefitThatKeepsTheFirstLookSaysSo) {
  bank_ = MakeBank(/*refit_min_ml=*/0.001, /*inplane_spacing_mm=*/0, /*refit_min_change=*/1e9);
  const std::vector<std::string> files = MakeFiles();
  const engine::Policy policy = *engine::ParsePolicy("static:M1", *bank_);
  const engine::VolumeResult expected = Expected(files, policy);
  ASSERT_TRUE(expected.refit_probe_kept);
  std::unique_ptr<Upload> upload =
      Uploaded(files, [](v1::Header* h) { h->set_policy("static:M1"); });
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  auto found =
      std::find_if(messages.begin(), messages.end(), [](const auto& m) { return m.has_summary(); });
  ASSERT_NE(found, messages.end());
  const v1::Summary& summary = found->summary();
  EXPECT_DOUBLE_EQ(summary.gmacs(), expected.gmacs);
  EXPECT_EQ(summary.first_pass_gmacs(), 0);
  ASSERT_GT(summary.notes_size(), 0);
  EXPECT_EQ(summary.notes(summary.notes_size() - 1), engine::kBiasRefitKeptNote);
  EXPECT_THAT(summary.notes(), ::testing::Not(::testing::Contains(engine::kBiasRefitNote)));
}

// A bundle whose bank runs at 2 mm in plane, a case at 1 mm: the bank sees it at half the
// matrix, the client the case's own grid (dims accepted, masks streamed: engine::SegmentCase's
// labels brought back), and the summary says so.
TEST_F(JobTest, ACaseResampledInPlaneStreamsMasksOnItsOwnGrid) {
  bank_ = MakeBank(/*refit_min_ml=*/0, /*inplane_spacing_mm=*/2);
  const std::vector<std::string> files = MakeFiles();
  const engine::Policy policy = *engine::ParsePolicy("static:M1", *bank_);
  const std::optional<volume::Geometry> grid = engine::BankGrid(
      bank_->config().preprocessing(), volume::DecodeNifti(files[0], "f")->geometry);
  ASSERT_TRUE(grid.has_value());
  ASSERT_EQ(grid->dims[0], kX / 2);
  const engine::VolumeResult expected = Expected(files, policy);
  ASSERT_TRUE(expected.inplane_resampled);
  ASSERT_EQ(expected.labels.size(), static_cast<size_t>(kX * kY * kDepth));

  std::unique_ptr<Upload> upload =
      Uploaded(files, [](v1::Header* h) { h->set_policy("static:M1"); });
  std::vector<v1::SegmentResponse> messages;
  ASSERT_TRUE(Run(upload.get(), &messages).ok());
  ASSERT_TRUE(messages.front().has_accepted());
  EXPECT_THAT(messages.front().accepted().dims(), ::testing::ElementsAre(kX, kY, kDepth));
  int masks = 0;
  const v1::Summary* summary = nullptr;
  for (const v1::SegmentResponse& m : messages) {
    if (m.has_summary()) summary = &m.summary();
    if (!m.has_slice() || m.slice().mask().empty()) continue;
    const auto begin = expected.labels.begin() + m.slice().index() * kX * kY;
    EXPECT_EQ(Inflate(m.slice().mask(), kX * kY), std::string(begin, begin + kX * kY));
    ++masks;
  }
  EXPECT_GT(masks, 0);
  ASSERT_NE(summary, nullptr);
  EXPECT_THAT(summary->notes(), ::testing::Contains(std::string(engine::kInplaneNote)));
}

}  // namespace
}  // namespace danet::service
