#!/usr/bin/env python3
"""Load and soak run against one danet-server on loopback (issue 12 item 9).

Starts danet-server on 127.0.0.1 (ports chosen by the kernel), then sends a seeded, shuffled mix
of request kinds from a Python gRPC client written from the proto, CONCURRENCY at a time, until
REQUESTS have been sent or SECONDS have passed, whichever comes first. Every kind has the one
status code the service contract gives it; anything else is an unexpected outcome. At the end
it reports throughput, outcomes by kind and code, the server's peak RSS against its memory
budget, and whether the server is still healthy; exit 1 when any outcome was unexpected, the
peak RSS passed the loaded server's plus the budget, the server's danet_requests_total by code
disagrees with what the client saw, or the server died.

    scripts/soak [--requests 120] [--seconds 600] [--concurrency 4] [--seed 1] [--dims X,Y,Z]

Kinds: valid (a whole NIfTI case, OK), slow (the same case at one chunk per 0.2 s, OK), scrape
(GET /metrics, HTTP 200), bad_policy and truncated and chunk_first and empty_file
(INVALID_ARGUMENT), huge (a 512x512x400 header over the memory budget, RESOURCE_EXHAUSTED),
idle (a header, then nothing: DEADLINE_EXCEEDED from the server's --upload_idle_seconds),
cancel (the client cancels mid-upload: CANCELLED).
"""
import argparse
import collections
import concurrent.futures
import gzip
import importlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODALITIES = ("flair", "t1ce", "t1", "t2")
CHUNK = 512 * 1024
IDLE_SECONDS = 3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=120, help="requests in all (bounded)")
    p.add_argument("--seconds", type=float, default=600, help="wall-clock bound")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dims", default="96,96,48",
                   help="phantom case size of the valid requests (240,240,155 is BraTS size)")
    p.add_argument("--build", default=os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")))
    p.add_argument("--bundle", default=os.path.join(ROOT, "models", "bundles", "phantom-compact"))
    p.add_argument("--memory_budget_mb", type=int, default=1536)
    p.add_argument("--threads", type=int, default=2, help="server LibTorch threads")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "danet-soak"))
    return p.parse_args()


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_stubs(work):
    out = os.path.join(work, "stubs")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                    "--python_out=" + out, "--grpc_python_out=" + out,
                    "danet/v1/bundle.proto", "danet/v1/segmentation.proto"], check=True)
    sys.path.insert(0, out)
    return (importlib.import_module("danet.v1.segmentation_pb2"),
            importlib.import_module("danet.v1.segmentation_pb2_grpc"))


def huge_header_file(path):
    """A gzip NIfTI-1 of 512 x 512 x 400 int16: the header and a few voxels (refused by the
    budget from its header before the missing voxels would matter)."""
    import struct
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 512, 512, 400, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", header, 76, 1, 0.45, 0.45, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352)
    struct.pack_into("<h", header, 252, 1)  # qform_code
    header[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as f:
        f.write(bytes(header) + b"\0" * 4 + b"\0" * 4096)


class Soak:
    def __init__(self, args, pb, pb_grpc):
        import grpc
        self.grpc, self.pb, self.args = grpc, pb, args
        self.work = args.work
        cases = os.path.join(self.work, "cases")
        cases = os.path.join(cases, args.dims.replace(",", "x"))
        if not os.path.isdir(os.path.join(cases, "phantom_s7000_000")):
            subprocess.run([os.path.join(args.build, "bin", "danet-phantom"), "--out", cases,
                            "--cases", "1", "--seed", "7000", "--dims", args.dims],
                           check=True, stdout=subprocess.DEVNULL)
        case = os.path.join(cases, "phantom_s7000_000")
        self.files = [open(os.path.join(case, "phantom_s7000_000_%s.nii.gz" % m), "rb").read()
                      for m in MODALITIES]
        huge = os.path.join(self.work, "huge.nii.gz")
        huge_header_file(huge)
        self.huge = open(huge, "rb").read()
        self.log_path = os.path.join(self.work, "server.log")
        port_file = os.path.join(self.work, "port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.log = open(self.log_path, "w")
        self.server = subprocess.Popen(
            [os.path.join(args.build, "bin", "danet-server"), "--address", "127.0.0.1:0",
             "--port_file", port_file, "--metrics_address", "127.0.0.1:0", "--bundle",
             args.bundle, "--threads", str(args.threads), "--queue_size", "16",
             "--upload_idle_seconds", str(IDLE_SECONDS), "--max_upload_seconds", "120",
             "--memory_budget_mb", str(args.memory_budget_mb)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while True:
            text = open(self.log_path).read()
            m = re.search(r"listening on port (\d+).*metrics on port (\d+)", text)
            if m and "; SERVING" in text:
                break
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("danet-server did not start:\n" + text[-3000:])
            time.sleep(0.2)
        self.address = "127.0.0.1:" + m.group(1)
        self.metrics_url = "http://127.0.0.1:%s/metrics" % m.group(2)
        self.base_rss_kib = vm_kib(self.server.pid, "VmHWM")
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.SegmentationStub(self.channel)

    def header(self, files, policy=""):
        h = self.pb.Header(request_id="soak", input_kind=self.pb.INPUT_KIND_NIFTI, policy=policy)
        for m, data in zip(MODALITIES, files):
            h.files.add(name="soak_%s.nii.gz" % m, modality=m, size=len(data))
        return h

    def chunks(self, files, pause=0.0, stop_after=None):
        """Each file's chunks in header order (an empty file is one empty last chunk)."""
        for i, data in enumerate(files):
            for offset in range(0, max(len(data), 1), CHUNK):
                if stop_after is not None and stop_after.is_set():
                    return
                piece = data[offset:offset + CHUNK]
                yield self.pb.SegmentRequest(chunk=self.pb.Chunk(
                    file_index=i, offset=offset, data=piece,
                    last=offset + len(piece) >= len(data)))
                if pause:
                    time.sleep(pause)

    def call(self, requests, cancel_after=None):
        """Runs one Segment call; returns the gRPC code's name."""
        grpc = self.grpc
        try:
            responses = self.stub.Segment(requests, timeout=300)
            if cancel_after is not None:
                threading.Timer(cancel_after, responses.cancel).start()
            for _ in responses:
                pass
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    def run_kind(self, kind):
        pb = self.pb
        if kind == "scrape":
            with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
                return "HTTP_%d" % r.status
        if kind == "valid":
            return self.call(iter([pb.SegmentRequest(header=self.header(self.files))]
                                  + list(self.chunks(self.files))))
        if kind == "slow":
            return self.call(self._slow())
        if kind == "bad_policy":
            return self.call(iter([pb.SegmentRequest(header=self.header(self.files, "static:M9"))]
                                  + list(self.chunks(self.files))))
        if kind == "truncated":
            files = list(self.files)
            files[2] = files[2][:len(files[2]) // 3]
            return self.call(iter([pb.SegmentRequest(header=self.header(files))]
                                  + list(self.chunks(files))))
        if kind == "empty_file":
            files = list(self.files)
            files[1] = b""
            h = self.header(files)
            return self.call(iter([pb.SegmentRequest(header=h)] + list(self.chunks(files))))
        if kind == "chunk_first":
            return self.call(iter(list(self.chunks(self.files))[:1]))
        if kind == "huge":
            files = [self.huge] * 4
            return self.call(iter([pb.SegmentRequest(header=self.header(files))]
                                  + list(self.chunks(files))))
        if kind == "idle":
            stop = threading.Event()

            def stalled():
                yield pb.SegmentRequest(header=self.header(self.files))
                stop.wait(IDLE_SECONDS * 4)  # far past the server's idle limit
            try:
                return self.call(stalled())
            finally:
                stop.set()
        if kind == "cancel":
            stop = threading.Event()

            def uploading():
                yield pb.SegmentRequest(header=self.header(self.files))
                yield from self.chunks(self.files, pause=0.5, stop_after=stop)
            try:
                return self.call(uploading(), cancel_after=0.3)
            finally:
                stop.set()
        raise ValueError(kind)

    def _slow(self):
        yield self.pb.SegmentRequest(header=self.header(self.files))
        # Smaller chunks, spaced out: still far inside --upload_idle_seconds.
        for i, data in enumerate(self.files):
            step = 64 * 1024
            for offset in range(0, len(data), step):
                piece = data[offset:offset + step]
                yield self.pb.SegmentRequest(chunk=self.pb.Chunk(
                    file_index=i, offset=offset, data=piece,
                    last=offset + len(piece) >= len(data)))
                time.sleep(0.2)

    def counted_by_code(self):
        """danet_requests_total summed per code label, from /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        counted = collections.Counter()
        for m in re.finditer(r'^danet_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
            code = re.search(r'code="([^"]*)"', m.group(1))
            if code:
                counted[code.group(1)] += int(float(m.group(2)))
        return counted

    def stop(self):
        self.channel.close()
        self.server.terminate()
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.log.close()


EXPECTED = {
    "valid": "OK", "slow": "OK", "scrape": "HTTP_200", "bad_policy": "INVALID_ARGUMENT",
    "truncated": "INVALID_ARGUMENT", "empty_file": "INVALID_ARGUMENT",
    "chunk_first": "INVALID_ARGUMENT", "huge": "RESOURCE_EXHAUSTED",
    "idle": "DEADLINE_EXCEEDED", "cancel": "CANCELLED",
}
# Relative frequency of each kind in the mix.
WEIGHTS = {"valid": 6, "slow": 1, "scrape": 4, "bad_policy": 2, "truncated": 2, "empty_file": 1,
           "chunk_first": 1, "huge": 1, "idle": 2, "cancel": 2}


def main():
    args = parse_args()
    os.makedirs(args.work, exist_ok=True)
    pb, pb_grpc = make_stubs(args.work)
    rng = random.Random(args.seed)
    kinds = [k for k, w in WEIGHTS.items() for _ in range(w)]
    plan = [rng.choice(kinds) for _ in range(args.requests)]
    soak = Soak(args, pb, pb_grpc)
    outcomes = collections.Counter()
    unexpected = []
    peak_rss = soak.base_rss_kib
    start = time.monotonic()
    sent = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            pending = {}
            plan_iter = iter(plan)
            while True:
                while len(pending) < args.concurrency and time.monotonic() - start < args.seconds:
                    kind = next(plan_iter, None)
                    if kind is None:
                        break
                    pending[pool.submit(soak.run_kind, kind)] = kind
                    sent += 1
                if not pending:
                    break
                done, _ = concurrent.futures.wait(pending, timeout=1.0,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
                peak_rss = max(peak_rss, vm_kib(soak.server.pid, "VmRSS"))
                for f in done:
                    kind = pending.pop(f)
                    try:
                        code = f.result()
                    except Exception as e:  # a client-side failure is an outcome too
                        code = "CLIENT_ERROR_" + type(e).__name__
                    outcomes[(kind, code)] += 1
                    if code != EXPECTED[kind]:
                        unexpected.append((kind, code))
                if done and sys.stderr.isatty():
                    print("\r%d/%d sent, %d done, %d unexpected" % (
                        sent, len(plan), sum(outcomes.values()), len(unexpected)), end="",
                        file=sys.stderr, flush=True)
        wall = time.monotonic() - start
        peak_rss = max(peak_rss, vm_kib(soak.server.pid, "VmHWM"))
        alive = soak.server.poll() is None
        health = soak.call(iter([pb.SegmentRequest(header=soak.header(soak.files))]
                                + list(soak.chunks(soak.files)))) if alive else "DEAD"
        counted = soak.counted_by_code() if alive else {}
    finally:
        soak.stop()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    done_count = sum(outcomes.values())
    valid = sum(n for (k, c), n in outcomes.items() if k in ("valid", "slow") and c == "OK")
    print("soak: %d requests in %.0f s (%.1f per minute), %d cases segmented (%.1f per minute), "
          "concurrency %d, seed %d, cases %s" % (done_count, wall, 60 * done_count / wall, valid,
                                                 60 * valid / wall, args.concurrency, args.seed,
                                                 args.dims))
    print("\n| kind | expected | outcomes |\n|---|---|---|")
    for kind in WEIGHTS:
        got = ", ".join("%s %d" % (c, n) for (k, c), n in sorted(outcomes.items()) if k == kind)
        print("| %s | %s | %s |" % (kind, EXPECTED[kind], got or "-"))
    budget_kib = args.memory_budget_mb * 1024
    print("\nserver peak RSS %.0f MiB (loaded: %.0f MiB; budget %d MiB over it)"
          % (peak_rss / 1024, soak.base_rss_kib / 1024, args.memory_budget_mb))
    print("after the soak: a valid request got %s" % health)
    # The server's own accounting: every gRPC outcome counted under the code the client saw
    # (the health request above included).
    seen = collections.Counter(c for (k, c), n in outcomes.items() if k != "scrape"
                               for _ in range(n))
    seen[health] += 1
    counted = {c: n for c, n in counted.items() if n}
    accounting_ok = counted == dict(seen)
    print("server's danet_requests_total by code %s; client saw %s: %s" % (
        dict(sorted(counted.items())), dict(sorted(seen.items())),
        "agree" if accounting_ok else "DISAGREE"))
    print("unexpected outcomes: %d%s" % (len(unexpected), (" " + str(
        collections.Counter(unexpected).most_common(5))) if unexpected else ""))
    ok = (not unexpected and health == "OK" and accounting_ok
          and peak_rss - soak.base_rss_kib <= budget_kib)
    print("soak " + ("PASSED" if ok else "FAILED") + "; server log: " + soak.log_path)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
