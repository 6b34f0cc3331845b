"""Disc-level localiser: soft-argmax, targets through the cache affine, training beats the
mean-position baseline on a toy spine, per-level crops."""

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from configs import default
from lumbarjax.models.localiser import soft_argmax
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import localise


def test_soft_argmax_finds_the_peak():
    logits = np.full((1, 6, 5, 2), -50.0, np.float32)
    logits[0, 4, 1, 0] = 50.0
    logits[0, 0, 3, 1] = 50.0
    np.testing.assert_allclose(np.asarray(soft_argmax(jnp.asarray(logits))), [[[4, 1], [0, 3]]], atol=1e-4)


def _toy(n, rng, size=32):
    """Five bright 3x3 blobs stacked vertically (a 'spine') at a random offset per image."""
    imgs = rng.normal(0, 0.05, (n, size, size, 3)).astype(np.float32)
    tg = np.zeros((n, 5, 2), np.float32)
    for i in range(n):
        r0, c0 = rng.integers(3, 8), rng.integers(6, 24)
        for j in range(5):
            r, c = r0 + 5 * j, c0 + (j % 2)
            imgs[i, r - 1:r + 2, c - 1:c + 2] += 1.0
            tg[i, j] = (r, c)
    return imgs, tg


@pytest.mark.slow  # ~25 s CPU (compiles dominate): python -m pytest -m slow tests/test_localiser.py
def test_localiser_learns_a_toy_spine_better_than_the_mean_position():
    rng = np.random.default_rng(0)
    imgs, tg = _toy(48, rng)
    mask = np.ones(tg.shape[:2], np.float32)
    lc = default.get_config().pretrain.levels.localiser
    lc.optim.lr = 3e-3
    _, rep = localise.train_localiser(imgs, tg, mask, (2.0, 2.0), config=lc, steps=100, batch_size=8,
                                      width=4, seed=0)
    assert rep["n_val"] == 10 and rep["n_train"] == 38
    assert rep["val"]["mean_mm"] < 0.5 * rep["baseline_mean_position"]["mean_mm"]
    assert set(rep["val"]["per_level"]) == set(LEVELS)


def test_targets_go_through_the_cache_affine(tmp_path):
    vol = np.zeros((4, 32, 16), np.float32)
    affine = np.array([[-4.0, 0, 0, 10], [0, 0, 2.0, -30], [0, -2.5, 0, 60], [0, 0, 0, 1]])
    np.save(tmp_path / "a.npy", vol)
    cache = pd.DataFrame({"patient_id": ["7", "8"], "mri_file": [str(tmp_path / "a.npy"), ""],
                          "mri_affine": [json.dumps(affine.tolist()), ""]})
    mm = np.array([affine @ [1.5, 10 + j, 5, 1] for j in range(5)])[:, :3]
    mm[2] = np.nan
    imgs, tg, mask, spacing, ids = localise.localiser_data(cache, {"7": mm, "8": mm})
    assert ids == ["7"] and imgs.shape == (1, 32, 16, 3)
    np.testing.assert_allclose(tg[0, [0, 1, 3, 4]], [[10, 5], [11, 5], [13, 5], [14, 5]], atol=1e-9)
    assert mask[0].tolist() == [1, 1, 0, 1, 1] and np.allclose(spacing, (2.5, 2.0))
    err = localise.errors_mm(tg + np.array([3.0, 4.0]) / np.array([2.5, 2.0]), tg, mask, spacing)
    np.testing.assert_allclose(err[0, [0, 1, 3, 4]], 5.0)
    assert np.isnan(err[0, 2])


def test_centres_from_each_source_and_level_crops():
    truth = pd.DataFrame([{"patient_id": "P1", **{f"disc_{lv}_{a}_mm": j * 10 + k for j, lv in enumerate(LEVELS)
                                                  for k, a in enumerate("xyz")}}])
    assert localise.centres_from_truth(truth)["P1"][3].tolist() == [30, 31, 32]
    coords = pd.DataFrame({"study_id": ["1", "1"], "condition": ["spinal_canal_stenosis"] * 2,
                           "level": ["L4L5", "L1L2"], "x_mm": [1.0, 2.0], "y_mm": [3.0, 4.0], "z_mm": [5.0, 6.0]})
    c = localise.centres_from_rsna(coords)["1"]
    assert c[3].tolist() == [1, 3, 5] and c[0].tolist() == [2, 4, 6] and np.isnan(c[1]).all()
    sp = pd.DataFrame({"patient_id": ["2"], "scan": ["t2"], "structure": ["disc"], "level": ["L5S1"],
                       "x_mm": [1.0], "y_mm": [2.0], "z_mm": [3.0]})
    assert localise.centres_from_spider(sp)["2"][4].tolist() == [1, 2, 3]
    vol = np.arange(2 * 10 * 8, dtype=np.float32).reshape(2, 10, 8)
    crops = localise.level_crops(vol, np.array([[5, 4], [0, 0], [np.nan, 1]]), (4, 4))
    assert crops.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(crops[0], vol[:, 3:7, 2:6])
    assert (crops[1][:, :2, :] == 0).all() and (crops[1][:, 2:, 2:] == vol[:, :2, :2]).all()
    assert (crops[2] == 0).all()
