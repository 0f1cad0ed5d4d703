"""DICOM input end to end: a phantom study written as DICOM (danet-phantom --dicom), checked
against independent readers (dcm2niix, dciodvfy, pydicom) and then segmented by danet-server
through the danet CLI: the same labels as the NIfTI case, the same labels after lossless
recompression (RLE, JPEG-LS, JPEG lossless, JPEG 2000 lossless made by OpenJPEG's opj_compress
and wrapped by pydicom), nearly the same after lossy JPEG 2000, explicit --series mappings, and
bad studies answered
INVALID_ARGUMENT with a message that names the problem.

Run by ctest (tests.cmake) with DANET_SERVER_BIN, DANET_CLI, DANET_PHANTOM, DANET_BUNDLE and
DANET_TMP set; by hand the defaults point into the source tree's build/ folder:

  cd tests/server/grpc && DANET_TMP=/tmp/dicom_e2e python3 -m unittest -v test_dicom_e2e

Needs dcm2niix, dciodvfy (dicom3tools), dcmtk (dcmcrle, dcmcjpls, dcmcjpeg, dcmodify, dcmdump),
opj_compress (libopenjp2-tools), nibabel and pydicom. The server listens on 127.0.0.1 only, without a metrics listener; it is
stopped by its own pid, and every wait is bounded.
"""
import copy
import glob
import json
import os
import shutil
import tempfile
import unittest

import nibabel as nib
import numpy as np
import pydicom
import pydicom.encaps
import pydicom.uid

# The paths (same environment variables and defaults) and the process helpers of the service
# end-to-end test next to this file, and its Server; no TestCase (it would run twice).
from test_service_e2e import (BUNDLE, CLI, MODALITIES, PHANTOM, SERVER as SERVER_BIN, Server,
                              run, tail)

TMP = os.environ.get("DANET_TMP", os.path.join(tempfile.gettempdir(), "danet_dicom_e2e"))
SEED = 5
DIMS = "96,96,32"
SLICES = 32
DESCRIPTIONS = {"flair": "AX FLAIR", "t1ce": "AX T1 POST GD", "t1": "AX T1", "t2": "AX T2"}

# Transfer syntaxes.
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CODECS = {  # name: (command, transfer syntax it must produce)
    "rle": (["dcmcrle"], "1.2.840.10008.1.2.5"),
    "jpegls": (["dcmcjpls"], "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless (its default)
    "jpeg_sv1": (["dcmcjpeg", "+e1"], "1.2.840.10008.1.2.4.70"),  # JPEG lossless, SV1
}


def tool(name):
    return shutil.which(name) or os.path.join("/usr/bin", name)


def canonical(path):
    """(voxels, affine) of a NIfTI file in the closest canonical (RAS+) orientation."""
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj), img.affine


# ---------------------------------------------------------------------------------------------
# One phantom case, as NIfTI and as a DICOM study, for the whole module.

CASE = None    # the BraTS-style case folder (NIfTI)
STUDY = None   # its dicom/ folder: flair/, t1ce/, t1/, t2/


def setUpModule():
    global CASE, STUDY
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    root = os.path.join(TMP, "cases")
    # The classic generator: one appearance and a tumour of BraTS size, so the labels are
    # never empty (the randomised one also makes lesions under 1 mL).
    run([PHANTOM, "--out", root, "--cases", "1", "--seed", str(SEED), "--dims", DIMS, "--dicom",
         "--style", "classic"],
        timeout=120, check=True)
    CASE = os.path.join(root, "phantom_s%d_000" % SEED)
    STUDY = os.path.join(CASE, "dicom")
    for m in MODALITIES:
        assert os.path.exists(nifti(m)), nifti(m)
        assert len(instances(STUDY, m)) == SLICES, (m, instances(STUDY, m))


def nifti(modality):
    return os.path.join(CASE, "%s_%s.nii.gz" % (os.path.basename(CASE), modality))


def instances(study, modality):
    return sorted(glob.glob(os.path.join(study, modality, "*.dcm")))


def copy_study(name):
    """A fresh copy of the DICOM study under TMP/name."""
    dst = os.path.join(TMP, name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(STUDY, dst)
    return dst


def header(path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def write_series(study, modality, volume, template, origin, row_dir, col_dir, slice_step,
                 spacing):
    """Replaces study/modality with a new series (new SeriesInstanceUID, same study and frame of
    reference) holding `volume` (slices, rows, columns of stored values): pixel (r, c) of slice k
    at origin + k * slice_step + c * spacing[1] * row_dir + r * spacing[0] * col_dir (mm, LPS),
    the way a scanner would have acquired it on that grid."""
    folder = os.path.join(study, modality)
    shutil.rmtree(folder)
    os.makedirs(folder)
    series_uid = pydicom.uid.generate_uid()
    row_dir, col_dir, slice_step = (np.asarray(v, float) for v in (row_dir, col_dir, slice_step))
    for k in range(volume.shape[0]):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
        ds.SliceThickness = float(np.linalg.norm(slice_step))
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        position = np.asarray(origin, float) + k * slice_step
        ds.ImagePositionPatient = [float(v) for v in position]
        if "SliceLocation" in ds:
            del ds.SliceLocation
        ds.PixelData = np.ascontiguousarray(volume[k]).astype(template.pixel_array.dtype).tobytes()
        ds.save_as(os.path.join(folder, "IM%04d.dcm" % (k + 1)))


def read_series(study, modality):
    """(stored values as slices x rows x columns in slice-position order, sorted datasets)."""
    ds = [pydicom.dcmread(p) for p in instances(study, modality)]
    normal = np.cross(np.array(ds[0].ImageOrientationPatient[:3], float),
                      np.array(ds[0].ImageOrientationPatient[3:], float))
    ds.sort(key=lambda d: float(np.dot(d.ImagePositionPatient, normal)))
    return np.stack([d.pixel_array for d in ds]), ds, normal


# ---------------------------------------------------------------------------------------------

class DicomFiles(unittest.TestCase):
    """The phantom's DICOM against independent readers; no server."""

    def test_dcm2niix_round_trip_matches_the_nifti(self):
        for m in MODALITIES:
            with self.subTest(modality=m):
                out = os.path.join(TMP, "dcm2niix", m)
                os.makedirs(out, exist_ok=True)
                r = run([tool("dcm2niix"), "-z", "y", "-f", "%d", "-o", out,
                         os.path.join(STUDY, m)], timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                converted = glob.glob(os.path.join(out, "*.nii.gz"))
                self.assertEqual(len(converted), 1, r.stdout + r.stderr)
                # -f %d: named by SeriesDescription.
                self.assertEqual(os.path.basename(converted[0]),
                                 DESCRIPTIONS[m].replace(" ", "_") + ".nii.gz")
                got, got_affine = canonical(converted[0])
                want, want_affine = canonical(nifti(m))
                self.assertEqual(got.shape, want.shape)
                np.testing.assert_array_equal(got, want)
                np.testing.assert_allclose(got_affine, want_affine, atol=1e-3)

    def test_dciodvfy_reports_no_errors(self):
        for m in MODALITIES:
            with self.subTest(modality=m):
                path = instances(STUDY, m)[SLICES // 2]
                r = run([tool("dciodvfy"), path], timeout=60)
                errors = [line for line in (r.stdout + r.stderr).splitlines()
                          if line.startswith("Error")]
                self.assertEqual(errors, [], r.stdout + r.stderr)

    def test_one_study_shared_frame_of_reference(self):
        studies, frames, series = set(), set(), {}
        for m in MODALITIES:
            ds = header(instances(STUDY, m)[0])
            self.assertEqual(ds.Modality, "MR")
            self.assertEqual(ds.SeriesDescription, DESCRIPTIONS[m])
            self.assertEqual(ds.file_meta.TransferSyntaxUID, EXPLICIT_LE)
            studies.add(ds.StudyInstanceUID)
            frames.add(ds.FrameOfReferenceUID)
            series[m] = ds.SeriesInstanceUID
        self.assertEqual(len(studies), 1)
        self.assertEqual(len(frames), 1)
        self.assertEqual(len(set(series.values())), 4, series)


# ---------------------------------------------------------------------------------------------

class DicomServer(unittest.TestCase):
    """One danet-server; the DICOM study through the danet CLI."""

    server = None
    _reference = None  # (labels, affine, report) of the uncompressed DICOM study

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "server")
        cls.server = Server(cls.dir, with_metrics=False)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()

    def setUp(self):
        self.assertIsNone(self.server.proc.poll(), "danet-server died:\n"
                          + tail(self.server.log_path))

    def segment(self, path, name, *args):
        """Runs `danet segment`; returns (CompletedProcess, out dir)."""
        out = os.path.join(self.dir, "out_" + name)
        shutil.rmtree(out, ignore_errors=True)
        r = run([CLI, "segment", path, "--server", self.server.address, "--out", out,
                 "--progress=false", *args], timeout=120)
        return r, out

    def assert_segments(self, path, name, *args):
        """Segments; returns (canonical labels, canonical affine, report)."""
        r, out = self.segment(path, name, *args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        labels, affine = canonical(os.path.join(out, "labels.nii.gz"))
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
        return labels, affine, report

    def assert_invalid(self, path, name, *args):
        """Segments and expects exit 1 with INVALID_ARGUMENT; returns the message."""
        r, _ = self.segment(path, name, *args)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("danet: INVALID_ARGUMENT: ", r.stderr)
        return r.stderr

    def reference(self):
        if DicomServer._reference is None:
            DicomServer._reference = self.assert_segments(STUDY, "dicom")
        return DicomServer._reference

    def assert_same_labels(self, result):
        labels, affine, report = result
        ref_labels, ref_affine, ref_report = self.reference()
        self.assertEqual(labels.shape, ref_labels.shape)
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
        self.assertEqual(report["routes"], ref_report["routes"])

    def series_uids(self, study=None):
        return {m: header(instances(study or STUDY, m)[0]).SeriesInstanceUID for m in MODALITIES}

    # -- DICOM and NIfTI ----------------------------------------------------------------------

    def test_dicom_and_nifti_give_the_same_labels(self):
        labels, affine, report = self.reference()
        nii_labels, nii_affine, nii_report = self.assert_segments(CASE, "nifti")
        want_shape = nib.load(nifti("flair")).shape
        self.assertEqual(labels.shape, want_shape)
        self.assertEqual(nii_labels.shape, want_shape)
        np.testing.assert_array_equal(labels, nii_labels)
        np.testing.assert_allclose(affine, nii_affine, atol=1e-4)
        self.assertEqual(report["routes"], nii_report["routes"])
        self.assertEqual(sum(report["routes"].values()), SLICES)
        self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2, 4})
        self.assertTrue((labels > 0).any(), "the phantom's tumour is not segmented at all")

    # -- DICOM SEG output: dciodvfy and pydicom, a second reader --------------------------------

    def test_dicom_seg_is_valid_and_decodes_to_our_labels(self):
        self.reference()
        out = os.path.join(self.dir, "out_dicom")
        seg_path = os.path.join(out, "seg.dcm")
        self.assertTrue(os.path.exists(seg_path), os.listdir(out))
        v = run([tool("dciodvfy"), seg_path], timeout=60)
        errors = [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Error")]
        self.assertEqual(errors, [], v.stdout + v.stderr)

        seg = pydicom.dcmread(seg_path)
        source = [header(p) for p in instances(STUDY, "flair")]
        self.assertEqual(seg.SOPClassUID, "1.2.840.10008.5.1.4.1.1.66.4")
        self.assertEqual(seg.StudyInstanceUID, source[0].StudyInstanceUID)
        self.assertEqual(seg.PatientID, source[0].PatientID)
        self.assertEqual(seg.FrameOfReferenceUID, source[0].FrameOfReferenceUID)
        self.assertNotIn(seg.SeriesInstanceUID, set(self.series_uids().values()))
        referenced = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
        self.assertEqual(referenced, set(self.series_uids().values()))

        ours = np.asarray(nib.load(os.path.join(out, "labels.nii.gz")).dataobj)  # [i, j, k]
        by_label = {"Necrotic core": 1, "Edema": 2, "Enhancing tumour": 4}
        segments = {s.SegmentNumber: by_label[s.SegmentLabel] for s in seg.SegmentSequence}
        self.assertEqual(sorted(segments.values()), sorted(set(np.unique(ours)) - {0}))
        for s in seg.SegmentSequence:
            self.assertEqual(s.SegmentAlgorithmType, "AUTOMATIC")
            self.assertEqual(s.SegmentAlgorithmName, "Med-DANet")

        # Slice k of our label map is the source slice at position k along the normal.
        normal = np.cross(np.array(source[0].ImageOrientationPatient[:3], float),
                          np.array(source[0].ImageOrientationPatient[3:], float))
        by_position = sorted(source, key=lambda d: float(np.dot(d.ImagePositionPatient, normal)))
        k_of_uid = {d.SOPInstanceUID: k for k, d in enumerate(by_position)}
        positions = [np.array(d.ImagePositionPatient, float) for d in by_position]
        decoded = np.zeros_like(ours)
        frames = seg.pixel_array.reshape((-1, seg.Rows, seg.Columns))
        for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
            ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
            k = int(np.argmin([np.linalg.norm(ipp - p) for p in positions]))
            self.assertLess(np.linalg.norm(ipp - positions[k]), 1e-3)
            refs = {r.ReferencedSOPInstanceUID
                    for d in item.DerivationImageSequence for r in d.SourceImageSequence}
            self.assertIn(by_position[k].SOPInstanceUID, refs)
            self.assertTrue(frames[f].any(), "empty frames are not written")
            decoded[:, :, k][frames[f].T > 0] = segments[number]
        np.testing.assert_array_equal(decoded, ours)
        self.assertEqual(len(k_of_uid), SLICES)

    # -- Compressed transfer syntaxes ---------------------------------------------------------

    def test_compressed_transfer_syntaxes(self):
        for codec, (command, syntax) in CODECS.items():
            with self.subTest(codec=codec):
                study = copy_study("codec_" + codec)
                for path in instances(study, "flair"):
                    tmp = path + ".tmp"
                    r = run([tool(command[0]), *command[1:], path, tmp], timeout=60)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    os.replace(tmp, path)
                for m in MODALITIES:
                    want = syntax if m == "flair" else EXPLICIT_LE
                    for path in instances(study, m):
                        self.assertEqual(header(path).file_meta.TransferSyntaxUID, want,
                                         (codec, path))
                r = run([tool("dcmdump"), "-M", instances(study, "flair")[0]], timeout=30)
                self.assertIn("(0002,0010) UI =%s" % {
                    "rle": "RLELossless", "jpegls": "JPEGLSLossless",
                    "jpeg_sv1": "JPEGLossless:Non-hierarchical-1stOrderPrediction"}[codec],
                    r.stdout)
                self.assert_same_labels(self.assert_segments(study, "codec_" + codec))

    def jpeg2000_study(self, name, lossless):
        """A copy of the study with every instance's pixels as a JPEG 2000 codestream made by
        opj_compress (reversible, or irreversible at 10:1), encapsulated by pydicom."""
        study = copy_study(name)
        syntax = "1.2.840.10008.1.2.4.90" if lossless else "1.2.840.10008.1.2.4.91"
        for m in MODALITIES:
            for path in instances(study, m):
                ds = pydicom.dcmread(path)
                pixels = ds.pixel_array
                raw, j2k = path + ".rawl", path + ".j2k"
                pixels.astype("<i2" if ds.PixelRepresentation else "<u2").tofile(raw)
                command = [tool("opj_compress"), "-i", raw, "-o", j2k, "-F", "%d,%d,1,16,%s" % (
                    ds.Columns, ds.Rows, "s" if ds.PixelRepresentation else "u")]
                if not lossless:
                    command += ["-I", "-r", "10"]
                r = run(command, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                with open(j2k, "rb") as f:
                    codestream = f.read()
                os.remove(raw)
                os.remove(j2k)
                ds.PixelData = pydicom.encaps.encapsulate([codestream])
                ds["PixelData"].VR = "OB"
                ds["PixelData"].is_undefined_length = True
                ds.file_meta.TransferSyntaxUID = syntax
                ds.is_little_endian, ds.is_implicit_VR = True, False
                if not lossless:
                    ds.LossyImageCompression = "01"
                ds.save_as(path)
        self.assertEqual(header(instances(study, "t2")[0]).file_meta.TransferSyntaxUID, syntax)
        return study

    def test_jpeg2000_lossless_and_lossy(self):
        # Lossless: the same labels as the uncompressed study.
        self.assert_same_labels(self.assert_segments(
            self.jpeg2000_study("j2k_lossless", True), "j2k_lossless"))
        # Lossy (all four series at 10:1): the tumour found again, nearly voxel for voxel.
        labels, _, _ = self.assert_segments(self.jpeg2000_study("j2k_lossy", False),
                                            "j2k_lossy")
        reference = self.reference()[0]
        both = np.logical_and(labels > 0, reference > 0).sum()
        dice = 2.0 * both / max(1, (labels > 0).sum() + (reference > 0).sum())
        agree = float((labels == reference).mean())
        print("\nJPEG 2000 lossy 10:1: whole-tumour Dice against uncompressed %.4f, labels "
              "equal in %.4f of voxels" % (dice, agree), flush=True)
        self.assertGreater(dice, 0.9)

    # -- Series on different grids (one frame of reference) -------------------------------------

    def test_series_on_other_grids_are_resampled_onto_the_flair_grid(self):
        # The usual clinical protocol: the flair as it is, t1ce re-sliced as a 3D sagittal
        # series (the same voxels), t1 as 2 mm axial slices (every other one), t2 at half the
        # in-plane matrix (every other row and column).
        study = copy_study("grids")
        vol, ds, normal = read_series(study, "t1ce")
        first = np.array(ds[0].ImagePositionPatient, float)
        x_dir = np.array(ds[0].ImageOrientationPatient[:3], float)
        y_dir = np.array(ds[0].ImageOrientationPatient[3:], float)
        dy, dx = (float(v) for v in ds[0].PixelSpacing)
        dz = float(np.dot(np.array(ds[1].ImagePositionPatient, float) - first, normal))
        top = first + (len(ds) - 1) * dz * normal
        # Sagittal slice c: rows run down the slice stack, columns along y.
        sagittal = vol.transpose(2, 0, 1)[:, ::-1, :]
        write_series(study, "t1ce", sagittal, ds[0], top, y_dir, -normal, dx * x_dir, (dz, dy))
        vol, ds, _ = read_series(study, "t1")
        write_series(study, "t1", vol[::2], ds[0], ds[0].ImagePositionPatient, x_dir, y_dir,
                     2 * dz * normal, (dy, dx))
        vol, ds, _ = read_series(study, "t2")
        write_series(study, "t2", vol[:, ::2, ::2], ds[0], ds[0].ImagePositionPatient, x_dir,
                     y_dir, dz * normal, (2 * dy, 2 * dx))
        self.assertEqual(len(instances(study, "t1ce")), vol.shape[2])

        labels, affine, report = self.assert_segments(study, "grids")
        ref_labels, ref_affine, _ = self.reference()
        self.assertEqual(labels.shape, ref_labels.shape)  # the flair's grid
        np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
        notes = "\n".join(report["notes"])
        rows, columns = vol.shape[1:]  # as acquired on the flair's grid
        for m, grid in (("t1ce", "%dx%dx%d" % (rows, SLICES, columns)),
                        ("t1", "%dx%dx%d @" % (columns, rows, SLICES // 2)),
                        ("t2", "%dx%dx%d" % (columns // 2, rows // 2, SLICES))):
            self.assertRegex(notes, "%s resampled \\(trilinear\\) from [^ ]*%s" % (m, grid))
        # Labels close to those of the study on one grid: the sagittal t1ce holds the same
        # voxels; t1 and t2 lost half their resolution along one or two axes.
        tumour, ref_tumour = labels > 0, ref_labels > 0
        dice = 2 * (tumour & ref_tumour).sum() / (tumour.sum() + ref_tumour.sum())
        print("resampled study: whole-tumour Dice against one grid %.4f, labels equal in %.4f"
              % (dice, (labels == ref_labels).mean()))
        self.assertGreater(dice, 0.9)
        # Against the phantom's truth (on the flair's grid): the mixed-grid study keeps at least
        # 95% of the one-grid study's Dice, per region (issue 13's target).
        truth, truth_affine = canonical(os.path.join(CASE, "%s_seg.nii.gz"
                                                     % os.path.basename(CASE)))
        np.testing.assert_allclose(truth_affine, ref_affine, atol=1e-4)

        def region_dice(pred, region):
            a, b = np.isin(pred, region), np.isin(truth, region)
            return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())
        for name, region in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            mixed, uniform = region_dice(labels, region), region_dice(ref_labels, region)
            print("  %s Dice against the truth: mixed grids %.4f, one grid %.4f (ratio %.3f)"
                  % (name, mixed, uniform, mixed / max(uniform, 1e-9)), flush=True)
            if np.isin(truth, region).any():
                self.assertGreaterEqual(mixed, 0.95 * uniform, name)

        # The SEG lies on the flair's grid and references the series on it, the flair alone.
        seg = pydicom.dcmread(os.path.join(self.dir, "out_grids", "seg.dcm"))
        self.assertEqual({s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence},
                         {header(instances(study, "flair")[0]).SeriesInstanceUID})
        flair_shape = nib.load(nifti("flair")).shape
        self.assertEqual((seg.Columns, seg.Rows), flair_shape[:2])

    def test_extra_series_are_set_aside_with_a_note(self):
        # DWI: two b-values at every flair position, one series; not one stack, not needed.
        study = copy_study("extra_series")
        os.makedirs(os.path.join(study, "dwi"))
        series_uid = pydicom.uid.generate_uid()
        for b, path in [(b, p) for b in (0, 1000) for p in instances(study, "flair")]:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series_uid
            ds.SeriesDescription = "AX DWI b0 b1000"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
                pydicom.uid.generate_uid()
            ds.save_as(os.path.join(study, "dwi", "b%d_%s" % (b, os.path.basename(path))))
        result = self.assert_segments(study, "extra_series")
        self.assert_same_labels(result)
        self.assertTrue(any(n.startswith("series 'AX DWI b0 b1000' set aside: ") and
                            "same slice position" in n for n in result[2]["notes"]),
                        result[2]["notes"])

    def test_another_frame_of_reference_is_refused(self):
        study = copy_study("other_frame")
        r = run([tool("dcmodify"), "-nb", "-m", "(0020,0052)=1.2.3.4.5",
                 *instances(study, "t2")], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        message = self.assert_invalid(study, "other_frame")
        self.assertIn("(t2): another frame of reference than the flair series", message)

    # -- Explicit --series --------------------------------------------------------------------

    def test_series_mapping(self):
        uids = self.series_uids()
        mapping = ",".join("%s=%s" % (uids[m], m) for m in MODALITIES)
        self.assert_same_labels(self.assert_segments(STUDY, "series_ok", "--series", mapping))

        # The flair series mapped to t2 as well: two t2, no flair.
        wrong = {**{m: m for m in MODALITIES}, "flair": "t2"}
        message = self.assert_invalid(
            STUDY, "series_two_t2", "--series",
            ",".join("%s=%s" % (uids[m], wrong[m]) for m in MODALITIES))
        self.assertRegex(message, r"no series for modality 'flair'|several series for modality "
                                  r"'t2'")
        # The series found are listed (status messages are capped at 200 characters, so the
        # list may be cut after the first few).
        self.assertIn("series found: ", message)
        self.assertTrue(any(uids[m] in message for m in MODALITIES), message)

        # The t1ce series mapped to flair: two flair, no t1ce.
        wrong = {**{m: m for m in MODALITIES}, "t1ce": "flair"}
        message = self.assert_invalid(
            STUDY, "series_two_flair", "--series",
            ",".join("%s=%s" % (uids[m], wrong[m]) for m in MODALITIES))
        self.assertRegex(message, r"several series for modality 'flair'|no series for modality "
                                  r"'t1ce'")
        self.assertIn("series found: ", message)
        self.assertTrue(any(uids[m] in message for m in MODALITIES), message)

    # -- Multi-frame Enhanced MR -----------------------------------------------------------------

    def test_enhanced_multi_frame_mr(self):
        # Every series as one Enhanced MR Image Storage instance (the way e.g. a Philips 3D
        # sequence arrives): frames in reverse order, orientation and pixel measures shared,
        # position, stack and rescale per frame. Same labels as the single-frame study, and a
        # SEG that references each slice's frame, valid per dciodvfy.
        study = copy_study("enhanced")
        for m in MODALITIES:
            files = instances(study, m)
            first = pydicom.dcmread(files[0])
            ds = copy.deepcopy(first)
            frames = [pydicom.dcmread(f) for f in reversed(files)]
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
                pydicom.uid.generate_uid()
            ds.NumberOfFrames = len(frames)
            for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                            "RescaleSlope", "RescaleIntercept", "SliceLocation",
                            "InstanceNumber"):
                if keyword in ds:
                    delattr(ds, keyword)
            shared = pydicom.Dataset()
            orientation, measures = pydicom.Dataset(), pydicom.Dataset()
            orientation.ImageOrientationPatient = first.ImageOrientationPatient
            measures.PixelSpacing = first.PixelSpacing
            measures.SliceThickness = first.get("SliceThickness", 1)
            shared.PlaneOrientationSequence = pydicom.Sequence([orientation])
            shared.PixelMeasuresSequence = pydicom.Sequence([measures])
            ds.SharedFunctionalGroupsSequence = pydicom.Sequence([shared])
            per_frame = []
            for k, f in enumerate(frames):
                item, position, content, transform = (pydicom.Dataset() for _ in range(4))
                position.ImagePositionPatient = f.ImagePositionPatient
                content.StackID = "1"
                content.InStackPositionNumber = k + 1
                transform.RescaleSlope = f.get("RescaleSlope", 1)
                transform.RescaleIntercept = f.get("RescaleIntercept", 0)
                item.PlanePositionSequence = pydicom.Sequence([position])
                item.FrameContentSequence = pydicom.Sequence([content])
                item.PixelValueTransformationSequence = pydicom.Sequence([transform])
                per_frame.append(item)
            ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(per_frame)
            ds.PixelData = b"".join(f.PixelData for f in frames)
            for f in files:
                os.remove(f)
            ds.save_as(os.path.join(study, m, "enhanced.dcm"))
        result = self.assert_segments(study, "enhanced")
        self.assert_same_labels(result)
        seg = os.path.join(self.dir, "out_enhanced", "seg.dcm")
        v = run([tool("dciodvfy"), seg], timeout=60)
        errors = [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Error")]
        self.assertEqual(errors, [], v.stdout + v.stderr)
        # Each SEG frame's source references name the frame of each enhanced instance that lies
        # at the SEG frame's position.
        positions = {}
        for m in MODALITIES:
            ds = pydicom.dcmread(os.path.join(study, m, "enhanced.dcm"), stop_before_pixels=True)
            positions[ds.SOPInstanceUID] = [
                np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
                for f in ds.PerFrameFunctionalGroupsSequence]
        checked = 0
        for f in pydicom.dcmread(seg).PerFrameFunctionalGroupsSequence:
            where = np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
            for d in f.DerivationImageSequence:
                for src in d.SourceImageSequence:
                    frame = int(src.ReferencedFrameNumber)
                    np.testing.assert_allclose(
                        positions[src.ReferencedSOPInstanceUID][frame - 1], where, atol=1e-3)
                    checked += 1
        self.assertGreater(checked, 0)

    # -- Series naming rules -------------------------------------------------------------------

    def test_series_rules_name_series_the_defaults_do_not_know(self):
        # A scanner whose series are "SEQ 1" .. "SEQ 4": refused by the built-in rules with the
        # candidates listed by description; segmented with a rules file, from the CLI (sent in
        # the request) and from the server's --series_rules.
        study = copy_study("seq_names")
        for number, m in enumerate(MODALITIES, 1):
            for path in instances(study, m):
                ds = pydicom.dcmread(path)
                ds.SeriesDescription = "SEQ %d" % number
                ds.save_as(path)
        message = self.assert_invalid(study, "seq_refused")
        self.assertIn("no series for modality 'flair' by the series rules", message)
        self.assertIn("'SEQ 1'", message)
        rules = os.path.join(TMP, "seq_rules.pbtxt")
        with open(rules, "w") as f:
            f.write("# our scanner\n" + "".join(
                'rule { name: "SEQ %d" modality: "%s" all: "seq" all: "%d" }\n' % (i, m, i)
                for i, m in enumerate(MODALITIES, 1)))
        self.assert_same_labels(self.assert_segments(study, "seq_cli", "--series_rules", rules))

        with open(os.path.join(TMP, "bad_rules.pbtxt"), "w") as f:
            f.write('rule { modality: "flair" all: "seq" }\nrule { modality: "pd" all: "x" }\n')
        r, _ = self.segment(study, "seq_bad", "--series_rules",
                            os.path.join(TMP, "bad_rules.pbtxt"))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("bad_rules.pbtxt: rule 2 (''): modality 'pd' is not flair", r.stderr)

        site = Server(os.path.join(TMP, "server_rules"), "--series_rules", rules,
                      with_metrics=False)
        try:
            out = os.path.join(TMP, "out_seq_site")
            r = run([CLI, "segment", study, "--server", site.address, "--out", out,
                     "--progress=false"], timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            labels, affine = canonical(os.path.join(out, "labels.nii.gz"))
            np.testing.assert_array_equal(labels, self.reference()[0])
        finally:
            site.stop()
        bad = run([SERVER_BIN, "--address", "127.0.0.1:0", "--metrics_address", "",
                   "--bundle", BUNDLE, "--series_rules", os.path.join(TMP, "bad_rules.pbtxt")],
                  timeout=120)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("bad_rules.pbtxt: rule 2", bad.stdout + bad.stderr)

    # -- Bad studies --------------------------------------------------------------------------

    def test_bad_studies_are_invalid_argument_and_the_server_keeps_serving(self):
        # (a) A middle slice of t1 missing.
        study = copy_study("bad_gap")
        os.remove(os.path.join(study, "t1", "IM0016.dcm"))
        message = self.assert_invalid(study, "bad_gap")
        self.assertIn("gap in slice positions", message)
        self.assertRegex(message, r"IM001[57]\.dcm")

        # (b) flair described as a second T2: two series look like T2, none like flair.
        study = copy_study("bad_description")
        r = run([tool("dcmodify"), "-nb", "-m", "(0008,103e)=AX T2 second",
                 *instances(study, "flair")], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(header(instances(study, "flair")[0]).SeriesDescription, "AX T2 second")
        self.assertEqual(glob.glob(os.path.join(study, "*", "*.bak")), [])
        message = self.assert_invalid(study, "bad_description")
        self.assertIn("no series for modality 'flair'", message)
        self.assertIn("'AX T2 second'", message)

        # (c) One t1ce instance that says CT.
        study = copy_study("bad_modality")
        path = os.path.join(study, "t1ce", "IM0010.dcm")
        r = run([tool("dcmodify"), "-nb", "-m", "(0008,0060)=CT", path], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(header(path).Modality, "CT")
        message = self.assert_invalid(study, "bad_modality")
        self.assertIn("is not MR", message)
        self.assertIn("IM0010.dcm", message)

        # The server still serves a good request, with the same result.
        self.assertIsNone(self.server.proc.poll(), tail(self.server.log_path))
        self.assert_same_labels(self.assert_segments(STUDY, "after_bad"))


if __name__ == "__main__":
    unittest.main()
