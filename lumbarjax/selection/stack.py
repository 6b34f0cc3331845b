"""A convex combination of outcome models (stacking), its weights fitted on held-out patients.

At n ≈ 160 no single outcome model wins everywhere: the fusion network learns what the images
and the other heads' labels share, the penalised linear family reads the stage-1 image scores
best, the clinical-only network the clinical columns. A combination that leans on each where
it helps and never far from their average is the robust choice (super learner: van der Laan,
Polley & Hubbard 2007; for small samples, shrinkage of the weights towards equal ones:
the "forecast combination puzzle", Claeskens et al. 2016).

* :func:`fit_weights` — weights w on the simplex (a grid of step ``step``) that minimise the
  head's loss of Σ_c w_c·p_c on held-out patients (binary heads: log loss of the combined
  probability; VAS heads: mean absolute error in mm), then shrunk towards equal weights:
  w ← (1 − shrink)·w + shrink/C. With shrink = 1 the combination is the plain average.
* :func:`combine` — Σ_c w_c·p_c: a probability for binary heads (a convex combination of
  probabilities), a VAS on the 0–100 mm scale for VAS heads (every candidate's is).

Pure numpy; the caller (``selection.select``) chooses the held-out patients and the candidates.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from lumbarjax.errors import ConfigError

_EPS = 1e-6


def simplex_grid(n: int, step: float) -> np.ndarray:
    """(M, n) every weight vector on the simplex whose entries are multiples of ``step``."""
    k = int(round(1.0 / step))
    if n < 1 or k < 1 or abs(k * step - 1.0) > 1e-9:
        raise ConfigError(f"stack: {n} candidates and a weight step {step} (1 / step must be an integer)")
    rows = [c + (k - sum(c),) for c in itertools.product(range(k + 1), repeat=n - 1) if sum(c) <= k]
    return np.asarray(rows, float) / k


def loss(y: np.ndarray, p: np.ndarray, task: str) -> np.ndarray:
    """Per weight vector: the mean loss over patients of the combined predictions ``p``
    ((M, N) rows of combined predictions, or (N,)): log loss for ``task="binary"``, absolute
    error (mm) for ``"regression"``."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    if task == "binary":
        q = np.clip(p, _EPS, 1.0 - _EPS)
        return -np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q), axis=-1)
    if task == "regression":
        return np.mean(np.abs(y - p), axis=-1)
    raise ConfigError(f"stack: task must be 'binary' or 'regression', got {task!r}")


def fit_weights(y: np.ndarray, preds: Mapping[str, np.ndarray], task: str, *, shrink: float = 0.5,
                step: float = 0.05) -> dict[str, float]:
    """``{candidate: weight}`` (summing to 1) that minimise :func:`loss` of the combination on
    the labelled held-out patients, shrunk towards equal weights by ``shrink`` (0..1).

    Args:
      y: (N,) labels of the held-out patients (NaN = missing: left out).
      preds: candidate name -> (N,) its held-out predictions (probabilities / VAS mm). A patient
        without a finite prediction from every candidate is left out.
      task: ``"binary"`` | ``"regression"``.
      shrink: 0 = the fitted weights, 1 = the plain average.
      step: grid step of the weights (1 / step must be an integer).

    With fewer than 2 usable patients (or one class of a binary head) the fit says nothing: the
    weights are equal. Ties between grid points go to the one nearest equal weights.
    """
    if not 0.0 <= shrink <= 1.0:
        raise ConfigError(f"stack: shrink must be in [0, 1], got {shrink}")
    names = list(preds)
    if not names:
        raise ConfigError("stack: no candidate predictions")
    y = np.asarray(y, float)
    P = np.stack([np.asarray(preds[c], float) for c in names])   # (C, N)
    ok = np.isfinite(y) & np.isfinite(P).all(axis=0)
    equal = np.full(len(names), 1.0 / len(names))
    if ok.sum() < 2 or (task == "binary" and len(np.unique(y[ok])) < 2):
        return dict(zip(names, equal.tolist()))
    grid = simplex_grid(len(names), step)                          # (M, C)
    losses = loss(y[ok], grid @ P[:, ok], task)                   # (M,)
    near = np.abs(grid - equal).sum(axis=1)
    best = grid[np.lexsort((near, np.round(losses, 12)))[0]]
    w = (1.0 - shrink) * best + shrink * equal
    return dict(zip(names, w.tolist()))


def combine(preds: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """(N,) Σ_c weights[c]·preds[c] over the candidates of ``weights`` (each (N,))."""
    missing = [c for c in weights if c not in preds]
    if missing:
        raise ConfigError(f"stack: no predictions of candidate(s) {missing}")
    return np.sum([float(w) * np.asarray(preds[c], float) for c, w in weights.items()], axis=0)


def describe(weights: Mapping[str, float], names: Mapping[str, str] | None = None) -> str:
    """``"linear 0.40 (logreg_l2(C=1)) + network 0.35 + clinical network 0.25"``."""
    names = dict(names or {})
    return " + ".join(f"{c} {w:.2f}" + (f" ({names[c]})" if c in names else "") for c, w in weights.items())

