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
  the level corners (5, 4, 2) = (A_u, P_u, A_l, P_l) per level (see ``eval.xray_indices``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from lumbarjax.data import preprocess
from lumbarjax.errors import ConfigError
from lumbarjax.eval import xray_indices
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
    return np.asarray(transform["origin"]) + np.asarray(rc, np.float64) * np.asarray(transform["step"])


def source_to_crop(transform: Mapping, rc) -> np.ndarray:
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


__all__ = ["ENDPLATES", "crop_level", "crop_to_source", "endplate_landmarks", "film_view",
           "level_crops", "source_to_crop", "truth_landmarks", "view_to_source"]
