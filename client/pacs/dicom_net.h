// The DICOM network ends of the PACS bridge (DCMTK dcmnet): a C-STORE SCP that files incoming
// MR instances by study, and a C-STORE SCU that sends a file (the SEG) to a peer.
//
// Set TCP_NODELAY=1 in the environment of both ends (the bridge's main does), or DCMTK waits
// ~90 ms per C-STORE.
#ifndef DANET_CLIENT_PACS_DICOM_NET_H_
#define DANET_CLIENT_PACS_DICOM_NET_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace danet::pacs {

struct Peer {
  std::string host = "127.0.0.1";
  int port = 4242;
  std::string ae_title = "ORTHANC";
};

// One instance as stored by the listener (attributes empty when the instance lacks them).
struct ReceivedInstance {
  std::string file;  // under the spool directory; the callback owns it from then on
  std::string study_uid;
  std::string series_uid;
  std::string sop_instance_uid;
  std::string modality;
};

// Who may send: calling AE titles and peer IP addresses (empty: anyone). An association from
// elsewhere is rejected before any data is exchanged (A-ASSOCIATE-RJ, "calling AE title not
// recognized" or "no reason given" for a host), and reported to `on_refused` with the reason
// ("calling_ae" or "host") and the offending value.
struct AccessRules {
  std::vector<std::string> calling_aes;
  std::vector<std::string> hosts;
  std::function<void(const std::string& reason, const std::string& value)> on_refused;
};

// Receives instances on `port` as `ae_title` until `stop` becomes true (checked about once a
// second), each reported to `on_instance`. Instances are written under `spool_dir`.
// `open_associations` counts associations in progress (a PACS may pause mid-study; a study is
// not complete while its sender is still connected). DCMTK 3.6.7's listener binds every
// interface: restrict the port with `rules.hosts` and the network (docs/dicom.md).
absl::Status RunStoreScp(const std::string& ae_title, int port, const std::string& spool_dir,
                         const AccessRules& rules,
                         const std::function<void(const ReceivedInstance&)>& on_instance,
                         const std::atomic<bool>& stop, std::atomic<int>* open_associations);

// Sends one DICOM file to `peer` with C-STORE (proposing its SOP class and transfer syntax),
// as `ae_title`. Errors: the association or the store failed (the message says which).
absl::Status StoreToPeer(const std::string& file, const std::string& ae_title, const Peer& peer);

}  // namespace danet::pacs

#endif  // DANET_CLIENT_PACS_DICOM_NET_H_
