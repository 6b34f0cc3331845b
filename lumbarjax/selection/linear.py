"""Penalised linear outcome models for small cohorts (n ≈ 160), the penalty chosen inside the
training patients only.

On a cohort this small a penalised logistic regression on the clinical columns plus a few
image-derived scores (the grader's X-ray grades, the pretrained MRI encoder's stenosis grade) is a
strong model, and it is the model a researcher would fit by hand. This module fits that family:

* binary heads: ``LogisticRegression`` with an L2 penalty or an elastic net (l1_ratio 0.5),
  C ∈ :data:`C_GRID`;
* regression heads (VAS 0–100 mm): ``Ridge`` (alpha ∈ :data:`RIDGE_ALPHAS`) or ``ElasticNet``
  (alpha ∈ :data:`ENET_ALPHAS`, on the standardised target), its prediction bounded to the VAS
  scale (``schema.VAS_RANGE``: a prediction outside 0–100 mm is moved to the nearer end, which
  can only bring it closer to any label).

Preprocessing is lumbarjax.eval.baselines': numeric columns median-imputed with a missing-value
indicator and standardised, categorical columns one-hot; all of it fitted on the training rows.

The penalty (and L2 vs elastic net) is chosen by an inner k-fold split of the *training* rows:
the candidates' pooled inner out-of-fold predictions are scored (AUC for binary heads, mean
absolute error for regression heads). The reference candidate (:data:`REFERENCE`: the plain
logistic regression with C = 1 / ridge with alpha = 1 of lumbarjax.eval.baselines) is kept unless
another one is better by about one standard error of the paired difference (:func:`choose`). On ~130 training patients the
inner scores are noisy, and without this rule the selection alone costs AUC against the plain
logistic regression (measured: docs/OUTCOME_MODELS.md). The chosen candidate is refitted on all
training rows. The caller's test rows never enter a fit or a score.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from scipy.stats import norm, rankdata
from threadpoolctl import threadpool_limits

from lumbarjax.data.cohort import make_folds
from lumbarjax.errors import ClinicalError, CohortError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.eval.baselines import bounded_vas, prepare_X, preprocessor, split_features

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)          # inverse L2 strength (logistic)
ENET_C_GRID = (0.03, 0.1, 0.3, 1.0)                # inverse elastic-net strength (logistic)
RIDGE_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)   # ridge penalty (sum-of-squares units)
ENET_ALPHAS = (0.003, 0.01, 0.03, 0.1, 0.3)         # elastic-net penalty on the standardised target
L1_RATIO = 0.5


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One penalised linear model: family ``l2`` | ``elasticnet`` and its penalty ``strength``
    (C for logistic regression, where larger is weaker; alpha for ridge / elastic net)."""
    family: str
    strength: float

    @property
    def name(self) -> str:
        return f"{self.family}({'C' if self.family.startswith('logreg') else 'alpha'}={self.strength:g})"

    def penalty_rank(self) -> float:
        """Larger = stronger penalty (for tie-breaking)."""
        return 1.0 / self.strength if self.family.startswith("logreg") else self.strength


REFERENCE = {"binary": Candidate("logreg_l2", 1.0), "regression": Candidate("ridge", 1.0)}


def candidates(task: str) -> list[Candidate]:
    """The default grid of :mod:`lumbarjax.selection.linear` for ``task`` (binary | regression)."""
    if task == "binary":
        return ([Candidate("logreg_l2", c) for c in C_GRID]
                + [Candidate("logreg_elasticnet", c) for c in ENET_C_GRID])
    if task == "regression":
        return ([Candidate("ridge", a) for a in RIDGE_ALPHAS]
                + [Candidate("elasticnet", a) for a in ENET_ALPHAS])
    raise ClinicalError(f"linear model: task must be 'binary' or 'regression', got {task!r}")


def make_pipeline(cand: Candidate, numeric: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    """Unfitted sklearn pipeline (preprocessing + the penalised model) of one candidate."""
    return Pipeline([("prep", preprocessor(list(numeric), list(categorical), scale=True)),
                     ("model", make_model(cand))])


def make_model(cand: Candidate):
    """The unfitted penalised model of one candidate (no preprocessing)."""
    if cand.family == "logreg_l2":
        model = LogisticRegression(C=cand.strength, max_iter=5000)
    elif cand.family == "logreg_elasticnet":
        model = LogisticRegression(C=cand.strength, l1_ratio=L1_RATIO,
                                   solver="saga", max_iter=5000, tol=1e-4)
    elif cand.family == "ridge":
        model = Ridge(alpha=cand.strength)
    elif cand.family == "elasticnet":
        model = TransformedTargetRegressor(ElasticNet(alpha=cand.strength, l1_ratio=L1_RATIO,
                                                      max_iter=20000), transformer=StandardScaler())
    else:
        raise ClinicalError(f"linear model: unknown family {cand.family!r}")
    return model


def _predict(pipe: Pipeline, X: pd.DataFrame, task: str) -> np.ndarray:
    return pipe.predict_proba(X)[:, 1] if task == "binary" else bounded_vas(pipe.predict(X))


def _fit(pipe: Pipeline, X: pd.DataFrame, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        return pipe.fit(X, y)


def paired_auc_diff(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, n_boot: int = 200,
                    seed: int = 0) -> np.ndarray:
    """(n_boot,) bootstrap AUC(p_a) − AUC(p_b) over the same resampled patients (vectorised;
    resamples with a single class give NaN)."""
    y = np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    yb = y[idx]
    n1 = yb.sum(axis=1)
    n0 = len(y) - n1

    def auc_rows(p):
        r = rankdata(np.asarray(p, float)[idx], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((r * yb).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)

    return auc_rows(p_a) - auc_rows(p_b)


def choose(y: np.ndarray, table: Sequence[tuple], task: str, seed: int = 0) -> int:
    """Index of the chosen candidate in ``table`` = [(candidate, pooled inner OOF prediction), ...].

    Binary: the reference candidate (REFERENCE) unless another one's AUC beats it in more than
    84 % of 200 paired bootstrap resamples (about one standard error); then the highest AUC.
    Regression: the same with the mean absolute error and one standard error of the paired
    per-patient difference. Ties go to the stronger penalty.
    """
    y = np.asarray(y, float)
    names = [c for c, _ in table]
    if task == "binary":
        gain = [metrics_lib.auc(y, p) for _, p in table]
    else:
        err = [np.abs(y - np.asarray(p, float)) for _, p in table]
        gain = [-e.mean() for e in err]
    order = sorted(range(len(table)), key=lambda i: (-round(float(gain[i]), 9), -table[i][0].penalty_rank()))
    reference = REFERENCE[task]
    if reference not in names:
        return order[0]
    r = names.index(reference)
    return next(i for i in order
                if i == r or clearly_better(y, table[i][1], table[r][1], task, seed=seed))


CLEAR_Z = 1.0                       # a "clear" win: about one standard error
CLEAR_WIN = float(norm.cdf(CLEAR_Z))  # = 0.841: that share of paired bootstrap resamples


def clearly_better(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, task: str, *, seed: int = 0,
                   z: float = CLEAR_Z) -> bool:
    """Whether predictions ``p_a`` beat ``p_b`` on labels ``y`` by about ``z`` standard errors:
    binary — a higher AUC, and AUC(p_a) > AUC(p_b) in more than Φ(z) (:data:`CLEAR_WIN` at
    z = 1) of 200 paired bootstrap resamples; regression — the paired per-patient absolute-error
    difference's mean exceeds ``z`` times its standard error. Rows must be labelled and finite."""
    y, p_a, p_b = (np.asarray(v, float) for v in (y, p_a, p_b))
    if task == "binary":
        if len(set(y.tolist())) < 2 or metrics_lib.auc(y, p_a) <= metrics_lib.auc(y, p_b):
            return False
        d = paired_auc_diff(y, p_a, p_b, seed=seed)
        d = d[np.isfinite(d)]
        return len(d) > 0 and float(np.mean(d > 0)) > float(norm.cdf(z))
    d = np.abs(y - p_b) - np.abs(y - p_a)
    return len(d) > 1 and float(d.mean() - z * d.std(ddof=1) / np.sqrt(len(d))) > 0


@dataclasses.dataclass
class PenalisedFit:
    """A chosen candidate refitted on the training rows, plus the selection table."""
    task: str
    candidate: Candidate
    pipeline: Pipeline
    numeric: list
    categorical: list
    selection: list            # [{"model": name, "inner_auc" | "inner_mae": float}, ...], grid order
    inner_rows: np.ndarray | None = None   # (M,) the labelled training rows the inner split scored
    inner_pred: np.ndarray | None = None   # (M,) the chosen candidate's inner out-of-fold predictions

    def predict(self, records: pd.DataFrame) -> np.ndarray:
        """(N,) P(label = 1) (binary) or the label-unit prediction (regression) for ``records``."""
        return _predict(self.pipeline, prepare_X(records, self.numeric, self.categorical), self.task)


def _task_of(y: np.ndarray, task: str | None) -> str:
    if task is not None:
        return task
    vals = set(np.unique(y[np.isfinite(y)]).tolist())
    return "binary" if vals <= {0.0, 1.0} else "regression"


def fit_penalised(records: pd.DataFrame, label: str, train_idx: np.ndarray, features: Sequence[str], *,
                  task: str | None = None, inner_folds: int = 5, seed: int = 0,
                  grid: Sequence[Candidate] | None = None) -> PenalisedFit:
    """Choose and fit a penalised linear model of ``label`` on the rows ``train_idx``.

    Args:
      records: one row per patient with ``features`` and ``label`` (NaN = missing label).
      label: the outcome column; rows of ``train_idx`` without a label are left out.
      train_idx: (M,) row indices the model may learn from (an outer training fold).
      features: numeric columns (image-derived scores included; NaN = missing, imputed with an
        indicator) and categorical ones (e.g. ``sex``), told apart by dtype.
      task: ``binary`` | ``regression`` (inferred from the label's values when None).
      inner_folds: k of the stratified inner split of ``train_idx`` that scores the candidates.
      seed: seed of the inner split.
      grid: candidates (default :func:`candidates`). One candidate on fewer than 8 labelled
        rows (too few for an inner split) is fitted without inner scores (``selection`` empty).

    Returns a :class:`PenalisedFit` refitted on every labelled row of ``train_idx``.
    """
    # One thread: ~130 patients gain nothing from threads on a shared 2-core machine (set once
    # here: threadpoolctl's library scan costs ~4 ms per call).
    with threadpool_limits(limits=1):
        return _fit_penalised(records, label, train_idx, features, task=task, inner_folds=inner_folds,
                              seed=seed, grid=grid)


def _fit_penalised(records, label, train_idx, features, *, task, inner_folds, seed, grid) -> PenalisedFit:
    missing = [c for c in [*features, label] if c not in records.columns]
    if missing:
        raise ClinicalError(f"linear model: column(s) {missing} not in the records")
    y_all = pd.to_numeric(records[label], errors="coerce").to_numpy(float)
    rows = np.asarray(train_idx, int)
    rows = rows[np.isfinite(y_all[rows])]
    task = _task_of(y_all[rows], task)
    if task == "binary" and len(set(y_all[rows].tolist())) < 2:
        raise CohortError(f"linear model: the training rows of '{label}' have a single class")
    numeric, categorical = split_features(records, list(features))
    X = prepare_X(records, numeric, categorical)
    grid = list(grid) if grid is not None else candidates(task)
    k = int(min(inner_folds, len(rows) // 4))
    if k < 2 and len(grid) == 1:  # too few rows to score it, and nothing to choose
        pipe = _fit(make_pipeline(grid[0], numeric, categorical), X.iloc[rows], y_all[rows])
        return PenalisedFit(task, grid[0], pipe, numeric, categorical, [])
    if k < 2:
        raise CohortError(f"linear model: {len(rows)} labelled training rows of '{label}' are too "
                          "few for an inner split")
    sub = pd.DataFrame({"patient_id": records["patient_id"].to_numpy()[rows], "_y": y_all[rows]})
    inner = make_folds(sub, k=k, seed=seed, stratify_on="_y" if task == "binary" else None)
    preds = np.full((len(grid), len(rows)), np.nan)
    for f in range(k):
        tr, te = rows[inner != f], rows[inner == f]
        if task == "binary" and len(set(y_all[tr].tolist())) < 2:
            preds[:, inner == f] = y_all[tr].mean()
            continue
        # the preprocessing depends on the training rows only, not on the candidate: fit it once
        prep = preprocessor(list(numeric), list(categorical), scale=True).fit(X.iloc[tr])
        X_tr, X_te = prep.transform(X.iloc[tr]), prep.transform(X.iloc[te])
        for c, cand in enumerate(grid):
            preds[c, inner == f] = _predict(_fit(make_model(cand), X_tr, y_all[tr]), X_te, task)
    table, scored = [], []
    for cand, pred in zip(grid, preds):
        scored.append((cand, pred))
        quality = metrics_lib.auc(y_all[rows], pred) if task == "binary" else np.abs(y_all[rows] - pred).mean()
        table.append({"model": cand.name, "inner_auc" if task == "binary" else "inner_mae": round(float(quality), 6)})
    i = choose(y_all[rows], scored, task, seed)
    pipe = _fit(make_pipeline(grid[i], numeric, categorical), X.iloc[rows], y_all[rows])
    return PenalisedFit(task, grid[i], pipe, numeric, categorical, table, rows, preds[i])


def crossval_penalised(records: pd.DataFrame, folds: np.ndarray, label: str, features: Sequence[str], *,
                       task: str | None = None, inner_folds: int = 5, seed: int = 0,
                       grid: Sequence[Candidate] | None = None) -> pd.DataFrame:
    """Out-of-fold predictions of :func:`fit_penalised` over the outer ``folds``.

    Returns ``patient_id, fold, label, pred, model`` (the candidate chosen in that fold) in the row
    order of ``records``; every row is predicted by the model of its own fold, fitted without it.
    """
    folds = np.asarray(folds)
    if folds.shape != (len(records),):
        raise CohortError(f"linear model: folds has shape {folds.shape}, expected ({len(records)},)")
    pred = np.full(len(records), np.nan)
    chosen = np.empty(len(records), dtype=object)
    for f in np.unique(folds):
        test = folds == f
        fit = fit_penalised(records, label, np.flatnonzero(~test), features, task=task,
                            inner_folds=inner_folds, seed=seed + int(f), grid=grid)
        pred[test] = fit.predict(records.loc[test])
        chosen[test] = fit.candidate.name
    return pd.DataFrame({"patient_id": records["patient_id"].astype(str).to_numpy(), "fold": folds.astype(int),
                         "label": pd.to_numeric(records[label], errors="coerce").to_numpy(float),
                         "pred": pred, "model": chosen})
