"""Bayes-optimal ceilings of the synthetic cohort's outcome heads under its known model.

:func:`bayes_auc` gives the best AUC any model can reach for each binary outcome (with all
latents, without the MRI-only stenosis, with the clinical columns alone); :func:`bayes_vas`
the best mean absolute error and R² (mm) of the post-operative VAS heads, from
:func:`vas_post_distribution`, the generator's VAS distribution given the latents.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.synthetic.outcomes import (Q_BACK, Q_LEG, sample_latents, outcome_effects, outcome_logit,
                                          outcome_probabilities, sigmoid)
from lumbarjax.synthetic.streams import stream


def _months_mc(seed: int, n: int) -> np.ndarray:
    """Symptom duration (months) of Monte Carlo patients, from its own stream."""
    return np.clip(np.rint(stream(seed, 2**31 - 6).lognormal(np.log(18.0), 0.7, n)), 3, 240)


def _grade_given_age(age: np.ndarray) -> np.ndarray:
    """(N, 5) P(g = 0..4 | age) of g = clip(round(1.9 + 0.05·(age − 67) + N(0, 1)), 0, 4)."""
    from scipy.stats import norm
    mu = 1.9 + 0.05 * (np.asarray(age, float)[:, None] - 67.0)
    edges = np.array([-np.inf, 0.5, 1.5, 2.5, 3.5, np.inf])
    return np.diff(norm.cdf(edges[None, :] - mu), axis=1)


def bayes_auc(ground_truth: pd.DataFrame | str | os.PathLike, *, n_mc: int = 200_000, seed: int = 0,
              regime: str | Mapping[str, float] = "demo") -> dict:
    """Bayes-optimal AUC of each binary outcome under the outcome ``regime`` of the cohort.

    ``empirical``: AUC of the true probability (``p_…`` column) against the realised outcome
    of the patients in ``ground_truth`` (DataFrame or path to ground_truth.csv).
    ``population``: the same from ``n_mc`` Monte Carlo draws of the generative model.
    ``population_no_stenosis``: population AUC of E[p | age, sex, true grade, symptom months]
    (stenosis severity integrated out) — an upper bound for any model without the MRI.
    ``population_clinical``: population AUC of E[p | age, sex, symptom months] (severity and
    grade integrated out) — the ceiling of the clinical columns alone (no images, no X-ray grade).
    """
    gt = pd.read_csv(ground_truth) if isinstance(ground_truth, (str, os.PathLike)) else ground_truth
    _, eff = outcome_effects(regime)
    rng = stream(seed, 2**31 - 2)
    lat = sample_latents(rng, int(n_mc))
    months = _months_mc(seed, int(n_mc))
    probs = outcome_probabilities(lat["severity"], lat["grade"], lat["age"], lat["female"], months, effects=eff)
    y = (rng.random(n_mc) < probs["zcq_success"]).astype(int)
    qb = np.where(y == 1, Q_BACK[1], Q_BACK[0])
    ql = np.where(y == 1, Q_LEG[1], Q_LEG[0])
    ys = {"zcq_success": y, "back_improved50": (rng.random(n_mc) < qb).astype(int),
          "leg_improved50": (rng.random(n_mc) < ql).astype(int)}
    s_grid = 0.3 + 0.7 * (np.arange(64) + 0.5) / 64  # midpoint rule over U(0.3, 1)
    p_ns = sigmoid(outcome_logit(s_grid[None, :], lat["grade"][:, None], lat["age"][:, None],
                                 lat["female"][:, None], months[:, None], effects=eff)).mean(axis=1)
    pg = _grade_given_age(lat["age"])  # (N, 5)
    p_clin = sum(pg[:, k] * sigmoid(outcome_logit(s_grid[None, :], k, lat["age"][:, None], lat["female"][:, None],
                                                  months[:, None], effects=eff)).mean(axis=1) for k in range(5))
    out: dict[str, Any] = {"n_mc": int(n_mc)}
    for name, pcol in (("zcq_success", "p_zcq_success"), ("back_improved50", "p_back_improved50"),
                       ("leg_improved50", "p_leg_improved50")):
        lab = pd.to_numeric(gt[name], errors="coerce").to_numpy(float)
        out[name] = {
            "empirical": round(metrics_lib.auc(lab, gt[pcol].to_numpy(float)), 4),
            "n": int((~np.isnan(lab)).sum()), "n_positive": int(np.nansum(lab)),
            "population": round(metrics_lib.auc(ys[name], probs[name]), 4),
            # back/leg probabilities are increasing in p: the same ranks, so p's marginals serve
            "population_no_stenosis": round(metrics_lib.auc(ys[name], p_ns), 4),
            "population_clinical": round(metrics_lib.auc(ys[name], p_clin), 4),
        }
    return out


VAS_HEADS = {"back_pain_post": ("back_pain_pre", Q_BACK), "leg_pain_post": ("leg_pain_pre", Q_LEG)}
_R_IMPROVED, _R_NOT_IMPROVED = (0.52, 1.0), (-0.25, 0.45)   # the fraction r of outcomes._draw_vas_post


def vas_post_distribution(pre, p_success, q: tuple[float, float], n_nodes: int = 256):
    """The generator's post-operative VAS given the pre-operative VAS ``pre`` (mm, (N,)) and the
    true ZCQ success probability ``p_success`` ((N,)): ``(values (N, 2·n_nodes), weights)``, a
    quadrature of _draw_vas_post's mixture (improved with probability q0 + (q1 − q0)·p, then
    floor(pre·(1 − r)), r ~ U(0.52, 1); otherwise min(100, ceil(pre·(1 − r))), r ~ U(−0.25, 0.45);
    pre = 0: U{0..30})."""
    pre = np.asarray(pre, float)[:, None]
    q_imp = (q[0] + (q[1] - q[0]) * np.asarray(p_success, float))[:, None]
    u = (np.arange(n_nodes) + 0.5) / n_nodes
    r_imp = _R_IMPROVED[0] + (_R_IMPROVED[1] - _R_IMPROVED[0]) * u
    r_not = _R_NOT_IMPROVED[0] + (_R_NOT_IMPROVED[1] - _R_NOT_IMPROVED[0]) * u
    values = np.concatenate([np.floor(pre * (1.0 - r_imp)), np.minimum(100.0, np.ceil(pre * (1.0 - r_not)))], axis=1)
    weights = np.concatenate([np.broadcast_to(q_imp / n_nodes, (len(pre), n_nodes)),
                              np.broadcast_to((1.0 - q_imp) / n_nodes, (len(pre), n_nodes))], axis=1)
    zero = pre[:, 0] == 0
    if zero.any():   # post ~ U{0..30}, whatever the outcome
        k = values.shape[1]
        values[zero] = np.floor(np.arange(k) * 31.0 / k)
        weights[zero] = 1.0 / k
    return values, weights


def _mean_median(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, axis=1)
    v = np.take_along_axis(values, order, axis=1)
    cum = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    median = v[np.arange(len(v)), np.argmax(cum >= 0.5 * cum[:, -1:], axis=1)]
    return (values * weights).sum(axis=1) / weights.sum(axis=1), median


def bayes_vas(clinical: pd.DataFrame, ground_truth: pd.DataFrame, *, n_mc: int = 20_000, seed: int = 0,
              regime: str | Mapping[str, float] = "demo") -> dict:
    """Bayes-optimal accuracy of the post-operative VAS heads (mm) under the outcome ``regime``.

    The best prediction of a patient's post-operative VAS knows the true ZCQ success probability
    and the pre-operative VAS: for the mean absolute error it is the median of
    :func:`vas_post_distribution`, for R² its mean. Per head ``back_pain_post`` /
    ``leg_pain_post``: ``mae`` and ``r2`` from ``n_mc`` Monte Carlo patients of the generative
    model (population), ``mae_empirical`` / ``r2_empirical`` and ``n`` on the cohort's patients
    with both VAS values (``clinical`` = clinical.csv, ``ground_truth`` = ground_truth.csv)."""
    _, eff = outcome_effects(regime)
    rng = stream(seed, 2**31 - 7)
    lat = sample_latents(rng, int(n_mc))
    months = _months_mc(seed, int(n_mc))
    p_mc = outcome_probabilities(lat["severity"], lat["grade"], lat["age"], lat["female"], months,
                                 effects=eff)["zcq_success"]
    pre_mc = {"back_pain_pre": np.clip(np.rint(rng.normal(55, 20, n_mc)), 5, 100),
              "leg_pain_pre": np.clip(np.rint(rng.normal(66, 17, n_mc)), 10, 100)}
    truth = ground_truth.assign(patient_id=ground_truth["patient_id"].astype(str)).set_index("patient_id")
    table = clinical.assign(patient_id=clinical["patient_id"].astype(str))
    p_cohort = pd.to_numeric(truth["p_zcq_success"], errors="coerce").reindex(table["patient_id"]).to_numpy(float)

    def scores(y, values, weights):
        mean, median = _mean_median(values, weights)
        ss = float(((y - y.mean()) ** 2).sum())
        return (round(float(np.abs(y - median).mean()), 3),
                round(1.0 - float(((y - mean) ** 2).sum()) / ss, 4) if ss > 0 else None)

    out: dict[str, Any] = {"n_mc": int(n_mc)}
    for head, (pre_col, q) in VAS_HEADS.items():
        values, weights = vas_post_distribution(pre_mc[pre_col], p_mc, q)
        draw = np.argmax(np.cumsum(weights, axis=1) >= rng.random(n_mc)[:, None], axis=1)
        mae, r2 = scores(values[np.arange(n_mc), draw], values, weights)
        pre = pd.to_numeric(table[pre_col], errors="coerce").to_numpy(float)
        post = pd.to_numeric(table[head], errors="coerce").to_numpy(float)
        ok = np.isfinite(pre) & np.isfinite(post) & np.isfinite(p_cohort)
        emp = scores(post[ok], *vas_post_distribution(pre[ok], p_cohort[ok], q)) if ok.sum() > 1 else (None, None)
        out[head] = {"mae": mae, "r2": r2, "mae_empirical": emp[0], "r2_empirical": emp[1], "n": int(ok.sum())}
    return out
