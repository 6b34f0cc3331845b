"""Read the SPIDER lumbar spine MRI dataset (Zenodo 10159290, CC BY 4.0) as downloaded.

Layout (as published on Zenodo, record 10159290), below ``root``::

    images/<id>_t1.mha, <id>_t2.mha, <id>_t2_SPACE.mha    sagittal MR series (MetaImage)
    masks/<same names>                                     0 background, 1-25 vertebrae counted
                                                           from the bottom, 100 spinal canal,
                                                           101-125 partly visible vertebrae,
                                                           201-225 discs counted from the bottom
    overview.csv                 one row per series, keyed by ``new_file_name`` (``<id>_<scan>``)
    radiological_gradings.csv    Patient, IVD label, Modic, UP endplate, LOW endplate,
                                 Spondylolisthesis, Disc herniation, Disc narrowing,
                                 Disc bulging, Pfirrman grade   (so spelled; IVD label N is
                                 mask value 200 + N)

:func:`read_spider` returns the project's manifest (one ``mri_t2_sag`` row per patient, from
``<id>_t2.mha``, else ``<id>_t2_SPACE.mha``; source ``"mha"``; paths relative to ``root``;
geometry from the headers only), a ``series`` table of every scan, the ``gradings`` per disc
level, and (``centres=True``) the centre of every disc and vertebra in each mask in patient
coordinates (LPS mm) — the disc-level centres a localiser learns.

Levels: counted from the bottom, disc N = ``schema.LEVELS[-N]`` (1 = L5S1 … 5 = L1L2) and
vertebra N = L(6 - N) (1 = L5); higher labels are thoracic and get no level. This assumes no
transitional (L6 / sacralised L5) anatomy, which the masks cannot tell.

A mask without its image (half-extracted download) or an unknown grading value raises
:class:`~lumbarjax.errors.CohortError` naming the file; images without a mask, series missing
from overview.csv, overview rows without files, gradings of IVD label 0 and (``centres=True``)
mask values outside the documented labels (ignored; reason "unknown mask label", naming the
values) are logged and counted in ``exclusions``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lumbarjax.data.index import COLUMNS as MANIFEST_COLUMNS
from lumbarjax.data.public.tables import read_table, write_tables
from lumbarjax.data.metaimage import read_metaimage, reorient_sagittal, sitk_affine
from lumbarjax.errors import CohortError, LumbarjaxError
from lumbarjax.schema import LEVELS

log = logging.getLogger(__name__)

OVERVIEW_CSV = "overview.csv"
GRADINGS_CSV = "radiological_gradings.csv"
GRADING_COLUMNS = ["Patient", "IVD label", "Modic", "UP endplate", "LOW endplate",
                   "Spondylolisthesis", "Disc herniation", "Disc narrowing", "Disc bulging",
                   "Pfirrman grade"]
# grading column -> (project column, allowed values)
GRADINGS = {
    "Modic": ("modic", (0, 1, 2, 3)),
    "UP endplate": ("up_endplate", (0, 1)),
    "LOW endplate": ("low_endplate", (0, 1)),
    "Spondylolisthesis": ("spondylolisthesis", (0, 1)),
    "Disc herniation": ("disc_herniation", (0, 1)),
    "Disc narrowing": ("disc_narrowing", (0, 1)),
    "Disc bulging": ("disc_bulging", (0, 1)),
    "Pfirrman grade": ("pfirrmann_grade", (1, 2, 3, 4, 5)),
}
SCANS = {"t2": "mri_t2_sag", "t2_SPACE": "mri_t2_space_sag", "t1": "mri_t1_sag"}
CANAL = 100
DISC_OFFSET = 200
PARTIAL_OFFSET = 100
VERTEBRAE = ("L5", "L4", "L3", "L2", "L1")  # vertebra label 1..5
_NAME_RE = re.compile(r"^(\d+)_(t1|t2|t2_SPACE)\.mha$")
SERIES_COLUMNS = ["patient_id", "scan", "role", "image", "mask", "spacing_mm", "shape"]
CENTRE_COLUMNS = ["patient_id", "scan", "structure", "label", "level", "n_voxels",
                  "d", "h", "w", "x_mm", "y_mm", "z_mm"]
EXCLUSION_COLUMNS = ["patient_id", "file", "reason", "detail"]


def disc_level(ivd_label: int) -> str:
    """IVD label N (mask 200 + N, counted from the bottom) -> ``schema.LEVELS`` name, "" above L1."""
    n = int(ivd_label)
    return LEVELS[len(LEVELS) - n] if 1 <= n <= len(LEVELS) else ""


@dataclass
class SpiderDataset:
    """What :func:`read_spider` returns (tables described in the module docstring).

    root: the SPIDER folder (absolute). manifest: one ``mri_t2_sag`` row per patient
    (``lumbarjax.data.index`` columns). series: every scan (``SERIES_COLUMNS``). gradings: the
    long table per graded disc. overview: ``overview.csv`` as read. centres: the disc and
    vertebra centres of each mask (``CENTRE_COLUMNS``; empty with ``centres=False``).
    exclusions: ``patient_id, file, reason, detail`` of everything left out. counts: patients,
    series, with_t2_sag, graded_discs and the exclusions per reason.
    """

    root: str
    manifest: pd.DataFrame
    series: pd.DataFrame
    gradings: pd.DataFrame
    overview: pd.DataFrame
    centres: pd.DataFrame
    exclusions: pd.DataFrame
    counts: dict = field(default_factory=dict)

    def write(self, out_dir: str) -> dict:
        """Write manifest.csv and the tables as CSV below ``out_dir`` (atomic)."""
        return write_tables(out_dir, self.manifest, {n: getattr(self, n) for n in ("series", "gradings", "centres", "exclusions")})


# --------------------------------------------------------------------------- tables


def _read_csv(path: str, required: list[str]) -> pd.DataFrame:
    return read_table(path, required, f"images/, masks/, {OVERVIEW_CSV} and {GRADINGS_CSV}")


def read_gradings(path: str) -> tuple[pd.DataFrame, list[tuple]]:
    """``radiological_gradings.csv`` -> (long table per disc, exclusions).

    Columns: patient_id, ivd_label, mask_value (200 + N), level (``disc_level``), then the
    eight gradings under :data:`GRADINGS` names (integers). CohortError names line and column
    for a non-integer or out-of-vocabulary value; IVD label 0 rows are excluded and counted."""
    df = _read_csv(path, GRADING_COLUMNS)
    rows, excl = [], []
    for i, rec in enumerate(df.to_dict("records")):
        where = f"{path}: line {i + 2} (Patient={rec['Patient']})"
        if not rec["Patient"].isdigit():
            raise CohortError(f"{where}: Patient {rec['Patient']!r} is not a SPIDER patient number")
        if not rec["IVD label"].isdigit():
            raise CohortError(f"{where}: IVD label {rec['IVD label']!r} is not an integer")
        n = int(rec["IVD label"])
        if n < 1:
            excl.append((rec["Patient"], GRADINGS_CSV, "IVD label 0",
                         f"line {i + 2}: IVD label 0 names no disc (mask values start at 201)"))
            continue
        out = {"patient_id": rec["Patient"], "ivd_label": n, "mask_value": DISC_OFFSET + n,
               "level": disc_level(n)}
        for col, (name, allowed) in GRADINGS.items():
            v = rec[col]
            try:
                iv = int(float(v))
                ok = float(v) == iv and iv in allowed
            except ValueError:
                ok = False
            if not ok:
                raise CohortError(f"{where}, column {col!r}: value {v!r} not in {list(allowed)}")
            out[name] = iv
        rows.append(out)
    cols = ["patient_id", "ivd_label", "mask_value", "level"] + [n for n, _ in GRADINGS.values()]
    g = pd.DataFrame(rows, columns=cols)
    dup = g.duplicated(["patient_id", "ivd_label"])
    if dup.any():
        r = g[dup].iloc[0]
        raise CohortError(f"{path}: patient {r['patient_id']} IVD label {r['ivd_label']} graded twice")
    return g, excl


def _header(path: str) -> tuple[np.ndarray, tuple]:
    """(spacing (D, H, W) mm, shape) of a MetaImage in the project's orientation, header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise LumbarjaxError(f"{path}: unreadable MetaImage header ({str(e).strip().splitlines()[-1]})") from e
    if reader.GetDimension() != 3:
        raise LumbarjaxError(f"{path}: expected a 3-D image, got dimension {reader.GetDimension()}")
    affine = sitk_affine(reader)
    size = tuple(int(v) for v in reader.GetSize())[::-1]
    arr, aff = reorient_sagittal(np.empty(size, np.uint8), affine)
    return np.linalg.norm(aff[:3, :3], axis=0), arr.shape


def is_mask_label(value: int) -> bool:
    """A documented SPIDER mask value: 0, 1-25, 100 (canal), 101-125 (partly visible), 201-225."""
    v = int(value)
    return (v == 0 or 1 <= v <= 25 or v == CANAL or PARTIAL_OFFSET + 1 <= v <= PARTIAL_OFFSET + 25
            or DISC_OFFSET + 1 <= v <= DISC_OFFSET + 25)


def mask_centres(mask_path: str, patient_id: str, scan: str, unknown: list | None = None) -> list[tuple]:
    """Centre (voxel mean, and in LPS mm) of every disc (201-225) and fully visible vertebra (1-25).

    The canal (100) and partly visible vertebrae (101-125) get no centre. Values outside the
    documented ones (:func:`is_mask_label`) are ignored; when ``unknown`` is a list, each is
    appended to it as (value, voxel count)."""
    vol = read_metaimage(mask_path, labels=True)
    m = vol.array
    out = []
    values, n_voxels = np.unique(m, return_counts=True)
    for value, n in zip(values, n_voxels):
        value = int(value)
        if 1 <= value <= 25:
            structure, label, level = "vertebra", value, VERTEBRAE[value - 1] if value <= 5 else ""
        elif DISC_OFFSET + 1 <= value <= DISC_OFFSET + 25:
            structure, label, level = "disc", value - DISC_OFFSET, disc_level(value - DISC_OFFSET)
        else:
            if unknown is not None and not is_mask_label(value):
                unknown.append((value, int(n)))
            continue
        idx = np.argwhere(m == value).astype(float)
        c = idx.mean(axis=0)
        x, y, z = vol.voxel_to_world(c)
        out.append((patient_id, scan, structure, label, level, len(idx), *c, x, y, z))
    return out


def assert_same_grid(image_path: str, mask_path: str) -> None:
    """CohortError when a mask's grid (size, spacing, origin, direction) differs from its image's."""
    import SimpleITK as sitk

    infos = []
    for p in (image_path, mask_path):
        r = sitk.ImageFileReader()
        r.SetFileName(p)
        r.ReadImageInformation()
        infos.append((r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection()))
    (s0, sp0, o0, d0), (s1, sp1, o1, d1) = infos
    if s0 != s1 or not (np.allclose(sp0, sp1, atol=1e-4) and np.allclose(o0, o1, atol=1e-3)
                        and np.allclose(d0, d1, atol=1e-4)):
        raise CohortError(f"{mask_path}: mask grid {s1} / spacing {np.round(sp1, 4).tolist()} / origin "
                          f"{np.round(o1, 3).tolist()} differs from its image {image_path} ({s0} / "
                          f"{np.round(sp0, 4).tolist()} / {np.round(o0, 3).tolist()})")


# --------------------------------------------------------------------------- the dataset


def _scan_files(folder: str, excl: list, what: str) -> dict:
    found = {}
    if not os.path.isdir(folder):
        raise CohortError(f"{folder}: not found (incomplete SPIDER download? expected images/ and masks/)")
    for name in sorted(os.listdir(folder)):
        m = _NAME_RE.match(name)
        if m is None:
            excl.append(("", f"{what}/{name}", "unexpected file", "not <id>_t1|t2|t2_SPACE.mha"))
            continue
        found[(m.group(1), m.group(2))] = f"{what}/{name}"
    return found


def read_spider(root, *, centres: bool = True) -> SpiderDataset:
    """Read a SPIDER folder (see module docstring); no image is copied.

    ``centres=False`` skips decoding the masks (the manifest and tables need headers only).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(root):
        raise CohortError(f"{root}: SPIDER folder not found")
    overview = _read_csv(os.path.join(root, OVERVIEW_CSV), ["new_file_name"])
    gradings, excl = read_gradings(os.path.join(root, GRADINGS_CSV))
    images = _scan_files(os.path.join(root, "images"), excl, "images")
    masks = _scan_files(os.path.join(root, "masks"), excl, "masks")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        pid, scan = orphans[0]
        raise CohortError(f"{os.path.join(root, masks[orphans[0]])}: mask without its image "
                          f"images/{pid}_{scan}.mha ({len(orphans)} such mask(s); re-extract images.zip)")
    listed = set(overview["new_file_name"])
    series_rows, centre_rows = [], []
    for key in sorted(images, key=lambda k: (int(k[0]), list(SCANS).index(k[1]))):
        pid, scan = key
        img = images[key]
        name = f"{pid}_{scan}"
        if name not in listed:
            excl.append((pid, img, "not in overview.csv", f"{name} has no {OVERVIEW_CSV} row"))
        try:
            spacing, shape = _header(os.path.join(root, img))
        except LumbarjaxError as e:
            excl.append((pid, img, "unreadable image", str(e)))
            continue
        mask = masks.get(key, "")
        if not mask:
            excl.append((pid, img, "image without mask", f"masks/{name}.mha not found: no centres"))
        else:
            assert_same_grid(os.path.join(root, img), os.path.join(root, mask))
            if centres:
                unknown: list = []
                centre_rows.extend(mask_centres(os.path.join(root, mask), pid, scan, unknown))
                if unknown:
                    excl.append((pid, mask, "unknown mask label", "value(s) " + ", ".join(
                        f"{v} ({n} voxels)" for v, n in unknown) + " not a SPIDER label (0, 1-25, "
                        "100, 101-125, 201-225): ignored, the other labels used"))
        series_rows.append((pid, scan, SCANS[scan], img, mask, ";".join(f"{v:.6g}" for v in spacing),
                            ";".join(str(v) for v in shape)))
    on_disk = {f"{p}_{s}" for p, s in images}
    for name in sorted(listed - on_disk):
        excl.append((name.split("_")[0], f"images/{name}.mha", "listed in overview.csv, not downloaded", ""))
    series = pd.DataFrame(series_rows, columns=SERIES_COLUMNS)
    manifest_rows, missing = [], []
    for pid, g in series.groupby("patient_id", sort=False):
        t2 = g[g["scan"].isin(["t2", "t2_SPACE"])]
        if t2.empty:
            missing.append({"patient_id": pid, "role": "mri_t2_sag", "reason": "only T1 series"})
            continue
        r = t2.iloc[0]  # "t2" sorts before "t2_SPACE" (SCANS order)
        reason = f"SPIDER {r['image']}" + ("; T2 SPACE used: no standard T2" if r["scan"] == "t2_SPACE" else "")
        manifest_rows.append({
            "patient_id": pid, "role": "mri_t2_sag", "source": "mha", "paths": r["image"],
            "study_uid": pid, "series_uid": f"{pid}_{r['scan']}", "modality": "MR",
            "series_description": r["scan"], "n_files": 1, "spacing_mm": r["spacing_mm"],
            "shape": r["shape"], "reason": reason})
    manifest = pd.DataFrame(manifest_rows, columns=MANIFEST_COLUMNS)
    manifest["n_files"] = manifest["n_files"].astype("int64")
    manifest.attrs.update(root=root, missing=missing, skipped={})
    exclusions = pd.DataFrame(excl, columns=EXCLUSION_COLUMNS)
    for reason, n in Counter(exclusions["reason"]).items():
        log.warning("SPIDER %s: %d x %s", root, n, reason)
    centre_df = pd.DataFrame(centre_rows, columns=CENTRE_COLUMNS)
    counts = {"patients": int(series["patient_id"].nunique()), "series": int(len(series)),
              "with_t2_sag": int(len(manifest)), "graded_discs": int(len(gradings)),
              "exclusions": dict(Counter(exclusions["reason"]))}
    return SpiderDataset(root, manifest, series, gradings, overview, centre_df, exclusions, counts)


def level_labels(gradings: pd.DataFrame, column: str = "pfirrmann_grade") -> pd.DataFrame:
    """One row per patient: ``{column}_{LEVEL}`` for the five lumbar levels (NaN where not graded)."""
    sub = gradings[gradings["level"] != ""]
    wide = sub.pivot(index="patient_id", columns="level", values=column).reindex(columns=list(LEVELS))
    wide = wide.astype(float)
    wide.columns = [f"{column}_{lv}" for lv in wide.columns]
    return wide.reset_index()


__all__ = [
    "GRADINGS",
    "GRADING_COLUMNS",
    "SCANS",
    "SpiderDataset",
    "assert_same_grid",
    "disc_level",
    "is_mask_label",
    "level_labels",
    "mask_centres",
    "read_gradings",
    "read_spider",
]
