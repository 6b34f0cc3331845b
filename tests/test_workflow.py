"""End to end: a tiny synthetic cohort through index -> cohort -> CV -> heat maps -> report,
and the launcher's command-line overrides."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd

from lumbarjax.schema import LEVELS

from conftest import decoded_data_uris, phi_strings


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_whole_job_writes_report_and_out_of_fold_predictions(tiny_run):
    workdir, results = tiny_run["workdir"], tiny_run["results"]
    for f in ("manifest.csv", "cohort_summary.json", "exclusions.csv", "report.html", "metrics.json",
              "grader/oof.csv", "outcome/oof.csv", "outcome_clinical_only/oof.csv"):
        assert os.path.exists(os.path.join(workdir, f)), f
    summary = json.load(open(os.path.join(workdir, "cohort_summary.json")))
    excl = pd.read_csv(os.path.join(workdir, "exclusions.csv"))
    assert summary["n_excluded"] == len(excl) > 0          # edge cases: no images / no clinical row
    assert set(excl["reason"]) >= {"no images", "no clinical row"}
    oof = pd.read_csv(os.path.join(workdir, "outcome/oof.csv"), dtype={"patient_id": str})
    td = results.task_data["outcome"]
    assert sorted(oof["patient_id"]) == sorted(td.records["patient_id"])   # each patient once
    assert set(oof["fold"]) == {0, 1}
    assert oof["pred_zcq_success"].between(0, 1).all()
    assert oof["pred_back_pain_post"].notna().all()
    g = pd.read_csv(os.path.join(workdir, "grader/oof.csv"))
    assert set(g["pred_grade"]).issubset(range(5))
    probs = g[[f"prob_grade_{k}" for k in range(5)]].sum(axis=1)
    assert ((probs - 1).abs() < 1e-4).all()
    assert tiny_run["metrics"]["completeness"] is not None
    assert len(results.heatmaps["outcome"].items) == 2
    # the grader's heat maps: IG of the expected grade over the film, summarised level by level
    xray = results.heatmaps["grader"].items
    assert len(xray) == 4 and all(it["attr"].shape == tuple(tiny_run["config"].xray.shape) for it in xray)
    assert all(os.path.exists(os.path.join(tiny_run["workdir"], "grader", "heatmaps", f"{it['patient_id']}_xray_ig.npz"))
               for it in xray)
    xs = tiny_run["metrics"]["extra"]["xray_heatmaps"]
    assert xs["n"] + xs["n_excluded"] == 4 and set(xs["by_level"]) == set(LEVELS)
    assert 0 <= xs["completeness_abs_median"] <= xs["completeness_abs_max"] < 1.0


def test_outcome_model_starts_from_the_pretrained_frozen_encoder(tiny_run):
    """The MRI encoder pretrained on the (PT…) stenosis cohort is the outcome fold models'
    encoder, unchanged by the outcome training (optim.frozen); the rest of the model trained."""
    from lumbarjax.jobs.restore import load_fold_models
    from lumbarjax.pipelines.pretrain import load_encoder
    workdir = tiny_run["workdir"]
    encoder, summary = load_encoder(os.path.join(workdir, "pretrain"))
    assert summary["patients_train"] + summary["patients_val"] == 12
    assert tiny_run["metrics"]["extra"]["pretrained_mri_encoder"]["patients_train"] == summary["patients_train"]
    # graded level by level (the tiny config's setting): the localiser's error on this cohort against
    # its ground truth, per-level QWK, and the level heat maps' pointing game are reported
    lv = tiny_run["metrics"]["extra"]["mri_levels"]
    assert lv["localiser_error_mm"]["mean_mm"] > 0 and set(lv["vs_truth"]["per_level"]) == {
        "L1L2", "L2L3", "L3L4", "L4L5", "L5S1"}
    hm = tiny_run["metrics"]["extra"]["mri_score_heatmaps"]   # IG of the stage-1 MRI score
    assert hm["n"] == tiny_run["config"].explain.max_patients and "hit_rate" in hm
    assert len(glob.glob(os.path.join(workdir, "mri_score_heatmaps", "*_mri_score_ig.npz"))) == hm["n"]
    # summarised at the levels the localiser placed (no truth needed), and that pointing game vs the truth
    placed = hm["at_placed_levels"]
    assert placed["n"] + placed["n_excluded"] == hm["n"]
    assert abs(sum(placed["points_at"].values()) - 1.0) < 1e-9 and "hit_rate" in placed["vs_truth"]
    assert lv["pretraining"]["crop_rows"] == 8
    table = pd.read_csv(os.path.join(workdir, "mri_levels", "levels.csv"), dtype={"patient_id": str})
    assert len(table) == len(tiny_run["results"].task_data["outcome"].cache) and "expected_grade_L4L5" in table
    with open(os.path.join(workdir, "report.html")) as f:
        html = f.read()
    assert "The MRI level by level" in html and "Does the MRI score" in html
    assert "At the levels the localiser placed" in html
    for fm in load_fold_models(tiny_run["config"], workdir, "outcome"):
        params = jax.device_get(fm.state.params)
        for a, b in zip(jax.tree.leaves(params["mri_encoder"]), jax.tree.leaves(encoder)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_outer_test_patients_never_train_or_select(tiny_run):
    workdir = tiny_run["workdir"]
    for task in ("grader", "outcome"):
        for fold_dir in glob.glob(os.path.join(workdir, task, "fold_*")):
            split = json.load(open(os.path.join(fold_dir, "split.json")))
            test = set(split["test"])
            assert test and not test & set(split["inner_train"])
            assert not test & set(split["inner_val"])
            assert not set(split["inner_train"]) & set(split["inner_val"])


def test_nothing_written_contains_dicom_phi(tiny_cohort, tiny_run):
    workdir = tiny_run["workdir"]
    phi = phi_strings(os.path.join(tiny_cohort, "export"))
    assert phi, "the demo cohort should carry fake PHI in its headers"
    checked = 0
    for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
        if not os.path.isfile(path) or path.endswith(".npy"):
            continue
        text = decoded_data_uris(open(path, "rb").read()).decode("latin-1")
        checked += 1
        leaked = [p for p in phi if p in text]
        assert not leaked, f"{path} contains PHI {leaked[:3]}"
    assert checked > 20


def test_launcher_overrides_and_index_mode(tiny_cohort, tmp_path):
    out = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={tmp_path}",
         "--mode=index", f"--config.data.cohort_dir={tiny_cohort}", "--config.seed=7"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    manifest = pd.read_csv(tmp_path / "manifest.csv", dtype=str)
    assert set(manifest["role"]) == {"xray", "mri_t2_sag"}
    bad = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={tmp_path}/x",
         "--mode=index", f"--config.data.cohort_dir={tmp_path}/nowhere", "--config.data.make_demo=False"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "holds no clinical.csv" in bad.stderr
    assert "Traceback" not in bad.stderr
