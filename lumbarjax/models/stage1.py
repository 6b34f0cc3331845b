"""Stage-1 outputs as stage-2 features: the grader's X-ray grades and the pretrained MRI encoder's
stenosis grade become columns of the outcome records, without leakage.

* X-ray: the grader's out-of-fold table (``grader/oof.csv`` of lumbarjax.pipelines.crossval) gives
  every patient a grade predicted by the fold model that held that patient out. From it come
  ``xray_expected_grade`` = Σ_k k·prob_grade_k and ``xray_prob_grade_k`` when the table has class
  probabilities, else ``xray_pred_grade``, and ``xray_pred_grade_<LEVEL>`` per level when the
  grader predicts levels (columns ``pred_grade_L1L2`` …); with the level-by-level scale
  (pipelines.xray_levels, whose columns join grader/oof.csv) also ``xray_level_grade``,
  ``xray_scale``, ``xray_dhi_<LEVEL>`` (disc height index) and ``xray_listhesis_abs_mm_<LEVEL>``.
  The level grades' cut points are fitted in the grader's training folds and the landmark
  models on a separate landmark cohort, so these columns are out of fold too.
* MRI: CORN logits of the pretrained stenosis grader (lumbarjax.pipelines.pretrain), which never saw
  the outcome cohort, give ``mri_stenosis_expected`` and ``mri_stenosis_prob_k``; a grader by
  level (``pretrain.levels``) gives them for the worst level and, in full detail,
  ``mri_stenosis_expected_<LEVEL>``.

Patients without the modality get NaN: the linear models impute them with a missing indicator.
:func:`check_fold_honest` verifies, from the folds' ``split.json`` files, that no patient's score
comes from a model that trained on that patient.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lumbarjax.errors import CohortError
from lumbarjax.schema import LEVELS


SUMMARY_XRAY = ("xray_expected_grade", "xray_pred_grade", "xray_level_grade", "xray_scale")


def xray_scores(grader_oof: pd.DataFrame, detail: str = "full") -> pd.DataFrame:
    """``patient_id`` + the ``xray_…`` score columns from a grader out-of-fold table (one row per
    patient; columns ``patient_id, fold, pred_grade`` and optionally ``prob_grade_k``,
    ``pred_grade_<LEVEL>`` and the level scale's columns).

    ``detail``: ``"full"`` — every column named in the module docstring (up to ~25 with the
    level scale); ``"summary"`` — only :data:`SUMMARY_XRAY` (whole-film expected grade, level
    patient grade, scale): on ~160 patients a linear model pays for every noisy column
    (docs/results/outcome_selection.md)."""
    if detail not in ("full", "summary"):
        raise CohortError(f"stage-1 X-ray scores: detail must be 'full' or 'summary', got {detail!r}")
    for col in ("patient_id", "fold", "pred_grade"):
        if col not in grader_oof.columns:
            raise CohortError(f"grader out-of-fold table: no column {col!r} (have {list(grader_oof.columns)})")
    if grader_oof["patient_id"].duplicated().any():
        dup = grader_oof.loc[grader_oof["patient_id"].duplicated(), "patient_id"].tolist()[:3]
        raise CohortError(f"grader out-of-fold table: patient(s) {dup} predicted more than once")
    out = pd.DataFrame({"patient_id": grader_oof["patient_id"].astype(str).to_numpy()})
    probs = sorted((c for c in grader_oof.columns if c.startswith("prob_grade_")),
                   key=lambda c: int(c.rsplit("_", 1)[1]))
    if probs:
        p = grader_oof[probs].to_numpy(float)
        out["xray_expected_grade"] = p @ np.arange(len(probs), dtype=float)
        for j, c in enumerate(probs):
            out[f"xray_prob_grade_{j}"] = p[:, j]
    else:
        out["xray_pred_grade"] = grader_oof["pred_grade"].to_numpy(float)
    for lv in LEVELS:
        if f"pred_grade_{lv}" in grader_oof.columns:
            out[f"xray_pred_grade_{lv}"] = grader_oof[f"pred_grade_{lv}"].to_numpy(float)
    # the level-by-level X-ray scale (pipelines.xray_levels): patient grade, scale and the measured
    # per-level disc height index and listhesis (magnitude, mm)
    for src, dst in (("level_pred_grade", "xray_level_grade"), ("scale", "xray_scale")):
        if src in grader_oof.columns:
            out[dst] = grader_oof[src].to_numpy(float)
    for lv in LEVELS:
        if f"dhi_{lv}" in grader_oof.columns:
            out[f"xray_dhi_{lv}"] = grader_oof[f"dhi_{lv}"].to_numpy(float)
        if f"listhesis_mm_{lv}" in grader_oof.columns:
            out[f"xray_listhesis_abs_mm_{lv}"] = np.abs(grader_oof[f"listhesis_mm_{lv}"].to_numpy(float))
    if detail == "summary":
        out = out[["patient_id"] + [c for c in SUMMARY_XRAY if c in out.columns]]
    return out


def mri_scores(patient_ids: Sequence[str], corn_probs: np.ndarray, present: np.ndarray | None = None,
               detail: str = "summary") -> pd.DataFrame:
    """``patient_id, mri_stenosis_expected, mri_stenosis_prob_0 … _{K-1}`` from (N, K) class
    probabilities of the stenosis grade (``ordinal.corn_probs`` of the pretrained grader's
    logits); rows with ``present`` False (no MRI) are NaN.

    By level, (N, L, K) probabilities (``pipelines.mri_levels.level_probs``): the summary columns are
    those of the worst level (the highest expected grade), and ``detail="full"`` adds
    ``mri_stenosis_expected_<LEVEL>`` for every level."""
    if detail not in ("full", "summary"):
        raise CohortError(f"stage-1 MRI scores: detail must be 'full' or 'summary', got {detail!r}")
    p = np.asarray(corn_probs, float)
    if p.ndim not in (2, 3) or p.shape[0] != len(patient_ids) or (p.ndim == 3 and p.shape[1] != len(LEVELS)):
        raise CohortError(f"MRI stenosis probabilities: shape {p.shape}, expected ({len(patient_ids)}, K) "
                          f"or ({len(patient_ids)}, {len(LEVELS)}, K)")
    p = p.copy()
    if present is not None:
        p[~np.asarray(present, bool)] = np.nan
    grades = np.arange(p.shape[-1], dtype=float)
    per_level = None
    if p.ndim == 3:
        per_level = p @ grades                                        # (N, L) expected grade per level
        worst = np.argmax(np.nan_to_num(per_level, nan=-1.0), axis=1)
        p = p[np.arange(len(p)), worst]
    out = pd.DataFrame({"patient_id": [str(x) for x in patient_ids],
                        "mri_stenosis_expected": p @ grades})
    for k in range(p.shape[1]):
        out[f"mri_stenosis_prob_{k}"] = p[:, k]
    if per_level is not None and detail == "full":
        for j, lv in enumerate(LEVELS):
            out[f"mri_stenosis_expected_{lv}"] = per_level[:, j]
    return out


def attach(records: pd.DataFrame, *scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``records`` with the score tables' columns joined on patient_id (NaN where a patient has
    no score), and the list of added columns."""
    out = records.copy()
    added: list[str] = []
    ids = out["patient_id"].astype(str)
    for tab in scores:
        cols = [c for c in tab.columns if c != "patient_id"]
        clash = sorted(set(cols) & set(out.columns))
        if clash:
            raise CohortError(f"stage-1 scores: column(s) {clash} already in the records")
        t = tab.set_index(tab["patient_id"].astype(str))[cols]
        joined = t.reindex(ids)
        for c in cols:
            out[c] = joined[c].to_numpy()
        added += cols
    return out, added


def fold_training_ids(fold_dir: str) -> set[str]:
    """The patients a fold's model learned from or was selected on (``split.json``'s inner_train
    and inner_val)."""
    path = os.path.join(fold_dir, "split.json")
    if not os.path.exists(path):
        raise CohortError(f"stage-1 fold honesty: {path} is missing")
    with open(path) as fh:
        split = json.load(fh)
    return set(map(str, split.get("inner_train", []))) | set(map(str, split.get("inner_val", [])))


def check_fold_honest(scores: pd.DataFrame, run_dir: str | None = None,
                      training_ids: Mapping[int, set] | None = None, *, what: str = "X-ray grades") -> int:
    """Raise CohortError if any patient's score came from a fold model that trained on it.

    ``scores`` has ``patient_id`` and ``fold`` (the fold model that predicted the row); the fold
    models' training patients come from ``training_ids`` ({fold: ids}) or from
    ``<run_dir>/fold_<f>/split.json``. Returns the number of rows checked.
    """
    if "fold" not in scores.columns:
        raise CohortError(f"stage-1 {what}: no 'fold' column to check fold honesty")
    folds = sorted(int(f) for f in pd.unique(scores["fold"]))
    if training_ids is None:
        if run_dir is None:
            raise CohortError("check_fold_honest: give run_dir or training_ids")
        training_ids = {f: fold_training_ids(os.path.join(run_dir, f"fold_{f}")) for f in folds}
    bad = [(str(p), int(f)) for p, f in zip(scores["patient_id"], scores["fold"])
           if str(p) in training_ids[int(f)]]
    if bad:
        raise CohortError(f"stage-1 {what}: {len(bad)} patient(s) scored by a fold model that trained on "
                          f"them, e.g. {bad[:3]} (patient, fold)")
    return len(scores)
