"""Measured components of the X-ray degeneration scale, from endplate landmarks of a lateral film.

Input: the 11 endplate lines of a lateral lumbar film, cranial to caudal (``L1_sup, L1_inf, …,
L5_inf, S1_sup``, the order of :data:`lumbarjax.data.public.buu_lspine.ENDPLATES` ``["LA"]``),
each as its two corner points, in pixels (row, col), with the film's pixel spacing
(row_mm, col_mm) from the DICOM (``dicom.read_xray(...).spacing``).

Per disc level (L1L2 … L5S1, between the upper vertebra's lower endplate with corners
A_u (anterior), P_u (posterior) and the lower vertebra's upper endplate A_l, P_l), in mm:

* ``anterior_height_mm`` = |A_u − A_l|, ``posterior_height_mm`` = |P_u − P_l|;
* ``disc_height_mm`` = their mean;
* ``depth_mm`` = |A_u − P_u|, the sagittal depth of the upper vertebra's lower endplate;
* ``dhi`` (disc height index) = disc_height_mm / depth_mm. This is the normalisation of
  Frobin et al. (Clin Biomech 1997;12 Suppl 1:S1–S63, "Precision measurement of disc height,
  vertebral height and sagittal plane displacement from lateral radiographic views of the lumbar
  spine"): disc height in units of the adjacent vertebral endplate depth, which removes the
  radiographic magnification and the patient's size. Farfan's index (J Bone Joint Surg Am
  1972;54:492–510), (anterior + posterior height) / disc diameter, equals 2 · dhi when the disc
  diameter equals the endplate depth.
* ``listhesis_mm``: the displacement of the upper vertebra's posterior-inferior corner P_u
  relative to the lower vertebra's posterior-superior corner P_l, along the lower endplate
  (direction P_l → A_l): positive = anterolisthesis, negative = retrolisthesis;
  ``listhesis_pct`` = 100 · listhesis_mm / |A_l − P_l| (Meyerding's slip percentage).

Which corner of a line is anterior: ``anterior="left"`` (smaller column) or ``"right"``, or
``"auto"``: from the sacral slope (the S1 upper endplate descends anteriorly in a standing
lateral film) and the lumbar lordosis (the disc centres bulge anteriorly); both must agree,
else the caller has to say.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS

# Endplate line index of (upper vertebra's lower endplate, lower vertebra's upper endplate) per
# level, in the 11-line lateral order.
LEVEL_ENDPLATES = {lv: (2 * k + 1, 2 * k + 2) for k, lv in enumerate(LEVELS)}
INDEX_COLUMNS = ("anterior_height_mm", "posterior_height_mm", "disc_height_mm", "depth_mm", "dhi",
                 "listhesis_mm", "listhesis_pct")


def _check(endplates_rc) -> np.ndarray:
    e = np.asarray(endplates_rc, dtype=np.float64)
    if e.shape != (11, 2, 2) or not np.all(np.isfinite(e)):
        raise ConfigError(f"endplates: expected 11 lateral lines x 2 corners x (row, col) finite "
                          f"values, got shape {e.shape}")
    return e


def to_mm(endplates_rc, spacing) -> np.ndarray:
    """(…, 2) pixel (row, col) -> mm (row_mm·row, col_mm·col)."""
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (2,) or np.any(sp <= 0):
        raise ConfigError(f"spacing must be (row_mm, col_mm) > 0, got {spacing}")
    return np.asarray(endplates_rc, dtype=np.float64) * sp


def disc_centres(endplates_rc) -> np.ndarray:
    """(5, 2) centre (row, col) of each disc L1L2 … L5S1: the mean of its four corners."""
    e = _check(endplates_rc)
    return np.stack([e[[u, l]].reshape(4, 2).mean(axis=0) for u, l in LEVEL_ENDPLATES.values()])


def anterior_side(endplates_mm) -> str:
    """'left' or 'right': the column side of the film the patient faces (see module docstring)."""
    e = np.asarray(endplates_mm, dtype=np.float64)
    votes = []
    s1 = e[10]
    d_row, d_col = s1[1] - s1[0]           # end 1 relative to end 0
    slope = np.degrees(np.arctan2(abs(d_row), abs(d_col) + 1e-9))
    if slope > 5.0:                        # anterior end is the lower (larger row) one
        lower_end = 1 if d_row > 0 else 0
        votes.append("right" if (lower_end == 1) == (d_col > 0) else "left")
    c = disc_centres(e)
    chord = c[-1] - c[0]
    normal = np.array([-chord[1], chord[0]]) / (np.linalg.norm(chord) + 1e-9)   # (row, col)
    bulge = float(np.mean((c[1:-1] - c[0]) @ normal))
    if abs(bulge) > 0.01 * np.linalg.norm(chord) and abs(normal[1]) > 1e-6:
        votes.append("right" if bulge * normal[1] > 0 else "left")
    if not votes or len(set(votes)) > 1:
        raise ConfigError("cannot tell the anterior side of this lateral film from the sacral slope "
                          f"and the lordosis (votes {votes}): pass anterior='left' or 'right'")
    return votes[0]


def orient(endplates_rc, side: str) -> np.ndarray:
    """(11, 2, 2) lines with each line's corners ordered (anterior, posterior); ``side`` is the
    column side the patient faces ("left" | "right")."""
    e = _check(endplates_rc)
    if side not in ("left", "right"):
        raise ConfigError(f"anterior must be 'left', 'right' or 'auto', got {side!r}")
    swap = (e[:, 0, 1] > e[:, 1, 1]) == (side == "left")
    return np.where(swap[:, None, None], e[:, ::-1], e)


def level_corners(oriented) -> np.ndarray:
    """(5, 4, 2): per level the corners (A_u, P_u, A_l, P_l) of its two endplates, from
    :func:`orient`'s output."""
    e = np.asarray(oriented, dtype=np.float64)
    return np.stack([np.concatenate([e[u], e[l]]) for u, l in LEVEL_ENDPLATES.values()])


def level_indices(corners_mm) -> pd.DataFrame:
    """Per-level indices (module docstring) from (5, 4, 2) corners (A_u, P_u, A_l, P_l) in mm."""
    c = np.asarray(corners_mm, dtype=np.float64)
    if c.shape != (len(LEVELS), 4, 2):
        raise ConfigError(f"level corners: expected ({len(LEVELS)}, 4, 2), got {c.shape}")
    a_u, p_u, a_l, p_l = (c[:, i] for i in range(4))
    h_a = np.linalg.norm(a_u - a_l, axis=-1)
    h_p = np.linalg.norm(p_u - p_l, axis=-1)
    depth = np.linalg.norm(a_u - p_u, axis=-1)
    lower = a_l - p_l
    lower_len = np.linalg.norm(lower, axis=-1)
    slip = np.sum((p_u - p_l) * lower, axis=-1) / lower_len
    height = 0.5 * (h_a + h_p)
    return pd.DataFrame({"anterior_height_mm": h_a, "posterior_height_mm": h_p,
                         "disc_height_mm": height, "depth_mm": depth, "dhi": height / depth,
                         "listhesis_mm": slip, "listhesis_pct": 100.0 * slip / lower_len},
                        index=list(LEVELS))


def disc_indices(endplates_rc, spacing, *, anterior: str = "auto") -> pd.DataFrame:
    """Per-level disc height index and listhesis (module docstring), one row per level.

    Args:
      endplates_rc: (11, 2, 2) lateral endplate lines, corners, (row, col) in pixels.
      spacing: (row_mm, col_mm) of the film.
      anterior: "left" | "right" | "auto".
    Returns: DataFrame indexed by level with :data:`INDEX_COLUMNS`.
    """
    e = to_mm(_check(endplates_rc), spacing)
    side = anterior_side(e) if anterior == "auto" else anterior
    return level_indices(level_corners(orient(e, side)))


def index_columns(indices: pd.DataFrame, prefix_cols=("dhi", "listhesis_mm")) -> dict:
    """Flat per-patient feature dict: ``dhi_L4L5``, ``listhesis_mm_L4L5``, …"""
    return {f"{c}_{lv}": float(indices.loc[lv, c]) for c in prefix_cols for lv in indices.index}


__all__ = ["INDEX_COLUMNS", "LEVEL_ENDPLATES", "anterior_side", "disc_centres", "disc_indices",
           "index_columns", "level_corners", "level_indices", "orient", "to_mm"]
