"""danet-server out of process, with its real peers: the danet CLI, a Python grpcio client (stubs
generated at test time), promtool and a Prometheus server scraping /metrics, and SIGTERM
draining with a call in flight.

Run by ctest (tests.cmake) with DANET_SERVER_BIN, DANET_CLI, DANET_PHANTOM, DANET_BUNDLE,
DANET_PROTO_DIR, DANET_GRPC_PROTO_DIR and DANET_TMP set; by hand the defaults point into the
source tree's build/ folder:

  cd tests/server/grpc && DANET_TMP=/tmp/e2e python3 -m unittest -v test_service_e2e

Everything listens on 127.0.0.1 only. Every process the test starts is stopped by its own pid,
and every wait is bounded.
"""
import gzip
import importlib.util
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
import urllib.parse
import urllib.request
import zlib

import nibabel as nib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from procs import free_port, run, stop, tail  # noqa: E402

SERVER = os.environ.get("DANET_SERVER_BIN",
                        os.path.join(BUILD, "bin", "danet-server"))
CLI = os.environ.get("DANET_CLI", os.path.join(BUILD, "bin", "danet"))
PHANTOM = os.environ.get("DANET_PHANTOM", os.path.join(BUILD, "bin", "danet-phantom"))
BUNDLE = os.environ.get("DANET_BUNDLE", os.path.join(ROOT, "models", "bundles", "phantom-compact"))
PROTO_DIR = os.environ.get("DANET_PROTO_DIR", os.path.join(ROOT, "proto"))
GRPC_PROTO_DIR = os.environ.get("DANET_GRPC_PROTO_DIR", "/usr/share/grpc-proto")
TMP = os.environ.get("DANET_TMP", os.path.join(tempfile.gettempdir(), "danet_service_e2e"))
PYTHON = sys.executable  # the interpreter running the test imports the stubs it generates
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

CHUNK = 512 * 1024
MODALITIES = ("flair", "t1ce", "t1", "t2")


# ---------------------------------------------------------------------------------------------
# Processes and waiting.

def cli(*args, timeout=120):
    return run([CLI, *args], timeout=timeout)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric_value(text, name):
    """The value of an unlabelled sample `name` in a Prometheus text exposition, or None."""
    m = re.search(r"^%s(?:\{\})? ([^ \n]+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def bundle_default_policy():
    """The served bundle's default_policy, read from its bundle.pbtxt ("dynamic" if unset)."""
    with open(os.path.join(BUNDLE, "bundle.pbtxt")) as f:
        m = re.search(r'(?m)^default_policy: "([^"]*)"', f.read())
    return m.group(1) if m else "dynamic"


def start_prometheus(pdir, metrics_port, more_jobs=None):
    """A real Prometheus on 127.0.0.1 (a free port) scraping 127.0.0.1:metrics_port every second
    as job "danet" (and 127.0.0.1:PORT as job NAME for each NAME: PORT of more_jobs), with its
    data and log (prometheus.log) in a fresh pdir. Returns (process, port); the caller stops
    the process."""
    shutil.rmtree(pdir, ignore_errors=True)
    os.makedirs(pdir)
    config = os.path.join(pdir, "prometheus.yml")
    jobs = dict({"danet": metrics_port}, **(more_jobs or {}))
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n")
        for name, job_port in jobs.items():
            f.write("  - job_name: %s\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % (name, job_port))
    port = free_port()
    with open(os.path.join(pdir, "prometheus.log"), "w") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(pdir, "data"),
             "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    return proc, port


class Server:
    """danet-server on 127.0.0.1 with port 0 for gRPC and (unless with_metrics is false) for
    metrics; stderr goes to a log file."""

    def __init__(self, workdir, *extra, with_metrics=True):
        self.with_metrics = with_metrics
        os.makedirs(workdir, exist_ok=True)
        self.log_path = os.path.join(workdir, "server.log")
        port_file = os.path.join(workdir, "port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [SERVER, "--address", "127.0.0.1:0", "--port_file", port_file,
             "--metrics_address", "127.0.0.1:0" if with_metrics else "", "--bundle", BUNDLE,
             "--threads", "2", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_serving(port_file)
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self, port_file, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("danet-server exited with %d:\n%s"
                                   % (self.proc.returncode, tail(self.log_path)))
            text = tail(self.log_path, 100000)
            m = re.search(r"listening on port (\d+)" +
                          (r".*metrics on port (\d+)" if self.with_metrics else ""), text)
            if m and "; SERVING" in text and os.path.exists(port_file):
                with open(port_file) as f:
                    written = f.read().strip()
                self.port = int(m.group(1))
                if written != str(self.port):
                    raise RuntimeError("port file says %r, the log %d" % (written, self.port))
                self.address = "127.0.0.1:%d" % self.port
                if self.with_metrics:
                    self.metrics_port = int(m.group(2))
                    self.metrics_url = "http://127.0.0.1:%d/metrics" % self.metrics_port
                return
            time.sleep(0.1)
        raise RuntimeError("danet-server not SERVING after %d s:\n%s"
                           % (timeout, tail(self.log_path)))

    def metrics(self):
        return http_get(self.metrics_url)

    def stop(self):
        stop(self.proc)
        self.log.close()


def vm_hwm_kib(pid):
    """A process's peak resident set size (VmHWM), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM for pid %d" % pid)


def make_phantom(root, seed, dims):
    os.makedirs(root, exist_ok=True)
    run([PHANTOM, "--out", root, "--cases", "1", "--seed", str(seed), "--dims", dims],
        timeout=120, check=True)
    case = os.path.join(root, "phantom_s%d_000" % seed)
    for m in MODALITIES:
        path = os.path.join(case, "phantom_s%d_000_%s.nii.gz" % (seed, m))
        assert os.path.exists(path), path
    return case


def case_file(case, modality):
    return os.path.join(case, "%s_%s.nii.gz" % (os.path.basename(case), modality))


# ---------------------------------------------------------------------------------------------
# Python stubs, generated at test time.

_stubs = None


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stubs():
    """Generates the Python stubs once into DANET_TMP/stubs and imports them.

    danet/v1/* import as danet.v1.*; the grpc/health and grpc/reflection messages cannot be
    imported under their own package name (it is the installed grpc package's), so their
    *_pb2 modules are loaded by path and called through generic channel methods.
    """
    global _stubs
    if _stubs is not None:
        return _stubs
    out = os.path.join(TMP, "stubs")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    includes = ["-I", PROTO_DIR, "-I", GRPC_PROTO_DIR]
    try:  # the well-known protos grpc_tools ships, in case an input imports one
        import grpc_tools
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        if os.path.isdir(well_known):
            includes += ["-I", well_known]
    except ImportError:
        pass
    result = run([PYTHON, "-m", "grpc_tools.protoc", *includes, "--python_out=" + out,
                  "--grpc_python_out=" + out, "danet/v1/bundle.proto",
                  "danet/v1/segmentation.proto", "grpc/health/v1/health.proto",
                  "grpc/reflection/v1alpha/reflection.proto"], timeout=60)
    if result.returncode != 0:
        raise RuntimeError("grpc_tools.protoc failed:\n" + result.stderr)
    if out not in sys.path:
        sys.path.insert(0, out)
    import grpc
    from danet.v1 import segmentation_pb2, segmentation_pb2_grpc
    health_pb2 = _load_module("e2e_health_pb2",
                              os.path.join(out, "grpc", "health", "v1", "health_pb2.py"))
    reflection_pb2 = _load_module(
        "e2e_reflection_pb2", os.path.join(out, "grpc", "reflection", "v1alpha", "reflection_pb2.py"))
    _stubs = dict(grpc=grpc, pb=segmentation_pb2, pb_grpc=segmentation_pb2_grpc,
                  health=health_pb2, reflection=reflection_pb2)
    return _stubs


def segment_requests(pb, case, policy="dynamic", labelmap=True):
    """Header, then each file's chunks (<= 512 KiB) in header order."""
    paths = [case_file(case, m) for m in MODALITIES]
    header = pb.Header(request_id="py-e2e", input_kind=pb.INPUT_KIND_NIFTI, policy=policy)
    for m, p in zip(MODALITIES, paths):
        header.files.add(name=os.path.basename(p), modality=m, size=os.path.getsize(p))
    if labelmap:
        header.outputs.append(pb.OUTPUT_KIND_LABELMAP_NIFTI)
    yield pb.SegmentRequest(header=header)
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            data = f.read()
        for offset in range(0, len(data), CHUNK):
            piece = data[offset:offset + CHUNK]
            yield pb.SegmentRequest(chunk=pb.Chunk(file_index=i, offset=offset, data=piece,
                                                   last=offset + len(piece) == len(data)))


# ---------------------------------------------------------------------------------------------

class ServiceE2E(unittest.TestCase):
    """One server for the CLI, the Python client and the metrics checks."""

    server = None

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "shared")
        shutil.rmtree(cls.dir, ignore_errors=True)
        os.makedirs(cls.dir)
        cls.case = make_phantom(os.path.join(cls.dir, "cases"), 77, "96,96,48")
        cls.case2 = make_phantom(os.path.join(cls.dir, "cases"), 78, "96,96,32")
        cls.server = Server(os.path.join(cls.dir, "server"), "--reflection")

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()

    def setUp(self):
        self.assertIsNone(self.server.proc.poll(), "danet-server died:\n"
                          + tail(self.server.log_path))

    def segment(self, case, *args, timeout=120):
        return cli("segment", case, "--server", self.server.address, "--progress=false", *args,
                   timeout=timeout)

    def assert_segments(self, case, out):
        r = self.segment(case, "--out", out, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    # -- CLI ----------------------------------------------------------------------------------

    def test_cli_segment_writes_labels_report_and_preview(self):
        out = os.path.join(self.dir, "cli_out")
        png = os.path.join(self.dir, "cli_preview.png")
        r = self.segment(self.case, "--out", out, "--preview", png)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("GMACs", r.stdout)

        flair = nib.load(case_file(self.case, "flair"))
        labels_img = nib.load(os.path.join(out, "labels.nii.gz"))
        self.assertEqual(labels_img.shape, flair.shape)
        self.assertTrue(np.allclose(labels_img.affine, flair.affine, atol=1e-4))
        labels = np.asarray(labels_img.dataobj)
        self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2, 4})

        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
        for key in ("routes", "gmacs", "gmacs_all_m4", "seconds", "volumes_ml", "slices"):
            self.assertIn(key, report)
        for key in ("receive", "decode", "preprocess", "decide", "segment", "encode", "total"):
            self.assertIn(key, report["seconds"])
        for key in ("wt", "tc", "et"):
            self.assertIn(key, report["volumes_ml"])
        # No --policy: the bundle's default policy.
        self.assertEqual(report["policy"], bundle_default_policy())
        slices = flair.shape[2]
        self.assertEqual(sorted(report["routes"]), ["M1", "M2", "M3", "M4", "skip"])
        self.assertEqual(sum(report["routes"].values()), slices)
        self.assertEqual(len(report["slices"]), slices)
        self.assertEqual(sorted(s["index"] for s in report["slices"]), list(range(slices)))
        for s in report["slices"]:
            self.assertEqual(set(s) >= {"index", "route", "gmacs", "ms"}, True, s)
        self.assertGreater(report["gmacs"], 0)
        self.assertLessEqual(report["gmacs"], report["gmacs_all_m4"] + 1e-6)
        voxel_ml = float(np.prod(flair.header.get_zooms()[:3])) / 1000.0
        self.assertAlmostEqual(report["volumes_ml"]["wt"], float((labels > 0).sum()) * voxel_ml,
                               delta=1e-3 + 1e-6 * report["volumes_ml"]["wt"])

        from PIL import Image
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            self.assertEqual(image.format, "PNG")
            self.assertGreater(image.size[0] * image.size[1], 0)

    def test_cli_static_policy_and_json(self):
        r = self.segment(self.case2, "--policy", "static:M1", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertEqual(report["routes"]["M1"], 32)
        self.assertEqual(sum(report["routes"].values()), 32)

    def test_cli_models_and_health(self):
        r = cli("models", "--server", self.server.address, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        for model in ("M1", "M2", "M3", "M4"):
            self.assertRegex(r.stdout, r"(?m)^\s+%s\s" % model)
        r = cli("models", "--server", self.server.address, "--json", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        bank = json.loads(r.stdout)
        self.assertEqual([m["id"] for m in bank["models"]], ["M1", "M2", "M3", "M4"])
        self.assertEqual(bank["default_policy"], bundle_default_policy())
        r = cli("health", "--server", self.server.address, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "SERVING")

    def test_cli_bad_input_is_exit_1_and_the_server_carries_on(self):
        base = os.path.join(self.dir, "bad")
        shutil.rmtree(base, ignore_errors=True)
        name = os.path.basename(self.case)

        no_t2 = os.path.join(base, "no_t2", name)
        shutil.copytree(self.case, no_t2)
        os.remove(case_file(no_t2, "t2"))
        r = self.segment(no_t2)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("t2", r.stderr)
        self.assertTrue(r.stderr.startswith("danet: "), r.stderr)

        truncated = os.path.join(base, "truncated", name)
        shutil.copytree(self.case, truncated)
        flair = case_file(truncated, "flair")
        with open(flair, "r+b") as f:
            f.truncate(os.path.getsize(flair) // 3)
        r = self.segment(truncated)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(os.path.basename(flair), r.stderr)

        r = self.segment(self.case, "--policy", "static:M9")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("M9", r.stderr)

        self.assertIsNone(self.server.proc.poll(), tail(self.server.log_path))
        report = self.assert_segments(self.case2, os.path.join(base, "after"))
        self.assertEqual(sum(report["routes"].values()), 32)

    def test_memory_budget_refuses_a_huge_volume_before_decoding(self):
        # 512 x 512 x 400 int16 per modality: a 3.6 MB upload (mostly zeros) that decodes to
        # 4 x 400 MiB of float32 and, with the engine's working set, about 7 GiB; the server's
        # default --memory_budget_mb is 1536. Refused from the header's dims, before
        # any voxel is decoded: the server's peak RSS barely moves.
        case = os.path.join(self.dir, "huge", "huge_case")
        os.makedirs(case, exist_ok=True)
        header = nib.Nifti1Header()
        header.set_data_dtype(np.int16)
        header.set_data_shape((512, 512, 400))
        header["vox_offset"] = 352
        header.set_qform(np.diag([0.45, 0.45, 1.0, 1.0]), code=1)
        first = os.path.join(case, "huge_case_flair.nii.gz")
        with gzip.open(first, "wb", compresslevel=1) as f:
            f.write(header.binaryblock + b"\0" * 4)
            block = np.zeros((512, 512), np.int16)
            block[200:300, 200:300] = 100
            for _ in range(400):
                f.write(block.tobytes())
        for m in MODALITIES[1:]:
            shutil.copyfile(first, os.path.join(case, "huge_case_%s.nii.gz" % m))
        peak_before = vm_hwm_kib(self.server.proc.pid)
        r = self.segment(case)
        peak_after = vm_hwm_kib(self.server.proc.pid)
        self.assertEqual(r.returncode, 3, r.stderr)  # RESOURCE_EXHAUSTED
        self.assertIn("memory budget of 1536 MiB", r.stderr)
        self.assertRegex(r.stderr, r"needs 7\d\d\d MiB")  # 62 B x 104.9 M voxels + 1 GiB + upload
        print("\n  512x512x400 refused; server peak RSS %.0f MiB before, %.0f MiB after"
              % (peak_before / 1024, peak_after / 1024))
        self.assertLess(peak_after - peak_before, 64 * 1024, "refused before decoding")
        # The server carries on, and a normal case is served inside the budget.
        report = self.assert_segments(self.case2, os.path.join(self.dir, "huge", "after"))
        self.assertEqual(sum(report["routes"].values()), 32)

    def test_cli_unreachable_server_is_exit_3(self):
        port = free_port()
        r = self.segment(self.case2, "--server", "127.0.0.1:%d" % port, "--deadline", "20")
        self.assertEqual(r.returncode, 3, r.stderr)
        r = cli("health", "--server", "127.0.0.1:%d" % port, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)

    # -- Python grpcio client -----------------------------------------------------------------

    def channel(self):
        grpc = stubs()["grpc"]
        channel = grpc.insecure_channel(self.server.address,
                                        options=[("grpc.max_receive_message_length", 16 << 20)])
        self.addCleanup(channel.close)
        return channel

    def test_python_segment(self):
        s = stubs()
        pb = s["pb"]
        stub = s["pb_grpc"].SegmentationStub(self.channel())
        responses = list(stub.Segment(segment_requests(pb, self.case), timeout=120))

        flair = nib.load(case_file(self.case, "flair"))
        kinds = [r.WhichOneof("kind") for r in responses]
        self.assertEqual(kinds[0], "accepted")
        accepted = responses[0].accepted
        self.assertEqual(list(accepted.dims), list(flair.shape))
        self.assertEqual(accepted.request_id, "py-e2e")
        self.assertEqual(list(accepted.routes), ["skip", "M1", "M2", "M3", "M4"])
        nx, ny, nz = flair.shape
        self.assertEqual(accepted.num_slices, nz)
        # Accepted, slices, one summary, then outputs.
        n_slices = kinds.count("slice")
        self.assertEqual(n_slices, nz)
        self.assertEqual(kinds.count("summary"), 1)
        summary_at = kinds.index("summary")
        self.assertEqual(kinds[1:summary_at], ["slice"] * nz)
        self.assertTrue(all(k == "output" for k in kinds[summary_at + 1:]), kinds)

        masks = np.zeros((nx, ny, nz), np.uint8)
        indices, routes = [], {}
        for r in responses[1:summary_at]:
            sl = r.slice
            indices.append(sl.index)
            self.assertEqual(accepted.routes[sl.route], sl.route_name)
            routes[sl.route_name] = routes.get(sl.route_name, 0) + 1
            if sl.route_name == "skip":
                self.assertEqual(sl.mask, b"")
                continue
            self.assertEqual(sl.mask_encoding, pb.MASK_ENCODING_ZLIB_U8)
            raw = zlib.decompress(sl.mask)
            self.assertEqual(len(raw), nx * ny)
            masks[:, :, sl.index] = np.frombuffer(raw, np.uint8).reshape(ny, nx).T
        self.assertEqual(sorted(indices), list(range(nz)))

        summary = responses[summary_at].summary
        self.assertEqual(sum(summary.route_counts.values()), nz)
        for name, count in summary.route_counts.items():
            self.assertEqual(routes.get(name, 0), count, name)
        self.assertLessEqual(summary.gmacs, summary.gmacs_all_largest + 1e-6)
        self.assertEqual(summary.largest_model, "M4")

        outputs = [r.output for r in responses[summary_at + 1:]]
        self.assertTrue(outputs)
        data, offset = b"", 0
        for o in outputs:
            self.assertEqual(o.kind, pb.OUTPUT_KIND_LABELMAP_NIFTI)
            self.assertEqual(o.offset, offset)
            data += o.data
            offset += len(o.data)
        self.assertTrue(outputs[-1].last)
        self.assertFalse(any(o.last for o in outputs[:-1]))
        path = os.path.join(self.dir, "py_" + (outputs[0].name or "labels.nii.gz"))
        self.assertTrue(path.endswith(".nii.gz"), path)
        with open(path, "wb") as f:
            f.write(data)
        gzip.decompress(data)  # a gzip stream
        labels_img = nib.load(path)
        self.assertEqual(labels_img.shape, flair.shape)
        self.assertTrue(np.allclose(labels_img.affine, flair.affine, atol=1e-4))
        labels = np.asarray(labels_img.dataobj)
        self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2, 4})
        # The per-slice masks are the label map.
        np.testing.assert_array_equal(labels, masks)

    def test_python_chunk_before_header_is_invalid_argument(self):
        s = stubs()
        pb, grpc = s["pb"], s["grpc"]
        stub = s["pb_grpc"].SegmentationStub(self.channel())
        requests = iter([pb.SegmentRequest(chunk=pb.Chunk(file_index=0, offset=0, data=b"x",
                                                          last=True))])
        with self.assertRaises(grpc.RpcError) as caught:
            list(stub.Segment(requests, timeout=30))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         caught.exception.details())

    def test_python_describe_bank(self):
        s = stubs()
        stub = s["pb_grpc"].SegmentationStub(self.channel())
        bank = stub.DescribeBank(s["pb"].DescribeBankRequest(), timeout=30)
        self.assertEqual([m.id for m in bank.models], ["M1", "M2", "M3", "M4"])
        self.assertEqual(bank.bundle_name, "phantom-compact")
        self.assertEqual(list(bank.modalities), list(MODALITIES))
        for m in bank.models:
            self.assertGreater(m.gmacs_per_slice, 0)

    def test_python_health_and_reflection(self):
        s = stubs()
        health, reflection = s["health"], s["reflection"]
        channel = self.channel()
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health.HealthCheckRequest.SerializeToString,
            response_deserializer=health.HealthCheckResponse.FromString)
        response = check(health.HealthCheckRequest(service=""), timeout=10)
        self.assertEqual(response.status, health.HealthCheckResponse.SERVING)

        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection.ServerReflectionResponse.FromString)
        answers = list(info(iter([
            reflection.ServerReflectionRequest(list_services=""),
            reflection.ServerReflectionRequest(file_containing_symbol="danet.v1.Segmentation"),
        ]), timeout=10))
        self.assertEqual(len(answers), 2)
        self.assertEqual(answers[0].WhichOneof("message_response"), "list_services_response")
        services = {x.name for x in answers[0].list_services_response.service}
        self.assertIn("danet.v1.Segmentation", services)
        self.assertIn("grpc.health.v1.Health", services)
        self.assertEqual(answers[1].WhichOneof("message_response"), "file_descriptor_response",
                         answers[1])
        from google.protobuf import descriptor_pb2
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in answers[1].file_descriptor_response.file_descriptor_proto]
        by_name = {f.name: f for f in files}
        self.assertIn("danet/v1/segmentation.proto", by_name)
        seg = by_name["danet/v1/segmentation.proto"]
        self.assertEqual(seg.package, "danet.v1")
        self.assertIn("Segmentation", [x.name for x in seg.service])
        methods = {m.name for m in seg.service[0].method}
        self.assertEqual(methods, {"Segment", "DescribeBank"})

    def test_log_is_json_lines_and_client_text_cannot_forge_one(self):
        s = stubs()
        pb = s["pb"]
        stub = s["pb_grpc"].SegmentationStub(self.channel())
        forged = "x\nrequest forged OK dynamic 0.1s\x1b[31m"

        def requests():
            for i, r in enumerate(segment_requests(pb, self.case2)):
                if i == 0:
                    r.header.request_id = forged
                yield r
        responses = list(stub.Segment(requests(), timeout=120))
        self.assertEqual(responses[0].accepted.request_id, forged)  # echoed to the client as is

        deadline, mine = time.monotonic() + 10, []
        while time.monotonic() < deadline and not mine:
            lines = tail(self.server.log_path, 1000000).splitlines()
            events = [json.loads(line) for line in lines if line.startswith("{")]
            mine = [e for e in events if e.get("event") == "request"
                    and e.get("request_id", "").startswith("x\\x0a")]
            time.sleep(0.1)
        self.assertEqual(len(mine), 1, tail(self.server.log_path))
        self.assertEqual(mine[0]["request_id"], "x\\x0arequest forged OK dynamic 0.1s\\x1b[31m")
        self.assertEqual(mine[0]["code"], "OK")
        for key in ("time", "policy", "seconds"):
            self.assertIn(key, mine[0])
        # Every line the server wrote is one JSON object; none starts with the forged text.
        for line in lines:
            self.assertFalse(line.startswith("request forged"), line)
        self.assertTrue(any(e.get("event") == "ready" for e in events), events[:3])
        # One start-up (the BLAS kernels' exec, if any, comes before the first line) names the
        # kernels OpenBLAS runs.
        blas = [e for e in events if e.get("event") == "blas"]
        self.assertEqual(len(blas), 1, events[:5])
        self.assertTrue(blas[0]["kernels"], blas[0])
        danet_lines = [line for line in lines if '"event"' in line]
        self.assertEqual(len(danet_lines), len(events))

    # -- Prometheus ---------------------------------------------------------------------------

    def test_metrics_promtool_and_prometheus(self):
        # Some traffic first, so that the counters move whatever order the tests run in.
        self.assert_segments(self.case2, os.path.join(self.dir, "metrics_out"))
        text = self.server.metrics()
        for needle in ('danet_slices_total{route="skip"}', 'danet_slices_total{route="M1"}',
                       'danet_slices_total{route="M4"}', "danet_requests_total{",
                       "danet_request_duration_seconds_bucket{",
                       "danet_model_inference_duration_seconds", "danet_queue_depth",
                       "danet_inflight_requests", "danet_received_bytes_total",
                       "danet_macs_total", "danet_macs_saved_total", "danet_bias_refits_total",
                       "danet_first_pass_macs_total", "danet_build_info{",
                       "danet_bundle_info{", "process_resident_memory_bytes"):
            self.assertIn(needle, text)
        self.assertRegex(
            text, r'(?m)^danet_requests_total\{client="anonymous",code="OK",policy="dynamic"\} [1-9]')
        self.assertGreater(metric_value(text, "danet_received_bytes_total"), 0)
        self.assertGreater(metric_value(text, "process_resident_memory_bytes"), 0)
        self.assertEqual(metric_value(text, "danet_inflight_requests"), 0)
        self.assertIn('bundle="phantom-compact"', text)

        r = run([PROMTOOL, "check", "metrics"], input=text, timeout=30)
        self.assertEqual(r.returncode, 0, "promtool check metrics:\n" + r.stdout + r.stderr)

        pdir = os.path.join(self.dir, "prometheus")
        prom, port = start_prometheus(pdir, self.server.metrics_port)
        self.addCleanup(stop, prom)
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            port, urllib.parse.urlencode({"query": "danet_slices_total"}))
        routes, last = {}, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not routes:
            self.assertIsNone(prom.poll(), tail(os.path.join(pdir, "prometheus.log")))
            try:
                last = json.loads(http_get(url))
                for series in last.get("data", {}).get("result", []):
                    if "route" in series["metric"]:
                        routes[series["metric"]["route"]] = float(series["value"][1])
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
                last = repr(e)
            if not routes:
                time.sleep(0.5)
        self.assertTrue(routes, "no danet_slices_total series in Prometheus: %s\n%s"
                        % (last, tail(os.path.join(pdir, "prometheus.log"))))
        self.assertIn("skip", routes)
        self.assertTrue({"M1", "M2", "M3", "M4"} <= set(routes), routes)
        self.assertGreater(sum(routes.values()), 0)
        stop(prom)
        self.assertIsNotNone(prom.poll())


# ---------------------------------------------------------------------------------------------

class BadBundleE2E(unittest.TestCase):
    """A bundle whose default policy does not work is refused at start, never served."""

    def test_bad_default_policy_is_refused_at_start(self):
        bundle = os.path.join(TMP, "bad_default_bundle")
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.copytree(BUNDLE, bundle)
        path = os.path.join(bundle, "bundle.pbtxt")
        with open(path) as f:
            config = re.sub(r'(?m)^default_policy: .*\n', "", f.read())
        with open(path, "w") as f:
            f.write(config + 'default_policy: "static:M9"\n')
        r = run([SERVER, "--address", "127.0.0.1:0", "--metrics_address", "", "--bundle", bundle,
                 "--threads", "1"], timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("bundle.pbtxt: the bundle's default_policy: policy 'static:M9': no bank "
                      "model 'M9'", r.stderr)
        self.assertNotIn("SERVING", r.stderr.replace("NOT_SERVING", ""))


class DrainE2E(unittest.TestCase):
    """SIGTERM with a call in flight: new calls refused, the call finishes, exit 0."""

    server = None
    client = None

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "drain")
        shutil.rmtree(cls.dir, ignore_errors=True)
        os.makedirs(cls.dir)
        cls.case = make_phantom(os.path.join(cls.dir, "cases"), 91, "160,160,64")
        cls.small = make_phantom(os.path.join(cls.dir, "cases"), 92, "96,96,16")
        cls.server = Server(os.path.join(cls.dir, "server"), "--drain_seconds", "60")

    @classmethod
    def tearDownClass(cls):
        stop(cls.client)
        if cls.server is not None:
            cls.server.stop()

    def test_sigterm_drains_the_call_in_flight(self):
        server = self.server
        out = os.path.join(self.dir, "inflight")
        stdout_path = os.path.join(self.dir, "inflight.stdout")
        stderr_path = os.path.join(self.dir, "inflight.stderr")
        with open(stdout_path, "w") as so, open(stderr_path, "w") as se:
            type(self).client = client = subprocess.Popen(
                [CLI, "segment", self.case, "--server", server.address, "--policy", "static:M4",
                 "--out", out, "--json", "--progress=false"], stdout=so, stderr=se)

        # The call is admitted (uploading, queued or running).
        deadline, inflight = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            self.assertIsNone(client.poll(), "the call ended before SIGTERM; make it longer:\n"
                              + tail(stderr_path))
            inflight = metric_value(server.metrics(), "danet_inflight_requests")
            if inflight == 1:
                break
            time.sleep(0.05)
        self.assertEqual(inflight, 1)

        os.kill(server.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "draining" not in tail(server.log_path, 100000):
            time.sleep(0.05)
        self.assertIn("draining", tail(server.log_path, 100000))
        self.assertIsNone(client.poll(), "the call ended before the drain was checked; make it "
                          "longer:\n" + tail(stderr_path))

        # Draining: new calls are refused, as retryable (exit 3), by the handler: the listener
        # stays up, so clients read "shutting down" rather than a refused connection.
        r = cli("segment", self.small, "--server", server.address, "--progress=false",
                "--deadline", "20", timeout=60)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("shutting down", r.stderr)
        s = stubs()
        grpc = s["grpc"]
        channel = grpc.insecure_channel(server.address)
        self.addCleanup(channel.close)
        stub = s["pb_grpc"].SegmentationStub(channel)
        with self.assertRaises(grpc.RpcError) as caught:
            list(stub.Segment(segment_requests(s["pb"], self.small), timeout=20))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE,
                         caught.exception.details())
        self.assertIn("shutting down", caught.exception.details())
        r = cli("health", "--server", server.address, timeout=30)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertRegex(r.stdout + r.stderr, "NOT_SERVING|UNAVAILABLE")
        self.assertIsNone(client.poll(), "the in-flight call ended while new calls were "
                          "checked; make it longer")

        # The call in flight completes, then the server exits 0.
        try:
            client.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.fail("the in-flight call did not finish in 120 s")
        self.assertEqual(client.returncode, 0, tail(stderr_path))
        with open(stdout_path) as f:
            report = json.load(f)
        self.assertEqual(report["routes"]["M4"], 64)
        self.assertEqual(len(report["slices"]), 64)
        with open(os.path.join(out, "report.json")) as f:
            self.assertEqual(json.load(f)["routes"]["M4"], 64)
        labels = nib.load(os.path.join(out, "labels.nii.gz"))
        self.assertEqual(labels.shape, (160, 160, 64))
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("danet-server still running 60 s after the drained call:\n"
                      + tail(server.log_path))
        self.assertEqual(server.proc.returncode, 0, tail(server.log_path))
        self.assertIn("stopped after draining", tail(server.log_path))


if __name__ == "__main__":
    unittest.main()
