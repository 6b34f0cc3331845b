"""Evaluation metrics with patient-level bootstrap confidence intervals (numpy / sklearn only).

Conventions
-----------
* Inputs are 1-D arrays over patients, ``(N,)``. Binary labels are 0/1 (float, ``NaN`` = missing),
  probabilities lie in [0, 1]; regression targets are VAS 0–100; grades are ints in ``[0, K)``.
* Rows with a ``NaN`` label are dropped. The scalar metric functions drop them silently (so they
  can be used inside the bootstrap); the ``*_report`` functions report the count as
  ``n_missing_label``. A ``NaN`` *prediction* where the label is present is an error.
* A metric that is undefined on the given data (e.g. AUC with one class) returns ``nan``.
  :func:`bootstrap_ci` skips such resamples and reports how many it skipped.
* Reports are JSON-serialisable: numpy scalars become Python floats / ints, ``nan`` becomes ``None``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from lumbarjax.errors import LumbarjaxError

_EPS = 1e-6


# ----------------------------------------------------------------------------- input handling
def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise LumbarjaxError(f"{name}: expected a 1-D array over patients, got shape {a.shape}")
    return a


def drop_missing(y, *others, names: Sequence[str] | None = None):
    """Drop rows whose label ``y`` is NaN.

    Returns ``(y, *others, n_dropped)``. Raises :class:`LumbarjaxError` when the arrays differ in
    length or an ``other`` array (a prediction) is NaN / inf on a labelled row.
    """
    names = list(names) if names is not None else [f"array {i + 1}" for i in range(len(others))]
    y = _as_1d(y, "labels")
    out = []
    for a, nm in zip(others, names):
        a = np.asarray(a, dtype=np.float64)
        if a.shape[0] != y.shape[0]:
            raise LumbarjaxError(
                f"{nm}: length {a.shape[0]} does not match the labels' length {y.shape[0]}")
        out.append(a)
    keep = ~np.isnan(y)
    out = [a[keep] for a in out]
    for a, nm in zip(out, names):
        if not np.all(np.isfinite(a)):
            bad = int(np.sum(~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)))
            raise LumbarjaxError(f"{nm}: {bad} labelled row(s) have a NaN/inf prediction")
    return (y[keep], *out, int((~keep).sum()))


def _check_binary(y: np.ndarray, name: str = "labels") -> None:
    if not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise LumbarjaxError(f"{name}: binary labels must be 0/1 (or NaN), found {bad.tolist()}")


def _check_grades(y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    if num_classes < 2:
        raise LumbarjaxError(f"{name}: num_classes must be >= 2, got {num_classes}")
    if np.any(y != np.round(y)) or np.any(y < 0) or np.any(y >= num_classes):
        bad = np.unique(y[(y != np.round(y)) | (y < 0) | (y >= num_classes)])[:5]
        raise LumbarjaxError(
            f"{name}: grades must be integers in [0, {num_classes}), found {bad.tolist()}")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------- binary metrics
def auc(y, p) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties; equals sklearn's
    ``roc_auc_score``). ``nan`` when only one class is present."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(p)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points ``(fpr, tpr)`` (from sklearn), NaN labels dropped."""
    from sklearn.metrics import roc_curve as _roc

    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    if y.min() == y.max():
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = _roc(y, p)
    return fpr, tpr


def sens_spec(y, p, threshold: float = 0.5) -> tuple[float, float]:
    """(sensitivity, specificity) when predicting positive for ``p >= threshold``.
    Either is ``nan`` when its class is absent."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def sensitivity(y, p, threshold: float = 0.5) -> float:
    """Fraction of the positives (y = 1) with ``p >= threshold``; ``nan`` without positives
    (:func:`sens_spec`)."""
    return sens_spec(y, p, threshold)[0]


def specificity(y, p, threshold: float = 0.5) -> float:
    """Fraction of the negatives (y = 0) with ``p < threshold``; ``nan`` without negatives
    (:func:`sens_spec`)."""
    return sens_spec(y, p, threshold)[1]


def brier(y, p) -> float:
    """Brier score: mean (p − y)², lower is better."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    if y.size == 0:
        return float("nan")
    return float(np.mean((p - y) ** 2))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _logistic_fit(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray,
                  max_iter: int = 50) -> np.ndarray | None:
    """Unpenalised logistic regression ``logit P(y=1) = a [+ b x] + offset`` by Newton–Raphson.
    Returns the coefficients (a[, b]) or None when the fit does not exist (one class, or perfect
    separation detected by diverging coefficients)."""
    if y.size == 0 or y.min() == y.max():
        return None
    X = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones_like(x), x])
    beta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        eta = X @ beta + offset
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = np.clip(mu * (1 - mu), 1e-12, None)
        grad = X.T @ (y - mu)
        hess = (X * w[:, None]).T @ X
        try:
            step = np.linalg.solve(hess + 1e-10 * np.eye(X.shape[1]), grad)
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 1e3:
            return None
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def calibration_slope(y, p) -> float:
    """Slope ``b`` of the joint logistic recalibration fit ``logit P(y) = a + b·logit(p)``."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    beta = _logistic_fit(_logit(p), y, np.zeros_like(y))
    return float("nan") if beta is None else float(beta[1])


def calibration_in_the_large(y, p) -> float:
    """Intercept ``a`` of ``logit P(y) = a + 1·logit(p)`` (slope fixed at 1, logit(p) as offset):
    0 = predictions are right on average, > 0 = they under-predict the event rate."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    beta = _logistic_fit(None, y, _logit(p))
    return float("nan") if beta is None else float(beta[0])


def calibration(y, p, n_bins: int = 10) -> dict:
    """Logistic recalibration and a reliability table.

    Returns ``dict(slope, intercept, intercept_joint, n, n_missing_label, bins)`` where

    * ``slope`` — ``b`` of the joint fit ``logit P(y=1) = a + b·logit(p)`` (1 = ideal, < 1 =
      predictions too extreme / overconfident, > 1 = too modest);
    * ``intercept`` — **calibration-in-the-large**: ``a`` with the slope fixed at 1
      (``logit(p)`` as an offset); 0 = ideal;
    * ``intercept_joint`` — ``a`` of the joint fit (for completeness);
    * ``bins`` — ``dict(lo, hi, mean_pred, observed, count)`` lists over ``n_bins`` equal-width
      bins of [0, 1]; empty bins are left out.

    ``p`` is clipped to [1e-6, 1 − 1e-6] before the logit. Undefined fits give ``nan``.
    """
    y, p, n_missing = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    lp = _logit(p)
    joint = _logistic_fit(lp, y, np.zeros_like(y))
    citl = _logistic_fit(None, y, lp)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins = {"lo": [], "hi": [], "mean_pred": [], "observed": [], "count": []}
    for b in range(n_bins):
        m = which == b
        if not m.any():
            continue
        bins["lo"].append(float(edges[b]))
        bins["hi"].append(float(edges[b + 1]))
        bins["mean_pred"].append(float(p[m].mean()))
        bins["observed"].append(float(y[m].mean()))
        bins["count"].append(int(m.sum()))
    nan = float("nan")
    return {
        "slope": nan if joint is None else float(joint[1]),
        "intercept": nan if citl is None else float(citl[0]),
        "intercept_joint": nan if joint is None else float(joint[0]),
        "intercept_definition": "calibration-in-the-large (slope fixed at 1, logit(p) as offset)",
        "n": int(y.size),
        "n_missing_label": n_missing,
        "bins": bins,
    }


def net_benefit(y, p, thresholds) -> np.ndarray:
    """Decision-curve net benefit of treating patients with ``p >= pt``:
    ``TP/n − FP/n · pt / (1 − pt)`` for each threshold ``pt`` in (0, 1). Shape ``(T,)``."""
    y, p, _ = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if np.any((t <= 0) | (t >= 1)):
        raise LumbarjaxError(f"net_benefit: thresholds must lie in (0, 1), got {t.tolist()}")
    n = y.size
    if n == 0:
        return np.full(t.shape, np.nan)
    treat = p[None, :] >= t[:, None]
    tp = (treat & (y[None, :] == 1)).sum(axis=1)
    fp = (treat & (y[None, :] == 0)).sum(axis=1)
    return tp / n - fp / n * t / (1 - t)


def net_benefit_treat_all(y, thresholds) -> np.ndarray:
    """Net benefit of treating everyone: ``prevalence − (1 − prevalence) · pt / (1 − pt)``."""
    y = _as_1d(y, "labels")
    y = y[~np.isnan(y)]
    _check_binary(y)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    prev = y.mean() if y.size else np.nan
    return prev - (1 - prev) * t / (1 - t)


def decision_curve(y, p, thresholds=None) -> dict:
    """``dict(thresholds, model, treat_all, treat_none)`` lists (treat-none is 0 everywhere)."""
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.951, 0.05), 4)
    t = np.asarray(thresholds, dtype=np.float64)
    return {
        "thresholds": t.tolist(),
        "model": net_benefit(y, p, t).tolist(),
        "treat_all": net_benefit_treat_all(y, t).tolist(),
        "treat_none": np.zeros_like(t).tolist(),
    }


# ----------------------------------------------------------------------------- ordinal / regression
def confusion(y, yhat, num_classes: int) -> np.ndarray:
    """Confusion matrix ``(K, K)`` int64, rows = true grade, columns = predicted grade."""
    y, yhat, _ = drop_missing(y, yhat, names=["predicted grades"])
    y = _check_grades(y, num_classes, "true grades")
    yhat = _check_grades(yhat, num_classes, "predicted grades")
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (y, yhat), 1)
    return m


def qwk(y, yhat, num_classes: int) -> float:
    """Quadratic weighted kappa ``1 − Σ W·O / Σ W·E`` with ``W_ij = (i − j)² / (K − 1)²``,
    ``O`` the observed confusion counts and ``E`` the outer product of the marginals / n.
    ``nan`` when the expected disagreement is 0 (e.g. a single grade everywhere)."""
    o = confusion(y, yhat, num_classes).astype(np.float64)
    n = o.sum()
    if n == 0:
        return float("nan")
    i = np.arange(num_classes)
    w = (i[:, None] - i[None, :]) ** 2 / (num_classes - 1) ** 2
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / n
    den = (w * e).sum()
    if den == 0:
        return float("nan")
    return float(1.0 - (w * o).sum() / den)


def accuracy(y, yhat) -> float:
    """Fraction of patients whose predicted grade equals the true grade (pairs with a missing
    value left out); ``nan`` when none is left."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    return float(np.mean(y == yhat)) if y.size else float("nan")


def within_one(y, yhat) -> float:
    """Fraction of patients whose predicted grade is within ±1 of the true grade."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    return float(np.mean(np.abs(y - yhat) <= 1)) if y.size else float("nan")


def mae(y, yhat) -> float:
    """Mean absolute error (units of y, e.g. VAS 0–100 mm)."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    return float(np.mean(np.abs(yhat - y))) if y.size else float("nan")


def rmse(y, yhat) -> float:
    """Root mean squared error (units of y)."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    return float(np.sqrt(np.mean((yhat - y) ** 2))) if y.size else float("nan")


def r2(y, yhat) -> float:
    """Coefficient of determination 1 − SS_res / SS_tot (``nan`` when y is constant)."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    ss_tot = np.sum((y - y.mean()) ** 2) if y.size else 0.0
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y - yhat) ** 2) / ss_tot)


def bias(y, yhat) -> float:
    """Mean signed error mean(yhat − y)."""
    y, yhat, _ = drop_missing(y, yhat, names=["predictions"])
    return float(np.mean(yhat - y)) if y.size else float("nan")


# ----------------------------------------------------------------------------- bootstrap
class CI(tuple):
    """``(point, lo, hi)`` tuple that also carries ``n_boot``, ``n_valid`` and ``n_skipped``
    (resamples where the metric was undefined); :class:`PairedDiff` adds ``p_value``."""

    def __new__(cls, values, *, n_boot: int, n_skipped: int, alpha: float):
        obj = super().__new__(cls, tuple(float(v) for v in values))
        obj.n_boot = int(n_boot)
        obj.n_skipped = int(n_skipped)
        obj.n_valid = int(n_boot - n_skipped)
        obj.alpha = float(alpha)
        return obj

    def as_dict(self) -> dict:
        d = {"point": self[0], "lo": self[1], "hi": self[2], "n_boot": self.n_boot,
             "n_skipped": self.n_skipped, "ci_level": 1 - self.alpha}
        return to_jsonable(d)


class PairedDiff(CI):
    """``(diff, lo, hi, p_value)`` for metric(model a) − metric(model b)."""

    def as_dict(self) -> dict:
        d = {"diff": self[0], "lo": self[1], "hi": self[2], "p_value": self[3],
             "n_boot": self.n_boot, "n_skipped": self.n_skipped, "ci_level": 1 - self.alpha}
        return to_jsonable(d)


def _safe(metric_fn: Callable, *arrays) -> float:
    try:
        v = float(metric_fn(*arrays))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return v


# ----------------------------------------------------------------------------- batched metrics
# The same metrics over many resamples at once: each takes (B, n) arrays (row b = resample b,
# labelled and finite) and returns (B,) values, NaN where the metric is undefined. A bootstrap of
# 1,000 resamples then costs a few array operations instead of 1,000 Python calls (the report of
# the demo spent ~45 s in those loops). They equal the per-resample functions above: AUC exactly
# (rank sums of half-integers), the others to float rounding (a test compares them).
def _auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    n1 = y.sum(axis=1)
    n0 = y.shape[1] - n1
    r = rankdata(p, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = ((r * y).sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    v[(n1 == 0) | (n0 == 0)] = np.nan
    return v


def _logistic_fit_rows(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray,
                       max_iter: int = 50) -> np.ndarray:
    """:func:`_logistic_fit` of every row at once: (B, k) coefficients, NaN rows where the
    fit does not exist. Each row stops at its own convergence, as the single fit does."""
    B, n = y.shape
    X = np.ones((B, n, 1 if x is None else 2))
    if x is not None:
        X[..., 1] = x
    k = X.shape[2]
    beta = np.zeros((B, k))
    ok = y.min(axis=1) != y.max(axis=1)
    active = ok.copy()
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        Xa = X[a]
        mu = 1.0 / (1.0 + np.exp(-(np.einsum("bnk,bk->bn", Xa, beta[a]) + offset[a])))
        w = np.clip(mu * (1 - mu), 1e-12, None)
        grad = np.einsum("bnk,bn->bk", Xa, y[a] - mu)
        hess = np.einsum("bnk,bn,bnl->bkl", Xa, w, Xa) + 1e-10 * np.eye(k)
        step = np.full((a.size, k), np.nan)
        try:
            step = np.linalg.solve(hess, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            for j in range(a.size):
                try:
                    step[j] = np.linalg.solve(hess[j], grad[j])
                except np.linalg.LinAlgError:
                    pass
        beta[a] = beta[a] + step
        bad = ~np.all(np.isfinite(beta[a]) & (np.abs(beta[a]) <= 1e3), axis=1)
        ok[a[bad]] = False
        active[a[bad]] = False
        active[a[~bad & (np.max(np.abs(step), axis=1) < 1e-10)]] = False
    beta[~ok] = np.nan
    return beta


def _sens_spec_rows(y, p, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    pred, pos, neg = p >= threshold, y == 1, y == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((pred & pos).sum(axis=1) / pos.sum(axis=1), (~pred & neg).sum(axis=1) / neg.sum(axis=1))


def _calibration_slope_rows(y, p):
    return _logistic_fit_rows(_logit(p), y, np.zeros_like(y))[:, 1]


def _calibration_in_the_large_rows(y, p):
    return _logistic_fit_rows(None, y, _logit(p))[:, 0]


_BATCHED = {}   # filled below the metric definitions: metric function -> its rows version


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _check_lengths(arrays) -> int:
    if not arrays:
        raise LumbarjaxError("bootstrap: no arrays given")
    lens = {np.asarray(a).shape[0] for a in arrays}
    if len(lens) != 1:
        raise LumbarjaxError(f"bootstrap: arrays differ in length (patients): {sorted(lens)}")
    return lens.pop()


def _batched_values(metric_fn, y, preds, n_boot: int, seed: int, rows=None) -> list[np.ndarray] | None:
    """Per prediction array in ``preds``: (n_boot,) bootstrap values of ``metric_fn(y, p)``
    through its rows version (``rows``, else :data:`_BATCHED`), all on the same resamples of
    :func:`_resample_indices` (drawn once); None when it has none or the arrays are not finite
    1-D arrays (then the caller loops, dropping missing labels per resample)."""
    rows = rows if rows is not None else _BATCHED.get(metric_fn)
    y = np.asarray(y, np.float64)
    preds = [np.asarray(p, np.float64) for p in preds]
    if rows is None or y.size == 0 or y.ndim != 1 or not np.all(np.isfinite(y)):
        return None
    if any(p.ndim != 1 or not np.all(np.isfinite(p)) for p in preds):
        return None
    idx = _resample_indices(y.size, n_boot, seed)
    yb = y[idx]
    with np.errstate(all="ignore"):
        return [np.asarray(rows(yb, p[idx]), np.float64) for p in preds]


def bootstrap_ci(metric_fn: Callable, *arrays, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05, rows: Callable | None = None) -> CI:
    """Percentile bootstrap CI of ``metric_fn(*arrays)`` resampling **patients** (rows, axis 0)
    with replacement. Resamples where the metric is undefined (``nan`` / raises ValueError, e.g.
    a single class) are skipped and counted in ``.n_skipped``. Deterministic for a given seed.

    ``rows``: the metric over (B, n) resamples at once (default: the registered rows version of
    ``metric_fn``, if any; see :data:`_BATCHED`); it must give what ``metric_fn`` gives per row.

    Returns a :class:`CI` ``(point, lo, hi)``; ``lo``/``hi`` are ``nan`` when fewer than 2
    resamples were valid.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = _check_lengths(arrays)
    point = _safe(metric_fn, *arrays)
    vals = _batched_values(metric_fn, arrays[0], arrays[1:], n_boot, seed, rows) if len(arrays) == 2 else None
    if vals is not None:
        vals = vals[0]
    else:
        vals = np.empty(n_boot)
        if n == 0:
            vals[:] = np.nan
        else:
            for b, idx in enumerate(_resample_indices(n, n_boot, seed)):
                vals[b] = _safe(metric_fn, *(a[idx] for a in arrays))
    ok = np.isfinite(vals)
    if ok.sum() >= 2:
        lo, hi = np.percentile(vals[ok], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    else:
        lo = hi = float("nan")
    return CI((point, lo, hi), n_boot=n_boot, n_skipped=int((~ok).sum()), alpha=alpha)


def paired_bootstrap_diff(metric_fn: Callable, y, p_a, p_b, *, n_boot: int = 1000,
                          seed: int = 0, alpha: float = 0.05) -> PairedDiff:
    """Bootstrap of ``metric_fn(y, p_a) − metric_fn(y, p_b)`` with the **same** resampled
    patients for both models. Rows with a NaN label are dropped first.

    Returns :class:`PairedDiff` ``(diff, lo, hi, p_value)``; ``p_value`` is the two-sided
    bootstrap proportion ``2·min(P(d* ≤ 0), P(d* ≥ 0))`` capped at 1 — a rough guide, not an
    exact test.
    """
    y, p_a, p_b, _ = drop_missing(y, p_a, p_b, names=["predictions (model a)",
                                                        "predictions (model b)"])
    n = y.shape[0]
    diff = _safe(metric_fn, y, p_a) - _safe(metric_fn, y, p_b)
    both = _batched_values(metric_fn, y, (p_a, p_b), n_boot, seed)
    if both is not None:
        vals = both[0] - both[1]
    else:
        vals = np.empty(n_boot)
        if n == 0:
            vals[:] = np.nan
        else:
            for b, idx in enumerate(_resample_indices(n, n_boot, seed)):
                vals[b] = _safe(metric_fn, y[idx], p_a[idx]) - _safe(metric_fn, y[idx], p_b[idx])
    ok = np.isfinite(vals)
    if ok.sum() >= 2:
        v = vals[ok]
        lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        pval = min(1.0, 2.0 * min(np.mean(v <= 0), np.mean(v >= 0)))
    else:
        lo = hi = pval = float("nan")
    return PairedDiff((diff, lo, hi, pval), n_boot=n_boot, n_skipped=int((~ok).sum()),
                      alpha=alpha)


_BATCHED.update({
    auc: _auc_rows,
    brier: lambda y, p: np.mean((p - y) ** 2, axis=1),
    calibration_slope: _calibration_slope_rows,
    calibration_in_the_large: _calibration_in_the_large_rows,
    mae: lambda y, yhat: np.mean(np.abs(yhat - y), axis=1),
    rmse: lambda y, yhat: np.sqrt(np.mean((yhat - y) ** 2, axis=1)),
    bias: lambda y, yhat: np.mean(yhat - y, axis=1),
})


# ----------------------------------------------------------------------------- reports
def to_jsonable(obj):
    """Recursively convert numpy types to Python ones and non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def binary_report(y, p, *, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05, thresholds=None) -> dict:
    """All binary-head metrics with bootstrap CIs: ``auc, brier, sensitivity, specificity,
    calibration_slope, calibration_intercept`` (each ``{point, lo, hi, n_boot, n_skipped}``),
    plus ``n, n_missing_label, n_positive, prevalence, calibration`` (bins) and
    ``decision_curve``. JSON-serialisable."""
    y, p, n_missing = drop_missing(y, p, names=["predictions"])
    _check_binary(y)
    if np.any((p < 0) | (p > 1)):
        raise LumbarjaxError("binary_report: predictions must be probabilities in [0, 1]")
    kw = dict(n_boot=n_boot, seed=seed, alpha=alpha)
    out = {
        "n": int(y.size),
        "n_missing_label": n_missing,
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()) if y.size else float("nan"),
        "threshold": threshold,
        "auc": bootstrap_ci(auc, y, p, **kw).as_dict(),
        "brier": bootstrap_ci(brier, y, p, **kw).as_dict(),
        "sensitivity": bootstrap_ci(lambda a, b: sensitivity(a, b, threshold), y, p, **kw,
                                    rows=lambda a, b: _sens_spec_rows(a, b, threshold)[0]).as_dict(),
        "specificity": bootstrap_ci(lambda a, b: specificity(a, b, threshold), y, p, **kw,
                                    rows=lambda a, b: _sens_spec_rows(a, b, threshold)[1]).as_dict(),
        "calibration_slope": bootstrap_ci(calibration_slope, y, p, **kw).as_dict(),
        "calibration_intercept": bootstrap_ci(calibration_in_the_large, y, p, **kw).as_dict(),
        "calibration": calibration(y, p),
        "decision_curve": decision_curve(y, p, thresholds) if y.size else None,
    }
    return to_jsonable(out)


def regression_report(y, yhat, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Regression metrics (units of y, e.g. VAS 0–100) with CIs: ``mae, rmse, r2, bias``."""
    y, yhat, n_missing = drop_missing(y, yhat, names=["predictions"])
    kw = dict(n_boot=n_boot, seed=seed, alpha=alpha)
    out = {
        "n": int(y.size),
        "n_missing_label": n_missing,
        "mae": bootstrap_ci(mae, y, yhat, **kw).as_dict(),
        "rmse": bootstrap_ci(rmse, y, yhat, **kw).as_dict(),
        "r2": bootstrap_ci(r2, y, yhat, **kw).as_dict(),
        "bias": bootstrap_ci(bias, y, yhat, **kw).as_dict(),
    }
    return to_jsonable(out)


def grader_report(y, yhat, K: int, *, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> dict:
    """Ordinal grader metrics with CIs: ``qwk`` (headline), ``accuracy``, ``within_one``,
    ``mae`` (grade units), plus the ``confusion`` matrix (rows = true) and per-grade counts."""
    y, yhat, n_missing = drop_missing(y, yhat, names=["predicted grades"])
    _check_grades(y, K, "true grades")
    _check_grades(yhat, K, "predicted grades")
    kw = dict(n_boot=n_boot, seed=seed, alpha=alpha)
    out = {
        "n": int(y.size),
        "n_missing_label": n_missing,
        "num_classes": int(K),
        "qwk": bootstrap_ci(lambda a, b: qwk(a, b, K), y, yhat, **kw).as_dict(),
        "accuracy": bootstrap_ci(accuracy, y, yhat, **kw).as_dict(),
        "within_one": bootstrap_ci(within_one, y, yhat, **kw).as_dict(),
        "mae": bootstrap_ci(mae, y, yhat, **kw).as_dict(),
        "confusion": confusion(y, yhat, K).tolist(),
        "true_counts": np.bincount(y.astype(int), minlength=K).tolist(),
        "pred_counts": np.bincount(yhat.astype(int), minlength=K).tolist(),
    }
    return to_jsonable(out)
