"""Pretraining the MRI encoder on a labelled stenosis cohort and transferring it (pipelines.pretrain)."""

import glob
import json
import os

import jax
import ml_collections
import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import tiny_config
from lumbarjax.jobs import mri_stages
from lumbarjax.synthetic import STENOSIS_GRADE_CUTS, STENOSIS_NARROWING, stenosis_grades
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import pretrain


def test_stenosis_grades_follow_the_cuts_with_reader_noise():
    s = np.linspace(0.3, 1.0, 400)
    truth = pd.DataFrame({"patient_id": [f"PT{i:04d}" for i in range(400)], "stenosis_severity": s,
                          "has_mri": [i != 7 for i in range(400)]})
    g = stenosis_grades(truth, seed=0)
    exact = np.digitize(STENOSIS_NARROWING * s, STENOSIS_GRADE_CUTS).astype(float)
    assert np.isnan(g["stenosis_grade"][7])
    keep = np.arange(400) != 7
    diff = np.abs(g["stenosis_grade"].to_numpy()[keep] - exact[keep])
    assert diff.max() == 1 and 0.85 < (diff == 0).mean() < 0.95   # ~10 % reader error
    assert set(np.unique(g["stenosis_grade"].dropna())) == {0.0, 1.0, 2.0}
    pd.testing.assert_frame_equal(g, stenosis_grades(truth, seed=0))
    # per level: the reader's grade at the primary level, the secondary's noise-free grade at its
    # level (0.85 * 0.5 s for s = 0.3..1.0 stays below 2/3: grade 0 or 1) capped at the primary's,
    # 0 elsewhere
    lv = np.array(["L4L5", "L3L4"] * 200)
    by = stenosis_grades(truth.assign(stenosis_level=lv, stenosis_level_2=np.where(lv == "L4L5", "L5S1", ""),
                                      stenosis_severity_2=0.5 * s), seed=0)
    np.testing.assert_array_equal(by["stenosis_grade"], g["stenosis_grade"])
    at = lv == "L4L5"
    np.testing.assert_array_equal(by["stenosis_grade_L4L5"][at & keep], g["stenosis_grade"][at & keep])
    exact2 = np.digitize(STENOSIS_NARROWING * 0.5 * s, STENOSIS_GRADE_CUTS)[at & keep]
    np.testing.assert_array_equal(by["stenosis_grade_L5S1"][at & keep],
                                  np.minimum(exact2, g["stenosis_grade"][at & keep]))
    assert set(exact2) == {0, 1} and (by["stenosis_grade_L1L2"][keep] == 0).all()
    assert (by[[f"stenosis_grade_{v}" for v in LEVELS]].max(axis=1)[keep] == g["stenosis_grade"][keep]).all()
    assert np.isnan(by.loc[7, [f"stenosis_grade_{v}" for v in LEVELS]].to_numpy(float)).all()


def test_pretraining_cohort_has_its_own_ids_and_only_a_labels_table(tiny_pretrain_cohort):
    labels = pd.read_csv(os.path.join(tiny_pretrain_cohort, "stenosis_labels.csv"))
    assert list(labels.columns) == ["patient_id", "stenosis_grade"] + [f"stenosis_grade_{lv}" for lv in LEVELS]
    assert len(labels) == 12
    # the worst level is the patient's grade (the secondary stenosis is milder; the reader may
    # move the primary below it only rarely, and not in this cohort)
    np.testing.assert_array_equal(labels[[f"stenosis_grade_{lv}" for lv in LEVELS]].max(axis=1),
                                  labels["stenosis_grade"])
    assert labels["patient_id"].str.match(r"^PT\d{4}$").all()
    assert not os.path.exists(os.path.join(tiny_pretrain_cohort, "clinical.csv"))
    ids = set()
    for f in glob.glob(os.path.join(tiny_pretrain_cohort, "export", "*", "*", "*", "*", "*")):
        try:
            ids.add(str(pydicom.dcmread(f, stop_before_pixels=True).PatientID))
        except Exception:  # thumbnails, empty file
            continue
    assert ids == set(labels["patient_id"])


@pytest.fixture(scope="module")
def pre(tiny_pretrain_loaded):
    """The tiny pretraining cohort, one grade per volume (by level: test_mri_levels.py)."""
    cfg, cohort = tiny_pretrain_loaded
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.pretrain.levels.enabled = False
    return cfg, cohort


def test_pretrain_saves_a_drop_in_encoder_and_reuses_it(pre, tmp_path):
    cfg, cohort = pre
    params, summary = pretrain.pretrain_encoder(cfg, str(tmp_path), cohort.records, cohort.cache)
    assert summary["patients_train"] + summary["patients_val"] == 12 and summary["patients_not_used"] == 0
    assert sum(summary["grade_counts"]) == 12 and -1.0 <= summary["val_qwk"] <= 1.0
    assert os.path.exists(tmp_path / "mri_encoder.msgpack")
    n_lines = len(open(tmp_path / "metrics.jsonl").read().splitlines())

    # the outcome model of the same config accepts it as its mri_encoder
    from lumbarjax.models.fusion import build_outcome_model
    model = build_outcome_model(cfg.outcome.model)
    d, h, w = cfg.mri.shape
    batch = {"mri": np.zeros((2, d, h, w, 1), np.float32), "mri_present": np.ones(2, np.float32),
             "clinical": np.zeros((2, 3), np.float32)}
    outcome_params = model.init(jax.random.PRNGKey(0), batch)["params"]
    swapped = pretrain.with_encoder(params)(outcome_params)
    for a, b in zip(jax.tree.leaves(swapped["mri_encoder"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # the file also holds the grading head: it grades the stenosis of any cached MRI
    path = str(tmp_path / "mri_encoder.msgpack")
    from lumbarjax.models import encoder_file
    assert set(encoder_file.load_grading_head(path)) == {"ln", "head"}
    assert encoder_file.load_encoder_file(path)[1]["grading_head"]["num_grades"] == cfg.pretrain.num_grades
    probs = pretrain.stenosis_probs(cfg, path, cohort.cache)
    assert probs.shape == (12, cfg.pretrain.num_grades)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(probs[:, 0]) > 0                      # depends on the image
    no_head = str(tmp_path / "encoder_only.msgpack")
    encoder_file.save_encoder_file(no_head, params, encoder_file.load_encoder_file(path)[1])
    assert encoder_file.load_grading_head(no_head) is None
    assert pretrain.stenosis_probs(cfg, no_head, cohort.cache) is None

    # a second call with the same settings loads the saved encoder (no training)
    again, summary2 = pretrain.pretrain_encoder(cfg, str(tmp_path), cohort.records, cohort.cache)
    assert summary2 == json.loads(json.dumps(summary))
    assert len(open(tmp_path / "metrics.jsonl").read().splitlines()) == n_lines

    # a different encoder width does not fit
    cfg2 = tiny_config(cfg.data.cohort_dir)
    cfg2.outcome.model.mri.width = 8
    with pytest.raises(ConfigError, match="does not match"):
        pretrain.with_encoder(params)(build_outcome_model(cfg2.outcome.model).init(
            jax.random.PRNGKey(0), batch)["params"])


def test_pretrain_rejects_bad_grades_naming_the_patient(pre, tmp_path):
    cfg, cohort = pre
    recs = cohort.records.copy()
    recs.loc[3, "stenosis_grade"] = 5
    with pytest.raises(CohortError, match=recs.loc[3, "patient_id"]):
        pretrain.pretrain_encoder(cfg, str(tmp_path), recs, cohort.cache)
    other = ml_collections.ConfigDict(cfg.to_dict())   # the module fixture's config stays as it is
    other.pretrain.label_column = "grade_x"
    with pytest.raises(CohortError, match=r"no column\(s\) \['grade_x'\]"):
        pretrain.pretrain_encoder(other, str(tmp_path), cohort.records, cohort.cache)


def test_stage_pretrain_refuses_shared_patients(tiny_pretrain_cohort, tmp_path):
    cfg = tiny_config(tiny_pretrain_cohort)
    cfg.pretrain.enabled, cfg.pretrain.cohort_dir = True, tiny_pretrain_cohort
    with pytest.raises(CohortError, match="share 1 patient id"):
        mri_stages.stage_pretrain(cfg, str(tmp_path), outcome_ids=["PT0003", "LJ0001"])
    cfg.pretrain.cohort_dir, cfg.pretrain.make_demo = str(tmp_path / "none"), False
    with pytest.raises(ConfigError, match="no labels table"):
        mri_stages.stage_pretrain(cfg, str(tmp_path), outcome_ids=[])


def test_heat_maps_of_the_mri_score_are_complete_and_scored_by_the_pointing_game(pre, tmp_path):
    """IG of the whole-volume grader's expected grade (the stage-1 MRI score): one map per
    patient up to explain.max_patients, completeness within its reported error, and the pointing
    game against the cohort's ground truth."""
    cfg, cohort = pre
    pretrain.pretrain_encoder(cfg, str(tmp_path), cohort.records, cohort.cache)
    hm = mri_stages.stage_mri_heatmaps(cfg, str(tmp_path), cohort,
                                     pretrain.file_grader(cfg, os.path.join(str(tmp_path), pretrain.ENCODER_FILE)))
    assert hm["n"] == cfg.explain.max_patients and "stage-1 MRI score" in hm["definition"]
    assert 0.0 <= hm["hit_rate"]["point"] <= 1.0 and set(hm["by_level"]) == set(LEVELS)
    files = sorted(glob.glob(os.path.join(str(tmp_path), "mri_score_heatmaps", "*_mri_score_ig.npz")))
    assert len(files) == hm["n"]
    with np.load(files[0]) as z:
        assert z["attr"].shape == tuple(cfg.mri.shape)
        np.testing.assert_allclose(abs(z["attr"].sum() - (z["value"] - z["base"])), abs(z["delta"]), atol=1e-5)
    with open(os.path.join(str(tmp_path), "mri_score_heatmaps", "summary.json")) as f:
        assert json.load(f)["n"] == hm["n"]
