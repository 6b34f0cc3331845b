"""Attribution overlays: PNG figures (matplotlib, Agg backend — no display) and NIfTI maps.

Colour convention: attributions are shown *signed* with a diverging map (``RdBu_r``: red =
pushes the output up, blue = pushes it down) centred on zero, with a symmetric range
``±vmax``, ``vmax`` = the 99.5th percentile of ``|attribution|`` over the whole map (so one
extreme voxel does not wash out the rest). The overlay is drawn semi-transparently over the
grey-scale image; voxels with ``|attribution| < 2% of vmax`` are left transparent so the anatomy
stays visible. Each figure has a colour bar in attribution units (output units, e.g. logit).

Titles: pass a ``patient_id`` (or another non-identifying string) only — never PHI.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from lumbarjax.errors import LumbarjaxError  # noqa: E402

__all__ = ["top_slices", "save_mri_overlay_png", "save_xray_overlay_png",
           "save_clinical_bar_png", "save_attribution_nifti"]

CMAP = "RdBu_r"
_TRANSPARENT_BELOW = 0.02


def _finite(name: str, a, ndim: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == ndim + 1 and a.shape[-1] == 1:  # accept a trailing channel of 1
        a = a[..., 0]
    if a.ndim != ndim:
        raise LumbarjaxError(f"{name}: expected {ndim} dims, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise LumbarjaxError(f"{name}: contains NaN or inf ({int((~np.isfinite(a)).sum())} values)")
    return a


def _vmax(attribution: np.ndarray) -> float:
    v = float(np.percentile(np.abs(attribution), 99.5))
    if v <= 0:
        v = float(np.abs(attribution).max())
    return v if v > 0 else 1.0


def _overlay(ax, image, attribution, vmax, aspect):
    ax.imshow(image, cmap="gray", aspect=aspect, interpolation="nearest")
    masked = np.ma.masked_where(np.abs(attribution) < _TRANSPARENT_BELOW * vmax, attribution)
    im = ax.imshow(masked, cmap=CMAP, norm=TwoSlopeNorm(0.0, -vmax, vmax), alpha=0.6,
                   aspect=aspect, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _ensure_dir(path) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


def top_slices(attribution, k: int = 4) -> list[int]:
    """Indices of the ``k`` slices (axis 0) with the largest summed ``|attribution|``, sorted."""
    a = np.abs(np.asarray(attribution, dtype=np.float64))
    per_slice = a.reshape(a.shape[0], -1).sum(axis=1)
    k = min(int(k), a.shape[0])
    order = np.argsort(-per_slice, kind="stable")[:k]
    return sorted(int(i) for i in order)


def save_mri_overlay_png(volume, attribution, path, *, slices: Sequence[int] | None = None,
                         n_slices: int = 4, spacing=None, title: str | None = None,
                         dpi: int = 100) -> str:
    """Grid of sagittal slices with the signed attribution overlaid.

    Args:
      volume: (D, H, W) image (``d`` = sagittal slice index, left–right); a trailing channel of
        1 is accepted.
      attribution: (D, H, W) IG attribution of the same shape.
      path: output ``.png``.
      slices: slice indices to show; default the ``n_slices`` slices with the largest summed
        ``|attribution|`` (in anatomical order).
      spacing: (sd, sh, sw) mm; the in-plane pixel aspect is ``sh / sw`` (square pixels if None).
      title: figure title — a patient_id, never PHI.

    Returns:
      ``path``.
    """
    vol = _finite("save_mri_overlay_png volume", volume, 3)
    att = _finite("save_mri_overlay_png attribution", attribution, 3)
    if vol.shape != att.shape:
        raise LumbarjaxError(
            f"save_mri_overlay_png: volume shape {vol.shape} != attribution shape {att.shape}")
    if slices is None:
        slices = top_slices(att, n_slices)
    slices = [int(s) for s in slices]
    bad = [s for s in slices if not 0 <= s < vol.shape[0]]
    if bad or not slices:
        raise LumbarjaxError(
            f"save_mri_overlay_png: slices {slices} out of range for {vol.shape[0]} slices")
    aspect = 1.0 if spacing is None else float(spacing[1]) / float(spacing[2])
    vmax = _vmax(att)
    n = len(slices)
    cols = min(n, 4)
    rows = -(-n // cols)
    h, w = vol.shape[1] * aspect, vol.shape[2]
    panel = 3.0
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(panel * cols * w / max(h, w) + 1.0,
                                      panel * rows * h / max(h, w) + 0.6))
    im = None
    for ax, s in zip(axes.flat, slices):
        im = _overlay(ax, vol[s], att[s], vmax, aspect)
        ax.set_title(f"slice {s}", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="attribution")
    if title:
        fig.suptitle(str(title), fontsize=10)
    path = _ensure_dir(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_xray_overlay_png(image, attribution, path, *, spacing=None, title: str | None = None,
                          dpi: int = 100) -> str:
    """X-ray (H, W) with the signed attribution (H, W) overlaid; ``spacing`` = (row_mm, col_mm)
    sets the pixel aspect. ``title``: a patient_id, never PHI. Returns ``path``."""
    img = _finite("save_xray_overlay_png image", image, 2)
    att = _finite("save_xray_overlay_png attribution", attribution, 2)
    if img.shape != att.shape:
        raise LumbarjaxError(
            f"save_xray_overlay_png: image shape {img.shape} != attribution shape {att.shape}")
    aspect = 1.0 if spacing is None else float(spacing[0]) / float(spacing[1])
    fig, ax = plt.subplots(figsize=(5.0, 5.0 * img.shape[0] * aspect / img.shape[1] + 0.3))
    im = _overlay(ax, img, att, _vmax(att), aspect)
    fig.colorbar(im, ax=ax, shrink=0.8, label="attribution")
    if title:
        ax.set_title(str(title), fontsize=10)
    path = _ensure_dir(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_clinical_bar_png(values, names: Sequence[str], path, top_k: int | None = None, *,
                          title: str | None = None, dpi: int = 100) -> str:
    """Horizontal bar chart of clinical-feature attributions, largest ``|attribution|`` on top.

    Bars are red (positive) / blue (negative), as in the image overlays.

    Args:
      values: (F,) attributions; names: F feature names; top_k: show only the ``top_k`` largest.
    """
    v = _finite("save_clinical_bar_png values", values, 1)
    names = [str(n) for n in names]
    if len(names) != v.shape[0]:
        raise LumbarjaxError(
            f"save_clinical_bar_png: {v.shape[0]} values but {len(names)} feature names")
    order = np.argsort(-np.abs(v), kind="stable")
    if top_k is not None:
        order = order[:int(top_k)]
    order = order[::-1]  # barh draws bottom-up: largest ends on top
    fig, ax = plt.subplots(figsize=(6.0, 0.3 * len(order) + 1.2))
    colors = ["#b2182b" if v[i] >= 0 else "#2166ac" for i in order]
    ax.barh(np.arange(len(order)), v[order], color=colors)
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("attribution")
    if title:
        ax.set_title(str(title), fontsize=10)
    fig.tight_layout()
    path = _ensure_dir(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_attribution_nifti(attribution, affine, path) -> str:
    """Write a (D, H, W) attribution map as NIfTI with the volume's affine.

    ``affine`` maps ``[d, h, w, 1]`` to patient LPS mm (``Volume.affine`` / the preprocessing
    cache's ``mri_affine``); :func:`lumbarjax.data.nifti.write_nifti` converts to NIfTI's RAS
    convention so the map overlays the MRI in any NIfTI viewer.
    """
    from lumbarjax.data.nifti import write_nifti

    att = _finite("save_attribution_nifti attribution", attribution, 3)
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise LumbarjaxError(f"save_attribution_nifti: affine must be (4, 4), got {aff.shape}")
    path = _ensure_dir(path)
    write_nifti(att, aff, path, description="lumbarjax integrated-gradients attribution")
    return path
