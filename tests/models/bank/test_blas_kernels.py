"""UseFasterBlasKernels out of process (models/bank/blas_kernels.h), through blas-probe.

The probe runs SetUpProcess and prints what it ends up with. Checked here against the CPU's
flags read independently from /proc/cpuinfo: the process never runs one of OpenBLAS's pre-AVX2
fallback cores on a CPU with AVX2 (on the Intel host that Debian's OpenBLAS 0.3.21 does not
know, it would run Prescott's), it keeps its pid, its name (not "exe") and its arguments byte
for byte across the exec, and a user's OPENBLAS_CORETYPE is kept as given.

  cd tests/models/bank && DANET_BLAS_PROBE=../../../build/tests/blas-probe \
      python3 -m unittest -v test_blas_kernels
"""
import json
import os
import subprocess
import unittest

PROBE = os.environ.get("DANET_BLAS_PROBE", "blas-probe")
NARROW = {"katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn",
          "dunnington", "nehalem", "athlon", "opteron", "opteron_sse3", "barcelona", "nano",
          "sandybridge", "bobcat", "bulldozer", "piledriver", "steamroller"}


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def probe(*args, env_extra=None, drop=()):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "DANET_OPENBLAS_FALLBACK") + tuple(drop)}
    env.update(env_extra or {})
    proc = subprocess.Popen([PROBE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, encoding="utf-8")
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"blas-probe exited {proc.returncode}: {err}")
    result = json.loads(out)
    result["spawned_pid"] = proc.pid
    return result


class BlasKernels(unittest.TestCase):
    def test_no_fallback_core_where_the_cpu_has_avx2(self):
        args = ["plain", "with space", "", "--flag=ä", "*"]
        r = probe(*args)
        self.assertEqual(r["args"], args)
        self.assertEqual(r["pid"], r["spawned_pid"])
        self.assertEqual(r["comm"], os.path.basename(PROBE)[:15])  # not "exe"
        self.assertTrue(r["core"], "OpenBLAS is LibTorch's BLAS here (scripts/setup installs it)")
        self.assertEqual(r["still_preferred"], "", r)
        flags = cpu_flags()
        if {"avx2", "fma"} <= flags:
            self.assertNotIn(r["core"].lower(), NARROW, r)
        if "had chosen its generic" in r["report"]:  # switched: to the CPU's widest kernels
            avx512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags
            self.assertEqual(r["core"], "SkylakeX" if avx512 else "Haswell", r)
        print(r["report"])

    def test_a_users_choice_is_kept(self):
        r = probe("x", env_extra={"OPENBLAS_CORETYPE": "Prescott"})
        self.assertEqual(r["core"], "Prescott")
        self.assertEqual(r["report"],
                         "OpenBLAS runs its Prescott kernels (OPENBLAS_CORETYPE=Prescott)")
        self.assertEqual(r["args"], ["x"])


if __name__ == "__main__":
    unittest.main()
