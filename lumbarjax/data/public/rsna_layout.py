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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence

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
    TRAIN_CSV,
)
from lumbarjax.schema import LEVELS

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


def rsna_dataset(src: Dataset, study_id, series_id, instance_number: int) -> Dataset:
    """A copy of MR slice ``src`` with RSNA 2024-style identifiers and nothing else identifying."""
    ds = Dataset()
    for key in KEEP:
        if key in src:
            ds[key] = src[key]
    ds.PatientID = str(study_id)
    ds.StudyInstanceUID = str(study_id)
    ds.SeriesInstanceUID = str(series_id)
    ds.InstanceNumber = int(instance_number)
    ds.SOPInstanceUID = f"{study_id}.{series_id}.{int(instance_number)}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
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


__all__ = ["KEEP", "rsna_dataset", "write_series", "write_tables"]
