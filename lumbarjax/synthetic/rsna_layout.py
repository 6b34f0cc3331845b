"""Write a folder in the RSNA 2024 lumbar spine training layout (the one ``rsna2024`` reads).

Used to hand the demo's synthetic pretraining cohort to the same reader a user points at the
downloaded Kaggle data (so the demo walks the real path), and by the tests' fixtures.

- :func:`rsna_dataset` — an MR slice re-written the way the public files are de-identified:
  PatientID = StudyInstanceUID = the numeric study_id, SeriesInstanceUID = the numeric
  series_id, SOPInstanceUID = ``<study_id>.<series_id>.<instance_number>``; no names, dates,
  institution or SeriesDescription (the description lives in train_series_descriptions.csv);
  geometry, acquisition and pixel attributes kept.
- :func:`write_series` — one series as ``train_images/<study_id>/<series_id>/<n>.dcm``.
- :func:`write_tables` — train.csv (25 label columns in the published order),
  train_label_coordinates.csv and train_series_descriptions.csv.
- :func:`write_synthetic_pretraining` — the demo's synthetic pretraining cohort
  (``synthetic.make_pretraining_cohort``) in this layout: each patient's sagittal T2 as the
  study's "Sagittal T2/STIR" series, ``spinal_canal_stenosis_<level>`` = the labels table's
  ``stenosis_grade_<level>`` (``synthetic.stenosis_grades``: the reader-style grade at the
  primary stenosis, the milder secondary one's noise-free grade, Normal/Mild elsewhere),
  canal coordinates from the synthetic disc centres, plus ``ground_truth.csv`` keyed by
  study_id (not part of the published layout).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from lumbarjax import atomic

from lumbarjax.data.public.rsna2024 import (
    CONDITIONS,
    COORDINATES_CSV,
    CSV_LEVELS,
    IMAGES_DIR,
    SERIES_CSV,
    SEVERITY_NAMES,
    T2_SAG,
    TRAIN_CSV,
    index_study,
)
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.workers import process_map

# Attributes a de-identified RSNA 2024 slice keeps (geometry, acquisition, pixel module).
KEEP = ("SOPClassUID", "Modality", "ImageType", "ScanningSequence", "SequenceVariant",
        "MRAcquisitionType", "SliceThickness", "SpacingBetweenSlices", "RepetitionTime", "EchoTime",
        "MagneticFieldStrength", "PatientPosition", "SeriesNumber", "ImagePositionPatient",
        "ImageOrientationPatient", "SliceLocation", "SamplesPerPixel", "PhotometricInterpretation",
        "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored", "HighBit",
        "PixelRepresentation", "WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope",
        "PixelData")
LEVEL_NAMES = {lv: name for name, lv in zip(("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"), LEVELS)}
CONDITION_NAMES = {c: c.replace("_", " ").title() for c in CONDITIONS}


def deidentified_copy(src: Dataset, keep: Sequence[str], *, patient_id: str, study_uid: str,
                      series_uid: str, sop_uid: str) -> Dataset:
    """A new dataset with only the attributes ``keep`` of ``src`` (geometry, acquisition, pixels)
    and the given identifiers, with its file meta: how the public sets' files are de-identified
    (RSNA 2024, VinDr-SpineXR)."""
    ds = Dataset()
    for key in keep:
        if key in src:
            ds[key] = src[key]
    ds.PatientID = str(patient_id)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = str(study_uid), str(series_uid), str(sop_uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def rsna_dataset(src: Dataset, study_id, series_id, instance_number: int) -> Dataset:
    """A copy of MR slice ``src`` with RSNA 2024-style identifiers and nothing else identifying."""
    ds = deidentified_copy(src, KEEP, patient_id=str(study_id), study_uid=str(study_id), series_uid=str(series_id),
                           sop_uid=f"{study_id}.{series_id}.{int(instance_number)}")
    ds.InstanceNumber = int(instance_number)
    return ds


def write_series(root: str, study_id, series_id, sources: Sequence[str]) -> list[str]:
    """Re-write the slices ``sources`` (one series, any order) as
    ``<root>/train_images/<study_id>/<series_id>/<InstanceNumber>.dcm``; returns the paths.

    The source InstanceNumbers are kept when they are distinct positive integers, otherwise the
    files are numbered 1..n in the given order."""
    datasets = []
    for p in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.append(pydicom.dcmread(p, force=True))
    numbers = [int(ds.get("InstanceNumber", 0) or 0) for ds in datasets]
    if len(set(numbers)) != len(numbers) or min(numbers) < 1:
        numbers = list(range(1, len(datasets) + 1))
    folder = os.path.join(root, IMAGES_DIR, str(study_id), str(series_id))
    os.makedirs(folder, exist_ok=True)
    out = []
    for ds, n in zip(datasets, numbers):
        path = os.path.join(folder, f"{n}.dcm")
        with atomic.atomic_path(path) as tmp:
            rsna_dataset(ds, study_id, series_id, n).save_as(tmp, enforce_file_format=True)
        out.append(path)
    return out


def write_tables(root: str, grades: Iterable[Mapping], coordinates: Iterable[Mapping],
                 series: Iterable[Mapping]) -> dict:
    """Write the three CSVs of the layout (atomic).

    Args:
      grades: one mapping per study: ``study_id`` and ``{condition}_{LEVEL}`` -> 0/1/2 (a
        missing key or None/NaN is a blank cell).
      coordinates: mappings with study_id, series_id, instance_number, condition (project
        name), level (``schema.LEVELS``), x, y.
      series: mappings with study_id, series_id, series_description.
    """
    rows = []
    for g in grades:
        row = {"study_id": int(g["study_id"])}
        for c in CONDITIONS:
            for suffix, lv in CSV_LEVELS.items():
                v = g.get(f"{c}_{lv}")
                row[f"{c}_{suffix}"] = "" if v is None or v != v else SEVERITY_NAMES[int(v)]
        rows.append(row)
    cols = ["study_id"] + [f"{c}_{s}" for c in CONDITIONS for s in CSV_LEVELS]
    coords = pd.DataFrame([{
        "study_id": int(r["study_id"]), "series_id": int(r["series_id"]),
        "instance_number": int(r["instance_number"]), "condition": CONDITION_NAMES[r["condition"]],
        "level": LEVEL_NAMES[r["level"]], "x": float(r["x"]), "y": float(r["y"])} for r in coordinates],
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"])
    desc = pd.DataFrame([{"study_id": int(r["study_id"]), "series_id": int(r["series_id"]),
                          "series_description": r["series_description"]} for r in series],
                        columns=["study_id", "series_id", "series_description"])
    return {
        "train": atomic.write_csv(pd.DataFrame(rows, columns=cols), os.path.join(root, TRAIN_CSV)),
        "coordinates": atomic.write_csv(coords, os.path.join(root, COORDINATES_CSV)),
        "series": atomic.write_csv(desc, os.path.join(root, SERIES_CSV)),
    }


STUDY_ID_BASE = 4_000_000     # study_id = base + patient number (PT0042 -> 4000042)
SERIES_ID_BASE = 700_000_000


def _rsna_study(job) -> tuple[dict, list, dict, dict]:
    """One synthetic patient as an RSNA study: its sagittal T2 re-written under
    ``train_images/``, and its rows of train.csv, train_label_coordinates.csv,
    train_series_descriptions.csv and ground_truth.csv. ``job`` =
    ``(out_dir, patient_id, {level: grade}, source files, ground-truth row)``; depends on
    nothing else."""
    out_dir, pid, grades, sources, tr = job
    n = int(pid[2:])
    study_id, series_id = STUDY_ID_BASE + n, SERIES_ID_BASE + n
    write_series(out_dir, study_id, series_id, sources)
    g = {"study_id": study_id, **{f"spinal_canal_stenosis_{lv}": grades[lv] for lv in LEVELS}}
    placed = index_study(out_dir, str(study_id), [(str(series_id), T2_SAG)])
    if placed["t2"] is None:
        raise CohortError(f"synthetic study {study_id} ({pid}): re-written series unusable: "
                          f"{placed['exclusions']}")
    _, d_of, affine = placed["t2"]
    inv = np.linalg.inv(np.asarray(affine))
    instance_of = {d: inst for inst, d in d_of.items()}
    coords = []
    for lv in LEVELS:
        d, h, w = (inv @ np.array([tr[f"disc_{lv}_{a}_mm"] for a in "xyz"] + [1.0]))[:3]
        d = int(np.clip(np.rint(d), 0, len(d_of) - 1))
        coords.append({"study_id": study_id, "series_id": series_id, "instance_number": instance_of[d],
                       "condition": "spinal_canal_stenosis", "level": lv,
                       "x": round(float(w), 3), "y": round(float(h), 3)})
    series = {"study_id": study_id, "series_id": series_id, "series_description": T2_SAG}
    return g, coords, series, {"patient_id": str(study_id), "source_patient_id": pid, **tr}


MIN_STUDIES_FOR_WORKERS = 24   # below this, starting worker processes costs more than it saves

def write_synthetic_pretraining(out_dir, n_patients: int = 240, seed: int = 1, *,
                                mri_size: Sequence[int] = (176, 176), num_workers: int = 0) -> dict:
    """Write the synthetic pretraining cohort in the RSNA 2024 training layout (see module doc).

    The cohort is generated in ``<out_dir>/.source`` (removed afterwards), its sagittal T2 found
    by ``index_cohort`` exactly as before, and re-written slice by slice. A completion marker
    records the settings; a folder written with the same settings is reused as it is.
    ``num_workers``: processes for writing and indexing the generated cohort (``make_cohort``,
    ``index_cohort``; the result does not depend on it). Returns a summary (counts, paths).
    """
    from lumbarjax.data.index import index_cohort, resolve_paths
    from lumbarjax.synthetic import make_pretraining_cohort

    out_dir = os.fspath(out_dir)
    info = {"writer": "write_synthetic_pretraining", "n_patients": int(n_patients), "seed": int(seed),
            "mri_size": [int(v) for v in mri_size], "level_grades": 2}  # 2: the secondary stenosis graded
    if atomic.is_complete(out_dir, info):
        return {"out_dir": out_dir, "reused": True}
    src = os.path.join(out_dir, ".source")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        ours = os.path.exists(os.path.join(out_dir, atomic.MARKER)) or os.path.isdir(src)
        if not ours:
            raise ConfigError(f"{out_dir}: not empty and not written by write_synthetic_pretraining; "
                              "refusing to overwrite it (choose an empty folder)")
        shutil.rmtree(out_dir)  # ours: other settings, or an interrupted write
    summary = make_pretraining_cohort(src, n_patients=n_patients, seed=seed, mri_size=mri_size,
                                      num_workers=num_workers)
    manifest = index_cohort(summary["export_dir"], num_workers=num_workers)
    t2 = manifest[manifest["role"] == "mri_t2_sag"].set_index("patient_id")
    labels = pd.read_csv(summary["labels_csv"], dtype={"patient_id": str}).set_index("patient_id")
    truth = pd.read_csv(summary["ground_truth_csv"], dtype={"patient_id": str}).set_index("patient_id")
    jobs = []
    for pid in sorted(t2.index):
        grade = labels.loc[pid, "stenosis_grade"] if pid in labels.index else np.nan
        if np.isfinite(grade):
            per_level = {lv: int(labels.loc[pid, f"stenosis_grade_{lv}"]) for lv in LEVELS}
            jobs.append((out_dir, pid, per_level, resolve_paths(t2.loc[pid], summary["export_dir"]),
                         truth.loc[pid].to_dict()))
    grades, coords, series, gt_rows = [], [], [], []
    for g, c, sr, gt in process_map(_rsna_study, jobs, num_workers, min_jobs=MIN_STUDIES_FOR_WORKERS, chunksize=4):
        grades.append(g)
        coords.extend(c)
        series.append(sr)
        gt_rows.append(gt)
    paths = write_tables(out_dir, grades, coords, series)
    paths["ground_truth"] = atomic.write_csv(pd.DataFrame(gt_rows), os.path.join(out_dir, "ground_truth.csv"))
    shutil.rmtree(src)
    atomic.mark_complete(out_dir, info)
    return {"out_dir": out_dir, "reused": False, "n_studies": len(grades), **paths}


__all__ = ["KEEP", "deidentified_copy", "rsna_dataset", "write_series", "write_synthetic_pretraining", "write_tables"]
