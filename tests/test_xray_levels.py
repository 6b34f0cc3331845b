"""Level-by-level X-ray pieces: crops at a physical resolution, landmark targets, the landmark
network (soft-argmax, training, saved file + card) and the per-level grader."""

import numpy as np
import pytest

from configs import default
from lumbarjax import synthetic
from lumbarjax.data import xray_levels
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.models.landmarks import LandmarkNet, soft_argmax
from lumbarjax.models.level_grader import fit_level_grader
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import landmarks


def test_crop_level_is_centred_and_physical():
    img = np.zeros((300, 200), np.float32)
    img[150, 80] = 1.0
    img[150 + 20, 80] = 1.0   # 20 rows below = 20 * 0.5 mm = 10 mm
    crop, tf = xray_levels.crop_level(img, (0.5, 0.25), (150, 80), shape=(41, 41), mm_per_px=1.0)
    assert crop.shape == (41, 41)
    r, c = np.unravel_index(np.argmax(crop[:25]), crop[:25].shape)
    assert (r, c) == (20, 20)                                       # centre of the crop
    assert np.argmax(crop[25:, 20]) + 25 == 30                       # 10 mm below at 1 mm/px
    np.testing.assert_allclose(xray_levels.crop_to_source(tf, (20, 20)), (150, 80))
    np.testing.assert_allclose(tf["step"], (2.0, 4.0))               # source px per crop px
    rc = np.array([[3.0, 7.5], [40.0, 1.0]])
    np.testing.assert_allclose(xray_levels.source_to_crop(tf, xray_levels.crop_to_source(tf, rc)), rc)
    with pytest.raises(ConfigError, match="bad spacing"):
        xray_levels.crop_level(img, (0.5, -1), (150, 80))


def test_truth_landmarks_pair_the_endplates_of_each_level():
    row = {}
    for j, lv in enumerate(LEVELS):
        row[f"xray_disc_{lv}_row"], row[f"xray_disc_{lv}_col"] = 100.0 + 10 * j, 50.0
    for k, ep in enumerate(synthetic.XRAY_ENDPLATES):
        row[f"xray_ep_{ep}_ant_row"], row[f"xray_ep_{ep}_ant_col"] = float(k), 10.0
        row[f"xray_ep_{ep}_post_row"], row[f"xray_ep_{ep}_post_col"] = float(k), 60.0
    centres, corners = xray_levels.truth_landmarks(row)
    assert centres.shape == (5, 2) and corners.shape == (5, 4, 2)
    # L4L5 = L4_inf (line 7) and L5_sup (line 8): (A_u, P_u, A_l, P_l)
    np.testing.assert_allclose(corners[3], [[7, 10], [7, 60], [8, 10], [8, 60]])
    assert xray_levels.ENDPLATES == synthetic.XRAY_ENDPLATES


def test_soft_argmax_reads_the_peak_in_input_pixels():
    logits = np.full((1, 8, 10, 2), -50.0, np.float32)
    logits[0, 3, 7, 0] = 50.0
    logits[0, 0, 0, 1] = 50.0
    pts = np.asarray(soft_argmax(logits, stride=4))
    np.testing.assert_allclose(pts[0, 0], [3 * 4 + 1.5, 7 * 4 + 1.5], atol=1e-3)
    np.testing.assert_allclose(pts[0, 1], [1.5, 1.5], atol=1e-3)


def _blobs(n, rng, size=32):
    rr, cc = np.mgrid[:size, :size]
    pts = rng.uniform(6, size - 7, size=(n, 1, 2)).astype(np.float32)
    imgs = np.exp(-((rr - pts[:, :, 0, None, None]) ** 2 + (cc - pts[:, :, 1, None, None]) ** 2)[:, 0] / 8.0)
    return imgs.astype(np.float32), pts


def test_landmark_net_learns_a_point_and_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(0)
    imgs, pts = _blobs(96, rng)
    model = LandmarkNet(num_points=1, widths=(8,), stem_stride=1, out_stride=1)
    cfg = default.levels_config()
    cfg.optim.lr = 1e-2
    params = landmarks.fit(model, imgs[:80], pts[:80], config=cfg, steps=60, batch_size=16, seed=0, shift_px=2,
                           gamma=0.0, log_every=0)
    pred = landmarks.predict(model, params, imgs[80:])
    err = np.linalg.norm(pred - pts[80:], axis=-1).mean()
    centre_err = np.linalg.norm(pts[80:] - 15.5, axis=-1).mean()
    assert pred.shape == (16, 1, 2) and err < 2.0 < centre_err
    stem = str(tmp_path / "blob")
    landmarks.save(stem, params, {"model": {"num_points": 1, "widths": [8], "stem_stride": 1, "out_stride": 1},
                                  "val_error_px": float(err)})
    m2, p2, card = landmarks.load(stem)
    np.testing.assert_allclose(landmarks.predict(m2, p2, imgs[80:]), pred, atol=1e-5)
    assert card["val_error_px"] == pytest.approx(err)
    with pytest.raises(CohortError, match="no landmark model"):
        landmarks.load(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"points \(N, 1, 2\)"):
        landmarks.fit(model, imgs, pts[:, :, 0], config=cfg, steps=1, batch_size=16, shift_px=0)


def _levels(n, rng):
    drops = rng.integers(0, 4, size=(n, 5))
    g = rng.integers(0, 5, size=n)
    lg = np.maximum(g[:, None] - drops, 0)
    lg[np.arange(n), rng.integers(3, 5, size=n)] = g          # the worst level reaches g
    ref = np.array([0.25, 0.26, 0.28, 0.30, 0.27])
    dhi = ref * (1 - 0.16 * lg) * (1 + rng.normal(0, 0.01, size=lg.shape))
    return dhi, lg, lg.max(axis=1)


def test_level_grader_recovers_level_grades_from_patient_grades_only():
    rng = np.random.default_rng(1)
    dhi, lg, g = _levels(200, rng)
    grader = fit_level_grader(dhi[:150], g[:150], rule="max")
    pred_levels = grader.level_grades(dhi[150:])
    assert np.mean(pred_levels == lg[150:]) > 0.9
    assert np.mean(grader.patient_grade(dhi[150:]) == g[150:]) > 0.9
    e = grader.expected_grade(dhi[150:])
    assert e.shape == (50,) and np.corrcoef(e, g[150:])[0, 1] > 0.9
    assert np.all(np.diff(grader.cuts) > 0)
    summed = fit_level_grader(dhi[:150], g[:150], rule="sum")
    assert np.array_equal(summed.scale(dhi[150:]), summed.level_grades(dhi[150:]).sum(axis=1))
    assert summed.patient_grade(dhi[150:]).max() <= 4
    with pytest.raises(ConfigError, match="rule must be one of"):
        fit_level_grader(dhi, g, rule="mean")
    with pytest.raises(ConfigError, match="only 5 training patients"):
        fit_level_grader(dhi[:5], g[:5])


def test_buu_lateral_films_become_landmark_training_data(tmp_path):
    from PIL import Image
    from tests.test_xray_indices import LINES
    from lumbarjax.pipelines import xray_levels as levels_train
    la = tmp_path / "BUU" / "LA"
    la.mkdir(parents=True)
    for stem, lines in (("0001-F-050Y1", LINES), ("0002-M-060Y1", [(300 - a, b, 300 - c, d) for a, b, c, d in LINES])):
        (la / f"{stem}.csv").write_text("".join(f"{a},{b},{c},{d},0\n" for a, b, c, d in lines))
        Image.fromarray(np.full((420, 300), 100, np.uint8)).save(la / f"{stem}.jpg")
    films, centres, corners = levels_train.buu_training_set(str(tmp_path / "BUU"), 0.2)
    assert len(films) == 2 and films[0].pixels.shape == (420, 300) and films[0].spacing == (0.2, 0.2)
    assert centres.shape == (2, 5, 2) and corners.shape == (2, 5, 4, 2)
    # L4L5 of the left-facing film: A_u = L4_inf anterior (row 300, col 100); mirrored: col 200
    np.testing.assert_allclose(corners[0, 3, 0], [300, 100])
    np.testing.assert_allclose(corners[1, 3, 0], [300, 200])
    with pytest.raises(ConfigError, match="buu_spacing_mm must be > 0"):
        levels_train.buu_training_set(str(tmp_path / "BUU"), 0.0)


@pytest.mark.slow
def test_run_levels_end_to_end_on_a_tiny_synthetic_cohort(tmp_path):
    """Landmark cohort -> finder/refiner (a few steps) -> measured indices -> fold-honest level
    grades; checks the files and columns the outcome model reads, not the accuracy."""
    import json
    import pandas as pd
    from lumbarjax.pipelines import xray_levels as levels_train
    from configs import default
    cfg = default.get_config().levels
    cfg.update(dict(view_shape=(64, 64), crop_shape=(24, 40), crop_mm_per_px=1.2, finder_steps=3,
                    refiner_steps=3, batch_size=4, make_demo=True, landmark_patients=12))
    cfg.finder.widths = cfg.refiner.widths = (8, 8)
    graded = synthetic.make_cohort(tmp_path / "graded", n_patients=22, seed=5, mri_size=(48, 48),
                                   edge_cases=False, n_mc=100, id_prefix="GR")
    films, _, _, gt = levels_train.synthetic_training_set(str(tmp_path / "graded"))
    records = pd.DataFrame({"patient_id": gt["patient_id"], "xray_paths": [f.path for f in films],
                            "xray_source": "dicom"})
    grades = gt["grade"].to_numpy(float)
    folds = np.arange(len(records)) % 2
    oof, metrics = levels_train.run_levels(cfg, str(tmp_path / "levels"), records, folds, grades, truth=gt)
    assert metrics["n_graded"] == len(records)
    for c in ["patient_id", "fold", "label_grade", "pred_grade", "expected_grade", "scale",
              *[f"pred_grade_{lv}" for lv in LEVELS], *[f"dhi_{lv}" for lv in LEVELS],
              *[f"listhesis_mm_{lv}" for lv in LEVELS]]:
        assert c in oof.columns, c
    assert len(oof) == len(records) and oof["pred_grade"].between(0, 4).all()
    saved = json.loads((tmp_path / "levels" / "levels_metrics.json").read_text())
    assert saved["n_measured"] == len(records) and "landmark_corner_error_mm" in saved
    assert (tmp_path / "levels" / "landmarks_finder.json").exists()
    # --mode=predict's path: one film through the saved models = that patient's out-of-fold row
    new = levels_train.predict_levels(cfg, str(tmp_path / "levels"), records["xray_paths"].iloc[0])
    for c in ("dhi_L4L5", "listhesis_mm_L2L3", "disc_height_mm_L5S1"):
        # (one film vs a batch of 22 through the landmark nets: float32 kernels differ ~1e-5)
        assert new["indices"][c] == pytest.approx(oof[c].iloc[0], rel=1e-3, abs=1e-3), c
    f0 = int(folds[0])
    assert new["folds"][f0]["grade"] == int(oof["pred_grade"].iloc[0])
    assert new["folds"][f0]["scale"] == int(oof["scale"].iloc[0])
    assert len(new["folds"]) == 2 and set(new["grade_per_level"]) == set(LEVELS)
    with pytest.raises(CohortError, match="landmarks_finder.msgpack is missing: the run has no level"):
        levels_train.predict_levels(cfg, str(tmp_path / "graded"), records["xray_paths"].iloc[0])
    # beside the grader: the same run (saved landmark models reused, same card signature), its
    # columns merged into the grader's oof.csv under names that do not clash
    import types
    config = default.get_config()
    config.levels = cfg
    (tmp_path / "grader").mkdir()
    td = types.SimpleNamespace(records=records, folds=folds, labels={"grade": grades})
    grader_oof = pd.DataFrame({"patient_id": records["patient_id"], "pred_grade": 1, "label_grade": grades})
    merged, again = levels_train.levels_beside_grader(config, str(tmp_path), td, grader_oof, str(tmp_path / "graded"))
    assert again["landmark_model"]["seconds"] == metrics["landmark_model"]["seconds"]
    written = pd.read_csv(tmp_path / "grader" / "oof.csv")
    assert {"pred_grade", "level_pred_grade", "expected_grade", "dhi_L4L5", "pred_grade_L4L5"} <= set(written.columns)
    assert (written["pred_grade"] == 1).all() and len(written) == len(records)
    assert graded["n_with_xray"] == 22


def test_refine_corners_moves_corners_onto_the_endplate_edges():
    # bright bodies above row 100 and below row 120 (0.5 mm/px), dark disc between, tilted 0
    img = np.ones((220, 200), np.float32)
    img[100:120] = 0.1
    true = np.array([[[99.5, 40], [99.5, 160], [119.5, 40], [119.5, 160]]] * 5, float)   # edges at pixel borders
    noisy = true + np.array([[2.0, 1.0], [-1.5, 0.0], [-2.0, 0.0], [1.0, -1.0]])           # up to 1 mm off
    out = xray_levels.refine_corners(img, (0.5, 0.5), noisy, search_mm=3.0)
    np.testing.assert_allclose(out[..., 0], true[..., 0], atol=0.3)                        # rows now on the edges
    np.testing.assert_allclose(out[..., 1], noisy[..., 1], atol=0.02)                      # along-edge kept
    assert out.shape == noisy.shape


def test_levels_config_keys_are_checked():
    from configs import default
    from lumbarjax.pipelines import xray_levels as levels_train
    cfg = default.get_config().levels
    levels_train.check_config(cfg)                      # the defaults are exactly the keys read
    cfg.unlock()
    cfg.crop_mm = 1.0
    with pytest.raises(ConfigError, match=r"config.levels: unknown key\(s\) \['crop_mm'\]"):
        levels_train.check_config(cfg)


def test_report_summary_keeps_the_numbers():
    from lumbarjax.pipelines import xray_levels as levels_train
    m = {"qwk_patient_vs_reader": 0.85123, "landmark_corner_error_mm": 0.8081, "rule": "max", "n_graded": 3,
         "n_measured": 3, "landmark_model": {"source": "synthetic", "seconds": 1.0}, "fitted": [{}]}
    assert levels_train.report_summary(m) == {"qwk_patient_vs_reader": 0.851, "landmark_corner_error_mm": 0.808,
                                              "rule": "max", "n_graded": 3, "n_measured": 3,
                                              "landmark_model": "synthetic"}


def test_saved_landmark_models_with_this_configs_card_are_reused_not_retrained(tmp_path, monkeypatch):
    """A relaunch (or a run seeded from a finished one) finds the finder and refiner it saved and
    loads them when their card's signature matches the config; it never trains them again."""
    import jax
    from configs import default
    from lumbarjax.pipelines import xray_levels as levels_train
    cfg = default.get_config().levels
    cfg.make_demo = True
    sig = levels_train._signature(cfg, f"synthetic landmark cohort, {int(cfg.landmark_patients)} patients, seed 2", 0)
    for name, points in (("finder", 5), ("refiner", 4)):
        kw = {"num_points": points, **cfg[name].to_dict()}
        params = LandmarkNet(**kw).init(jax.random.key(0), np.zeros((1, 32, 32, 1), np.float32))["params"]
        landmarks.save(str(tmp_path / f"landmarks_{name}"), params, {"model": kw, "signature": sig})

    def no_training(*a, **k):
        raise AssertionError("the saved landmark models were trained again")
    monkeypatch.setattr(levels_train, "train_landmark_models", no_training)
    out = levels_train.landmark_models(cfg, str(tmp_path), seed=0)
    assert out["card"]["signature"] == sig and out["finder"][0].num_points == 5
