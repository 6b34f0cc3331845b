"""Tests of lumbarjax.eval.ablation: clinical / + X-ray / + MRI / all, out of fold, vs clinical LR."""

import numpy as np
import pandas as pd
import pytest

from lumbarjax.errors import ClinicalError
from lumbarjax.eval import ablation
from lumbarjax.models import linear


def _records(n=160, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.normal(67, 9, n)
    grade = rng.integers(0, 5, n).astype(float)
    sev = rng.uniform(0.3, 1.0, n)
    logit = -0.03 * (age - 67) - 1.0 * (grade - 2) + 0.0 * sev
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "age": age,
                       "sex": np.where(rng.random(n) < 0.5, "F", "M"), "zcq_success": y,
                       "xray_expected_grade": grade + rng.normal(0, 0.3, n),
                       "mri_stenosis_expected": sev + rng.normal(0, 0.1, n)})
    df.loc[:4, "mri_stenosis_expected"] = np.nan  # no MRI
    return df


def test_ablation_rows_and_paired_difference_to_clinical_logreg():
    df = _records()
    folds = np.arange(len(df)) % 5
    sets = ablation.feature_sets(["age", "sex"], ["xray_expected_grade"], ["mri_stenosis_expected"])
    assert list(sets) == ["clinical", "+xray", "+mri", "all"]
    grid = [linear.REFERENCE["binary"], linear.Candidate("logreg_l2", 0.1)]
    res = ablation.ablation(df, folds, "zcq_success", sets, n_boot=100, bayes_auc=0.8, grid=grid)
    rows = {r["features"]: r for r in res["rows"]}
    assert res["metric"] == "auc" and set(rows) == set(sets)
    # the X-ray score carries the signal: its rows beat clinical LR with a CI above 0
    for name in ("+xray", "all"):
        d = rows[name]["diff_vs_clinical_logreg"]
        assert d["lo"] > 0 and rows[name]["value"]["point"] > res["clinical_logreg"]["point"] + 0.1
    # the MRI score carries none: no CI excluding 0 in its favour
    assert rows["+mri"]["diff_vs_clinical_logreg"]["lo"] < 0
    # with only the reference candidate the clinical row is the clinical logistic regression itself
    assert rows["clinical"]["value"]["point"] == pytest.approx(res["clinical_logreg"]["point"], abs=0.03)
    md = ablation.markdown([res])
    assert "| zcq_success | +xray | auc " in md and md.count("\n") == 1 + 1 + 4
    with pytest.raises(ClinicalError, match="'clinical' entry"):
        ablation.ablation(df, folds, "zcq_success", {"+xray": ["age"]})
