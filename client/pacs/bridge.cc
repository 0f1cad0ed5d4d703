#include "client/pacs/bridge.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/call.h"
#include "models/dicom/dicom_report.h"
#include "models/dicom/series_rules.h"
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

// A spooled instance is named <series key>_<name>.dcm (OnInstance); our own outputs beside
// them (seg.dcm, report.dcm) are not.
bool IsSpooledInstance(const fs::path& path) {
  return path.extension() == ".dcm" && path.filename().string().find('_') == 16;
}

// The study's series keys.
std::set<std::string> SeriesKeys(const fs::path& dir) {
  std::set<std::string> keys;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (IsSpooledInstance(entry.path()))
      keys.insert(entry.path().filename().string().substr(0, 16));
  }
  return keys;
}

// state.txt beside a failed study's instances ("name value" lines); it moves with the study
// between failed/ and incoming/ when the study is retried.
constexpr char kState[] = "state.txt";
constexpr char kRequeue[] = "requeue";  // failed/<key>/requeue: a person asked for a retry

struct FailureState {
  int rounds = 0;           // scheduled and start-up retries so far
  bool retryable = false;   // the last failure's
  int64_t failed_unix = 0;  // when it last failed
  bool report_stored = false;
  int64_t report_tried_unix = 0;  // the last attempt to store the report
  std::string bundle;             // the server's bundle then (empty: not reached)
};

FailureState ReadState(const fs::path& file) {
  FailureState state;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    int64_t n = 0;
    if (kv.first == "bundle") state.bundle = kv.second;
    if (!absl::SimpleAtoi(kv.second, &n)) continue;
    if (kv.first == "rounds") state.rounds = static_cast<int>(n);
    if (kv.first == "retryable") state.retryable = n != 0;
    if (kv.first == "failed_unix") state.failed_unix = n;
    if (kv.first == "report_stored") state.report_stored = n != 0;
    if (kv.first == "report_tried_unix") state.report_tried_unix = n;
  }
  return state;
}

// Written beside and renamed over: a crash leaves the old state or the new, never half.
absl::Status WriteState(const fs::path& file, const FailureState& state) {
  const fs::path temporary = fs::path(file).concat(".tmp");
  if (absl::Status s = volume::WriteFileBytes(
          temporary, absl::StrFormat("rounds %d\nretryable %d\nfailed_unix %d\nreport_stored %d\n"
                                     "report_tried_unix %d\nbundle %s\n",
                                     state.rounds, state.retryable, state.failed_unix,
                                     state.report_stored, state.report_tried_unix, state.bundle));
      !s.ok()) {
    return s;
  }
  std::error_code error;
  fs::rename(temporary, file, error);
  if (error) return absl::InternalError(absl::StrCat(file.string(), ": ", error.message()));
  return absl::OkStatus();
}

// The spooled instances' file names (series and instance keys).
std::set<std::string> InstanceNames(const fs::path& dir) {
  std::set<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (IsSpooledInstance(entry.path())) names.insert(entry.path().filename().string());
  }
  return names;
}

bool IsStudyKey(const std::string& key) {
  return key.size() == 16 && key.find_first_not_of("0123456789abcdef") == std::string::npos;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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
                          "already_segmented, already_failed, failed).")
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
      reports_(prometheus::BuildCounter()
                   .Name("danet_bridge_failure_reports_total")
                   .Help("Basic Text SRs telling the PACS that a study failed, by outcome "
                         "(stored, not_stored).")
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
  for (const char* outcome :
       {"stored", "no_tumour", "already_segmented", "already_failed", "failed"}) {
    outcomes_.Add({{"outcome", outcome}});
  }
  for (const char* cause : {"server", "pacs"}) retries_.Add({{"cause", cause}});
  for (const char* reason : {"calling_ae", "host"}) refused_.Add({{"reason", reason}});
  for (const char* outcome : {"stored", "not_stored"}) reports_.Add({{"outcome", outcome}});
}

absl::StatusOr<std::unique_ptr<Bridge>> Bridge::Create(const BridgeOptions& options,
                                                       metrics::Registry* registry) {
  std::error_code error;
  if (!options.series_rules.empty()) {
    absl::StatusOr<volume::SeriesRules> rules =
        volume::SeriesRules::Parse(options.series_rules, options.series_rules_file);
    if (!rules.ok()) return rules.status();
  }
  for (const char* sub : {"spool", "incoming", "done", "failed", "rules"}) {
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
  // Named by series and instance: the same instance sent twice is one file (and a study sent
  // again is recognised instance by instance).
  const std::string name =
      absl::StrCat(StudyKey(instance.series_uid), "_",
                   instance.sop_instance_uid.empty() ? fs::path(instance.file).stem().string()
                                                     : StudyKey(instance.sop_instance_uid),
                   ".dcm");
  // Under the lock: Finish and RetryFailed move incoming/<key> as a whole.
  std::lock_guard<std::mutex> lock(mutex_);
  fs::create_directories(dir, error);
  fs::rename(instance.file, dir / name, error);
  if (error) {
    fs::remove(instance.file, error);
    instances_.Add({{"outcome", "ignored"}}).Increment();
    Log("instance_not_spooled", absl::StrFormat(R"("study":"%s")", key));
    return;
  }
  instances_.Add({{"outcome", "spooled"}}).Increment();
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

bool Bridge::ReportDue(bool retryable, int rounds) const {
  return options_.failure_reports && (!retryable || rounds >= options_.failed_retry_rounds);
}

void Bridge::RetryFailed(bool at_start) {
  const fs::path failed = fs::path(options_.work_dir) / "failed";
  const int64_t now = UnixSeconds();
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(failed, error)) {
    if (!entry.is_directory()) continue;
    const std::string key = entry.path().filename().string();
    const bool requested = fs::exists(entry.path() / kRequeue, error);
    FailureState state = ReadState(entry.path() / kState);
    const bool rounds_left = state.rounds < options_.failed_retry_rounds;
    const bool due = state.retryable && now - state.failed_unix >= options_.failed_retry_seconds;
    const char* why = requested      ? "requested"
                      : !rounds_left ? nullptr
                      : at_start     ? "start"
                      : due          ? "schedule"
                                     : nullptr;
    if (why == nullptr) {
      // Not tried again: a report the PACS did not take (it was down) is tried on the schedule.
      if (ReportDue(state.retryable, state.rounds) && !state.report_stored &&
          now - state.report_tried_unix >= options_.failed_retry_seconds) {
        std::string reason;
        std::getline(std::ifstream(entry.path() / "reason.txt"), reason);
        state.report_stored = StoreFailureReport(key, entry.path().string(), reason, state.bundle);
        state.report_tried_unix = now;
        if (absl::Status s = WriteState(entry.path() / kState, state); !s.ok()) {
          Log("state_not_written", absl::StrFormat(R"("study":"%s")", key));
        }
      }
      continue;
    }
    const fs::path incoming = fs::path(options_.work_dir) / "incoming" / key;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Sent again meanwhile: that copy goes first and takes this one in (SegmentAndStore).
      if (studies_.count(key) > 0 || fs::exists(incoming, error)) continue;
      std::error_code moved;
      fs::rename(entry.path(), incoming, moved);
      if (moved) {
        Log("study_requeue_failed",
            absl::StrFormat(R"("study":"%s","error":"%s")", key, Escape(moved.message())));
        continue;
      }
      // The request is served only once the study has moved.
      fs::remove(incoming / kRequeue, error);
      state.rounds = requested ? 0 : state.rounds + 1;
      if (absl::Status s = WriteState(incoming / kState, state); !s.ok()) {
        Log("state_not_written", absl::StrFormat(R"("study":"%s")", key));
      }
      Study& study = studies_[key];
      study.last_instance = study.next_attempt = Clock::now();
      pending_.Set(static_cast<double>(studies_.size()));
    }
    Log("study_requeued",
        absl::StrFormat(R"("study":"%s","why":"%s","round":%d)", key, why, state.rounds));
  }
}

absl::Status Bridge::Run() {
  Recover();
  RetryFailed(/*at_start=*/true);
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
  Clock::time_point next_failed_scan = Clock::now();
  while (!stop_) {
    ProcessDue();
    if (Clock::now() >= next_failed_scan) {
      RetryFailed(/*at_start=*/false);
      next_failed_scan = Clock::now() + std::chrono::seconds(2);
    }
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

absl::Status Bridge::SegmentAndStore(const std::string& key, Attempt* attempt) {
  const fs::path dir = fs::path(options_.work_dir) / "incoming" / key;
  // Segmented before with the bundle the server has now? (A re-sent study, or our SEG having
  // made the PACS call the study stable again.)
  absl::StatusOr<v1::DescribeBankResponse> bank = client::DescribeBank(stub_.get());
  if (!bank.ok()) return bank.status();
  attempt->bundle = bank->bundle_name();
  std::set<std::string> series = SeriesKeys(dir);
  auto covers = [&series](const std::set<std::string>& before) {
    return !series.empty() &&
           std::includes(before.begin(), before.end(), series.begin(), series.end());
  };
  Sources sources = ReadSources(fs::path(options_.work_dir) / "done" / key / kSources);
  if (sources.bundle != bank->bundle_name()) sources = {bank->bundle_name(), {}};
  if (covers(sources.series)) {
    attempt->done = Done::kAlreadySegmented;
    attempt->note = "already segmented with this bundle";
    return absl::OkStatus();
  }
  // Failed before and here again (the PACS re-sent it, or sent what was missing). Nothing new,
  // instance by instance, after a failure a retry does not change, with this bundle (e.g. the
  // re-send an auto-routing PACS makes after our report): not again until requeued. Otherwise
  // the failed copy's instances join this one, so that a re-send of only the missing series or
  // slice completes the study.
  const fs::path failed = fs::path(options_.work_dir) / "failed" / key;
  std::error_code error;
  if (fs::is_directory(failed, error)) {
    FailureState state = ReadState(failed / kState);
    const bool requested = fs::exists(failed / kRequeue, error);
    const std::set<std::string> arrived = InstanceNames(dir), before = InstanceNames(failed);
    if (!requested && !state.retryable && state.bundle == bank->bundle_name() && !arrived.empty() &&
        std::includes(before.begin(), before.end(), arrived.begin(), arrived.end())) {
      attempt->done = Done::kAlreadyFailed;
      attempt->note = "failed before with this bundle; requeue it to try again";
      return absl::OkStatus();
    }
    int joined = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const std::string& name : before) {
        if (arrived.count(name) > 0) continue;
        fs::rename(failed / name, dir / name, error);
        joined += error ? 0 : 1;
      }
      if (!fs::exists(dir / kState, error)) {
        if (requested) state.rounds = 0;
        if (!WriteState(dir / kState, state).ok()) {
          Log("state_not_written", absl::StrFormat(R"("study":"%s")", key));
        }
      }
      fs::remove_all(failed, error);
    }
    Log("study_joined_failed_copy", absl::StrFormat(R"("study":"%s","instances":%d)", key, joined));
    series = SeriesKeys(dir);
  }
  std::vector<client::InputFile> files;
  std::error_code listed;
  for (const auto& entry : fs::directory_iterator(dir, listed)) {
    if (IsSpooledInstance(entry.path())) files.push_back({entry.path(), ""});
  }
  if (listed) {
    return absl::InternalError(absl::StrCat("incoming/", key, ": ", listed.message()));
  }
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  client::CallOptions call;
  // The study's own naming rules first (a person wrote them for this study), then the bridge's.
  const fs::path study_rules = fs::path(options_.work_dir) / "rules" / (key + ".pbtxt");
  if (fs::exists(study_rules, error)) {
    absl::StatusOr<std::string> rules = volume::ReadSeriesRulesText(study_rules.string());
    if (!rules.ok()) return rules.status();
    call.series_rules = *rules + "\n";
  }
  call.series_rules += options_.series_rules;
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
    attempt->done = Done::kNoTumour;
    attempt->note = result->summary.notes_size() > 0 ? result->summary.notes(0) : "no SEG returned";
    return absl::OkStatus();
  }
  const fs::path seg = dir / "seg.dcm";
  if (absl::Status s = volume::WriteFileBytes(seg, result->dicom_seg); !s.ok()) return s;
  absl::Status stored = StoreToPeer(seg.string(), options_.ae_title, options_.peer);
  if (!stored.ok()) return absl::Status(stored.code(), absl::StrCat("pacs: ", stored.message()));
  attempt->done = Done::kStored;
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
  Attempt result;
  const absl::Status status = SegmentAndStore(key, &result);
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
  Finish(key, status, result);
}

void Bridge::Finish(const std::string& key, const absl::Status& status, const Attempt& attempt) {
  const fs::path incoming = fs::path(options_.work_dir) / "incoming" / key;
  const fs::path failed = fs::path(options_.work_dir) / "failed" / key;
  const Done done = attempt.done;
  const bool nothing_done =
      status.ok() && (done == Done::kAlreadySegmented || done == Done::kAlreadyFailed);
  const std::string outcome = !status.ok()                      ? "failed"
                              : done == Done::kStored           ? "stored"
                              : done == Done::kNoTumour         ? "no_tumour"
                              : done == Done::kAlreadySegmented ? "already_segmented"
                                                                : "already_failed";
  const fs::path target = status.ok() ? fs::path(options_.work_dir) / "done" / key : failed;
  std::error_code error;
  Clock::time_point first_attempt;
  // A requeued study brings its state along; a study sent again inherits the failed copy's.
  FailureState state =
      ReadState(fs::exists(incoming / kState, error) ? incoming / kState : failed / kState);
  bool requeue_pending = false;  // asked for while this attempt ran: kept for the next pass
  {
    std::lock_guard<std::mutex> lock(mutex_);
    first_attempt = studies_[key].first_attempt;
    if (nothing_done) {
      fs::remove_all(incoming, error);  // done/ or failed/ keeps what the earlier run left
    } else {
      requeue_pending = !status.ok() && fs::exists(failed / kRequeue, error);
      fs::remove_all(target, error);
      if (status.ok()) fs::remove_all(failed, error);  // an earlier failure is over
      fs::create_directories(target.parent_path(), error);
      fs::rename(incoming, target, error);
    }
    studies_.erase(key);
    pending_.Set(static_cast<double>(studies_.size()));
  }
  study_seconds_.Observe(std::chrono::duration<double>(Clock::now() - first_attempt).count());
  if (status.ok() && !nothing_done) {
    // Keep the SEG, the sources and a result line; the instances stay in the PACS.
    for (const auto& entry : fs::directory_iterator(target, error)) {
      const fs::path name = entry.path().filename();
      if (name != "seg.dcm" && name != kSources) fs::remove(entry.path(), error);
    }
    std::ofstream(target / "result.txt")
        << (attempt.note.empty() ? "SEG stored" : attempt.note) << "\n";
  } else if (!status.ok()) {
    std::ofstream(target / "reason.txt") << status.ToString() << "\n";
    state.retryable = Retryable(status);
    state.failed_unix = UnixSeconds();
    if (!attempt.bundle.empty()) state.bundle = attempt.bundle;
    // The PACS is told once the failure is final: a retry cannot change it, or the scheduled
    // rounds are spent (an outage the schedule outlives leaves no stale report in the study).
    if (ReportDue(state.retryable, state.rounds) && !state.report_stored) {
      state.report_stored =
          StoreFailureReport(key, target.string(), status.ToString(), state.bundle);
      state.report_tried_unix = UnixSeconds();
    }
    if (requeue_pending) {
      if (!volume::WriteFileBytes(target / kRequeue, "").ok()) {
        Log("requeue_not_kept", absl::StrFormat(R"("study":"%s")", key));
      }
    }
    if (absl::Status s = WriteState(target / kState, state); !s.ok()) {
      Log("state_not_written", absl::StrFormat(R"("study":"%s")", key));
    }
  }
  outcomes_.Add({{"outcome", outcome}}).Increment();
  Log("study_" + outcome,
      absl::StrFormat(R"("study":"%s","code":"%s")", key, absl::StatusCodeToString(status.code())));
}

bool Bridge::StoreFailureReport(const std::string& key, const std::string& dir,
                                const std::string& reason, const std::string& bundle) {
  std::vector<fs::path> sources;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (IsSpooledInstance(entry.path())) sources.push_back(entry.path());
  }
  absl::Status stored = absl::NotFoundError("no instance of the study to take its attributes");
  if (!sources.empty()) {
    const fs::path source = *std::min_element(sources.begin(), sources.end());
    const fs::path report = fs::path(dir) / "report.dcm";
    volume::FailureReportOptions options;
    options.reason = reason.substr(0, 2000);
    options.algorithm_version =
        absl::StrCat("danet-pacs-bridge, bundle ", bundle.empty() ? "unknown" : bundle);
    absl::StatusOr<std::string> bytes = volume::ReadFileBytes(source);
    if (bytes.ok()) bytes = volume::EncodeFailureReport(*bytes, options);
    stored = bytes.status();
    if (stored.ok()) stored = volume::WriteFileBytes(report, *bytes);
    if (stored.ok()) stored = StoreToPeer(report.string(), options_.ae_title, options_.peer);
  }
  reports_.Add({{"outcome", stored.ok() ? "stored" : "not_stored"}}).Increment();
  Log(stored.ok() ? "failure_report_stored" : "failure_report_not_stored",
      absl::StrFormat(R"("study":"%s","code":"%s")", key, absl::StatusCodeToString(stored.code())));
  return stored.ok();
}

absl::Status RequestRequeue(const std::string& work_dir, const std::string& key,
                            const std::string& study_rules, const std::string& study_rules_source) {
  const fs::path dir = fs::path(work_dir) / "failed" / key;
  std::error_code error;
  if (!IsStudyKey(key) || !fs::is_directory(dir, error)) {
    return absl::NotFoundError(absl::StrCat("no failed study ", key, " under ", work_dir,
                                            "/failed (danet-pacs-bridge list shows them)"));
  }
  if (!study_rules.empty()) {
    absl::StatusOr<volume::SeriesRules> rules =
        volume::SeriesRules::Parse(study_rules, study_rules_source);
    if (!rules.ok()) return rules.status();
    fs::create_directories(fs::path(work_dir) / "rules", error);
    if (absl::Status s =
            volume::WriteFileBytes(fs::path(work_dir) / "rules" / (key + ".pbtxt"), study_rules);
        !s.ok()) {
      return s;
    }
  }
  return volume::WriteFileBytes(dir / kRequeue, "");
}

absl::StatusOr<std::vector<std::string>> ListFailed(const std::string& work_dir) {
  const fs::path failed = fs::path(work_dir) / "failed";
  std::error_code error;
  fs::directory_iterator studies(failed, error);
  if (error) return absl::NotFoundError(absl::StrCat(failed.string(), ": ", error.message()));
  std::vector<std::string> lines;
  for (const auto& entry : studies) {
    if (!entry.is_directory()) continue;
    const FailureState state = ReadState(entry.path() / kState);
    std::string reason;
    std::getline(std::ifstream(entry.path() / "reason.txt"), reason);
    lines.push_back(
        absl::StrFormat("%s rounds=%d retryable=%s report=%s requeue=%s reason=%s",
                        entry.path().filename().string(), state.rounds,
                        state.retryable ? "yes" : "no", state.report_stored ? "stored" : "no",
                        fs::exists(entry.path() / kRequeue, error) ? "requested" : "no", reason));
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

}  // namespace danet::pacs
