"""Disc height index and listhesis from lateral endplate lines, against a hand computation."""

import numpy as np
import pytest

from lumbarjax.data.public import buu_lspine
from lumbarjax.errors import ConfigError
from lumbarjax.data import xray_indices

# A lateral film facing left (anterior = small column), lordotic, sacrum sloping anteriorly down.
# (x1, y1, x2, y2) = (col, row) of the anterior then the posterior corner, pixels.
LINES = [
    (120, 40, 190, 40), (118, 100, 188, 100),      # L1 sup, inf
    (110, 112, 180, 112), (108, 172, 178, 172),    # L2
    (102, 184, 172, 184), (100, 244, 170, 244),    # L3
    (100, 256, 170, 256), (100, 300, 170, 300),    # L4 (L4_inf: the hand-computed level)
    (102, 324, 172, 316), (108, 370, 178, 366),    # L5 sup (tilted), inf
    (115, 395, 180, 365),                          # S1 sup: anterior end lower
]
SPACING = (0.5, 0.5)


def _write(tmp_path, lines, name="0007-F-066Y1"):
    folder = tmp_path / "LA"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.csv").write_text("".join(f"{a},{b},{c},{d},0\n" for a, b, c, d in lines))
    return buu_lspine.endplate_array(buu_lspine.read_endplates(folder / f"{name}.csv", "LA"))


def test_dhi_and_listhesis_match_hand_computation(tmp_path):
    e = _write(tmp_path, LINES)
    ind = xray_indices.disc_indices(e, SPACING, anterior="left")
    # L4L5 by hand (mm = px * 0.5): A_u (150, 50), P_u (150, 85); A_l (162, 51), P_l (158, 86)
    h_a = np.hypot(162 - 150, 51 - 50)           # 12.0416
    h_p = np.hypot(158 - 150, 86 - 85)           # 8.0623
    depth = 85 - 50                               # 35
    d = (4.0, -35.0)                              # P_l -> A_l
    slip = ((150 - 158) * d[0] + (85 - 86) * d[1]) / np.hypot(*d)
    row = ind.loc["L4L5"]
    assert row["anterior_height_mm"] == pytest.approx(h_a)
    assert row["posterior_height_mm"] == pytest.approx(h_p)
    assert row["depth_mm"] == pytest.approx(depth)
    assert row["dhi"] == pytest.approx((h_a + h_p) / 2 / depth)     # 0.28720
    assert row["dhi"] == pytest.approx(0.287199, abs=1e-5)
    assert row["listhesis_mm"] == pytest.approx(slip)               # +0.0852 mm (anterior)
    assert row["listhesis_pct"] == pytest.approx(100 * slip / np.hypot(*d))
    # L1L2: flat endplates 12 px apart, L1 sits 8 px posterior (right) of L2 -> retrolisthesis 4 mm
    assert ind.loc["L1L2", "disc_height_mm"] == pytest.approx(np.hypot(12, 8) * 0.5)
    assert ind.loc["L1L2", "listhesis_mm"] == pytest.approx(-4.0)
    assert list(ind.index) == ["L1L2", "L2L3", "L3L4", "L4L5", "L5S1"]
    c = xray_indices.disc_centres(e)
    np.testing.assert_allclose(c[3], [(300 + 300 + 324 + 316) / 4, (100 + 170 + 102 + 172) / 4])


def test_auto_side_and_mirrored_film_give_the_same_indices(tmp_path):
    e = _write(tmp_path, LINES)
    assert xray_indices.anterior_side(xray_indices.to_mm(e, SPACING)) == "left"
    left = xray_indices.disc_indices(e, SPACING)
    # mirror the film (width 300 px): anterior corners now on the right
    mirrored = [(300 - a, r1, 300 - c, r2) for a, r1, c, r2 in LINES]
    m = _write(tmp_path, mirrored, "0008-M-070Y1")
    assert xray_indices.anterior_side(xray_indices.to_mm(m, SPACING)) == "right"
    np.testing.assert_allclose(xray_indices.disc_indices(m, SPACING).to_numpy(), left.to_numpy(), atol=1e-9)


def test_anisotropic_spacing_and_bad_input(tmp_path):
    e = _write(tmp_path, LINES)
    ind = xray_indices.disc_indices(e, (0.5, 0.25), anterior="left")
    assert ind.loc["L4L5", "depth_mm"] == pytest.approx(70 * 0.25)
    assert ind.loc["L4L5", "anterior_height_mm"] == pytest.approx(np.hypot(24 * 0.5, 2 * 0.25))
    with pytest.raises(ConfigError, match="expected 11 lateral lines"):
        xray_indices.disc_indices(e[:10], SPACING)
    with pytest.raises(ConfigError, match="spacing must be"):
        xray_indices.disc_indices(e, (0.5, 0.0))
    flat = e.copy()
    flat[10, :, 0] = flat[10, 0, 0]          # S1 level: no sacral slope
    flat[:, :, 1] = flat[:, :, 1] - (flat[:, :, 1].mean(axis=1, keepdims=True) - 150)  # no lordosis
    with pytest.raises(ConfigError, match="cannot tell the anterior side"):
        xray_indices.disc_indices(flat, SPACING)
    feats = xray_indices.index_columns(ind)
    assert feats["dhi_L4L5"] == pytest.approx(ind.loc["L4L5", "dhi"]) and len(feats) == 10


def test_synthetic_endplate_corners_carry_the_disc_height_loss():
    """The ground truth's endplate corners of one phantom drawn at grades 0..4: the disc height
    index from them falls with the grade at every lumbar level, film facing left."""
    from lumbarjax import synthetic
    from lumbarjax.schema import LEVELS
    from lumbarjax.synthetic.anatomy import endplate_corners, make_anatomy
    from lumbarjax.synthetic.streams import stream
    _, tr = synthetic.sample_patients(1, seed=0, edge_cases=False)
    t = tr.iloc[0].to_dict()
    dhi = []
    for g in range(5):
        t.update({f"grade_{lv}": g for lv in LEVELS})
        an = make_anatomy(stream(0, 0, 1), t)
        # (u, v) mm with v posterior -> (row, col) = (u, v): anterior = smaller column
        lines = np.array([[ant, post] for ant, post in endplate_corners(an)])
        assert xray_indices.anterior_side(lines) == "left"
        dhi.append(xray_indices.disc_indices(lines, (1.0, 1.0))["dhi"].to_numpy())
    dhi = np.array(dhi)                                        # (grade, level)
    assert np.all(np.diff(dhi[:, :4], axis=0) < 0)             # L1L2..L4L5 fall with every grade
    assert np.all((dhi[4, :4] / dhi[0, :4] > 0.3) & (dhi[4, :4] / dhi[0, :4] < 0.45))
