#!/usr/bin/python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<target>/): small valid inputs that the
fuzzers mutate. Deterministic; re-run after a format change and commit the result.

  tests/fuzz/make_corpus.py [OUT_DIR]      (default: tests/fuzz/corpus beside this script)
"""
import gzip
import io
import os
import struct
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
import pydicom
import pydicom.encaps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def nifti_bytes(shape, dtype, labels=False, gz=False, seed=0, affine=None):
    rng = np.random.default_rng(seed)
    if labels:
        data = rng.choice([0, 1, 2, 4], size=shape).astype(dtype)
    else:
        data = (rng.random(shape) * 1000).astype(dtype)
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def dicom_bytes(z, rows=8, cols=8, series_uid="1.2.826.0.1.3680043.2.1", desc="FLAIR",
                transfer=ExplicitVRLittleEndian):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = f"{series_uid}.{z + 1}"
    meta.TransferSyntaxUID = transfer
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.9"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.8"
    ds.SeriesDescription = desc
    ds.PatientName = "Fuzz^Seed"
    ds.PatientID = "FUZZ"
    ds.InstanceNumber = z + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) * (z + 1)).tobytes()
    out = io.BytesIO()
    ds.is_little_endian = True
    ds.is_implicit_VR = transfer == ImplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(out, ds, write_like_original=False)
    return out.getvalue()


def enhanced_bytes(frames=3, rows=8, cols=8):
    """One Enhanced MR instance of `frames` frames: shared orientation and pixel measures,
    per-frame position, stack and rescale."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(0, rows, cols)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleSlope", "RescaleIntercept", "InstanceNumber"):
        delattr(ds, keyword)
    ds.NumberOfFrames = frames
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    measures.PixelSpacing = [1.0, 1.0]
    shared.PlaneOrientationSequence = pydicom.Sequence([orientation])
    shared.PixelMeasuresSequence = pydicom.Sequence([measures])
    ds.SharedFunctionalGroupsSequence = pydicom.Sequence([shared])
    per_frame = []
    for z in range(frames):
        item, position, content, transform = Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, float(frames - 1 - z)]
        content.StackID = "1"
        transform.RescaleSlope, transform.RescaleIntercept = 1 + z, 0
        item.PlanePositionSequence = pydicom.Sequence([position])
        item.FrameContentSequence = pydicom.Sequence([content])
        item.PixelValueTransformationSequence = pydicom.Sequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(per_frame)
    ds.PixelData = np.arange(rows * cols * frames, dtype=np.uint16).tobytes()
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, write_like_original=False)
    return out.getvalue()


def jpeg2000_bytes(rows=8, cols=8):
    """One instance whose pixels are a lossless J2K codestream made by opj_compress."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(0, rows, cols)))
    with tempfile.TemporaryDirectory() as tmp:
        raw, j2k = os.path.join(tmp, "in.rawl"), os.path.join(tmp, "out.j2k")
        np.arange(rows * cols, dtype="<u2").tofile(raw)
        subprocess.run(["opj_compress", "-i", raw, "-o", j2k, "-F", "%d,%d,1,16,u" % (cols, rows),
                        "-n", "2"], check=True, capture_output=True)
        with open(j2k, "rb") as f:
            codestream = f.read()
    ds.PixelData = pydicom.encaps.encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, write_like_original=False)
    return out.getvalue()


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def upload_records(files, kind=1, policy=b""):
    """SegmentRequest records: a Header (kind 1 = NIfTI, 2 = DICOM), then one chunk per file."""
    header = field(2, 0, varint(kind))
    for name, modality, data in files:
        f = field(1, 2, name) + field(2, 2, modality) + field(3, 0, varint(len(data)))
        header += field(3, 2, f)
    if policy:
        header += field(4, 2, policy)
    records = [field(1, 2, header)]
    for i, (_, _, data) in enumerate(files):
        chunk = field(1, 0, varint(i)) + field(3, 2, data) + field(4, 0, varint(1))
        records.append(field(2, 2, chunk))
    return b"".join(struct.pack("<H", len(r)) + r for r in records)


def deflated_bytes(data):
    """The instance again in Deflated Explicit VR Little Endian, written by DCMTK's dcmconv."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
        with open(src, "wb") as f:
            f.write(data)
        subprocess.run(["dcmconv", "+td", src, dst], check=True)
        with open(dst, "rb") as f:
            return f.read()


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    # Seeds are written over, not the folder cleared: the crashing inputs that fuzzing found are
    # committed beside them as seeds (docs/reliability.md) and must stay.
    write(out, "nifti", "float32.nii", nifti_bytes((8, 8, 4), np.float32))
    write(out, "nifti", "int16.nii.gz", nifti_bytes((8, 6, 3), np.int16, gz=True, seed=1))
    write(out, "nifti", "labels_uint8.nii", nifti_bytes((8, 8, 2), np.uint8, labels=True))
    write(out, "nifti", "labels.nii.gz", nifti_bytes((4, 4, 4), np.uint8, labels=True, gz=True))
    sep = b"\xff\xfe\xfd\xfc"
    write(out, "dicom", "one_explicit.dcm", dicom_bytes(0))
    write(out, "dicom", "one_implicit.dcm", dicom_bytes(0, transfer=ImplicitVRLittleEndian))
    write(out, "dicom", "series3.bin", sep.join(dicom_bytes(z) for z in range(3)))
    write(out, "dicom", "two_series.bin",
          dicom_bytes(0) + sep + dicom_bytes(0, series_uid="1.2.826.0.1.3680043.2.2", desc="T2"))
    write(out, "dicom", "enhanced3.dcm", enhanced_bytes())
    write(out, "dicom", "jpeg2000.dcm", jpeg2000_bytes())
    write(out, "dicom", "one_deflated.dcm", deflated_bytes(dicom_bytes(0)))
    with open(os.path.join(REPO, "models", "bundles", "phantom-compact", "bundle.pbtxt"), "rb") as f:
        write(out, "bundle_config", "phantom-compact.pbtxt", f.read())
    write(out, "bundle_config", "minimal.pbtxt",
          b'name: "x"\nmodels { id: "M1" unet { base_width: 12 } weights: "M1.pt" }\n')
    modalities = [b"flair", b"t1ce", b"t1", b"t2"]
    files = [(m + b".nii", m, nifti_bytes((8, 8, 2), np.float32, seed=i))
             for i, m in enumerate(modalities)]
    write(out, "upload", "nifti4.bin", upload_records(files))
    gz = [(m + b".nii.gz", m, nifti_bytes((8, 8, 2), np.int16, gz=True, seed=i))
          for i, m in enumerate(modalities)]
    write(out, "upload", "nifti4_gz_static.bin", upload_records(gz, policy=b"static:M1"))
    # T1 on another grid (1.5 mm, shifted half a voxel): the resampling path. upload_fuzz
    # reached it only by mutation, and found a NaN sform there (docs/reliability.md).
    grids = list(files)
    grids[2] = (b"t1.nii", b"t1", nifti_bytes((6, 6, 2), np.float32, seed=2,
                                            affine=np.array([[1.5, 0, 0, 0.25], [0, 1.5, 0, 0.25],
                                                             [0, 0, 1, 0], [0, 0, 0, 1.0]])))
    write(out, "upload", "nifti4_grids.bin", upload_records(grids))
    dcm = [(b"%d.dcm" % z, b"", dicom_bytes(z)) for z in range(2)]
    write(out, "upload", "dicom2.bin", upload_records(dcm, kind=2))


if __name__ == "__main__":
    main()
