"""Our NIfTI reader and writer against a second, independent implementation (nibabel).

- nibabel reads the phantom case danet-phantom writes: same affine, labels, BraTS naming.
- danet-volume reads files nibabel writes in the variants real data comes in: NIfTI-2,
  big-endian, float64, int16 with scl_slope/scl_inter, and a qform-only oblique header; the
  affine and intensities we report must equal nibabel's.

Run by ctest with DANET_PHANTOM, DANET_VOLUME and DANET_TMP set.
"""
import json
import os
import shutil
import subprocess
import unittest

import nibabel as nib
import numpy as np

PHANTOM = os.environ.get("DANET_PHANTOM", "danet-phantom")
VOLUME = os.environ.get("DANET_VOLUME", "danet-volume")
TMP = os.environ.get("DANET_TMP", "/tmp/danet_nifti_second_reader")


def info(path):
    out = subprocess.run([VOLUME, "info", path], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return json.loads(out.stdout)


class PhantomReadByNibabel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "phantom")
        shutil.rmtree(cls.dir, ignore_errors=True)
        subprocess.run([PHANTOM, "--out", cls.dir, "--cases", "1", "--seed", "3"], check=True,
                       capture_output=True, timeout=120)
        cls.case = os.path.join(cls.dir, "phantom_s3_000")

    def test_files_and_geometry(self):
        for modality in ("flair", "t1ce", "t1", "t2", "seg"):
            path = os.path.join(self.case, f"phantom_s3_000_{modality}.nii.gz")
            image = nib.load(path)
            self.assertEqual(image.shape, (240, 240, 155), modality)
            self.assertTrue(np.allclose(image.affine, np.array(info(path)["affine"])), modality)
            self.assertEqual(image.header.get_zooms(), (1.0, 1.0, 1.0))

    def test_labels_and_intensities(self):
        seg = np.asarray(nib.load(os.path.join(self.case, "phantom_s3_000_seg.nii.gz")).dataobj)
        self.assertEqual(seg.dtype, np.uint8)
        self.assertTrue(set(np.unique(seg)) <= {0, 1, 2, 4})
        self.assertIn(2, np.unique(seg))
        flair = nib.load(os.path.join(self.case, "phantom_s3_000_flair.nii.gz")).get_fdata()
        ours = info(os.path.join(self.case, "phantom_s3_000_flair.nii.gz"))
        self.assertAlmostEqual(float(flair.mean()), ours["mean"], places=3)
        self.assertEqual(float(flair.max()), ours["max"])
        tumour_slices = int((seg.reshape(-1, 155) > 0).any(axis=0).sum())
        self.assertGreater(tumour_slices, 10)
        self.assertLess(tumour_slices, 155)


class NibabelFilesReadByUs(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.join(TMP, "nibabel")
        os.makedirs(self.dir, exist_ok=True)
        rng = np.random.default_rng(0)
        self.data = rng.uniform(0, 1000, size=(7, 6, 5))
        self.affine = np.array([[0.9, 0.1, 0.0, -10.0],
                                [-0.1, 1.1, 0.0, 20.0],
                                [0.0, 0.0, 2.5, 5.0],
                                [0.0, 0.0, 0.0, 1.0]])

    def check(self, image, name, places=3):
        path = os.path.join(self.dir, name)
        nib.save(image, path)
        ours = info(path)
        theirs = nib.load(path)
        expected = theirs.get_fdata()
        self.assertEqual(ours["dims"], list(expected.shape))
        self.assertTrue(np.allclose(np.array(ours["affine"]), theirs.affine, atol=1e-4),
                        (ours["affine"], theirs.affine))
        self.assertAlmostEqual(ours["mean"], float(expected.mean()), places=places)
        self.assertAlmostEqual(ours["max"], float(expected.max()), places=places)
        return ours

    def test_nifti2_float64(self):
        ours = self.check(nib.Nifti2Image(self.data, self.affine), "a.nii.gz")
        self.assertEqual(ours["nifti_version"], 2)

    def test_big_endian(self):
        image = nib.Nifti1Image(self.data.astype(">f4"), self.affine)
        self.check(image, "b.nii")

    def test_int16_with_scaling(self):
        image = nib.Nifti1Image(np.round(self.data).astype(np.int16), self.affine)
        image.header.set_slope_inter(0.5, 10.0)
        self.check(image, "c.nii.gz")

    def test_qform_only_oblique(self):
        image = nib.Nifti1Image(self.data.astype(np.float32), None)
        angle = np.deg2rad(10)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 3.0],
                             [np.sin(angle), np.cos(angle), 0, -4.0],
                             [0, 0, -1.0, 2.0],
                             [0, 0, 0, 1.0]])
        image.set_qform(rotation @ np.diag([1.0, 1.2, 2.0, 1.0]), code=1)
        image.set_sform(None, code=0)
        ours = self.check(image, "d.nii")
        self.assertEqual(ours["sform_code"], 0)

    def test_complex_is_refused_by_name(self):
        path = os.path.join(self.dir, "e.nii")
        nib.save(nib.Nifti1Image(self.data.astype(np.complex64), self.affine), path)
        out = subprocess.run([VOLUME, "info", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertIn("e.nii: unsupported datatype 32", out.stderr)

    def test_compare_label_maps(self):
        """danet-volume compare (scripts/gpu-check's parity): agreement and whole-tumour Dice
        counted independently here with numpy."""
        rng = np.random.default_rng(1)
        a = rng.choice(np.array([0, 0, 0, 1, 2, 4], dtype=np.uint8), size=(7, 6, 5))
        b = a.copy()
        for i in (3, 50, 99):  # change three voxels
            b.flat[i] = 0 if a.flat[i] else 2
        paths = []
        for name, data in (("la.nii.gz", a), ("lb.nii.gz", b)):
            paths.append(os.path.join(self.dir, name))
            nib.save(nib.Nifti1Image(data, self.affine), paths[-1])
        out = subprocess.run([VOLUME, "compare", *paths], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout)
        differ = int((a != b).sum())
        self.assertGreater(differ, 0)
        self.assertEqual(got["differ"], differ)
        self.assertAlmostEqual(got["agreement"], 1 - differ / a.size, places=9)
        ta, tb = a != 0, b != 0
        self.assertAlmostEqual(got["whole_tumour_dice"],
                               2 * (ta & tb).sum() / (ta.sum() + tb.sum()), places=9)
        # Another grid is refused by name.
        other = os.path.join(self.dir, "lc.nii.gz")
        nib.save(nib.Nifti1Image(a[:, :, :4], self.affine), other)
        out = subprocess.run([VOLUME, "compare", paths[0], other], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertIn("lc.nii.gz is 7x6x4", out.stderr)


if __name__ == "__main__":
    unittest.main()
