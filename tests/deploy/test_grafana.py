"""deploy/grafana/danet-dashboard.json as Grafana and Prometheus meet it:

- its structure type-checks against Grafana's own dashboard types (npm @grafana/schema, `tsc
  --strict`): the dashboard model, and each panel's options and field config against the types
  of its panel plugin (timeseries, stat), with excess-property checks, so a misspelt key fails;
- it shows what operators need (request rate and errors, latency percentiles, routing mix,
  GMACs used vs. all-largest, queue depth, in-flight, per-model inference time), panels do not
  overlap, ids are unique;
- every metric name it queries exists in a live scrape of danet-server after a segmentation
  or of a running danet-pacs-bridge (the bridge's row), and every query runs on a real
  Prometheus scraping both and (but for the error ratio, empty while nothing fails) returns
  data;
- every metric the alert rules (deploy/prometheus/danet-rules.yml) use is exported: the
  server's in that scrape, the PACS bridge's in a live danet-pacs-bridge's.

Run by ctest with DANET_SERVER_BIN, DANET_BRIDGE_BIN, DANET_CLI, DANET_PHANTOM, DANET_BUNDLE,
DANET_TMP and DANET_DEPLOY_TOOLS set. Everything listens on 127.0.0.1; processes are stopped by their pid.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse

import yaml

from tools import NODE, NODE_MODULES, ROOT, TSC, has_node_module, needs

sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "server", "grpc"))
from procs import free_port, run, stop, tail, wait_until  # noqa: E402
from test_service_e2e import (CLI, Server, http_get, make_phantom,  # noqa: E402
                              start_prometheus)

DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "danet-dashboard.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "danet-rules.yml")
BRIDGE = os.environ.get("DANET_BRIDGE_BIN",
                        os.path.join(ROOT, "build", "bin", "danet-pacs-bridge"))
TMP = os.environ.get("DANET_TMP", os.path.join(tempfile.gettempdir(), "danet_grafana"))

# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
# Grafana's variables, as a query would see them on a one-server Prometheus.
VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$job": ".*", "$instance": ".*"}


def load():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dashboard):
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard):
    """(panel title, expr) for every panel target and every query variable."""
    out = [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out.append(("variable " + v["name"], v["query"]["query"]))
    return out


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers outside label matchers, grouping
    clauses and ranges that are not function calls, keywords or numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)                         # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                        # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", e)  # Grafana's variable query
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def exported_names(scrape):
    """Metric names in a Prometheus text exposition."""
    return set(re.findall(r"(?m)^([a-zA-Z_:][\w:]*)(?:\{| )", scrape))


def substitute(expr):
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    return expr


class Structure(unittest.TestCase):
    def test_metric_name_extraction(self):
        self.assertEqual(metric_names(
            'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{job=~"$job"}[$__rate_interval])))'
            ' / sum(rate(b_total{code=~"X|Y"}[1m])) * 1e9 + c'), {"a_bucket", "b_total", "c"})
        self.assertEqual(metric_names('label_values(danet_build_info{job=~"$job"}, instance)'),
                         {"danet_build_info"})

    def test_shows_what_operators_need(self):
        d = load()
        names = set()
        for _, expr in queries(d):
            names |= metric_names(expr)
        for needed in ("danet_requests_total", "danet_request_duration_seconds_bucket",
                       "danet_slices_total", "danet_macs_total", "danet_macs_all_largest_total",
                       "danet_queue_depth", "danet_inflight_requests",
                       "danet_model_inference_duration_seconds_bucket", "danet_ready",
                       "danet_bridge_studies_total", "danet_bridge_pending_studies",
                       "danet_bridge_retries_total"):
            self.assertIn(needed, names)
        exprs = " ".join(e for _, e in queries(d))
        for q in ("0.5", "0.95", "0.99"):
            self.assertIn("histogram_quantile(%s, sum by (le, policy)" % q, exprs)
        self.assertIn("sum by (route) (rate(danet_slices_total", exprs)
        self.assertIn("sum by (le, model)", exprs)

    def test_layout_ids_and_datasource(self):
        d = load()
        self.assertEqual(d["uid"], "danet-serving")
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        cells = {}
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, "%s overlaps %s" % (p["title"], cells.get((x, y))))
                    cells[(x, y)] = p["title"]
        for p in panels(d):
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])


TS_HEADER = """\
import type { Dashboard } from '@grafana/schema';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';

// Grafana's types use TypeScript string enums; JSON holds their values. Loose<T> accepts
// exactly those values (and keeps every other check, excess properties included).
type Loose<T> = T extends string ? `${T}` : T extends Array<infer U> ? Array<Loose<U>>
  : T extends object ? { [K in keyof T]: Loose<T[K]> } : T;
"""

PLUGIN_TYPES = {"timeseries": "TimeSeries", "stat": "Stat"}


def typescript(dashboard):
    """The dashboard as TypeScript declarations checked against @grafana/schema."""
    lines = [TS_HEADER, "export const dashboard: Loose<Dashboard> = %s;" % json.dumps(dashboard)]
    for p in panels(dashboard):
        ns = PLUGIN_TYPES.get(p["type"])
        if ns is None:
            raise AssertionError("panel %r: no type check for plugin %r" % (p["title"], p["type"]))
        lines.append("export const options_%d: Loose<%s.Options> = %s;"
                     % (p["id"], ns, json.dumps(p["options"])))
        custom = p["fieldConfig"]["defaults"].get("custom")
        if custom is not None and ns == "TimeSeries":
            lines.append("export const custom_%d: Loose<TimeSeries.FieldConfig> = %s;"
                         % (p["id"], json.dumps(custom)))
    return "\n".join(lines) + "\n"


@needs(NODE and has_node_module("@grafana/schema") and has_node_module("typescript"),
       "npm @grafana/schema and typescript")
class Types(unittest.TestCase):
    def tsc(self, dashboard, name):
        # Inside the tools folder so that '@grafana/schema' resolves to its node_modules.
        work = tempfile.mkdtemp(prefix="grafana-", dir=os.path.dirname(NODE_MODULES))
        self.addCleanup(shutil.rmtree, work, True)
        path = os.path.join(work, name + ".ts")
        with open(path, "w") as f:
            f.write(typescript(dashboard))
        r = run([NODE, TSC, "--noEmit", "--strict", "--skipLibCheck", "--target", "es2020",
                 "--module", "es2020", "--moduleResolution", "node", path], timeout=300)
        return r.returncode, r.stdout + r.stderr

    def test_dashboard_matches_grafana_types(self):
        rc, out = self.tsc(load(), "dashboard")
        self.assertEqual(rc, 0, out)

    def test_type_check_catches_mistakes(self):
        def first(d, kind):
            return next(p for p in d["panels"] if p["type"] == kind)
        cases = {
            "misspelt option": lambda d: first(d, "timeseries")["options"].update(legend2={}),
            "misspelt field config": lambda d: first(d, "timeseries")["fieldConfig"]["defaults"]
            ["custom"].update(lineWidht=1),
            "wrong type": lambda d: first(d, "stat")["gridPos"].update(w="12"),
            "bad enum value": lambda d: first(d, "timeseries")["options"]["tooltip"].update(
                mode="every"),
            "stat option missing": lambda d: first(d, "stat")["options"].pop("reduceOptions"),
            "unknown dashboard field": lambda d: d.update(panelz=[]),
            "schemaVersion missing": lambda d: d.pop("schemaVersion"),
        }
        for name, mutate in cases.items():
            with self.subTest(name):
                d = load()
                mutate(d)
                rc, out = self.tsc(d, "broken")
                self.assertNotEqual(rc, 0, name)
                self.assertIn("error TS", out)


class LiveScrape(unittest.TestCase):
    """A real danet-server after one segmentation, and a real Prometheus scraping it."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "live")
        shutil.rmtree(cls.dir, ignore_errors=True)
        os.makedirs(cls.dir)
        cls.server = Server(os.path.join(cls.dir, "server"))
        cls.bridge = None
        try:
            case = make_phantom(os.path.join(cls.dir, "cases"), 81, "96,96,32")
            r = run([CLI, "segment", case, "--server", cls.server.address, "--progress=false",
                     "--out", os.path.join(cls.dir, "out")], timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            cls.scrape = cls.server.metrics()
            cls.start_bridge()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_bridge(cls):
        """A danet-pacs-bridge (no PACS needed to serve its metrics) and its first scrape."""
        bridge_dir = os.path.join(cls.dir, "bridge")
        os.makedirs(bridge_dir)
        cls.bridge_metrics_port = free_port()
        log_path = os.path.join(bridge_dir, "bridge.log")
        with open(log_path, "w") as log:
            cls.bridge = subprocess.Popen(
                [BRIDGE, "--port", str(free_port()),
                 "--metrics_address", "127.0.0.1:%d" % cls.bridge_metrics_port,
                 "--work_dir", os.path.join(bridge_dir, "spool"),
                 "--server", cls.server.address], stdout=log, stderr=subprocess.STDOUT)

        def scrape():
            assert cls.bridge.poll() is None, tail(log_path)
            try:
                return http_get("http://127.0.0.1:%d/metrics" % cls.bridge_metrics_port)
            except (urllib.error.URLError, ConnectionError, OSError):
                return None
        cls.bridge_scrape = wait_until(scrape, 30, "the bridge's /metrics", log=log_path)

    @classmethod
    def tearDownClass(cls):
        stop(cls.bridge)
        cls.server.stop()

    def exposed(self):
        """Metric names in the server's and the bridge's scrapes."""
        return exported_names(self.scrape + self.bridge_scrape)

    def test_every_metric_queried_is_in_the_scrape(self):
        exposed = self.exposed()
        self.assertIn("danet_slices_total", exposed)
        self.assertIn("danet_bridge_studies_total", exposed)
        for title, expr in queries(load()):
            for name in metric_names(expr):
                self.assertIn(name, exposed, "panel %r queries %s, which neither the server nor "
                              "the bridge exports" % (title, name))

    def test_every_metric_the_alert_rules_use_is_exported(self):
        with open(RULES) as f:
            groups = {g["name"]: g["rules"] for g in yaml.safe_load(f)["groups"]}
        self.assertEqual(set(groups), {"danet", "danet-pacs-bridge"})
        for group, text in (("danet", self.scrape), ("danet-pacs-bridge", self.bridge_scrape)):
            exposed = exported_names(text)
            # `up` is Prometheus's own; histograms are exported as _bucket, _sum and _count.
            exposed |= {"up"} | {re.sub(r"_bucket$", "", n) for n in exposed}
            for rule in groups[group]:
                for name in metric_names(rule["expr"]):
                    self.assertIn(name, exposed, "alert %s uses %s, which %s does not export"
                                  % (rule["alert"], name, group))

    def test_every_query_runs_on_prometheus(self):
        pdir = os.path.join(self.dir, "prometheus")
        prom, port = start_prometheus(pdir, self.server.metrics_port,
                                      {"danet-pacs-bridge": self.bridge_metrics_port})
        self.addCleanup(stop, prom)
        log_path = os.path.join(pdir, "prometheus.log")

        def query(expr):
            url = "http://127.0.0.1:%d/api/v1/query?%s" % (
                port, urllib.parse.urlencode({"query": expr}))
            try:
                return json.loads(http_get(url))
            except urllib.error.HTTPError as e:  # 400: the query does not parse
                return json.loads(e.read().decode())

        # Rates need two samples of each series in the window: wait for a few scrapes.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.assertIsNone(prom.poll(), tail(log_path))
            try:
                r = query("count_over_time(up[1m])")
                values = [float(s["value"][1]) for s in r["data"]["result"]]
                if len(values) == 2 and min(values) >= 3:
                    break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        else:
            self.fail("Prometheus did not scrape danet-server and the bridge 3 times each:\n"
                      + tail(log_path))

        for title, expr in queries(load()):
            if title.startswith("variable "):
                continue  # label_values() is Grafana's, not PromQL; its metric is checked above
            with self.subTest(panel=title, expr=expr):
                r = query(substitute(expr))
                self.assertEqual(r.get("status"), "success", r)
                if title != "Server-side error ratio":  # empty while nothing fails
                    self.assertTrue(r["data"]["result"], "no data for %r" % title)


if __name__ == "__main__":
    unittest.main()
