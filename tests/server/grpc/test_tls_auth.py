"""Transport security and identity out of process (issue 12, item 1): danet-server with TLS,
mutual TLS and bearer tokens, reached by the danet CLI, a Python grpcio client and
danet-pacs-bridge, with certificates made by `openssl` into a temporary folder (a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, and a second CA nobody trusts).

Covered: TLS from the CLI and from Python; a plaintext client on the TLS port fails
(UNAVAILABLE, and the CLI says what to try); mutual TLS without a client certificate, or with one
from another CA, fails, and with one succeeds; a missing or wrong token is UNAUTHENTICATED
(never echoing the token), the right one is served; the token's name is the `client` in the
server's log line and on /metrics; health answers without a token (on the TLS port and on the
plaintext --health_address); reflection is off unless --reflection; flags that do not go
together, and unusable files, stop the server at start with a message naming the flag, file and
line; the PACS bridge segments a study over TLS with its token (and a bridge without the token
keeps the study under failed/ as UNAUTHENTICATED).

Run by ctest (tests.cmake, `tls_auth_e2e`) with the environment of service_e2e plus
DANET_PACS_BRIDGE; by hand the defaults point into build/:

  cd tests/server/grpc && DANET_TMP=/tmp/tls python3 -m unittest -v test_tls_auth

Everything listens on 127.0.0.1 only. Every process the test starts is stopped by its own pid,
and every wait is bounded.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_service_e2e as e2e  # noqa: E402  (the Server, phantom and stub helpers)
from procs import free_port, run, stop, tail, wait_until  # noqa: E402  (tests/ is on sys.path now)

BRIDGE_BIN = os.environ.get("DANET_PACS_BRIDGE",
                            os.path.join(e2e.BUILD, "client", "danet-pacs-bridge"))
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
STORESCU = shutil.which("storescu") or "/usr/bin/storescu"
STORESCP = shutil.which("storescp") or "/usr/bin/storescp"
TMP = os.path.join(e2e.TMP, "tls")

TOKENS = {"cli": "cli-token-7f3a9c0e5d1b2a48", "python": "py-token-0c8e4f21b7d6a953",
          "pacs-bridge": "bridge-token-5b2e8d7f1a3c6094"}
WRONG_TOKEN = "wrong-token-e1d2c3b4a5968778"


# ---------------------------------------------------------------------------------------------
# Certificates and files.

def openssl(*args, cwd):
    r = run([OPENSSL, *args], timeout=60, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), r.stderr))


def make_pki(d):
    """ca.crt signs server.crt (127.0.0.1, localhost) and client.crt (CN pacs-bridge);
    other-ca.crt signs other-client.crt. EC P-256 keys, valid for two days."""
    os.makedirs(d, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *key, "-keyout", ca + ".key", "-out", ca + ".crt", "-days", "2",
                "-subj", "/CN=danet test %s" % ca, cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, ca, cn, ext in (("server", "ca", "localhost", "server.ext"),
                              ("client", "ca", "pacs-bridge", "client.ext"),
                              ("other-client", "other-ca", "intruder", "client.ext")):
        openssl("req", *key, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", ext, cwd=d)
    return {name: os.path.join(d, name) for name in os.listdir(d)}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def log_events(path):
    events = []
    for line in tail(path, 10 ** 7).splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def counter(text, name, **labels):
    """The value of the series of `name` with exactly these labels (in any order), or 0."""
    for m in re.finditer(r"(?m)^%s\{([^}]*)\} (\S+)$" % re.escape(name), text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if found == labels:
            return float(m.group(2))
    return 0.0


class Server(e2e.Server):
    """e2e.Server (port 0, metrics, waits for SERVING) that also learns its --health_address
    port from the listening log line."""

    def __init__(self, workdir, *extra):
        super().__init__(workdir, *extra)
        listening = [e for e in log_events(self.log_path) if e.get("event") == "listening"]
        self.health_port = listening[0]["health_port"]

    def requests(self):
        return [e for e in log_events(self.log_path) if e.get("event") == "request"]


# ---------------------------------------------------------------------------------------------

def setUpModule():
    global PKI, CASE, STUDY, TOKEN_FILES
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    PKI = make_pki(os.path.join(TMP, "pki"))
    PKI["tokens"] = write(os.path.join(TMP, "pki", "tokens.txt"),
                          "# NAME:TOKEN\n" + "".join("%s: %s\n" % kv for kv in TOKENS.items()))
    TOKEN_FILES = {name: write(os.path.join(TMP, "pki", name + ".token"), "\n  %s \n" % token)
                   for name, token in list(TOKENS.items()) + [("wrong", WRONG_TOKEN)]}
    CASE = e2e.make_phantom(os.path.join(TMP, "cases"), 91, "96,96,32")
    root = os.path.join(TMP, "dicom")
    run([e2e.PHANTOM, "--out", root, "--cases", "1", "--seed", "92", "--dims", "96,96,32",
         "--dicom"], timeout=120, check=True)
    STUDY = os.path.join(root, "phantom_s92_000", "dicom")


class TlsAndTokens(unittest.TestCase):
    """One server with TLS, tokens and a plaintext health listener (reflection at its default)."""

    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(os.path.join(TMP, "tls_server"),
                            "--tls_cert_file", PKI["server.crt"], "--tls_key_file",
                            PKI["server.key"], "--auth_token_file", PKI["tokens"],
                            "--health_address", "127.0.0.1:0")

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()
            # No token, right or wrong, ever reaches the log.
            text = tail(cls.server.log_path, 10 ** 7)
            for token in list(TOKENS.values()) + [WRONG_TOKEN]:
                assert token not in text, "a token in the server log"

    def setUp(self):
        self.assertIsNone(self.server.proc.poll(), tail(self.server.log_path))

    def cli(self, command, *args, token="cli", ca=True, server=None):
        flags = ["--server", server or self.server.address]
        if ca:
            flags += ["--tls_ca_file", PKI["ca.crt"]]
        if token:
            flags += ["--token_file", TOKEN_FILES[token]]
        if command == "segment":
            return e2e.cli("segment", CASE, "--progress=false", "--json", *flags, *args)
        return e2e.cli(command, *flags, *args, timeout=60)

    def channel(self, token=None, tls=True):
        grpc = e2e.stubs()["grpc"]
        options = [("grpc.max_receive_message_length", 16 << 20)]
        if not tls:
            channel = grpc.insecure_channel(self.server.address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=read(PKI["ca.crt"]))
            if token:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.access_token_call_credentials(token))
            channel = grpc.secure_channel(self.server.address, credentials, options=options)
        self.addCleanup(channel.close)
        return channel

    def python_segment(self, channel, request_id, **kwargs):
        s = e2e.stubs()
        stub = s["pb_grpc"].SegmentationStub(channel)

        def requests():
            for i, r in enumerate(e2e.segment_requests(s["pb"], CASE)):
                if i == 0:
                    r.header.request_id = request_id
                yield r
        return list(stub.Segment(requests(), timeout=120, **kwargs))

    def assert_code(self, code, call):
        grpc = e2e.stubs()["grpc"]
        with self.assertRaises(grpc.RpcError) as raised:
            call()
        self.assertEqual(raised.exception.code(), getattr(grpc.StatusCode, code),
                         raised.exception.details())
        return raised.exception.details()

    def wait_for_request(self, **fields):
        def found():
            return [e for e in self.server.requests()
                    if all(e.get(k) == v for k, v in fields.items())]
        return wait_until(found, 15, "request line %s" % fields, log=self.server.log_path)[-1]

    # -- the CLI ------------------------------------------------------------------------------

    def test_cli_with_ca_and_token_is_served_under_its_name(self):
        r = self.cli("segment")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertEqual(sum(report["routes"].values()), 32)
        line = self.wait_for_request(client="cli", code="OK")
        self.assertTrue(line["request_id"].startswith("cli-"), line)
        self.assertTrue(line["peer"].startswith("ipv4:127.0.0.1:"), line)
        metrics = self.server.metrics()
        self.assertGreaterEqual(counter(metrics, "danet_requests_total", code="OK",
                                        policy="dynamic", client="cli"), 1)
        self.assertGreaterEqual(counter(metrics, "danet_request_duration_seconds_count",
                                        policy="dynamic", client="cli"), 1)
        r = self.cli("models")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("M4", r.stdout)

    def test_cli_without_or_with_a_wrong_token_is_unauthenticated(self):
        r = self.cli("segment", token=None)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("danet: UNAUTHENTICATED: no bearer token", r.stderr)
        self.assertIn("pass --token_file", r.stderr)
        r = self.cli("segment", token="wrong")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("danet: UNAUTHENTICATED: the bearer token is not valid", r.stderr)
        self.assertNotIn(WRONG_TOKEN, r.stderr)
        r = self.cli("models", token="wrong")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        self.wait_for_request(client="unauthenticated", code="UNAUTHENTICATED")
        self.assertGreaterEqual(counter(self.server.metrics(), "danet_requests_total",
                                        code="UNAUTHENTICATED", policy="dynamic",
                                        client="unauthenticated"), 2)

    def test_plaintext_cli_on_the_tls_port_fails_and_says_why(self):
        r = self.cli("models", token=None, ca=False)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("danet: UNAVAILABLE", r.stderr)
        self.assertIn("if the server uses TLS, pass --tls_ca_file", r.stderr)
        # A token without TLS is refused before anything is sent.
        r = self.cli("models", ca=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--token_file needs TLS", r.stderr)

    def test_cli_that_does_not_trust_the_server_fails(self):
        r = e2e.cli("models", "--server", self.server.address, "--tls_ca_file",
                    PKI["other-ca.crt"], "--token_file", TOKEN_FILES["cli"], timeout=60)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("handshake", r.stderr.lower())
        self.assertIn("check that the server uses TLS", r.stderr)

    def test_health_needs_no_token_and_has_a_plaintext_listener(self):
        r = self.cli("health", token=None)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        r = e2e.cli("health", "--server", "127.0.0.1:%d" % self.server.health_port, timeout=30)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        # The plaintext listener serves health and nothing else.
        r = e2e.cli("models", "--server", "127.0.0.1:%d" % self.server.health_port, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("UNIMPLEMENTED", r.stderr)

    # -- Python grpcio ------------------------------------------------------------------------

    def test_python_with_token_is_served_under_its_name(self):
        responses = self.python_segment(self.channel(TOKENS["python"]), "py-tls")
        self.assertEqual(responses[0].accepted.request_id, "py-tls")
        self.assertEqual(sum(1 for r in responses if r.HasField("slice")), 32)
        line = self.wait_for_request(request_id="py-tls")
        self.assertEqual((line["client"], line["code"]), ("python", "OK"))
        self.assertGreaterEqual(counter(self.server.metrics(), "danet_requests_total",
                                        code="OK", policy="dynamic", client="python"), 1)
        s = e2e.stubs()
        stub = s["pb_grpc"].SegmentationStub(self.channel(TOKENS["python"]))
        self.assertEqual(stub.DescribeBank(s["pb"].DescribeBankRequest(), timeout=30)
                         .bundle_name, "phantom-compact")

    def test_python_without_or_with_a_wrong_token_is_unauthenticated(self):
        channel = self.channel()
        details = self.assert_code("UNAUTHENTICATED",
                                   lambda: self.python_segment(channel, "py-none"))
        self.assertIn("Bearer", details)
        details = self.assert_code("UNAUTHENTICATED", lambda: self.python_segment(
            channel, "py-wrong", metadata=[("authorization", "Bearer " + WRONG_TOKEN)]))
        self.assertNotIn(WRONG_TOKEN, details)
        s = e2e.stubs()
        stub = s["pb_grpc"].SegmentationStub(channel)
        self.assertNotIn(WRONG_TOKEN, self.assert_code(
            "UNAUTHENTICATED", lambda: stub.DescribeBank(
                s["pb"].DescribeBankRequest(), timeout=30,
                metadata=[("authorization", "Bearer " + WRONG_TOKEN)])))
        self.assert_code("UNAUTHENTICATED", lambda: stub.DescribeBank(
            s["pb"].DescribeBankRequest(), timeout=30,
            metadata=[("authorization", "Basic " + TOKENS["python"])]))

    def test_python_plaintext_on_the_tls_port_is_unavailable(self):
        s = e2e.stubs()
        stub = s["pb_grpc"].SegmentationStub(self.channel(tls=False))
        self.assert_code("UNAVAILABLE",
                         lambda: stub.DescribeBank(s["pb"].DescribeBankRequest(), timeout=20))

    def assert_health_serving_and_no_reflection(self, channel):
        s = e2e.stubs()
        health, reflection = s["health"], s["reflection"]
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health.HealthCheckRequest.SerializeToString,
            response_deserializer=health.HealthCheckResponse.FromString)
        self.assertEqual(check(health.HealthCheckRequest(service=""), timeout=10).status,
                         health.HealthCheckResponse.SERVING)
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection.ServerReflectionResponse.FromString)
        self.assert_code("UNIMPLEMENTED", lambda: list(info(iter([
            reflection.ServerReflectionRequest(list_services="")]), timeout=10)))

    def test_python_health_without_token_and_reflection_off_by_default(self):
        self.assert_health_serving_and_no_reflection(self.channel())
        # The plaintext health listener: health, no reflection.
        plain = e2e.stubs()["grpc"].insecure_channel("127.0.0.1:%d" % self.server.health_port)
        self.addCleanup(plain.close)
        self.assert_health_serving_and_no_reflection(plain)

    # -- the PACS bridge ----------------------------------------------------------------------

    def start_bridge(self, name, *flags):
        """danet-pacs-bridge on free ports, its SEGs going to a storescp; returns (process,
        log path, DICOM port, work_dir, storescp output folder)."""
        d = os.path.join(TMP, name)
        shutil.rmtree(d, ignore_errors=True)
        received = os.path.join(d, "pacs")
        os.makedirs(received)
        env = dict(os.environ, TCP_NODELAY="1")
        peer_port, port = free_port(), free_port()
        peer_log = open(os.path.join(d, "storescp.log"), "w")
        self.addCleanup(peer_log.close)
        peer = subprocess.Popen([STORESCP, "-aet", "PACS", "-od", received, "+xa",
                                 str(peer_port)], stdout=peer_log, stderr=subprocess.STDOUT,
                                env=env)
        self.addCleanup(stop, peer)
        log_path = os.path.join(d, "bridge.log")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        bridge = subprocess.Popen(
            [BRIDGE_BIN, "--port", str(port), "--peer_port", str(peer_port), "--peer_ae", "PACS",
             "--server", self.server.address, "--work_dir", os.path.join(d, "work"),
             "--stable_seconds", "1", "--max_attempts", "2", "--backoff_seconds", "1",
             "--metrics_address", "", *flags],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        self.addCleanup(stop, bridge)
        wait_until(lambda: bridge.poll() is None and any(
            e.get("event") == "listening" for e in log_events(log_path)), 30,
            "bridge listening", log=log_path)
        r = run([STORESCU, "-aet", "MODALITY", "-aec", "DANET", "+sd", "+r", "127.0.0.1",
                 str(port), STUDY], timeout=120, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return bridge, log_path, os.path.join(d, "work"), received

    def test_bridge_over_tls_with_its_token(self):
        _, log_path, _, received = self.start_bridge(
            "bridge_ok", "--tls_ca_file", PKI["ca.crt"], "--token_file",
            TOKEN_FILES["pacs-bridge"])
        events = log_events(log_path)
        self.assertIs(events[0]["tls"], True, events[0])
        self.assertIs(events[0]["token"], True, events[0])
        done = wait_until(lambda: [e for e in log_events(log_path)
                                   if e["event"] in ("study_stored", "study_failed")],
                          120, "a finished study", log=log_path)
        self.assertEqual(done[0]["event"], "study_stored", tail(log_path))
        line = self.wait_for_request(client="pacs-bridge")
        self.assertEqual(line["code"], "OK")
        self.assertTrue(line["request_id"].startswith("bridge-"), line)
        self.assertTrue(any(files for _, _, files in os.walk(received)), "no SEG at the PACS")

    def test_bridge_without_token_keeps_the_study_as_unauthenticated(self):
        _, log_path, work, _ = self.start_bridge("bridge_no_token", "--tls_ca_file",
                                                 PKI["ca.crt"])
        done = wait_until(lambda: [e for e in log_events(log_path)
                                   if e["event"] in ("study_stored", "study_failed")],
                          120, "a finished study", log=log_path)
        self.assertEqual((done[0]["event"], done[0]["code"]), ("study_failed", "UNAUTHENTICATED"))
        with open(os.path.join(work, "failed", done[0]["study"], "reason.txt")) as f:
            self.assertIn("UNAUTHENTICATED", f.read())

    def test_bridge_refuses_a_token_without_tls(self):
        r = run([BRIDGE_BIN, "--port", str(free_port()), "--server", self.server.address,
                 "--work_dir", os.path.join(TMP, "bridge_flags"), "--metrics_address", "",
                 "--token_file", TOKEN_FILES["pacs-bridge"]], timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--token_file needs TLS", r.stderr)


class MutualTlsAndReflection(unittest.TestCase):
    """A server that requires client certificates from ca.crt, with tokens and --reflection."""

    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(os.path.join(TMP, "mtls_server"),
                            "--tls_cert_file", PKI["server.crt"], "--tls_key_file",
                            PKI["server.key"], "--tls_client_ca_file", PKI["ca.crt"],
                            "--auth_token_file", PKI["tokens"], "--reflection")

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()

    def channel(self, client="client", token=None):
        grpc = e2e.stubs()["grpc"]
        kwargs = {}
        if client:
            kwargs = dict(private_key=read(PKI[client + ".key"]),
                          certificate_chain=read(PKI[client + ".crt"]))
        credentials = grpc.ssl_channel_credentials(root_certificates=read(PKI["ca.crt"]),
                                                   **kwargs)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        channel = grpc.secure_channel(self.server.address, credentials)
        self.addCleanup(channel.close)
        return channel

    def describe(self, channel):
        s = e2e.stubs()
        return s["pb_grpc"].SegmentationStub(channel).DescribeBank(s["pb"].DescribeBankRequest(),
                                                                   timeout=20)

    def test_client_certificate_required_and_verified(self):
        grpc = e2e.stubs()["grpc"]
        for client in (None, "other-client"):
            with self.subTest(client=client):
                with self.assertRaises(grpc.RpcError) as raised:
                    self.describe(self.channel(client, TOKENS["python"]))
                self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.describe(self.channel("client", TOKENS["python"])).bundle_name,
                         "phantom-compact")

    def test_cli_with_and_without_a_client_certificate(self):
        base = ["models", "--server", self.server.address, "--tls_ca_file", PKI["ca.crt"],
                "--token_file", TOKEN_FILES["cli"]]
        r = e2e.cli(*base, timeout=60)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("UNAVAILABLE", r.stderr)
        self.assertIn("requires a client certificate", r.stderr)
        r = e2e.cli(*base, "--tls_cert_file", PKI["client.crt"], "--tls_key_file",
                    PKI["client.key"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("M4", r.stdout)
        r = e2e.cli("segment", CASE, "--progress=false", *base[1:], "--tls_cert_file",
                    PKI["client.crt"], "--tls_key_file", PKI["client.key"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_reflection_on_with_the_flag_and_without_a_token(self):
        s = e2e.stubs()
        reflection = s["reflection"]
        info = self.channel("client").stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection.ServerReflectionResponse.FromString)
        answers = list(info(iter([reflection.ServerReflectionRequest(list_services="")]),
                            timeout=10))
        services = {x.name for x in answers[0].list_services_response.service}
        self.assertTrue({"danet.v1.Segmentation", "grpc.health.v1.Health"} <= services, services)


class BadSecurityFlags(unittest.TestCase):
    """Flags that do not go together (exit 2) and unusable files (exit 1) stop danet-server at
    start, before it loads the bundle, with a message naming the flag, the file and the line."""

    def start(self, *flags):
        r = run([e2e.SERVER, "--address", "127.0.0.1:0", "--metrics_address", "",
                 "--bundle", e2e.BUNDLE, *flags], timeout=60)
        self.assertNotIn("listening", r.stderr)
        return r.returncode, r.stderr

    def test_bad_combinations_and_files(self):
        d = os.path.join(TMP, "bad")
        os.makedirs(d, exist_ok=True)
        cert, key, ca = PKI["server.crt"], PKI["server.key"], PKI["ca.crt"]
        malformed = write(os.path.join(d, "malformed.txt"),
                          "# ok\ncli: %s\n%s\n" % (TOKENS["cli"], TOKENS["python"]))
        reserved = write(os.path.join(d, "reserved.txt"), "anonymous: %s\n" % TOKENS["cli"])
        missing = os.path.join(d, "missing.pem")
        cases = [
            (["--tls_cert_file", cert], 2, "--tls_key_file is missing"),
            (["--tls_key_file", key], 2, "--tls_cert_file is missing"),
            (["--tls_client_ca_file", ca], 2, "--tls_client_ca_file (client certificates) needs TLS"),
            (["--auth_token_file", PKI["tokens"]], 2, "--auth_token_file needs TLS"),
            (["--tls_cert_file", missing, "--tls_key_file", key], 1,
             "--tls_cert_file %s: no such file" % missing),
            (["--tls_cert_file", d, "--tls_key_file", key], 1, "not a regular file"),
            (["--tls_cert_file", key, "--tls_key_file", key], 1,
             "--tls_cert_file %s: no PEM certificate" % key),
            (["--tls_cert_file", cert, "--tls_key_file", PKI["client.key"]], 1,
             "this key does not belong to the certificate in --tls_cert_file %s" % cert),
            (["--tls_cert_file", cert, "--tls_key_file", key, "--tls_client_ca_file", key], 1,
             "--tls_client_ca_file %s: no PEM certificate" % key),
            (["--tls_cert_file", cert, "--tls_key_file", key, "--auth_token_file", malformed], 1,
             "--auth_token_file %s:3: expected NAME:TOKEN" % malformed),
            (["--tls_cert_file", cert, "--tls_key_file", key, "--auth_token_file", reserved], 1,
             "%s:1: the name 'anonymous' is reserved" % reserved),
        ]
        for flags, code, message in cases:
            with self.subTest(flags=flags):
                rc, stderr = self.start(*flags)
                self.assertEqual(rc, code, stderr)
                self.assertIn(message, stderr)
                for token in TOKENS.values():
                    self.assertNotIn(token, stderr)


if __name__ == "__main__":
    unittest.main()
