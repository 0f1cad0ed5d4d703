"""/metrics against slow and idle HTTP clients (issue 12, item 5), out of process.

A slow client sends `GET /metrics HTTP/1.1\\r\\n` and then one byte every 2 s (a header that
never ends); an idle client connects and sends nothing. Checked on danet-server (which loads
LibTorch and OpenBLAS) and on danet-pacs-bridge:

- with more slow and idle clients than the endpoint once had workers, a normal scrape still
  answers within SCRAPE_LIMIT seconds, again and again;
- SIGTERM with slow clients still sending (one every 2 s, one every 0.2 s, which no read
  timeout ends): danet-server (--drain_seconds 2) exits 0 within drain + 5 s; the bridge within
  5 s.

Run by ctest (tests.cmake) with DANET_SERVER_BIN, DANET_PACS_BRIDGE, DANET_BUNDLE and DANET_TMP
set; by hand the defaults point into the source tree's build/ folder:

  cd tests/server/metrics && python3 -m unittest -v test_slow_clients

Everything listens on 127.0.0.1; every process is started and stopped by its own pid, and every
wait is bounded.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from procs import free_port, stop, tail, terminate, wait_until  # noqa: E402

SERVER_BIN = os.environ.get("DANET_SERVER_BIN",
                            os.path.join(BUILD, "server", "service", "danet-server"))
BRIDGE_BIN = os.environ.get("DANET_PACS_BRIDGE",
                            os.path.join(BUILD, "client", "danet-pacs-bridge"))
BUNDLE = os.environ.get("DANET_BUNDLE",
                        os.path.join(ROOT, "models", "bundles", "phantom-compact"))
TMP = os.environ.get("DANET_TMP", os.path.join(tempfile.gettempdir(), "danet_slow_clients"))

TRICKLE_INTERVAL = 2.0  # seconds between a slow client's bytes
FAST_TRICKLE = 0.2      # ... and a client that sends often enough never to time out
SLOW_CLIENTS = 3        # more than the 2 HTTP workers that two such clients once starved
IDLE_CLIENTS = 2
SCRAPE_LIMIT = 3.0      # seconds a scrape may take with the slow clients connected
SCRAPE_ROUNDS = 4       # scrapes, TRICKLE_INTERVAL apart: the slow clients keep sending between
DRAIN_SECONDS = 2
EXIT_GRACE = 5          # the bound: exit within --drain_seconds + 5 s
START_WAIT = 180        # seconds for danet-server to load the bundle on a busy machine


class SlowClient:
    """One connection to 127.0.0.1:port. With an interval: the start of a GET and then one byte
    every `interval` seconds (a header line that never ends) on a thread of its own, until
    close() or until the server closes the connection; interval None: connected, silent."""

    def __init__(self, port, interval=TRICKLE_INTERVAL):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.closed_by_server = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        if interval is not None:
            self.sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            self._thread = threading.Thread(target=self._trickle, args=(interval,), daemon=True)
            self._thread.start()

    def _trickle(self, interval):
        while not self._stop.wait(interval):
            try:
                self.sock.sendall(b"x")
            except OSError:
                self.closed_by_server.set()
                return

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=TRICKLE_INTERVAL + 5)  # bounded: the thread is a daemon
        self.sock.close()


def scrape(port, timeout):
    """GET /metrics over a fresh connection: (seconds taken, status line, body). Raises
    socket.timeout when the whole answer takes longer than `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no whole answer within %.1f s" % timeout)
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return time.monotonic() - start, head.split(b"\r\n", 1)[0].decode(), body.decode()


class Process:
    """A program of ours started by this test, stderr and stdout to a log file."""

    def __init__(self, workdir, args):
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "log.txt")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def running(self):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited with %d:\n%s" % (os.path.basename(self.proc.args[0]),
                                                             self.proc.returncode,
                                                             tail(self.log_path)))
        return True

    def log_text(self):
        return tail(self.log_path, 10 ** 6)

    def terminate(self, timeout):
        """SIGTERM; returns (exit code or None if still running after `timeout`, seconds)."""
        return terminate(self.proc, timeout)

    def stop(self):
        stop(self.proc)
        self.log.close()


def start_server(workdir):
    """danet-server on loopback ports chosen by the kernel, SERVING; returns (process, metrics
    port)."""
    server = Process(workdir, [SERVER_BIN, "--address", "127.0.0.1:0", "--metrics_address",
                               "127.0.0.1:0", "--bundle", BUNDLE, "--threads", "1",
                               "--drain_seconds", str(DRAIN_SECONDS)])
    try:
        wait_until(lambda: server.running() and "; SERVING" in server.log_text(), START_WAIT,
                   "danet-server SERVING", interval=0.1, log=server.log_path)
        port = int(re.search(r"metrics on port (\d+)", server.log_text()).group(1))
    except BaseException:
        server.stop()
        raise
    return server, port


def start_bridge(workdir):
    """danet-pacs-bridge with metrics on a free loopback port (no danet-server and no PACS are
    needed for its metrics); returns (process, metrics port)."""
    port = free_port()
    bridge = Process(workdir, [BRIDGE_BIN, "--port", str(free_port()), "--peer_port",
                               str(free_port()), "--server", "127.0.0.1:%d" % free_port(),
                               "--work_dir", os.path.join(workdir, "work"),
                               "--metrics_address", "127.0.0.1:%d" % port])

    def listening():
        bridge.running()
        for line in bridge.log_text().splitlines():
            try:
                if json.loads(line).get("event") == "listening":
                    return True
            except ValueError:
                pass
        return False

    try:
        wait_until(listening, 30, "the bridge's listening event", interval=0.1,
                   log=bridge.log_path)
    except BaseException:
        bridge.stop()
        raise
    return bridge, port


class SlowClientChecks:
    """The checks, for a program started by start() (the mix-in's subclasses pick it)."""

    sample = None       # a line every scrape of this program contains
    exit_within = None  # seconds from SIGTERM to exit allowed with a slow client connected

    def start(self, workdir):
        raise NotImplementedError

    def connect_clients(self, port):
        clients = [SlowClient(port) for _ in range(SLOW_CLIENTS)]
        clients += [SlowClient(port, interval=None) for _ in range(IDLE_CLIENTS)]
        for client in clients:
            self.addCleanup(client.close)
        time.sleep(0.5)  # let the server take them up before the first scrape
        return clients

    def test_scrapes_answer_with_slow_and_idle_clients_connected(self):
        proc, port = self.start(os.path.join(TMP, self.id().split(".")[-2], "scrapes"))
        self.addCleanup(proc.stop)
        self.assertIn(self.sample, scrape(port, SCRAPE_LIMIT)[2])
        clients = self.connect_clients(port)
        for i in range(SCRAPE_ROUNDS):
            try:
                seconds, status, body = scrape(port, SCRAPE_LIMIT)
            except socket.timeout:
                seconds = None
            self.assertIsNotNone(seconds, "scrape %d of %d did not answer within %.1f s with %d "
                                 "slow and %d idle clients connected"
                                 % (i + 1, SCRAPE_ROUNDS, SCRAPE_LIMIT, SLOW_CLIENTS,
                                    IDLE_CLIENTS))
            self.assertIn(" 200 ", status + " ")
            self.assertIn(self.sample, body)
            print("scrape %d: %.3f s; slow clients closed by the server: %d of %d"
                  % (i + 1, seconds, sum(c.closed_by_server.is_set() for c in clients),
                     SLOW_CLIENTS))
            time.sleep(TRICKLE_INTERVAL)
        proc.running()

    def test_sigterm_exits_in_time_with_slow_clients_connected(self):
        proc, port = self.start(os.path.join(TMP, self.id().split(".")[-2], "sigterm"))
        self.addCleanup(proc.stop)
        for interval in (TRICKLE_INTERVAL, FAST_TRICKLE):
            self.addCleanup(SlowClient(port, interval).close)
        time.sleep(TRICKLE_INTERVAL + 0.5)  # both have sent bytes after their request line
        code, seconds = proc.terminate(self.exit_within)
        print("exit %s after SIGTERM in %.2f s (limit %.0f s)" % (code, seconds, self.exit_within))
        self.assertIsNotNone(code, "still running %.0f s after SIGTERM with slow /metrics "
                             "clients:\n%s" % (self.exit_within, tail(proc.log_path)))
        self.assertEqual(code, 0, tail(proc.log_path))


class ServerSlowClientsTest(SlowClientChecks, unittest.TestCase):
    """danet-server: LibTorch and OpenBLAS loaded, the bundle served."""

    sample = "danet_ready 1"
    exit_within = DRAIN_SECONDS + EXIT_GRACE

    def start(self, workdir):
        return start_server(workdir)


class BridgeSlowClientsTest(SlowClientChecks, unittest.TestCase):
    """danet-pacs-bridge: its own /metrics endpoint; SIGTERM stops it between studies."""

    sample = "danet_bridge_pending_studies 0"
    exit_within = EXIT_GRACE

    def start(self, workdir):
        return start_bridge(workdir)


if __name__ == "__main__":
    unittest.main()
