"""The synthetic cohort's hand-packed DICOM series writer vs writing with plain pydicom.

``lumbarjax.synthetic.dicom_writer.SeriesWriter`` encodes a series' shared elements once with
pydicom and packs each instance's varying elements (SOP instance UID, position, window, pixels)
with ``struct``. This study asks whether that is measurably faster than pydicom where the demo
spends its time, on the demo's own series:

1. it writes a small demo-sized cohort (``make_cohort``, demo image sizes, ``--patients``
   patients) and records every series the cohort writes (the shared dataset and each instance's
   elements), and the time the cohort spends inside the writer vs in total;
2. it rewrites those series ``--repeats`` times each way, alternating the order:
   ``hand``: ``SeriesWriter(static).write(...)`` per instance, as the cohort does;
   ``pydicom``: per series one Dataset (the same shared elements), per instance the varying
   elements set as data elements, the file meta set, ``Dataset.save_as(enforce_file_format=True)``;
3. it reads every file of both ways with pydicom and checks the same pixel arrays and the same
   element values (file meta included), and counts byte-identical files.

    PYTHONPATH=$PWD python benchmarks/studies/dicom_writer/dicom_writer.py \\
        --out benchmarks/studies/dicom_writer/dicom_writer.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian

from lumbarjax.synthetic import cohort as cohort_module
from lumbarjax.synthetic import dicom_writer, studies

DEMO_XRAY, DEMO_MRI = (384, 320), (176, 176)


def record_demo_series(n_patients: int, root: str) -> tuple[list, dict]:
    """Write a demo-sized cohort; return its series ``[(static Dataset, [(name, sop_uid,
    dynamic elements)])]`` and timings (s): the whole cohort, and inside the writer."""
    series, clock = [], {"writer_s": 0.0}

    class Recording(dicom_writer.SeriesWriter):
        def __init__(self, static):
            t = time.perf_counter()
            super().__init__(static)
            clock["writer_s"] += time.perf_counter() - t
            self.instances = []
            series.append((copy.deepcopy(static), self.instances))

        def write(self, path, sop_uid, dynamic):
            t = time.perf_counter()
            super().write(path, sop_uid, dynamic)
            clock["writer_s"] += time.perf_counter() - t
            self.instances.append((os.path.basename(path), sop_uid, dict(dynamic)))

    real = studies.SeriesWriter
    studies.SeriesWriter = Recording
    try:
        t0 = time.perf_counter()
        cohort_module.make_cohort(root, n_patients, 0, xray_size=DEMO_XRAY, mri_size=DEMO_MRI,
                                  edge_cases=False, n_mc=2000, overwrite=True)
        clock["cohort_s"] = time.perf_counter() - t0
    finally:
        studies.SeriesWriter = real
    return series, clock


def decoded(dynamic: dict[int, bytes]) -> list[DataElement]:
    """The instance's hand-packed elements as pydicom data elements (values decoded)."""
    ds = read_dataset(BytesIO(b"".join(dynamic[t] for t in sorted(dynamic))), False, True)
    return [DataElement(el.tag, el.VR, el.value) for el in (ds[t] for t in sorted(dynamic))]


def write_hand(series, out: str) -> int:
    n = 0
    for k, (static, instances) in enumerate(series):
        d = os.path.join(out, f"S{k:03d}")
        os.makedirs(d, exist_ok=True)
        writer = dicom_writer.SeriesWriter(static)
        for name, sop_uid, dynamic in instances:
            writer.write(os.path.join(d, name), sop_uid, dynamic)
            n += 1
    return n


def write_pydicom(series, elements, out: str) -> int:
    """Plain pydicom: one Dataset per series, per instance its elements set, then save_as."""
    n = 0
    for k, (static, instances) in enumerate(series):
        d = os.path.join(out, f"S{k:03d}")
        os.makedirs(d, exist_ok=True)
        ds = copy.deepcopy(static)
        for (name, sop_uid, _), elems in zip(instances, elements[k]):
            ds.SOPInstanceUID = sop_uid
            for el in elems:
                ds[el.tag] = el
            meta = FileMetaDataset()
            meta.FileMetaInformationVersion = b"\x00\x01"
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "LUMBARJAX_SYN"
            ds.file_meta = meta
            ds.save_as(os.path.join(d, name), enforce_file_format=True)
            n += 1
    return n


def compare(a_root: str, b_root: str) -> dict:
    """Read every file of both trees with pydicom: same pixels, same element values?"""
    out = {"files": 0, "same_pixels": 0, "same_elements": 0, "same_file_meta": 0, "same_bytes": 0}
    for d, _, fs in os.walk(a_root):
        for f in fs:
            pa = os.path.join(d, f)
            pb = os.path.join(b_root, os.path.relpath(pa, a_root))
            a, b = pydicom.dcmread(pa), pydicom.dcmread(pb)
            out["files"] += 1
            out["same_pixels"] += int(a.pixel_array.dtype == b.pixel_array.dtype
                                      and np.array_equal(a.pixel_array, b.pixel_array))
            ea = [(el.tag, el.VR, el.value) for el in a]
            eb = [(el.tag, el.VR, el.value) for el in b]
            out["same_elements"] += int(ea == eb)
            ma = [(el.tag, el.VR, el.value) for el in a.file_meta]
            mb = [(el.tag, el.VR, el.value) for el in b.file_meta]
            out["same_file_meta"] += int(ma == mb)
            with open(pa, "rb") as fa, open(pb, "rb") as fb:
                out["same_bytes"] += int(fa.read() == fb.read())
    return out


def host() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "pydicom": pydicom.__version__,
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON file for the result")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dicom_writer_")
    try:
        series, clock = record_demo_series(args.patients, os.path.join(tmp, "cohort"))
        n_files = sum(len(inst) for _, inst in series)
        elements = [[decoded(dyn) for _, _, dyn in inst] for _, inst in series]
        times = {"hand": [], "pydicom": []}
        for r in range(args.repeats):
            order = ("hand", "pydicom") if r % 2 == 0 else ("pydicom", "hand")
            for way in order:
                d = os.path.join(tmp, f"{way}{r}")
                t = time.perf_counter()
                n = write_hand(series, d) if way == "hand" else write_pydicom(series, elements, d)
                times[way].append(time.perf_counter() - t)
                assert n == n_files
                if r > 0:
                    shutil.rmtree(d)
        check = compare(os.path.join(tmp, "hand0"), os.path.join(tmp, "pydicom0"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "patients": args.patients, "series": len(series), "files": n_files, "repeats": args.repeats,
        "xray_size": DEMO_XRAY, "mri_size": DEMO_MRI,
        "cohort_s": round(clock["cohort_s"], 3), "cohort_writer_s": round(clock["writer_s"], 3),
        "writer_share_of_cohort": round(clock["writer_s"] / clock["cohort_s"], 4),
        "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ms_per_file": {k: round(1000 * v / n_files, 3) for k, v in med.items()},
        "pydicom_over_hand": round(med["pydicom"] / med["hand"], 2),
        "check": check, "host": host(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
