"""The RSNA 2024 Lumbar Spine Degenerative Classification challenge metric, so results can be
compared with the Kaggle leaderboard.

As the challenge defines it (its published scoring code): the 25 (condition, level) predictions
of each study are grouped into three condition groups — ``spinal`` (spinal canal stenosis),
``foraminal`` (left + right neural foraminal narrowing), ``subarticular`` (left + right
subarticular stenosis). Each group scores a sample-weighted multi-class log loss over its rows,
weights 1 / 2 / 4 for a true normal-mild / moderate / severe row (predicted probabilities are
normalised to sum to 1 per row, then clipped to [eps, 1 - eps]). A fourth term,
``any_severe_spinal``, is a binary log loss per study: label = any spinal level severe,
prediction = the maximum over the study's spinal levels of the (un-normalised) severe
probability, weight = the largest row weight among the study's spinal levels. The score is the
plain average of the four terms (``any_severe_scalar`` = 1 in the challenge). Lower is better.
A solution without foraminal or subarticular rows (the demo grades only the canal) gets NaN for
those terms and a score over the terms it has: not comparable with the leaderboard.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lumbarjax.errors import LumbarjaxError

GROUPS = {
    "spinal_canal_stenosis": "spinal",
    "left_neural_foraminal_narrowing": "foraminal",
    "right_neural_foraminal_narrowing": "foraminal",
    "left_subarticular_stenosis": "subarticular",
    "right_subarticular_stenosis": "subarticular",
}
SAMPLE_WEIGHTS = (1.0, 2.0, 4.0)  # normal-mild, moderate, severe
PROB_COLUMNS = ("p_normal_mild", "p_moderate", "p_severe")
EPS = 1e-15


def _log_loss(onehot: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of -sum(y * log p) over rows; probs (N, K) normalised per row then clipped."""
    probs = probs / probs.sum(axis=1, keepdims=True)
    probs = np.clip(probs, EPS, 1 - EPS)
    loss = -(onehot * np.log(probs)).sum(axis=1)
    return float(np.average(loss, weights=weights))


def rsna_score(solution: pd.DataFrame, submission: pd.DataFrame, *,
               any_severe_scalar: float = 1.0) -> dict:
    """The challenge score and its four terms.

    Args:
      solution: the true grades, long format ``study_id, condition, level, grade`` (0/1/2; the
        ``labels`` table of :func:`lumbarjax.data.public.rsna2024.read_rsna2024`).
      submission: ``study_id, condition, level`` + :data:`PROB_COLUMNS` for (at least) every
        solution row.
      any_severe_scalar: weight of the any-severe term in the average (1 in the challenge).

    Returns ``{"spinal", "foraminal", "subarticular", "any_severe_spinal", "score"}`` (nats).
    """
    key = ["study_id", "condition", "level"]
    for name, df, cols in (("solution", solution, key + ["grade"]),
                           ("submission", submission, key + list(PROB_COLUMNS))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise LumbarjaxError(f"rsna_score: {name} lacks column(s) {missing}")
    sol = solution[key + ["grade"]].astype({"study_id": str})
    sub = submission[key + list(PROB_COLUMNS)].astype({"study_id": str})
    bad = ~sol["condition"].isin(GROUPS)
    if bad.any():
        raise LumbarjaxError(f"rsna_score: unknown condition {sol['condition'][bad].iloc[0]!r}")
    if sub.duplicated(key).any():
        raise LumbarjaxError("rsna_score: submission has duplicate (study_id, condition, level) rows")
    df = sol.merge(sub, on=key, how="left", validate="one_to_one")
    if df[list(PROB_COLUMNS)].isna().any().any():
        row = df[df[list(PROB_COLUMNS)].isna().any(axis=1)].iloc[0]
        raise LumbarjaxError(f"rsna_score: no prediction for study {row['study_id']}, "
                             f"{row['condition']} {row['level']}")
    grade = df["grade"].to_numpy(int)
    if ((grade < 0) | (grade > 2)).any():
        raise LumbarjaxError("rsna_score: solution grades must be 0, 1 or 2")
    probs = df[list(PROB_COLUMNS)].to_numpy(float)
    if (probs < 0).any():
        raise LumbarjaxError("rsna_score: negative probabilities in the submission")
    onehot = np.eye(3)[grade]
    weights = np.asarray(SAMPLE_WEIGHTS)[grade]
    group = df["condition"].map(GROUPS).to_numpy()
    out = {}
    for g in ("spinal", "foraminal", "subarticular"):
        m = group == g
        out[g] = _log_loss(onehot[m], probs[m], weights[m]) if m.any() else float("nan")
    if not (group == "spinal").any():
        raise LumbarjaxError("rsna_score: the solution has no spinal canal stenosis rows")
    spinal = df.loc[group == "spinal"].assign(severe=(grade[group == "spinal"] == 2).astype(float),
                                             w=weights[group == "spinal"])
    per_study = spinal.groupby("study_id").agg(y=("severe", "max"), w=("w", "max"),
                                                p=("p_severe", "max"))
    p = np.clip(per_study["p"].to_numpy(float), EPS, 1 - EPS)
    y = per_study["y"].to_numpy(float)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    out["any_severe_spinal"] = float(np.average(loss, weights=per_study["w"].to_numpy(float)))
    terms = [out["spinal"], out["foraminal"], out["subarticular"], out["any_severe_spinal"]]
    present = np.isfinite(terms)
    out["score"] = float(np.average(np.asarray(terms)[present],
                                    weights=np.asarray([1, 1, 1, any_severe_scalar])[present]))
    return out


__all__ = ["GROUPS", "PROB_COLUMNS", "SAMPLE_WEIGHTS", "rsna_score"]
