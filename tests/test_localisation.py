import json

import numpy as np
import pandas as pd
import pytest

from lumbarjax.errors import LumbarjaxError
from lumbarjax.eval.localisation import (LEVELS, level_label, level_regions, localisation_summary,
                                         pointing_game, positive_mass_fraction)

SHAPE = (8, 64, 40)
# sagittal grid: d -> x (4 mm, left-right), h -> -z (2 mm, superior -> inferior),
# w -> +y (2 mm, anterior -> posterior), LPS
AFFINE = np.array([[4.0, 0, 0, -16], [0, 0, 2.0, -40], [0, -2.0, 0, 100], [0, 0, 0, 1]])
DISC_VOX = {"L1L2": (3.5, 10, 15), "L2L3": (3.5, 21, 16), "L3L4": (3.5, 32, 17),
            "L4L5": (3.5, 43, 16), "L5S1": (3.5, 54, 14)}


def _to_mm(v):
    return tuple((AFFINE @ np.array([*v, 1.0]))[:3])


DISCS_MM = {k: _to_mm(v) for k, v in DISC_VOX.items()}


def _blob(centre_vox, sigma=(1.0, 3.0, 3.0), amp=1.0):
    g = np.indices(SHAPE).astype(float)
    r2 = sum(((g[i] - centre_vox[i]) / sigma[i]) ** 2 for i in range(3))
    return amp * np.exp(-0.5 * r2)


def test_level_regions_geometry():
    reg = level_regions(AFFINE, SHAPE, DISCS_MM)
    assert reg.shape == SHAPE and reg.dtype == np.int32
    for k, (d, h, w) in DISC_VOX.items():
        assert reg[int(d), h, int(w)] == level_label(k)
    assert level_label("L4/L5") == 4 and level_label("l5-s1") == 5
    # above L1L2 by more than half the L1L2-L2L3 gap, and below L5S1 likewise: no level
    assert reg[3, 0, 15] == 0
    assert reg[3, 63, 14] == 0
    # halfway between L2L3 (h=21) and L3L4 (h=32): boundary near h=26.5
    assert reg[3, 26, 16] == 2 and reg[3, 27, 16] == 3
    # slabs span the body: far anterior/posterior at the L4L5 height is still L4L5
    assert reg[0, 43, 0] == 4 and reg[7, 43, 39] == 4
    # a radius restricts the region around the spine axis
    narrow = level_regions(AFFINE, SHAPE, DISCS_MM, radius_mm=10.0)
    assert narrow[3, 43, 16] == 4 and narrow[3, 43, 39] == 0
    # missing coordinates for a level are ignored
    partial = dict(DISCS_MM, L1L2=(np.nan, np.nan, np.nan))
    assert not np.any(level_regions(AFFINE, SHAPE, partial) == 1)
    with pytest.raises(LumbarjaxError, match="at least two disc centres"):
        level_regions(AFFINE, SHAPE, {"L4L5": DISCS_MM["L4L5"]})
    with pytest.raises(LumbarjaxError, match="unknown spinal level"):
        level_regions(AFFINE, SHAPE, {"L9L10": (0, 0, 0), "L4L5": DISCS_MM["L4L5"]})


def test_pointing_game_and_mass_fraction_at_known_disc():
    reg = level_regions(AFFINE, SHAPE, DISCS_MM)
    d, h, w = DISC_VOX["L4L5"]
    # canal behind the L4L5 disc (+10 mm posterior = +5 voxels in w); a stronger *negative*
    # blob at L2L3 must be ignored (positive part only)
    attr = _blob((d, h, w + 5)) - 3.0 * _blob(DISC_VOX["L2L3"])
    assert pointing_game(attr, reg, level_label("L4L5"))
    assert pointing_game(attr, reg, "L4L5")
    assert pointing_game(attr[..., None], reg, ["L3L4", "L4L5"])
    assert not pointing_game(attr, reg, "L2L3")
    frac = positive_mass_fraction(attr, reg, "L4L5")
    assert 0.9 < frac <= 1.0
    assert positive_mass_fraction(attr, reg, 2) < 0.01
    # no positive attribution: a miss, and the fraction is undefined
    assert not pointing_game(-np.abs(attr), reg, "L4L5")
    assert np.isnan(positive_mass_fraction(-np.abs(attr), reg, "L4L5"))
    with pytest.raises(LumbarjaxError, match="does not match the region volume"):
        pointing_game(attr[:, :10], reg, "L4L5")


def test_smoothing_favours_mass_over_a_single_spike():
    reg = level_regions(AFFINE, SHAPE, DISCS_MM)
    attr = _blob(DISC_VOX["L4L5"], amp=1.0)
    d, h, w = DISC_VOX["L1L2"]
    attr[int(d), h, int(w)] = 5.0  # one noisy voxel
    assert not pointing_game(attr, reg, "L4L5")
    assert pointing_game(attr, reg, "L4L5", smooth_sigma=2.0)


def _gt_row(pid, level):
    row = {"patient_id": pid, "stenosis_level": level}
    for k, c in DISCS_MM.items():
        for ax, v in zip("xyz", c):
            row[f"disc_{k}_{ax}_mm"] = v
    return row


def test_localisation_summary():
    gt = pd.DataFrame([_gt_row("P1", "L4L5"), _gt_row("P2", "L3L4"), _gt_row("P3", "L4L5"),
                       _gt_row("P4", "L2L3"), _gt_row("P5", np.nan)])
    attrs = [_blob(DISC_VOX["L4L5"]), _blob(DISC_VOX["L3L4"]), _blob(DISC_VOX["L4L5"]),
             _blob(DISC_VOX["L5S1"]),  # wrong level
             _blob(DISC_VOX["L4L5"])]
    out = localisation_summary(attrs, [AFFINE] * 5, gt, n_boot=200, seed=0)
    json.dumps(out, allow_nan=False)
    assert out["n"] == 4 and out["n_excluded"] == 1
    assert out["exclusions"][0] == {"patient_id": "P5",
                                    "reason": "no stenosis level in ground truth"}
    assert out["hit_rate"]["point"] == pytest.approx(0.75)
    assert out["hit_rate"]["lo"] <= 0.75 <= out["hit_rate"]["hi"]
    assert [p["hit"] for p in out["per_patient"]] == [True, True, True, False]
    assert out["per_patient"][3]["argmax_level"] == "L5S1"
    assert 0.6 < out["mean_fraction"]["point"] < 0.8
    reg = level_regions(AFFINE, SHAPE, DISCS_MM)
    expected = np.mean([np.mean(reg == level_label(lv))
                        for lv in ["L4L5", "L3L4", "L4L5", "L2L3"]])
    assert out["chance_hit_rate"] == pytest.approx(expected)
    assert 0.1 < out["chance_hit_rate"] < 0.25
    assert LEVELS[3] == "L4L5"
    # level by level: each map's positive mass over the five regions, and hits per true level
    for p in out["per_patient"]:
        masses = list(p["mass_by_level"].values())
        assert sum(masses) <= 1.0 + 1e-9 and max(masses) == p["mass_by_level"][p["argmax_level"]]
    bl = out["by_level"]
    assert bl["L4L5"]["n_true"] == 2 and bl["L4L5"]["hit_rate_true"] == 1.0
    assert bl["L2L3"]["n_true"] == 1 and bl["L2L3"]["hit_rate_true"] == 0.0
    assert bl["L1L2"]["n_true"] == 0 and bl["L1L2"]["hit_rate_true"] is None
    assert bl["L4L5"]["mean_mass_fraction"] > bl["L1L2"]["mean_mass_fraction"]
    with pytest.raises(LumbarjaxError, match="must be aligned"):
        localisation_summary(attrs[:2], [AFFINE] * 5, gt)


def test_film_level_summary_points_at_the_worst_degenerated_level():
    """Lateral films as one-slice volumes: a blob of attribution at the L4L5 disc of a film whose
    worst level is L4L5 is a hit (most of the mass there), at L1L2 a miss; a film with no
    degenerated level is excluded. Disc centres in source pixels go through the preprocessing's
    transform (here: half size, 2 mm per film pixel)."""
    from lumbarjax.eval.localisation import film_level_summary
    H, W = 60, 40
    tr = {"scale": [0.5, 0.5], "offset": [0.0, 0.0], "spacing_mm": [2.0, 2.0]}
    src_rows = {lv: 20 + 20 * k for k, lv in enumerate(LEVELS)}          # film rows 10, 20, …, 50

    def row(pid, grades):
        r = {"patient_id": pid, **{f"grade_{lv}": g for lv, g in zip(LEVELS, grades)}}
        for lv in LEVELS:
            r[f"xray_disc_{lv}_row"], r[f"xray_disc_{lv}_col"] = src_rows[lv], 40.0
        return r

    yy, xx = np.mgrid[:H, :W]
    blob = lambda r: np.exp(-((yy - r) ** 2 + (xx - 20) ** 2) / 8.0)  # noqa: E731
    attrs = [blob(40), blob(10), blob(40)]
    rows = [row("A", [0, 1, 1, 3, 2]), row("B", [0, 1, 1, 3, 2]), row("C", [0, 0, 0, 0, 0])]
    s = film_level_summary(attrs, [json.dumps(tr)] * 3, rows, n_boot=50)
    assert s["n"] == 2 and s["n_excluded"] == 1
    assert s["exclusions"][0] == {"patient_id": "C", "reason": "no degenerated level (all grades 0)"}
    a, b = s["per_patient"]
    assert a["true_level"] == "L4L5" and a["hit"] and a["fraction"] > 0.9
    assert b["argmax_level"] == "L1L2" and not b["hit"] and b["fraction"] < 0.01
    assert s["by_level"]["L4L5"] == {"mean_mass_fraction": s["by_level"]["L4L5"]["mean_mass_fraction"],
                                      "n_true": 2, "hit_rate_true": 0.5}
