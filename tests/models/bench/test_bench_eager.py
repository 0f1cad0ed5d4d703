"""scripts/bench-eager builds the networks the C++ bank builds (models/nn/*.cc).

Checks, per network of the paper preset: the output shape on a 64 x 64 input, the parameter
count against one derived here from the layer formulas (written from the C++ constructors, not
from the script), that the C++ side's own state dicts (the shipped bundle) load with
strict=True (every name and shape), and that folding the BatchNorms leaves the output as it is.
With DANET_BANK set (the danet-bank binary) the counts are also compared with
`danet-bank describe --preset paper --json`; that adds about 15 s, so it is skipped otherwise.
A short end-to-end run of the script checks its table and JSON. Runs in about 10 s on 2 busy cores.

  /usr/bin/python3 -m unittest tests/models/bench/test_bench_eager.py
"""
import contextlib
import copy
import importlib.machinery
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import tempfile
import unittest

import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "bundles" / "phantom-compact"


def load_script():
    loader = importlib.machinery.SourceFileLoader("bench_eager", str(ROOT / "scripts/bench-eager"))
    spec = importlib.util.spec_from_loader("bench_eager", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bench = load_script()


# Parameter counts from the layer formulas (PyTorch's parameter shapes).
def conv(cin, cout, k, bias=True, groups=1):
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def conv_transpose(cin, cout, k):
    return cin * cout * k * k + cout  # bias on


def linear(fin, fout, bias=True):
    return fin * fout + (fout if bias else 0)


def norm(c):  # BatchNorm2d or LayerNorm with affine: weight and bias
    return 2 * c


def res_block(c):  # bn1, bn2, conv1, conv2
    return 2 * norm(c) + 2 * conv(c, c, 3)


def up_cat(cin, cout):  # reduce, up, fuse
    return conv(cin, cout, 1) + conv_transpose(cout, cout, 2) + conv(2 * cout, cout, 1)


def encoder(cin, b):  # stem, levels of 1, 2, 2, 4 blocks at b..8b, three stride-2 downs
    widths = [b, 2 * b, 4 * b, 8 * b]
    return (conv(cin, b, 3) + sum(n * res_block(w) for w, n in zip(widths, [1, 2, 2, 4])) +
            sum(conv(w, 2 * w, 3) for w in widths[:3]))


def decoder(b, classes):
    return (up_cat(8 * b, 4 * b) + up_cat(4 * b, 2 * b) + up_cat(2 * b, b) + res_block(4 * b) +
            res_block(2 * b) + res_block(b) + conv(b, classes, 1))


def unet(b):
    return encoder(4, b) + decoder(b, 4)


def transbts(layers, b=16, d=512, mlp=2048, image_size=240):
    layer = (2 * norm(d) + linear(d, 3 * d, bias=False) + linear(d, d) + linear(d, mlp) +
             linear(mlp, d))
    return (encoder(4, b) + norm(8 * b) + conv(8 * b, d, 3) + (image_size // 8) ** 2 * d +
            layers * layer + norm(d) + conv(d, 8 * b, 3) + norm(8 * b) + res_block(8 * b) +
            decoder(b, 4))


def shuffle_unit(cin, cout, stride):
    mid = cout // 2
    main_in, main_out = (cin // 2, cout // 2) if stride == 1 else (cin, cout - cin)
    total = (conv(main_in, mid, 1, False) + norm(mid) + conv(mid, mid, 3, False, mid) + norm(mid) +
             conv(mid, main_out, 1, False) + norm(main_out))
    if stride == 2:
        total += conv(cin, cin, 3, False, cin) + norm(cin) + conv(cin, cin, 1, False) + norm(cin)
    return total


def decision(routes, repeats=(4, 8, 4), widths=(12, 24, 48, 96), head=256):
    units = sum(shuffle_unit(widths[s] if i == 0 else widths[s + 1], widths[s + 1],
                             2 if i == 0 else 1) for s, r in enumerate(repeats) for i in range(r))
    return (conv(4, widths[0], 3, False) + norm(widths[0]) + units +
            conv(widths[-1], head, 1, False) + norm(head) + linear(head, routes, bias=False))


EXPECTED_PARAMS = {"D": decision(5), "M1": unet(12), "M2": unet(16), "M3": transbts(1),
                   "M4": transbts(4)}


class BenchEagerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        torch.set_num_threads(2)
        cls.bank = bench.paper_bank()
        for net in cls.bank.values():
            net.eval()

    def test_bank_is_the_paper_preset(self):
        self.assertEqual(list(self.bank), ["D", "M1", "M2", "M3", "M4"])

    def test_parameter_counts_match_the_layer_formulas(self):
        for net_id, net in self.bank.items():
            with self.subTest(net=net_id):
                self.assertEqual(bench.num_parameters(net), EXPECTED_PARAMS[net_id])

    def test_output_shapes_at_64x64(self):
        x = torch.randn(2, 4, 64, 64)
        with torch.no_grad():
            for net_id, net in self.bank.items():
                with self.subTest(net=net_id):
                    want = (2, 5) if net_id == "D" else (2, 4, 64, 64)
                    self.assertEqual(tuple(net(x).shape), want)

    def test_cpp_state_dicts_load_strictly(self):
        # The shipped bundle is the "compact" preset: TransBTS at embed 256, MLP 1024.
        nets = {"decision": bench.DecisionNet(5), "M1": bench.UNet(12), "M2": bench.UNet(16),
                "M3": bench.TransBTS(1, embed_dim=256, mlp_dim=1024),
                "M4": bench.TransBTS(4, embed_dim=256, mlp_dim=1024)}
        for name, net in nets.items():
            path = BUNDLE / f"{name}.pt"
            if not path.exists():
                self.skipTest(f"no {path}")
            with self.subTest(net=name):
                net.load_state_dict(torch.load(str(path)), strict=True)  # raises on a mismatch

    def test_folding_batch_norm_keeps_the_output(self):
        x = torch.randn(1, 4, 32, 32)
        for net_id, net in self.bank.items():
            with self.subTest(net=net_id):
                net = copy.deepcopy(net)
                for m in net.modules():  # non-trivial statistics, so that folding has work to do
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
                        m.weight.data.uniform_(0.5, 1.5)
                        m.bias.data.uniform_(-0.5, 0.5)
                with torch.no_grad():
                    before = net(x)
                    bench.fold_batch_norm(net)
                    after = net(x)
                count = lambda n: sum(isinstance(m, torch.nn.BatchNorm2d) for m in n.modules())
                self.assertLess(count(net), count(self.bank[net_id]))  # some were folded
                scale = before.abs().max().item()
                self.assertLess((after - before).abs().max().item(), 1e-4 * max(scale, 1.0))

    @unittest.skipUnless(os.environ.get("DANET_BANK"), "set DANET_BANK to compare with C++")
    def test_counts_equal_danet_bank_describe(self):
        result = subprocess.run([os.environ["DANET_BANK"], "--threads=2", "describe", "--preset",
                                 "paper", "--json"], capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        described = json.loads(result.stdout)
        cpp = {m["id"]: m["params"] for m in described["models"]}
        cpp["D"] = described["decision"]["params"]
        self.assertEqual(cpp, {k: bench.num_parameters(v) for k, v in self.bank.items()})

    def test_script_prints_table_and_json(self):
        script = ROOT / "scripts/bench-eager"
        self.assertTrue(os.access(script, os.X_OK))
        self.assertEqual(script.read_text().split("\n")[0], "#!/usr/bin/python3")
        with tempfile.TemporaryDirectory() as tmp:  # in-process: a second torch import is slow
            path, out, err = os.path.join(tmp, "eager.json"), io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = bench.main(["--threads", "2", "--size", "16", "--batches", "1,2",
                                   "--min_seconds", "0", "--matmul_n", "64", "--nets", "D,M1",
                                   "--json", path])
            self.assertEqual(code, 0, err.getvalue())
            self.assertIn("| net | params | batch | ms/slice |", out.getvalue())
            self.assertIn(f"| M1 | {EXPECTED_PARAMS['M1']:,} | 2 |", out.getvalue())
            with open(path) as f:
                written = json.load(f)
        for key in ("threads", "size", "matmul_gflops", "rows"):
            self.assertIn(key, written)
        self.assertTrue(written["blas_core"])  # OpenBLAS's core name (torch's BLAS here)
        self.assertEqual(written["blas_core"], bench.openblas_core())
        self.assertEqual([(r["id"], r["batch"]) for r in written["rows"]],
                         [("D", 1), ("D", 2), ("M1", 1), ("M1", 2)])
        self.assertTrue(all(r["ms_per_slice"] > 0 for r in written["rows"]))


if __name__ == "__main__":
    unittest.main()
