"""Tests of lumbarjax.models.stage1: stage-1 scores as outcome features, fold-honestly."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data.cohort import make_folds
from lumbarjax.errors import CohortError
from lumbarjax.models import stage1


def _grader_oof():
    return pd.DataFrame({"patient_id": ["A", "B", "C"], "fold": [0, 1, 0], "pred_grade": [1, 3, 0],
                         "prob_grade_0": [0.2, 0.0, 0.9], "prob_grade_1": [0.6, 0.1, 0.1],
                         "prob_grade_2": [0.2, 0.2, 0.0], "prob_grade_3": [0.0, 0.7, 0.0],
                         "pred_grade_L4L5": [1, 3, 0]})


def test_xray_and_mri_scores_and_attach():
    x = stage1.xray_scores(_grader_oof())
    np.testing.assert_allclose(x["xray_expected_grade"], [1.0, 2.6, 0.1])
    assert list(x.columns) == ["patient_id", "xray_expected_grade", "xray_prob_grade_0", "xray_prob_grade_1",
                               "xray_prob_grade_2", "xray_prob_grade_3", "xray_pred_grade_L4L5"]
    m = stage1.mri_scores(["A", "B", "D"], np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1, 0, 0]]),
                          present=[True, True, False])
    np.testing.assert_allclose(m["mri_stenosis_expected"][:2], [0.5, 2.0])
    assert np.isnan(m.loc[2, "mri_stenosis_prob_0"])
    rec = pd.DataFrame({"patient_id": ["A", "B", "C", "D"], "age": [60, 70, 80, 50]})
    out, cols = stage1.attach(rec, x, m)
    assert cols[0] == "xray_expected_grade" and cols[-1] == "mri_stenosis_prob_2"
    assert np.isnan(out.loc[3, "xray_expected_grade"]) and np.isnan(out.loc[2, "mri_stenosis_expected"])
    assert out.loc[1, "mri_stenosis_expected"] == 2.0 and list(out["age"]) == [60, 70, 80, 50]
    with pytest.raises(CohortError, match="already in the records"):
        stage1.attach(out, x)
    with pytest.raises(CohortError, match="no column 'fold'"):
        stage1.xray_scores(_grader_oof().drop(columns="fold"))


def test_the_level_scale_and_its_measurements_become_xray_scores():
    g = _grader_oof().assign(level_pred_grade=[2, 3, 0], scale=[6, 11, 1],
                             dhi_L4L5=[0.21, 0.09, 0.30], listhesis_mm_L4L5=[0.4, -3.5, 0.0])
    x = stage1.xray_scores(g)
    assert list(x.columns)[-4:] == ["xray_level_grade", "xray_scale", "xray_dhi_L4L5",
                                    "xray_listhesis_abs_mm_L4L5"]
    np.testing.assert_allclose(x["xray_scale"], [6, 11, 1])
    np.testing.assert_allclose(x["xray_dhi_L4L5"], [0.21, 0.09, 0.30])
    np.testing.assert_allclose(x["xray_listhesis_abs_mm_L4L5"], [0.4, 3.5, 0.0])  # a slip either way


def test_fold_honesty_from_split_files(tmp_path):
    """Out-of-fold grades pass; a table whose rows were scored by a fold model that trained on
    them (e.g. in-sample predictions) is refused, naming the patient and fold."""
    ids = [f"P{i:02d}" for i in range(20)]
    folds = make_folds(pd.DataFrame({"patient_id": ids}), k=4, seed=0, stratify_on=None)
    for f in range(4):
        train = [p for p, g in zip(ids, folds) if g != f]
        os.makedirs(tmp_path / f"fold_{f}")
        with open(tmp_path / f"fold_{f}" / "split.json", "w") as fh:
            json.dump({"test": [p for p, g in zip(ids, folds) if g == f], "inner_train": train[:-3],
                       "inner_val": train[-3:]}, fh)
    oof = pd.DataFrame({"patient_id": ids, "fold": folds, "pred_grade": 1})
    assert stage1.check_fold_honest(oof, str(tmp_path)) == 20
    leaky = oof.assign(fold=(folds + 1) % 4)  # each patient scored by a model that trained on it
    with pytest.raises(CohortError, match=r"20 patient\(s\) scored by a fold model that trained on them"):
        stage1.check_fold_honest(leaky, str(tmp_path))
    with pytest.raises(CohortError, match="split.json is missing"):
        stage1.check_fold_honest(oof.assign(fold=7), str(tmp_path))
