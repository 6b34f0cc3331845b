"""Cohort: join the image manifest with the clinical table; patient-level folds; summary.

``build_cohort`` is where every patient is either included (one row of ``records``) or
excluded with a counted reason (one row of ``exclusions``). Reasons, checked in this order
(a patient gets the first that applies):

* ``"conflicting identities"`` (or any other reason the indexer gave in
  ``manifest.attrs["excluded"]``) — the DICOM headers under the patient's PatientID disagree on
  PatientName / PatientBirthDate / PatientSex, so the images may belong to two people;
* ``"duplicate clinical rows"`` — the clinical table has conflicting rows for the id (see
  :func:`lumbarjax.data.clinical.validate_clinical`; identical duplicate rows keep one row and
  are not excluded);
* ``"ambiguous images"`` — the manifest holds more than one row for the same (patient, role)
  (a hand-edited manifest); we do not pick one;
* ``"no clinical row"`` — images but no row in the clinical table;
* ``"no images"`` — a clinical row but neither an X-ray nor an MRI in the manifest;
* ``"no usable label"`` — no outcome label (``zcq_success``, ``back_pain_improved50``,
  ``leg_pain_improved50``, ``back_pain_post``, ``leg_pain_post`` all missing) and no X-ray
  grade that could be used (a grade counts only when the patient has an X-ray).

A patient with only one modality is included (``has_xray`` / ``has_mri`` False): the models
mask a missing modality. Exclusions are logged with the patient_id only (no PHI).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.data import clinical, outcomes
from lumbarjax.errors import CohortError
from lumbarjax.schema import BINARY_HEADS as BINARY_LABELS
from lumbarjax.schema import REGRESSION_HEADS as CONTINUOUS_LABELS
from lumbarjax.schema import ROLE_PREFIX as ROLES  # manifest role -> records column prefix

EXCLUSION_COLUMNS = ["patient_id", "reason", "detail"]


def _str_id(v: Any) -> Any:
    return clinical.id_to_str(v)


def _resolve(paths: Any, root: str) -> str:
    """";"-joined manifest paths (relative to ``root``) → ";"-joined absolute paths ("" if none)."""
    if paths is None or (isinstance(paths, float) and np.isnan(paths)):
        return ""
    parts = [p.strip() for p in str(paths).split(";") if p.strip()]
    return ";".join(os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p)) for p in parts)


def translate_ids(manifest_ids: pd.Series, clin: pd.DataFrame, cfg) -> pd.Series:
    """DICOM PatientID → patient_id via ``cfg.id_map`` and/or the ``cfg.id_map_column`` column."""
    mapping = {str(k): str(v) for k, v in cfg.id_map.items()}
    if cfg.id_map_column:
        col = cfg.id_map_column
        if col not in clin.columns:
            raise CohortError(f"id_map_column {col!r} is not a column of the clinical table")
        pairs = clin[[col, cfg.id_column]].dropna()
        pairs = pairs.assign(**{col: pairs[col].map(_str_id)}).drop_duplicates()
        clash = pairs[pairs[col].duplicated(keep=False)]
        if len(clash):
            raise CohortError(
                f"clinical column {col!r}: DICOM PatientID(s) {sorted(clash[col].unique())} map to "
                "more than one patient_id"
            )
        mapping.update(dict(zip(pairs[col], pairs[cfg.id_column])))
    return manifest_ids.map(lambda v: mapping.get(v, v))


def _usable(df: pd.DataFrame, grade_cols: Sequence[str], mri_label_cols: Sequence[str]) -> pd.Series:
    """An outcome label, or an X-ray grade with an X-ray, or an MRI label with an MRI."""
    def any_of(cols):
        cols = [c for c in cols if c in df.columns]
        return df[cols].notna().any(axis=1) if cols else pd.Series(False, index=df.index)

    return (any_of(BINARY_LABELS + CONTINUOUS_LABELS) | (any_of(grade_cols) & df["has_xray"])
            | (any_of(mri_label_cols) & df["has_mri"]))


def build_cohort(
    manifest: pd.DataFrame,
    clinical_df: pd.DataFrame,
    config: Any = None,
    *,
    root: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join manifest and clinical table into one record per usable patient.

    Args:
      manifest: from ``lumbarjax.data.index`` — columns ``patient_id, role ("xray" |
        "mri_t2_sag"), source ("dicom" | "nifti"), paths`` (";"-joined, relative to ``root``) …
        Rows with other roles are ignored (logged count). The manifest's ``patient_id`` is the
        DICOM PatientID; ``config.id_map`` / ``config.id_map_column`` may translate it.
      clinical_df: the clinical table as read by ``read_clinical`` (validated here with
        ``validate_clinical``; passing an already validated table is fine).
      config: outcome config (:func:`lumbarjax.data.clinical.default_outcome_config`).
      root: folder the manifest paths are relative to. Default: ``manifest.attrs["root"]`` if
        set, else the current directory (logged as a warning). Absolute paths are kept.

    Returns:
      (records, exclusions).
      records: one row per included patient, sorted by patient_id: ``patient_id, xray_paths,
        xray_source, mri_paths, mri_source`` (";"-joined absolute paths / "dicom" | "nifti", ""
        when missing), ``has_xray, has_mri`` (bool), then every clinical column and the derived
        outcome columns (``derive_outcomes``). ``records.attrs["validation_problems"]`` holds
        the validation problems (list of dicts: patient_id, column, value, problem).
      exclusions: ``patient_id, reason, detail``, one row per excluded patient (see module
        docstring for the reasons).

    Raises:
      CohortError: manifest lacks required columns, or an id mapping is contradictory.
      ClinicalError: the clinical table lacks ``patient_id`` (from validation).
    """
    cfg = clinical.resolve_config(config)
    idc = cfg.id_column
    need = {"patient_id", "role", "paths"}
    if not need <= set(manifest.columns):
        raise CohortError(f"manifest lacks column(s) {sorted(need - set(manifest.columns))}")
    if root is None:
        root = manifest.attrs.get("root")
        if root is None:
            root = os.getcwd()
            logging.warning("build_cohort: no root given; manifest paths resolved against %s", root)
    root = os.path.abspath(os.fspath(root))

    clin, problems = clinical.validate_clinical(clinical_df, cfg)
    dup_ids = set(clin.attrs.get("conflicting_duplicate_ids", []))

    man = manifest.copy()
    man["patient_id"] = translate_ids(man["patient_id"].map(_str_id), clin, cfg)
    unknown_roles = man.loc[~man["role"].isin(list(ROLES)), "role"]
    if len(unknown_roles):
        logging.info("build_cohort: ignoring %d manifest row(s) with roles %s",
                     len(unknown_roles), sorted(unknown_roles.astype(str).unique()))
    no_pid = man["patient_id"].isna()
    if no_pid.any():
        logging.warning("build_cohort: %d manifest row(s) without patient_id ignored", int(no_pid.sum()))
    man = man[man["role"].isin(list(ROLES)) & ~no_pid]
    if "source" not in man.columns:
        man["source"] = "dicom"
    man["abs_paths"] = man["paths"].map(lambda p: _resolve(p, root))
    man = man[man["abs_paths"] != ""]
    dup_img = man.duplicated(["patient_id", "role"], keep=False)
    ambiguous = {
        pid: sorted(g["role"].unique()) for pid, g in man[dup_img].groupby("patient_id")
    }
    man = man[~dup_img]

    img = pd.DataFrame({"patient_id": pd.Series(sorted(set(man["patient_id"]) | set(ambiguous)),
                                                dtype=object)})
    for role, prefix in ROLES.items():
        sub = man.loc[man["role"] == role, ["patient_id", "abs_paths", "source"]].astype(object)
        sub = sub.rename(columns={"abs_paths": f"{prefix}_paths", "source": f"{prefix}_source"})
        img = img.merge(sub, on="patient_id", how="left")
        img[f"{prefix}_paths"] = img[f"{prefix}_paths"].fillna("").astype(object)
        img[f"{prefix}_source"] = img[f"{prefix}_source"].fillna("").astype(str).astype(object)
        img[f"has_{prefix}"] = img[f"{prefix}_paths"] != ""

    derived = outcomes.derive_outcomes(clin, cfg)
    derived = derived.rename(columns={idc: "patient_id"}) if idc != "patient_id" else derived
    merged = img.merge(derived, on="patient_id", how="outer", indicator=True)
    for prefix in ROLES.values():
        merged[f"{prefix}_paths"] = merged[f"{prefix}_paths"].fillna("").astype(object)
        merged[f"{prefix}_source"] = merged[f"{prefix}_source"].fillna("").astype(object)
        merged[f"has_{prefix}"] = merged[f"has_{prefix}"].fillna(False).astype(bool)
    usable = _usable(merged, cfg.grade_columns, tuple(cfg.mri_label_columns))

    index_excl = {translate_ids(pd.Series([_str_id(e["patient_id"])]), clin, cfg).iloc[0]: e
                  for e in manifest.attrs.get("excluded", [])}
    pid = merged["patient_id"]
    conditions = [
        pid.isin(list(index_excl)).to_numpy(),
        pid.isin(dup_ids).to_numpy(),
        pid.isin(list(ambiguous)).to_numpy(),
        (merged["_merge"] == "left_only").to_numpy(),
        ~(merged["has_xray"] | merged["has_mri"]).to_numpy(),
        ~usable.to_numpy(),
    ]
    reasons = ["excluded by the indexer", "duplicate clinical rows", "ambiguous images", "no clinical row", "no images",
               "no usable label"]
    details = {
        "duplicate clinical rows": "conflicting rows for this patient_id in the clinical table",
        "ambiguous images": "more than one manifest row for the same role",
        "no clinical row": "images in the manifest but no row in the clinical table",
        "no images": "clinical row but no X-ray and no MRI in the manifest",
        "no usable label": "no outcome label, no X-ray grade usable with an X-ray (and no MRI label "
                           "usable with an MRI)",
    }
    reason = np.select(conditions, reasons, default="")
    keep = reason == ""
    excl = [{"patient_id": p, "reason": r,
             "detail": details[r] + (f" {ambiguous[p]}" if r == "ambiguous images" else "")}
            if r != "excluded by the indexer" else
            {"patient_id": p, "reason": index_excl[p]["reason"], "detail": index_excl[p]["detail"]}
            for p, r in zip(pid[~keep], reason[~keep])]
    for p in sorted(set(index_excl) - set(pid)):
        excl.append({"patient_id": p, **{k: index_excl[p][k] for k in ("reason", "detail")}})
    for p in sorted(dup_ids - set(pid)):
        excl.append({"patient_id": p, "reason": "duplicate clinical rows",
                     "detail": "conflicting rows for this patient_id in the clinical table"})
    for e in excl:
        logging.info("cohort exclusion: patient_id=%s reason=%s", e["patient_id"], e["reason"])

    head = ["patient_id", "xray_paths", "xray_source", "mri_paths", "mri_source", "has_xray", "has_mri"]
    records = merged.loc[keep].drop(columns=["_merge"])
    records = records[head + [c for c in records.columns if c not in head]]
    records = records.sort_values("patient_id", kind="stable").reset_index(drop=True)
    records.attrs = {"validation_problems": problems.to_dict("records"), "root": root}
    exclusions = pd.DataFrame(excl, columns=EXCLUSION_COLUMNS)
    exclusions = exclusions.sort_values(["reason", "patient_id"], kind="stable").reset_index(drop=True)
    logging.info("cohort: %d included, %d excluded", len(records), len(exclusions))
    return records, exclusions


def check_not_empty(records: pd.DataFrame, exclusions: pd.DataFrame, clinical_df: pd.DataFrame,
                    manifest: pd.DataFrame, clinical_source: str | None = None) -> None:
    """CohortError naming the clinical table when the join kept no patient, with the exclusion
    counts and a sample of ids on both sides (shifted columns or another id format show here)."""
    if len(records):
        return
    source = clinical_source or clinical_df.attrs.get("source", "the clinical table")
    by_reason = exclusions["reason"].value_counts().to_dict() if len(exclusions) else {}
    by_reason = {str(k): int(v) for k, v in by_reason.items()}
    table_ids = [str(v) for v in clinical_df.get("patient_id", pd.Series(dtype=object)).dropna()[:3]]
    image_ids = sorted({str(v) for v in manifest.get("patient_id", pd.Series(dtype=object)).dropna()})[:3]
    raise CohortError(
        f"{source}: 0 patients left after joining it with the images ({len(clinical_df)} table "
        f"rows, {manifest['patient_id'].nunique() if 'patient_id' in manifest else 0} patients "
        f"with images; excluded by reason: {by_reason or 'none'}). patient_id in the table looks "
        f"like {table_ids}, the DICOM PatientID like {image_ids}: check the table's columns "
        "and delimiter, or map the ids with clinical.id_map / id_map_column")


# ----------------------------------------------------------------------------- folds


def _strata_keys(records: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One text column per stratification column; NaN → "missing" (its own stratum)."""
    out = {}
    for col in columns:
        if col not in records.columns:
            raise CohortError(f"make_folds: stratify_on column {col!r} is not in the records")
        v = records[col]
        out[col] = v.map(lambda x: "missing" if pd.isna(x) else str(x))
    return pd.DataFrame(out, index=records.index)


def _merge_small_strata(keys: pd.DataFrame, k: int) -> pd.Series:
    """Strata with fewer than ``k`` members are coarsened so that StratifiedKFold can split.

    Fallback (logged as a warning): for a combination of columns, a small stratum first drops
    its last columns one by one (``zcq_success|xray_grade`` → ``zcq_success``); strata still
    smaller than ``k`` are pooled into one ``"<small strata>"`` stratum; if that pool is itself
    smaller than ``k`` it joins the smallest stratum that has at least ``k`` members (or all
    patients become one stratum).
    """
    cols = list(keys.columns)
    label = keys[cols].agg("|".join, axis=1)
    for depth in range(len(cols) - 1, 0, -1):
        counts = label.map(label.value_counts())
        small = counts < k
        if not small.any():
            break
        label = label.where(~small, keys[cols[:depth]].agg("|".join, axis=1) + "|*")
    counts = label.map(label.value_counts())
    small = counts < k
    if small.any():
        label = label.where(~small, "<small strata>")
        vc = label.value_counts()
        if vc.get("<small strata>", k) < k:
            big = vc[(vc >= k) & (vc.index != "<small strata>")]
            target = sorted(big.index, key=lambda s: (big[s], s))[0] if len(big) else "<all>"
            label = label.where(label != "<small strata>", target)
            if target == "<all>":
                label[:] = "<all>"
    return label


def make_folds(
    records: pd.DataFrame,
    k: int = 5,
    seed: int = 0,
    stratify_on: str | Sequence[str] | None = "zcq_success",
) -> np.ndarray:
    """Patient-level stratified k-fold assignment.

    Args:
      records: one row per patient (``patient_id`` unique), e.g. from :func:`build_cohort`.
      k: number of folds, 2 ≤ k ≤ number of patients.
      seed: the assignment is a deterministic function of (patient ids, stratum values, k,
        seed) — it does not depend on the row order of ``records``.
      stratify_on: a column, a list of columns (stratified on their combination), or None
        (plain shuffled k-fold). Missing values (NaN) form their own stratum. Strata with
        fewer than k members are merged (see ``_merge_small_strata``) with a warning instead
        of failing.

    Returns:
      (N,) int64 fold index in 0..k−1 aligned with the rows of ``records``. Within each
      stratum the fold sizes differ by at most one (sklearn StratifiedKFold, shuffled).

    Raises:
      CohortError: k < 2, k > number of patients, a duplicate patient_id, or an unknown column.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(records)
    if k < 2:
        raise CohortError(f"make_folds: k must be >= 2, got {k}")
    if k > n:
        raise CohortError(f"make_folds: k={k} folds but only {n} patients")
    if "patient_id" not in records.columns:
        raise CohortError("make_folds: records lack a patient_id column")
    ids = records["patient_id"].map(_str_id)
    if ids.isna().any():
        raise CohortError("make_folds: records contain rows without patient_id")
    dups = sorted(ids[ids.duplicated()].unique())
    if dups:
        raise CohortError(f"make_folds: patient_id(s) {dups} appear in more than one row")

    order = np.argsort(ids.to_numpy(dtype=str), kind="stable")  # canonical order by id
    folds_sorted = np.empty(n, dtype=np.int64)
    if stratify_on is None:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(splitter.split(np.zeros(n))):
            folds_sorted[test] = f
    else:
        cols = [stratify_on] if isinstance(stratify_on, str) else list(stratify_on)
        keys = _strata_keys(records, cols).iloc[order].reset_index(drop=True)
        strata = _merge_small_strata(keys, k)
        raw = keys.agg("|".join, axis=1)
        if not strata.equals(raw):
            merged = sorted(set(raw[strata != raw]))
            logging.warning("make_folds: strata %s have fewer than k=%d patients and were merged",
                            merged, k)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(splitter.split(np.zeros(n), strata.to_numpy())):
            folds_sorted[test] = f
    folds = np.empty(n, dtype=np.int64)
    folds[order] = folds_sorted
    return folds


def check_no_leakage(folds: np.ndarray, records: pd.DataFrame) -> None:
    """Raise CohortError unless every patient_id sits in exactly one fold.

    Args:
      folds: (N,) int fold index aligned with ``records`` rows.
      records: rows with ``patient_id`` (several rows per patient are allowed only if they
        share one fold).
    """
    folds = np.asarray(folds)
    if folds.shape != (len(records),):
        raise CohortError(f"check_no_leakage: folds shape {folds.shape} != ({len(records)},)")
    df = pd.DataFrame({"patient_id": records["patient_id"].map(_str_id).to_numpy(), "fold": folds})
    if df["patient_id"].isna().any():
        raise CohortError("check_no_leakage: records contain rows without patient_id")
    n_folds = df.groupby("patient_id")["fold"].nunique()
    leaked = sorted(n_folds[n_folds > 1].index)
    if leaked:
        raise CohortError(f"check_no_leakage: patient_id(s) {leaked} appear in more than one fold")


# ----------------------------------------------------------------------------- summary


def _counts(series: pd.Series) -> dict[str, int]:
    """Value counts as {str(value): int} with NaN counted as "missing"."""
    keys = series.map(lambda x: "missing" if pd.isna(x) else
                      str(int(x)) if isinstance(x, (int, float, np.number)) and float(x).is_integer()
                      else str(x))
    return {str(k): int(v) for k, v in sorted(keys.value_counts().items())}


def cohort_summary(records: pd.DataFrame, exclusions: pd.DataFrame) -> dict:
    """JSON-serialisable counts — no patient ids, no names, no dates.

    Keys: ``n_included``, ``n_excluded``, ``n_excluded_by_reason`` {reason: n},
    ``modalities`` {"xray_and_mri", "xray_only", "mri_only", "neither": n},
    ``label_available`` {label: n non-missing}, ``class_balance`` {binary label: {"0", "1",
    "missing": n}}, ``grade_distribution`` {grade column: {"0".."K-1", "missing": n}}.
    """
    hx = records.get("has_xray", pd.Series(False, index=records.index)).astype(bool)
    hm = records.get("has_mri", pd.Series(False, index=records.index)).astype(bool)
    labels = [c for c in BINARY_LABELS + CONTINUOUS_LABELS if c in records.columns]
    grades = [c for c in clinical.DEFAULT_GRADE_COLUMNS if c in records.columns]
    grades += sorted(c for c in records.columns if c.startswith("xray_grade") and c not in grades)
    return {
        "n_included": int(len(records)),
        "n_excluded": int(len(exclusions)),
        "n_excluded_by_reason": {str(k): int(v) for k, v in
                                 sorted(exclusions["reason"].value_counts().items())} if len(exclusions) else {},
        "modalities": {
            "xray_and_mri": int((hx & hm).sum()),
            "xray_only": int((hx & ~hm).sum()),
            "mri_only": int((~hx & hm).sum()),
            "neither": int((~hx & ~hm).sum()),
        },
        "label_available": {c: int(records[c].notna().sum()) for c in labels + grades},
        "class_balance": {c: _counts(records[c]) for c in BINARY_LABELS if c in records.columns},
        "grade_distribution": {c: _counts(records[c]) for c in grades},
    }
