"""The MRI level by level: crops around each disc level, the per-level stenosis grader, its
localiser in the encoder file, and the per-level stage-1 scores (pipelines.mri_levels)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from lumbarjax.data.pipeline import augment_example
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.models import encoder_file, stage1
from lumbarjax.models.encoder3d import MRIEncoder
from lumbarjax.models.level_stenosis import LevelStenosisGrader, crop_rows, crop_rows_for
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import localise, mri_levels, pretrain


def test_crops_take_the_rows_around_each_centre_and_zero_outside():
    x = jnp.arange(2 * 3 * 20 * 4, dtype=jnp.float32).reshape(2, 3, 20, 4, 1)
    centres = jnp.array([[2.0, 10.0, 18.6], [9.4, -30.0, 19.0]])        # (B, L) rows
    c = np.asarray(crop_rows(x, centres, 6))
    assert c.shape == (2, 3, 3, 6, 4, 1)
    np.testing.assert_array_equal(c[0, 1], np.asarray(x[0, :, 7:13]))   # rows 10-3 .. 10+2
    np.testing.assert_array_equal(c[1, 0], np.asarray(x[1, :, 6:12]))   # 9.4 rounds to 9
    np.testing.assert_array_equal(c[0, 0, :, :1], 0)                    # row -1: outside
    np.testing.assert_array_equal(c[0, 0, :, 1:], np.asarray(x[0, :, 0:5]))
    np.testing.assert_array_equal(c[0, 2, :, :4], np.asarray(x[0, :, 16:20]))  # 18.6 -> 19: rows 16..21
    np.testing.assert_array_equal(c[0, 2, :, 4:], 0)
    np.testing.assert_array_equal(c[1, 1], 0)                           # far outside: all zeros
    # the gradient of a crop's sum w.r.t. the volume is 1 exactly on the cropped rows
    g = np.asarray(jax.grad(lambda v: crop_rows(v, centres[:1, 1:2], 6).sum())(x[:1]))
    assert g[0, :, 7:13].min() == 1 and g.sum() == 3 * 6 * 4
    assert crop_rows_for(2.5, 60.0) == 24 and crop_rows_for(8.0, 60.0) == 8 and crop_rows_for(1.0, 3.0) == 8


def test_level_grader_gives_a_grade_per_level_and_its_encoder_drops_into_the_volume_encoder():
    enc = dict(arch="lesion2d", width=4)
    model = LevelStenosisGrader(mri=enc, num_grades=3, crop_rows=8)
    batch = {"mri": jnp.ones((2, 4, 32, 16, 1)), "mri_centres": jnp.tile(jnp.array([[4., 8.], [10., 8.], [16., 8.],
                                                                                    [22., 8.], [28., 8.]]), (2, 1, 1))}
    v = model.init(jax.random.key(0), batch)
    out = model.apply(v, batch)["grade"]
    assert out.shape == (2, 5, 2)
    assert set(v["params"]) == {"mri_encoder", "ln", "head", "level_bias"}
    whole = MRIEncoder(**enc).init(jax.random.key(1), batch["mri"])["params"]
    assert jax.tree.map(np.shape, whole) == jax.tree.map(np.shape, v["params"]["mri_encoder"])
    # the level bias alone separates the levels of identical crops
    v2 = jax.tree.map(lambda a: a, v)
    v2["params"]["level_bias"] = jnp.arange(10.0).reshape(5, 2)
    o2 = np.asarray(model.apply(v2, batch)["grade"])
    np.testing.assert_allclose(o2[0, 4] - o2[0, 0], [8.0, 8.0], rtol=1e-5)


def test_shift_augmentation_moves_the_level_centres_with_the_volume():
    moved = 0
    for seed in range(6):
        ex = {"mri": np.zeros((2, 20, 10, 1), np.float32), "mri_present": np.float32(1),
              "xray": np.zeros((8, 8, 1), np.float32), "xray_present": np.float32(0),
              "mri_centres": np.array([[8.0, 5.0], [15.0, 6.0]], np.float32)}
        ex["mri"][:, 8, 5] = 1.0
        out = augment_example(ex, np.random.default_rng(seed), {"shift_px": 4})
        r, c = out["mri_centres"][0]
        moved += (r, c) != (8.0, 5.0)
        assert out["mri"][0, int(r), int(c), 0] == 1.0 and out["mri"].sum() == 2   # the voxel sits at the moved centre
        np.testing.assert_array_equal(out["mri_centres"][1] - out["mri_centres"][0], [7.0, 1.0])
    assert moved >= 4


def test_by_level_scores_take_the_worst_level_and_full_detail_adds_every_level():
    p = np.zeros((3, 5, 3))
    p[:, :, 0] = 1.0
    p[0, 3] = [0.1, 0.2, 0.7]      # patient 0: L4L5 severe-ish, expected 1.6
    p[0, 2] = [0.2, 0.6, 0.2]      # L3L4 expected 1.0
    p[1, 0] = [0.5, 0.5, 0.0]      # patient 1: L1L2 expected 0.5
    s = stage1.mri_scores(["a", "b", "c"], p, np.array([True, True, False]))
    assert list(s.columns) == ["patient_id", "mri_stenosis_expected"] + [f"mri_stenosis_prob_{k}" for k in range(3)]
    np.testing.assert_allclose(s["mri_stenosis_expected"][:2], [1.6, 0.5])
    np.testing.assert_allclose(s.loc[0, ["mri_stenosis_prob_0", "mri_stenosis_prob_1", "mri_stenosis_prob_2"]],
                               [0.1, 0.2, 0.7])
    assert s.iloc[2, 1:].isna().all()
    full = stage1.mri_scores(["a", "b", "c"], p, detail="full")
    np.testing.assert_allclose(full.loc[0, [f"mri_stenosis_expected_{lv}" for lv in LEVELS]], [0, 0, 1.0, 1.6, 0])
    with pytest.raises(CohortError, match=r"expected \(3, K\) or \(3, 5, K\)"):
        stage1.mri_scores(["a", "b", "c"], np.zeros((3, 4, 3)))


def test_true_level_grades_grade_primary_and_secondary_stenosis():
    truth = pd.DataFrame({"patient_id": ["p1", "p2"], "stenosis_level": ["L4L5", "L2L3"],
                          "stenosis_severity": [0.9, 0.3], "stenosis_level_2": ["L3L4", np.nan],
                          "stenosis_severity_2": [0.5, 0.0]})
    g = mri_levels.true_level_grades(truth).set_index("patient_id")
    # 0.85 * s cut at 1/3 and 2/3: 0.765 -> 2, 0.425 -> 1, 0.255 -> 0
    assert g.loc["p1"].tolist() == [0, 0, 1, 2, 0]
    assert g.loc["p2"].tolist() == [0, 0, 0, 0, 0]


@pytest.fixture(scope="module")
def by_level(tiny_pretrain_cohort, tiny_pretrain_loaded, tmp_path_factory):
    """The tiny pretraining cohort pretrained level by level (3 steps; centres from its truth)."""
    workdir = str(tmp_path_factory.mktemp("bylevel"))
    cfg, cohort = tiny_pretrain_loaded
    assert cfg.pretrain.levels.enabled    # the tiny config's setting
    truth = pd.read_csv(os.path.join(tiny_pretrain_cohort, "ground_truth.csv"), dtype={"patient_id": str})
    centres = localise.centres_from_truth(truth)
    params, summary = pretrain.pretrain_encoder(cfg, workdir, cohort.records, cohort.cache, centres_mm=centres)
    return dict(cfg=cfg, cohort=cohort, workdir=workdir, centres=centres, truth=truth, summary=summary,
                path=os.path.join(workdir, pretrain.ENCODER_FILE))


def test_by_level_pretraining_writes_head_localiser_and_card_into_one_file(by_level):
    cfg, path, summary = by_level["cfg"], by_level["path"], by_level["summary"]
    params, card = encoder_file.load_encoder_file(path)
    assert card["levels"]["crop_rows"] == 8 and card["levels"]["levels"] == list(LEVELS)
    assert card["levels"]["localiser"]["model"] == {"num_levels": 5, "width": 4}
    assert set(card["levels"]["localiser"]["val"]) >= {"mean_mm", "per_level", "within_10mm"}
    assert set(encoder_file.load_grading_head(path)) == {"ln", "head", "level_bias"}
    assert encoder_file.load_localiser(path) is not None
    assert summary["levels"]["localiser_val"]["mean_mm"] >= 0 and summary["levels"]["crop_rows"] == 8
    # the encoder drops into the outcome model's whole-volume encoder
    assert jax.tree.map(np.shape, params) == jax.tree.map(
        np.shape, MRIEncoder(**pretrain.encoder_kwargs(cfg)).init(jax.random.key(0), jnp.zeros((1, 4, 32, 32, 1)))["params"])
    # a changed crop retrains (the signature has the level settings)
    assert pretrain._signature(cfg)["levels"]["crop_mm"] == 60.0


def test_level_probs_place_and_grade_every_level(by_level):
    cfg, cohort = by_level["cfg"], by_level["cohort"]
    probs, centres = mri_levels.level_probs(cfg, pretrain.file_grader(cfg, by_level["path"]), cohort.cache)
    n = len(cohort.cache)
    assert probs.shape == (n, 5, 3) and centres.shape == (n, 5, 2)
    ok = np.isfinite(probs).all(axis=(1, 2))
    assert ok.sum() == int((cohort.cache["mri_file"].fillna("") != "").sum())
    np.testing.assert_allclose(probs[ok].sum(-1), 1.0, atol=1e-5)
    # the whole-volume path reads the same file the same way
    np.testing.assert_array_equal(pretrain.stenosis_probs(cfg, by_level["path"], cohort.cache), probs)
    summ = mri_levels.outcome_cohort_summary(probs, centres, cohort.cache, by_level["truth"], num_grades=3)
    assert summ["patients"] == ok.sum() and set(summ["vs_truth"]["per_level"]) == set(LEVELS)
    assert summ["localiser_error_mm"]["mean_mm"] > 0
    # the truth's centres in px, back through the cache's affine
    px = mri_levels.centres_px(cohort.cache, by_level["centres"])
    assert px.shape == (n, 5, 2) and np.isfinite(px[ok]).all()
    assert (np.diff(px[ok][:, :, 0], axis=1) > 0).all()         # L1L2 above L5S1: rows increase


def test_by_level_needs_centres_and_level_labels(by_level, tmp_path):
    cfg, cohort = by_level["cfg"], by_level["cohort"]
    with pytest.raises(ConfigError, match="no disc-level centres"):
        pretrain.pretrain_encoder(cfg, str(tmp_path), cohort.records, cohort.cache)
    recs = cohort.records.drop(columns=["stenosis_grade_L3L4"])
    with pytest.raises(CohortError, match=r"no column\(s\) \['stenosis_grade_L3L4'\]"):
        pretrain.pretrain_encoder(cfg, str(tmp_path), recs, cohort.cache, centres_mm=by_level["centres"])
    bad = cohort.records.copy()
    bad.loc[0, "stenosis_grade_L2L3"] = 5
    with pytest.raises(CohortError, match="stenosis_grade_L2L3 must be an integer grade 0..2"):
        pretrain.pretrain_encoder(cfg, str(tmp_path), bad, cohort.cache, centres_mm=by_level["centres"])


def test_localiser_summary_counts_only_known_levels():
    """A level without a known centre (NaN error) is left out of every figure, within 10 mm too."""
    err = np.array([[2.0, 12.0, np.nan, 4.0, 6.0], [np.nan, 3.0, 1.0, 20.0, 5.0]])
    s = localise.summarise(err)
    assert s["within_10mm"] == round(6 / 8, 3) and s["mean_mm"] == round(float(np.nanmean(err)), 2)
    assert "L1L2" in s["per_level"] and s["per_level"]["L3L4"]["mean_mm"] == 1.0


def test_whole_volume_pretraining_carries_the_localiser_and_places_the_levels(by_level, tmp_path):
    """pretrain.levels.localise beside a whole-volume grader: the file holds the localiser, its
    card says the grader is not by level, and the outcome path gets (N, K) grades + centres."""
    import ml_collections
    from lumbarjax.jobs import mri_stages
    cfg = ml_collections.ConfigDict(by_level["cfg"].to_dict())
    cfg.pretrain.levels.enabled, cfg.pretrain.levels.localise = False, True
    cohort = by_level["cohort"]
    pretrain.pretrain_encoder(cfg, str(tmp_path), cohort.records, cohort.cache, centres_mm=by_level["centres"])
    path = os.path.join(str(tmp_path), pretrain.ENCODER_FILE)
    _, card = encoder_file.load_encoder_file(path)
    assert card["levels"]["graded_by_level"] is False and "crop_rows" not in card["levels"]
    assert card["levels"]["localiser"]["val"]["mean_mm"] > 0
    assert set(encoder_file.load_grading_head(path)) == {"ln", "head"}
    grader = pretrain.file_grader(cfg, path)
    assert not grader.by_level and grader.localiser is not None
    probs, centres = pretrain.grader_probs(cfg, grader, cohort.cache)
    n = len(cohort.cache)
    assert probs.shape == (n, 3) and centres.shape == (n, 5, 2)
    ok = pretrain.with_mri(cohort.cache)
    assert np.isfinite(centres[ok]).all() and np.isnan(centres[~ok]).all()
    summ = mri_levels.outcome_cohort_summary(None, centres, cohort.cache, by_level["truth"], num_grades=3)
    assert summ["graded_by_level"] is False and summ["patients"] == ok.sum()
    assert "pred_grade_counts" not in summ and "vs_truth" not in summ
    assert set(summ["localiser_error_mm"]["per_level"]) == set(LEVELS)
    # the localiser is not trained without centres, and the grader file is then a plain one
    pretrain.pretrain_encoder(cfg, str(tmp_path / "nocentres"), cohort.records, cohort.cache)
    assert "levels" not in encoder_file.load_encoder_file(str(tmp_path / "nocentres" / pretrain.ENCODER_FILE))[1]
    # the level table of the outcome stage has the centres and no per-level grades
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    cfg.data.cohort_dir = str(tmp_path / "nowhere")
    s = mri_stages.stage_mri_levels(cfg, workdir, cohort, card, probs, centres)
    assert s["pretraining"]["localiser_val"]["mean_mm"] == card["levels"]["localiser"]["val"]["mean_mm"]
    tab = pd.read_csv(os.path.join(workdir, "mri_levels", "levels.csv"))
    assert [c for c in tab.columns if c.startswith("expected_grade")] == []
    assert {f"row_px_{lv}" for lv in LEVELS} <= set(tab.columns)


def test_heat_maps_are_summarised_at_the_placed_levels():
    """attribution_by_level reads where each map points from placed centres alone: a map whose
    peak sits on the L4L5 centre points at L4L5; one with no positive value points nowhere."""
    from lumbarjax.eval.localisation import attribution_by_level, centres_px_to_mm
    affine = np.array([[0, 0, 2.0, 10.0], [0, 2.0, 0, -5.0], [4.0, 0, 0, 1.0], [0, 0, 0, 1]])  # (d,h,w) -> mm
    shape = (3, 60, 20)
    px = np.array([[8.0, 10.0], [18.0, 10.0], [28.0, 10.0], [38.0, 10.0], [np.nan, np.nan]])
    cen = centres_px_to_mm(affine, shape, px)
    assert set(cen) == {"L1L2", "L2L3", "L3L4", "L4L5"}                      # L5S1 not placed
    np.testing.assert_allclose(cen["L4L5"], affine[:3] @ np.array([1.0, 38.0, 10.0, 1.0]))
    a = np.zeros(shape)
    a[1, 38, 10] = 5.0
    a[1, 8, 10] = 1.0
    out = attribution_by_level([a, -np.ones(shape), a], [affine] * 3, [cen, cen, {"L1L2": cen["L1L2"]}],
                               patient_ids=["p", "q", "r"])
    assert out["n"] == 2 and out["n_excluded"] == 1 and out["exclusions"][0]["patient_id"] == "r"
    assert out["points_at"]["L4L5"] == 0.5 and out["points_at"]["none"] == 0.5
    assert out["mean_mass_fraction"]["L4L5"] == pytest.approx(5 / 6)
    assert out["mean_mass_fraction"]["L1L2"] == pytest.approx(1 / 6)
