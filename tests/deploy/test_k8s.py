"""deploy/k8s as a user meets it: each overlay renders with `kubectl kustomize`, the sources pass
yamllint, and the rendered Deployment cannot drift from the binary: every container argument is
a flag danet-server really has, probes and ports match the addresses it listens on, the grace
period outlasts its drain, and the hardening is there: TLS and token files from Secrets mounted
read-only, no reflection, probes on the plaintext health listener, and a NetworkPolicy that
admits only the PACS bridge (gRPC) and Prometheus (metrics). The bridge's StatefulSet is held to
the same: its arguments are danet-pacs-bridge flags, it dials the server's headless Service over
TLS with a token from Secrets, its spool is persistent, its pods carry the label the server's
NetworkPolicy admits, and its own policy admits only the PACS (by address) and Prometheus. Every
rendered object validates offline against the Kubernetes API schemas (npm kubernetes-models, and
its prometheus-operator package for the ServiceMonitor): types, enums and required fields.

Run by ctest with DANET_SERVER_BIN, DANET_BRIDGE_BIN and DANET_DEPLOY_TOOLS set. kubectl (not packaged in
Debian 12) and the npm packages come from scripts/setup; see tools.py for when a missing tool
skips and when it fails.
"""
import json
import os
import re
import subprocess
import unittest

import yaml

from tools import (HERE, KUBECTL, NODE, NODE_MODULES, ROOT, YAMLLINT, has_node_module,
                   needs)

K8S = os.path.join(ROOT, "deploy", "k8s")
SERVER = os.environ.get("DANET_SERVER_BIN",
                        os.path.join(ROOT, "build", "bin", "danet-server"))
BRIDGE = os.environ.get("DANET_BRIDGE_BIN",
                        os.path.join(ROOT, "build", "bin", "danet-pacs-bridge"))
OVERLAYS = ("cpu", "gpu")
APP_LABEL = "app.kubernetes.io/name"


def render(overlay):
    r = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S, "overlays", overlay)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(r.stderr)
    return list(yaml.safe_load_all(r.stdout))


def flag_values(args):
    """{"flag": "value"} of a list of --flag=value arguments."""
    return dict(a[2:].split("=", 1) for a in args)


def binary_flags(binary):
    r = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^\s+--([a-z_]+) ", r.stdout + r.stderr, re.M))


def server_flags():
    return binary_flags(SERVER)


def by_app(objects):
    """{app: {kind: [objects]}}, by each object's app.kubernetes.io/name label."""
    apps = {}
    for o in objects:
        app = o["metadata"].get("labels", {}).get(APP_LABEL)
        apps.setdefault(app, {}).setdefault(o["kind"], []).append(o)
    return apps


def admitted_sources(policy):
    """{source: ports} of a NetworkPolicy's ingress rules, a source being an app name (pods by
    label) or "ipBlock CIDR". Fails on a rule open to any source and on a pod selector that
    kustomize would rewrite (matchLabels under `from` become the policy's own app labels)."""
    admitted = {}
    for rule in policy["spec"]["ingress"]:
        if not rule.get("from"):
            raise AssertionError("a rule that admits any source: %s" % rule)
        ports = {p["port"] for p in rule["ports"]}
        for source in rule["from"]:
            if "ipBlock" in source:
                admitted.setdefault("ipBlock " + source["ipBlock"]["cidr"], set()).update(ports)
                continue
            selector = source["podSelector"]
            if "matchLabels" in selector:
                raise AssertionError("matchLabels under from: %s" % selector)
            [expression] = selector["matchExpressions"]
            if (expression["key"], expression["operator"]) != (APP_LABEL, "In"):
                raise AssertionError("not a selection by app: %s" % expression)
            for app in expression["values"]:
                admitted.setdefault(app, set()).update(ports)
    return admitted


def env_refs(args):
    return re.findall(r"\$\((\w+)\)", " ".join(args))


def validate(objects):
    """Runs validate_k8s.cjs (kubernetes-models) on the objects; returns (ok, report)."""
    r = subprocess.run([NODE, os.path.join(HERE, "validate_k8s.cjs")],
                       input=json.dumps(objects), capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, NODE_PATH=NODE_MODULES))
    return r.returncode == 0, r.stdout + r.stderr


@needs(KUBECTL, "kubectl")
class Overlays(unittest.TestCase):
    def check(self, overlay, device):
        apps = by_app(render(overlay))
        self.assertEqual(set(apps), {"danet-server", "danet-pacs-bridge"})
        by_kind = apps["danet-server"]
        self.assertEqual(set(by_kind), {"ConfigMap", "Deployment", "Service",
                                        "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                        "NetworkPolicy", "ServiceMonitor"})
        deployment = by_kind["Deployment"][0]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        flags = server_flags()
        self.assertIn("address", flags)
        args = flag_values(container["args"])
        self.assertEqual(set(args) - flags, set(), "arguments the server does not have")
        self.assertEqual(args["device"], device)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual(int(args["address"].rsplit(":", 1)[1]), ports["grpc"])
        self.assertEqual(int(args["metrics_address"].rsplit(":", 1)[1]), ports["metrics"])
        self.assertEqual(int(args["health_address"].rsplit(":", 1)[1]), ports["health"])
        # The kubelet's gRPC probes cannot speak TLS: they use the plaintext health listener.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(container[probe]["grpc"]["port"], ports["health"], probe)
        self.check_security(pod, container, args)
        config = by_kind["ConfigMap"][0]["data"]
        for name in env_refs(container["args"]):
            self.assertIn(name, config)
        self.assertGreater(pod["terminationGracePeriodSeconds"],
                           float(config["DANET_DRAIN_SECONDS"]))
        security = container["securityContext"]
        self.assertIs(security["readOnlyRootFilesystem"], True)
        self.assertIs(security["allowPrivilegeEscalation"], False)
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        labels = deployment["spec"]["selector"]["matchLabels"]
        self.assertTrue(labels)
        self.check_network_policy(by_kind["NetworkPolicy"], ports, labels)
        self.assertEqual(pod.get("nodeSelector") is not None, device == "cuda")
        for service in by_kind["Service"]:
            self.assertEqual(service["spec"]["selector"], labels)
        self.assertIn("None", [s["spec"].get("clusterIP") for s in by_kind["Service"]])
        monitor = by_kind["ServiceMonitor"][0]
        service_ports = {p["name"] for s in by_kind["Service"] for p in s["spec"]["ports"]}
        self.assertIn(monitor["spec"]["endpoints"][0]["port"], service_ports)
        hpa = by_kind["HorizontalPodAutoscaler"][0]
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
        self.check_bridge(apps["danet-pacs-bridge"], by_kind, ports)
        return container

    def check_bridge(self, bridge, server, server_ports):
        """The bridge's StatefulSet: real flags, the server reached as the manifests serve it,
        a persistent spool, Secrets read-only, hardened, and the pods the server admits."""
        self.assertEqual(set(bridge), {"ConfigMap", "StatefulSet", "Service", "NetworkPolicy",
                                       "ServiceMonitor"})
        statefulset = bridge["StatefulSet"][0]
        spec = statefulset["spec"]
        # A study's instances must all reach one spool.
        self.assertEqual(spec["replicas"], 1)
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        self.assertEqual(container["command"], ["/opt/danet/bin/danet-pacs-bridge"])
        args = flag_values(container["args"])
        flags = binary_flags(BRIDGE)
        self.assertIn("peer_host", flags)
        self.assertEqual(set(args) - flags, set(), "arguments the bridge does not have")
        config = bridge["ConfigMap"][0]["data"]
        for name in env_refs(container["args"]):
            self.assertIn(name, config)
        self.assertTrue(config[re.match(r"\$\((\w+)\)", args["allowed_calling_aes"])[1]],
                        "any calling AE title may send")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual(int(args["port"]), ports["dicom"])
        self.assertEqual(int(args["metrics_address"].rsplit(":", 1)[1]), ports["metrics"])
        self.assertEqual(container["readinessProbe"]["tcpSocket"]["port"], "dicom")
        self.assertEqual(container["livenessProbe"]["httpGet"]["port"], "metrics")
        # The server as the manifests serve it: the headless Service's name and gRPC port,
        # over TLS with a token (the server requires both).
        headless = next(s for s in server["Service"] if s["spec"].get("clusterIP") == "None")
        grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
        self.assertEqual(args["server"],
                         "dns:///%s:%d" % (headless["metadata"]["name"], grpc_port))
        self.assertEqual(grpc_port, server_ports["grpc"])
        self.assertEqual(self.secret_files(pod, container, args, ("tls_ca_file", "token_file")),
                         {"danet-bridge-server-ca", "danet-bridge-token"})
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        # The spool survives a restart: a claim template, not a volume of the pod.
        spool = mounts[args["work_dir"]]
        self.assertNotIn(spool["name"], volumes)
        self.assertIn(spool["name"],
                      [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]])
        security = container["securityContext"]
        self.assertIs(security["readOnlyRootFilesystem"], True)
        self.assertIs(security["allowPrivilegeEscalation"], False)
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        # The pods carry the label the server's NetworkPolicy admits to gRPC.
        labels = spec["selector"]["matchLabels"]
        self.assertEqual(spec["template"]["metadata"]["labels"][APP_LABEL], labels[APP_LABEL])
        admitted = admitted_sources(server["NetworkPolicy"][0])
        self.assertEqual(admitted.get(labels[APP_LABEL]), {server_ports["grpc"]})
        [service] = bridge["Service"]
        self.assertEqual(service["spec"]["selector"], labels)
        self.assertEqual(spec["serviceName"], service["metadata"]["name"])
        self.assertEqual({p["targetPort"] for p in service["spec"]["ports"]}, set(ports))
        monitor = bridge["ServiceMonitor"][0]
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "metrics")
        self.check_bridge_network_policy(bridge["NetworkPolicy"], ports, labels)

    def check_bridge_network_policy(self, policies, ports, labels):
        """DICOM only from the PACS's address (not a whole range), metrics only from
        Prometheus."""
        admitted = self.ingress_sources(policies, labels)
        blocks = [s for s in admitted if s.startswith("ipBlock ")]
        self.assertTrue(blocks, "no PACS address admitted")
        for block in blocks:
            self.assertGreaterEqual(int(block.rsplit("/", 1)[1]), 24, block)
            self.assertEqual(admitted.pop(block), {ports["dicom"]}, block)
        self.assertEqual(admitted, {"prometheus": {ports["metrics"]}})

    def check_security(self, pod, container, args):
        """TLS and tokens on, their files from Secrets mounted read-only, reflection off."""
        self.assertEqual(self.secret_files(pod, container, args,
                                           ("tls_cert_file", "tls_key_file", "auth_token_file")),
                         {"danet-server-tls", "danet-server-tokens"})
        self.assertNotIn("reflection", args)

    def secret_files(self, pod, container, args, flags):
        """Each flag names a file in a Secret mounted read-only, readable by the pod's group
        (fsGroup) and not by others; returns the Secrets' names."""
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        secrets = set()
        for flag in flags:
            self.assertIn(flag, args)
            mount = mounts.get(os.path.dirname(args[flag]))
            self.assertIsNotNone(mount, "--%s is not in a mounted volume" % flag)
            self.assertIs(mount.get("readOnly"), True, flag)
            secret = volumes[mount["name"]].get("secret")
            self.assertIsNotNone(secret, "--%s does not come from a Secret" % flag)
            self.assertEqual(secret["defaultMode"] & 0o7, 0, flag)
            self.assertIsNotNone(pod["securityContext"].get("fsGroup"))
            secrets.add(secret["secretName"])
        return secrets

    def ingress_sources(self, policies, labels):
        """The one ingress policy on pods with these labels: its admitted_sources()."""
        self.assertEqual(len(policies), 1)
        spec = policies[0]["spec"]
        self.assertEqual(spec["policyTypes"], ["Ingress"])
        self.assertTrue(set(spec["podSelector"]["matchLabels"].items())
                        <= set(labels.items()))
        return admitted_sources(policies[0])

    def check_network_policy(self, policies, ports, labels):
        """One policy on these pods; every rule names its sources: the bridge may reach gRPC,
        Prometheus the metrics, nothing else anything (probes come from the node)."""
        admitted = self.ingress_sources(policies, labels)
        self.assertEqual(admitted, {"danet-pacs-bridge": {ports["grpc"]},
                                    "prometheus": {ports["metrics"]}})

    def test_cpu_overlay(self):
        self.check("cpu", "cpu")

    def test_gpu_overlay(self):
        container = self.check("gpu", "cuda")
        self.assertEqual(container["resources"]["limits"]["nvidia.com/gpu"], 1)
        self.assertTrue(container["image"].endswith(":cuda"))

    def test_the_policy_check_rejects_open_or_wrong_policies(self):
        # The check can fail: a rule open to any source, one open to another app, a source that
        # kustomize would rewrite, the metrics port opened to the bridge.
        policy, labels, ports = policy_labels_ports("danet-server", "Deployment")

        def open_rule(ingress):
            del ingress[0]["from"]

        def other_app(ingress):
            ingress[0]["from"][0]["podSelector"]["matchExpressions"][0]["values"].append("x")

        def match_labels(ingress):
            ingress[0]["from"][0]["podSelector"]["matchLabels"] = {"app": "bridge"}

        def metrics_to_bridge(ingress):
            ingress[0]["ports"].append({"port": ports["metrics"], "protocol": "TCP"})
        self.assert_rejected(self.check_network_policy, policy, labels, ports,
                             (open_rule, other_app, match_labels, metrics_to_bridge))

    def test_the_bridge_policy_check_rejects_open_or_wrong_policies(self):
        # The check can fail: DICOM open to every address, to a whole range, to pods of another
        # app, or no PACS address at all; the metrics port opened to the PACS.
        policy, labels, ports = policy_labels_ports("danet-pacs-bridge", "StatefulSet")

        def any_address(ingress):
            ingress[0]["from"][0]["ipBlock"]["cidr"] = "0.0.0.0/0"

        def whole_range(ingress):
            ingress[0]["from"][0]["ipBlock"]["cidr"] = "10.0.0.0/8"

        def dicom_to_pods(ingress):
            ingress[0]["from"][0] = {"podSelector": {"matchExpressions": [
                {"key": APP_LABEL, "operator": "In", "values": ["danet-server"]}]}}

        def no_pacs(ingress):
            del ingress[0]

        def metrics_to_pacs(ingress):
            ingress[0]["ports"].append({"port": ports["metrics"], "protocol": "TCP"})
        self.assert_rejected(self.check_bridge_network_policy, policy, labels, ports,
                             (any_address, whole_range, dicom_to_pods, no_pacs, metrics_to_pacs))

    def assert_rejected(self, check, policy, labels, ports, changes):
        """check(policies, ports, labels) fails on a copy of the policy with each of the
        changes (functions of its ingress rules) made, and passes on the policy itself."""
        for change in changes:
            with self.subTest(change.__name__):
                copy = json.loads(json.dumps(policy))
                change(copy["spec"]["ingress"])
                with self.assertRaises(AssertionError):
                    check([copy], ports, labels)
        check([policy], ports, labels)


@needs(KUBECTL, "kubectl")
class AlertRulesFindTheScrapes(unittest.TestCase):
    def test_every_job_the_rules_select_is_a_scrape_job(self):
        # Under the Prometheus Operator a target's job is its Service's name unless the
        # ServiceMonitor relabels it; a rule selecting another job never fires (up == 0 of a
        # job that does not exist is no series at all).
        with open(os.path.join(ROOT, "deploy", "prometheus", "danet-rules.yml")) as f:
            rules = yaml.safe_load(f)
        selected = {job for group in rules["groups"] for rule in group["rules"]
                    for job in re.findall(r'job="([^"]+)"', rule["expr"])}
        self.assertEqual(selected, {"danet", "danet-pacs-bridge"})
        for overlay in OVERLAYS:
            jobs = set()
            for monitor in (o for o in render(overlay) if o["kind"] == "ServiceMonitor"):
                for endpoint in monitor["spec"]["endpoints"]:
                    [job] = [r["replacement"] for r in endpoint.get("relabelings", [])
                             if r["targetLabel"] == "job"]
                    jobs.add(job)
            self.assertEqual(jobs, selected, overlay)


def policy_labels_ports(app, kind):
    """The cpu overlay's NetworkPolicy of `app`, and the pod labels and named container ports
    of its workload (a `kind` object)."""
    objects = by_app(render("cpu"))[app]
    pod = objects[kind][0]["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    return objects["NetworkPolicy"][0], pod["metadata"]["labels"], ports


@needs(KUBECTL, "kubectl")
@needs(has_node_module("kubernetes-models") and
       has_node_module("@kubernetes-models/prometheus-operator"), "npm kubernetes-models")
class Schemas(unittest.TestCase):
    def test_rendered_objects_validate(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                objects = render(overlay)
                self.assertEqual(len(objects), 13)  # 8 for the server, 5 for the bridge
                ok, report = validate(objects)
                self.assertTrue(ok, report)
                self.assertIn("13/13 objects valid", report)

    def test_the_validator_rejects_broken_objects(self):
        # The check can fail: a wrong type, a missing required field, an unknown kind.
        deployment = by_app(render("cpu"))["danet-server"]["Deployment"][0]
        wrong_type = json.loads(json.dumps(deployment))
        wrong_type["spec"]["replicas"] = "two"
        missing = json.loads(json.dumps(deployment))
        del missing["spec"]["selector"]
        bad_probe = json.loads(json.dumps(deployment))
        bad_probe["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = [1]
        unknown = {"apiVersion": "danet.example/v1", "kind": "Nothing", "metadata": {"name": "x"}}
        for name, obj in (("wrong type", wrong_type), ("missing selector", missing),
                          ("probe port", bad_probe), ("unknown kind", unknown)):
            with self.subTest(name):
                ok, report = validate([obj])
                self.assertFalse(ok, report)
                self.assertIn("FAIL", report)


def dockerfile(name):
    """(USER, EXPOSE ports, CMD arguments, HEALTHCHECK command, COPY sources) of the final
    stage of docker/<name>."""
    with open(os.path.join(ROOT, "docker", name)) as f:
        text = re.sub(r"\\\n", " ", f.read())
    final = text[text.rindex("\nFROM "):]
    user = re.search(r"(?m)^USER (\d+):(\d+)$", final).groups()
    ports = {int(p) for p in re.search(r"(?m)^EXPOSE (.*)$", final).group(1).split()}
    cmd = json.loads(re.search(r"(?m)^CMD (\[.*\])$", final).group(1))
    health = json.loads(re.search(r"(?m)^HEALTHCHECK .*CMD (\[.*\])$", final).group(1))
    copies = re.findall(r"(?m)^COPY (?!--from)(\S+) ", text)
    return user, ports, cmd, health, copies


class ImagesMatchManifests(unittest.TestCase):
    """docker/Dockerfile{,.cuda} and deploy/k8s agree: uid, ports, bundle path, flags, and the
    health check speaks grpc.health.v1 on the served port."""

    def test_images(self):
        with open(os.path.join(K8S, "base", "deployment.yaml")) as f:
            pod = yaml.safe_load(f)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args = flag_values(container["args"])
        # The plaintext health listener is for the kubelet's probes; the images run plaintext
        # (no certificates inside) and their HEALTHCHECK speaks to the gRPC port.
        ports = {p["containerPort"] for p in container["ports"] if p["name"] != "health"}
        flags = server_flags()
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            allowed = {line[1:].rstrip("/") for line in f.read().split() if line.startswith("!")}
        for name in ("Dockerfile", "Dockerfile.cuda"):
            with self.subTest(name):
                (uid, gid), exposed, cmd, health, copies = dockerfile(name)
                self.assertEqual(int(uid), pod["securityContext"]["runAsUser"])
                self.assertEqual(int(gid), pod["securityContext"]["runAsGroup"])
                self.assertEqual(exposed, ports)
                image_args = flag_values(cmd)
                self.assertEqual(set(image_args) - flags, set())
                self.assertEqual(image_args["bundle"], args["bundle"])
                for flag in ("address", "metrics_address"):
                    self.assertEqual(image_args[flag].rsplit(":", 1)[1],
                                     args[flag].rsplit(":", 1)[1], flag)
                self.assertEqual(health[:2], ["/opt/danet/bin/danet", "health"])
                self.assertEqual(health[2].rsplit(":", 1)[1], args["address"].rsplit(":", 1)[1])
                for source in copies:
                    self.assertIn(source.rstrip("/"), allowed | {"."},
                                  "%s copies %s, which .dockerignore leaves out" % (name, source))
                    self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)


@needs(YAMLLINT, "yamllint")
class Lint(unittest.TestCase):
    def test_yamllint(self):
        r = subprocess.run([YAMLLINT, "-s", "-c", os.path.join(K8S, ".yamllint"), K8S],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
