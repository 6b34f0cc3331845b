"""--mode=evaluate: a finished run's outcome fold ensemble on a second labelled synthetic cohort."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import decoded_data_uris, phi_strings
from lumbarjax.jobs import external
from lumbarjax.errors import ConfigError

BINARY = ("zcq_success", "back_pain_improved50", "leg_pain_improved50")


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    from lumbarjax.synthetic import make_cohort
    other = str(tmp_path_factory.mktemp("hospital_b"))
    make_cohort(other, n_patients=12, seed=11, xray_size=(96, 80), mri_size=(48, 48), n_mc=2000)
    out_dir = str(tmp_path_factory.mktemp("external"))
    res = external.evaluate_cohort(tiny_run["config"], tiny_run["workdir"], other, out_dir=out_dir)
    with open(res["metrics"]) as f:
        metrics = json.load(f)
    return dict(other=other, out_dir=out_dir, res=res, metrics=metrics, run=tiny_run)


def test_metrics_hold_each_binary_head_auc_with_ci(evaluated):
    m = evaluated["metrics"]
    pred = pd.read_csv(evaluated["res"]["predictions"], dtype={"patient_id": str})
    clin = pd.read_csv(os.path.join(evaluated["other"], "clinical.csv"), dtype={"patient_id": str})
    assert set(pred["patient_id"]) <= set(clin["patient_id"])
    assert evaluated["res"]["n_patients"] == len(pred) > 0
    for head in BINARY:
        rep = m["outcomes"][head]["model"]
        a = rep["auc"]
        assert a["point"] is not None and a["lo"] <= a["point"] <= a["hi"], (head, a)
        assert rep["n"] == int(pred[f"label_{head}"].notna().sum())
        assert rep["calibration"]["n"] == rep["n"] and sum(rep["calibration"]["bins"]["count"]) == rep["n"]
        assert {"point", "lo", "hi"} <= set(rep["calibration_slope"]) and "intercept" in rep["calibration"]
        assert len(rep["decision_curve"]["model"]) == len(rep["decision_curve"]["thresholds"])
    for head in ("back_pain_post", "leg_pain_post"):
        assert m["outcomes"][head]["model"]["mae"]["point"] >= 0
    ev = m["extra"]["external_validation"]
    assert ev["n_fold_models"] == int(evaluated["run"]["config"].outcome.cv.num_folds)
    # the Bayes-optimal AUC of the second (synthetic) cohort is reported beside the results
    assert set(BINARY) <= set(m["bayes_optimal"])
    html = open(evaluated["res"]["html"], encoding="utf-8").read()
    assert "Calibration" in html and "Decision curves" in html


def test_ensemble_is_the_mean_of_the_fold_models(evaluated):
    """On the run's own patients each restored fold model reproduces the run's out-of-fold
    prediction for the patients it held out, and the ensemble is the mean of the fold models."""
    run = evaluated["run"]
    td = run["results"].task_data["outcome"]
    ens = external.ensemble_predictions(run["config"], run["workdir"], td.records, td.cache)
    per_fold = ens.attrs["per_fold"]
    assert len(per_fold) == ens.attrs["n_fold_models"] == int(run["config"].outcome.cv.num_folds)
    oof = pd.read_csv(os.path.join(run["workdir"], "outcome", "oof.csv"), dtype={"patient_id": str})
    oof = oof.set_index("patient_id").loc[ens["patient_id"]]
    for head in BINARY + ("back_pain_post",):
        c = f"pred_{head}"
        np.testing.assert_allclose(ens[c], np.mean([p[c] for p in per_fold], axis=0), atol=1e-12)
        for f, p in enumerate(per_fold):
            held_out = oof["fold"].to_numpy() == f
            tol = 1e-5 if head in BINARY else 1e-3
            np.testing.assert_allclose(p[c][held_out], oof[c].to_numpy()[held_out], atol=tol, rtol=0)


def test_nothing_written_holds_phi_of_the_second_cohort(evaluated):
    phi = phi_strings(evaluated["other"])
    assert phi, "the synthetic export should carry fake PHI in its headers"
    written = [p for p in glob.glob(os.path.join(evaluated["out_dir"], "**", "*"), recursive=True)
               if os.path.isfile(p)]
    assert any(p.endswith("manifest.csv") for p in written) and len(written) >= 5
    for path in written:
        text = decoded_data_uris(open(path, "rb").read()).decode("latin-1")
        leaked = [p for p in phi if p in text]
        assert not leaked, f"{path} contains PHI {leaked[:3]}"


def test_own_cohort_is_refused(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="own cohort"):
        external.evaluate_cohort(tiny_run["config"], tiny_run["workdir"], tiny_run["root"],
                                 out_dir=str(tmp_path))


def test_the_reported_model_is_applied_fold_by_fold_with_the_runs_weights(evaluated):
    """--mode=evaluate leads with the run's reported model: on the run's own patients each fold's
    networks reproduce the run's out-of-fold predictions for the patients they held out, each
    fold's part is its candidates combined with the fold's weights from selection.json, the
    whole is the mean over folds, and the stage-1 MRI scores are the run's own."""
    run = evaluated["run"]
    td = run["results"].task_data["outcome"]
    cfg, wd = run["config"], run["workdir"]
    before = open(os.path.join(wd, "cohort_summary.json")).read()
    net = external.ensemble_predictions(cfg, wd, td.records, td.cache)
    sel = external.selected_predictions(cfg, wd, td.records, td.cache, net.attrs["per_fold"])
    assert open(os.path.join(wd, "cohort_summary.json")).read() == before  # the run is only read
    summary = json.load(open(os.path.join(wd, "outcome", "selection.json")))
    assert set(summary["image_candidates"]) == {"linear", "network"}
    assert set(summary["clinical_candidates"]) == {"reference", "clinical network"}
    oofs = {c: pd.read_csv(os.path.join(wd, d, "oof.csv"), dtype={"patient_id": str}).set_index("patient_id")
            .loc[sel["patient_id"]] for c, d in (("network", "outcome"), ("clinical network", "outcome_clinical_only"))}
    checked = 0
    for head in BINARY + ("back_pain_post",):
        entries = [e for e in summary["folds_detail"] if e["head"] == head]
        for e, parts, combined in zip(entries, sel.attrs["candidates"][head], sel.attrs["per_fold"][head]):
            f = e["fold"]
            np.testing.assert_allclose(combined, sum(w * parts[c] for c, w in e["weights"].items()), rtol=1e-12)
            for c, oof in ((c, o) for c, o in oofs.items() if c in e["weights"]):
                held = oof["fold"].to_numpy() == f
                tol = 1e-5 if head in BINARY else 1e-3
                np.testing.assert_allclose(parts[c][held], oof[f"pred_{head}"].to_numpy()[held], atol=tol, rtol=0)
                checked += 1
        np.testing.assert_allclose(sel[f"pred_{head}"], np.mean(sel.attrs["per_fold"][head], axis=0))
    assert checked >= 4, checked
    scores = external.stage1_scores(cfg, wd, td.records, td.cache).set_index("patient_id")
    mine = pd.read_csv(os.path.join(wd, "mri_scores.csv"), dtype={"patient_id": str}).set_index("patient_id")
    np.testing.assert_allclose(scores.loc[mine.index, "mri_stenosis_expected"], mine["mri_stenosis_expected"],
                               atol=1e-5)
    # the clinical baselines beside it: each the mean of its fold models; the clinical-only
    # network's fold models reproduce its out-of-fold predictions for the patients they held out
    comp = sel.attrs["comparators"]
    assert set(comp) == {"clinical logreg", "clinical ridge", "clinical-only network"}
    assert {c for c in comp["clinical logreg"] if c.startswith("pred_")} == {f"pred_{h}" for h in BINARY}
    assert "pred_back_pain_post" in comp["clinical ridge"]
    clin_folds = external.fold_outputs(cfg, wd, "outcome_clinical_only", td.records, td.cache)
    np.testing.assert_allclose(comp["clinical-only network"]["pred_zcq_success"],
                               np.mean([np.asarray(o["pred_zcq_success"], float) for o in clin_folds], axis=0))
    assert comp["clinical logreg"]["pred_zcq_success"].between(0, 1).all()
    assert comp["clinical ridge"]["pred_back_pain_post"].between(0, 100).all()
    # the external report leads with the reported model and lists every comparator beside it,
    # with the paired difference to each
    ext = evaluated["metrics"]["outcomes"]["zcq_success"]
    assert {"fusion network", "clinical logreg", "clinical-only network"} <= set(ext["comparators"])
    assert {"fusion network", "clinical logreg", "clinical-only network"} <= set(ext["paired_difference"])
    assert "clinical ridge" in evaluated["metrics"]["outcomes"]["back_pain_post"]["comparators"]
    assert "reported model" in evaluated["metrics"]["extra"]["external_validation"]["model"]
