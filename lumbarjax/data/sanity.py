"""Plausibility checks on decoded images: finite values and physically possible pixel spacing.

A reader that returns an image has checked it here, so that bad data fail loudly instead of
travelling on (an all-NaN volume normalises to zeros and would be cached and trained on).
Each check raises the caller's error class (DicomError / NiftiError) naming the series or file,
with ``err.reason`` set to one of the exclusion reasons below; ``preprocess_cohort`` counts a
patient excluded for that reason.

Ranges (mm, inclusive) are the config's (``config.mri.plausible_spacing_mm`` /
``config.xray.plausible_spacing_mm`` in configs/default.py, see :func:`spacing_limits`) and can
be changed per call (``limits=``); a reader called without limits uses configs/default.py's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from lumbarjax.settings import defaults, setting

REASON_NON_FINITE = "non-finite image"
REASON_SPACING = "implausible spacing"

_LIMIT_KEYS = {"in_plane": "mri.plausible_spacing_mm.in_plane",
               "between_slices": "mri.plausible_spacing_mm.between_slices",
               "xray": "xray.plausible_spacing_mm"}


@functools.lru_cache(maxsize=1)
def _default_limits() -> tuple:
    return tuple((k, tuple(float(v) for v in setting(defaults(), key)))
                 for k, key in _LIMIT_KEYS.items())


def default_limits() -> dict:
    """``{"in_plane": (lo, hi), "between_slices": (lo, hi), "xray": (lo, hi)}`` in mm:
    configs/default.py's plausible spacing."""
    return dict(_default_limits())


def spacing_limits(config=None) -> dict:
    """The limits of ``config.mri.plausible_spacing_mm`` (``in_plane`` / ``between_slices``)
    and ``config.xray.plausible_spacing_mm`` ((lo, hi)), read with ``settings.setting``: a
    config without one is a ConfigError naming it. ``config=None`` is the explicit "use the
    defaults" call: :func:`default_limits` (configs/default.py's)."""
    if config is None:
        return default_limits()
    return {k: tuple(float(v) for v in setting(config, key)) for k, key in _LIMIT_KEYS.items()}


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
