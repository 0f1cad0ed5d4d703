"""danet-bank as a user meets it: describe (table and JSON), init, check, and bad bundles.

Run by ctest with DANET_BANK (the binary) and DANET_TMP (a scratch directory) set.
"""
import json
import os
import shutil
import subprocess
import unittest

BANK = os.environ.get("DANET_BANK", "danet-bank")
TMP = os.environ.get("DANET_TMP", "/tmp/danet_bank_cli")
PAPER = {"M1": 2.13, "M2": 3.75, "M3": 8.88, "M4": 19.88}


def run(*args):
    return subprocess.run([BANK, "--threads=2", *args], capture_output=True, text=True,
                          timeout=300)


class DescribeTest(unittest.TestCase):
    def test_json_lists_paper_bank_within_five_percent(self):
        result = run("describe", "--preset", "paper", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        description = json.loads(result.stdout)
        ids = [m["id"] for m in description["models"]]
        self.assertEqual(ids, ["M1", "M2", "M3", "M4"])
        for model in description["models"]:
            for key in ("arch", "params", "gmacs", "paper_gmacs"):
                self.assertIn(key, model)
            self.assertEqual(model["paper_gmacs"], PAPER[model["id"]])
            self.assertLess(abs(model["gmacs"] / model["paper_gmacs"] - 1), 0.05, model)
            self.assertGreater(model["params"], 100000)
        costs = [m["gmacs"] for m in description["models"]]
        self.assertEqual(costs, sorted(costs), "bank models must get dearer with the route")
        self.assertGreater(description["decision"]["params"], 0)
        self.assertLess(description["decision"]["gmacs"], 0.02 * costs[0])

    def test_table_shows_paper_column(self):
        result = run("describe")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("paper", result.stdout)
        self.assertIn("19.88", result.stdout)
        self.assertIn("shufflenetv2_m", result.stdout)


class InitCheckTest(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.join(TMP, self.id().rsplit(".", 1)[-1])
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_init_then_check_then_describe(self):
        result = run("init", "--out", self.dir, "--dtype", "float16", "--seed", "4")
        self.assertEqual(result.returncode, 0, result.stderr)
        for name in ("bundle.pbtxt", "M1.pt", "M2.pt", "M3.pt", "M4.pt", "decision.pt"):
            self.assertTrue(os.path.isfile(os.path.join(self.dir, name)), name)
        self.assertEqual(run("check", "--bundle", self.dir).returncode, 0)
        described = json.loads(run("describe", "--bundle", self.dir, "--json").stdout)
        self.assertEqual([m["id"] for m in described["models"]], ["M1", "M2", "M3", "M4"])

    def test_broken_bundle_names_the_field(self):
        self.assertEqual(run("init", "--out", self.dir).returncode, 0)
        config = os.path.join(self.dir, "bundle.pbtxt")
        with open(config) as f:
            text = f.read()
        with open(config, "w") as f:
            f.write(text.replace("num_layers: 4", "num_layers: 4\n    num_heads: 7", 1))
        result = run("check", "--bundle", self.dir)
        self.assertEqual(result.returncode, 1)
        self.assertIn("models[3].transbts.num_heads", result.stderr)

    def test_missing_bundle_and_usage_errors(self):
        result = run("check", "--bundle", os.path.join(self.dir, "nope"))
        self.assertEqual(result.returncode, 1)
        self.assertIn("bundle.pbtxt", result.stderr)
        self.assertEqual(run("frobnicate").returncode, 2)
        self.assertEqual(run("describe", "--preset", "nonexistent").returncode, 1)


if __name__ == "__main__":
    unittest.main()
