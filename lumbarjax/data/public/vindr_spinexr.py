"""VinDr-SpineXR (PhysioNet, credentialed) as downloaded: DICOM films + radiologists' boxes.

Layout (PhysioNet ``vindr-spinexr/1.0.0``)::

    root/
      annotations/train.csv        one row per box (or one "No finding" row per reader)
      annotations/test.csv
      train_images/<image_id>.dicom
      test_images/<image_id>.dicom

Annotation columns (extra columns such as ``study_id`` / ``series_id`` are kept but unused)::

    image_id, lesion_type, xmin, ymin, xmax, ymax, rad_id

Boxes are in pixels of the stored image (x = column, y = row, 0-based). A "No finding" row
has empty box fields. Several radiologists (``rad_id``) may read one image.

:func:`read_annotations` validates the CSV (unknown lesion type, non-numeric or inverted
box, a box on a "No finding" row -> :class:`CohortError` naming the file and CSV line).
:func:`findings_table` turns the boxes into one row per image: per lesion type the number of
readers who marked it and a 0/1 label by a configurable rule. :func:`read_split` joins the
table with the DICOM files: an annotated image whose file is missing, an image file without
annotation, an unreadable header or a box outside the image is a counted, logged exclusion
(``strict=True`` raises instead). Films are read with :func:`lumbarjax.data.dicom.read_xray`.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.data import dicom
from lumbarjax.data.public.tables import read_table
from lumbarjax.errors import CohortError, DicomError

# Lesion types as spelled in the released CSVs (VinDr-SpineXR paper, Nguyen et al., MICCAI 2021:
# 13 abnormalities, 7 of them with enough boxes for the detection benchmark, plus "No finding").
NO_FINDING = "No finding"
LESION_TYPES = (
    "Osteophytes", "Disc space narrowing", "Surgical implant", "Foraminal stenosis",
    "Spondylolysthesis", "Vertebral collapse", "Other lesions",
    "Enthesophytes", "Sclerotic lesion", "Subchondral sclerosis", "Fracture", "Foreign body",
    "Ankylosis",
)
# The findings that reflect lumbar degeneration (used as labels for the grader's pretraining).
DEGENERATIVE_TYPES = ("Osteophytes", "Disc space narrowing", "Spondylolysthesis", "Foraminal stenosis")
COLUMNS = ("image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax", "rad_id")
BOX = ("xmin", "ymin", "xmax", "ymax")
SPLITS = ("train", "test")


def finding_column(lesion_type: str) -> str:
    """'Disc space narrowing' -> 'finding_disc_space_narrowing'."""
    return "finding_" + re.sub(r"[^a-z0-9]+", "_", lesion_type.lower()).strip("_")


def read_annotations(csv_path) -> pd.DataFrame:
    """The annotations CSV, validated. Returns its rows with ``xmin..ymax`` float (NaN on
    "No finding" rows), ``image_id``/``rad_id``/``lesion_type`` str and ``csv_line`` (the
    1-based line number in the file, header = line 1) for later messages."""
    csv_path = os.fspath(csv_path)
    df = read_table(csv_path, list(COLUMNS), "the VinDr-SpineXR annotations CSV "
                    f"({', '.join(COLUMNS)})").copy()
    df["csv_line"] = np.arange(len(df)) + 2
    bad_id = df["image_id"] == ""
    if bad_id.any():
        raise CohortError(f"{csv_path}: line {int(df.loc[bad_id, 'csv_line'].iloc[0])}: empty image_id")
    known = set(LESION_TYPES) | {NO_FINDING}
    unknown = ~df["lesion_type"].isin(known)
    if unknown.any():
        row = df.loc[unknown].iloc[0]
        raise CohortError(f"{csv_path}: line {int(row['csv_line'])}: unknown lesion_type "
                          f"{row['lesion_type']!r} (known: {sorted(known)})")
    for c in BOX:
        text = df[c].str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = (text != "") & values.isna()
        if bad.any():
            row = df.loc[bad].iloc[0]
            raise CohortError(f"{csv_path}: line {int(row['csv_line'])}: {c}={row[c]!r} is not a number")
        df[c] = values.astype(float)
    nofind = df["lesion_type"] == NO_FINDING
    has_box = df[list(BOX)].notna()
    partial = ~nofind & ~has_box.all(axis=1)
    if partial.any():
        row = df.loc[partial].iloc[0]
        raise CohortError(f"{csv_path}: line {int(row['csv_line'])}: {row['lesion_type']} box is "
                          "incomplete (xmin, ymin, xmax, ymax all required)")
    boxed_nofind = nofind & has_box.any(axis=1)
    if boxed_nofind.any():
        row = df.loc[boxed_nofind].iloc[0]
        raise CohortError(f"{csv_path}: line {int(row['csv_line'])}: a 'No finding' row has a box")
    inverted = ~nofind & ((df["xmax"] <= df["xmin"]) | (df["ymax"] <= df["ymin"]) |
                          (df[list(BOX)] < 0).any(axis=1))
    if inverted.any():
        row = df.loc[inverted].iloc[0]
        raise CohortError(f"{csv_path}: line {int(row['csv_line'])}: box "
                          f"({row['xmin']}, {row['ymin']}, {row['xmax']}, {row['ymax']}) is empty, "
                          "inverted or negative")
    both = df.groupby(["image_id", "rad_id"])["lesion_type"].agg(
        lambda s: (s == NO_FINDING).any() and (s != NO_FINDING).any())
    if both.any():
        image_id, rad = both[both].index[0]
        raise CohortError(f"{csv_path}: image {image_id}: reader {rad!r} marked both "
                          "'No finding' and lesion boxes")
    return df


def findings_table(annotations: pd.DataFrame, *, rule: str = "any",
                   lesion_types=LESION_TYPES) -> pd.DataFrame:
    """One row per image: ``image_id, n_readers, n_boxes``, then per lesion type
    ``finding_<type>_readers`` (readers who boxed it) and ``finding_<type>`` (0/1 label), and
    ``no_finding`` (1 when the image has no lesion label at all).

    rule: "any" — a lesion type is present when at least one reader boxed it (the VinDr-SpineXR
    benchmark's image-level label); "majority" — when more than half of the image's readers did.
    """
    if rule not in ("any", "majority"):
        raise CohortError(f"findings_table: rule must be 'any' or 'majority', got {rule!r}")
    lesions = annotations[annotations["lesion_type"] != NO_FINDING]
    readers = annotations.groupby("image_id")["rad_id"].nunique()
    out = pd.DataFrame({"image_id": readers.index.astype(str), "n_readers": readers.to_numpy()})
    out["n_boxes"] = lesions.groupby("image_id").size().reindex(out["image_id"]).fillna(0).astype(int).to_numpy()
    counts = lesions.groupby(["image_id", "lesion_type"])["rad_id"].nunique().unstack(fill_value=0)
    any_label = np.zeros(len(out), bool)
    for t in lesion_types:
        col = finding_column(t)
        n = counts[t].reindex(out["image_id"]).fillna(0).astype(int).to_numpy() if t in counts else np.zeros(len(out), int)
        label = n >= 1 if rule == "any" else 2 * n > out["n_readers"].to_numpy()
        out[f"{col}_readers"] = n
        out[col] = label.astype(int)
        any_label |= label
    out["no_finding"] = (~any_label).astype(int)
    return out


@dataclasses.dataclass
class VindrSplit:
    """One split as read from disk.

    findings: ``findings_table`` rows of the usable images plus ``path`` (the DICOM file),
      ``rows``, ``cols`` (pixels) and ``spacing_row_mm``, ``spacing_col_mm`` (NaN when absent).
    annotations: the validated box rows of the usable images.
    excluded: ``image_id, reason`` of every image left out (counted, never silent).
    """
    split: str
    findings: pd.DataFrame
    annotations: pd.DataFrame
    excluded: pd.DataFrame


def _header_geometry(path: str) -> tuple[int, int, float, float]:
    ds = dicom.read_header(path)
    if ds is None:
        raise DicomError(f"{path}: not a DICOM file")
    problem = dicom.header_problem(ds)
    if problem:
        raise DicomError(f"{path}: not an image header ({problem})")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise DicomError(f"{path}: no Rows/Columns in the header")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        sr, sc = (float(spacing[0]), float(spacing[1])) if spacing else (np.nan, np.nan)
    except (TypeError, ValueError, IndexError):
        sr, sc = np.nan, np.nan
    return rows, cols, sr, sc


def read_split(root, split: str = "train", *, rule: str = "any", strict: bool = False,
               tolerance_px: float = 1.0) -> VindrSplit:
    """Read ``annotations/<split>.csv`` and match it with ``<split>_images/*.dicom``.

    Exclusions (logged and listed in ``excluded``; ``strict=True`` raises CohortError instead):
    an annotated image without its DICOM file (partial download), a DICOM file without any
    annotation row, a DICOM header that cannot be read, a box that extends more than
    ``tolerance_px`` beyond the image (wrong file or wrong annotation).
    """
    root = os.fspath(root)
    if split not in SPLITS:
        raise CohortError(f"VinDr-SpineXR: split must be one of {SPLITS}, got {split!r}")
    csv_path = os.path.join(root, "annotations", f"{split}.csv")
    image_dir = os.path.join(root, f"{split}_images")
    ann = read_annotations(csv_path)
    if not os.path.isdir(image_dir):
        raise CohortError(f"{image_dir}: VinDr-SpineXR image folder not found")
    files = {os.path.splitext(f)[0]: os.path.join(image_dir, f) for f in sorted(os.listdir(image_dir))
             if f.lower().endswith((".dicom", ".dcm"))}
    excluded: list[tuple[str, str]] = []
    geometry = {}
    for image_id in sorted(set(ann["image_id"])):
        path = files.get(image_id)
        if path is None:
            excluded.append((image_id, f"annotated in {os.path.basename(csv_path)} but "
                                       f"{image_id}.dicom is missing from {split}_images/"))
            continue
        try:
            geometry[image_id] = (path, *_header_geometry(path))
        except DicomError as e:
            excluded.append((image_id, str(e)))
    for image_id in sorted(set(files) - set(ann["image_id"])):
        excluded.append((image_id, f"{os.path.basename(files[image_id])} has no row in "
                                   f"{os.path.basename(csv_path)}"))
    # Boxes outside the image.
    lesions = ann[ann["lesion_type"] != NO_FINDING]
    for image_id, rows in lesions.groupby("image_id"):
        if image_id not in geometry:
            continue
        _, h, w, _, _ = geometry[image_id]
        out = ((rows["xmin"] < -tolerance_px) | (rows["ymin"] < -tolerance_px)
               | (rows["xmax"] > w + tolerance_px) | (rows["ymax"] > h + tolerance_px))
        if out.any():
            r = rows.loc[out].iloc[0]
            excluded.append((image_id, f"{os.path.basename(csv_path)} line {int(r['csv_line'])}: "
                                       f"{r['lesion_type']} box ({r['xmin']}, {r['ymin']}, {r['xmax']}, "
                                       f"{r['ymax']}) lies outside the {w}x{h} image"))
            del geometry[image_id]
    excluded_df = pd.DataFrame(excluded, columns=["image_id", "reason"])
    if len(excluded_df):
        if strict:
            raise CohortError(f"VinDr-SpineXR {split}: {len(excluded_df)} image(s) unusable, first: "
                              f"{excluded_df['image_id'].iloc[0]}: {excluded_df['reason'].iloc[0]}")
        logging.warning("VinDr-SpineXR %s: %d image(s) excluded (first: %s: %s)", split,
                        len(excluded_df), excluded_df["image_id"].iloc[0], excluded_df["reason"].iloc[0])
    usable = ann[ann["image_id"].isin(geometry)].reset_index(drop=True)
    findings = findings_table(usable, rule=rule)
    geo = pd.DataFrame([(k, *v) for k, v in geometry.items()],
                       columns=["image_id", "path", "rows", "cols", "spacing_row_mm", "spacing_col_mm"])
    findings = findings.merge(geo, on="image_id", how="left", validate="one_to_one")
    logging.info("VinDr-SpineXR %s: %d images usable, %d excluded", split, len(findings), len(excluded_df))
    return VindrSplit(split, findings, usable, excluded_df)


def read_image(split: VindrSplit, image_id: str) -> dicom.XRayImage:
    """The film of ``image_id`` (display-ready pixels, spacing) via ``dicom.read_xray``."""
    hit = split.findings.loc[split.findings["image_id"] == image_id, "path"]
    if hit.empty:
        raise CohortError(f"VinDr-SpineXR {split.split}: no usable image {image_id!r}")
    return dicom.read_xray(hit.iloc[0])


__all__ = ["COLUMNS", "DEGENERATIVE_TYPES", "LESION_TYPES", "NO_FINDING", "VindrSplit",
           "finding_column", "findings_table", "read_annotations", "read_image", "read_split"]
