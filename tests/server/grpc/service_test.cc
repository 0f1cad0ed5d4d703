// The service in-process over a real gRPC channel on loopback: results equal the engine's,
// every bad input gets the right code and a message naming the file or field while the server
// keeps serving, overload, idle and slow uploads, cancellation (mid-upload, mid-result),
// deadlines and draining, each counted and logged (one JSON line) under the code the client saw;
// bearer tokens (the client's name in the log and the metrics, UNAUTHENTICATED without one).
#include "server/grpc/service.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "models/bundle/bundle_config.h"
#include "models/data/phantom.h"
#include "models/engine/segmenter.h"
#include "models/volume/nifti.h"
#include "models/volume/normalize.h"
#include "server/grpc/status.h"

namespace danet::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kX = 64, kY = 48;

struct Reply {
  grpc::Status status;
  std::vector<v1::SegmentResponse> messages;
  int Count(v1::SegmentResponse::KindCase kind) const {
    int n = 0;
    for (const auto& m : messages) n += m.kind_case() == kind;
    return n;
  }
};

// Four modality files of a kX x kY x depth volume whose slices differ (so routes differ).
std::vector<std::string> MakeFiles(int depth, bool gzip = true, int seed = 3) {
  std::vector<std::string> files;
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0, 1);
  for (int m = 0; m < 4; ++m) {
    volume::Volume v;
    v.geometry = volume::MakeGeometry({kX, kY, depth}, {1, 1, 2}, {-32, -24, 0});
    v.voxels.assign(int64_t(kX) * kY * depth, 0);
    for (int z = 1; z < depth; ++z) {
      for (int64_t i = 0; i < kX * kY; ++i) {
        v.voxels[z * kX * kY + i] = 100 + 50 * ((z + m) % 3) * ((i % kX) / 32.0f) + 10 * noise(rng);
      }
    }
    files.push_back(*volume::EncodeNiftiImage(v, volume::ImageStorage::kFloat32, gzip));
  }
  return files;
}

v1::Header MakeHeader(const std::vector<std::string>& files, const std::string& policy) {
  v1::Header h;
  h.set_request_id("test");
  h.set_input_kind(v1::INPUT_KIND_NIFTI);
  h.set_policy(policy);
  h.add_outputs(v1::OUTPUT_KIND_LABELMAP_NIFTI);
  const char* modalities[] = {"flair", "t1ce", "t1", "t2"};
  for (size_t i = 0; i < files.size(); ++i) {
    v1::InputFile* f = h.add_files();
    f->set_name(std::string("case_") + modalities[i] + ".nii.gz");
    f->set_modality(modalities[i]);
    f->set_size(files[i].size());
  }
  return h;
}

std::vector<v1::SegmentRequest> Chunks(const std::vector<std::string>& files, size_t chunk = 4096) {
  std::vector<v1::SegmentRequest> out;
  for (size_t i = 0; i < files.size(); ++i) {
    for (size_t off = 0; off < files[i].size(); off += chunk) {
      v1::SegmentRequest r;
      r.mutable_chunk()->set_file_index(static_cast<uint32_t>(i));
      r.mutable_chunk()->set_offset(off);
      r.mutable_chunk()->set_data(files[i].substr(off, chunk));
      r.mutable_chunk()->set_last(off + chunk >= files[i].size());
      out.push_back(r);
    }
  }
  return out;
}

// Collects the service's log lines (the sink is called from gRPC threads).
class LogLines {
 public:
  LogSink sink() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mutex_);
      lines_.push_back(line);
    };
  }
  // Waits (bounded) until at least `n` lines arrived, then returns all of them.
  std::vector<std::string> Wait(size_t n) {
    for (int i = 0; i < 400; ++i) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (lines_.size() >= n) return lines_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(ServiceOptions{}); }

  void Start(ServiceOptions options) {
    if (server_) server_->Shutdown();
    server_.reset();
    service_.reset();
    torch::set_num_threads(2);
    v1::BundleConfig config = *models::PresetConfig("tiny");
    config.mutable_preprocessing()->set_slice_height(kY);
    config.mutable_preprocessing()->set_slice_width(kX);
    models::BankOptions bank_options;
    bank_options.load_weights = false;
    bank_options.seed = 21;
    auto bank = *models::Bank::Create(config, ".", bank_options);
    for (auto& [name, tensor] : bank->decision().NamedState()) {
      torch::NoGradGuard no_grad;
      if (name == "classifier.weight") tensor.mul_(200.0);  // spread routes
    }
    bank_ = std::move(bank);
    if (!options.log) options.log_requests = false;  // only tests that read the log write it
    options.limits.max_upload_bytes = 64 << 20;
    service_ = std::make_unique<SegmentationService>(options, &metrics_);
    service_->SetBank(bank_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = v1::Segmentation::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  Reply Call(const std::vector<v1::SegmentRequest>& requests, double deadline_s = 60,
             int cancel_after_reads = -1) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(deadline_s * 1000)));
    if (!authorization_.empty()) context.AddMetadata("authorization", authorization_);
    auto stream = stub_->Segment(&context);
    for (const auto& r : requests) {
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
    Reply reply;
    v1::SegmentResponse response;
    while (stream->Read(&response)) {
      reply.messages.push_back(response);
      if (static_cast<int>(reply.messages.size()) == cancel_after_reads) context.TryCancel();
    }
    reply.status = stream->Finish();
    return reply;
  }

  Reply Segment(const std::vector<std::string>& files, const std::string& policy = "dynamic") {
    std::vector<v1::SegmentRequest> requests(1);
    *requests[0].mutable_header() = MakeHeader(files, policy);
    for (auto& c : Chunks(files)) requests.push_back(c);
    return Call(requests);
  }

  // One call per entry of `files`, all at once, each from its own client thread.
  std::vector<Reply> SegmentAtOnce(const std::vector<std::vector<std::string>>& files) {
    std::vector<Reply> replies(files.size());
    std::vector<std::thread> clients;
    for (size_t i = 0; i < files.size(); ++i) {
      clients.emplace_back([&, i] { replies[i] = Segment(files[i]); });
    }
    for (std::thread& t : clients) t.join();
    return replies;
  }

  // Waits (bounded) until no call is admitted: the server freed the work of the last one.
  bool Idle() {
    for (int i = 0; i < 200 && service_->inflight() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return service_->inflight() == 0;
  }

  void ExpectServing() {
    const Reply ok = Segment(MakeFiles(4));
    EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  }

  // The value of one danet_requests_total series (0 when absent).
  double Requests(const std::string& code, const std::string& policy = "dynamic",
                  const std::string& client = kAnonymousClient) {
    const std::string text = registry_.Render();
    const std::string series = "danet_requests_total{client=\"" + client + "\",code=\"" + code +
                               "\",policy=\"" + policy + "\"} ";  // labels sorted by name
    const size_t at = text.find(series);
    return at == std::string::npos ? 0 : std::stod(text.substr(at + series.size()));
  }
  // Requests(code, policy) once it reaches `n` (bounded wait): a call is counted in OnDone,
  // which may come after its client has its status, and a call cancelled before its header
  // holds no slot that Idle() could wait for.
  double WaitForRequests(double n, const std::string& code, const std::string& policy = "dynamic",
                         const std::string& client = kAnonymousClient) {
    for (int i = 0; i < 200 && Requests(code, policy, client) < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return Requests(code, policy, client);
  }

  // A call that sends its header and then nothing; ends when the server ends it (or after
  // `deadline_s`, the client's own deadline).
  struct IdleCall {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::SegmentRequest, v1::SegmentResponse>> stream;
  };
  std::unique_ptr<IdleCall> StartIdleCall(const std::string& request_id, double deadline_s = 20) {
    auto call = std::make_unique<IdleCall>();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(int64_t(deadline_s * 1000)));
    call->stream = stub_->Segment(&call->context);
    v1::SegmentRequest header;
    *header.mutable_header() = MakeHeader(MakeFiles(4), "dynamic");
    header.mutable_header()->set_request_id(request_id);
    EXPECT_TRUE(call->stream->Write(header));
    return call;
  }

  std::string authorization_;  // sent as `authorization` metadata by Call when not empty
  metrics::Registry registry_;
  ServiceMetrics metrics_{&registry_};
  std::shared_ptr<const models::Bank> bank_;
  std::unique_ptr<MemoryBudget> budget_;  // for tests that set ServiceOptions.limits.memory
  std::unique_ptr<SegmentationService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Segmentation::Stub> stub_;
};

TEST_F(ServiceTest, StreamsTheEnginesResultsSliceBySlice) {
  const std::vector<std::string> files = MakeFiles(12);
  const Reply reply = Segment(files);
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  ASSERT_EQ(reply.messages.front().kind_case(), v1::SegmentResponse::kAccepted);
  EXPECT_EQ(reply.Count(v1::SegmentResponse::kSlice), 12);
  EXPECT_EQ(reply.Count(v1::SegmentResponse::kSummary), 1);
  EXPECT_GE(reply.Count(v1::SegmentResponse::kOutput), 1);

  // The same volume through the engine directly.
  std::array<volume::Volume, 4> volumes;
  for (int m = 0; m < 4; ++m) volumes[m] = *volume::DecodeNifti(files[m], "f");
  volume::MultiModalVolume image = *volume::StackModalities(volumes, {"a", "b", "c", "d"});
  volume::NormalizeZScoreBrain(&image);
  const engine::VolumeResult expected = *engine::SegmentVolume(*bank_, image, engine::Policy{});

  std::vector<uint8_t> streamed(expected.labels.size(), 0);
  std::string labelmap;
  std::set<int> routes;
  for (const auto& m : reply.messages) {
    if (m.has_slice()) {
      const v1::SliceResult& s = m.slice();
      EXPECT_EQ(s.route(), expected.slices[s.index()].route) << s.index();
      routes.insert(s.route());
      EXPECT_EQ(s.probabilities_size(), 5);
      if (!s.mask().empty()) {
        uLongf n = kX * kY;
        ASSERT_EQ(uncompress(streamed.data() + s.index() * kX * kY, &n,
                             reinterpret_cast<const Bytef*>(s.mask().data()), s.mask().size()),
                  Z_OK);
      }
    }
    if (m.has_output()) labelmap += m.output().data();
    if (m.has_summary()) {
      EXPECT_NEAR(m.summary().gmacs(), expected.gmacs, 1e-6);
      EXPECT_EQ(m.summary().route_counts().size(), 5u);
      EXPECT_GT(m.summary().seconds().total(), 0);
    }
  }
  EXPECT_GE(routes.size(), 2u);
  EXPECT_EQ(streamed, expected.labels);
  const volume::LabelVolume decoded = *volume::DecodeNiftiLabels(labelmap, "labels");
  EXPECT_EQ(decoded.labels, expected.labels);
  EXPECT_TRUE(decoded.geometry.SameGrid(image.geometry));
  EXPECT_THAT(
      registry_.Render(),
      HasSubstr("danet_requests_total{client=\"anonymous\",code=\"OK\",policy=\"dynamic\"} 1"));
}

// Requests that arrive together on one worker: with prepare_ahead the next one is
// decoded while the worker computes, without it the worker does both. Each request gets what it
// gets alone, in both modes.
TEST_F(ServiceTest, QueuedRequestsGetTheirOwnResultsPreparedAheadOrNot) {
  std::vector<std::vector<std::string>> files;
  for (int seed : {3, 4, 5}) files.push_back(MakeFiles(6, true, seed));
  auto slices = [](const Reply& reply) {
    std::map<int, std::pair<int, std::string>> by_index;
    for (const auto& m : reply.messages) {
      if (m.has_slice()) by_index[m.slice().index()] = {m.slice().route(), m.slice().mask()};
    }
    return by_index;
  };
  std::vector<std::map<int, std::pair<int, std::string>>> alone;
  for (const auto& f : files) {
    const Reply reply = Segment(f);
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    alone.push_back(slices(reply));
    ASSERT_EQ(alone.back().size(), 6u);
  }
  // A call is counted in OnDone, which may come after its client has its status: wait for the
  // three calls above before counting on from them.
  double ok = WaitForRequests(3, "OK");
  ASSERT_EQ(ok, 3);
  for (bool ahead : {true, false}) {
    ServiceOptions options;
    options.workers = 1;
    options.prepare_ahead = ahead;
    Start(options);
    const std::vector<Reply> replies = SegmentAtOnce(files);
    for (size_t i = 0; i < files.size(); ++i) {
      ASSERT_TRUE(replies[i].status.ok()) << ahead << " " << replies[i].status.error_message();
      EXPECT_EQ(replies[i].messages.front().kind_case(), v1::SegmentResponse::kAccepted);
      EXPECT_EQ(slices(replies[i]), alone[i]) << "prepare_ahead " << ahead << ", request " << i;
      for (const auto& m : replies[i].messages) {
        if (!m.has_summary()) continue;
        const v1::Timing& t = m.summary().seconds();
        EXPECT_GT(t.decode(), 0);
        EXPECT_GE(t.queued(), 0);
        EXPECT_GE(t.total(), t.decode() + t.preprocess() + t.decide());
      }
    }
    EXPECT_TRUE(Idle());
    EXPECT_EQ(WaitForRequests(ok + 3, "OK"), ok + 3) << ahead;
    ok += 3;
  }
}

// Preparing ahead never turns a wait into a refusal: with a memory budget that holds one decoded
// request at a time (and the uploads), the requests behind the one computing are decoded by the
// worker in their turn instead of failing RESOURCE_EXHAUSTED ahead of time.
TEST_F(ServiceTest, PreparingAheadWaitsForTheMemoryBudget) {
  std::vector<std::vector<std::string>> files;
  int64_t sent = 0;
  for (int seed : {3, 4, 5}) {
    files.push_back(MakeFiles(6, true, seed));
    int64_t bytes = 0;
    for (const std::string& f : files.back()) bytes += static_cast<int64_t>(f.size());
    sent = std::max(sent, bytes);
  }
  const int64_t job = JobBytes(kX * kY * 6, kX * kY);
  budget_ = std::make_unique<MemoryBudget>(job + 3 * sent + job / 2);  // not two jobs
  ServiceOptions options;
  options.workers = 1;
  options.prepare_ahead = true;
  options.limits.memory = budget_.get();
  Start(options);
  const std::vector<Reply> replies = SegmentAtOnce(files);
  for (size_t i = 0; i < files.size(); ++i) {
    EXPECT_TRUE(replies[i].status.ok()) << i << ": " << replies[i].status.error_message();
  }
  EXPECT_TRUE(Idle());
  EXPECT_EQ(budget_->in_use(), 0);
}

TEST_F(ServiceTest, PhantomCaseInInt16FilesEndToEnd) {
  data::PhantomOptions phantom_options;  // by field: the struct grows new leading members
  phantom_options.dims = {kX, kY, 20};
  auto generator =
      data::PhantomGenerator::Create("/usr/share/mricron/templates/ch2bet.nii.gz", phantom_options);
  ASSERT_TRUE(generator.ok()) << generator.status();
  const data::PhantomCase phantom = generator->Generate(7, 0);
  std::vector<std::string> files;
  for (int m = 0; m < 4; ++m) {
    files.push_back(*volume::EncodeNiftiImage({phantom.image.geometry, phantom.image.channels[m]},
                                              volume::ImageStorage::kInt16, true));
  }
  const Reply reply = Segment(files);
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  volume::MultiModalVolume image = phantom.image;
  for (auto& channel : image.channels) {
    for (float& v : channel) v = std::clamp(std::round(v), -32768.0f, 32767.0f);  // int16 files
  }
  volume::NormalizeZScoreBrain(&image);
  const engine::VolumeResult expected = *engine::SegmentVolume(*bank_, image, engine::Policy{});
  int slices = 0;
  for (const auto& m : reply.messages) {
    if (!m.has_slice()) continue;
    ++slices;
    EXPECT_EQ(m.slice().route(), expected.slices[m.slice().index()].route);
  }
  EXPECT_EQ(slices, 20);
}

TEST_F(ServiceTest, StaticPolicyAndCostBias) {
  const std::vector<std::string> files = MakeFiles(6);
  const Reply r = Segment(files, "static:M2");
  ASSERT_TRUE(r.status.ok());
  for (const auto& m : r.messages) {
    if (m.has_slice()) {
      EXPECT_EQ(m.slice().route_name(), "M2");
    }
  }
  std::vector<v1::SegmentRequest> requests(1);
  *requests[0].mutable_header() = MakeHeader(files, "dynamic");
  requests[0].mutable_header()->set_cost_bias(-1000);
  for (auto& c : Chunks(files)) requests.push_back(c);
  const Reply strong = Call(requests);
  ASSERT_TRUE(strong.status.ok());
  int largest = 0;  // the most expensive model (in the tiny preset that is not always M4)
  for (int i = 1; i < bank_->size(); ++i) {
    if (bank_->model_config(i).gmacs_per_slice() > bank_->model_config(largest).gmacs_per_slice()) {
      largest = i;
    }
  }
  for (const auto& m : strong.messages) {
    if (m.has_slice()) {
      // MakeFiles leaves slice 0 without tissue: skipped whatever the bias.
      EXPECT_EQ(m.slice().route_name(),
                m.slice().index() == 0 ? "skip" : bank_->model_config(largest).id());
    }
  }
  // The skip margin from the header: the call reports it in its policy name, and no slice
  // next to a routed one is skipped.
  std::vector<v1::SegmentRequest> widened(1);
  *widened[0].mutable_header() = MakeHeader(files, "dynamic");
  widened[0].mutable_header()->set_skip_margin(1);
  for (auto& c : Chunks(files)) widened.push_back(c);
  const Reply margin = Call(widened);
  ASSERT_TRUE(margin.status.ok()) << margin.status.error_message();
  ASSERT_EQ(margin.messages.front().kind_case(), v1::SegmentResponse::kAccepted);
  EXPECT_EQ(margin.messages.front().accepted().policy(), "dynamic+m1");
  std::map<int, int> routes;
  for (const auto& m : margin.messages) {
    if (m.has_slice()) routes[m.slice().index()] = m.slice().route();
  }
  for (const auto& [z, route] : routes) {
    if (route != 0 || z == 0) continue;  // slice 0 holds no tissue: never widened into
    EXPECT_FALSE(routes.count(z - 1) && routes[z - 1] != 0) << z;
    EXPECT_FALSE(routes.count(z + 1) && routes[z + 1] != 0) << z;
  }
}

TEST_F(ServiceTest, DescribeBankListsTheModels) {
  grpc::ClientContext context;
  v1::DescribeBankResponse bank;
  ASSERT_TRUE(stub_->DescribeBank(&context, {}, &bank).ok());
  ASSERT_EQ(bank.models_size(), 4);
  EXPECT_EQ(bank.models(3).id(), "M4");
  EXPECT_GT(bank.models(3).gmacs_per_slice(), bank.models(0).gmacs_per_slice());
  EXPECT_THAT(bank.policies(), ::testing::Contains("static:M4"));
}

struct BadCase {
  std::string name;
  std::function<void(v1::Header*, std::vector<v1::SegmentRequest>*)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST_F(ServiceTest, BadInputGetsTheRightCodeAndNamesTheFileOrField) {
  const std::vector<std::string> files = MakeFiles(4);
  std::vector<std::string> corrupt = files;
  corrupt[2][corrupt[2].size() / 2] ^= 0x55;  // breaks the gzip stream of t1
  std::vector<std::string> odd_grid = files;
  {
    volume::Volume v;
    // Another grid is resampled onto the flair's; this one lies a metre away from it.
    v.geometry = volume::MakeGeometry({kX, kY, 5}, {1, 1, 2}, {1000, 1000, 1000});
    v.voxels.assign(kX * kY * 5, 1.0f);
    odd_grid[3] = *volume::EncodeNiftiImage(v, volume::ImageStorage::kFloat32, true);
  }
  auto with_files = [](std::vector<std::string> replaced) {
    return [replaced](v1::Header* h, std::vector<v1::SegmentRequest>* chunks) {
      for (int i = 0; i < 4; ++i) h->mutable_files(i)->set_size(replaced[i].size());
      *chunks = Chunks(replaced);
    };
  };
  const std::vector<BadCase> cases = {
      {"missing modality",
       [](v1::Header* h, auto* c) {
         h->mutable_files()->RemoveLast();
         c->erase(std::remove_if(c->begin(), c->end(),
                                 [](auto& r) { return r.chunk().file_index() == 3; }),
                  c->end());
       },
       grpc::INVALID_ARGUMENT, "no file for modality 't2'"},
      {"duplicate modality",
       [](v1::Header* h, auto*) { h->mutable_files(1)->set_modality("flair"); },
       grpc::INVALID_ARGUMENT, "files[1] 'case_t1ce.nii.gz': modality 'flair' repeats files[0]"},
      {"unknown modality", [](v1::Header* h, auto*) { h->mutable_files(2)->set_modality("pd"); },
       grpc::INVALID_ARGUMENT, "modality 'pd' is not one of flair, t1ce, t1, t2"},
      {"corrupt file", with_files(corrupt), grpc::INVALID_ARGUMENT, "case_t1.nii.gz"},
      {"grid off the flair's", with_files(odd_grid), grpc::INVALID_ARGUMENT,
       "case_t2.nii.gz' (t2) covers 0%"},
      {"chunk of a later file first", [](v1::Header*, auto* c) { std::swap((*c)[0], c->back()); },
       grpc::INVALID_ARGUMENT, "chunk out of order"},
      {"offset gap", [](v1::Header*, auto* c) { c->erase(c->begin() + 1); }, grpc::INVALID_ARGUMENT,
       "expected 4096"},
      {"unknown model", [](v1::Header* h, auto*) { h->set_policy("static:M9"); },
       grpc::INVALID_ARGUMENT, "header.policy: policy 'static:M9': no bank model 'M9'"},
      {"bad policy", [](v1::Header* h, auto*) { h->set_policy("fastest"); }, grpc::INVALID_ARGUMENT,
       "header.policy"},
      {"bias on static",
       [](v1::Header* h, auto*) {
         h->set_policy("static:M1");
         h->set_cost_bias(1);
       },
       grpc::INVALID_ARGUMENT, "header.cost_bias"},
      {"margin on static",
       [](v1::Header* h, auto*) {
         h->set_policy("static:M1");
         h->set_skip_margin(1);
       },
       grpc::INVALID_ARGUMENT, "header.skip_margin"},
      {"margin too large", [](v1::Header* h, auto*) { h->set_skip_margin(33); },
       grpc::INVALID_ARGUMENT, "header.skip_margin: must be at most 32"},
      {"bad margin in policy", [](v1::Header* h, auto*) { h->set_policy("dynamic+m-1"); },
       grpc::INVALID_ARGUMENT, "header.policy: policy 'dynamic+m-1': the skip margin"},
      {"declared too big", [](v1::Header* h, auto*) { h->mutable_files(0)->set_size(1LL << 40); },
       grpc::RESOURCE_EXHAUSTED, "upload limit"},
      {"size mismatch", [](v1::Header* h, auto*) { h->mutable_files(1)->set_size(10); },
       grpc::INVALID_ARGUMENT, "more than the 10 bytes declared"},
      {"nifti sent as dicom", [](v1::Header* h, auto*) { h->set_input_kind(v1::INPUT_KIND_DICOM); },
       grpc::INVALID_ARGUMENT, "instance 'files[0] case_flair.nii.gz': not a DICOM file"},
      {"no input kind", [](v1::Header* h, auto*) { h->clear_input_kind(); }, grpc::INVALID_ARGUMENT,
       "header.input_kind"},
      {"stream ends early", [](v1::Header*, auto* c) { c->resize(c->size() / 2); },
       grpc::INVALID_ARGUMENT, "ended before every file was complete"},
  };
  for (const BadCase& bad : cases) {
    v1::Header header = MakeHeader(files, "dynamic");
    std::vector<v1::SegmentRequest> chunks = Chunks(files);
    bad.mutate(&header, &chunks);
    std::vector<v1::SegmentRequest> requests(1);
    *requests[0].mutable_header() = header;
    requests.insert(requests.end(), chunks.begin(), chunks.end());
    const Reply reply = Call(requests);
    EXPECT_EQ(reply.status.error_code(), bad.code)
        << bad.name << ": " << reply.status.error_message();
    EXPECT_THAT(reply.status.error_message(), HasSubstr(bad.message)) << bad.name;
  }
  // A chunk before any header.
  const Reply no_header = Call(Chunks(files));
  EXPECT_EQ(no_header.status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(no_header.status.error_message(), HasSubstr("first message must be a header"));
  EXPECT_TRUE(Idle());
  ExpectServing();
}

TEST_F(ServiceTest, VolumeAndUploadLimits) {
  ServiceOptions options;
  options.limits.nifti.max_dim = 32;
  Start(options);
  Reply reply = Segment(MakeFiles(4));
  EXPECT_EQ(reply.status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("case_flair.nii.gz"));
}

// A long job (400 slices through the largest model) on a thread of its own; it holds a compute
// slot until cancelled.
class LongCall {
 public:
  LongCall(v1::Segmentation::Stub* stub, const std::string& request_id) {
    files_ = MakeFiles(400, false);
    requests_.resize(1);
    *requests_[0].mutable_header() = MakeHeader(files_, "static:M4");
    requests_[0].mutable_header()->set_request_id(request_id);
    for (auto& c : Chunks(files_, 1 << 20)) requests_.push_back(c);
    thread_ = std::thread([this, stub] {
      context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      auto stream = stub->Segment(&context_);
      for (const auto& r : requests_) {
        if (!stream->Write(r)) break;
      }
      stream->WritesDone();
      v1::SegmentResponse response;
      while (stream->Read(&response)) ++read_;
      status_ = stream->Finish();
    });
  }
  ~LongCall() {
    context_.TryCancel();
    thread_.join();
  }
  // Waits (bounded) until results stream: the upload was decoded and the job holds its slot.
  bool Computing() {
    for (int i = 0; i < 1200 && read_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return read_ > 0;
  }
  grpc::Status Cancel() {
    context_.TryCancel();
    thread_.join();
    thread_ = std::thread([] {});
    return status_;
  }

 private:
  std::vector<std::string> files_;
  std::vector<v1::SegmentRequest> requests_;
  grpc::ClientContext context_;
  std::atomic<int> read_{0};
  grpc::Status status_;
  std::thread thread_;
};

// A request that waits for memory is not overtaken: while A computes, big B does not fit and
// falls back to the worker; small C, which would fit beside A, must not be decoded ahead then, or
// B could not fit beside it when A ends.
TEST_F(ServiceTest, ARequestWaitingForMemoryIsNotOvertakenByOnesPreparedAhead) {
  const std::vector<std::string> big = MakeFiles(600, false, 4), small = MakeFiles(60, false, 5);
  auto bytes = [](const std::vector<std::string>& files) {
    int64_t n = 0;
    for (const std::string& f : files) n += static_cast<int64_t>(f.size());
    return n;
  };
  const int64_t first_job = JobBytes(400 * kX * kY, kX * kY);  // LongCall: 400 slices
  const int64_t big_job = JobBytes(600 * kX * kY, kX * kY);
  // B fits with C's upload beside it, not with C decoded (C's job is larger than its upload).
  budget_ = std::make_unique<MemoryBudget>(bytes(big) + big_job + bytes(small) + (1 << 20));
  ServiceOptions options;
  options.workers = 1;
  options.prepare_ahead = true;
  options.limits.memory = budget_.get();
  Start(options);
  auto wait_for_use = [&](int64_t n) {
    for (int i = 0; i < 400 && budget_->in_use() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the prepare thread's turn
    return budget_->in_use() >= n;
  };
  LongCall first(stub_.get(), "first");
  ASSERT_TRUE(first.Computing());
  Reply big_reply, small_reply;
  std::thread b([&] { big_reply = Segment(big); });
  EXPECT_TRUE(wait_for_use(first_job + bytes(big)));
  std::thread c([&] { small_reply = Segment(small); });
  EXPECT_TRUE(wait_for_use(first_job + bytes(big) + bytes(small)));
  EXPECT_EQ(first.Cancel().error_code(), grpc::CANCELLED);
  b.join();
  c.join();
  EXPECT_TRUE(big_reply.status.ok()) << big_reply.status.error_message();
  EXPECT_TRUE(small_reply.status.ok()) << small_reply.status.error_message();
  EXPECT_TRUE(Idle());
  EXPECT_EQ(budget_->in_use(), 0);
}

TEST_F(ServiceTest, FullQueueIsResourceExhaustedAtOnce) {
  ServiceOptions options;
  options.workers = 1;
  options.queue_size = 0;
  Start(options);
  const std::vector<std::string> files = MakeFiles(4);
  // A first call that computes and holds the only compute slot.
  LongCall first(stub_.get(), "first");
  ASSERT_TRUE(first.Computing());
  const auto start = std::chrono::steady_clock::now();
  const Reply busy = Segment(files);
  EXPECT_EQ(busy.status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(busy.status.error_message(), HasSubstr("retry later"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(first.Cancel().error_code(), grpc::CANCELLED);
  EXPECT_TRUE(Idle());
  ExpectServing();
  EXPECT_THAT(registry_.Render(), HasSubstr("code=\"RESOURCE_EXHAUSTED\""));
}

// Issue 12: streams that send a header and then nothing held every admission slot, so other
// requests got RESOURCE_EXHAUSTED while health said SERVING.
TEST_F(ServiceTest, IdleUploadsDoNotLockOthersOutAndTimeOut) {
  ServiceOptions options;
  options.upload_idle_seconds = 2;
  Start(options);
  std::vector<std::unique_ptr<IdleCall>> idle;
  const auto opened = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) idle.push_back(StartIdleCall("idle-" + std::to_string(i)));
  for (int i = 0; i < 200 && service_->uploads() < 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const Reply served = Segment(MakeFiles(4));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  for (auto& call : idle) {
    const grpc::Status status = call->stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("upload_idle_seconds"));
  }
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - opened).count();
  EXPECT_GE(waited, 1.9);
  EXPECT_LT(waited, 12);  // the server's timer, not the client's 20 s deadline
  EXPECT_TRUE(Idle());    // their buffers and slots are free
  EXPECT_EQ(service_->uploads(), 0);
  EXPECT_EQ(WaitForRequests(30, "DEADLINE_EXCEEDED"), 30);
  EXPECT_EQ(Requests("OK"), 1);
  ExpectServing();
}

TEST_F(ServiceTest, UploadsAreBoundedAndTimedAsAWhole) {
  ServiceOptions options;
  options.max_uploads = 2;
  options.upload_idle_seconds = 1;
  options.max_upload_seconds = 2;
  Start(options);
  const std::vector<std::string> files = MakeFiles(4);
  {
    auto a = StartIdleCall("a");
    auto b = StartIdleCall("b");
    for (int i = 0; i < 200 && service_->uploads() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const auto start = std::chrono::steady_clock::now();
    const Reply refused = Segment(files);
    EXPECT_EQ(refused.status.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(refused.status.error_message(), HasSubstr("2 uploads in progress"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
    EXPECT_EQ(a->stream->Finish().error_code(), grpc::DEADLINE_EXCEEDED);
    EXPECT_EQ(b->stream->Finish().error_code(), grpc::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(Idle());
  // A steady trickle never idles, but the whole upload is bounded.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub_->Segment(&context);
  v1::SegmentRequest header;
  *header.mutable_header() = MakeHeader(files, "dynamic");
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(stream->Write(header));
  for (const v1::SegmentRequest& chunk : Chunks(files, 256)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!stream->Write(chunk)) break;
  }
  const grpc::Status status = stream->Finish();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("max_upload_seconds"));
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 10);
  EXPECT_TRUE(Idle());
  ExpectServing();
}

TEST_F(ServiceTest, CancellationMidUploadFreesTheSlot) {
  const std::vector<std::string> files = MakeFiles(4);
  // A few times: whether the server sees the failed read or the cancellation first varies.
  constexpr int kCalls = 5;
  for (int i = 0; i < kCalls; ++i) {
    grpc::ClientContext context;
    auto stream = stub_->Segment(&context);
    v1::SegmentRequest header;
    *header.mutable_header() = MakeHeader(files, "dynamic");
    ASSERT_TRUE(stream->Write(header));
    ASSERT_TRUE(stream->Write(Chunks(files)[0]));
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::CANCELLED);
    EXPECT_TRUE(Idle());
  }
  // Counted as what the clients saw, not as a truncated (INVALID_ARGUMENT) upload.
  EXPECT_EQ(WaitForRequests(kCalls, "CANCELLED"), kCalls);
  EXPECT_EQ(Requests("INVALID_ARGUMENT"), 0);
  ExpectServing();
}

TEST_F(ServiceTest, CancellationMidResultStopsTheWork) {
  const std::vector<std::string> files = MakeFiles(400, false);
  std::vector<v1::SegmentRequest> requests(1);
  *requests[0].mutable_header() = MakeHeader(files, "static:M4");
  for (auto& c : Chunks(files, 1 << 20)) requests.push_back(c);
  const Reply reply = Call(requests, 120, /*cancel_after_reads=*/2);  // accepted + one slice
  EXPECT_EQ(reply.status.error_code(), grpc::CANCELLED);
  EXPECT_TRUE(Idle());
  // The job stopped between slices: far fewer than 400 were computed.
  const std::string text = registry_.Render();
  const std::string series = "danet_slices_total{route=\"M4\"} ";
  const size_t at = text.find(series);
  ASSERT_NE(at, std::string::npos) << text;
  EXPECT_LT(std::stod(text.substr(at + series.size())), 400);
  ExpectServing();
}

TEST_F(ServiceTest, DeadlineExceededStopsTheWork) {
  const std::vector<std::string> files = MakeFiles(400, false);
  std::vector<v1::SegmentRequest> requests(1);
  *requests[0].mutable_header() = MakeHeader(files, "static:M4");
  for (auto& c : Chunks(files, 1 << 20)) requests.push_back(c);
  const Reply reply = Call(requests, /*deadline_s=*/0.5);
  EXPECT_EQ(reply.status.error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Idle());
  // Counted as a deadline, not as a cancellation.
  EXPECT_EQ(WaitForRequests(1, "DEADLINE_EXCEEDED", "static"), 1);
  EXPECT_EQ(Requests("CANCELLED", "static"), 0);
  ExpectServing();
}

TEST_F(ServiceTest, DrainingAndLoadingRefuseNewCalls) {
  service_->StartDraining();
  Reply reply = Segment(MakeFiles(4));
  EXPECT_EQ(reply.status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("shutting down"));
  service_->SetBank(nullptr);
  reply = Segment(MakeFiles(4));
  EXPECT_EQ(reply.status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("loading"));
}

// What danet-server does on SIGTERM: refuse new calls in the handler while the calls in flight
// finish (the listener stays up), then shut down.
TEST_F(ServiceTest, DrainingRefusesNewCallsUntilTheCallsInFlightFinish) {
  LongCall running(stub_.get(), "running");
  ASSERT_TRUE(running.Computing());
  service_->StartDraining();
  const Reply refused = Segment(MakeFiles(4));
  EXPECT_EQ(refused.status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("shutting down"));
  EXPECT_FALSE(
      service_->WaitUntilIdle(std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
  EXPECT_EQ(running.Cancel().error_code(), grpc::CANCELLED);
  EXPECT_TRUE(service_->WaitUntilIdle(std::chrono::steady_clock::now() + std::chrono::seconds(20)));
  EXPECT_EQ(service_->inflight(), 0);
}

// Client-chosen text cannot forge log lines, and every call is one JSON line under its own id,
// policy and code, refused calls included.
TEST_F(ServiceTest, RequestLogIsOneJsonLinePerCallWithClientTextEscaped) {
  LogLines log;
  ServiceOptions options;
  options.log = log.sink();
  Start(options);
  const std::vector<std::string> files = MakeFiles(4);
  const std::string forged = "x\nrequest forged OK dynamic 0.1s\x1b[31m";
  std::vector<v1::SegmentRequest> requests(1);
  *requests[0].mutable_header() = MakeHeader(files, "dynamic");
  requests[0].mutable_header()->set_request_id(forged);
  for (auto& c : Chunks(files)) requests.push_back(c);
  ASSERT_TRUE(Call(requests).status.ok());
  std::vector<std::string> lines = log.Wait(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\n'), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find('\x1b'), std::string::npos) << lines[0];
  const nlohmann::json line = nlohmann::json::parse(lines[0], nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(line.is_object()) << lines[0];
  EXPECT_EQ(line.value("event", ""), "request");
  EXPECT_EQ(line.value("code", ""), "OK");
  EXPECT_EQ(line.value("policy", ""), "dynamic");
  const std::string id = line.value("request_id", "");
  EXPECT_EQ(id, "x\\x0arequest forged OK dynamic 0.1s\\x1b[31m");
  for (char c : id) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << lines[0];
  EXPECT_TRUE(line.contains("time"));
  EXPECT_TRUE(line.contains("seconds"));

  // Ids are capped; a refused call logs its own id and policy and is counted under its policy.
  requests[0].mutable_header()->set_request_id(std::string(5000, 'a'));
  requests[0].mutable_header()->set_policy("static:M2");
  service_->StartDraining();
  EXPECT_EQ(Call(requests).status.error_code(), grpc::UNAVAILABLE);
  lines = log.Wait(2);
  ASSERT_EQ(lines.size(), 2u);
  const nlohmann::json refused = nlohmann::json::parse(lines[1], nullptr, false);
  ASSERT_TRUE(refused.is_object()) << lines[1];
  EXPECT_EQ(refused.value("code", ""), "UNAVAILABLE");
  EXPECT_EQ(refused.value("policy", ""), "static:M2");
  EXPECT_LE(refused.value("request_id", "").size(), 64u);
  EXPECT_EQ(refused.value("request_id", "").substr(0, 10), "aaaaaaaaaa");
  EXPECT_EQ(WaitForRequests(1, "UNAVAILABLE", "static"), 1);
}

// With a token table, a danet.v1 call without a bearer token of the table ends UNAUTHENTICATED
// before anything else (the token never echoed), logged and counted as "unauthenticated"; the
// right token's name is the client in the call's log line and its metrics.
TEST_F(ServiceTest, BearerTokensNameTheClientOrRefuseTheCall) {
  LogLines log;
  ServiceOptions options;
  options.log = log.sink();
  options.tokens = *TokenTable::Parse("ward-7: seven-0123456789abcdef\n", "tokens.txt");
  Start(options);
  const std::vector<std::string> files = MakeFiles(4);
  const Reply missing = Segment(files);
  EXPECT_EQ(missing.status.error_code(), grpc::UNAUTHENTICATED);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("Bearer"));
  authorization_ = "Bearer eight-0123456789abcdef";
  const Reply wrong = Segment(files);
  EXPECT_EQ(wrong.status.error_code(), grpc::UNAUTHENTICATED);
  EXPECT_THAT(wrong.status.error_message(), Not(HasSubstr("eight")));
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", authorization_);
    v1::DescribeBankResponse bank;
    EXPECT_EQ(stub_->DescribeBank(&context, {}, &bank).error_code(), grpc::UNAUTHENTICATED);
  }
  authorization_ = "Bearer seven-0123456789abcdef";
  const Reply ok = Segment(files);
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", authorization_);
    v1::DescribeBankResponse bank;
    EXPECT_TRUE(stub_->DescribeBank(&context, {}, &bank).ok());
  }
  const std::vector<std::string> lines = log.Wait(3);
  ASSERT_EQ(lines.size(), 3u);
  std::vector<std::string> clients, codes;
  for (const std::string& text : lines) {
    EXPECT_EQ(text.find("0123456789abcdef"), std::string::npos) << text;
    const nlohmann::json line = nlohmann::json::parse(text, nullptr, false);
    clients.push_back(line.value("client", ""));
    codes.push_back(line.value("code", ""));
    EXPECT_THAT(line.value("peer", ""), HasSubstr("127.0.0.1")) << text;
  }
  EXPECT_EQ(clients, (std::vector<std::string>{"unauthenticated", "unauthenticated", "ward-7"}));
  EXPECT_EQ(codes, (std::vector<std::string>{"UNAUTHENTICATED", "UNAUTHENTICATED", "OK"}));
  EXPECT_EQ(WaitForRequests(1, "OK", "dynamic", "ward-7"), 1);
  EXPECT_EQ(Requests("UNAUTHENTICATED", "dynamic", kUnauthenticatedClient), 2);
}

// A 20 kB policy is a bad argument with a short message, not a metadata-size error.
TEST_F(ServiceTest, LongClientStringsGiveShortStatusMessages) {
  const std::vector<std::string> files = MakeFiles(4);
  const Reply reply = Segment(files, "dynamic" + std::string(20000, 'x'));
  EXPECT_EQ(reply.status.error_code(), grpc::INVALID_ARGUMENT) << reply.status.error_message();
  EXPECT_LT(reply.status.error_message().size(), 300u);
  EXPECT_THAT(reply.status.error_message(), HasSubstr("header.policy"));
  // A file name with a terminal escape and a newline is echoed escaped and short.
  std::vector<v1::SegmentRequest> requests(1);
  *requests[0].mutable_header() = MakeHeader(files, "dynamic");
  requests[0].mutable_header()->mutable_files(2)->set_name("\x1b[2J" + std::string(10000, 'n') +
                                                           "\n.nii.gz");
  requests[0].mutable_header()->mutable_files(2)->set_modality("pd\n" + std::string(10000, 'm'));
  const Reply named = Call(requests);
  EXPECT_EQ(named.status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_LT(named.status.error_message().size(), 300u);
  EXPECT_THAT(named.status.error_message(), HasSubstr("files[2] '\\x1b[2Jnnn"));
  EXPECT_EQ(named.status.error_message().find('\x1b'), std::string::npos);
  EXPECT_EQ(named.status.error_message().find('\n'), std::string::npos);
  ExpectServing();
}

TEST(ClientTextTest, KeepsPrintableAsciiEscapesTheRestAndCapsBetweenEscapes) {
  EXPECT_EQ(ClientText("case-17 ok"), "case-17 ok");
  EXPECT_EQ(ClientText("a\nb\x1b[0m\\c\xc3\xa9"), "a\\x0ab\\x1b[0m\\\\c\\xc3\\xa9");
  EXPECT_EQ(ClientText(std::string(64, 'a')), std::string(64, 'a'));
  EXPECT_EQ(ClientText(std::string(65, 'a')), std::string(61, 'a') + "...");
  // Never half an escape: the cut falls between whole ones.
  const std::string escaped = ClientText(std::string(100, '\n'), 10);
  EXPECT_EQ(escaped, "\\x0a...");
  EXPECT_LE(ClientText(std::string(5000, '\x01')).size(), 64u);
}

TEST(StatusTextTest, EscapesControlBytesAndCutsLongMessages) {
  EXPECT_EQ(StatusText("files[0] 'x.nii': bad"), "files[0] 'x.nii': bad");
  EXPECT_EQ(StatusText("a\rb"), "a\\x0db");
  const std::string cut = StatusText("policy '" + std::string(20000, 'x') + "'");
  EXPECT_EQ(cut.size(), kMaxStatusMessageChars);
  EXPECT_EQ(cut.substr(cut.size() - 3), "...");
  // A cut never splits a UTF-8 character.
  std::string accents;
  for (int i = 0; i < 150; ++i) accents += "\xc3\xa9";
  const std::string utf8 = StatusText(accents);
  EXPECT_LE(utf8.size(), kMaxStatusMessageChars);
  EXPECT_EQ((utf8.size() - 3) % 2, 0u) << utf8;
}

// A volume segmented twice (the bundle refitted its bias fields without the tumour) counts its
// first pass apart from the routes, and as spent in the saving.
TEST(ServiceMetricsTest, AVolumeSegmentedTwiceCountsItsFirstPassAsSpent) {
  metrics::Registry registry;
  ServiceMetrics metrics(&registry);
  metrics.Volume(/*gmacs=*/3, /*gmacs_all_largest=*/10, /*first_pass_gmacs=*/0);
  metrics.Volume(/*gmacs=*/5, /*gmacs_all_largest=*/10, /*first_pass_gmacs=*/2);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("\ndanet_bias_refits_total 1\n"));
  EXPECT_THAT(text, HasSubstr("\ndanet_first_pass_macs_total 2000000000\n"));
  EXPECT_THAT(text, HasSubstr("\ndanet_macs_saved_total 12000000000\n"));  // 7 + 5 GMACs
}

}  // namespace
}  // namespace danet::service
