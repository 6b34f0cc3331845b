"""Tests of lumbarjax.selection.linear: penalised linear outcome models chosen on training rows only."""

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from lumbarjax.errors import ClinicalError, CohortError
from lumbarjax.eval.baselines import clinical_baselines
from lumbarjax.selection import linear


def _records(n=150, seed=0, signal=1.5):
    rng = np.random.default_rng(seed)
    age = rng.normal(67, 9, n).round()
    x1 = rng.normal(0, 1, n)
    noise = rng.normal(0, 1, (n, 3))
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    logit = signal * x1 - 0.04 * (age - 67) - 0.5 * (sex == "F")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "age": age, "score": x1,
                       "n1": noise[:, 0], "n2": noise[:, 1], "n3": noise[:, 2], "sex": sex, "y": y,
                       "vas": 50 + 10 * x1 + rng.normal(0, 8, n)})
    df.loc[[3, 17, 40], "score"] = np.nan  # a missing image score: imputed with an indicator
    return df


FEATS = ["age", "score", "n1", "n2", "n3", "sex"]


def _design(df, rows, fit_rows):
    """The matrix sklearn sees: median-imputed numeric + indicators, standardised; sex one-hot."""
    num = df[["age", "score", "n1", "n2", "n3"]].to_numpy(float)
    imp = SimpleImputer(strategy="median", add_indicator=True).fit(num[fit_rows])
    sc = StandardScaler().fit(imp.transform(num[fit_rows]))
    Z = sc.transform(imp.transform(num[rows]))
    sex = df["sex"].to_numpy()[rows]
    return np.column_stack([Z, sex == "F", sex == "M"]).astype(float)


def test_single_candidate_equals_sklearn_logistic_regression_on_the_same_matrix():
    df = _records()
    train = np.arange(0, 120)
    fit = linear.fit_penalised(df, "y", train, FEATS, grid=[linear.Candidate("logreg_l2", 1.0)])
    ref = LogisticRegression(C=1.0, max_iter=5000).fit(_design(df, train, train), df["y"].to_numpy()[train])
    want = ref.predict_proba(_design(df, np.arange(120, 150), train))[:, 1]
    np.testing.assert_allclose(fit.predict(df.iloc[120:150]), want, atol=1e-6)
    assert fit.candidate.name == "logreg_l2(C=1)" and len(fit.selection) == 1


def test_ridge_candidate_equals_sklearn_ridge():
    df = _records()
    train = np.arange(0, 120)
    fit = linear.fit_penalised(df, "vas", train, FEATS, grid=[linear.Candidate("ridge", 10.0)])
    assert fit.task == "regression"
    ref = Ridge(alpha=10.0).fit(_design(df, train, train), df["vas"].to_numpy()[train])
    np.testing.assert_allclose(fit.predict(df.iloc[120:]), ref.predict(_design(df, np.arange(120, 150), train)),
                               atol=1e-6)


def test_crossval_with_the_baseline_candidate_reproduces_clinical_baselines_logreg():
    df = _records()
    folds = np.arange(len(df)) % 5
    base = clinical_baselines(df, folds, "y", FEATS)
    preds = np.full(len(df), np.nan)
    for f in range(5):
        fit = linear.fit_penalised(df, "y", np.flatnonzero(folds != f), FEATS,
                                   grid=[linear.Candidate("logreg_l2", 1.0)])
        preds[folds == f] = fit.predict(df[folds == f])
    np.testing.assert_allclose(preds, base["pred_logreg"], atol=1e-5)


def test_choose_keeps_the_reference_unless_another_candidate_is_clearly_better():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    ref = linear.REFERENCE["binary"]
    weak = y + rng.normal(0, 2.0, 200)                 # AUC ≈ 0.64
    strong = y + rng.normal(0, 0.5, 200)               # AUC ≈ 0.92
    barely = weak + 0.01 * rng.normal(0, 1, 200)       # the same ranks, give or take
    other = linear.Candidate("logreg_l2", 0.1)
    assert linear.choose(y, [(other, strong), (ref, weak)], "binary") == 0
    i = linear.choose(y, [(other, barely), (ref, weak)], "binary")
    assert i == 1  # a noise-level gain does not replace the plain logistic regression
    v = 50 + 10 * rng.normal(0, 1, 200)
    r = linear.REFERENCE["regression"]
    assert linear.choose(v, [(linear.Candidate("ridge", 30.0), v + 1.0), (r, v + 5.0)], "regression") == 0
    assert linear.choose(v, [(linear.Candidate("ridge", 30.0), v + 5.0), (r, v + 5.0)], "regression") == 1


def test_selection_on_pure_noise_keeps_the_reference_and_reports_the_grid():
    df = _records(200, 1, signal=0.0)
    fit = linear.fit_penalised(df, "y", np.arange(200), ["n1", "n2", "n3"], seed=0)
    assert fit.candidate == linear.REFERENCE["binary"]
    assert [r["model"] for r in fit.selection] == [c.name for c in linear.candidates("binary")]
    assert all(0.0 <= r["inner_auc"] <= 1.0 for r in fit.selection)


def test_crossval_is_fold_honest():
    """A row's prediction comes from a model that never saw it: changing the labels of fold 0
    changes no prediction of fold 0, and does change predictions of the other folds."""
    df = _records(120, 2)
    folds = np.arange(len(df)) % 4
    grid = [linear.REFERENCE["binary"], linear.Candidate("logreg_l2", 0.03)]
    a = linear.crossval_penalised(df, folds, "y", FEATS, seed=3, grid=grid)
    flipped = df.copy()
    flipped.loc[folds == 0, "y"] = 1.0 - flipped.loc[folds == 0, "y"]
    b = linear.crossval_penalised(flipped, folds, "y", FEATS, seed=3, grid=grid)
    np.testing.assert_allclose(a["pred"][folds == 0], b["pred"][folds == 0], atol=1e-12)
    assert np.abs(a["pred"][folds != 0] - b["pred"][folds != 0]).max() > 1e-3
    assert list(a.columns) == ["patient_id", "fold", "label", "pred", "model"]


def test_bad_input_errors():
    df = _records(60)
    with pytest.raises(ClinicalError, match=r"column\(s\) \['stenosis_grade'\] not in the records"):
        linear.fit_penalised(df, "y", np.arange(30), ["age", "stenosis_grade"])
    with pytest.raises(CohortError, match="single class"):
        linear.fit_penalised(df.assign(y=1.0), "y", np.arange(30), FEATS)
    with pytest.raises(CohortError, match="too few"):
        linear.fit_penalised(df, "y", np.arange(6), FEATS)


def test_single_candidate_on_too_few_rows_is_fitted_without_inner_scores():
    df = _records(60)
    fit = linear.fit_penalised(df, "y", np.arange(7), FEATS, grid=[linear.REFERENCE["binary"]])
    assert fit.selection == [] and fit.candidate == linear.REFERENCE["binary"]
    p = fit.predict(df.iloc[7:12])
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))


def test_vas_predictions_stay_on_the_0_to_100_scale():
    """A linear VAS model's output is bounded to the scale (schema.VAS_RANGE): where the fitted
    line leaves 0-100 mm the prediction is the nearer end, inside it the plain ridge prediction."""
    df = _records()
    df["vas"] = np.clip(50 + 40 * df["score"].fillna(0), 0, 100)   # steep: the line leaves the scale
    train = np.arange(0, 120)
    grid = [linear.Candidate("ridge", 1.0)]
    fit = linear.fit_penalised(df, "vas", train, FEATS, grid=grid)
    far = df.iloc[120:].assign(score=np.r_[np.full(15, -6.0), np.full(15, 6.0)])
    pred = fit.predict(far)
    assert pred.min() == 0.0 and pred.max() == 100.0
    raw = Ridge(alpha=1.0).fit(_design(df, train, train), df["vas"].to_numpy()[train]).predict(_design(df, train, train))
    inside = (raw > 0) & (raw < 100)
    np.testing.assert_allclose(fit.predict(df.iloc[train])[inside], raw[inside], atol=1e-6)
    oof = linear.crossval_penalised(df, np.arange(len(df)) % 5, "vas", FEATS, grid=None)
    assert oof["pred"].between(0, 100).all()
