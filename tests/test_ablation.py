"""Tests of lumbarjax.selection.ablation: clinical / + X-ray / + MRI / all, out of fold, vs clinical LR."""

import numpy as np
import pandas as pd
import pytest

from lumbarjax.errors import ClinicalError
from lumbarjax.schema import PERFECT_STAGE1
from lumbarjax.selection import ablation
from lumbarjax.selection import linear

BINARY = ("zcq_success", "back_pain_improved50", "leg_pain_improved50")


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
    res = ablation.ablation(df, folds, "zcq_success", sets, n_boot=100, bayes={"auc": 0.8}, grid=grid)
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


def test_true_latents_stand_in_for_the_image_scores_only_where_a_score_exists():
    rec = pd.DataFrame({"patient_id": ["a", "b", "c"], "age": [60, 70, 80],
                        "xray_expected_grade": [1.2, np.nan, 3.0], "mri_stenosis_expected": [0.4, 1.1, np.nan]})
    truth = pd.DataFrame({"patient_id": ["c", "b", "a"], "grade": [4, 2, 1],
                          "stenosis_severity": [0.9, 0.5, 0.35]})
    out, added = ablation.with_true_latents(rec, {"xray": ["xray_expected_grade"], "mri": ["mri_stenosis_expected"]},
                                            truth)
    assert added == ["true_grade", "true_stenosis_severity"]
    np.testing.assert_array_equal(out["true_grade"], [1.0, np.nan, 4.0])
    np.testing.assert_array_equal(out["true_stenosis_severity"], [0.35, 0.5, np.nan])
    assert "true_grade" not in rec.columns       # the caller's records are not changed
    assert ablation.with_true_latents(rec, {"xray": [], "mri": []}, truth)[1] == []


def test_cross_validation_run_reports_the_ablation(tiny_run):
    """The tiny CV run's metrics.json holds the source ablation of every outcome head: clinical,
    + X-ray (the grader ran), + MRI (the pretrained stenosis grader scores the outcome patients)
    and all three, with finite values and CIs, the Bayes-optimal AUC of the synthetic cohort,
    and the table in report.html."""
    import json
    import os
    from lumbarjax.models import stage1
    m = tiny_run["metrics"]
    abl = m["ablation"]
    td = tiny_run["results"].task_data["outcome"]
    done = {r["head"]: r for r in abl["heads"]}
    skipped = [n for n in abl["notes"] if "not computed" in n]
    assert len(done) + len(skipped) == len(td.heads) and len(done) >= 3, abl["notes"]
    assert "zcq_success" in done
    names = ["clinical", "+xray", "+mri", "all", PERFECT_STAGE1]
    assert list(abl["feature_sets"]) == names
    assert abl["feature_sets"][PERFECT_STAGE1] == (abl["feature_sets"]["clinical"]
                                                            + ["true_grade", "true_stenosis_severity"])
    assert "xray_expected_grade" in abl["feature_sets"]["+xray"]
    assert "mri_stenosis_expected" in abl["feature_sets"]["+mri"]
    assert set(abl["feature_sets"]["all"]) == set(abl["feature_sets"]["+xray"]) | set(abl["feature_sets"]["+mri"])
    for head, r in done.items():
        assert [row["features"] for row in r["rows"]] == names
        for ci in [r["clinical_logreg"]] + [row["value"] for row in r["rows"]]:
            assert np.isfinite(ci["point"]) and ci["lo"] <= ci["point"] <= ci["hi"], (head, ci)
            assert ci["n_boot"] == tiny_run["config"].eval.n_boot
        d = r["rows"][1]["diff_vs_clinical_logreg"]
        assert d["lo"] <= d["diff"] <= d["hi"]
        if r["metric"] == "auc":
            assert 0.5 < r["bayes"]["auc"] <= 1.0
        else:   # the VAS heads: R² beside the MAE, and the Bayes-optimal MAE below the ridge's
            assert all(np.isfinite(row["r2"]["point"]) and row["r2"]["point"] < 1 for row in r["rows"])
            assert 0 < r["bayes"]["mae"] < r["clinical_logreg"]["point"] and 0 < r["bayes"]["r2"] < 1
    # the X-ray scores are the grader's out-of-fold grades, each from a fold model that held
    # the patient out; a score from a model that trained on the patient is refused
    oof = pd.read_csv(os.path.join(tiny_run["workdir"], "grader", "oof.csv"), dtype={"patient_id": str})
    grader_dir = os.path.join(tiny_run["workdir"], "grader")
    assert stage1.check_fold_honest(oof, run_dir=grader_dir) == len(oof)
    leaky = oof.assign(fold=1 - oof["fold"])
    with pytest.raises(Exception, match="trained on"):
        stage1.check_fold_honest(leaky, run_dir=grader_dir)
    html = open(os.path.join(tiny_run["workdir"], "report.html"), encoding="utf-8").read()
    assert "Source ablation" in html and "clinical logistic regression" in html
    with open(os.path.join(tiny_run["workdir"], "ablation.json")) as f:
        assert json.load(f)["heads"][0]["head"] == abl["heads"][0]["head"]


def test_mri_scores_come_from_the_pretrained_grader_and_cover_the_outcome_patients(tiny_run):
    """mri_scores.csv: one row per included patient, class probabilities summing to 1 from the
    pretrained stenosis grader (encoder + grading head in the encoder file), expected grade in
    [0, K-1], and the same numbers when the file is applied again."""
    import os
    from lumbarjax.models import stage1
    from lumbarjax.pipelines.pretrain import stenosis_probs
    wd = tiny_run["workdir"]
    scores = pd.read_csv(os.path.join(wd, "mri_scores.csv"), dtype={"patient_id": str})
    td = tiny_run["results"].task_data["outcome"]
    assert set(td.records["patient_id"]) <= set(scores["patient_id"])
    probs = scores[[c for c in scores.columns if c.startswith("mri_stenosis_prob_")]].to_numpy(float)
    ok = np.isfinite(probs).all(axis=1)
    assert ok.sum() >= len(td.records) - 2
    np.testing.assert_allclose(probs[ok].sum(axis=1), 1.0, atol=1e-5)
    assert scores["mri_stenosis_expected"][ok].between(0, probs.shape[1] - 1).all()
    # the same numbers as applying the file's grader again
    cohort_cache = tiny_run["results"].task_data["outcome"].cache
    again = stenosis_probs(tiny_run["config"], os.path.join(wd, "pretrain", "mri_encoder.msgpack"), cohort_cache)
    assert again.shape == (len(cohort_cache), 5, probs.shape[1])   # the tiny run's encoder grades by level
    again = stage1.mri_scores(td.records["patient_id"], again)
    got = scores.set_index("patient_id").loc[td.records["patient_id"]]
    cols = [f"mri_stenosis_prob_{k}" for k in range(probs.shape[1])]
    np.testing.assert_allclose(again[cols].to_numpy(float), got[cols].to_numpy(float), rtol=1e-5, atol=1e-6)


def test_the_report_leads_with_the_stacked_model_and_keeps_the_network_as_a_comparator(tiny_run):
    """selection.json has one combination per fold and head, its weights fitted on the inner
    validation patients; selected_oof.csv predicts every outcome patient once, within the VAS
    scale; metrics.json's outcome "model" is that combination and "fusion network" is among its
    comparators; the summary names the best comparator, the clinical baseline and the ceilings."""
    import json
    import os
    wd = tiny_run["workdir"]
    td = tiny_run["results"].task_data["outcome"]
    sel = json.load(open(os.path.join(wd, "outcome", "selection.json")))
    assert len(sel["folds_detail"]) == len(td.heads) * len(np.unique(td.folds))
    for e in sel["folds_detail"]:
        # the image candidates where the image scores clearly help (the gate), the clinical ones
        # elsewhere; a linear candidate that cannot be fitted (e.g. one class among 10 training
        # patients) is left out of that fold's combination, with the reason
        want = sel["image_candidates"] if e["images"]["used"] else sel["clinical_candidates"]
        assert set(e["weights"]) | set(e.get("left_out", {})) == set(want)
        k = len(e["weights"])
        assert abs(sum(e["weights"].values()) - 1) < 1e-9 and min(e["weights"].values()) >= 0.7 / k - 1e-9
    assert "mri_stenosis_expected" in sel["features"] and "xray_expected_grade" in sel["features"]
    oof = pd.read_csv(os.path.join(wd, "outcome", "selected_oof.csv"), dtype={"patient_id": str})
    assert sorted(oof["patient_id"]) == sorted(td.records["patient_id"])
    for h in ("back_pain_post", "leg_pain_post"):
        assert oof[f"pred_{h}"].between(0, 100).all()
    nets = [pd.read_csv(os.path.join(wd, d, "oof.csv"), dtype={"patient_id": str}).set_index("patient_id")
            for d in ("outcome", "outcome_clinical_only")]
    for e in sel["folds_detail"]:
        rows = oof[oof["fold"] == e["fold"]]
        w = e["weights"]
        first = next(iter(w))
        assert rows[f"model_{e['head']}"].str.startswith(f"{first} {w[first]:.2f}").all()
        # the linear part is what is left once the networks' weighted predictions are taken off
        lin = rows[f"pred_{e['head']}"].to_numpy().copy()
        for name, net in zip(("network", "clinical network"), nets):
            lin -= w.get(name, 0.0) * net.loc[rows["patient_id"], f"pred_{e['head']}"].to_numpy()
        hi = (w.get("linear", 0.0) + w.get("reference", 0.0)) * (1 if e["head"] in BINARY else 100)
        assert np.all(lin >= -1e-9) and np.all(lin <= hi + 1e-9)
    summ = {r["head"]: r for r in tiny_run["metrics"]["summary"]}
    assert set(summ) == set(td.heads)
    assert summ["zcq_success"]["clinical_baseline"]["name"] == "clinical logreg"
    assert summ["back_pain_post"]["clinical_baseline"]["name"] == "clinical ridge"
    assert summ["back_pain_post"]["bayes"]["value"] > 0 and summ["back_pain_post"]["learnable_ceiling"]["r2"] is not None
    m = tiny_run["metrics"]["outcomes"]["zcq_success"]
    assert "fusion network" in m["comparators"] and "clinical logreg" in m["comparators"]
    y = oof["label_zcq_success"].to_numpy(float)
    from lumbarjax.eval.metrics import auc
    keep = np.isfinite(y)
    assert abs(m["model"]["auc"]["point"] - auc(y[keep], oof["pred_zcq_success"].to_numpy(float)[keep])) < 1e-9
