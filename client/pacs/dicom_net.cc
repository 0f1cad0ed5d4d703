#include "client/pacs/dicom_net.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/dstorscp.h>
#include <dcmtk/dcmnet/dstorscu.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace danet::pacs {
namespace {

// Stores to the spool and hands each file over; stops when asked between associations.
class StoreScp : public DcmStorageSCP {
 public:
  StoreScp(const AccessRules& rules,
           const std::function<void(const ReceivedInstance&)>& on_instance,
           const std::atomic<bool>& stop, std::atomic<int>* open_associations)
      : rules_(rules),
        on_instance_(on_instance),
        stop_(stop),
        open_associations_(open_associations) {}

 protected:
  OFBool checkCallingAETitleAccepted(const OFString& calling) override {
    return Allowed(rules_.calling_aes, calling.c_str(), "calling_ae");
  }
  // DCMTK passes the host name here, empty with host lookup off: the peer's IP instead.
  OFBool checkCallingHostAccepted(const OFString&) override {
    return Allowed(rules_.hosts, getPeerIP().c_str(), "host");
  }
  void notifyInstanceStored(const OFString& filename, const OFString&, const OFString&,
                            DcmDataset* dataset) const override {
    OFString study, series, instance, modality;
    if (dataset != nullptr) {
      dataset->findAndGetOFString(DCM_StudyInstanceUID, study);
      dataset->findAndGetOFString(DCM_SeriesInstanceUID, series);
      dataset->findAndGetOFString(DCM_SOPInstanceUID, instance);
      dataset->findAndGetOFString(DCM_Modality, modality);
    }
    on_instance_(
        {filename.c_str(), study.c_str(), series.c_str(), instance.c_str(), modality.c_str()});
  }
  void notifyAssociationAcknowledge() override { ++*open_associations_; }
  void notifyAssociationTermination() override {
    if (open_associations_->load() > 0) --*open_associations_;
  }
  OFBool stopAfterConnectionTimeout() override { return stop_.load(); }
  OFBool stopAfterCurrentAssociation() override { return stop_.load(); }

 private:
  bool Allowed(const std::vector<std::string>& allowed, const std::string& value,
               const char* reason) const {
    if (allowed.empty() || std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
      return true;
    }
    if (rules_.on_refused) rules_.on_refused(reason, value);
    return false;
  }

  const AccessRules& rules_;
  std::function<void(const ReceivedInstance&)> on_instance_;
  const std::atomic<bool>& stop_;
  std::atomic<int>* open_associations_;
};

// Records the DIMSE status of each instance sent (DcmStorageSCU does not check it).
class StoreScu : public DcmStorageSCU {
 public:
  Uint16 status = 0xFFFF;

 protected:
  void notifySOPInstanceSent(const TransferEntry& entry) override {
    status = entry.RequestSent ? entry.ResponseStatusCode : 0xFFFF;
  }
};

}  // namespace

absl::Status RunStoreScp(const std::string& ae_title, int port, const std::string& spool_dir,
                         const AccessRules& rules,
                         const std::function<void(const ReceivedInstance&)>& on_instance,
                         const std::atomic<bool>& stop, std::atomic<int>* open_associations) {
  StoreScp scp(rules, on_instance, stop, open_associations);
  scp.setAETitle(ae_title.c_str());
  scp.setPort(static_cast<Uint16>(port));
  scp.setConnectionBlockingMode(DUL_NOBLOCK);
  scp.setConnectionTimeout(1);
  scp.setHostLookupEnabled(OFFalse);
  scp.setOutputDirectory(spool_dir.c_str());
  scp.setFilenameGenerationMode(DcmStorageSCP::FGM_UniqueFromNewUID);
  scp.setFilenameExtension(".dcm");
  OFList<OFString> syntaxes;
  for (const char* x : {UID_LittleEndianExplicitTransferSyntax,
                        UID_LittleEndianImplicitTransferSyntax, UID_JPEGProcess14SV1TransferSyntax,
                        UID_JPEGLSLosslessTransferSyntax, UID_RLELosslessTransferSyntax,
                        UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax}) {
    syntaxes.push_back(x);
  }
  for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; ++i) {
    scp.addPresentationContext(dcmAllStorageSOPClassUIDs[i], syntaxes);
  }
  const OFCondition c = scp.listen();
  if (c.bad() && !stop.load()) {
    return absl::UnavailableError(absl::StrCat("DICOM listener on port ", port, ": ", c.text()));
  }
  return absl::OkStatus();
}

absl::Status StoreToPeer(const std::string& file, const std::string& ae_title, const Peer& peer) {
  StoreScu scu;
  scu.setAETitle(ae_title.c_str());
  scu.setPeerHostName(peer.host.c_str());
  scu.setPeerPort(static_cast<Uint16>(peer.port));
  scu.setPeerAETitle(peer.ae_title.c_str());
  scu.setACSETimeout(30);
  scu.setDIMSETimeout(60);
  const std::string where = absl::StrFormat("%s at %s:%d", peer.ae_title, peer.host, peer.port);
  OFCondition c = scu.addDicomFile(file.c_str(), ERM_fileOnly, OFFalse);
  if (c.good()) c = scu.addPresentationContexts();
  if (c.good()) c = scu.initNetwork();
  if (c.good()) c = scu.negotiateAssociation();
  if (c.bad()) {
    return absl::UnavailableError(absl::StrCat("C-STORE to ", where, ": ", c.text()));
  }
  c = scu.sendSOPInstances();
  scu.releaseAssociation();
  if (c.bad() || scu.status != 0) {
    return absl::UnavailableError(absl::StrFormat("C-STORE to %s: %s, status 0x%04x", where,
                                                  c.bad() ? c.text() : "stored", scu.status));
  }
  return absl::OkStatus();
}

}  // namespace danet::pacs
