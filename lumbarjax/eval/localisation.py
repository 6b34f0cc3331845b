"""Does an attribution map point at the right spinal level?

Level regions
-------------
:func:`level_regions` splits a preprocessed volume into one region per intervertebral level from
the disc centres (DICOM patient LPS, mm). A voxel belongs to level ``k`` when

1. disc ``k``'s centre is its nearest disc centre in millimetres (a Voronoi partition: between
   two neighbouring discs the boundary is the plane halfway between them, so regions are slabs
   across the spine that follow its curvature), **and**
2. along the local spine axis ``t_k`` (direction from the disc above to the disc below) the voxel
   lies within half the distance to the neighbouring disc on that side; for the top and bottom
   discs the one known half-gap is mirrored. Voxels beyond the outermost half-gaps get 0;
3. optionally (``radius_mm``) its distance from the spine axis through the disc centre is at most
   ``radius_mm``. By default the slab is unbounded across the body, so the canal, the facets and
   the paraspinal tissue at a level all count as that level.

Region label values are fixed: ``LEVELS.index(level) + 1`` (L1L2 = 1 … L5S1 = 5), 0 = no level.

Scores
------
* pointing game: the voxel with the largest positive attribution (optionally after Gaussian
  smoothing, ``smooth_sigma`` in voxels) lies in the true level's region.
* positive mass fraction: share of the positive attribution mass inside the true region.
* chance level: the fraction of the volume's voxels in the true region — the hit rate of a map
  whose maximum fell on a uniformly random voxel, and the expected mass fraction of a uniform map.
"""

from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from lumbarjax.errors import CohortError, LumbarjaxError
from lumbarjax.eval.metrics import bootstrap_ci, to_jsonable

from lumbarjax.schema import LEVELS


def normalise_level(level) -> str:
    """``"L4/L5"``, ``"l4-l5"``, ``"L4 L5"`` → ``"L4L5"``; raises for an unknown level."""
    s = re.sub(r"[\s/\-_]", "", str(level)).upper()
    if s not in LEVELS:
        raise LumbarjaxError(f"unknown spinal level {level!r}; expected one of {list(LEVELS)}")
    return s


def level_label(level) -> int:
    """Region label value of ``level``: 1 for L1L2 … 5 for L5S1 (ints pass through)."""
    if isinstance(level, (int, np.integer)):
        if not 1 <= int(level) <= len(LEVELS):
            raise LumbarjaxError(f"level label {level} outside 1..{len(LEVELS)}")
        return int(level)
    return LEVELS.index(normalise_level(level)) + 1


def _parse_levels(value) -> list[int]:
    """One or several levels (``"L4L5"``, ``"L3L4;L4L5"``, an int, a list) → label values."""
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return sorted({level_label(v) for v in value})
    if isinstance(value, (int, np.integer)):
        return [level_label(value)]
    parts = [p for p in re.split(r"[;,|+]", str(value)) if p.strip()]
    return sorted({level_label(p) for p in parts})


def voxel_coordinates(affine, shape) -> np.ndarray:
    """World coordinates ``(D, H, W, 3)`` mm of every voxel: ``affine @ [d, h, w, 1]``."""
    A = np.asarray(affine, dtype=np.float64)
    if A.shape != (4, 4):
        raise LumbarjaxError(f"affine must be (4, 4), got {A.shape}")
    d, h, w = (np.arange(n, dtype=np.float64) for n in shape)
    # sum of per-axis contributions, broadcast — no (P, 4) homogeneous array needed
    return (d[:, None, None, None] * A[:3, 0] + h[None, :, None, None] * A[:3, 1]
            + w[None, None, :, None] * A[:3, 2] + A[:3, 3])


def level_regions(affine, shape, disc_centres_mm: Mapping[str, Sequence[float]], *,
                  radius_mm: float | None = None) -> np.ndarray:
    """Integer level-region volume ``(D, H, W)`` int32 (see the module docstring).

    Args:
      affine: ``(4, 4)`` voxel → LPS mm affine of the preprocessed volume.
      shape: ``(D, H, W)``.
      disc_centres_mm: level name → ``(x, y, z)`` mm; levels with a non-finite coordinate are
        ignored. At least two levels are needed to know the spine axis.
      radius_mm: optional maximum distance from the spine axis.
    """
    centres = {}
    for lvl, c in disc_centres_mm.items():
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.shape != (3,):
            raise LumbarjaxError(f"disc centre of {lvl}: expected (x, y, z) mm, got {c.shape}")
        if np.all(np.isfinite(c)):
            centres[normalise_level(lvl)] = c
    order = [lvl for lvl in LEVELS if lvl in centres]
    if len(order) < 2:
        raise LumbarjaxError(f"level_regions: need at least two disc centres, got {order}")
    C = np.stack([centres[lvl] for lvl in order])             # (L, 3), superior → inferior
    gaps = np.linalg.norm(np.diff(C, axis=0), axis=1)          # (L-1,)
    if np.any(gaps == 0):
        raise LumbarjaxError("level_regions: two disc centres coincide")
    L = len(order)
    tang = np.empty_like(C)
    for k in range(L):
        a, b = C[max(k - 1, 0)], C[min(k + 1, L - 1)]
        tang[k] = (b - a) / np.linalg.norm(b - a)
    half_up = np.array([gaps[k - 1] if k > 0 else gaps[0] for k in range(L)]) / 2
    half_down = np.array([gaps[k] if k < L - 1 else gaps[-1] for k in range(L)]) / 2

    X = voxel_coordinates(affine, shape).reshape(-1, 3)
    best = np.full(X.shape[0], np.inf)
    near = np.zeros(X.shape[0], dtype=np.int64)
    for k in range(L):
        dist = np.sum((X - C[k]) ** 2, axis=1)
        better = dist < best
        best[better] = dist[better]
        near[better] = k
    rel = X - C[near]
    s = np.sum(rel * tang[near], axis=1)
    ok = (s >= -half_up[near] - 1e-9) & (s <= half_down[near] + 1e-9)
    if radius_mm is not None:
        perp = np.linalg.norm(rel - s[:, None] * tang[near], axis=1)
        ok &= perp <= radius_mm
    labels = np.array([LEVELS.index(lvl) + 1 for lvl in order], dtype=np.int32)
    out = np.where(ok, labels[near], 0).astype(np.int32)
    return out.reshape(tuple(shape))


def _attr_3d(attr, regions: np.ndarray) -> np.ndarray:
    a = np.asarray(attr, dtype=np.float64)
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.shape != regions.shape:
        raise LumbarjaxError(f"attribution shape {a.shape} does not match the region volume "
                             f"{regions.shape}")
    return a


def _positive(attr: np.ndarray, smooth_sigma: float) -> np.ndarray:
    pos = np.maximum(np.nan_to_num(attr, nan=0.0), 0.0)
    if smooth_sigma and smooth_sigma > 0:
        pos = gaussian_filter(pos, sigma=smooth_sigma, mode="constant")
    return pos


def argmax_level(attr, regions, *, smooth_sigma: float = 0.0) -> int:
    """Region label (0 = none) at the voxel of largest positive attribution; -1 if none > 0."""
    regions = np.asarray(regions)
    pos = _positive(_attr_3d(attr, regions), smooth_sigma)
    if not np.any(pos > 0):
        return -1
    return int(regions.reshape(-1)[int(np.argmax(pos))])


def pointing_game(attr, regions, true_level_index, *, smooth_sigma: float = 0.0) -> bool:
    """True when the maximum of the positive attribution falls in the true level's region.

    Args:
      attr: ``(D, H, W)`` (or ``(D, H, W, 1)``) attribution map.
      regions: ``(D, H, W)`` int region volume from :func:`level_regions`.
      true_level_index: region label value (1 = L1L2 … 5 = L5S1), a level name, or several of
        either (hit if the maximum is in any of them).
      smooth_sigma: Gaussian smoothing of the positive part, in voxels (0 = none).
    A map with no positive value scores False.
    """
    lab = argmax_level(attr, regions, smooth_sigma=smooth_sigma)
    return lab > 0 and lab in _parse_levels(true_level_index)


def positive_mass_fraction(attr, regions, level, *, smooth_sigma: float = 0.0) -> float:
    """Share of the positive attribution mass inside ``level``'s region (label value or name, or
    several); ``nan`` when the map has no positive mass."""
    regions = np.asarray(regions)
    pos = _positive(_attr_3d(attr, regions), smooth_sigma)
    total = pos.sum()
    if total <= 0:
        return float("nan")
    inside = np.isin(regions, _parse_levels(level))
    return float(pos[inside].sum() / total)


def disc_centres_from_row(row: Mapping) -> dict[str, tuple[float, float, float]]:
    """``{level: (x, y, z)}`` from ``disc_<LEVEL>_{x,y,z}_mm`` fields of a ground-truth row."""
    out = {}
    for lvl in LEVELS:
        keys = [f"disc_{lvl}_{ax}_mm" for ax in "xyz"]
        if all(k in row for k in keys):
            out[lvl] = tuple(float(row[k]) for k in keys)
    return out


def localisation_summary(attrs: Sequence, affines: Sequence, ground_truth, *,
                         smooth_sigma: float = 0.0, radius_mm: float | None = None,
                         n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Pointing-game hit rate and positive-mass fraction at the true stenotic level, with
    patient bootstrap CIs and the chance level.

    Args:
      attrs: per patient an attribution map ``(D, H, W)`` (``(D, H, W, 1)`` accepted).
      affines: per patient the ``(4, 4)`` affine of that map's voxel grid (LPS mm).
      ground_truth: rows aligned with ``attrs`` (DataFrame or list of dicts) holding
        ``patient_id``, ``stenosis_level`` (``"L4L5"``, several joined by ``;``) and
        ``disc_<LEVEL>_{x,y,z}_mm``.

    Returns a JSON-serialisable dict: ``n, n_excluded, exclusions (patient_id, reason),
    hit_rate {point, lo, hi, …}, mean_fraction {…}, chance_hit_rate`` (mean fraction of the
    volume in the true region), ``chance_fraction`` (same number: the expected mass fraction of a
    uniform map), ``n_no_positive_attribution, smooth_sigma, per_patient`` list (each with
    ``mass_by_level``: the positive mass share in every level's region), ``by_level``: per level
    the mean mass share over patients, and the count and hit rate of the patients whose true
    level it is.
    """
    if isinstance(ground_truth, pd.DataFrame):
        rows = ground_truth.to_dict("records")
    else:
        rows = list(ground_truth)
    if not (len(attrs) == len(affines) == len(rows)):
        raise LumbarjaxError(f"localisation_summary: {len(attrs)} attribution maps, "
                             f"{len(affines)} affines and {len(rows)} ground-truth rows — "
                             "they must be aligned one per patient")
    if rows and "stenosis_level" not in rows[0]:
        raise CohortError("localisation_summary: ground truth has no 'stenosis_level' column")
    per, excl = [], []
    for attr, aff, row in zip(attrs, affines, rows):
        pid = str(row.get("patient_id", "?"))
        lvl = row.get("stenosis_level")
        if lvl is None or (isinstance(lvl, float) and np.isnan(lvl)) or \
                str(lvl).strip().lower() in ("", "none", "nan"):
            excl.append({"patient_id": pid, "reason": "no stenosis level in ground truth"})
            continue
        try:
            true = _parse_levels(lvl)
        except LumbarjaxError as e:
            raise LumbarjaxError(f"patient {pid}: {e}") from e
        attr = np.asarray(attr)
        shape = attr.shape[:3]
        try:
            regions = level_regions(aff, shape, disc_centres_from_row(row), radius_mm=radius_mm)
            attr3 = _attr_3d(attr, regions)
        except LumbarjaxError as e:
            raise LumbarjaxError(f"patient {pid}: {e}") from e
        inside = np.isin(regions, true)
        if not inside.any():
            excl.append({"patient_id": pid,
                         "reason": f"true level {lvl} region is outside the volume"})
            continue
        am = argmax_level(attr3, regions, smooth_sigma=smooth_sigma)
        per.append({
            "patient_id": pid,
            "true_level": ";".join(LEVELS[t - 1] for t in true),
            "argmax_level": LEVELS[am - 1] if am > 0 else ("none" if am == 0 else "no positive"),
            "hit": bool(am > 0 and am in true),
            "fraction": positive_mass_fraction(attr3, regions, true, smooth_sigma=smooth_sigma),
            "chance": float(inside.mean()),
            "mass_by_level": {lv: positive_mass_fraction(attr3, regions, k + 1, smooth_sigma=smooth_sigma)
                              for k, lv in enumerate(LEVELS)},
        })
    hits = np.array([p["hit"] for p in per], dtype=np.float64)
    frac = np.array([p["fraction"] for p in per], dtype=np.float64)
    chance = np.array([p["chance"] for p in per], dtype=np.float64)
    kw = dict(n_boot=n_boot, seed=seed, alpha=alpha)
    mean = lambda a: float(np.mean(a)) if a.size else float("nan")  # noqa: E731
    frac_ok = frac[np.isfinite(frac)]
    out = {
        "n": len(per),
        "n_excluded": len(excl),
        "exclusions": excl,
        "hit_rate": bootstrap_ci(mean, hits, **kw).as_dict(),
        "mean_fraction": bootstrap_ci(mean, frac_ok, **kw).as_dict(),
        "n_no_positive_attribution": int(np.sum(~np.isfinite(frac))),
        "chance_hit_rate": mean(chance),
        "chance_fraction": mean(chance),
        "chance_definition": "mean fraction of the volume's voxels in the true level region",
        "smooth_sigma": smooth_sigma,
        "radius_mm": radius_mm,
        "per_patient": per,
        "by_level": _by_level(per),
    }
    return to_jsonable(out)


def film_level_summary(attrs: Sequence, transforms: Sequence, ground_truth, *, n_boot: int = 1000,
                       seed: int = 0, alpha: float = 0.05) -> dict:
    """:func:`localisation_summary` of lateral X-ray heat maps: does the film's largest positive
    attribution fall on the level of worst degeneration?

    Args:
      attrs: per patient the ``(H, W)`` attribution over the preprocessed film.
      transforms: per patient the preprocessing's source -> film pixel map (a dict or its JSON:
        ``scale``, ``offset``, ``spacing_mm``; the cache's ``xray_transform``).
      ground_truth: aligned rows with ``patient_id``, ``grade_<LEVEL>`` and the disc centres
        ``xray_disc_<LEVEL>_{row,col}`` in source pixels (synthetic ground truth).

    Each film becomes a one-slice volume in film millimetres (x = column, y = row), so the level
    regions are :func:`level_regions`' slabs between the disc centres. The "true level" is every
    level whose grade equals the film's worst (a hit on any counts); a film whose levels are
    all grade 0 is excluded ("no degenerated level").
    """
    from lumbarjax.data.preprocess import apply_xray_transform
    if isinstance(ground_truth, pd.DataFrame):
        ground_truth = ground_truth.to_dict("records")
    rows, affines, maps = [], [], []
    for attr, tr, row in zip(attrs, transforms, ground_truth, strict=True):
        tr = json.loads(tr) if isinstance(tr, str) else dict(tr)
        sp = float((tr.get("spacing_mm") or [1.0, 1.0])[0])
        grades = np.array([float(row.get(f"grade_{lv}", np.nan)) for lv in LEVELS])
        worst = [lv for lv, g in zip(LEVELS, grades) if np.isfinite(g) and g == np.nanmax(grades) and g > 0]
        out = {"patient_id": row.get("patient_id", "?"), "stenosis_level": ";".join(worst)}
        for lv in LEVELS:
            r, c = apply_xray_transform(tr, [float(row.get(f"xray_disc_{lv}_row", np.nan)),
                                             float(row.get(f"xray_disc_{lv}_col", np.nan))])
            out.update({f"disc_{lv}_x_mm": c * sp, f"disc_{lv}_y_mm": r * sp, f"disc_{lv}_z_mm": 0.0})
        rows.append(out)
        affines.append(np.array([[0.0, 0.0, sp, 0.0], [0.0, sp, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                                 [0.0, 0.0, 0.0, 1.0]]))   # voxel (0, row, col) -> (col·sp, row·sp, 0)
        maps.append(np.asarray(attr, np.float64)[None])
    res = localisation_summary(maps, affines, rows, n_boot=n_boot, seed=seed, alpha=alpha)
    for e in res["exclusions"]:
        if e["reason"] == "no stenosis level in ground truth":
            e["reason"] = "no degenerated level (all grades 0)"
    res["true_level_definition"] = "the level(s) of the film's worst degeneration grade"
    return res


def centres_px_to_mm(affine, shape, centres_px) -> dict[str, tuple[float, float, float]]:
    """``{level: (x, y, z)}`` LPS mm of (L, 2) (row, col) pixel centres on the mid-sagittal
    slice of a ``(D, H, W)`` volume with voxel -> mm ``affine`` (a localiser's output, e.g.
    ``pipelines.mri_levels.predict_centres``); levels with a non-finite centre are left out."""
    A = np.asarray(affine, np.float64)
    mid = (int(shape[0]) - 1) / 2.0
    out = {}
    for lv, (r, c) in zip(LEVELS, np.asarray(centres_px, np.float64)):
        if np.isfinite(r) and np.isfinite(c):
            out[lv] = tuple(float(v) for v in (A @ np.array([mid, r, c, 1.0]))[:3])
    return out


def attribution_by_level(attrs: Sequence, affines: Sequence, centres_mm: Sequence[Mapping], *,
                         patient_ids: Sequence[str] | None = None, smooth_sigma: float = 0.0) -> dict:
    """Where heat maps point, level by level, at *placed* disc centres — a localiser's on a
    real cohort, no ground truth needed.

    Args:
      attrs / affines: per patient the ``(D, H, W)`` map and its ``(4, 4)`` voxel -> mm affine.
      centres_mm: per patient ``{level: (x, y, z)}`` mm (:func:`centres_px_to_mm`); a patient
        with fewer than two placed levels is excluded and counted.

    Returns ``n, n_excluded, exclusions, points_at`` (per level the share of maps whose largest
    positive attribution lies in that level's region, plus ``"none"``: outside every level or
    no positive attribution), ``mean_mass_fraction`` (per level the mean share of positive
    mass; patients without positive mass left out), ``per_patient`` (argmax level and mass per
    level).
    """
    ids = list(patient_ids) if patient_ids is not None else [str(i) for i in range(len(attrs))]
    per, excl = [], []
    for pid, attr, aff, cen in zip(ids, attrs, affines, centres_mm, strict=True):
        attr = np.asarray(attr)
        if sum(np.all(np.isfinite(np.asarray(v, float))) for v in cen.values()) < 2:
            excl.append({"patient_id": str(pid), "reason": "fewer than two placed disc levels"})
            continue
        regions = level_regions(aff, attr.shape[:3], cen)
        attr3 = _attr_3d(attr, regions)
        am = argmax_level(attr3, regions, smooth_sigma=smooth_sigma)
        per.append({"patient_id": str(pid), "argmax_level": LEVELS[am - 1] if am > 0 else "none",
                    "mass_by_level": {lv: positive_mass_fraction(attr3, regions, k + 1, smooth_sigma=smooth_sigma)
                                      for k, lv in enumerate(LEVELS)}})
    n = len(per)
    points = {lv: (sum(p["argmax_level"] == lv for p in per) / n if n else None) for lv in (*LEVELS, "none")}
    mass = {}
    for lv in LEVELS:
        m = np.array([p["mass_by_level"][lv] for p in per], float)
        mass[lv] = float(m[np.isfinite(m)].mean()) if np.isfinite(m).any() else None
    return to_jsonable({"n": n, "n_excluded": len(excl), "exclusions": excl, "points_at": points,
                        "mean_mass_fraction": mass, "smooth_sigma": smooth_sigma, "per_patient": per})


def _by_level(per: Sequence[Mapping]) -> dict:
    """Per disc level: the mean share of positive attribution mass in its region (all patients)
    and, among the patients whose true stenotic level it is, their number and pointing-game hit
    rate — the heat maps summarised level by level."""
    out = {}
    for lv in LEVELS:
        m = np.array([p["mass_by_level"][lv] for p in per], float)
        m = m[np.isfinite(m)]
        mine = [p for p in per if lv in p["true_level"].split(";")]
        out[lv] = {"mean_mass_fraction": float(m.mean()) if m.size else None,
                   "n_true": len(mine),
                   "hit_rate_true": float(np.mean([p["hit"] for p in mine])) if mine else None}
    return out
