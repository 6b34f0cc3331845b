"""The clinical regression as the outcome network's starting point and fixed offset (issue 13).

With ``config.outcome.clinical_offset = "glm"`` every network of the outcome task (the fusion
model and its clinical-only twin, in every fold and refit) starts as the penalised regression of
its own clinical features, fitted on exactly the patients that network trains on:

* binary head: L2 logistic regression (C = 1, as the clinical baseline in ``eval.baselines``),
  with the positive class weighted n_neg / n_pos like the network's loss;
* VAS head: ridge regression (alpha = 1) of VAS/100, the unit the network's head works in.

The coefficients go into the linear skip path ``skip_<head>`` (kept fixed: the caller adds
those names to ``optim.frozen``), the intercept into the head's bias, and the head's weights
start at 0. At step 0 the network therefore *is* the clinical regression, and training can only
add what the images and the clinical MLP explain beyond it — the "combined actuarial neural
network" construction (Schelldorfer & Wüthrich 2019). With ``train.eval_at_start`` the inner
validation split also scores step 0, so early stopping can keep the regression alone.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from lumbarjax.errors import ConfigError
from lumbarjax.settings import setting
from lumbarjax.models.fusion import VAS_SCALE

KINDS = ("none", "glm")
C_LOGISTIC = 1.0
ALPHA_RIDGE = 1.0


def kind_of(task_cfg) -> str:
    """``config.outcome.clinical_offset`` (configs/default.py; a missing key is a ConfigError)."""
    kind = str(setting(task_cfg, "clinical_offset"))
    if kind not in KINDS:
        raise ConfigError(f"config.outcome.clinical_offset: expected one of {KINDS}, got {kind!r}")
    return kind


def frozen_names(binary_heads: Sequence[str], regression_heads: Sequence[str]) -> tuple:
    """The top-level parameter names that hold the fitted offsets (``optim.frozen``)."""
    return tuple(f"skip_{h}" for h in tuple(binary_heads) + tuple(regression_heads))


def fit_offsets(features: np.ndarray, labels: Mapping[str, np.ndarray], binary_heads: Sequence[str],
                regression_heads: Sequence[str], pos_weights: Mapping[str, float]) -> dict:
    """``{head: (coef (F,), intercept)}`` in the network's output units (logit; VAS/100).

    features: (N, F) the clinical encoder's output for the training patients; labels: head ->
    (N,) with NaN where missing. A head with fewer than 2 labelled patients (or one class only)
    gets a zero offset and the intercept the network would start from."""
    x = np.asarray(features, np.float64)
    out = {}
    with threadpool_limits(1):
        for h in binary_heads:
            y = np.asarray(labels[h], np.float64)
            keep = np.isfinite(y)
            if keep.sum() < 2 or len(np.unique(y[keep])) < 2:
                out[h] = (np.zeros(x.shape[1]), 0.0)
                continue
            w = float(pos_weights.get(h, 1.0))
            m = LogisticRegression(C=C_LOGISTIC, class_weight={0: 1.0, 1: w}, max_iter=2000)
            m.fit(x[keep], (y[keep] > 0.5).astype(int))
            out[h] = (m.coef_[0], float(m.intercept_[0]))
        for h in regression_heads:
            y = np.asarray(labels[h], np.float64)
            keep = np.isfinite(y)
            if keep.sum() < 2:
                out[h] = (np.zeros(x.shape[1]), 0.5)
                continue
            m = Ridge(alpha=ALPHA_RIDGE).fit(x[keep], y[keep] / VAS_SCALE)
            out[h] = (np.asarray(m.coef_, np.float64), float(m.intercept_))
    return out


def with_offsets(offsets: Mapping[str, tuple], then: Callable | None = None) -> Callable:
    """``init_params`` hook for ``train_and_evaluate``: write the fitted offsets into
    ``skip_<head>`` / ``head_<head>`` (head weights 0), after the hook ``then`` if given."""
    def init(params):
        params = dict(then(params) if then is not None else params)
        for h, (coef, intercept) in offsets.items():
            skip, head = f"skip_{h}", f"head_{h}"
            if skip not in params or head not in params:
                raise ConfigError(f"clinical_offset='glm' needs the clinical skip path, but the "
                                  f"outcome model has no {skip!r}")
            kernel = np.asarray(params[skip]["kernel"])
            if kernel.shape != (len(coef), 1):
                raise ConfigError(f"clinical offset of head {h!r}: {len(coef)} clinical features "
                                  f"but the model's skip path takes {kernel.shape[0]}")
            params[skip] = {"kernel": np.asarray(coef, np.float32).reshape(-1, 1)}
            params[head] = {"kernel": np.zeros_like(np.asarray(params[head]["kernel"])),
                            "bias": np.full_like(np.asarray(params[head]["bias"]), intercept)}
        return params
    return init
