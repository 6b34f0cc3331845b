"""Plausibility checks on decoded images: finite values and physically possible pixel spacing.

A reader that returns an image has checked it here, so that bad data fail loudly instead of
travelling on (an all-NaN volume normalises to zeros and would be cached and trained on).
Each check raises the caller's error class (DicomError / NiftiError) naming the series or file,
with ``err.reason`` set to one of the exclusion reasons below; ``preprocess_cohort`` counts a
patient excluded for that reason.

Ranges (mm, inclusive) are module defaults and can be changed per call (``limits=``) or in the
config (``config.mri.plausible_spacing_mm`` / ``config.xray.plausible_spacing_mm``, see
:func:`spacing_limits`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

REASON_NON_FINITE = "non-finite image"
REASON_SPACING = "implausible spacing"

# (lowest, highest) plausible spacing in mm.
MRI_IN_PLANE_MM = (0.05, 10.0)
MRI_BETWEEN_SLICES_MM = (0.5, 20.0)
XRAY_PIXEL_MM = (0.02, 10.0)  # detector pixels are 0.05-0.2 mm; 10 mm is a thumbnail at best


def default_limits() -> dict:
    """``{"in_plane": (lo, hi), "between_slices": (lo, hi), "xray": (lo, hi)}`` in mm."""
    return {"in_plane": MRI_IN_PLANE_MM, "between_slices": MRI_BETWEEN_SLICES_MM,
            "xray": XRAY_PIXEL_MM}


def spacing_limits(config=None) -> dict:
    """Default limits updated from ``config.mri.plausible_spacing_mm`` (a mapping with
    ``in_plane`` / ``between_slices``) and ``config.xray.plausible_spacing_mm`` ((lo, hi))."""
    out = default_limits()
    if config is None:
        return out
    mri = _lookup(_lookup(config, "mri"), "plausible_spacing_mm")
    if mri is not None:
        for k in ("in_plane", "between_slices"):
            if _lookup(mri, k) is not None:
                out[k] = tuple(float(v) for v in _lookup(mri, k))
    xray = _lookup(_lookup(config, "xray"), "plausible_spacing_mm")
    if xray is not None:
        out["xray"] = tuple(float(v) for v in xray)
    return out


def _lookup(cfg, key):
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None) if key in cfg else None


def _fail(error_cls, message: str, reason: str) -> Exception:
    err = error_cls(message)
    err.reason = reason
    return err


def check_finite(array: np.ndarray, name: str, error_cls) -> None:
    """Raise ``error_cls`` (reason "non-finite image") when any value is NaN or infinite."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    n_bad = int(array.size - finite.sum())
    what = "every value" if n_bad == array.size else f"{n_bad} of {array.size} values"
    raise _fail(error_cls, f"{name}: {what} not finite (NaN/Inf; a RescaleSlope/Intercept or "
                f"scl_slope that is not a number?)", REASON_NON_FINITE)


def _outside(values, lo_hi) -> bool:
    lo, hi = lo_hi
    values = np.asarray(values, np.float64)
    return bool(np.any(values < lo) or np.any(values > hi))


def check_volume_spacing(spacing, name: str, error_cls, limits: Mapping | None = None) -> None:
    """``spacing`` = (between slices, row, col) mm of a (D, H, W) volume. Raises ``error_cls``
    (reason "implausible spacing") outside ``limits`` (default :func:`default_limits`). A volume
    of a single slice has no between-slice spacing to check: pass None as its first value."""
    lim = {**default_limits(), **dict(limits or {})}
    sd, sh, sw = spacing
    sh, sw = float(sh), float(sw)
    if _outside([sh, sw], lim["in_plane"]):
        raise _fail(error_cls, f"{name}: in-plane pixel spacing {sh:g} x {sw:g} mm is outside the "
                    f"plausible range {lim['in_plane'][0]:g}-{lim['in_plane'][1]:g} mm (wrong "
                    "PixelSpacing / NIfTI pixdim?)", REASON_SPACING)
    if sd is not None and _outside([float(sd)], lim["between_slices"]):
        raise _fail(error_cls, f"{name}: spacing between slices {sd:g} mm is outside the plausible "
                    f"range {lim['between_slices'][0]:g}-{lim['between_slices'][1]:g} mm",
                    REASON_SPACING)


def check_xray_spacing(spacing, name: str, error_cls, limits: Mapping | None = None) -> None:
    """``spacing`` = (row_mm, col_mm) of a radiograph; reason "implausible spacing" outside
    ``limits["xray"]``."""
    lim = {**default_limits(), **dict(limits or {})}
    if _outside(spacing, lim["xray"]):
        raise _fail(error_cls, f"{name}: pixel spacing {float(spacing[0]):g} x "
                    f"{float(spacing[1]):g} mm is outside the plausible range "
                    f"{lim['xray'][0]:g}-{lim['xray'][1]:g} mm for a radiograph", REASON_SPACING)
