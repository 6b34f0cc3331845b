"""Read the RSNA 2024 Lumbar Spine Degenerative Classification training set as downloaded.

Layout (as the Kaggle competition ``rsna-2024-lumbar-spine-degenerative-classification``
ships it), below ``root``::

    train.csv                        study_id + 25 columns {condition}_{level}, values
                                     "Normal/Mild" | "Moderate" | "Severe" | blank
    train_label_coordinates.csv      study_id, series_id, instance_number, condition, level, x, y
                                     (condition "Spinal Canal Stenosis", ...; level "L1/L2", ...;
                                     x = column, y = row, in pixels of that instance)
    train_series_descriptions.csv    study_id, series_id, series_description in
                                     "Sagittal T1" | "Sagittal T2/STIR" | "Axial T2"
    train_images/<study_id>/<series_id>/<instance_number>.dcm

:func:`read_rsna2024` turns the folder into the project's manifest (``lumbarjax.data.index``
columns; one ``mri_t2_sag`` row per study, from its "Sagittal T2/STIR" series; paths relative to
``root``; no image is copied or decoded) plus per-level tables:

``labels``       study_id, level (``schema.LEVELS``), condition, grade (0 normal/mild,
                 1 moderate, 2 severe); blank cells give no row (counted).
``coordinates``  the coordinates table with level/condition in the project's vocabulary, the
                 series role, and for the sagittal T2 series the slice index ``d`` of that
                 instance in the sorted volume and the point in patient coordinates
                 (``x_mm, y_mm, z_mm``, LPS) — the disc-level centres a localiser learns.
``series``       every series of every study (role, n_files, paths).
``exclusions``   study_id, series_id, reason, detail: partial downloads (a study or series folder
                 missing, a series without files, unreadable/inconsistent headers, coordinates
                 for a series or instance that is not there), each logged and counted.

Vocabulary errors (a missing CSV or column, an unknown severity, level, condition or series
description, a duplicated row) raise :class:`~lumbarjax.errors.CohortError` naming the file,
line and value: such a file is not the published one and guessing would give wrong labels.

Headers are read in a process pool (``workers``; all cores by default), one study per task, so
indexing streams with memory flat in the number of studies.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lumbarjax.data.dicom import read_header, series_geometry, slice_geometry
from lumbarjax.data.index import COLUMNS as MANIFEST_COLUMNS
from lumbarjax.data.public.tables import read_table, write_tables
from lumbarjax.errors import CohortError, DicomError
from lumbarjax.schema import LEVELS
from lumbarjax.workers import spawn_pool

log = logging.getLogger(__name__)

TRAIN_CSV = "train.csv"
COORDINATES_CSV = "train_label_coordinates.csv"
SERIES_CSV = "train_series_descriptions.csv"
IMAGES_DIR = "train_images"

CONDITIONS = ("spinal_canal_stenosis", "left_neural_foraminal_narrowing",
              "right_neural_foraminal_narrowing", "left_subarticular_stenosis",
              "right_subarticular_stenosis")
# train.csv level suffix -> schema level; coordinates level -> schema level.
CSV_LEVELS = dict(zip(("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"), LEVELS))
COORD_LEVELS = dict(zip(("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"), LEVELS))
COORD_CONDITIONS = {c.replace("_", " ").title(): c for c in CONDITIONS}
SEVERITY = {"Normal/Mild": 0, "Moderate": 1, "Severe": 2}
SEVERITY_NAMES = tuple(SEVERITY)
# Series description -> role. Only the sagittal T2 is a manifest role (schema.ROLES); the others
# are recorded in the series table.
SERIES_ROLES = {"Sagittal T2/STIR": "mri_t2_sag", "Sagittal T1": "mri_t1_sag",
                "Axial T2": "mri_t2_ax"}
T2_SAG = "Sagittal T2/STIR"
LABEL_COLUMNS = ["study_id", "level", "condition", "grade"]
COORD_COLUMNS = ["study_id", "series_id", "role", "instance_number", "condition", "level", "x", "y",
                 "d", "x_mm", "y_mm", "z_mm"]
SERIES_COLUMNS = ["study_id", "series_id", "series_description", "role", "n_files", "paths"]
EXCLUSION_COLUMNS = ["study_id", "series_id", "reason", "detail"]
AUTO_POOL_MIN_STUDIES = 32  # workers=None reads fewer studies in-process (spawning costs seconds)
_INSTANCE_RE = re.compile(r"^(\d+)\.dcm$")


@dataclass
class RsnaDataset:
    """What :func:`read_rsna2024` returns (tables described in the module docstring)."""

    root: str
    manifest: pd.DataFrame
    labels: pd.DataFrame
    coordinates: pd.DataFrame
    series: pd.DataFrame
    exclusions: pd.DataFrame
    counts: dict = field(default_factory=dict)

    def write(self, out_dir: str) -> dict:
        """Write manifest.csv and the tables as CSV below ``out_dir`` (atomic)."""
        return write_tables(out_dir, self.manifest, {n: getattr(self, n) for n in ("labels", "coordinates", "series", "exclusions")})


# --------------------------------------------------------------------------- tables


def _read_csv(path: str, required: list[str]) -> pd.DataFrame:
    return read_table(path, required, f"{TRAIN_CSV}, {COORDINATES_CSV}, {SERIES_CSV} and {IMAGES_DIR}/")


def _ids(df: pd.DataFrame, path: str, cols=("study_id", "series_id")) -> None:
    for c in cols:
        if c not in df.columns:
            continue
        bad = ~df[c].str.fullmatch(r"\d+")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise CohortError(f"{path}: line {i + 2}: {c} {df[c].iloc[i]!r} is not an integer id")


def read_train_csv(path: str) -> tuple[pd.DataFrame, int]:
    """``train.csv`` -> (labels long table :data:`LABEL_COLUMNS`, number of blank cells)."""
    cols = [f"{c}_{lv}" for c in CONDITIONS for lv in CSV_LEVELS]
    df = _read_csv(path, ["study_id"] + cols)
    _ids(df, path)
    dup = df["study_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise CohortError(f"{path}: line {i + 2}: study_id {df['study_id'].iloc[i]} appears twice")
    rows, blank = [], 0
    for i, rec in enumerate(df.to_dict("records")):
        for c in CONDITIONS:
            for suffix, level in CSV_LEVELS.items():
                v = rec[f"{c}_{suffix}"]
                if v == "":
                    blank += 1
                    continue
                if v not in SEVERITY:
                    raise CohortError(
                        f"{path}: line {i + 2} (study_id={rec['study_id']}), column {c}_{suffix}: "
                        f"unknown severity {v!r} (expected {', '.join(SEVERITY)} or blank)")
                rows.append((rec["study_id"], level, c, SEVERITY[v]))
    labels = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    labels["grade"] = labels["grade"].astype("int64")
    return labels, blank


def read_series_descriptions(path: str) -> pd.DataFrame:
    """``train_series_descriptions.csv`` -> study_id, series_id, series_description, role."""
    df = _read_csv(path, ["study_id", "series_id", "series_description"])
    _ids(df, path)
    for i, v in enumerate(df["series_description"]):
        if v not in SERIES_ROLES:
            raise CohortError(f"{path}: line {i + 2} (study_id={df['study_id'].iloc[i]}, series_id="
                              f"{df['series_id'].iloc[i]}): unknown series_description {v!r} "
                              f"(expected one of {list(SERIES_ROLES)})")
    dup = df.duplicated(["study_id", "series_id"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise CohortError(f"{path}: line {i + 2}: series {df['series_id'].iloc[i]} of study "
                          f"{df['study_id'].iloc[i]} is listed twice")
    df["role"] = df["series_description"].map(SERIES_ROLES)
    return df[["study_id", "series_id", "series_description", "role"]]


def read_coordinates(path: str) -> pd.DataFrame:
    """``train_label_coordinates.csv`` with level/condition mapped to the project's names."""
    df = _read_csv(path, ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"])
    _ids(df, path, ("study_id", "series_id", "instance_number"))
    for i, rec in enumerate(df[["study_id", "condition", "level", "x", "y"]].to_dict("records")):
        where = f"{path}: line {i + 2} (study_id={rec['study_id']})"
        if rec["condition"] not in COORD_CONDITIONS:
            raise CohortError(f"{where}: unknown condition {rec['condition']!r} (expected one of "
                              f"{list(COORD_CONDITIONS)})")
        if rec["level"] not in COORD_LEVELS:
            raise CohortError(f"{where}: unknown level {rec['level']!r} (expected one of "
                              f"{list(COORD_LEVELS)})")
        try:
            ok = np.isfinite(float(rec["x"])) and np.isfinite(float(rec["y"]))
        except ValueError:
            ok = False
        if not ok:
            raise CohortError(f"{where}: x, y = {rec['x']!r}, {rec['y']!r} are not pixel coordinates")
    out = pd.DataFrame({
        "study_id": df["study_id"], "series_id": df["series_id"],
        "instance_number": df["instance_number"].astype("int64"),
        "condition": df["condition"].map(COORD_CONDITIONS), "level": df["level"].map(COORD_LEVELS),
        "x": df["x"].astype(float), "y": df["y"].astype(float)})
    out.attrs["line"] = np.arange(len(out)) + 2
    return out


# --------------------------------------------------------------------------- one study


def _list_series(folder: str) -> tuple[list[tuple[int, str]], int]:
    """Sorted (instance_number, file name) of ``<n>.dcm`` files; count of other files."""
    files, other = [], 0
    for entry in os.scandir(folder):
        m = _INSTANCE_RE.match(entry.name)
        if m and entry.is_file():
            files.append((int(m.group(1)), entry.name))
        else:
            other += 1
    return sorted(files), other


def index_study(root: str, study_id: str, series: list[tuple[str, str]],
                canal_series: tuple[str, ...] = ()) -> dict:
    """Index one study (the unit of work of the process pool; headers only).

    Args:
      root: dataset root; study_id: its id; series: (series_id, description) pairs from the
        series table; canal_series: series ids that carry spinal canal coordinates (preferred
        when a study has several sagittal T2 series).

    Returns a dict: ``series`` rows, ``exclusions`` rows, ``manifest`` (a manifest row or None),
    ``t2`` (series_id, {instance_number: d}, affine as a nested list) or None, ``other_files``.
    """
    out = {"series": [], "exclusions": [], "manifest": None, "t2": None, "other_files": 0}
    sdir = os.path.join(root, IMAGES_DIR, study_id)
    if not os.path.isdir(sdir):
        out["exclusions"].append((study_id, "", "study folder missing",
                                  f"{IMAGES_DIR}/{study_id}/ not found (partial download?)"))
        return out
    t2_candidates = []
    for series_id, desc in series:
        rel = f"{IMAGES_DIR}/{study_id}/{series_id}"
        folder = os.path.join(root, rel)
        if not os.path.isdir(folder):
            out["exclusions"].append((study_id, series_id, "series folder missing",
                                      f"{rel}/ not found ({desc})"))
            continue
        files, other = _list_series(folder)
        out["other_files"] += other
        if not files:
            out["exclusions"].append((study_id, series_id, "series without files",
                                      f"{rel}/ holds no <instance_number>.dcm file ({desc})"))
            continue
        paths = [f"{rel}/{name}" for _, name in files]
        out["series"].append((study_id, series_id, desc, SERIES_ROLES[desc], len(files), ";".join(paths)))
        if desc == T2_SAG:
            t2_candidates.append((series_id in canal_series, len(files), series_id, files, paths))
    if not t2_candidates:
        return out
    t2_candidates.sort(key=lambda c: (c[0], c[1], c[2]), reverse=True)
    for has_coords, n, series_id, files, paths in t2_candidates:
        try:
            geoms = []
            for rel in paths:
                full = os.path.join(root, rel)
                ds = read_header(full)
                if ds is None:
                    raise DicomError(f"{full}: not a DICOM file")
                geoms.append(slice_geometry(ds, full))
            g = series_geometry(geoms, f"study {study_id} series {series_id}")
        except DicomError as e:
            out["exclusions"].append((study_id, series_id, "unreadable or inconsistent series", str(e)))
            continue
        reason = f"RSNA 2024 series description '{T2_SAG}', {n} slices"
        if len(t2_candidates) > 1:
            reason += (f"; {len(t2_candidates)} '{T2_SAG}' series, chosen: "
                       + ("the one with canal coordinates" if has_coords else "most slices"))
        out["manifest"] = {
            "patient_id": study_id, "role": "mri_t2_sag", "source": "dicom",
            "paths": ";".join(paths[i] for i in g.order), "study_uid": study_id,
            "series_uid": series_id, "modality": "MR", "series_description": T2_SAG,
            "n_files": n, "spacing_mm": ";".join(f"{v:.6g}" for v in g.spacing),
            "shape": ";".join(str(v) for v in g.shape), "reason": reason}
        d_of = {files[i][0]: d for d, i in enumerate(g.order)}
        out["t2"] = (series_id, d_of, g.affine.tolist())
        break
    return out


def _index_study_args(args):
    return index_study(*args)


# --------------------------------------------------------------------------- the dataset


def read_rsna2024(root, *, workers: int | None = None, progress: bool = False) -> RsnaDataset:
    """Read an RSNA 2024 training folder (see module docstring) without copying any image.

    Args:
      root: the folder holding train.csv, train_label_coordinates.csv,
        train_series_descriptions.csv and train_images/.
      workers: processes reading headers (default: every core, in-process below
        ``AUTO_POOL_MIN_STUDIES`` studies; <= 1 reads in this process).
      progress: a tqdm bar over studies.

    Returns an :class:`RsnaDataset`. ``manifest.attrs`` has ``root``, ``missing`` (studies without
    a usable sagittal T2: [{patient_id, role, reason}]) and ``skipped`` (reason -> count).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(root):
        raise CohortError(f"{root}: RSNA 2024 folder not found")
    labels, n_blank = read_train_csv(os.path.join(root, TRAIN_CSV))
    series_df = read_series_descriptions(os.path.join(root, SERIES_CSV))
    coords = read_coordinates(os.path.join(root, COORDINATES_CSV))
    images = os.path.join(root, IMAGES_DIR)
    if not os.path.isdir(images):
        raise CohortError(f"{images}: not found (incomplete RSNA 2024 download?)")

    exclusions: list[tuple] = []
    labelled = sorted(set(labels["study_id"]), key=int)
    described = set(series_df["study_id"])
    for sid in labelled:
        if sid not in described:
            exclusions.append((sid, "", "study without series", f"study {sid} of {TRAIN_CSV} has no "
                               f"row in {SERIES_CSV}"))
    on_disk = {e.name for e in os.scandir(images) if e.is_dir()}
    for sid in sorted(on_disk - described, key=lambda s: (len(s), s)):
        exclusions.append((sid, "", "study folder not described",
                           f"{IMAGES_DIR}/{sid}/ has no row in {SERIES_CSV}"))
    canal = coords[coords["condition"] == "spinal_canal_stenosis"]
    canal_series = canal.groupby("study_id")["series_id"].agg(lambda s: tuple(sorted(set(s)))).to_dict()
    tasks = [(root, sid, list(zip(g["series_id"], g["series_description"])), canal_series.get(sid, ()))
             for sid, g in series_df.groupby("study_id", sort=False)]
    tasks.sort(key=lambda t: int(t[1]))

    results = _run(tasks, workers, progress)
    manifest_rows, series_rows, t2 = [], [], {}
    other_files = 0
    for r in results:
        exclusions.extend(r["exclusions"])
        series_rows.extend(r["series"])
        other_files += r["other_files"]
        if r["manifest"] is not None:
            manifest_rows.append(r["manifest"])
            sid = r["manifest"]["patient_id"]
            t2[sid] = r["t2"]
    series_table = pd.DataFrame(series_rows, columns=SERIES_COLUMNS)
    manifest = pd.DataFrame(manifest_rows, columns=MANIFEST_COLUMNS)
    manifest["n_files"] = manifest["n_files"].astype("int64")
    missing = [{"patient_id": sid, "role": "mri_t2_sag", "reason": f"no usable '{T2_SAG}' series"}
               for sid in sorted(described - set(manifest["patient_id"]), key=int)]
    for m in missing:
        log.warning("RSNA study %s: %s", m["patient_id"], m["reason"])
    coords, coord_excl = _place_coordinates(coords, series_table, t2,
                                            set(zip(series_df["study_id"], series_df["series_id"])))
    exclusions.extend(coord_excl)
    excl = pd.DataFrame(exclusions, columns=EXCLUSION_COLUMNS)
    for reason, n in Counter(excl["reason"]).items():
        log.warning("RSNA 2024 %s: %d x %s", root, n, reason)
    manifest.attrs.update(root=root, missing=missing,
                          skipped={"unexpected file name in a series folder": other_files})
    counts = {"studies_labelled": len(labelled), "studies_described": len(described),
              "studies_with_t2_sag": int(len(manifest)), "series": int(len(series_table)),
              "label_rows": int(len(labels)), "blank_label_cells": int(n_blank),
              "coordinates": int(len(coords)), "exclusions": dict(Counter(excl["reason"])),
              "unexpected_files": int(other_files)}
    return RsnaDataset(root, manifest, labels, coords, series_table, excl, counts)


def _run(tasks: list[tuple], workers: int | None, progress: bool) -> list[dict]:
    if workers is None:  # auto: every core, but not worth spawning workers for a handful
        workers = (os.cpu_count() or 1) if len(tasks) >= AUTO_POOL_MIN_STUDIES else 1
    workers = int(workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="rsna2024 index", unit="study")
    out = []
    if workers <= 1 or len(tasks) <= 1:
        it = map(_index_study_args, tasks)
        for r in it:
            out.append(r)
            if bar is not None:
                bar.update()
    else:
        # spawn: safe when the parent already initialised JAX or threads (fork is not); the
        # workers exit when this process is killed (workers.spawn_pool)
        with spawn_pool(workers) as ex:
            for r in ex.map(_index_study_args, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers)))):
                out.append(r)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return out


def _place_coordinates(coords: pd.DataFrame, series_table: pd.DataFrame, t2: dict, described: set):
    """Attach the series role, and for the chosen sagittal T2 the slice index and LPS mm; drop
    (and return as exclusions) rows whose series (unknown, or described but not downloaded) or
    instance file is not there."""
    lines = coords.attrs.get("line", np.arange(len(coords)) + 2)
    roles = {(r.study_id, r.series_id): (r.role, r.paths) for r in series_table.itertuples()}
    excl, rows = [], []
    instances_cache: dict = {}
    for i, r in enumerate(coords.itertuples(index=False)):
        key = (r.study_id, r.series_id)
        where = f"{COORDINATES_CSV} line {lines[i]}"
        if key in described and key not in roles:
            excl.append((r.study_id, r.series_id, "coordinates for a series not downloaded",
                         f"{where}: series {r.series_id} of study {r.study_id} has no files"))
            continue
        if key not in roles:
            excl.append((r.study_id, r.series_id, "coordinates for an unknown series",
                         f"{where}: series {r.series_id} of study {r.study_id} is not in {SERIES_CSV}"))
            continue
        role, paths = roles[key]
        if key not in instances_cache:
            instances_cache[key] = {int(_INSTANCE_RE.match(os.path.basename(p)).group(1))
                                    for p in paths.split(";")}
        if r.instance_number not in instances_cache[key]:
            excl.append((r.study_id, r.series_id, "coordinates for a missing instance",
                         f"{where}: {IMAGES_DIR}/{r.study_id}/{r.series_id}/{r.instance_number}.dcm not found"))
            continue
        d = x_mm = y_mm = z_mm = np.nan
        chosen = t2.get(r.study_id)
        if chosen is not None and chosen[0] == r.series_id:
            d = chosen[1][r.instance_number]
            affine = np.asarray(chosen[2])
            x_mm, y_mm, z_mm = (affine @ np.array([d, r.y, r.x, 1.0]))[:3]
        rows.append((r.study_id, r.series_id, role, r.instance_number, r.condition, r.level, r.x, r.y,
                     d, x_mm, y_mm, z_mm))
    out = pd.DataFrame(rows, columns=COORD_COLUMNS)
    out["d"] = out["d"].astype("Int64") if len(out) else out["d"]
    return out, excl


# --------------------------------------------------------------------------- derived labels


def level_grades(labels: pd.DataFrame, condition: str = "spinal_canal_stenosis") -> pd.DataFrame:
    """One row per study: ``patient_id``, ``{condition}_{LEVEL}`` grades (NaN where blank) and
    ``stenosis_grade`` = the worst graded level (NaN when no level is graded)."""
    if condition not in CONDITIONS:
        raise CohortError(f"unknown RSNA condition {condition!r} (expected one of {CONDITIONS})")
    sub = labels[labels["condition"] == condition]
    wide = sub.pivot(index="study_id", columns="level", values="grade")
    wide = wide.reindex(columns=list(LEVELS)).astype(float)
    studies = sorted(set(labels["study_id"]), key=int)
    wide = wide.reindex(studies)
    out = pd.DataFrame({"patient_id": studies})
    for lv in LEVELS:
        out[f"{condition}_{lv}"] = wide[lv].to_numpy()
    out["stenosis_grade"] = wide.max(axis=1, skipna=True).to_numpy()
    return out


__all__ = [
    "CONDITIONS",
    "COORD_CONDITIONS",
    "COORD_LEVELS",
    "CSV_LEVELS",
    "RsnaDataset",
    "SERIES_ROLES",
    "SEVERITY",
    "index_study",
    "level_grades",
    "read_coordinates",
    "read_rsna2024",
    "read_series_descriptions",
    "read_train_csv",
]
