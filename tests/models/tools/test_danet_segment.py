"""danet-segment with the shipped default bundle on a small phantom case, as a user runs it:
the label map lands on the input's grid (read back by nibabel), the report has its names, and
bad input is a clear error, not a crash.

Run by ctest with DANET_SEGMENT, DANET_PHANTOM, DANET_BUNDLE and DANET_TMP set.
"""
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import unittest

import nibabel as nib
import numpy as np

SEGMENT = os.environ.get("DANET_SEGMENT", "danet-segment")
PHANTOM = os.environ.get("DANET_PHANTOM", "danet-phantom")
BUNDLE = os.environ.get("DANET_BUNDLE", "models/bundles/phantom-compact")
TMP = os.environ.get("DANET_TMP", "/tmp/danet_segment_test")


def segment(*args):
    return subprocess.run([SEGMENT, "--bundle", BUNDLE, "--threads", "2", *args],
                          capture_output=True, text=True, timeout=600)


class DanetSegment(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(TMP, ignore_errors=True)
        subprocess.run([PHANTOM, "--out", TMP, "--cases", "1", "--seed", "77", "--dims",
                        "160,160,96"], check=True, capture_output=True, timeout=120)
        cls.case = os.path.join(TMP, "phantom_s77_000")
        # At BraTS's 240 x 240 the head leaves a margin, as in real scans (at 160 x 160 the
        # phantom head fills the slice).
        subprocess.run([PHANTOM, "--out", os.path.join(TMP, "wide"), "--cases", "1", "--seed",
                        "78", "--dims", "240,240,32"], check=True, capture_output=True,
                       timeout=120)
        cls.wide_case = os.path.join(TMP, "wide", "phantom_s78_000")

    def test_writes_labels_on_the_input_grid_and_a_report(self):
        out = os.path.join(TMP, "pred.nii.gz")
        report = os.path.join(TMP, "report.json")
        result = segment("--case_dir", self.case, "--out", out, "--json", report)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("routes per slice", result.stdout)
        predicted = nib.load(out)
        source = nib.load(os.path.join(self.case, "phantom_s77_000_flair.nii.gz"))
        self.assertEqual(predicted.shape, source.shape)
        self.assertTrue(np.allclose(predicted.affine, source.affine))
        labels = np.asarray(predicted.dataobj)
        self.assertTrue(set(np.unique(labels)) <= {0, 1, 2, 4})
        with open(report) as f:
            r = json.load(f)
        for key in ("routes", "gmacs", "gmacs_all_largest", "seconds", "volumes_ml", "slices"):
            self.assertIn(key, r)
        self.assertEqual(len(r["slices"]), 96)
        self.assertEqual(sum(r["routes"].values()), 96)
        voxel_ml = 0.001
        self.assertAlmostEqual(r["volumes_ml"]["wt"], float((labels > 0).sum()) * voxel_ml, 3)

    def test_static_policy_routes_every_slice_to_its_model(self):
        report = os.path.join(TMP, "static.json")
        result = segment("--case_dir", self.case, "--policy", "static:M1", "--json", report)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(report) as f:
            self.assertEqual(json.load(f)["routes"]["M1"], 96)

    def test_brain_box_changes_at_most_a_thousandth_of_the_labels(self):
        # Issue 15: every bank model runs on the brain's bounding box by default. Against the
        # whole slice, labels may differ in at most 0.1% of voxels (edge effects of padding).
        for model in ("M1", "M2", "M3", "M4"):
            labels, fractions = {}, {}
            for crop in ("true", "false"):
                out = os.path.join(TMP, f"{model}-{crop}.nii.gz")
                report = os.path.join(TMP, f"{model}-{crop}.json")
                result = segment("--case_dir", self.wide_case, "--policy", f"static:{model}",
                                 f"--crop_to_brain={crop}", "--out", out, "--json", report)
                self.assertEqual(result.returncode, 0, result.stderr)
                labels[crop] = np.asarray(nib.load(out).dataobj)
                with open(report) as f:
                    fractions[crop] = json.load(f)["window_fraction"]
            self.assertLess(fractions["true"], 0.9, model)  # the box is smaller than the slice
            self.assertEqual(fractions["false"], 1.0, model)
            self.assertGreater((labels["false"] > 0).sum(), 0, model)
            differ = float((labels["true"] != labels["false"]).mean())
            self.assertLessEqual(differ, 0.001, f"{model}: {differ:.4%} of voxels differ")

    def test_folded_batch_norm_keeps_routes_and_labels(self):
        # Issue 15: BatchNorms are folded into the convolutions at load. On the shipped weights
        # the decision network must route every slice as before, and at most 0.01% of the
        # labels may change (rounding at the argmax between two classes).
        labels, routes = {}, {}
        for fold in ("true", "false"):
            out = os.path.join(TMP, f"fold-{fold}.nii.gz")
            report = os.path.join(TMP, f"fold-{fold}.json")
            result = segment("--case_dir", self.case, "--policy", "dynamic",
                             f"--fold_batch_norm={fold}", "--out", out, "--json", report)
            self.assertEqual(result.returncode, 0, result.stderr)
            labels[fold] = np.asarray(nib.load(out).dataobj)
            with open(report) as f:
                routes[fold] = [s["route"] for s in json.load(f)["slices"]]
        self.assertEqual(routes["true"], routes["false"])
        self.assertGreater(len(set(routes["false"])), 1)  # skips and routed slices both
        self.assertGreater((labels["false"] > 0).sum(), 0)
        differ = float((labels["true"] != labels["false"]).mean())
        self.assertLessEqual(differ, 0.0001, f"{differ:.5%} of voxels differ")

    def test_bad_input_is_a_clear_error(self):
        result = segment("--case_dir", self.case, "--policy", "static:M7")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no bank model 'M7'", result.stderr)
        broken = os.path.join(TMP, "broken_case")
        shutil.copytree(self.case, broken, dirs_exist_ok=True)
        os.remove(os.path.join(broken, "phantom_s77_000_t2.nii.gz"))
        result = segment("--case_dir", broken)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no *_t2.nii.gz", result.stderr)
        with open(os.path.join(broken, "phantom_s77_000_t2.nii.gz"), "wb") as f:
            f.write(b"\x1f\x8b\x08\x00garbage")
        result = segment("--case_dir", broken)
        self.assertEqual(result.returncode, 1)
        self.assertIn("phantom_s77_000_t2.nii.gz", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_postprocess_study_steps_and_its_scores(self):
        # scripts/postprocess-study (a measurement, docs/training.md): its steps do what they
        # say on a hand-made label map, and it runs end to end on the phantom case.
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                            "scripts", "postprocess-study")
        loader = importlib.machinery.SourceFileLoader("postprocess_study", path)
        study = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(study)
        labels = np.zeros((20, 20, 6), np.int16)
        labels[2:6, 2:6, 1:4] = 2       # 48 voxels, 16 per slice
        labels[3:5, 3:5, 2] = 4         # 4 enhancing voxels inside it
        labels[15, 15, 1:3] = 1         # 2 voxels, one per slice
        volume = study.apply("3d-5", labels)
        self.assertEqual(int((volume > 0).sum()), 48)
        self.assertEqual(int(volume[15, 15, 1]), 0)
        self.assertEqual(int((study.apply("3d-49", labels) > 0).sum()), 0)
        per_slice = study.apply("2d-17", labels)  # each slice's 16-voxel square is too small
        self.assertEqual(int((per_slice > 0).sum()), 0)
        relabelled = study.apply("et-5", labels)
        self.assertEqual(int((relabelled == 4).sum()), 0)
        self.assertEqual(int((relabelled == 1).sum()), 4 + 2)
        np.testing.assert_array_equal(study.apply("et-4", labels), labels)
        self.assertEqual(study.dice(labels > 0, labels > 0), 100.0)
        self.assertEqual(study.dice(labels == 3, labels == 3), 100.0)

        env = dict(os.environ, DANET_SEGMENT=SEGMENT, STUDY_DIR=os.path.join(TMP, "study"))
        os.makedirs(env["STUDY_DIR"], exist_ok=True)
        result = subprocess.run([path, "--bundle", BUNDLE, "--max_cases", "1", TMP],
                                capture_output=True, text=True, timeout=600, env=env)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
        self.assertEqual(set(rows), set(study.STEPS))

    def test_perturb_cases_changes_the_images_only_and_repeats(self):
        # scripts/perturb-cases (the robustness probe of docs/training.md, session 22): every
        # kind keeps the label map byte for byte and the grid, changes the images as it says,
        # and a second run with the same seed writes the same images.
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                            "scripts", "perturb-cases")
        src = os.path.join(TMP, "perturb-src")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        os.symlink(self.case, os.path.join(src, "phantom_s77_000"))

        def load(root, kind_or_none, modality):
            folder = os.path.join(root, kind_or_none) if kind_or_none else root
            img = nib.load(os.path.join(folder, "phantom_s77_000",
                                        f"phantom_s77_000_{modality}.nii.gz"))
            return img, np.asarray(img.dataobj).astype(np.float64)

        kinds = ("noise", "bias", "thick", "lowres", "gamma", "scale")
        for run in ("a", "b"):
            for kind in kinds:
                r = subprocess.run([path, kind, src, os.path.join(TMP, "perturb-" + run, kind),
                                    "--seed", "5"], capture_output=True, text=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        first = os.path.join(TMP, "perturb-a")
        with open(os.path.join(self.case, "phantom_s77_000_seg.nii.gz"), "rb") as f:
            seg = f.read()
        for kind in kinds:
            with self.subTest(kind):
                with open(os.path.join(first, kind, "phantom_s77_000",
                                       "phantom_s77_000_seg.nii.gz"), "rb") as f:
                    self.assertEqual(f.read(), seg)
                for modality in ("flair", "t1ce", "t1", "t2"):
                    source, x = load(TMP, None, modality)
                    img, y = load(first, kind, modality)
                    _, again = load(os.path.join(TMP, "perturb-b"), kind, modality)
                    np.testing.assert_array_equal(y, again)
                    self.assertEqual(img.shape, source.shape)
                    self.assertTrue(np.allclose(img.affine, source.affine))
                    brain = x > 0
                    self.assertFalse(np.array_equal(x[brain], y[brain]))
                    if kind == "scale":
                        ratio = y[brain].sum() / x[brain].sum()
                        self.assertTrue(abs(ratio - 0.2) < 0.01 or abs(ratio - 5) < 0.01, ratio)
                    if kind == "thick":  # each block of 5 slices holds one image
                        blocks = y[:, :, :95].reshape(y.shape[0], y.shape[1], -1, 5)
                        self.assertTrue(np.all(blocks == blocks[:, :, :, :1]))
                    if kind == "bias":  # a smooth field of at most x0.70..x1.42
                        ratio = y[x > 100] / x[x > 100]
                        self.assertGreater(ratio.min(), 0.69)
                        self.assertLess(ratio.max(), 1.43)
        bad = subprocess.run([path, "noise", os.path.join(TMP, "nothing-here"),
                              os.path.join(TMP, "x")], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("nothing-here", bad.stderr)
        self.assertNotIn("Traceback", bad.stderr)


if __name__ == "__main__":
    unittest.main()
