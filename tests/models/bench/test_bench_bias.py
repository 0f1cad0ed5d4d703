"""danet-bench-bias (models/bench/bench_bias.cc): the bias correction's timing on one case.

On one phantom case: the report line has its fields, two runs give the same checksum (the
correction is deterministic), another degree gives another checksum (the correction is applied),
and a missing case folder fails with a message that names it. About 10 s on 2 busy cores.

  DANET_BENCH_BIAS=build/bin/danet-bench-bias DANET_PHANTOM=build/bin/danet-phantom \
    /usr/bin/python3 -m unittest tests/models/bench/test_bench_bias.py
"""
import os
import pathlib
import re
import subprocess
import tempfile
import unittest

BENCH = os.environ.get("DANET_BENCH_BIAS", "build/bin/danet-bench-bias")
PHANTOM = os.environ.get("DANET_PHANTOM", "build/bin/danet-phantom")
LINE = re.compile(r"^poly(\d) over (\d+) runs: wall best ([\d.]+) s, mean ([\d.]+) s; "
                  r"CPU best ([\d.]+) s; checksum ([\d.e+-]+)$")


class BenchBiasTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(dir=os.environ.get("DANET_TMP"))
        out = pathlib.Path(cls.tmp.name) / "cases"
        subprocess.run([PHANTOM, "--out", str(out), "--cases", "1", "--seed", "2000"],
                       check=True, capture_output=True, timeout=120)
        cls.case = str(next(out.iterdir()))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_bench(self, *args):
        result = subprocess.run([BENCH, "--case_dir", self.case, "--repeats", "2", *args],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        match = LINE.match(result.stdout.strip())
        self.assertIsNotNone(match, result.stdout)
        return match

    def test_report_is_deterministic_and_depends_on_the_degree(self):
        first = self.run_bench()
        self.assertEqual(first.group(1), "2")
        self.assertEqual(first.group(2), "2")
        self.assertGreater(float(first.group(3)), 0)
        self.assertGreaterEqual(float(first.group(4)), float(first.group(3)))
        self.assertEqual(self.run_bench().group(6), first.group(6))
        self.assertNotEqual(self.run_bench("--degree", "1").group(6), first.group(6))

    def test_missing_case_is_named(self):
        missing = os.path.join(self.tmp.name, "no-such-case")
        result = subprocess.run([BENCH, "--case_dir", missing], capture_output=True, text=True,
                                timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no-such-case", result.stderr)


if __name__ == "__main__":
    unittest.main()
