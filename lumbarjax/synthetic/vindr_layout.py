"""Write a folder in the VinDr-SpineXR layout (the one ``vindr_spinexr`` reads), from the generator.

:func:`write_synthetic_vindr` writes a separate synthetic cohort's lateral films (no patient of
the graded cohort: ids ``VD…``) as ``train_images/<image_id>.dicom``, de-identified the way the
public files are (PatientID = the image id; no names, dates or institution), and
``annotations/train.csv`` with one box per finding and reader, derived from the generator's
per-level degeneration grades at the true disc centres:

- ``Disc space narrowing`` at every level graded >= ``narrowing_grade`` (default 2),
- ``Osteophytes`` at every level graded >= ``osteophyte_grade`` (default 3),
- ``No finding`` when a film has neither.

Each film is read by ``readers`` radiologists (``rad_id`` R1, R2, …), each of whom misses a
true finding with probability ``miss_rate`` (a seeded draw), as several VinDr readers disagree.
``ground_truth.csv`` (not part of the published layout) keeps the generator's truth by image id.
Boxes are ±``box_mm`` around the disc centre, in pixels of the stored film.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset

from lumbarjax import atomic
from lumbarjax.synthetic.rsna_layout import deidentified_copy
from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.workers import process_map

# Attributes a de-identified film keeps (pixel module, spacing, display).
KEEP = ("SOPClassUID", "Modality", "ViewPosition", "SamplesPerPixel", "PhotometricInterpretation",
        "Rows", "Columns", "PixelSpacing", "ImagerPixelSpacing", "BitsAllocated", "BitsStored",
        "HighBit", "PixelRepresentation", "WindowCenter", "WindowWidth", "RescaleIntercept",
        "RescaleSlope", "PixelData")
MIN_FILMS_FOR_WORKERS = 24


def image_id(seed: int, patient_id: str) -> str:
    """A VinDr-style 32-hex image id, a function of the seed and the source patient only."""
    return hashlib.md5(f"vindr-{seed}-{patient_id}".encode()).hexdigest()


def vindr_dataset(src: Dataset, image_id_: str) -> Dataset:
    """A copy of film ``src`` with the image id as its only identifier."""
    uid = "2.25." + str(int(image_id_, 16))
    return deidentified_copy(src, KEEP, patient_id=image_id_, study_uid=uid, series_uid=uid, sop_uid=uid)


def _film(job) -> tuple[list[dict], dict]:
    """One film: re-written under train_images/, its annotation rows and ground-truth row."""
    out_dir, seed, pid, source, tr, settings = job
    iid = image_id(seed, pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = pydicom.dcmread(source, force=True)
    path = os.path.join(out_dir, "train_images", f"{iid}.dicom")
    with atomic.atomic_path(path) as tmp:
        vindr_dataset(src, iid).save_as(tmp, enforce_file_format=True)
    spacing = float(tr["xray_spacing_mm"])
    half = settings["box_mm"] / spacing
    rows, cols = int(src.Rows), int(src.Columns)
    rng = np.random.default_rng([int(seed), int(hashlib.md5(pid.encode()).hexdigest()[:8], 16)])
    out = []
    for r in range(int(settings["readers"])):
        boxes = []
        for lv in LEVELS:
            g = tr[f"grade_{lv}"]
            if not np.isfinite(g):
                continue
            rc, cc = float(tr[f"xray_disc_{lv}_row"]), float(tr[f"xray_disc_{lv}_col"])
            box = (max(cc - half, 0.0), max(rc - half / 2, 0.0), min(cc + half, cols - 1.0),
                   min(rc + half / 2, rows - 1.0))
            for lesion, cut in (("Disc space narrowing", settings["narrowing_grade"]),
                                ("Osteophytes", settings["osteophyte_grade"])):
                if g >= cut and rng.random() >= settings["miss_rate"]:
                    boxes.append((lesion, box))
        if not boxes:
            out.append({"image_id": iid, "lesion_type": "No finding", "xmin": None, "ymin": None,
                        "xmax": None, "ymax": None, "rad_id": f"R{r + 1}"})
        for lesion, (x0, y0, x1, y1) in boxes:
            out.append({"image_id": iid, "lesion_type": lesion, "xmin": round(x0, 1), "ymin": round(y0, 1),
                        "xmax": round(x1, 1), "ymax": round(y1, 1), "rad_id": f"R{r + 1}"})
    truth = {"image_id": iid, "source_patient_id": pid, "grade": tr["grade"],
             **{f"grade_{lv}": tr[f"grade_{lv}"] for lv in LEVELS}}
    return out, truth


def write_synthetic_vindr(out_dir, n_films: int = 600, seed: int = 21, *, readers: int = 2,
                          miss_rate: float = 0.15, narrowing_grade: int = 2, osteophyte_grade: int = 3,
                          box_mm: float = 14.0, xray_size: Sequence[int] = (384, 320),
                          num_workers: int = 0) -> dict:
    """Write ``n_films`` synthetic lateral films in the VinDr-SpineXR training layout (module doc).

    The cohort is generated in ``<out_dir>/.source`` (``synthetic.make_cohort``, ids ``VD…``;
    removed afterwards), its lateral films found by ``index_cohort``, and re-written. A completion
    marker records the settings; a folder written with the same settings is reused as it is.
    Returns a summary (counts, paths)."""
    from lumbarjax.data.index import index_cohort, resolve_paths
    from lumbarjax.synthetic import make_cohort

    out_dir = os.fspath(out_dir)
    settings = {"readers": int(readers), "miss_rate": float(miss_rate), "narrowing_grade": int(narrowing_grade),
                "osteophyte_grade": int(osteophyte_grade), "box_mm": float(box_mm)}
    info = {"writer": "write_synthetic_vindr", "n_films": int(n_films), "seed": int(seed),
            "xray_size": [int(v) for v in xray_size], **settings}
    if atomic.is_complete(out_dir, info):
        return {"out_dir": out_dir, "reused": True}
    src = os.path.join(out_dir, ".source")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not (os.path.exists(os.path.join(out_dir, atomic.MARKER)) or os.path.isdir(src)):
            raise ConfigError(f"{out_dir}: not empty and not written by write_synthetic_vindr; "
                              "refusing to overwrite it (choose an empty folder)")
        shutil.rmtree(out_dir)
    summary = make_cohort(src, n_patients=int(n_films), seed=int(seed), xray_size=xray_size,
                          mri_size=(48, 48), edge_cases=False, n_mc=1000, id_prefix="VD",
                          num_workers=num_workers)
    manifest = index_cohort(summary["export_dir"], num_workers=num_workers)
    xr = manifest[manifest["role"] == "xray"].set_index("patient_id")
    truth = pd.read_csv(summary["ground_truth_csv"], dtype={"patient_id": str}).set_index("patient_id")
    os.makedirs(os.path.join(out_dir, "train_images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    jobs = [(out_dir, int(seed), pid, resolve_paths(xr.loc[pid], summary["export_dir"])[0],
             truth.loc[pid].to_dict(), settings) for pid in sorted(xr.index)]
    rows, gt = [], []
    for r, t in process_map(_film, jobs, num_workers, min_jobs=MIN_FILMS_FOR_WORKERS, chunksize=8):
        rows.extend(r)
        gt.append(t)
    ann = pd.DataFrame(rows, columns=["image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax", "rad_id"])
    atomic.write_csv(ann, os.path.join(out_dir, "annotations", "train.csv"))
    atomic.write_csv(pd.DataFrame(gt), os.path.join(out_dir, "ground_truth.csv"))
    shutil.rmtree(src)
    atomic.mark_complete(out_dir, info)
    return {"out_dir": out_dir, "reused": False, "n_films": len(gt), "n_boxes": int((ann["lesion_type"] != "No finding").sum())}


__all__ = ["KEEP", "image_id", "vindr_dataset", "write_synthetic_vindr"]
