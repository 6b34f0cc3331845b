import numpy as np
import pandas as pd
import pytest

from lumbarjax.errors import ClinicalError, CohortError
from lumbarjax.eval import metrics as M
from lumbarjax.eval.baselines import clinical_baselines


def _records(n=120, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.normal(65, 10, n)
    back = rng.uniform(20, 90, n)
    sex = rng.choice(["M", "F"], n)
    lp = 0.08 * (age - 65) - 0.04 * (back - 55) + 0.8 * (sex == "F")
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(float)
    df = pd.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)],
        "age": age,
        "sex": sex,
        "bmi": rng.normal(27, 4, n),
        "smoker": rng.integers(0, 2, n).astype(float),
        "back_pain_pre": back,
        "leg_pain_pre": rng.uniform(20, 90, n),
        "zcq_success": y,
        "back_pain_post": np.clip(0.5 * back + rng.normal(0, 4, n), 0, 100),
    })
    df.loc[[3, 17], "bmi"] = np.nan          # missing feature values
    df.loc[[5], "sex"] = None                 # missing category
    df.loc[[2, 40, 77], "zcq_success"] = np.nan  # missing labels
    folds = np.arange(n) % 5
    return df, folds


def test_output_shape_and_missing_labels_still_predicted():
    df, folds = _records()
    out = clinical_baselines(df, folds, "zcq_success")
    assert list(out.columns) == ["patient_id", "fold", "label", "pred_logreg", "pred_gbm"]
    assert len(out) == len(df)
    assert out["patient_id"].tolist() == df["patient_id"].tolist()
    assert np.all(out["fold"].to_numpy() == folds)
    assert out["label"].isna().sum() == 3
    assert np.isnan(out.loc[[2, 40, 77], "label"]).all()
    assert np.all(np.isfinite(out[["pred_logreg", "pred_gbm"]].to_numpy()))
    assert out[["pred_logreg", "pred_gbm"]].to_numpy().min() >= 0
    assert out[["pred_logreg", "pred_gbm"]].to_numpy().max() <= 1
    assert out.attrs["task"] == "binary"
    # only present default features used
    assert out.attrs["features"] == ["age", "sex", "bmi", "smoker", "back_pain_pre",
                                     "leg_pain_pre"]


def test_logreg_beats_chance_on_simulated_signal():
    df, folds = _records(n=400, seed=1)
    out = clinical_baselines(df, folds, "zcq_success")
    a = M.auc(out["label"], out["pred_logreg"])
    assert a > 0.7
    assert M.auc(out["label"], out["pred_gbm"]) > 0.6


def test_shuffling_test_fold_labels_does_not_change_its_predictions():
    df, folds = _records()
    base = clinical_baselines(df, folds, "zcq_success")
    rng = np.random.default_rng(5)
    for f in range(5):
        shuffled = df.copy()
        idx = np.flatnonzero(folds == f)
        shuffled.loc[idx, "zcq_success"] = rng.permutation(df.loc[idx, "zcq_success"].to_numpy())
        out = clinical_baselines(shuffled, folds, "zcq_success")
        m = folds == f
        np.testing.assert_array_equal(out.loc[m, "pred_logreg"], base.loc[m, "pred_logreg"])
        np.testing.assert_array_equal(out.loc[m, "pred_gbm"], base.loc[m, "pred_gbm"])


def test_changing_fold_labels_only_changes_other_folds():
    df, folds = _records()
    base = clinical_baselines(df, folds, "zcq_success")
    f = 2
    changed = df.copy()
    m = folds == f
    lab = changed.loc[m, "zcq_success"]
    changed.loc[m, "zcq_success"] = np.where(lab.isna(), 1.0, 1.0 - lab)  # flip and fill
    out = clinical_baselines(changed, folds, "zcq_success")
    np.testing.assert_array_equal(out.loc[m, "pred_logreg"], base.loc[m, "pred_logreg"])
    np.testing.assert_array_equal(out.loc[m, "pred_gbm"], base.loc[m, "pred_gbm"])
    # sanity: those labels are training data for the other folds, so their predictions move
    assert not np.allclose(out.loc[~m, "pred_logreg"], base.loc[~m, "pred_logreg"])


def test_regression_head_uses_ridge_and_gbm_regressor():
    df, folds = _records(n=200, seed=2)
    df.loc[[0, 1], "back_pain_post"] = np.nan
    out = clinical_baselines(df, folds, "back_pain_post")
    assert out.attrs["task"] == "regression"
    assert out["label"].isna().sum() == 2
    assert np.all(np.isfinite(out["pred_logreg"]))
    # the signal (0.5 * back_pain_pre) is learnt: MAE well below predicting the mean
    naive = M.mae(out["label"], np.full(len(out), np.nanmean(out["label"])))
    assert M.mae(out["label"], out["pred_logreg"]) < 0.6 * naive


def test_single_class_training_fold_gives_constant_and_note():
    df, folds = _records(n=100)
    df["zcq_success"] = 1.0
    out = clinical_baselines(df, folds, "zcq_success")
    assert np.allclose(out["pred_logreg"], 1.0)
    assert len(out.attrs["notes"]) == 5


def test_bad_inputs_name_the_column():
    df, folds = _records()
    with pytest.raises(ClinicalError, match="'nope' not in records"):
        clinical_baselines(df, folds, "nope")
    with pytest.raises(ClinicalError, match=r"\['height'\] not in records"):
        clinical_baselines(df, folds, "zcq_success", features=["age", "height"])
    with pytest.raises(CohortError, match="folds has shape"):
        clinical_baselines(df, folds[:-1], "zcq_success")


def test_vas_baselines_stay_on_the_0_to_100_scale():
    df, folds = _records()
    df["back_pain_post"] = np.clip(2.0 * df["back_pain_pre"] - 60, 0, 100)   # a line that leaves the scale
    df.loc[df.index[:5], "back_pain_pre"] = [1, 2, 3, 150, 160]              # out-of-range inputs
    out = clinical_baselines(df, folds, "back_pain_post")
    for col in ("pred_logreg", "pred_gbm"):
        assert out[col].between(0, 100).all(), col
    assert (out["pred_logreg"] == 0).any() and (out["pred_logreg"] == 100).any()
