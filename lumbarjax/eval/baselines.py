"""Clinical-features-only baselines, cross-validated on the same patient folds as the network.

For every fold ``f`` the models are fitted on the rows of the *other* folds only (rows whose label
is missing are left out of the fit) and predict every row of fold ``f`` (including rows whose label
is missing: their prediction is kept, their label stays NaN). All preprocessing (imputation,
scaling, one-hot encoding) is fitted inside the pipeline on the training folds, so nothing about
the test fold leaks into its own predictions.

* binary labels: ``LogisticRegression`` (L2, C=1) and ``HistGradientBoostingClassifier``;
  predictions are P(label = 1).
* continuous labels (VAS 0–100, e.g. ``back_pain_post``): ``Ridge`` (alpha=1) and
  ``HistGradientBoostingRegressor``; predictions in label units, bounded to the VAS scale
  (:func:`bounded_vas`).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from lumbarjax.errors import ClinicalError, CohortError
from lumbarjax.schema import REGRESSION_HEADS as REGRESSION_LABELS  # baselines.REGRESSION_LABELS still resolves
from lumbarjax.schema import VAS_RANGE

DEFAULT_FEATURES = ("age", "sex", "bmi", "smoker", "symptom_months", "back_pain_pre",
                    "leg_pain_pre", "zcq_symptom_pre", "zcq_function_pre")


def infer_task(label: str, y: pd.Series) -> str:
    """``"regression"`` for a VAS label (``schema.REGRESSION_HEADS``) or values other than 0/1;
    ``"binary"`` when every non-missing value of ``y`` is 0 or 1."""
    if label in REGRESSION_LABELS:
        return "regression"
    vals = pd.to_numeric(y, errors="coerce").dropna().unique()
    return "binary" if set(np.asarray(vals, dtype=float).tolist()) <= {0.0, 1.0} else "regression"


def split_features(df: pd.DataFrame, features: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(numeric, categorical)`` column names of ``features``, by the dtype of ``df``: bool and
    numeric columns are numeric, any other column (e.g. ``sex`` M/F) is categorical."""
    numeric, categorical = [], []
    for c in features:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            numeric.append(c)
        else:
            categorical.append(c)
    return numeric, categorical


def prepare_X(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Column-wise, row-independent cleaning (no statistics are computed here)."""
    X = pd.DataFrame(index=df.index)
    for c in numeric:
        X[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in categorical:
        s = df[c]
        X[c] = np.where(s.isna(), "missing", s.astype(str).str.strip().str.upper())
        X[c] = X[c].astype(object)
    return X


def preprocessor(numeric: list[str], categorical: list[str], *, scale: bool) -> ColumnTransformer:
    """The unfitted feature preprocessing of a baseline pipeline.

    Numeric columns: median imputation with a missing-indicator column, then standard scaling
    when ``scale`` (the linear models; not the gradient-boosting ones). Categorical columns:
    one-hot, unknown categories ignored. Other columns are dropped.
    """
    num_steps = [("impute", SimpleImputer(strategy="median", add_indicator=True))]
    if scale:
        num_steps.append(("scale", StandardScaler()))
    parts = []
    if numeric:
        parts.append(("num", Pipeline(num_steps), numeric))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                      categorical))
    return ColumnTransformer(parts, remainder="drop")


def make_models(numeric: list[str], categorical: list[str], task: str, seed: int = 0):
    """``(linear_pipeline, gbm_pipeline)`` — unfitted sklearn Pipelines for ``task``."""
    gbm_kw = dict(learning_rate=0.05, max_iter=150, max_leaf_nodes=8, min_samples_leaf=10,
                  l2_regularization=1.0, early_stopping=False, random_state=seed)
    if task == "binary":
        lin = LogisticRegression(C=1.0, max_iter=2000)
        gbm = HistGradientBoostingClassifier(**gbm_kw)
    else:
        lin = Ridge(alpha=1.0)
        gbm = HistGradientBoostingRegressor(**gbm_kw)
    return (Pipeline([("prep", preprocessor(numeric, categorical, scale=True)), ("model", lin)]),
            Pipeline([("prep", preprocessor(numeric, categorical, scale=False)), ("model", gbm)]))


def bounded_vas(pred) -> np.ndarray:
    """A regression model's VAS predictions (mm) on the scale's range ``schema.VAS_RANGE``: the
    bounded output of the linear and gradient-boosting VAS models (a label lies in the range, so
    the move can only bring a prediction closer to it)."""
    return np.clip(np.asarray(pred, float), *VAS_RANGE)


def _predict(model, X: pd.DataFrame, task: str) -> np.ndarray:
    if task == "binary":
        return model.predict_proba(X)[:, 1]
    return bounded_vas(model.predict(X))


def clinical_baselines(records: pd.DataFrame, folds, label: str,
                       features: Sequence[str] | None = None, seed: int = 0, *,
                       task: str | None = None) -> pd.DataFrame:
    """Out-of-fold clinical-only predictions for ``label``.

    Args:
      records: one row per patient with ``patient_id``, the feature columns and ``label``.
      folds: ``(N,)`` int fold index per row of ``records``.
      label: outcome column (0/1/NaN for binary heads; VAS 0–100 for ``*_pain_post``).
      features: feature columns; default :data:`DEFAULT_FEATURES` that are present.
        Non-numeric columns (e.g. ``sex`` M/F) are one-hot encoded, missing numeric values are
        median-imputed with a missing-indicator column.
      seed: random_state of the gradient-boosting model.
      task: ``"binary"`` or ``"regression"``; inferred from ``label`` / its values when None.

    Returns:
      DataFrame ``patient_id, fold, label, pred_logreg, pred_gbm`` in the row order of
      ``records``; ``pred_logreg`` is the Ridge prediction for regression labels.
      ``df.attrs`` holds ``task``, ``features`` and ``notes`` (e.g. folds whose training rows had
      a single class and got the training prevalence as a constant prediction).
    """
    if "patient_id" not in records.columns:
        raise ClinicalError("clinical_baselines: records have no 'patient_id' column")
    if label not in records.columns:
        raise ClinicalError(f"clinical_baselines: label column '{label}' not in records")
    folds = np.asarray(folds)
    if folds.shape != (len(records),):
        raise CohortError(f"clinical_baselines: folds has shape {folds.shape}, expected "
                          f"({len(records)},) — one fold per record")
    if features is None:
        features = [c for c in DEFAULT_FEATURES if c in records.columns]
    else:
        missing = [c for c in features if c not in records.columns]
        if missing:
            raise ClinicalError(f"clinical_baselines: feature column(s) {missing} not in records")
        features = list(features)
    if not features:
        raise ClinicalError("clinical_baselines: none of the default feature columns "
                            f"{list(DEFAULT_FEATURES)} is in records")
    y = pd.to_numeric(records[label], errors="coerce").to_numpy(dtype=float)
    if records[label].notna().sum() != np.isfinite(y).sum():
        raise ClinicalError(f"clinical_baselines: label column '{label}' has non-numeric values")
    task = task or infer_task(label, records[label])
    if task not in ("binary", "regression"):
        raise ClinicalError(f"clinical_baselines: task must be 'binary' or 'regression', "
                            f"got {task!r}")
    if task == "binary" and not set(np.unique(y[np.isfinite(y)]).tolist()) <= {0.0, 1.0}:
        raise ClinicalError(f"clinical_baselines: label '{label}' is not 0/1")

    numeric, categorical = split_features(records, features)
    X = prepare_X(records, numeric, categorical)
    pred_lin = np.full(len(records), np.nan)
    pred_gbm = np.full(len(records), np.nan)
    notes = []
    for f in np.unique(folds):
        test = folds == f
        train = ~test & np.isfinite(y)
        if train.sum() == 0:
            raise CohortError(f"clinical_baselines: fold {f} has no labelled training rows "
                              f"for '{label}'")
        ytr = y[train]
        if task == "binary" and ytr.min() == ytr.max():
            notes.append(f"fold {f}: training rows have a single class for '{label}'; "
                         f"constant prediction {ytr.mean():.3f}")
            pred_lin[test] = pred_gbm[test] = ytr.mean()
            continue
        lin, gbm = make_models(numeric, categorical, task, seed)
        # One OpenMP thread: ~100 patients gain nothing from threads, and on a busy machine the
        # gradient-boosting's thread pool spins (measured 24 s vs 1 s for 5 folds on 2 cores).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
            warnings.simplefilter("ignore", category=UserWarning)
            lin.fit(X[train], ytr)
            gbm.fit(X[train], ytr)
            pred_lin[test] = _predict(lin, X[test], task)
            pred_gbm[test] = _predict(gbm, X[test], task)
    out = pd.DataFrame({
        "patient_id": records["patient_id"].astype(str).to_numpy(),
        "fold": folds.astype(int),
        "label": y,
        "pred_logreg": pred_lin,
        "pred_gbm": pred_gbm,
    })
    out.attrs.update(task=task, label=label, features=list(features), notes=notes)
    return out
