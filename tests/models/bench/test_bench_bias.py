"""danet-bench-bias (models/bench/bench_bias.cc): the preprocessing's timing on one case.

On one phantom case: the report line has its fields, two runs give the same checksum (the
correction is deterministic), another degree gives another checksum (the correction is applied),
each stage (bias, zscore, both) gives its own checksum, the fitted field's range is printed per
modality, and a missing case folder or an unknown stage fails with a message that names it.
About 15 s on 2 busy cores.

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
LINE = re.compile(r"^(bias|zscore|both) \(poly(\d)\) over (\d+) runs: wall best ([\d.]+) s, "
                  r"mean ([\d.]+) s; CPU best ([\d.]+) s; checksum ([\d.e+-]+)$")
FIELD = re.compile(r"^(flair|t1ce|t1|t2): log field (-?[\d.]+) \.\. (-?[\d.]+) "
                   r"\(x([\d.]+) \.\. x([\d.]+)\)$")


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
        lines = result.stdout.strip().splitlines()
        fields = [FIELD.match(line) for line in lines[:-1]]
        self.assertEqual([f.group(1) if f else line for f, line in zip(fields, lines)],
                         ["flair", "t1ce", "t1", "t2"], result.stdout)
        for f in fields:
            self.assertLessEqual(float(f.group(2)), 0)
            self.assertGreaterEqual(float(f.group(3)), 0)
        match = LINE.match(lines[-1])
        self.assertIsNotNone(match, result.stdout)
        return match

    def test_report_is_deterministic_and_depends_on_the_degree(self):
        first = self.run_bench()
        self.assertEqual(first.group(1), "bias")
        self.assertEqual(first.group(2), "2")
        self.assertEqual(first.group(3), "2")
        self.assertGreater(float(first.group(4)), 0)
        self.assertGreaterEqual(float(first.group(5)), float(first.group(4)))
        self.assertEqual(self.run_bench().group(7), first.group(7))
        self.assertNotEqual(self.run_bench("--degree", "1").group(7), first.group(7))

    def test_each_stage_is_timed_on_its_own(self):
        checksums = {}
        for stage in ("bias", "zscore", "both"):
            match = self.run_bench("--stage", stage)
            self.assertEqual(match.group(1), stage)
            checksums[stage] = match.group(7)
        self.assertEqual(len(set(checksums.values())), 3, checksums)
        result = subprocess.run([BENCH, "--case_dir", self.case, "--stage", "all"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("'all'", result.stderr)

    def test_missing_case_is_named(self):
        missing = os.path.join(self.tmp.name, "no-such-case")
        result = subprocess.run([BENCH, "--case_dir", missing], capture_output=True, text=True,
                                timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no-such-case", result.stderr)


if __name__ == "__main__":
    unittest.main()
