"""Small fixtures in the exact published layouts of the public datasets (never commit output).

- :func:`write_rsna_fixture` — an RSNA 2024 training folder: train.csv,
  train_label_coordinates.csv, train_series_descriptions.csv and
  train_images/<study_id>/<series_id>/<instance_number>.dcm with RSNA-style de-identified tags
  (written from dicom_factory series with fake PHI, which the RSNA re-write drops).
- :func:`write_spider_fixture` — a SPIDER folder: images/ and masks/ ``<id>_t1.mha``,
  ``<id>_t2.mha``, ``<id>_t2_SPACE.mha``, overview.csv, radiological_gradings.csv.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom

from lumbarjax.synthetic import rsna_layout
from lumbarjax.schema import LEVELS
from tests.dicom_factory import write_mr_series

# study_id -> series (series_id, description, orientation, slices) written for it.
RSNA_STUDIES = {
    "4003253": [("702807833", "Sagittal T2/STIR", "sag", 7), ("1054713880", "Sagittal T1", "sag", 7),
                ("2448190387", "Axial T2", "ax", 5)],
    "4646740": [("3201256954", "Sagittal T2/STIR", "sag", 6), ("3486248476", "Axial T2", "ax", 5)],
    "7143189": [("132939515", "Sagittal T2/STIR", "sag", 6)],
}
SPACING = (4.0, 0.8, 0.8)
SIZE = 32


def rsna_grades(study_id: str) -> dict:
    """Deterministic grades for a fixture study: canal grade by level, a few blanks elsewhere."""
    rng = np.random.default_rng(int(study_id) % 1000)
    g = {"study_id": study_id}
    for c in rsna_layout.CONDITIONS:
        for j, lv in enumerate(LEVELS):
            v = int(rng.integers(0, 3))
            g[f"{c}_{lv}"] = None if (c != "spinal_canal_stenosis" and rng.random() < 0.2) else v
    return g


def write_rsna_fixture(root, *, studies=None, instance_numbers=None, unannotated=()) -> dict:
    """Write the RSNA 2024 layout below ``root``; returns {"grades", "coordinates", "series"}.

    Canal coordinates sit on the middle instance of the sagittal T2 (x = column, y = row, one
    per level, 4 px apart); foraminal ones on the sagittal T1; subarticular ones on the axial.
    ``instance_numbers``: series_id -> the InstanceNumber of each slice in slice-position order
    (position along the slice normal ascending; default: a random permutation of 1..n);
    ``unannotated``: series ids given no coordinates."""
    root = os.fspath(root)
    studies = studies or RSNA_STUDIES
    instance_numbers = instance_numbers or {}
    src = os.path.join(root, "..", "rsna_src")
    grades, coords, series = [], [], []
    cond_for = {"Sagittal T2/STIR": ("spinal_canal_stenosis",),
                "Sagittal T1": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
                "Axial T2": ("left_subarticular_stenosis", "right_subarticular_stenosis")}
    for k, (sid, ss) in enumerate(studies.items()):
        grades.append(rsna_grades(sid))
        for j, (se, desc, orient, n) in enumerate(ss):
            vol = (np.arange(n * SIZE * SIZE).reshape(n, SIZE, SIZE) % 251 + 10 * j).astype(np.uint16)
            paths = write_mr_series(os.path.join(src, sid, se), vol, spacing=SPACING, orientation=orient,
                                    patient_id=f"MRN{k}", description="T2 SAG", seed=k * 10 + j,
                                    origin=(-20.0 + k, -100.0, 80.0))
            if se in instance_numbers:  # paths are in slice-position order
                for p, number in zip(paths, instance_numbers[se], strict=True):
                    ds = pydicom.dcmread(p)
                    ds.InstanceNumber = int(number)
                    ds.save_as(p, enforce_file_format=True)
            written = rsna_layout.write_series(root, sid, se, paths)
            series.append({"study_id": sid, "series_id": se, "series_description": desc})
            if se in unannotated:
                continue
            mid = sorted(int(os.path.basename(p)[:-4]) for p in written)[n // 2]
            for c in cond_for[desc]:
                for i, lv in enumerate(LEVELS):
                    coords.append({"study_id": sid, "series_id": se, "instance_number": mid,
                                   "condition": c, "level": lv, "x": 10.5 + i, "y": 6.25 + 4 * i})
    rsna_layout.write_tables(root, grades, coords, series)
    return {"grades": grades, "coordinates": coords, "series": series}


# --------------------------------------------------------------------------- SPIDER


SPIDER_GRADING_COLUMNS = ["Patient", "IVD label", "Modic", "UP endplate", "LOW endplate",
                          "Spondylolisthesis", "Disc herniation", "Disc narrowing", "Disc bulging",
                          "Pfirrman grade"]


SPIDER_SPACING = (3.5, 0.6, 0.7)      # SimpleITK (i, j, k) = (x slices, y columns, z rows) mm
SPIDER_ORIGIN = (-10.0, -60.0, 40.0)  # LPS mm of voxel (0, 0, 0)
SPIDER_SHAPE = (40, 24, 5)            # GetArrayFromImage order (k, j, i): z up, y, x
ROWS_PER_VERTEBRA = 6


def spider_volume(n_vert=6):
    """(image, mask) arrays in SimpleITK order (k, j, i) = (z rows upwards, y, x) of a tiny
    sagittal spine, as many SPIDER files are stored ((H, W, slices) after GetArrayFromImage):
    vertebra n at rows [(n-1)*6 + 2, n*6) from the bottom, disc 200 + n just below it (rows
    (n-1)*6, +1: disc 201 = L5/S1 under vertebra 1 = L5), the canal (100) posterior of them."""
    mask = np.zeros(SPIDER_SHAPE, np.uint8)
    for n in range(1, n_vert + 1):
        k0 = (n - 1) * ROWS_PER_VERTEBRA
        mask[k0 + 2: k0 + ROWS_PER_VERTEBRA, 4:14, :] = n
        mask[k0: k0 + 2, 4:14, :] = 200 + n
    mask[:, 16:19, :] = 100
    image = (mask.astype(np.int16) * 3 + 50).astype(np.int16)
    return image, mask


def write_spider_scan(root, name, image, mask, *, spacing=SPIDER_SPACING, origin=SPIDER_ORIGIN,
                      direction=None) -> tuple[str, str]:
    """Write ``images/<name>.mha`` and ``masks/<name>.mha`` below ``root`` on one grid:
    ``image`` and ``mask`` in SimpleITK array order (k, j, i); ``direction`` the row-major 3x3
    direction matrix (column a = the LPS direction of index axis a; default identity), stored
    as the MetaImage TransformMatrix. Returns the two paths."""
    import SimpleITK as sitk

    out = []
    for arr, folder in ((image, "images"), (mask, "masks")):
        os.makedirs(os.path.join(os.fspath(root), folder), exist_ok=True)
        img = sitk.GetImageFromArray(np.asarray(arr))
        img.SetSpacing(tuple(float(v) for v in spacing))
        img.SetOrigin(tuple(float(v) for v in origin))
        if direction is not None:
            img.SetDirection(tuple(float(v) for v in np.asarray(direction, float).ravel()))
        out.append(os.path.join(os.fspath(root), folder, f"{name}.mha"))
        sitk.WriteImage(img, out[-1])
    return out[0], out[1]


def write_spider_fixture(root, *, patients=(1, 2), scans=("t1", "t2", "t2_SPACE")) -> dict:
    """Write the SPIDER layout below ``root`` with SimpleITK (identity direction: the array's
    last axis is x); returns the per-patient gradings written."""
    import pandas as pd
    import SimpleITK as sitk

    from lumbarjax import atomic

    root = os.fspath(root)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    overview, gradings = [], []
    for p in patients:
        image, mask = spider_volume()
        for s in scans:
            for arr, folder in ((image, "images"), (mask, "masks")):
                img = sitk.GetImageFromArray(arr)
                img.SetSpacing(SPIDER_SPACING)
                img.SetOrigin(SPIDER_ORIGIN)
                sitk.WriteImage(img, os.path.join(root, folder, f"{p}_{s}.mha"))
            overview.append({"new_file_name": f"{p}_{s}", "subset": "training", "Sex": "F",
                             "Age": 50 + p, "Manufacturer": "SIEMENS"})
        for n in range(1, 7):
            gradings.append({"Patient": p, "IVD label": n, "Modic": 0, "UP endplate": 0,
                             "LOW endplate": int(n == 2), "Spondylolisthesis": 0,
                             "Disc herniation": int(n == 1), "Disc narrowing": 0, "Disc bulging": 0,
                             "Pfirrman grade": 1 + (n + p) % 5})
    atomic.write_csv(pd.DataFrame(overview), os.path.join(root, "overview.csv"))
    atomic.write_csv(pd.DataFrame(gradings, columns=SPIDER_GRADING_COLUMNS),
                     os.path.join(root, "radiological_gradings.csv"))
    return {"gradings": gradings}
