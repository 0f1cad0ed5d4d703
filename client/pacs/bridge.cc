#include "client/pacs/bridge.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/call.h"
#include "models/volume/nifti.h"

namespace danet::pacs {
namespace fs = std::filesystem;
namespace {

// One JSON log line (values are ours: keys, counts, codes; never patient attributes).
void Log(const std::string& event, const std::string& fields) {
  std::cerr << absl::StrFormat(R"({"ts":%d,"event":"%s"%s})",
                               std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count(),
                               event, fields.empty() ? "" : "," + fields)
            << std::endl;
}

bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsResourceExhausted(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsCancelled(s) || absl::IsAborted(s);
}

std::string Escape(std::string text) {
  for (char& c : text) {
    if (c == '"' || c == '\\' || c < 0x20) c = ' ';
  }
  return text;
}

// A spooled instance is named <series key>_<name>.dcm (OnInstance): the study's series keys.
std::set<std::string> SeriesKeys(const fs::path& dir) {
  std::set<std::string> keys;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".dcm" && name != "seg.dcm" && name.find('_') == 16) {
      keys.insert(name.substr(0, 16));
    }
  }
  return keys;
}

// done/<key>/sources.txt: "bundle NAME", then one series key per line.
constexpr char kSources[] = "sources.txt";

struct Sources {
  std::string bundle;
  std::set<std::string> series;
};

Sources ReadSources(const fs::path& file) {
  Sources sources;
  std::ifstream in(file);
  std::string line;
  if (std::getline(in, line) && absl::StartsWith(line, "bundle ")) sources.bundle = line.substr(7);
  while (std::getline(in, line)) {
    if (!line.empty()) sources.series.insert(line);
  }
  return sources;
}

absl::Status WriteSources(const fs::path& file, const Sources& sources) {
  std::string text = absl::StrCat("bundle ", sources.bundle, "\n");
  for (const std::string& s : sources.series) absl::StrAppend(&text, s, "\n");
  return volume::WriteFileBytes(file, text);
}

}  // namespace

std::string StudyKey(const std::string& uid) {
  uint64_t h = 14695981039346656037ULL;  // FNV-1a 64 offset basis
  for (unsigned char c : uid) h = (h ^ c) * 1099511628211ULL;
  return absl::StrFormat("%016x", h);
}

Bridge::Bridge(const BridgeOptions& options, std::shared_ptr<grpc::Channel> channel,
               metrics::Registry* r)
    : options_(options),
      stub_(v1::Segmentation::NewStub(std::move(channel))),
      instances_(prometheus::BuildCounter()
                     .Name("danet_bridge_instances_total")
                     .Help("DICOM instances received, by outcome (spooled, ignored).")
                     .Register(r->families())),
      outcomes_(prometheus::BuildCounter()
                    .Name("danet_bridge_studies_total")
                    .Help("Studies finished, by outcome (stored, no_tumour, "
                          "already_segmented, failed).")
                    .Register(r->families())),
      retries_(prometheus::BuildCounter()
                   .Name("danet_bridge_retries_total")
                   .Help("Study attempts that failed retryably, by cause.")
                   .Register(r->families())),
      refused_(prometheus::BuildCounter()
                   .Name("danet_bridge_associations_refused_total")
                   .Help("DICOM associations rejected by the allow-lists, by reason "
                         "(calling_ae, host).")
                   .Register(r->families())),
      pending_(prometheus::BuildGauge()
                   .Name("danet_bridge_pending_studies")
                   .Help("Studies on disk waiting to be stable, processed or retried.")
                   .Register(r->families())
                   .Add({})),
      study_seconds_(prometheus::BuildHistogram()
                         .Name("danet_bridge_study_duration_seconds")
                         .Help("Time per finished study, from its first attempt to its SEG "
                               "stored or its final failure (retries included).")
                         .Register(r->families())
                         .Add({}, metrics::ExponentialBuckets(0.5, 2, 12))) {
  // Zero-valued series from the start, so that rates and alerts see them before traffic.
  for (const char* outcome : {"spooled", "ignored"}) instances_.Add({{"outcome", outcome}});
  for (const char* outcome : {"stored", "no_tumour", "already_segmented", "failed"}) {
    outcomes_.Add({{"outcome", outcome}});
  }
  for (const char* cause : {"server", "pacs"}) retries_.Add({{"cause", cause}});
  for (const char* reason : {"calling_ae", "host"}) refused_.Add({{"reason", reason}});
}

absl::StatusOr<std::unique_ptr<Bridge>> Bridge::Create(const BridgeOptions& options,
                                                       metrics::Registry* registry) {
  std::error_code error;
  for (const char* sub : {"spool", "incoming", "done", "failed"}) {
    fs::create_directories(fs::path(options.work_dir) / sub, error);
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("work_dir ", options.work_dir, ": ", error.message()));
    }
  }
  // Studies spread over every replica behind a headless Service (dns:///...).
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      client::OpenChannel(options.server, options.security);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<Bridge>(new Bridge(options, *std::move(channel), registry));
}

void Bridge::OnInstance(const ReceivedInstance& instance) {
  std::error_code error;
  if (instance.modality != "MR" || instance.study_uid.empty()) {
    // Our own SEGs coming back, or anything we cannot segment: not spooled.
    fs::remove(instance.file, error);
    instances_.Add({{"outcome", "ignored"}}).Increment();
    return;
  }
  const std::string key = StudyKey(instance.study_uid);
  const fs::path dir = fs::path(options_.work_dir) / "incoming" / key;
  fs::create_directories(dir, error);
  fs::rename(instance.file,
             dir / absl::StrCat(StudyKey(instance.series_uid), "_",
                                fs::path(instance.file).filename().string()),
             error);
  instances_.Add({{"outcome", "spooled"}}).Increment();
  std::lock_guard<std::mutex> lock(mutex_);
  Study& study = studies_[key];
  if (study.instances == 0) Log("study_receiving", absl::StrFormat(R"("study":"%s")", key));
  ++study.instances;
  study.last_instance = Clock::now();
  study.next_attempt =
      study.last_instance + std::chrono::milliseconds(int64_t(options_.stable_seconds * 1000));
  pending_.Set(static_cast<double>(studies_.size()));
}

void Bridge::Recover() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& entry : fs::directory_iterator(fs::path(options_.work_dir) / "incoming")) {
    if (!entry.is_directory()) continue;
    Study& study = studies_[entry.path().filename().string()];
    study.last_instance = study.next_attempt = Clock::now();
    Log("study_recovered", absl::StrFormat(R"("study":"%s")", entry.path().filename().string()));
  }
  pending_.Set(static_cast<double>(studies_.size()));
}

absl::Status Bridge::Run() {
  Recover();
  absl::Status scp_status;
  AccessRules rules{
      options_.allowed_calling_aes, options_.allowed_hosts,
      [this](const std::string& reason, const std::string& value) {
        refused_.Add({{"reason", reason}}).Increment();
        Log("association_refused",
            absl::StrFormat(R"("reason":"%s","value":"%s")", reason, Escape(value.substr(0, 64))));
      }};
  std::thread scp([&] {
    scp_status = RunStoreScp(
        options_.ae_title, options_.port, (fs::path(options_.work_dir) / "spool").string(), rules,
        [this](const ReceivedInstance& instance) { OnInstance(instance); }, stop_,
        &open_associations_);
    if (!scp_status.ok()) stop_ = true;
  });
  Log("listening",
      absl::StrFormat(R"("port":%d,"ae_title":"%s","allowed_calling_aes":%d,)"
                      R"("allowed_hosts":%d,"server":"%s","tls":%s,"token":%s)",
                      options_.port, Escape(options_.ae_title),
                      static_cast<int>(options_.allowed_calling_aes.size()),
                      static_cast<int>(options_.allowed_hosts.size()), Escape(options_.server),
                      options_.security.tls() ? "true" : "false",
                      options_.security.token_file.empty() ? "false" : "true"));
  while (!stop_) {
    ProcessDue();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  scp.join();
  Log("stopped", "");
  return scp_status;
}

void Bridge::ProcessDue() {
  // A PACS may pause longer than stable_seconds in the middle of a push (seen under load):
  // nothing is complete while a sender is still connected.
  if (open_associations_.load() > 0) return;
  std::vector<std::string> due;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, study] : studies_) {
      if (study.next_attempt <= Clock::now()) due.push_back(key);
    }
  }
  for (const std::string& key : due) {
    if (stop_) return;
    Process(key);
  }
}

absl::Status Bridge::SegmentAndStore(const std::string& key, Done* done, std::string* note) {
  const fs::path dir = fs::path(options_.work_dir) / "incoming" / key;
  // Segmented before with the bundle the server has now? (A re-sent study, or our SEG having
  // made the PACS call the study stable again.)
  absl::StatusOr<v1::DescribeBankResponse> bank = client::DescribeBank(stub_.get());
  if (!bank.ok()) return bank.status();
  const std::set<std::string> series = SeriesKeys(dir);
  Sources sources = ReadSources(fs::path(options_.work_dir) / "done" / key / kSources);
  if (sources.bundle != bank->bundle_name()) sources = {bank->bundle_name(), {}};
  if (!series.empty() &&
      std::includes(sources.series.begin(), sources.series.end(), series.begin(), series.end())) {
    *done = Done::kAlreadySegmented;
    *note = "already segmented with this bundle";
    return absl::OkStatus();
  }
  std::vector<client::InputFile> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".dcm" && entry.path().filename() != "seg.dcm") {
      files.push_back({entry.path(), ""});
    }
  }
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  client::CallOptions call;
  call.request_id = "bridge-" + key;
  call.policy = options_.policy;
  call.want_labelmap = false;
  call.want_dicom_seg = true;
  call.omit_masks = true;
  call.deadline_seconds = options_.deadline_seconds;
  absl::StatusOr<client::CaseResult> result = client::SegmentFiles(stub_.get(), files, call);
  if (!result.ok()) return result.status();
  sources.series.insert(series.begin(), series.end());
  if (absl::Status s = WriteSources(dir / kSources, sources); !s.ok()) return s;
  if (result->dicom_seg.empty()) {
    *done = Done::kNoTumour;
    *note = result->summary.notes_size() > 0 ? result->summary.notes(0) : "no SEG returned";
    return absl::OkStatus();
  }
  const fs::path seg = dir / "seg.dcm";
  if (absl::Status s = volume::WriteFileBytes(seg, result->dicom_seg); !s.ok()) return s;
  absl::Status stored = StoreToPeer(seg.string(), options_.ae_title, options_.peer);
  if (!stored.ok()) return absl::Status(stored.code(), absl::StrCat("pacs: ", stored.message()));
  *done = Done::kStored;
  return absl::OkStatus();
}

void Bridge::Process(const std::string& key) {
  int attempt = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Study& study = studies_[key];
    attempt = ++study.attempts;
    if (attempt == 1) study.first_attempt = Clock::now();
  }
  Log("study_processing", absl::StrFormat(R"("study":"%s","attempt":%d)", key, attempt));
  Done done = Done::kStored;
  std::string note;
  const absl::Status status = SegmentAndStore(key, &done, &note);
  if (!status.ok() && Retryable(status) && attempt < options_.max_attempts) {
    const double delay = std::min(options_.max_backoff_seconds,
                                  options_.backoff_seconds * std::pow(2.0, attempt - 1));
    const bool pacs = absl::StartsWith(status.message(), "pacs: ");
    retries_.Add({{"cause", pacs ? "pacs" : "server"}}).Increment();
    Log("study_retry",
        absl::StrFormat(R"("study":"%s","attempt":%d,"code":"%s","in_seconds":%.1f)", key, attempt,
                        absl::StatusCodeToString(status.code()), delay));
    std::lock_guard<std::mutex> lock(mutex_);
    studies_[key].next_attempt =
        Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(delay * 1000));
    return;
  }
  Finish(key, status, done, note);
}

void Bridge::Finish(const std::string& key, const absl::Status& status, Done done,
                    const std::string& note) {
  const fs::path incoming = fs::path(options_.work_dir) / "incoming" / key;
  const std::string outcome = !status.ok()              ? "failed"
                              : done == Done::kStored   ? "stored"
                              : done == Done::kNoTumour ? "no_tumour"
                                                        : "already_segmented";
  const fs::path target = fs::path(options_.work_dir) / (status.ok() ? "done" : "failed") / key;
  std::error_code error;
  Clock::time_point first_attempt;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    first_attempt = studies_[key].first_attempt;
    if (status.ok() && done == Done::kAlreadySegmented) {
      fs::remove_all(incoming, error);  // done/<key> keeps the SEG and sources of the first run
    } else {
      fs::remove_all(target, error);
      fs::create_directories(target.parent_path(), error);
      fs::rename(incoming, target, error);
    }
    studies_.erase(key);
    pending_.Set(static_cast<double>(studies_.size()));
  }
  study_seconds_.Observe(std::chrono::duration<double>(Clock::now() - first_attempt).count());
  if (status.ok() && done != Done::kAlreadySegmented) {
    // Keep the SEG, the sources and a result line; the instances stay in the PACS.
    for (const auto& entry : fs::directory_iterator(target, error)) {
      const fs::path name = entry.path().filename();
      if (name != "seg.dcm" && name != kSources) fs::remove(entry.path(), error);
    }
    std::ofstream(target / "result.txt") << (note.empty() ? "SEG stored" : note) << "\n";
  } else if (!status.ok()) {
    std::ofstream(target / "reason.txt") << status.ToString() << "\n";
  }
  outcomes_.Add({{"outcome", outcome}}).Increment();
  Log("study_" + outcome,
      absl::StrFormat(R"("study":"%s","code":"%s")", key, absl::StatusCodeToString(status.code())));
}

}  // namespace danet::pacs
