"""The lateral film level by level: the whole-film view, per-disc crops at a physical
resolution, and landmark targets from the synthetic ground truth or BUU-LSPINE endplate lines.

Coordinates are (row, col) pixels of the *source* film unless said otherwise; ``spacing`` is
(row_mm, col_mm) from the DICOM (``dicom.read_xray``) or given for a JPEG.

* :func:`film_view`: the film resized to a fixed grid with its physical aspect kept
  (``preprocess.resize_xray_with_transform``), intensities normalised to [0, 1]; the disc
  finder reads it.
* :func:`crop_level`: a (h, w) window centred on a disc at ``mm_per_px`` (default 0.75 mm,
  fine enough to keep the endplates: a grade step of the demo changes the disc height by
  ~1.5 mm), axis-aligned, anti-aliased; with the affine that maps crop pixels to the film.
* :func:`truth_landmarks` / :func:`endplate_landmarks`: per film the 5 disc centres (5, 2) and
  the level corners (5, 4, 2) = (A_u, P_u, A_l, P_l) per level (see ``data.xray_indices``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from lumbarjax.data import preprocess
from lumbarjax.errors import ConfigError
from lumbarjax.data import xray_indices
from lumbarjax.schema import LEVELS

# The 11 lateral endplates, cranial to caudal (as BUU-LSPINE and the synthetic ground truth).
ENDPLATES = tuple(f"L{k}_{s}" for k in range(1, 6) for s in ("sup", "inf")) + ("S1_sup",)


def film_view(pixels, spacing, shape: Sequence[int]) -> tuple[np.ndarray, dict]:
    """(H', W') float32 in [0, 1] (1st-99th percentile) and the transform of
    ``preprocess.resize_xray_with_transform`` (source -> view: ``rc * scale + offset``)."""
    img = preprocess.normalize_intensity(np.asarray(pixels, np.float32))
    return preprocess.resize_xray_with_transform(img, shape, spacing=spacing)


def view_to_source(transform: Mapping, rc) -> np.ndarray:
    """Inverse of ``preprocess.apply_xray_transform``: view (row, col) -> source (row, col)."""
    return (np.asarray(rc, np.float64) - np.asarray(transform["offset"])) / np.asarray(transform["scale"])


def crop_level(pixels, spacing, centre_rc, shape: Sequence[int] = (64, 64),
               mm_per_px: float = 0.75) -> tuple[np.ndarray, dict]:
    """A window of ``shape`` pixels of ``mm_per_px`` centred on ``centre_rc`` (source pixels).

    Returns ``(crop (h, w) float32, transform)`` with ``transform = {"origin": (2,), "step": (2,)}``
    such that source_rc = origin + crop_rc * step (see :func:`crop_to_source`). Outside the
    film the crop is 0.
    """
    sp = np.asarray(spacing, np.float64)
    if sp.shape != (2,) or np.any(sp <= 0) or not mm_per_px > 0:
        raise ConfigError(f"crop_level: bad spacing {spacing} or mm_per_px {mm_per_px}")
    h, w = (int(s) for s in shape)
    step = mm_per_px / sp                       # source pixels per crop pixel
    origin = np.asarray(centre_rc, np.float64) - step * (np.array([h, w]) - 1) / 2.0
    src = np.asarray(pixels, np.float32)
    if np.any(step > 1.0):
        src = ndimage.gaussian_filter(src, sigma=np.sqrt(np.maximum(step ** 2 - 1.0, 0.0)) / 2.0,
                                      mode="nearest")
    rr = origin[0] + step[0] * np.arange(h)
    cc = origin[1] + step[1] * np.arange(w)
    grid = np.stack(np.meshgrid(rr, cc, indexing="ij"))
    crop = ndimage.map_coordinates(src, grid, order=1, mode="constant", cval=0.0, prefilter=False)
    return crop.astype(np.float32), {"origin": origin.tolist(), "step": step.tolist()}


def crop_to_source(transform: Mapping, rc) -> np.ndarray:
    """Crop pixel (row, col) -> source-film pixel (row, col): ``origin + rc * step``.

    ``transform``: the ``{"origin", "step"}`` dict :func:`crop_level` returns; ``rc``: (..., 2)
    crop pixels (fractional allowed). Returns float64 (..., 2) source pixels.
    """
    return np.asarray(transform["origin"]) + np.asarray(rc, np.float64) * np.asarray(transform["step"])


def source_to_crop(transform: Mapping, rc) -> np.ndarray:
    """Source-film pixel (row, col) -> crop pixel (row, col), the inverse of
    :func:`crop_to_source`: ``(rc - origin) / step``. Returns float64 (..., 2)."""
    return (np.asarray(rc, np.float64) - np.asarray(transform["origin"])) / np.asarray(transform["step"])


def truth_landmarks(row: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Disc centres (5, 2) and level corners (5, 4, 2) from a synthetic ``ground_truth.csv`` row
    (``xray_disc_LEVEL_{row,col}``, ``xray_ep_ENDPLATE_{ant,post}_{row,col}``)."""
    centres = np.array([[row[f"xray_disc_{lv}_row"], row[f"xray_disc_{lv}_col"]] for lv in LEVELS], float)
    lines = np.array([[[row[f"xray_ep_{ep}_{c}_row"], row[f"xray_ep_{ep}_{c}_col"]] for c in ("ant", "post")]
                      for ep in ENDPLATES], float)
    return centres, xray_indices.level_corners(lines)


def endplate_landmarks(endplates_rc, anterior: str = "auto", spacing=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Disc centres (5, 2) and level corners (5, 4, 2) from 11 lateral endplate lines (11, 2, 2)
    (row, col) such as ``buu_lspine.endplate_array``; corners ordered anterior-first by
    ``anterior`` ("left" | "right" | "auto", see ``xray_indices.anterior_side``)."""
    e = np.asarray(endplates_rc, np.float64)
    side = xray_indices.anterior_side(xray_indices.to_mm(e, spacing)) if anterior == "auto" else anterior
    return xray_indices.disc_centres(e), xray_indices.level_corners(xray_indices.orient(e, side))


def level_crops(pixels, spacing, centres_rc, shape=(64, 64), mm_per_px: float = 0.75):
    """Crops (5, h, w) around each disc centre, normalised to [0, 1] over the film, and their
    transforms (list of 5)."""
    img = preprocess.normalize_intensity(np.asarray(pixels, np.float32))
    out = [crop_level(img, spacing, c, shape, mm_per_px) for c in np.asarray(centres_rc, float)]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def _edge_offset(img, sp, station, nrm, offs, sign, step_mm) -> float:
    """Offset (mm) along ``nrm`` from ``station`` of the steepest fall (sign −1) or rise (+1) of
    the film's intensity within ``offs``; 0 when the extremum is at the window's border."""
    pts = (station[None] + offs[:, None] * nrm[None]) / sp
    grad = np.gradient(ndimage.map_coordinates(img, pts.T, order=1, mode="nearest"))
    j = int(np.argmin(grad) if sign < 0 else np.argmax(grad))
    if not 0 < j < len(offs) - 1:
        return 0.0
    g0, g1, g2 = grad[j - 1], grad[j], grad[j + 1]
    den = g0 - 2 * g1 + g2
    shift = 0.5 * (g0 - g2) / den if abs(den) > 1e-12 else 0.0
    return float(offs[j] + np.clip(shift, -1, 1) * step_mm)


def refine_corners(pixels, spacing, corners_rc, *, search_mm: float = 3.0, inset: float = 0.12,
                   step_mm: float = 0.1, smooth_mm: float = 0.4) -> np.ndarray:
    """Move each level's corners along the disc normal onto the endplate edges of the film.

    For every level (A_u, P_u, A_l, P_l), the endplate direction is the mean of A_u − P_u and
    A_l − P_l and the normal points from the upper to the lower endplate. At a station
    ``inset`` of the depth inside each corner (clear of the rounded corner and of osteophytes)
    the intensity profile along the normal is sampled every ``step_mm`` within ``search_mm`` of
    the current estimate; the upper endplate is where the profile falls fastest (bright body ->
    dark disc), the lower where it rises fastest. Only the normal component of each corner moves
    (each corner is projected onto the line through the two edge points of its endplate, so its
    position along the endplate is kept). corners_rc: (N, 5, 4, 2) or (5, 4, 2) source
    pixels; returns the same shape.
    """
    c = np.asarray(corners_rc, np.float64)
    single = c.ndim == 3
    c = c[None] if single else c.copy()
    sp = np.asarray(spacing, np.float64)
    img = ndimage.gaussian_filter(np.asarray(pixels, np.float32), sigma=smooth_mm / sp)
    offs = np.arange(-search_mm, search_mm + 1e-9, step_mm)
    out = c.copy()
    for n in range(c.shape[0]):
        for lv in range(c.shape[1]):
            mm = c[n, lv] * sp                           # (4, 2): A_u, P_u, A_l, P_l in mm
            d = (mm[0] - mm[1]) + (mm[2] - mm[3])
            d /= np.linalg.norm(d) + 1e-12
            nrm = np.array([-d[1], d[0]])
            if nrm @ ((mm[2] + mm[3]) - (mm[0] + mm[1])) < 0:
                nrm = -nrm
            for a, b, sign in ((0, 1, -1), (2, 3, 1)):       # upper endplate falls, lower rises
                edges = []
                for corner, other in ((a, b), (b, a)):
                    station = mm[corner] + inset * (mm[other] - mm[corner])
                    edges.append(station + _edge_offset(img, sp, station, nrm, offs, sign, step_mm) * nrm)
                u = edges[1] - edges[0]
                u /= np.linalg.norm(u) + 1e-12
                for corner in (a, b):   # project the corner onto the edge line (along-line position kept)
                    p = edges[0] + ((mm[corner] - edges[0]) @ u) * u
                    out[n, lv, corner] = p / sp
    return out[0] if single else out


__all__ = ["ENDPLATES", "crop_level", "crop_to_source", "endplate_landmarks", "film_view",
           "level_crops", "refine_corners", "source_to_crop", "truth_landmarks", "view_to_source"]
