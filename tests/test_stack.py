"""selection.stack: a convex combination of outcome models, weights fitted on held-out patients."""

import numpy as np
import pytest

from lumbarjax.errors import ConfigError
from lumbarjax.selection import stack


def test_the_simplex_grid_holds_every_weight_vector_of_the_step():
    g = stack.simplex_grid(3, 0.25)
    assert g.shape == (15, 3)                        # C(4 + 2, 2)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    assert {tuple(r) for r in g} >= {(1.0, 0.0, 0.0), (0.25, 0.5, 0.25), (0.0, 0.0, 1.0)}
    with pytest.raises(ConfigError, match="1 / step must be an integer"):
        stack.simplex_grid(3, 0.3)


def test_the_fitted_weights_go_to_the_candidate_that_predicts_the_held_out_patients():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    good = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.1, 200), 0.01, 0.99)
    noise = rng.uniform(0.05, 0.95, 200)
    w = stack.fit_weights(y, {"good": good, "noise": noise}, "binary", shrink=0.0)
    assert w["good"] > 0.9 and abs(sum(w.values()) - 1) < 1e-12
    # shrinkage moves them towards equal weights: half way with shrink = 0.5, all the way with 1
    half = stack.fit_weights(y, {"good": good, "noise": noise}, "binary", shrink=0.5)
    assert half["good"] == pytest.approx(0.5 * w["good"] + 0.25)
    assert stack.fit_weights(y, {"good": good, "noise": noise}, "binary", shrink=1.0) == {"good": 0.5, "noise": 0.5}


def test_vas_weights_minimise_the_absolute_error_and_the_combination_stays_on_the_scale():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 100, 120)
    a, b = np.clip(y + rng.normal(0, 5, 120), 0, 100), np.clip(y + rng.normal(0, 30, 120), 0, 100)
    w = stack.fit_weights(y, {"a": a, "b": b}, "regression", shrink=0.0)
    assert w["a"] >= 0.8
    assert stack.loss(y, stack.combine({"a": a, "b": b}, w), "regression") < stack.loss(y, b, "regression")
    c = stack.combine({"a": np.zeros(5), "b": np.full(5, 100.0)}, {"a": 0.3, "b": 0.7})
    np.testing.assert_allclose(c, 70.0)
    assert stack.describe(w, {"a": "ridge(alpha=1)"}).startswith(f"a {w['a']:.2f} (ridge(alpha=1)) + b")


def test_held_out_patients_that_say_nothing_give_equal_weights():
    p = {"x": np.array([0.2, 0.7, 0.4]), "y": np.array([0.5, 0.5, 0.9])}
    assert stack.fit_weights(np.array([1.0, 1.0, 1.0]), p, "binary") == {"x": 0.5, "y": 0.5}   # one class
    assert stack.fit_weights(np.array([np.nan, 1.0, np.nan]), p, "binary") == {"x": 0.5, "y": 0.5}
    # two candidates that predict the same: every weight ties, the equal one is kept
    same = {"x": p["x"], "y": p["x"]}
    assert stack.fit_weights(np.array([0.0, 1.0, 0.0]), same, "binary", shrink=0.0) == {"x": 0.5, "y": 0.5}
    with pytest.raises(ConfigError, match="shrink must be in"):
        stack.fit_weights(np.array([0.0, 1.0]), p, "binary", shrink=1.5)
    with pytest.raises(ConfigError, match="no predictions of candidate"):
        stack.combine(p, {"z": 1.0})
