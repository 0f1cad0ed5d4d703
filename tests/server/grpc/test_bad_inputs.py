"""A catalogue of bad inputs against the real danet-server (issue 12): NIfTI files, DICOM
instances and protocol misuse, each sent by a Python grpcio client written from the proto, each
with the one status code and a message fragment the contract gives it; after each, health says
SERVING and a valid request still succeeds at the end. The catalogue must hold at least 40
distinct inputs.

Run by ctest (bad_inputs) with the environment of service_e2e; helpers come from
test_service_e2e.py (the server wrapper, stub generation, phantom cases).
"""
import gzip
import io
import os
import shutil
import struct
import sys
import unittest

import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_service_e2e as e2e  # noqa: E402
from procs import run, tail  # noqa: E402

TMP = os.path.join(e2e.TMP + "_bad_inputs")
MODALITIES = e2e.MODALITIES


def read(path):
    with open(path, "rb") as f:
        return f.read()


def nifti_header(dims=(16, 16, 8), datatype=16, bitpix=32, vox_offset=352.0, magic=b"n+1\0",
                 dim0=3):
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, dim0, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, vox_offset)
    struct.pack_into("<h", h, 252, 1)  # qform_code
    h[344:348] = magic
    return bytes(h) + b"\0" * 4


def nifti(voxels=None, dims=(16, 16, 8), **kw):
    if voxels is None:
        voxels = np.ones(dims, np.float32).tobytes()
    return nifti_header(dims, **kw) + voxels


class BadInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(TMP, ignore_errors=True)
        os.makedirs(TMP)
        cls.s = e2e.stubs()
        root = os.path.join(TMP, "cases")
        run([e2e.PHANTOM, "--out", root, "--cases", "1", "--seed", "91", "--dims", "64,64,16",
             "--dicom", "--style", "classic"], timeout=120, check=True)
        cls.case = os.path.join(root, "phantom_s91_000")
        cls.files = [read(e2e.case_file(cls.case, m)) for m in MODALITIES]
        cls.dicom = {m: [read(os.path.join(cls.case, "dicom", m, f))
                         for f in sorted(os.listdir(os.path.join(cls.case, "dicom", m)))]
                     for m in MODALITIES}
        cls.server = e2e.Server(os.path.join(TMP, "server"), "--max_upload_mb", "64",
                                "--max_voxels", "4000000", "--memory_budget_mb", "64",
                                with_metrics=False)
        cls.channel = cls.s["grpc"].insecure_channel(cls.server.address)
        cls.stub = cls.s["pb_grpc"].SegmentationStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    # -- requests -------------------------------------------------------------------------------

    def header(self, files, kind=None, policy="", names=None, modalities=MODALITIES, **fields):
        pb = self.s["pb"]
        h = pb.Header(request_id="bad", input_kind=pb.INPUT_KIND_NIFTI if kind is None else kind,
                      policy=policy, **fields)
        for i, data in enumerate(files):
            h.files.add(name=names[i] if names else "case_%s.nii.gz" % modalities[i],
                        modality=modalities[i] if i < len(modalities) else "",
                        size=len(data))
        return h

    def chunks(self, files):
        pb = self.s["pb"]
        out = []
        for i, data in enumerate(files):
            for offset in range(0, max(len(data), 1), e2e.CHUNK):
                piece = data[offset:offset + e2e.CHUNK]
                out.append(pb.SegmentRequest(chunk=pb.Chunk(
                    file_index=i, offset=offset, data=piece,
                    last=offset + len(piece) >= len(data))))
        return out

    def nifti_request(self, files, **kw):
        return [self.s["pb"].SegmentRequest(header=self.header(files, **kw))] + self.chunks(files)

    def dicom_request(self, by_modality, **kw):
        pb = self.s["pb"]
        files, modalities = [], []
        for m, instances in by_modality.items():
            files += instances
            modalities += [""] * len(instances)
        h = pb.Header(request_id="bad", input_kind=pb.INPUT_KIND_DICOM, **kw)
        for i, data in enumerate(files):
            h.files.add(name="im%04d.dcm" % i, size=len(data))
        return [pb.SegmentRequest(header=h)] + self.chunks(files)

    def call(self, requests):
        grpc = self.s["grpc"]
        try:
            for _ in self.stub.Segment(iter(requests), timeout=120):
                pass
            return "OK", ""
        except grpc.RpcError as e:
            return e.code().name, e.details()

    def healthy(self):
        health = self.s["health"]
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health.HealthCheckRequest.SerializeToString,
            response_deserializer=health.HealthCheckResponse.FromString)
        return check(health.HealthCheckRequest(service=""), timeout=10).status == \
            health.HealthCheckResponse.SERVING

    # -- the catalogue --------------------------------------------------------------------------

    def dicom_with(self, dataset_fn=None, bytes_fn=None, modality="t2", index=0):
        """The DICOM study with one instance changed: dataset_fn(ds) edits it with pydicom,
        bytes_fn(bytes) returns new bytes."""
        study = {m: list(v) for m, v in self.dicom.items()}
        data = study[modality][index]
        if bytes_fn is not None:
            study[modality][index] = bytes_fn(data)
        else:
            ds = pydicom.dcmread(io.BytesIO(data))
            dataset_fn(ds)
            out = io.BytesIO()
            ds.save_as(out, write_like_original=False)
            study[modality][index] = out.getvalue()
        return study

    def catalogue(self):
        pb = self.s["pb"]
        f = self.files
        gz = lambda raw: gzip.compress(raw, 1)  # noqa: E731

        def replace(i, data):
            files = list(f)
            files[i] = data
            return files

        def with_header_chunks(h, files):
            return [pb.SegmentRequest(header=h)] + self.chunks(files)

        nan = np.ones((16, 16, 8), np.float32)
        nan[3, 3, 3] = np.nan
        c = []
        add = lambda name, req, code, msg: c.append((name, req, code, msg))  # noqa: E731
        INV, RES = "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"

        # Protocol: the stream and the header.
        add("chunk before header", self.chunks(f)[:1], INV, "first message must be a header")
        add("two headers", self.nifti_request(f)[:1] * 2, INV, "second header")
        add("no input kind", with_header_chunks(
            self.header(f, kind=pb.INPUT_KIND_UNSPECIFIED), f), INV, "header.input_kind")
        add("unknown output kind", with_header_chunks(self.header(f, outputs=[99]), f), INV,
            "header.outputs")
        add("SEG output from NIfTI", with_header_chunks(
            self.header(f, outputs=[pb.OUTPUT_KIND_DICOM_SEG]), f), INV, "needs DICOM input")
        add("policy too long", self.nifti_request(f, policy="dynamic" + "x" * 300), INV,
            "header.policy")
        add("unknown policy", self.nifti_request(f, policy="fastest"), INV, "header.policy")
        add("unknown bank model", self.nifti_request(f, policy="static:M9"), INV, "M9")
        add("bad cost bias text", self.nifti_request(f, policy="dynamic@x"), INV, "cost bias")
        add("bad skip threshold", self.nifti_request(f, policy="dynamic+s2"), INV,
            "skip threshold")
        add("cost bias on a static policy", with_header_chunks(
            self.header(f, policy="static:M1", cost_bias=1.0), f), INV, "cost_bias")
        add("skip margin too large", with_header_chunks(self.header(f, skip_margin=33), f), INV,
            "skip_margin")
        add("unknown modality", self.nifti_request(
            f, modalities=("flair", "t1ce", "t1", "pd")), INV, "'pd' is not one of")
        add("repeated modality", self.nifti_request(
            f, modalities=("flair", "t1ce", "t1", "t1")), INV, "repeats")
        add("missing modality", self.nifti_request(f[:3]), INV, "no file for modality 't2'")
        big = self.header(f)
        big.files[0].size = 100 << 20
        add("declared sizes over the upload limit", [pb.SegmentRequest(header=big)], RES,
            "upload limit")
        add("chunk for a file that does not exist", [pb.SegmentRequest(header=self.header(f)),
                                                     pb.SegmentRequest(chunk=pb.Chunk(
                                                         file_index=7, data=b"x", last=True))],
            INV, "out of range")
        add("chunks out of file order", [pb.SegmentRequest(header=self.header(f)),
                                         pb.SegmentRequest(chunk=pb.Chunk(
                                             file_index=1, data=b"x", last=True))],
            INV, "out of order")
        add("chunk at a wrong offset", [pb.SegmentRequest(header=self.header(f)),
                                        pb.SegmentRequest(chunk=pb.Chunk(
                                            file_index=0, offset=5, data=b"x"))],
            INV, "expected 0")
        more = self.header(f)
        more.files[0].size = 10
        add("more bytes than declared", with_header_chunks(more, f), INV, "more than the 10")
        fewer = self.header(f)
        fewer.files[0].size = len(f[0]) + 10
        add("fewer bytes than declared", with_header_chunks(fewer, f), INV, "the header declared")
        add("stream ends early", self.nifti_request(f)[:-1], INV, "ended before")

        # NIfTI files (always the t1 file, files[2], so the message must name it).
        name = "case_t1.nii.gz"
        add("empty file", self.nifti_request(replace(2, b"")), INV, name)
        add("not NIfTI", self.nifti_request(replace(2, b"hello, world" * 50)), INV, name)
        add("truncated gzip", self.nifti_request(replace(2, f[2][:len(f[2]) // 2])), INV, name)
        corrupt = bytearray(f[2])
        corrupt[len(corrupt) // 2] ^= 0x55
        add("corrupt gzip", self.nifti_request(replace(2, bytes(corrupt))), INV, name)
        add("bad magic", self.nifti_request(replace(2, gz(nifti(magic=b"xyz\0")))), INV, name)
        add("two-file NIfTI", self.nifti_request(replace(2, gz(nifti(magic=b"ni1\0")))), INV,
            name)
        add("unsupported datatype", self.nifti_request(replace(2, gz(nifti(datatype=32,
                                                                           bitpix=64)))),
            INV, name)
        add("zero dimension", self.nifti_request(replace(2, gz(nifti(dims=(16, 16, 0),
                                                                     voxels=b"")))),
            INV, name)
        add("dimension over the limit", self.nifti_request(replace(2, gz(nifti_header(
            dims=(2000, 16, 8))))), INV, name)
        add("NaN voxels", self.nifti_request(replace(2, gz(nifti(voxels=nan.tobytes())))), INV,
            name)
        add("vox_offset inside the header", self.nifti_request(replace(2, gz(nifti(
            vox_offset=100.0)))), INV, name)
        add("truncated voxel data", self.nifti_request(replace(2, nifti(
            voxels=b"\0" * 100))), INV, name)
        # Another grid is resampled onto the flair's; this one lies mostly outside it.
        add("t2 covers too little of the flair grid",
            self.nifti_request(replace(3, gz(nifti()))), INV, "case_t2.nii.gz")
        # The server runs with --max_voxels 4000000: gzip data may inflate to 8 bytes per voxel
        # of that plus 64 MiB of extensions.
        add("gzip bomb", self.nifti_request(replace(2, gz(nifti_header(dims=(64, 64, 64)) +
                                                          b"\0" * (128 << 20)))), INV, name)
        add("truncated NIfTI-2 header", self.nifti_request(replace(
            2, struct.pack("<i", 540) + b"\0" * 300)), INV, name)
        # ... and --memory_budget_mb 64: 256 x 256 x 60 is within the volume limits, but its
        # estimate (196 MB of volumes, 67 MB of attention) is not.
        add("volume over the memory budget", self.nifti_request(
            [gz(nifti_header(dims=(256, 256, 60), datatype=4, bitpix=16))] * 4), RES,
            "memory budget")

        # DICOM instances and studies.
        d = self.dicom
        add("DICOM: no instances", self.dicom_request({}), INV, "no DICOM instances")
        add("DICOM: not DICOM", self.dicom_request(dict(d, t2=[b"not dicom" * 40] + d["t2"][1:])),
            INV, "im0048.dcm")
        add("DICOM: declared length past the end", self.dicom_request(self.dicom_with(
            bytes_fn=lambda b: b[:-200])), INV, "im0048.dcm")

        def drop_pixels(ds):
            del ds.PixelData
        add("DICOM: no pixel data", self.dicom_request(self.dicom_with(drop_pixels)), INV,
            "im0048.dcm")

        def three_frames(ds):
            ds.NumberOfFrames = 3
            ds.PixelData = ds.PixelData * 3
        add("DICOM: multi-frame without per-frame groups",
            self.dicom_request(self.dicom_with(three_frames)), INV,
            "PerFrameFunctionalGroupsSequence has no item for frame 1 of 3")
        add("DICOM: a modality missing", self.dicom_request(
            {m: v for m, v in d.items() if m != "t1"}), INV, "no series for modality 't1'")
        add("DICOM: unknown series mapping modality", self.dicom_request(
            d, series_modalities={"1.2.3": "pd"}), INV, "pd")

        def other_orientation(ds):
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        add("DICOM: one instance in another orientation", self.dicom_request(
            self.dicom_with(other_orientation, index=3)), INV, "im0051.dcm': its orientation differs")
        return c

    def test_catalogue(self):
        cases = self.catalogue()
        names = [name for name, _, _, _ in cases]
        self.assertEqual(len(names), len(set(names)), "names repeat")
        self.assertGreaterEqual(len(cases), 40)
        for name, requests, code, fragment in cases:
            with self.subTest(name):
                got, message = self.call(requests)
                self.assertEqual(got, code, "%s: %s" % (name, message))
                self.assertIn(fragment, message, name)
                if os.environ.get("DANET_SHOW_MESSAGES"):
                    print("\n  %-40s %s %s" % (name, got, message[:150]))
                self.assertTrue(self.healthy(), name + ":\n" + tail(self.server.log_path))
        print("\n  %d bad inputs, each with its code; the server SERVING after each" % len(cases))
        got, message = self.call(self.nifti_request(self.files))
        self.assertEqual(got, "OK", message)


if __name__ == "__main__":
    unittest.main()
