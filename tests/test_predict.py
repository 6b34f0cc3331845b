"""Predict one new patient with a finished run's fold models; regenerate a run's report.

One tiny cross-validated run (the config of test_workflow) is shared by the module."""

import glob
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest

from lumbarjax.jobs import predict, report, restore
from conftest import phi_strings, tiny_config
from lumbarjax.errors import CohortError, ConfigError

BINARY = ("zcq_success", "back_pain_improved50", "leg_pain_improved50")
REGRESSION = ("back_pain_post", "leg_pain_post")


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def _patient_folder(run, pid, dest, *, clinical_row=True):
    """Copy the export folder holding ``pid``'s images (found via the run's manifest)."""
    man = pd.read_csv(os.path.join(run["workdir"], "manifest.csv"), dtype=str)
    paths = [p for ps in man.loc[man["patient_id"] == pid, "paths"] for p in ps.split(";")]
    src = os.path.join(run["root"], os.path.commonpath(paths))
    shutil.copytree(src, dest)
    if clinical_row:
        clin = pd.read_csv(os.path.join(run["root"], "clinical.csv"), dtype={"patient_id": str})
        clin[clin["patient_id"] == pid].to_csv(os.path.join(dest, "clinical.csv"), index=False)
    return str(dest)


@pytest.fixture(scope="module")
def patient(run, tmp_path_factory):
    oof = pd.read_csv(os.path.join(run["workdir"], "outcome", "oof.csv"), dtype={"patient_id": str})
    cache = pd.read_csv(os.path.join(run["workdir"], "manifest.csv"), dtype=str)
    with_mri = set(cache.loc[cache["role"] == "mri_t2_sag", "patient_id"])
    with_xray = set(cache.loc[cache["role"] == "xray", "patient_id"])
    row = oof[oof["patient_id"].isin(with_mri & with_xray)].iloc[0]
    pid = row["patient_id"]
    folder = _patient_folder(run, pid, tmp_path_factory.mktemp("new") / "export_of_one_patient")
    phi = phi_strings(folder)
    out_dir = str(tmp_path_factory.mktemp("pred"))
    result = predict.predict_patient(run["config"], run["workdir"], folder, out_dir=out_dir)
    return dict(pid=pid, oof_row=row, folder=folder, phi=phi, out_dir=out_dir, result=result)


def test_fold_ensemble_mean_spread_and_files(run, patient):
    with open(os.path.join(patient["out_dir"], "prediction.json")) as f:
        pred = json.load(f)
    k = int(run["config"].outcome.cv.num_folds)
    assert pred["patient_id"] == patient["pid"]
    assert pred["inputs"]["mri_present"] and pred["inputs"]["xray_present"]
    assert pred["inputs"]["clinical_row_found"]
    folds = pred["outcome"]["folds"]
    assert [f["fold"] for f in folds] == list(range(k))
    for head in BINARY + REGRESSION:
        e = pred["outcome"]["heads"][head]
        vals = np.array([f[head] for f in folds])
        assert e["n_folds"] == k
        assert e["mean"] == pytest.approx(vals.mean(), abs=1e-12)
        assert e["sd"] == pytest.approx(vals.std(ddof=1), abs=1e-12) and e["sd"] >= 0
        assert e["min"] <= e["mean"] <= e["max"]
        if head in BINARY:
            assert 0.0 < e["mean"] < 1.0 and e["kind"] == "probability"
        else:
            assert np.isfinite(e["mean"])
    g = pred["grader"]
    pm = np.array(g["prob_mean"])
    assert pm.shape == (5,) and pm.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(pm, np.mean([f["probs"] for f in g["folds"]], axis=0), atol=1e-12)
    assert all(s >= 0 for s in g["prob_sd"]) and 0 <= g["grade"] <= 4
    hm = pred["outcome"]["heatmap"]
    assert hm["head"] == "zcq_success" and np.isfinite(hm["completeness_delta"])
    # the ensemble attribution adds up to the mean logit change, up to the mean IG error
    total = hm["mri_attribution_sum"] + sum(hm["clinical_attribution"].values())
    assert total - (hm["ensemble_logit"] - hm["baseline_logit"]) == pytest.approx(
        hm["completeness_delta"], abs=1e-4)
    for name in ("prediction.html", "prediction.json", "mri_ig.png", "mri_ig.nii.gz",
                 "mri_preprocessed.nii.gz", "clinical_ig.png", "xray_ig.png"):
        assert os.path.getsize(os.path.join(patient["out_dir"], name)) > 0, name


def test_held_out_fold_reproduces_out_of_fold_prediction(run, patient):
    """The fold that held the patient out predicts exactly its OOF value: the checkpoints,
    the clinical encoder and the preprocessing are restored faithfully."""
    pred = patient["result"]
    row = patient["oof_row"]
    fold = pred["outcome"]["folds"][int(row["fold"])]
    for head in BINARY + REGRESSION:
        # float32 round-off: 1e-5 of a probability; 1e-6 of the 0-100 mm VAS range (batch 1 vs a
        # batch of 16 may pick different conv kernels)
        tol = 1e-5 if head in BINARY else 1e-4
        assert fold[head] == pytest.approx(float(row[f"pred_{head}"]), abs=tol), head
    g = pd.read_csv(os.path.join(run["workdir"], "grader", "oof.csv"), dtype={"patient_id": str})
    grow = g[g["patient_id"] == patient["pid"]].iloc[0]
    gf = pred["grader"]["folds"][int(grow["fold"])]
    assert np.allclose(gf["probs"], [grow[f"prob_grade_{k}"] for k in range(5)], atol=1e-5)
    assert gf["pred_grade"] == int(grow["pred_grade"])


def test_html_is_self_contained_and_nothing_holds_phi(patient):
    html = open(os.path.join(patient["out_dir"], "prediction.html"), encoding="utf-8").read()
    srcs = re.findall(r"""src=['"]([^'"]*)['"]""", html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert patient["pid"] in html
    assert patient["phi"], "the demo export should carry fake PHI in its headers"
    written = [p for p in glob.glob(os.path.join(patient["out_dir"], "**", "*"), recursive=True)
               if os.path.isfile(p) and not p.endswith(".npy")]
    assert len(written) >= 9
    for path in written:
        text = open(path, "rb").read().decode("latin-1")
        leaked = [p for p in patient["phi"] if p in text]
        assert not leaked, f"{path} contains PHI {leaked[:3]}"


def test_patient_without_mri_or_clinical_row_still_predicts(run, patient, tmp_path):
    folder = _patient_folder(run, patient["pid"], tmp_path / "no_mri", clinical_row=False)
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if ds.get("Modality") == "MR":
                os.remove(path)
    res = predict.predict_patient(run["config"], run["workdir"], folder, out_dir=str(tmp_path / "out"))
    assert res["patient_id"] == patient["pid"]
    assert not res["inputs"]["mri_present"] and res["inputs"]["xray_present"]
    assert not res["inputs"]["clinical_row_found"]
    assert any("clinical feature is missing" in n for n in res["notes"])
    for head in BINARY:
        assert 0.0 < res["outcome"]["heads"][head]["mean"] < 1.0
    hm = res["outcome"]["heatmap"]
    assert "mri_png" not in hm["files"] and hm["mri_attribution_sum"] == 0.0
    # masked MRI and all-missing clinical features: the models see other inputs than before
    assert res["outcome"]["heads"]["zcq_success"]["mean"] != patient["result"]["outcome"]["heads"]["zcq_success"]["mean"]
    assert not os.path.exists(tmp_path / "out" / "mri_ig.png")
    assert "grader" in res   # the X-ray is still there


def test_report_from_workdir_reproduces_the_runs_metrics(run, patient):
    html, mpath = report.report_from_workdir(run["config"], run["workdir"])
    assert os.path.exists(html)
    new = json.load(open(mpath))
    old = run["metrics"]
    assert set(new["outcomes"]) == set(old["outcomes"]) == set(BINARY + REGRESSION)
    for head in BINARY:
        for key in ("auc", "brier"):
            assert new["outcomes"][head]["model"][key] == old["outcomes"][head]["model"][key]
        assert new["outcomes"][head]["comparators"] == old["outcomes"][head]["comparators"]
    for head in REGRESSION:
        assert new["outcomes"][head]["model"]["mae"] == pytest.approx(old["outcomes"][head]["model"]["mae"])
    assert new["grader"]["qwk"] == old["grader"]["qwk"]
    assert new["completeness"] == old["completeness"]
    assert new["cohort"] == old["cohort"] and new["extra"] == old["extra"]
    assert new["ablation"] == old["ablation"] and old["ablation"]["heads"]


def test_bad_inputs_name_what_is_wrong(run, tmp_path):
    bad = tiny_config(run["root"])
    bad.outcome.model.fusion_hidden = (8,)
    with pytest.raises(ConfigError, match=r"outcome\.model"):
        predict.predict_patient(bad, run["workdir"], str(tmp_path))
    with pytest.raises(ConfigError, match="unknown task"):
        restore.load_fold_models(run["config"], run["workdir"], "segmentation")
    with pytest.raises(CohortError, match="not a finished"):
        restore.load_fold_models(run["config"], str(tmp_path), "outcome")
    with pytest.raises(CohortError, match="no lateral X-ray and no sagittal T2"):
        predict.predict_patient(run["config"], run["workdir"], str(tmp_path))
    two = tmp_path / "two"
    two.mkdir()
    man = pd.read_csv(os.path.join(run["workdir"], "manifest.csv"), dtype=str)
    for i, pid in enumerate(sorted(set(man["patient_id"]))[:2]):
        _patient_folder(run, pid, two / f"p{i}", clinical_row=False)
    with pytest.raises(CohortError, match="images of 2 patients"):
        predict.predict_patient(run["config"], run["workdir"], str(two))
    assert restore.check_run_config(run["config"], run["workdir"]) == []


def test_predict_heat_map_equals_the_cross_validation_report(run, tmp_path):
    """One IG path: the fold model that held a patient out gives, in --mode=predict, the very
    heat map the cross-validation report holds for that patient (same blurred baseline, same
    quadrature rule, same chunk loop)."""
    saved = sorted(glob.glob(os.path.join(run["workdir"], "heatmaps", "*_ig.npz")))
    assert saved, "the tiny run saved no heat maps"
    maps = []
    for path in saved:
        with np.load(path, allow_pickle=False) as z:
            maps.append({k: z[k] for k in z.files})
    # a fold whose inner split kept step 0 is the clinical regression alone (outcome.clinical_offset):
    # its MRI attribution is exactly 0; compare on a map of a fold whose network uses the MRI
    live = [m for m in maps if np.abs(m["attr"]).max() > 0]
    assert live, "every heat map of the tiny run is 0"
    cv = live[0]
    pid, fold = str(cv["patient_id"]), int(cv["fold"])
    assert run["config"].explain.baseline == "blurred"
    folder = _patient_folder(run, pid, tmp_path / "export")
    out_dir = str(tmp_path / "pred")
    pred = predict.predict_patient(run["config"], run["workdir"], folder, out_dir=out_dir)
    hm = pred["outcome"]["heatmap"]
    assert hm["baseline"] == "blurred" and hm["fold_maps"] == "mri_ig_folds.npz"
    with np.load(os.path.join(out_dir, "mri_ig_folds.npz")) as z:
        mine = z[f"fold_{fold}"]
    assert mine.shape == cv["attr"].shape and np.abs(cv["attr"]).max() > 0
    np.testing.assert_allclose(mine, cv["attr"], atol=1e-5, rtol=0)
    assert hm["fold_completeness_delta"][fold] == pytest.approx(float(cv["delta"]), abs=1e-5)


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_an_enhanced_mr_export_predicts_as_the_classic_series(run, patient, tmp_path, kind):
    """The patient's sagittal T2 converted to one multi-frame file by highdicom (Legacy
    Converted Enhanced MR, or Enhanced MR) gives the classic export's prediction."""
    from dicom_factory import write_enhanced_mr
    from lumbarjax.data import index as index_lib

    folder = str(tmp_path / "export")
    shutil.copytree(patient["folder"], folder)
    man = index_lib.index_cohort(folder)
    classic = index_lib.resolve_paths(man[man["role"] == "mri_t2_sag"].iloc[0], folder)
    write_enhanced_mr(classic, os.path.join(folder, "enhanced", "IM000001"), kind=kind)
    for p in classic:
        os.remove(p)
    man = index_lib.index_cohort(folder)
    row = man[man["role"] == "mri_t2_sag"].iloc[0]
    assert row["paths"] == "enhanced/IM000001" and f"frames 1-{len(classic)} of" in row["reason"]
    out_dir = str(tmp_path / "pred")
    predict.predict_patient(run["config"], run["workdir"], folder, out_dir=out_dir)
    with open(os.path.join(out_dir, "prediction.json")) as f:
        pred = json.load(f)
    with open(os.path.join(patient["out_dir"], "prediction.json")) as f:
        ref = json.load(f)
    assert pred["inputs"]["mri_present"]
    for head in BINARY + REGRESSION:
        assert pred["outcome"]["heads"][head]["mean"] == pytest.approx(
            ref["outcome"]["heads"][head]["mean"], rel=0, abs=1e-6), head
    np.testing.assert_allclose(pred["grader"]["prob_mean"], ref["grader"]["prob_mean"], atol=1e-6)
