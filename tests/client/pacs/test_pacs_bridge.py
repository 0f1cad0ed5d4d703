"""danet-pacs-bridge end to end, with real peers on loopback: Orthanc (the PACS) pushes a
phantom MR study to the bridge over DICOM, the bridge segments it on danet-server and stores the
DICOM SEG back to Orthanc. Covered: the happy path (SEG checked with dciodvfy and pydicom, the
work_dir and the metrics), the server down at first (retried with backoff, then delivered), a
permanent failure (a slice gap: kept under failed/ with its reason, no SEG, a Basic Text SR in
the study saying why, checked with dciodvfy and pydicom; sent again by the PACS it is not tried
again; `requeue` tries it again and no second SR is stored), a study that failed while the
server was down for longer than its attempts (delivered on the retry schedule once the server is
back, without a person acting), a study whose series names no rule knows (refused, then
segmented after `requeue KEY --study_rules FILE`), SIGTERM with a
study pending (exit 0, the study stays under incoming/), the study key (FNV-1a-64), and a second
Orthanc that auto-routes with a Lua OnStableStudy rule (the common set-up): our stored SEG makes
the study stable again and Orthanc re-sends it, and the bridge does not segment it again
(exactly one SEG), and the calling-AE and host allow-lists (DCMTK storescu refused, then
let in).

Run by ctest (tests.cmake) with DANET_SERVER_BIN, DANET_PACS_BRIDGE, DANET_PHANTOM,
DANET_BUNDLE and DANET_TMP set; by hand the defaults point into the source tree's build/ folder:

  cd tests/client/pacs && DANET_TMP=/tmp/pacs_e2e python3 -m unittest -v test_pacs_bridge

Needs Orthanc (Debian `orthanc`), dciodvfy (dicom3tools) and pydicom. One Orthanc and one
danet-server are shared by the module; each test starts its own bridge. Every process is
stopped by its own pid, and every wait is bounded. Also prints one LATENCY line: push to SEG
visible in Orthanc through the bridge, against `danet segment` on the same study.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import pydicom
import pydicom.uid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from procs import free_port, run, stop, tail, terminate, wait_until  # noqa: E402
SERVER_BIN = os.environ.get("DANET_SERVER_BIN",
                            os.path.join(BUILD, "bin", "danet-server"))
BRIDGE_BIN = os.environ.get("DANET_PACS_BRIDGE",
                            os.path.join(BUILD, "bin", "danet-pacs-bridge"))
CLI = os.environ.get("DANET_CLI", os.path.join(BUILD, "bin", "danet"))
PHANTOM = os.environ.get("DANET_PHANTOM", os.path.join(BUILD, "bin", "danet-phantom"))
BUNDLE = os.environ.get("DANET_BUNDLE",
                        os.path.join(ROOT, "models", "bundles", "phantom-compact"))
TMP = os.environ.get("DANET_TMP", os.path.join(tempfile.gettempdir(), "danet_pacs_bridge"))
ORTHANC_BIN = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
STORESCU = shutil.which("storescu") or "/usr/bin/storescu"

MODALITIES = ("flair", "t1ce", "t1", "t2")
SEG_LABELS = {"Necrotic core", "Edema", "Enhancing tumour"}
SEED = 11
# Four phantom cases, four studies (distinct StudyInstanceUIDs).
CASE_RETRY, CASE_HAPPY, CASE_GAP, CASE_LATE = 0, 1, 2, 3
SEG_WAIT = 90      # seconds from a push to the SEG in Orthanc
SERVE_WAIT = 180   # seconds for danet-server to load the bundle on a busy machine


# ---------------------------------------------------------------------------------------------
# Helpers.

def http(method, url, body=None, timeout=30):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read()


def study_key(study_uid):
    """The bridge's key: 16 hex digits of FNV-1a-64 of the StudyInstanceUID."""
    h = 0xcbf29ce484222325
    for c in study_uid.encode():
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def labelled(text, name, label, value):
    """The value of sample name{label="value"} in a Prometheus exposition, or None."""
    m = re.search(r'^%s\{%s="%s"\} ([^ \n]+)$' % (re.escape(name), label, value), text, re.M)
    return float(m.group(1)) if m else None


def instances(study, modality=None):
    return sorted(glob.glob(os.path.join(study, modality or "*", "*.dcm")))


def header(path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def dciodvfy_errors(path):
    v = run([DCIODVFY, path], timeout=60)
    return [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Error")], \
        v.stdout + v.stderr


def sr_text(path):
    """Every TextValue in an SR's content tree, joined."""
    texts = []

    def walk(items):
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))
    walk([pydicom.dcmread(path)])
    return "\n".join(texts)


def log_events(path):
    """The bridge's JSON log lines, parsed (other lines skipped)."""
    events = []
    for line in tail(path, 10 ** 7).splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


# ---------------------------------------------------------------------------------------------
# The peers.

class Orthanc:
    """Orthanc in the foreground on free loopback ports, storage in `workdir`."""

    def __init__(self, workdir, lua=None, stable_age=None):
        """`lua`: the text of a Lua script Orthanc runs (auto-routing rules)."""
        os.makedirs(workdir, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.http_port
        config = {
            "Name": "danet-test",
            "StorageDirectory": os.path.join(workdir, "storage"),
            "IndexDirectory": os.path.join(workdir, "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"danet": ["DANET", "127.0.0.1", 1]},  # port: set per bridge
            "Plugins": [],
            "SaveJobs": False,
        }
        if lua is not None:
            lua_path = os.path.join(workdir, "route.lua")
            with open(lua_path, "w") as f:
                f.write(lua)
            config["LuaScripts"] = [lua_path]
        if stable_age is not None:
            config["StableAge"] = stable_age
        config_path = os.path.join(workdir, "orthanc.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        self.log_path = os.path.join(workdir, "orthanc.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([ORTHANC_BIN, config_path], stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "TCP_NODELAY": "1"})
        try:
            wait_until(self._ready, 60, "Orthanc's REST API", log=self.log_path)
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("Orthanc exited with %d:\n%s"
                               % (self.proc.returncode, tail(self.log_path)))
        try:
            return json.loads(self.get("/system", timeout=2))
        except (urllib.error.URLError, OSError):
            return None

    def get(self, path, timeout=30):
        return http("GET", self.url + path, timeout=timeout)

    def get_json(self, path):
        return json.loads(self.get(path))

    def upload(self, study_dir):
        """POSTs every instance; returns Orthanc's study id."""
        studies = set()
        for path in instances(study_dir):
            with open(path, "rb") as f:
                answer = json.loads(http("POST", self.url + "/instances", f.read()))
            studies.add(answer["ParentStudy"])
        assert len(studies) == 1, studies
        return studies.pop()

    def point_danet_at(self, port):
        http("PUT", self.url + "/modalities/danet",
             {"AET": "DANET", "Host": "127.0.0.1", "Port": port})

    def push(self, study_id):
        """C-STOREs the study to the bridge (synchronous job)."""
        http("POST", self.url + "/modalities/danet/store",
             {"Resources": [study_id], "Synchronous": True}, timeout=120)

    def seg_series(self, study_id, modality="SEG"):
        return [s for s in self.get_json("/studies/%s/series" % study_id)
                if s["MainDicomTags"].get("Modality") == modality]

    def first_instance(self, series, path):
        """Saves the first instance of an Orthanc series to `path`; returns `path`."""
        found = self.get_json("/series/%s/instances" % series["ID"])
        with open(path, "wb") as f:
            f.write(self.get("/instances/%s/file" % found[0]["ID"]))
        return path

    def stop(self):
        stop(self.proc)
        self.log.close()


class Server:
    """danet-server on a given loopback port, no metrics listener."""

    def __init__(self, workdir, port):
        os.makedirs(workdir, exist_ok=True)
        self.address = "127.0.0.1:%d" % port
        self.log_path = os.path.join(workdir, "server.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [SERVER_BIN, "--address", self.address, "--metrics_address", "", "--threads", "2",
             "--bundle", BUNDLE], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._serving, SERVE_WAIT, "danet-server SERVING", interval=0.1,
                       log=self.log_path)
        except BaseException:
            self.stop()
            raise

    def _serving(self):
        if self.proc.poll() is not None:
            raise RuntimeError("danet-server exited with %d:\n%s"
                               % (self.proc.returncode, tail(self.log_path)))
        return "; SERVING" in tail(self.log_path, 100000)

    def stop(self):
        stop(self.proc)
        self.log.close()


class Bridge:
    """danet-pacs-bridge on a free DICOM port, metrics on a free port, JSON log to a file."""

    def __init__(self, workdir, server_address, peer_port, *extra):
        self.work_dir = os.path.join(workdir, "work")
        os.makedirs(workdir, exist_ok=True)
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = os.path.join(workdir, "bridge.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BRIDGE_BIN, "--ae_title", "DANET", "--port", str(self.port),
             "--peer_host", "127.0.0.1", "--peer_port", str(peer_port), "--peer_ae", "ORTHANC",
             "--server", server_address, "--work_dir", self.work_dir, "--stable_seconds", "2",
             "--metrics_address", "127.0.0.1:%d" % self.metrics_port, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"})
        try:
            wait_until(lambda: self.alive() and self.event("listening"), 30,
                       "the bridge's listening event", log=self.log_path)
        except BaseException:
            self.stop()
            raise

    def alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("danet-pacs-bridge exited with %d:\n%s"
                                 % (self.proc.returncode, tail(self.log_path)))
        return True

    def events(self, name=None):
        return [e for e in log_events(self.log_path) if name is None or e.get("event") == name]

    def event(self, name):
        found = self.events(name)
        return found[-1] if found else None

    def received_key(self, timeout=30):
        """The key of the study this bridge received (its study_receiving event)."""
        event = wait_until(lambda: self.alive() and self.event("study_receiving"), timeout,
                           "study_receiving", log=self.log_path)
        return event["study"]

    def metrics(self):
        return http("GET", "http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).decode()

    def dir(self, *parts):
        return os.path.join(self.work_dir, *parts)

    def terminate(self, timeout=10):
        """SIGTERM; returns (exit code or None if still running after `timeout`, seconds)."""
        return terminate(self.proc, timeout)

    def stop(self):
        stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Module fixtures: three phantom studies, one Orthanc, one danet-server (started on first use,
# on a port chosen now, so the retry test can point a bridge at it before it exists).

CASES = None
ORTHANC = None
SERVER = None
SERVER_PORT = None


def setUpModule():
    global CASES, ORTHANC, SERVER_PORT
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    root = os.path.join(TMP, "cases")
    run([PHANTOM, "--out", root, "--cases", "4", "--seed", str(SEED), "--dims", "96,96,32",
         "--dicom"], timeout=120, check=True)
    CASES = [os.path.join(root, "phantom_s%d_%03d" % (SEED, i), "dicom") for i in range(4)]
    for study in CASES:
        for m in MODALITIES:
            assert len(instances(study, m)) == 32, (study, m)
    unittest.addModuleCleanup(stop_server)
    ORTHANC = Orthanc(os.path.join(TMP, "orthanc"))
    unittest.addModuleCleanup(ORTHANC.stop)
    SERVER_PORT = free_port()


def server():
    global SERVER
    if SERVER is None or SERVER.proc.poll() is not None:
        SERVER = Server(os.path.join(TMP, "server"), SERVER_PORT)
    return SERVER


def stop_server():
    global SERVER
    if SERVER is not None:
        SERVER.stop()
        SERVER = None


# ---------------------------------------------------------------------------------------------
# Tests run in name order: the retry test first, while the shared server is not started yet.

class PacsBridge(unittest.TestCase):

    def start_bridge(self, name, server_address, *extra):
        bridge = Bridge(os.path.join(TMP, name), server_address, ORTHANC.dicom_port, *extra)
        self.addCleanup(bridge.stop)
        ORTHANC.point_danet_at(bridge.port)
        return bridge

    def upload(self, study_dir):
        study_id = ORTHANC.upload(study_dir)
        self.assertEqual(ORTHANC.seg_series(study_id), [])
        return study_id

    def push_until_failed(self, bridge, study_id, timeout=SEG_WAIT):
        """Pushes the study to the bridge and waits for it to fail; returns (key, event)."""
        ORTHANC.push(study_id)
        key = bridge.received_key()
        failed = wait_until(lambda: bridge.alive() and bridge.event("study_failed"), timeout,
                            "study_failed", log=bridge.log_path)
        self.assertEqual(failed["study"], key)
        return key, failed

    def wait_for_seg(self, bridge, study_id):
        def seg():
            bridge.alive()
            if bridge.event("study_failed"):
                raise AssertionError("study failed:\n" + tail(bridge.log_path))
            return ORTHANC.seg_series(study_id)
        series = wait_until(seg, SEG_WAIT, "a SEG series in Orthanc", interval=0.1,
                            log=bridge.log_path)
        self.assertEqual(len(series), 1, series)
        return series[0]

    def assert_stored(self, bridge, key):
        # Finish moves the study before the log line; wait for the line, then check the disk.
        wait_until(lambda: bridge.event("study_stored"), 10, "study_stored",
                   log=bridge.log_path)
        done = bridge.dir("done", key)
        self.assertTrue(os.path.isfile(os.path.join(done, "seg.dcm")), tail(bridge.log_path))
        with open(os.path.join(done, "result.txt")) as f:
            self.assertEqual(f.read().strip(), "SEG stored")
        self.assertEqual(os.listdir(bridge.dir("incoming")), [])
        metrics = bridge.metrics()
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "stored"), 1,
                         metrics)
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "failed"), 0)
        self.assertEqual(labelled(metrics, "danet_bridge_instances_total", "outcome", "spooled"),
                         128)
        self.assertIn("danet_bridge_pending_studies 0", metrics)

    # -- 1: the server down at first ----------------------------------------------------------

    def test_1_server_down_is_retried_then_delivered(self):
        stop_server()  # nothing listens on SERVER_PORT yet
        study = CASES[CASE_RETRY]
        bridge = self.start_bridge(
            "retry", "127.0.0.1:%d" % SERVER_PORT, "--backoff_seconds", "1",
            "--max_backoff_seconds", "2", "--max_attempts", "60")
        study_id = self.upload(study)
        ORTHANC.push(study_id)
        key = bridge.received_key()

        retry = wait_until(lambda: bridge.alive() and bridge.event("study_retry"), 30,
                           "a study_retry", log=bridge.log_path)
        self.assertEqual(retry["study"], key)
        self.assertEqual(retry["code"], "UNAVAILABLE")
        self.assertIn("danet_bridge_study_duration_seconds_count 0", bridge.metrics(),
                      "an attempt that will be retried is not a finished study")
        self.assertGreaterEqual(labelled(bridge.metrics(), "danet_bridge_retries_total", "cause",
                                         "server"), 1)
        self.assertEqual(len(instances(bridge.dir("incoming", key), ".")), 128)
        self.assertEqual(os.listdir(bridge.dir("done")), [])
        self.assertEqual(os.listdir(bridge.dir("failed")), [])

        server()  # now danet-server comes up on that port
        up = time.monotonic()
        self.wait_for_seg(bridge, study_id)
        print("\nretry: SEG in Orthanc %.1f s after danet-server was SERVING, after %d retries"
              % (time.monotonic() - up, len(bridge.events("study_retry"))), flush=True)
        self.assert_stored(bridge, key)
        retries = bridge.events("study_retry")
        self.assertTrue(all(e["code"] == "UNAVAILABLE" for e in retries), retries)
        self.assertTrue(all(e["in_seconds"] <= 2.0 for e in retries), retries)
        self.assertEqual([e["in_seconds"] for e in retries[:2]], [1.0, 2.0][:len(retries)])
        # One study, however many attempts (the histogram counted attempts before).
        self.assertIn("danet_bridge_study_duration_seconds_count 1", bridge.metrics())

    # -- 2: the happy path --------------------------------------------------------------------

    def test_2_study_in_seg_back_in_the_same_study(self):
        srv = server()
        study = CASES[CASE_HAPPY]
        source = {m: header(instances(study, m)[0]) for m in MODALITIES}
        bridge = self.start_bridge("happy", srv.address)
        study_id = self.upload(study)

        start = time.monotonic()
        ORTHANC.push(study_id)
        series = self.wait_for_seg(bridge, study_id)
        bridge_seconds = time.monotonic() - start
        key = bridge.received_key()

        seg_instances = ORTHANC.get_json("/series/%s/instances" % series["ID"])
        self.assertEqual(len(seg_instances), 1, seg_instances)
        seg_path = os.path.join(TMP, "happy", "seg_from_orthanc.dcm")
        with open(seg_path, "wb") as f:
            f.write(ORTHANC.get("/instances/%s/file" % seg_instances[0]["ID"]))

        errors, output = dciodvfy_errors(seg_path)
        self.assertEqual(errors, [], output)

        seg = pydicom.dcmread(seg_path)
        self.assertEqual(seg.Modality, "SEG")
        self.assertEqual(seg.SOPClassUID, "1.2.840.10008.5.1.4.1.1.66.4")
        self.assertEqual(seg.StudyInstanceUID, source["flair"].StudyInstanceUID)
        self.assertEqual(seg.PatientID, source["flair"].PatientID)
        labels = {s.SegmentLabel for s in seg.SegmentSequence}
        self.assertTrue(labels and labels <= SEG_LABELS, labels)
        referenced = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
        self.assertEqual(referenced, {d.SeriesInstanceUID for d in source.values()})

        self.assert_stored(bridge, key)
        with open(bridge.dir("done", key, "seg.dcm"), "rb") as a, open(seg_path, "rb") as b:
            self.assertEqual(pydicom.dcmread(a).SOPInstanceUID, pydicom.dcmread(b).SOPInstanceUID)
        metrics = bridge.metrics()
        self.assertIn("danet_bridge_study_duration_seconds_count 1", metrics)
        self.assertEqual(labelled(metrics, "danet_bridge_retries_total", "cause", "server"), 0)
        self.assertEqual(labelled(metrics, "danet_bridge_retries_total", "cause", "pacs"), 0)

        # For comparison: the danet CLI on the same study, straight to the server.
        out = os.path.join(TMP, "happy", "cli_out")
        start = time.monotonic()
        r = run([CLI, "segment", study, "--server", srv.address, "--out", out,
                 "--progress=false"], timeout=120)
        cli_seconds = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        print("\nLATENCY bridge (Orthanc push -> SEG visible in Orthanc, stable_seconds 2 "
              "included): %.2f s; danet segment CLI on the same study: %.2f s"
              % (bridge_seconds, cli_seconds), flush=True)

    # -- 3: a permanent failure is kept --------------------------------------------------------

    def test_3_invalid_study_is_kept_under_failed(self):
        srv = server()
        study = os.path.join(TMP, "gap_study")
        shutil.rmtree(study, ignore_errors=True)
        shutil.copytree(CASES[CASE_GAP], study)
        os.remove(os.path.join(study, "t1", "IM0016.dcm"))
        bridge = self.start_bridge("gap", srv.address)
        study_id = self.upload(study)
        key, failed = self.push_until_failed(bridge, study_id)
        self.assertEqual(failed["code"], "INVALID_ARGUMENT")
        self.assertEqual(bridge.events("study_retry"), [])
        kept = bridge.dir("failed", key)
        spooled = [p for p in instances(kept, ".") if os.path.basename(p) != "report.dcm"]
        self.assertEqual(len(spooled), 127, os.listdir(kept))
        self.assertTrue(os.path.isfile(os.path.join(kept, "report.dcm")))
        with open(os.path.join(kept, "reason.txt")) as f:
            reason = f.read()
        self.assertIn("INVALID_ARGUMENT", reason)
        self.assertIn("gap", reason)
        self.assertEqual(os.listdir(bridge.dir("incoming")), [])
        self.assertEqual(os.listdir(bridge.dir("done")), [])
        metrics = bridge.metrics()
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "failed"), 1,
                         metrics)
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "stored"), 0)
        self.assertEqual(ORTHANC.seg_series(study_id), [])

        # The PACS is told: a Basic Text SR in the study, with the reason, dciodvfy-clean.
        reports = wait_until(lambda: ORTHANC.seg_series(study_id, "SR"), 10,
                             "a failure SR in Orthanc", log=bridge.log_path)
        self.assertEqual(len(reports), 1, reports)
        sr_path = ORTHANC.first_instance(reports[0], os.path.join(TMP, "gap", "report.dcm"))
        errors, output = dciodvfy_errors(sr_path)
        self.assertEqual(errors, [], output)
        sr, source = pydicom.dcmread(sr_path), header(instances(study, "flair")[0])
        self.assertEqual(sr.SOPClassUID, "1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
        self.assertEqual((sr.StudyInstanceUID, sr.PatientID),
                         (source.StudyInstanceUID, source.PatientID))
        text = sr_text(sr_path)
        self.assertIn("failed", text)
        self.assertIn("INVALID_ARGUMENT", text)
        self.assertIn("gap", text)
        self.assertEqual(labelled(metrics, "danet_bridge_failure_reports_total", "outcome",
                                  "stored"), 1)
        with open(os.path.join(kept, "state.txt")) as f:
            state = dict(l.split(" ", 1) for l in f.read().splitlines())
        self.assertEqual((state["retryable"], state["report_stored"], state["bundle"]),
                         ("0", "1", "phantom-compact"))

        # Sent again (as an auto-routing PACS does once our SR changed the study): not tried
        # again, no second report.
        ORTHANC.push(study_id)
        again = wait_until(lambda: bridge.alive() and bridge.event("study_already_failed"),
                           SEG_WAIT, "study_already_failed", log=bridge.log_path)
        self.assertEqual(again["study"], key)
        self.assertEqual(len(bridge.events("study_failed")), 1)
        self.assertEqual(os.listdir(bridge.dir("incoming")), [])

        # A person asks for another try: the bridge takes it from failed/, it fails the same
        # way, and the PACS still holds one report.
        listed = run([BRIDGE_BIN, "list", "--work_dir", bridge.work_dir], timeout=30)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertRegex(listed.stdout, r"^%s rounds=0 retryable=no report=stored requeue=no "
                         r"reason=INVALID_ARGUMENT" % key)
        bad = run([BRIDGE_BIN, "requeue", "0123456789abcdef", "--work_dir", bridge.work_dir],
                  timeout=30)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("no failed study 0123456789abcdef", bad.stderr)
        requeue = run([BRIDGE_BIN, "requeue", key, "--work_dir", bridge.work_dir], timeout=30)
        self.assertEqual(requeue.returncode, 0, requeue.stderr)
        requeued = wait_until(lambda: bridge.alive() and bridge.event("study_requeued"), 30,
                              "study_requeued", log=bridge.log_path)
        self.assertEqual((requeued["study"], requeued["why"]), (key, "requested"))
        wait_until(lambda: bridge.alive() and len(bridge.events("study_failed")) == 2, SEG_WAIT,
                   "the second failure", log=bridge.log_path)
        self.assertEqual(len(ORTHANC.seg_series(study_id, "SR")), 1)
        self.assertEqual(len(instances(kept, ".")), 128)  # 127 and report.dcm
        self.assertEqual(ORTHANC.seg_series(study_id), [])

        # The missing slice reaches the PACS and is forwarded alone: the bridge joins it to the
        # failed copy, and the study, now whole, gets its SEG.
        with open(os.path.join(CASES[CASE_GAP], "t1", "IM0016.dcm"), "rb") as f:
            missing = json.loads(http("POST", ORTHANC.url + "/instances", f.read()))["ID"]
        ORTHANC.push(missing)
        wait_until(lambda: bridge.alive() and ORTHANC.seg_series(study_id), SEG_WAIT,
                   "a SEG once the missing slice came", interval=0.1, log=bridge.log_path)
        joined = bridge.event("study_joined_failed_copy")
        self.assertEqual((joined["study"], joined["instances"]), (key, 127))
        wait_until(lambda: bridge.event("study_stored"), 10, "study_stored",
                   log=bridge.log_path)
        self.assertFalse(os.path.exists(kept))
        self.assertEqual(len(ORTHANC.seg_series(study_id, "SR")), 1)

    # -- 4: SIGTERM ---------------------------------------------------------------------------

    def test_4_sigterm_stops_it_and_keeps_a_pending_study(self):
        # A study still waiting to be stable (stable_seconds 60) when SIGTERM comes: the bridge
        # exits 0 promptly and the study stays under incoming/ for the next start.
        bridge = self.start_bridge("sigterm", "127.0.0.1:%d" % SERVER_PORT,
                                   "--stable_seconds", "60")
        ORTHANC.push(ORTHANC.upload(CASES[CASE_HAPPY]))
        key = bridge.received_key()
        rc, seconds = bridge.terminate(timeout=10)
        self.assertEqual(rc, 0, tail(bridge.log_path))
        self.assertLess(seconds, 5, tail(bridge.log_path))
        self.assertIsNotNone(bridge.event("stopped"), tail(bridge.log_path))
        self.assertEqual(bridge.events("study_processing"), [])
        self.assertEqual(len(instances(bridge.dir("incoming", key), ".")), 128)

    # -- 5: the study key ---------------------------------------------------------------------

    def test_5_study_key_is_fnv1a_64_of_the_study_uid(self):
        # The documented key: 16 hex digits of FNV-1a-64 (offset basis 0xcbf29ce484222325,
        # prime 0x100000001b3) over the StudyInstanceUID, as the folder name under incoming/.
        study = CASES[CASE_HAPPY]
        uid = header(instances(study)[0]).StudyInstanceUID
        self.assertEqual(study_key("a"), "af63dc4c8601ec8c")  # the FNV test vector
        bridge = self.start_bridge("key", "127.0.0.1:%d" % SERVER_PORT, "--stable_seconds", "60")
        ORTHANC.push(ORTHANC.upload(study))
        key = bridge.received_key()
        self.assertEqual(os.listdir(bridge.dir("incoming")), [key])
        self.assertEqual(key, study_key(uid), "StudyInstanceUID %s" % uid)


    # -- 6: Orthanc auto-routing with OnStableStudy: no loop ------------------------------------

    def test_6_auto_routed_study_gets_exactly_one_seg(self):
        # Orthanc sends every stable study to the bridge. Our SEG arriving makes the study
        # change, so after StableAge it is stable again and Orthanc re-sends it (the MR and the
        # SEG). The bridge ignores the SEG, sees that every MR series was segmented with this
        # bundle, and stores nothing new: one SEG, and the loop ends.
        srv = server()
        lua = ("function OnStableStudy(studyId, tags, metadata)\n"
               "  RestApiPost('/modalities/danet/store', studyId)\n"
               "end\n")
        orthanc = Orthanc(os.path.join(TMP, "orthanc-lua"), lua=lua, stable_age=2)
        self.addCleanup(orthanc.stop)
        bridge = Bridge(os.path.join(TMP, "autoroute"), srv.address, orthanc.dicom_port)
        self.addCleanup(bridge.stop)
        orthanc.point_danet_at(bridge.port)
        study_id = orthanc.upload(CASES[CASE_HAPPY])  # no push: the Lua rule sends it

        def seg():
            bridge.alive()
            return orthanc.seg_series(study_id)
        wait_until(seg, SEG_WAIT + 30, "a SEG series in Orthanc", log=bridge.log_path)
        again = wait_until(lambda: bridge.alive() and bridge.event("study_already_segmented"),
                           SEG_WAIT, "the re-sent study recognised", log=bridge.log_path)
        key = bridge.event("study_stored")["study"]
        self.assertEqual(again["study"], key)
        # Long enough for another round (StableAge 2 s + the bridge's stable_seconds 2 s).
        time.sleep(10)
        bridge.alive()
        self.assertEqual(len(orthanc.seg_series(study_id)), 1, tail(bridge.log_path))
        self.assertEqual(len(bridge.events("study_stored")), 1)
        metrics = bridge.metrics()
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "stored"), 1)
        self.assertGreaterEqual(
            labelled(metrics, "danet_bridge_studies_total", "outcome", "already_segmented"), 1)
        self.assertGreaterEqual(
            labelled(metrics, "danet_bridge_instances_total", "outcome", "ignored"), 1,
            "the SEG came back with the re-sent study and was ignored")
        with open(bridge.dir("done", key, "sources.txt")) as f:
            sources = f.read().split("\n")
        self.assertEqual(sources[0], "bundle phantom-compact")
        self.assertEqual(len([s for s in sources[1:] if s]), 4, sources)
        self.assertTrue(os.path.isfile(bridge.dir("done", key, "seg.dcm")))
        self.assertEqual(os.listdir(bridge.dir("incoming")), [])


    # -- 7: who may send -----------------------------------------------------------------------

    def test_7_allow_lists_refuse_other_senders(self):
        bridge = self.start_bridge("allow", "127.0.0.1:%d" % SERVER_PORT, "--stable_seconds",
                                   "60", "--allowed_calling_aes", "ORTHANC,PACS2",
                                   "--allowed_hosts", "127.0.0.1")
        one = instances(CASES[CASE_HAPPY], "flair")[0]

        def store(calling_ae):
            return run([STORESCU, "-aet", calling_ae, "-aec", "DANET", "127.0.0.1",
                        str(bridge.port), one], timeout=60)
        refused = store("INTRUDER")
        self.assertNotEqual(refused.returncode, 0, refused.stdout + refused.stderr)
        self.assertIn("Association Rejected", refused.stdout + refused.stderr)
        event = wait_until(lambda: bridge.event("association_refused"), 10,
                           "association_refused", log=bridge.log_path)
        self.assertEqual((event["reason"], event["value"]), ("calling_ae", "INTRUDER"))
        self.assertEqual(labelled(bridge.metrics(), "danet_bridge_associations_refused_total",
                                  "reason", "calling_ae"), 1)
        self.assertIsNone(bridge.event("study_receiving"), "nothing was spooled")

        allowed = store("PACS2")
        self.assertEqual(allowed.returncode, 0, allowed.stdout + allowed.stderr)
        bridge.received_key()
        self.assertEqual(labelled(bridge.metrics(), "danet_bridge_instances_total", "outcome",
                                  "spooled"), 1)

        # A host allow-list without loopback refuses loopback senders, whatever their AE.
        hosts = self.start_bridge("allow-hosts", "127.0.0.1:%d" % SERVER_PORT,
                                  "--allowed_hosts", "192.0.2.1")
        r = run([STORESCU, "-aet", "ORTHANC", "-aec", "DANET", "127.0.0.1", str(hosts.port),
                 one], timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        event = wait_until(lambda: hosts.event("association_refused"), 10,
                           "association_refused", log=hosts.log_path)
        self.assertEqual((event["reason"], event["value"]), ("host", "127.0.0.1"))


    # -- 8: failed while the server was down, delivered when it is back ---------------------------

    def test_8_study_failed_while_the_server_was_down_is_delivered_later(self):
        # Two quick attempts while nothing listens: the study fails for good (a report goes to
        # the PACS), then comes back on the retry schedule and is delivered once the server is
        # up again; nobody runs a command.
        stop_server()
        study = CASES[CASE_LATE]
        bridge = self.start_bridge(
            "late", "127.0.0.1:%d" % SERVER_PORT, "--backoff_seconds", "0.5",
            "--max_attempts", "2", "--failed_retry_seconds", "3",
            "--failed_retry_rounds", "1000")
        study_id = self.upload(study)
        key, failed = self.push_until_failed(bridge, study_id, 60)
        self.assertEqual(failed["code"], "UNAVAILABLE")
        # Retries are scheduled: the failure is not final, so the PACS is not told (a report
        # would go stale once the SEG arrives).
        wait_until(lambda: bridge.alive() and bridge.event("study_requeued"), 30,
                   "a scheduled retry", log=bridge.log_path)
        self.assertEqual(ORTHANC.seg_series(study_id, "SR"), [])
        server()
        up = time.monotonic()
        wait_until(lambda: bridge.alive() and ORTHANC.seg_series(study_id), SEG_WAIT,
                   "a SEG series in Orthanc", interval=0.1, log=bridge.log_path)
        self.assertEqual(len(ORTHANC.seg_series(study_id)), 1)
        print("\nscheduled retry: SEG in Orthanc %.1f s after danet-server was SERVING"
              % (time.monotonic() - up), flush=True)
        requeued = [e for e in bridge.events("study_requeued") if e["study"] == key]
        self.assertTrue(requeued and all(e["why"] == "schedule" for e in requeued), requeued)
        self.assertEqual([e["round"] for e in requeued], list(range(1, len(requeued) + 1)))
        wait_until(lambda: bridge.event("study_stored"), 10, "study_stored",
                   log=bridge.log_path)
        self.assertTrue(os.path.isfile(bridge.dir("done", key, "seg.dcm")))
        self.assertEqual(os.listdir(bridge.dir("failed")), [])
        self.assertEqual(os.listdir(bridge.dir("incoming")), [])
        self.assertEqual(ORTHANC.seg_series(study_id, "SR"), [])
        metrics = bridge.metrics()
        self.assertEqual(labelled(metrics, "danet_bridge_studies_total", "outcome", "stored"), 1)
        self.assertGreaterEqual(
            labelled(metrics, "danet_bridge_studies_total", "outcome", "failed"), 1)


    # -- 9: a study's own naming rules -------------------------------------------------------------

    def test_9_study_rules_given_with_requeue(self):
        # A scanner that names its series "SEQ 1" .. "SEQ 4": the study fails (no rule knows
        # the names; the reason lists them), and a person requeues it with rules for it.
        srv = server()
        study = os.path.join(TMP, "seq_study")
        shutil.rmtree(study, ignore_errors=True)
        shutil.copytree(CASES[CASE_HAPPY], study)
        study_uid = pydicom.uid.generate_uid()
        for number, m in enumerate(MODALITIES, 1):
            series_uid = pydicom.uid.generate_uid()
            for path in instances(study, m):
                ds = pydicom.dcmread(path)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
                    pydicom.uid.generate_uid()
                ds.SeriesDescription = "SEQ %d" % number
                ds.save_as(path)
        bridge = self.start_bridge("seq", srv.address)
        study_id = self.upload(study)
        key, failed = self.push_until_failed(bridge, study_id)
        self.assertEqual(failed["code"], "INVALID_ARGUMENT")
        with open(bridge.dir("failed", key, "reason.txt")) as f:
            reason = f.read()
        self.assertIn("by the series rules", reason)
        self.assertIn("'SEQ 1'", reason)

        with open(os.path.join(TMP, "seq", "bad.pbtxt"), "w") as f:
            f.write('rule { modality: "pd" all: "x" }\n')
        bad = run([BRIDGE_BIN, "requeue", key, "--study_rules",
                   os.path.join(TMP, "seq", "bad.pbtxt"), "--work_dir", bridge.work_dir],
                  timeout=30)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("bad.pbtxt: rule 1 (''): modality 'pd' is not flair", bad.stderr)
        self.assertFalse(os.path.exists(bridge.dir("failed", key, "requeue")))

        rules = os.path.join(TMP, "seq", "rules.pbtxt")
        with open(rules, "w") as f:
            f.write("".join('rule { modality: "%s" all: "seq" all: "%d" }\n' % (m, i)
                            for i, m in enumerate(MODALITIES, 1)))
        r = run([BRIDGE_BIN, "requeue", key, "--study_rules", rules, "--work_dir",
                 bridge.work_dir], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(bridge.dir("rules", key + ".pbtxt")))
        wait_until(lambda: bridge.alive() and ORTHANC.seg_series(study_id), SEG_WAIT,
                   "a SEG series in Orthanc", interval=0.1, log=bridge.log_path)
        wait_until(lambda: bridge.event("study_stored"), 10, "study_stored",
                   log=bridge.log_path)
        self.assertEqual(bridge.event("study_requeued")["why"], "requested")
        self.assertEqual(os.listdir(bridge.dir("failed")), [])
        again = run([BRIDGE_BIN, "requeue", key, "--work_dir", bridge.work_dir], timeout=30)
        self.assertEqual(again.returncode, 1)  # no failed study any more
        self.assertIn("no failed study", again.stderr)
        self.assertEqual(run([BRIDGE_BIN, "requeue", "../x", "--work_dir", bridge.work_dir],
                             timeout=30).returncode, 1)


    # -- 10: a final failure while the server is down is told to the PACS ----------------------

    def test_10_no_retry_rounds_left_means_a_report(self):
        # With no scheduled rounds, a study that fails while nothing listens has failed for
        # good: the PACS gets the report, saying UNAVAILABLE.
        stop_server()
        study = os.path.join(TMP, "final_study")
        shutil.rmtree(study, ignore_errors=True)
        shutil.copytree(CASES[CASE_HAPPY], study)
        study_uid = pydicom.uid.generate_uid()
        for path in instances(study):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = study_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
                pydicom.uid.generate_uid()
            ds.save_as(path)
        bridge = self.start_bridge("final", "127.0.0.1:%d" % SERVER_PORT, "--max_attempts", "1",
                                   "--failed_retry_rounds", "0")
        study_id = self.upload(study)
        _, failed = self.push_until_failed(bridge, study_id, 60)
        self.assertEqual(failed["code"], "UNAVAILABLE")
        reports = wait_until(lambda: ORTHANC.seg_series(study_id, "SR"), 10,
                             "a failure SR in Orthanc", log=bridge.log_path)
        sr_path = ORTHANC.first_instance(reports[0], os.path.join(TMP, "final", "report.dcm"))
        self.assertIn("UNAVAILABLE", sr_text(sr_path))
        time.sleep(3)  # no scheduled retry follows
        self.assertEqual(bridge.events("study_requeued"), [])


if __name__ == "__main__":
    unittest.main()
