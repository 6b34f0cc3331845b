"""Outcome derivation from a validated clinical table (:mod:`lumbarjax.data.clinical` reads and
validates it): ZCQ subscale scores, ZCQ success (Stucki et al., Spine 1996;21:796–803) and
≥50 % pain improvement, vectorised, NaN where undefined (NaN = label missing = masked
downstream). The settings are ``config.clinical`` (configs/default.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.data.clinical import ZCQ_ITEM_RANGES, resolve_config, zcq_item_columns
from lumbarjax.errors import ClinicalError

__all__ = ["OUTCOME_COLUMNS", "derive_outcomes"]

OUTCOME_COLUMNS = (
    "zcq_symptom_pre",
    "zcq_symptom_post",
    "zcq_function_pre",
    "zcq_function_post",
    "zcq_satisfaction",
    "zcq_success",
    "back_pain_improved50",
    "leg_pain_improved50",
)

# Comparisons of means of item scores against thresholds (e.g. 24/7 - 20.5/7 >= 0.5) are
# done with this tolerance so that floating-point rounding never flips a boundary case.
_TOL = 1e-9

def _subscale(df: pd.DataFrame, prefix: str, when: str, max_missing: int) -> np.ndarray:
    """Mean of answered items, NaN when more than ``max_missing`` items are unanswered.

    Returns (N,) float64. All item columns absent → all NaN. Some present, some absent →
    ClinicalError (a schema problem, not a patient's missing answer).
    """
    cols = zcq_item_columns(prefix, when)
    present = [c for c in cols if c in df.columns]
    if not present:
        return np.full(len(df), np.nan)
    if len(present) != len(cols):
        absent = [c for c in cols if c not in df.columns]
        raise ClinicalError(f"{df.attrs.get('source', 'clinical table')}: ZCQ item column(s) {absent} missing "
                            f"while {present} are present")
    items = df[cols].to_numpy(dtype=float)  # (N, n_items)
    answered = ~np.isnan(items)
    n_answered = answered.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(answered, items, 0.0).sum(axis=1) / n_answered
    return np.where(len(cols) - n_answered <= max_missing, mean, np.nan)


def _check_items_clean(df: pd.DataFrame, idc: str) -> None:
    """derive_outcomes refuses unvalidated item values instead of silently dropping them."""
    for col, (lo, hi) in ZCQ_ITEM_RANGES.items():
        if col not in df.columns:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = (df[col].notna() & num.isna()) | (num < lo) | (num > hi)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            pid = df[idc].iloc[i] if idc in df.columns else f"row {i}"
            raise ClinicalError(
                f"patient {pid}: column {col!r} value {df[col].iloc[i]!r} is not a ZCQ item "
                f"score {lo:g}–{hi:g} ({int(bad.sum())} such value(s)); run validate_clinical first"
            )


def derive_outcomes(df: pd.DataFrame, config: Any = None) -> pd.DataFrame:
    """Copy of ``df`` plus the outcome columns (float64, NaN = undefined / masked).

    ZCQ (Stucki et al., Spine 1996) — higher scores are worse:
      * ``zcq_symptom_pre/post`` = mean of answered items ``zcq_sym_{pre,post}_1..7`` (1–5);
      * ``zcq_function_pre/post`` = mean of answered items ``zcq_fun_{pre,post}_1..5`` (1–4);
      * ``zcq_satisfaction`` = mean of answered items ``zcq_sat_post_1..6`` (1–4);
        a subscale with more than ``max_missing_items_per_subscale`` (1) unanswered items is NaN.
      * ``zcq_success`` (1.0 / 0.0) from three criteria: symptom pre − post ≥ ``mcid_symptom``,
        function pre − post ≥ ``mcid_function``, satisfaction ≤ ``satisfaction_max``;
        rule "all" needs all three, "2of3" at least two. NaN when any of the five subscales
        is missing (complete case for both rules). Comparisons use a 1e-9 tolerance so that
        exact boundary cases (a change of exactly 0.5) count as met.
      * Precomputed ``zcq_success`` in the input: used as is when the table has no ZCQ item
        columns (it must be 0/1, else ClinicalError). When items are present they take
        precedence; the input value is kept as ``zcq_success_reported`` and fills the rows
        where the items do not define success (disagreements are logged as a count).
    Pain (VAS 0–100 mm; the ratio is scale-free, so NRS input gives the same answer):
      * ``back_pain_improved50`` / ``leg_pain_improved50`` = 1.0 when
        (pre − post) / pre ≥ ``pain_improvement_fraction`` (0.5), else 0.0; NaN when pre == 0
        or either value is missing.

    Expects validated input (:func:`validate_clinical`); out-of-range or non-numeric ZCQ items
    raise ClinicalError rather than being dropped silently. Vectorised; no row loops.
    """
    cfg = resolve_config(config)
    idc = cfg.id_column
    out = df.copy()
    _check_items_clean(out, idc)
    mm = int(cfg.max_missing_items_per_subscale)

    sym_pre = _subscale(out, "zcq_sym", "pre", mm)
    sym_post = _subscale(out, "zcq_sym", "post", mm)
    fun_pre = _subscale(out, "zcq_fun", "pre", mm)
    fun_post = _subscale(out, "zcq_fun", "post", mm)
    sat = _subscale(out, "zcq_sat", "post", mm)

    complete = ~np.isnan(np.stack([sym_pre, sym_post, fun_pre, fun_post, sat])).any(axis=0)
    crit = np.stack(
        [
            (sym_pre - sym_post) >= cfg.mcid_symptom - _TOL,
            (fun_pre - fun_post) >= cfg.mcid_function - _TOL,
            sat <= cfg.satisfaction_max + _TOL,
        ]
    )  # (3, N) bool (False where NaN; masked by `complete` below)
    met = crit.sum(axis=0)
    need = 3 if cfg.zcq_rule == "all" else 2
    success = np.where(complete, (met >= need).astype(float), np.nan)

    has_items = any(c in out.columns for c in ZCQ_ITEM_RANGES)
    if "zcq_success" in df.columns:
        reported = pd.to_numeric(df["zcq_success"], errors="coerce").to_numpy(dtype=float)
        bad = (df["zcq_success"].notna().to_numpy() & np.isnan(reported)) | (
            ~np.isin(reported, [0.0, 1.0]) & ~np.isnan(reported)
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            pid = df[idc].iloc[i] if idc in df.columns else f"row {i}"
            raise ClinicalError(f"patient {pid}: zcq_success must be 0 or 1, got {df['zcq_success'].iloc[i]!r}")
        if not has_items:
            success = reported
        else:
            both = ~np.isnan(success) & ~np.isnan(reported)
            n_disagree = int((success[both] != reported[both]).sum())
            if n_disagree:
                logging.warning("zcq_success: %d patient(s) where the reported value differs from the "
                                "items; the items are used", n_disagree)
            out["zcq_success_reported"] = reported
            success = np.where(np.isnan(success), reported, success)

    out["zcq_symptom_pre"] = sym_pre
    out["zcq_symptom_post"] = sym_post
    out["zcq_function_pre"] = fun_pre
    out["zcq_function_post"] = fun_post
    out["zcq_satisfaction"] = sat
    out["zcq_success"] = success.astype(float)
    for region in ("back", "leg"):
        out[f"{region}_pain_improved50"] = _improved(out, region, cfg.pain_improvement_fraction)
    return out


def _improved(df: pd.DataFrame, region: str, fraction: float) -> np.ndarray:
    """(N,) 1.0 / 0.0 / NaN: (pre − post) / pre ≥ fraction; NaN if pre == 0 or a value missing."""
    pre_c, post_c = f"{region}_pain_pre", f"{region}_pain_post"
    if pre_c not in df.columns or post_c not in df.columns:
        return np.full(len(df), np.nan)
    pre = pd.to_numeric(df[pre_c], errors="coerce").to_numpy(dtype=float)
    post = pd.to_numeric(df[post_c], errors="coerce").to_numpy(dtype=float)
    defined = ~np.isnan(pre) & ~np.isnan(post) & (pre != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (pre - post) / pre
    return np.where(defined, (rel >= fraction - _TOL).astype(float), np.nan)
