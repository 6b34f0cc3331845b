"""The public sets at their real size (issue 32): index, preprocess and pretrain-step costs.

    python benchmarks/public_real_size.py --scratch /tmp/lj_public_real \
        --out benchmarks/results/2026-12-07-public-real-size.json

Synthetic stand-ins written at the published sizes and counts, study by study (each generator
worker writes one study and returns only its table rows; no volume list is held), into
``--scratch`` (deleted at the end unless ``--keep``; never commit it):

RSNA 2024   ``--rsna-studies`` (1,975) studies in the Kaggle layout (``rsna2024`` reads it):
            sagittal T2/STIR and T1 15-20 slices, axial T2 30-60 slices, every series its own
            size (384-640 px square) and spacing (field of view / size: 0.39-0.86 mm), 25 label
            columns, ~25 coordinate rows per study. **Index folder**: the full count with the pixel
            data RLE Lossless-encoded from a piecewise-constant phantom (valid DICOM, ~10 kB per
            slice; indexing reads headers only, ``stop_before_pixels``). **Preprocessing
            subset**: the first ``--rsna-preprocess`` (40) studies of the same plan written
            again uncompressed (Explicit VR Little Endian) with smooth content plus noise.
SPIDER      ``--spider-patients`` (218) patients, t1 + t2 for each and t2_SPACE for
            ``--spider-space`` (11) of them = 447 sagittal .mha volumes (int16, uncompressed; t1/t2
            12-22 slices of 384-640 px at 0.39-0.86 mm, slices 3.3-4.5 mm; SPACE 80-120 slices at
            0.9 mm, 384-512 px at 0.5-0.7 mm), a zlib-compressed label mask for each (7 vertebrae,
            7 discs, canal), overview.csv and radiological_gradings.csv. Indexing
            (``read_spider``) decodes every mask (the disc centres), so it is measured on the full
            count; preprocessing on the first ``--spider-preprocess`` (60) patients' T2.
VinDr       ``--vindr-films`` (10,000) films in the PhysioNet layout (``annotations/train.csv``,
            ``train_images/<id>.dicom``), 2048-3072 x 1536-2560 px (3-8 MP), spacing 0.10-0.20 mm,
            one reader, 0-4 boxes; index folder RLE-encoded as for RSNA; preprocessing subset
            ``--vindr-preprocess`` (100) films uncompressed with smooth content plus noise.

Measured, each in a fresh subprocess (peak RSS = VmHWM of /proc/<pid>/status, for the process and
the largest of its worker processes, sampled every 0.1 s; ``getrusage`` would count the parent's
RSS for a spawned child):

* indexing at ``--fractions`` (10 %, 50 %, 100 %) of the count: views of the full folder whose
  tables list the first n studies and whose image folders link to theirs (symlinks), read with
  the library's reader (``read_rsna2024(workers=--workers)``, ``read_spider``, ``read_split``);
* preprocessing (``preprocess_cohort`` at the config's grid, ``configs/outcome.py`` = the
  README's RSNA / SPIDER / VinDr commands: MRI 16x128x128 at 4x2x2 mm, X-ray 256x256): serial
  (``num_workers=0``, everything in one process) at the same fractions of the subset, to show
  the memory is flat, and with ``--workers`` processes on the whole subset for the time per study;
* resumption (RSNA subset): a run with ``--workers`` processes SIGKILLed once half the subset
  is cached, its workers checked gone, relaunched on the same cache: decodes only the rest,
  and the arrays equal the uninterrupted serial run's;
* the pretraining step at the config's input (``pretrain`` of configs/outcome.py: slice2d width
  32, batch 16, 16x128x128, 3 grades for RSNA, 5 Pfirrmann grades for SPIDER; configs/demo.py's
  lesion2d at 8x96x64 beside it; ``xray_pretrain``: the grader's ResNet2D at 256x256, 4 findings):
  compile, median train step, loader time per batch from the cache, predict step per batch.

The projection of a full pretraining run = index (100 %) + preprocessing (per study with
``--workers`` x count) + compile + num_steps x (train step + loader) + evaluations (every
``eval_every`` steps a predict pass over the 20 % validation split). Not included: the level
localiser that ``pretrain.levels.localise`` (default on) trains after the encoder, checkpoint
writes, and the page cache (the files were just written: they are read from memory, not disk).
No GPU figure is projected: no CPU/GPU step ratio has been measured in this project.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RSNA_SIZES = (384, 448, 512, 576, 640)
VINDR_SIZES = ((2048, 1536), (2304, 1792), (2560, 2048), (2816, 2304), (3072, 2560), (2560, 2560))
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"
SAG = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))   # rows run anterior->posterior, columns superior->inferior
AX = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
RESULT = "RESULT "


# --------------------------------------------------------------------------- memory


def vm_hwm_mb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set) of a process in MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return out


class WorkerPeak:
    """Largest VmHWM of this process's children (the pool workers), sampled every 0.1 s."""

    def __init__(self):
        self.peak_mb, self.seen = 0.0, set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def _run(self):
        me = os.getpid()
        while not self._stop.wait(0.1):
            for c in children_of(me):
                self.seen.add(c)
                self.peak_mb = max(self.peak_mb, vm_hwm_mb(c))


# --------------------------------------------------------------------------- pixel content


def _phantom(rows: int, cols: int) -> np.ndarray:
    """Piecewise-constant uint16 image (few runs per row: RLE encodes it in ~20 bytes a row)."""
    a = np.full((rows, cols), 40, np.uint16)
    for k in range(8):
        a[k * rows // 9 + rows // 36: (k + 1) * rows // 9, int(0.3 * cols): int(0.55 * cols)] = 600 + 40 * k
    a[:, int(0.6 * cols): int(0.66 * cols)] = 1500
    return a


_RLE: dict = {}


def rle_pixels(rows: int, cols: int, bits_stored: int = 12) -> bytes:
    """The RLE Lossless encapsulated pixel data of :func:`_phantom` (encoded once per size)."""
    key = (rows, cols, bits_stored)
    if key not in _RLE:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, RLELossless

        arr = _phantom(rows, cols)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.PixelData = arr.tobytes()
        ds.compress(RLELossless, arr, encoding_plugin="pydicom")
        _RLE[key] = ds.PixelData
    return _RLE[key]


def smooth_noisy(rng, rows: int, cols: int, depth: int | None = None, dtype=np.uint16) -> np.ndarray:
    """Smooth content (a bilinearly upsampled 9x9 random field plus a bright band) with noise:
    (rows, cols) or (depth, rows, cols), values in 12 bits."""
    from scipy import ndimage

    base = ndimage.zoom(rng.uniform(200, 1200, (9, 9)), (rows / 9, cols / 9), order=1)[:rows, :cols]
    base[:, int(0.6 * cols): int(0.66 * cols)] += 1500
    if depth is None:
        return np.clip(base + rng.normal(0, 30, (rows, cols)), 0, 4095).astype(dtype)
    out = np.empty((depth, rows, cols), dtype)
    for d in range(depth):
        out[d] = np.clip(base * (0.8 + 0.4 * np.sin(d / 3.0) ** 2) + rng.normal(0, 30, (rows, cols)), 0, 4095)
    return out


def _pixel_element(ds, pixels, rows, cols, rle: bool, bits: int = 12) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if rle:
        ds.PixelData = rle_pixels(rows, cols, bits)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = np.ascontiguousarray(pixels, np.uint16).tobytes()
        ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = RLELossless if rle else ExplicitVRLittleEndian


# --------------------------------------------------------------------------- RSNA 2024


RSNA_SERIES = (("Sagittal T2/STIR", SAG, (15, 20), (250.0, 330.0), (3.3, 4.5)),
               ("Sagittal T1", SAG, (15, 20), (250.0, 330.0), (3.3, 4.5)),
               ("Axial T2", AX, (30, 60), (160.0, 220.0), (3.5, 4.5)))


def rsna_plan(seed: int, i: int) -> dict:
    """Study i's ids, series sizes, spacings, labels: a function of (seed, i) only."""
    rng = np.random.default_rng([seed, 11, i])
    sid = 4_000_000 + 7 * i
    series = []
    for j, (desc, iop, (lo, hi), fov, thick) in enumerate(RSNA_SERIES):
        size = int(rng.choice(RSNA_SIZES))
        series.append({"series_id": 100_000_000 + 3 * i + j, "desc": desc, "iop": iop,
                       "n": int(rng.integers(lo, hi + 1)), "size": size,
                       "spacing": float(np.clip(rng.uniform(*fov) / size, 0.3, 0.9)),
                       "step": float(rng.uniform(*thick))})
    grades = rng.choice([0, 1, 2], size=25, p=[0.7, 0.2, 0.1]).astype(float)
    grades[rng.random(25) < 0.02] = np.nan
    return {"study_id": sid, "series": series, "grades": grades}


def _write_rsna_study(job) -> tuple[dict, list, list, int]:
    """Write one study (all three series) and return its table rows and file count."""
    from pydicom.dataset import Dataset, FileMetaDataset

    from lumbarjax.synthetic import rsna_layout
    from lumbarjax.schema import LEVELS

    root, seed, i, rle = job
    plan = rsna_plan(seed, i)
    sid = plan["study_id"]
    rng = np.random.default_rng([seed, 12, i])
    coords, series_rows, n_files = [], [], 0
    for j, s in enumerate(plan["series"]):
        row, col = (np.asarray(v) for v in s["iop"])
        normal = np.cross(row, col)
        size, n = s["size"], s["n"]
        folder = os.path.join(root, "train_images", str(sid), str(s["series_id"]))
        os.makedirs(folder, exist_ok=True)
        vol = None if rle else smooth_noisy(rng, size, size, n)
        origin = np.array([-0.5 * n * s["step"], -0.5 * size * s["spacing"], 0.5 * size * s["spacing"]])
        if j == 2:
            origin = np.array([-0.5 * size * s["spacing"], -0.5 * size * s["spacing"], -0.5 * n * s["step"]])
        for d in range(n):
            src = Dataset()
            src.file_meta = FileMetaDataset()
            src.SOPClassUID, src.Modality = MR_SOP, "MR"
            src.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            src.SliceThickness = round(s["step"] - 0.3, 3)
            src.SpacingBetweenSlices = round(s["step"], 3)
            src.RepetitionTime, src.EchoTime, src.MagneticFieldStrength = 3000.0, 100.0, 1.5
            src.PatientPosition, src.SeriesNumber = "HFS", j + 1
            ipp = origin + d * s["step"] * normal
            src.ImagePositionPatient = [round(float(v), 4) for v in ipp]
            src.ImageOrientationPatient = [float(v) for v in (*row, *col)]
            src.SliceLocation = round(float(ipp @ normal), 4)
            src.PixelSpacing = [round(s["spacing"], 6)] * 2
            src.PhotometricInterpretation = "MONOCHROME2"
            src.WindowCenter, src.WindowWidth = 800, 1600
            _pixel_element(src, None if vol is None else vol[d], size, size, rle)
            ds = rsna_layout.rsna_dataset(src, sid, s["series_id"], d + 1)
            ds.file_meta.TransferSyntaxUID = src.file_meta.TransferSyntaxUID
            ds.save_as(os.path.join(folder, f"{d + 1}.dcm"), enforce_file_format=True)
            n_files += 1
        series_rows.append({"study_id": sid, "series_id": s["series_id"], "series_description": s["desc"]})
        conds = {0: ("spinal_canal_stenosis",), 1: ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
                 2: ("left_subarticular_stenosis", "right_subarticular_stenosis")}[j]
        for c in conds:
            for k, lv in enumerate(LEVELS):
                inst = n // 2 + 1 if j < 2 else 1 + (k * n) // 5
                coords.append({"study_id": sid, "series_id": s["series_id"], "instance_number": inst,
                               "condition": c, "level": lv, "x": round(0.45 * size + 3 * k, 2),
                               "y": round(0.25 * size + 0.1 * size * k, 2)})
    g = {"study_id": sid}
    for m, c in enumerate(rsna_layout.CONDITIONS):
        for k, lv in enumerate(LEVELS):
            v = plan["grades"][5 * m + k]
            g[f"{c}_{lv}"] = None if np.isnan(v) else int(v)
    return g, coords, series_rows, n_files


def _written_before(marker: str, info: dict) -> dict | None:
    """The summary a finished earlier write of the same stand-in left in ``marker``; else None
    (and the folder is cleared for a fresh write)."""
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done.get("info") == info:
            return done
    shutil.rmtree(os.path.dirname(marker), ignore_errors=True)
    return None


def generate_rsna(root: str, n: int, seed: int, rle: bool, workers: int) -> dict:
    from lumbarjax.synthetic import rsna_layout

    info = {"set": "rsna", "n": n, "seed": seed, "rle": rle}
    marker = os.path.join(root, ".bench.json")
    if (done := _written_before(marker, info)) is not None:
        return done
    os.makedirs(root)
    t0 = time.perf_counter()
    grades, coords, series, files, per_study = [], [], [], 0, []
    for g, c, s, k in _imap(_write_rsna_study, [(root, seed, i, rle) for i in range(n)], workers):
        grades.append(g)
        coords.extend(c)
        series.extend(s)
        files += k
        per_study.append(k)
    rsna_layout.write_tables(root, grades, coords, series)
    out = {"info": info, "seconds": round(time.perf_counter() - t0, 1), "files": files,
           "files_per_study_cum": np.cumsum(per_study).tolist(), "disk_mb": round(du_mb(root), 1)}
    json.dump(out, open(marker, "w"))
    return out


def rsna_view(root: str, view: str, n: int) -> str:
    """A folder whose tables list the first n studies of ``root`` and whose train_images/<study>
    link to root's."""
    import pandas as pd

    from lumbarjax.data.public import rsna2024

    shutil.rmtree(view, ignore_errors=True)
    os.makedirs(os.path.join(view, "train_images"))
    train = pd.read_csv(os.path.join(root, rsna2024.TRAIN_CSV), dtype=str, keep_default_na=False)
    keep = set(train["study_id"].head(n))
    train.head(n).to_csv(os.path.join(view, rsna2024.TRAIN_CSV), index=False)
    for name in (rsna2024.COORDINATES_CSV, rsna2024.SERIES_CSV):
        t = pd.read_csv(os.path.join(root, name), dtype=str, keep_default_na=False)
        t[t["study_id"].isin(keep)].to_csv(os.path.join(view, name), index=False)
    for sid in keep:
        os.symlink(os.path.join(root, "train_images", sid), os.path.join(view, "train_images", sid))
    return view


# --------------------------------------------------------------------------- SPIDER


def spider_plan(seed: int, p: int, n_space: int) -> list[dict]:
    rng = np.random.default_rng([seed, 21, p])
    scans = []
    for scan in ("t1", "t2") + (("t2_SPACE",) if p <= n_space else ()):
        if scan == "t2_SPACE":
            size = int(rng.choice((384, 448, 512)))
            scans.append({"scan": scan, "nx": int(rng.integers(80, 121)), "ny": size, "nz": size,
                          "sx": 0.9, "syz": float(rng.uniform(0.5, 0.7))})
        else:
            size = int(rng.choice(RSNA_SIZES))
            scans.append({"scan": scan, "nx": int(rng.integers(12, 23)), "ny": size, "nz": size,
                          "sx": float(rng.uniform(3.3, 4.5)),
                          "syz": float(np.clip(rng.uniform(250, 330) / size, 0.3, 0.9))})
    return scans


def _write_spider_patient(job) -> tuple[list, list]:
    import SimpleITK as sitk

    root, seed, p, n_space = job
    rng = np.random.default_rng([seed, 22, p])
    overview = []
    for s in spider_plan(seed, p, n_space):
        nx, ny, nz, sx, syz = s["nx"], s["ny"], s["nz"], s["sx"], s["syz"]
        mask = np.zeros((nz, ny, nx), np.uint8)            # SimpleITK (k, j, i) = (z up, y, x)
        x0, x1 = nx // 4, nx - nx // 4
        unit, base = 33.0 / syz, 20.0 / syz
        for v in range(1, 8):
            k0 = int(base + (v - 1) * unit)
            mask[k0 + int(8 / syz): min(k0 + int(unit), nz), int(0.35 * ny): int(0.6 * ny), x0:x1] = v
            mask[k0: k0 + int(8 / syz), int(0.35 * ny): int(0.6 * ny), x0:x1] = 200 + v
        mask[:, int(0.63 * ny): int(0.7 * ny), x0:x1] = 100
        image = np.empty((nz, ny, nx), np.int16)
        plane = smooth_noisy(rng, nz, ny, dtype=np.int16)
        for x in range(nx):
            image[:, :, x] = plane + rng.normal(0, 30, (nz, ny)).astype(np.int16) + 300 * (mask[:, :, x] > 0)
        for arr, folder, compress in ((image, "images", False), (mask, "masks", True)):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((sx, syz, syz))
            img.SetOrigin((-0.5 * nx * sx, -0.5 * ny * syz, -0.5 * nz * syz))
            sitk.WriteImage(img, os.path.join(root, folder, f"{p}_{s['scan']}.mha"), compress)
        overview.append({"new_file_name": f"{p}_{s['scan']}", "subset": "training", "Sex": "F",
                         "Age": int(rng.integers(20, 90)), "Manufacturer": "SIEMENS"})
    gradings = [{"Patient": p, "IVD label": n, "Modic": int(rng.integers(0, 4)), "UP endplate": int(rng.integers(0, 2)),
                 "LOW endplate": int(rng.integers(0, 2)), "Spondylolisthesis": int(rng.random() < 0.1),
                 "Disc herniation": int(rng.random() < 0.2), "Disc narrowing": int(rng.random() < 0.3),
                 "Disc bulging": int(rng.random() < 0.3), "Pfirrman grade": int(rng.integers(1, 6))}
                for n in range(1, 8)]
    return overview, gradings


def generate_spider(root: str, n: int, n_space: int, seed: int, workers: int) -> dict:
    import pandas as pd

    from lumbarjax.data.public import spider

    info = {"set": "spider", "n": n, "n_space": n_space, "seed": seed}
    marker = os.path.join(root, ".bench.json")
    if (done := _written_before(marker, info)) is not None:
        return done
    for d in ("images", "masks"):
        os.makedirs(os.path.join(root, d))
    t0 = time.perf_counter()
    overview, gradings = [], []
    for o, g in _imap(_write_spider_patient, [(root, seed, p, n_space) for p in range(1, n + 1)], workers):
        overview.extend(o)
        gradings.extend(g)
    pd.DataFrame(overview).to_csv(os.path.join(root, spider.OVERVIEW_CSV), index=False)
    pd.DataFrame(gradings, columns=spider.GRADING_COLUMNS).to_csv(os.path.join(root, spider.GRADINGS_CSV), index=False)
    out = {"info": info, "seconds": round(time.perf_counter() - t0, 1), "files": 2 * len(overview),
           "volumes": len(overview), "disk_mb": round(du_mb(root), 1)}
    json.dump(out, open(marker, "w"))
    return out


def spider_view(root: str, view: str, n: int) -> str:
    import pandas as pd

    from lumbarjax.data.public import spider

    shutil.rmtree(view, ignore_errors=True)
    for d in ("images", "masks"):
        os.makedirs(os.path.join(view, d))
    keep = {str(p) for p in range(1, n + 1)}
    ov = pd.read_csv(os.path.join(root, spider.OVERVIEW_CSV), dtype=str, keep_default_na=False)
    ov[ov["new_file_name"].str.split("_").str[0].isin(keep)].to_csv(os.path.join(view, spider.OVERVIEW_CSV), index=False)
    gr = pd.read_csv(os.path.join(root, spider.GRADINGS_CSV), dtype=str, keep_default_na=False)
    gr[gr["Patient"].isin(keep)].to_csv(os.path.join(view, spider.GRADINGS_CSV), index=False)
    for d in ("images", "masks"):
        for name in os.listdir(os.path.join(root, d)):
            if name.split("_")[0] in keep:
                os.symlink(os.path.join(root, d, name), os.path.join(view, d, name))
    return view


# --------------------------------------------------------------------------- VinDr-SpineXR


def vindr_plan(seed: int, i: int) -> dict:
    rng = np.random.default_rng([seed, 31, i])
    rows, cols = VINDR_SIZES[int(rng.integers(len(VINDR_SIZES)))]
    return {"image_id": hashlib.md5(f"vindr-bench-{seed}-{i}".encode()).hexdigest(), "rows": rows, "cols": cols,
            "spacing": round(float(rng.uniform(0.10, 0.20)), 4), "bits": int(rng.choice((12, 14))),
            "monochrome1": bool(rng.random() < 0.2), "n_boxes": int(rng.integers(0, 5))}


def _write_vindr_film(job) -> list[dict]:
    from pydicom.dataset import Dataset, FileMetaDataset

    from lumbarjax.synthetic import vindr_layout
    from lumbarjax.data.public import vindr_spinexr

    root, seed, i, rle = job
    p = vindr_plan(seed, i)
    rng = np.random.default_rng([seed, 32, i])
    src = Dataset()
    src.file_meta = FileMetaDataset()
    src.SOPClassUID, src.Modality, src.ViewPosition = DX_SOP, "DX", "LL"
    src.PhotometricInterpretation = "MONOCHROME1" if p["monochrome1"] else "MONOCHROME2"
    src.PixelSpacing = [p["spacing"], p["spacing"]]
    src.WindowCenter, src.WindowWidth = 2 ** (p["bits"] - 1), 2 ** p["bits"]
    pixels = None if rle else smooth_noisy(rng, p["rows"], p["cols"])
    _pixel_element(src, pixels, p["rows"], p["cols"], rle, p["bits"])
    ds = vindr_layout.vindr_dataset(src, p["image_id"])
    ds.file_meta.TransferSyntaxUID = src.file_meta.TransferSyntaxUID
    ds.save_as(os.path.join(root, "train_images", f"{p['image_id']}.dicom"), enforce_file_format=True)
    rows = []
    for _ in range(p["n_boxes"]):
        x0, y0 = rng.uniform(0, 0.8 * p["cols"]), rng.uniform(0, 0.8 * p["rows"])
        rows.append({"image_id": p["image_id"], "lesion_type": str(rng.choice(vindr_spinexr.DEGENERATIVE_TYPES)),
                     "xmin": round(x0, 1), "ymin": round(y0, 1), "xmax": round(x0 + rng.uniform(50, 300), 1),
                     "ymax": round(y0 + rng.uniform(50, 300), 1), "rad_id": "R1"})
    if not rows:
        rows.append({"image_id": p["image_id"], "lesion_type": vindr_spinexr.NO_FINDING, "xmin": "", "ymin": "",
                     "xmax": "", "ymax": "", "rad_id": "R1"})
    return rows


def generate_vindr(root: str, n: int, seed: int, rle: bool, workers: int) -> dict:
    info = {"set": "vindr", "n": n, "seed": seed, "rle": rle}
    marker = os.path.join(root, ".bench.json")
    if (done := _written_before(marker, info)) is not None:
        return done
    os.makedirs(os.path.join(root, "train_images"))
    os.makedirs(os.path.join(root, "annotations"))
    t0 = time.perf_counter()
    with open(os.path.join(root, "annotations", "train.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax", "rad_id"])
        w.writeheader()
        for rows in _imap(_write_vindr_film, [(root, seed, i, rle) for i in range(n)], workers):
            w.writerows(rows)
    out = {"info": info, "seconds": round(time.perf_counter() - t0, 1), "files": n, "disk_mb": round(du_mb(root), 1)}
    json.dump(out, open(marker, "w"))
    return out


def vindr_view(root: str, view: str, n: int) -> str:
    import pandas as pd

    shutil.rmtree(view, ignore_errors=True)
    os.makedirs(os.path.join(view, "train_images"))
    os.makedirs(os.path.join(view, "annotations"))
    ann = pd.read_csv(os.path.join(root, "annotations", "train.csv"), dtype=str, keep_default_na=False)
    ids = list(dict.fromkeys(ann["image_id"]))[:n]
    ann[ann["image_id"].isin(set(ids))].to_csv(os.path.join(view, "annotations", "train.csv"), index=False)
    for iid in ids:
        os.symlink(os.path.join(root, "train_images", f"{iid}.dicom"), os.path.join(view, "train_images", f"{iid}.dicom"))
    return view


# --------------------------------------------------------------------------- helpers


def _imap(fn, jobs, workers: int):
    """Stream ``fn`` over ``jobs`` in ``workers`` spawned processes (in order), or in-process."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(fn, jobs, chunksize=4)


def du_mb(path: str) -> float:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total / 2**20


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def child(spec: dict, timeout: float = 3600) -> dict:
    """Run ``spec`` in a fresh interpreter (``--child``); its RESULT line as a dict."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"child {spec['kind']} failed (rc {p.returncode}):\n{p.stderr[-4000:]}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)


# --------------------------------------------------------------------------- child work


def _records(spec: dict):
    """Preprocessing records of the first spec['n'] studies of spec['manifest'] (CSV)."""
    import pandas as pd

    m = pd.read_csv(spec["manifest"], dtype=str, keep_default_na=False).head(spec["n"])
    if spec["set"] == "vindr":
        return pd.DataFrame({"patient_id": m["image_id"], "xray_paths": m["path"], "xray_source": "dicom",
                             "mri_paths": "", "mri_source": ""})
    from lumbarjax.data.index import resolve_paths

    return pd.DataFrame({"patient_id": m["patient_id"], "xray_paths": "", "xray_source": "",
                         "mri_paths": [";".join(os.path.abspath(p) for p in resolve_paths(r, spec["root"]))
                                       for _, r in m.iterrows()],
                         "mri_source": m["source"]})


def run_child(spec: dict) -> dict:
    kind = spec["kind"]
    out = {"kind": kind, "load_start": load()}
    if kind == "index":
        with WorkerPeak() as wp:
            t0 = time.perf_counter()
            if spec["set"] == "rsna":
                from lumbarjax.data.public.rsna2024 import read_rsna2024
                d = read_rsna2024(spec["root"], workers=spec["workers"])
                table, n = d.manifest, int(len(d.manifest))
                out["series"] = int(len(d.series))
            elif spec["set"] == "spider":
                from lumbarjax.data.public.spider import read_spider
                d = read_spider(spec["root"])
                table, n = d.manifest, int(len(d.manifest))
                out.update(series=int(len(d.series)), centres=int(len(d.centres)))
            else:
                from lumbarjax.data.public.vindr_spinexr import read_split
                d = read_split(spec["root"], "train")
                table, n = d.findings, int(len(d.findings))
                out["excluded"] = int(len(d.excluded))
            out["index_s"] = time.perf_counter() - t0
        if spec.get("manifest"):
            table.to_csv(spec["manifest"], index=False)
        out.update(studies=n, peak_rss_main_mb=vm_hwm_mb(), peak_rss_worker_mb=wp.peak_mb,
                   worker_processes=len(wp.seen))
    elif kind == "preprocess":
        import configs.outcome
        from lumbarjax.data.preprocess import preprocess_cohort

        records = _records(spec)
        cfg = configs.outcome.get_config()
        with WorkerPeak() as wp:
            t0 = time.perf_counter()
            table = preprocess_cohort(records, cfg, spec["cache"], num_workers=spec["workers"])
            out["preprocess_s"] = time.perf_counter() - t0
        if spec.get("table"):
            table.to_csv(spec["table"], index=False)
        out.update(studies=int(len(records)), n_decoded=int(table.attrs["n_decoded"]),
                   excluded=int(table["excluded"].sum()), peak_rss_main_mb=vm_hwm_mb(),
                   peak_rss_worker_mb=wp.peak_mb, worker_processes=len(wp.seen))
    elif kind == "step":
        out.update(step_timing(spec))
    out["load_end"] = load()
    return out


def step_timing(spec: dict) -> dict:
    """Compile + median train step, loader time per batch and predict step per batch."""
    import jax
    import ml_collections
    import pandas as pd

    from lumbarjax.data.pipeline import CachedExamples, make_loader
    from lumbarjax.train.mesh import make_mesh, shard_batch
    from lumbarjax.train.state import create_train_state
    from lumbarjax.train.steps import make_predict_step, make_train_step

    what = spec["what"]
    if what == "rsna_demo":
        import configs.demo as cfg_mod
    else:
        import configs.outcome as cfg_mod
    config = cfg_mod.get_config()
    rng = np.random.default_rng(0)
    if what == "vindr":
        from lumbarjax.pipelines.xray_pretrain import FindingsLoss, FindingsNet, backbone_kwargs

        task_cfg = config.xray_pretrain
        kw = backbone_kwargs(config)
        model = FindingsNet(num_findings=len(task_cfg.findings), **{**kw, "stage_sizes": tuple(kw["stage_sizes"])})
        loss = FindingsLoss()
        augment = config.grader.augment.to_dict()
        shape = tuple(config.xray.shape)
        k = len(task_cfg.findings)
        extras_labels = lambda n: {"findings": (rng.random((n, k)) < 0.3).astype(np.float32)}  # noqa: E731
        images = lambda n: {"xray": rng.random((n, *shape), np.float32), "xray_present": np.ones(n, np.float32)}  # noqa: E731
        input_desc = {"xray": list(shape)}
    else:
        from lumbarjax.pipelines.pretrain import encoder_kwargs
        from lumbarjax.pipelines.tasks import TASKS

        task_cfg = config.pretrain
        if what == "spider":
            task_cfg.label_column, task_cfg.num_grades = "pfirrmann_grade", 5
        model = TASKS["pretrain"].build_model(task_cfg, encoder=encoder_kwargs(config))
        loss = TASKS["pretrain"].loss(task_cfg)
        augment = config.outcome.augment.to_dict()
        shape = tuple(config.mri.shape)
        k = int(task_cfg.num_grades)
        extras_labels = lambda n: {"grade": rng.integers(0, k, n).astype(np.float32)}  # noqa: E731
        images = lambda n: {"mri": rng.random((n, *shape), np.float32), "mri_present": np.ones(n, np.float32)}  # noqa: E731
        input_desc = {"mri": list(shape), "encoder": encoder_kwargs(config)["arch"],
                      "width": int(encoder_kwargs(config)["width"])}
    bs = int(task_cfg.train.batch_size)
    table = spec.get("cache_table")
    if table and os.path.exists(table):
        cache = pd.read_csv(table, dtype=str, keep_default_na=False)
        cache = cache[cache["excluded"] == "False"].reset_index(drop=True)
        source = CachedExamples(cache, {"labels": extras_labels(len(cache))},
                                mri_shape=tuple(config.mri.shape), xray_shape=tuple(config.xray.shape))
        data = f"{len(cache)} cached arrays from preprocess_cohort (read per example)"
    else:
        n = 4 * bs
        source = CachedExamples(None, {**images(n), "labels": extras_labels(n)},
                                mri_shape=tuple(config.mri.shape), xray_shape=tuple(config.xray.shape))
        data = "random arrays in memory"
    it = make_loader(source, batch_size=bs, shuffle=True, seed=0, augment=augment)
    run_cfg = ml_collections.ConfigDict({"train": task_cfg.train.to_dict(), "optim": task_cfg.optim.to_dict()})
    mesh = make_mesh()
    batch = next(it)
    state = create_train_state(0, model, batch, run_cfg, mesh=mesh)
    n_params = int(sum(x.size for x in jax.tree.leaves(state.params)))
    step = make_train_step(model, loss, mesh)
    t0 = time.perf_counter()
    compiled = step.func.lower(state, shard_batch(batch, mesh), **step.keywords).compile()
    compile_s = time.perf_counter() - t0
    steps, loads = [], []
    for i in range(spec["steps"] + 2):
        t0 = time.perf_counter()
        batch = next(it)
        sb = shard_batch(batch, mesh)
        t1 = time.perf_counter()
        state, m = compiled(state, sb)
        jax.block_until_ready(m)
        t2 = time.perf_counter()
        if i >= 2:
            loads.append(t1 - t0)
            steps.append(t2 - t1)
    predict = make_predict_step(model, mesh)
    sb = shard_batch(batch, mesh)
    t0 = time.perf_counter()
    jax.block_until_ready(predict(state, sb))
    predict_compile_s = time.perf_counter() - t0
    pred = []
    for _ in range(max(3, spec["steps"] // 2)):
        t0 = time.perf_counter()
        jax.block_until_ready(predict(state, sb))
        pred.append(time.perf_counter() - t0)
    return {"what": what, "config": cfg_mod.__name__, "batch_size": bs, "input": input_desc,
            "parameters": n_params, "num_steps": int(task_cfg.train.num_steps),
            "eval_every": int(task_cfg.train.eval_every), "data": data, "compile_s": compile_s,
            "step_s": float(np.median(steps)), "step_s_all": steps, "loader_s": float(np.median(loads)),
            "predict_compile_s": predict_compile_s, "predict_batch_s": float(np.median(pred)),
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}


# --------------------------------------------------------------------------- the sets


def measure_index(name: str, full_root: str, view_fn, count: int, fractions, scratch: str, workers: int,
                  files_at=None, manifest: str | None = None) -> list[dict]:
    """Index the first n of ``count`` at each fraction (the full count writes ``manifest``)."""
    rows = []
    for f in fractions:
        n = max(1, int(round(f * count)))
        root = full_root if n == count else view_fn(full_root, os.path.join(scratch, f"{name}_view_{n}"), n)
        r = child({"kind": "index", "set": name, "root": root, "workers": workers,
                   "manifest": manifest if n == count else None})
        r.update(fraction=f, n_requested=n, files=files_at(n) if files_at else None)
        log(f"{name} index {n}: {r['index_s']:.1f} s, main {r['peak_rss_main_mb']:.0f} MiB, "
            f"worker {r['peak_rss_worker_mb']:.0f} MiB")
        rows.append(r)
        if root != full_root:
            shutil.rmtree(root)
    return rows


def measure_preprocess(name: str, root: str, manifest: str, count: int, fractions, scratch: str,
                       workers: int) -> dict:
    out = {"serial": []}
    for f in fractions:
        n = max(1, int(round(f * count)))
        cache = os.path.join(scratch, f"{name}_cache_serial_{n}")
        table = os.path.join(scratch, f"{name}_cache_table.csv") if n == count else None
        r = child({"kind": "preprocess", "set": name, "root": root, "manifest": manifest, "n": n,
                   "cache": cache, "workers": 0, "table": table})
        r.update(fraction=f, s_per_study=r["preprocess_s"] / max(1, r["studies"]))
        log(f"{name} preprocess serial {n}: {r['s_per_study']:.2f} s/study, main {r['peak_rss_main_mb']:.0f} MiB")
        out["serial"].append(r)
        if n != count:
            shutil.rmtree(cache)
    cache = os.path.join(scratch, f"{name}_cache_pool")
    r = child({"kind": "preprocess", "set": name, "root": root, "manifest": manifest, "n": count,
               "cache": cache, "workers": workers})
    r.update(s_per_study=r["preprocess_s"] / max(1, r["studies"]))
    log(f"{name} preprocess {workers} workers {count}: {r['s_per_study']:.2f} s/study, "
        f"main {r['peak_rss_main_mb']:.0f} MiB, worker {r['peak_rss_worker_mb']:.0f} MiB")
    out["pool"] = r
    shutil.rmtree(cache)
    return out


def measure_resume(name: str, root: str, manifest: str, count: int, scratch: str, workers: int,
                   reference_cache: str) -> dict:
    """SIGKILL a --workers run once half the studies are cached; relaunch; compare."""
    cache = os.path.join(scratch, f"{name}_cache_resume")
    shutil.rmtree(cache, ignore_errors=True)
    spec = {"kind": "preprocess", "set": name, "root": root, "manifest": manifest, "n": count,
            "cache": cache, "workers": workers}
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = lambda: len([n for n in os.listdir(os.path.join(cache, "mri"))  # noqa: E731
                        if n.endswith(".json")]) if os.path.isdir(os.path.join(cache, "mri")) else 0
    want = count // 2
    while done() < want and proc.poll() is None:
        time.sleep(0.05)
    kids = children_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.perf_counter()
    while any(vm_hwm_mb(k) for k in kids) and time.perf_counter() - t0 < 30:
        time.sleep(0.1)
    gone_s = time.perf_counter() - t0
    left = [k for k in kids if vm_hwm_mb(k)]
    for k in left:   # ours: do not leave them behind
        os.kill(k, signal.SIGKILL)
    at_kill, temporaries = done(), _temporaries(cache)
    r = child(spec)
    ref = {os.path.basename(p): p for p in _npys(reference_cache)}
    res = {os.path.basename(p): p for p in _npys(cache)}
    same = sorted(ref) == sorted(res) and all(np.array_equal(np.load(ref[k]), np.load(res[k])) for k in ref)
    shutil.rmtree(cache)
    out = {"studies": count, "cached_at_kill": at_kill, "worker_processes_at_kill": len(kids),
           "workers_gone_after_s": round(gone_s, 2), "workers_left_behind": len(left),
           "temporary_files_left_by_the_kill": temporaries, "complete_entries": len(res),
           "relaunch_decoded": r["n_decoded"], "relaunch_s": r["preprocess_s"],
           "arrays_equal_uninterrupted": bool(same)}
    log(f"{name} resume: {out}")
    return out


def _npys(cache: str) -> list[str]:
    """The cache's complete .npy entries (not the temporary files a killed writer leaves, which
    the workflow sweeps before it writes: ``atomic.sweep_temporary``)."""
    from lumbarjax.atomic import is_temporary

    d = os.path.join(cache, "mri")
    return [os.path.join(d, n) for n in sorted(os.listdir(d))
            if n.endswith(".npy") and not is_temporary(n)] if os.path.isdir(d) else []


def _temporaries(cache: str) -> int:
    from lumbarjax.atomic import is_temporary

    return sum(is_temporary(n) for _, _, files in os.walk(cache) for n in files)


def project(count: int, index_s: float, pre_s_per_study: float, step: dict) -> dict:
    """Projected wall time of one full pretraining run on this CPU (seconds)."""
    n_val = int(round(0.2 * count))
    evals = int(np.ceil(step["num_steps"] / max(1, step["eval_every"])))
    eval_batches = int(np.ceil(n_val / step["batch_size"]))
    parts = {"index_s": index_s, "preprocess_s": pre_s_per_study * count,
             "compile_s": step["compile_s"] + step["predict_compile_s"],
             "train_s": step["num_steps"] * (step["step_s"] + step["loader_s"]),
             "eval_s": evals * eval_batches * (step["predict_batch_s"] + step["loader_s"])}
    parts["total_s"] = sum(parts.values())
    parts["assumptions"] = (f"{step['num_steps']} steps x (step + loader), {evals} evaluations x "
                            f"{eval_batches} batches of the {n_val} validation studies, preprocessing at the "
                            "measured per-study rate with the workers, compile once; no localiser, no "
                            "checkpoint writes")
    return parts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", default="/tmp/lj_public_real", help="folder for the generated sets (deleted at the end)")
    ap.add_argument("--sets", default="rsna,spider,vindr")
    ap.add_argument("--rsna-studies", type=int, default=1975)
    ap.add_argument("--rsna-preprocess", type=int, default=40, help="full-size uncompressed studies preprocessed")
    ap.add_argument("--spider-patients", type=int, default=218)
    ap.add_argument("--spider-space", type=int, default=11, help="patients with a t2_SPACE series too")
    ap.add_argument("--spider-preprocess", type=int, default=60)
    ap.add_argument("--vindr-films", type=int, default=10000)
    ap.add_argument("--vindr-preprocess", type=int, default=100)
    ap.add_argument("--fractions", default="0.1,0.5,1.0")
    ap.add_argument("--workers", type=int, default=2, help="reader / preprocessing worker processes")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes writing the stand-ins")
    ap.add_argument("--steps", type=int, default=8, help="timed train steps per model")
    ap.add_argument("--no-steps", action="store_true")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep --scratch")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="first wait up to S seconds for the 1-min load to drop below 1 per core")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                   f"{datetime.date.today()}-public-real-size.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(RESULT + json.dumps(run_child(json.loads(a.child))), flush=True)
        return
    fractions = sorted({float(v) for v in a.fractions.split(",")} | {1.0})
    sets = a.sets.split(",")
    os.makedirs(a.scratch, exist_ok=True)
    t_wait = time.perf_counter()
    while os.getloadavg()[0] >= (os.cpu_count() or 1) and time.perf_counter() - t_wait < a.wait_quiet:
        time.sleep(10)
    t_start = time.perf_counter()
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    res = {"command": "python benchmarks/public_real_size.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "host": {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
                    "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
           "load_start": load(), "waited_for_quiet_s": round(t_start - t_wait, 1), "git": _git(),
           "args": vars(a), "sets": {}}
    log(f"start, host {model}, {os.cpu_count()} cores")
    try:
        if "rsna" in sets:
            res["sets"]["rsna"] = bench_rsna(a, fractions)
            _save(res, a.out)
        if "spider" in sets:
            res["sets"]["spider"] = bench_spider(a, fractions)
            _save(res, a.out)
        if "vindr" in sets:
            res["sets"]["vindr"] = bench_vindr(a, fractions)
            _save(res, a.out)
    finally:
        if not a.keep:
            shutil.rmtree(a.scratch, ignore_errors=True)
    res["load_end"], res["wall_s"] = load(), round(time.perf_counter() - t_start, 1)
    res["table"] = table_rows(res)
    _save(res, a.out)
    for row in res["table"]:
        print(" | ".join(str(v) for v in row.values()))
    log(f"done in {res['wall_s']:.0f} s -> {a.out}")


def bench_rsna(a, fractions) -> dict:
    s = os.path.join(a.scratch, "rsna")
    full, sub = os.path.join(s, "index_rle"), os.path.join(s, "subset_raw")
    out = {}
    log(f"rsna: writing {a.rsna_studies} RLE studies")
    out["generate_index"] = generate_rsna(full, a.rsna_studies, a.seed, True, a.gen_workers)
    cum = out["generate_index"].pop("files_per_study_cum")
    out["index"] = measure_index("rsna", full, rsna_view, a.rsna_studies, fractions, s, a.workers,
                                 files_at=lambda n: cum[n - 1])
    shutil.rmtree(full)
    log(f"rsna: writing {a.rsna_preprocess} uncompressed studies")
    out["generate_subset"] = generate_rsna(sub, a.rsna_preprocess, a.seed, False, a.gen_workers)
    out["generate_subset"].pop("files_per_study_cum")
    manifest = os.path.join(s, "subset_manifest.csv")
    out["index_subset"] = child({"kind": "index", "set": "rsna", "root": sub, "workers": a.workers,
                                 "manifest": manifest})
    out["preprocess"] = measure_preprocess("rsna", sub, manifest, a.rsna_preprocess, fractions, s, a.workers)
    if not a.no_resume:
        out["resume"] = measure_resume("rsna", sub, manifest, a.rsna_preprocess, s, a.workers,
                                       os.path.join(s, f"rsna_cache_serial_{a.rsna_preprocess}"))
    if not a.no_steps:
        table = os.path.join(s, "rsna_cache_table.csv")
        out["step"] = child({"kind": "step", "what": "rsna", "steps": a.steps, "cache_table": table})
        log(f"rsna step: {out['step']['step_s']:.3f} s (compile {out['step']['compile_s']:.0f} s)")
        out["step_demo"] = child({"kind": "step", "what": "rsna_demo", "steps": a.steps})
        log(f"rsna demo step: {out['step_demo']['step_s']:.3f} s")
        idx = out["index"][-1]["index_s"]
        per = out["preprocess"]["pool"]["s_per_study"]
        out["projection"] = project(a.rsna_studies, idx, per, out["step"])
    shutil.rmtree(s)
    return out


def bench_spider(a, fractions) -> dict:
    s = os.path.join(a.scratch, "spider")
    full = os.path.join(s, "spider")
    out = {}
    log(f"spider: writing {a.spider_patients} patients")
    out["generate"] = generate_spider(full, a.spider_patients, a.spider_space, a.seed, a.gen_workers)
    manifest = os.path.join(s, "manifest.csv")
    out["index"] = measure_index("spider", full, spider_view, a.spider_patients, fractions, s, a.workers,
                                 files_at=lambda n: 2 * (2 * n + min(n, a.spider_space)), manifest=manifest)
    out["preprocess"] = measure_preprocess("spider", full, manifest, a.spider_preprocess, fractions, s, a.workers)
    if not a.no_steps:
        out["step"] = child({"kind": "step", "what": "spider", "steps": a.steps,
                             "cache_table": os.path.join(s, "spider_cache_table.csv")})
        log(f"spider step: {out['step']['step_s']:.3f} s")
        out["projection"] = project(a.spider_patients, out["index"][-1]["index_s"],
                                    out["preprocess"]["pool"]["s_per_study"], out["step"])
    shutil.rmtree(s)
    return out


def bench_vindr(a, fractions) -> dict:
    s = os.path.join(a.scratch, "vindr")
    full, sub = os.path.join(s, "index_rle"), os.path.join(s, "subset_raw")
    out = {}
    log(f"vindr: writing {a.vindr_films} RLE films")
    out["generate_index"] = generate_vindr(full, a.vindr_films, a.seed, True, a.gen_workers)
    out["index"] = measure_index("vindr", full, vindr_view, a.vindr_films, fractions, s, a.workers,
                                 files_at=lambda n: n)
    shutil.rmtree(full)
    log(f"vindr: writing {a.vindr_preprocess} uncompressed films")
    out["generate_subset"] = generate_vindr(sub, a.vindr_preprocess, a.seed, False, a.gen_workers)
    manifest = os.path.join(s, "subset_manifest.csv")
    out["index_subset"] = child({"kind": "index", "set": "vindr", "root": sub, "workers": a.workers,
                                 "manifest": manifest})
    out["preprocess"] = measure_preprocess("vindr", sub, manifest, a.vindr_preprocess, fractions, s, a.workers)
    if not a.no_steps:
        out["step"] = child({"kind": "step", "what": "vindr", "steps": a.steps,
                             "cache_table": os.path.join(s, "vindr_cache_table.csv")})
        log(f"vindr step: {out['step']['step_s']:.3f} s")
        out["projection"] = project(a.vindr_films, out["index"][-1]["index_s"],
                                    out["preprocess"]["pool"]["s_per_study"], out["step"])
    shutil.rmtree(s)
    return out


def table_rows(res: dict) -> list[dict]:
    rows = []
    for name, r in res["sets"].items():
        idx = r["index"]
        pre = r["preprocess"]
        step = r.get("step", {})
        proj = r.get("projection", {})
        rows.append({
            "set": name, "files": idx[-1].get("files"), "studies": idx[-1]["studies"],
            "index_s": round(idx[-1]["index_s"], 1),
            "peak_rss_index_mb (10/50/100 %)": "/".join(f"{x['peak_rss_main_mb']:.0f}+{x['peak_rss_worker_mb']:.0f}"
                                                          for x in idx),
            "preprocess_s_per_study (serial; workers)": f"{pre['serial'][-1]['s_per_study']:.2f}; "
                                                        f"{pre['pool']['s_per_study']:.2f}",
            "peak_rss_preprocess_mb (serial 10/50/100 %)": "/".join(f"{x['peak_rss_main_mb']:.0f}" for x in pre["serial"]),
            "step_s": round(step.get("step_s", float("nan")), 3),
            "projected_cpu_h": round(proj.get("total_s", float("nan")) / 3600, 2),
            "projected_gpu": "not measured"})
    return rows


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def _save(res: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
