"""Geometry-preserving preprocessing and an on-disk cache of model-ready arrays.

- ``resample_volume``: MRI volume -> fixed spacing (mm) and shape (centre crop/pad), with the
  affine of the new voxel grid (``affine @ [d, h, w, 1] = [x, y, z, 1]``, LPS mm).
- ``resize_xray`` / ``resize_xray_with_transform``: X-ray -> fixed shape, physical aspect kept,
  zero padded; the transform maps input pixel indices to output pixel indices.
- ``normalize_intensity``: robust percentile scaling to [0, 1].
- ``preprocess_cohort``: decode every patient once, cache ``.npy`` files keyed by the inputs'
  paths/sizes/mtimes + the preprocessing config + ``CODE_VERSION``.

Order per image: decode -> normalise (over the real image, no padding yet) -> resample /
resize (padding = 0 = the low percentile).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from lumbarjax import atomic
from lumbarjax.data import sanity
from lumbarjax.errors import CohortError, ConfigError, LumbarjaxError, NiftiError
from lumbarjax.settings import setting
from lumbarjax.workers import spawn_pool

__all__ = [
    "CODE_VERSION",
    "resample_volume",
    "resize_xray",
    "resize_xray_with_transform",
    "apply_xray_transform",
    "normalize_intensity",
    "preprocessing_config",
    "preprocess_cohort",
]

log = logging.getLogger(__name__)

#: Bump when the preprocessing code changes its output: invalidates every cache entry.
CODE_VERSION = "preprocess-2"
#: Below this many patients a serial run beats starting worker processes (~2-10 s of imports).
MIN_PATIENTS_FOR_WORKERS = 24
#: Exclusion reason of a patient whose image fails to decode (other reasons: lumbarjax.data.sanity).
REASON_DECODE = "image_decode_failed"


# -- geometry --------------------------------------------------------------------------

def _spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)


def _antialias_sigma(ratio: np.ndarray) -> np.ndarray:
    """Gaussian sigma (in input voxels) before downsampling by ``ratio`` (>1 = shrink)."""
    return np.where(ratio > 1.0, (ratio - 1.0) / 2.0, 0.0)


def resample_volume(volume, spacing: Sequence[float], shape: Sequence[int], *,
                    antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Resample a volume to ``spacing`` (mm) and centre crop/pad to ``shape``.

    Args:
      volume: object with ``.array`` (D, H, W) and ``.affine`` (4, 4) (a ``Volume``), or a
        tuple ``(array, affine)``.
      spacing: target (sd, sh, sw) in mm.
      shape: target (D', H', W').
      antialias: Gaussian pre-filter along axes that are downsampled.

    Returns:
      ``(array (D', H', W') float32, affine (4, 4))``: trilinear resampling (order 1), zeros
      outside the input; the new grid shares the input's centre, and
      ``affine_new @ [d', h', w', 1]`` is the patient (LPS, mm) position of voxel
      ``(d', h', w')``. ``norm(affine_new[:3, :3], axis=0) == spacing``.
    """
    if isinstance(volume, tuple):
        array, affine = volume
    else:
        array, affine = volume.array, volume.affine
    array = np.asarray(array, np.float32)
    affine = np.asarray(affine, np.float64)
    if array.ndim != 3:
        raise ConfigError(f"resample_volume: expected a (D, H, W) array, got {array.shape}")
    if affine.shape != (4, 4):
        raise ConfigError(f"resample_volume: expected a (4, 4) affine, got {affine.shape}")
    new_spacing = np.asarray(spacing, np.float64)
    new_shape = tuple(int(s) for s in shape)
    if new_spacing.shape != (3,) or np.any(new_spacing <= 0) or len(new_shape) != 3 \
            or min(new_shape) < 1:
        raise ConfigError(f"resample_volume: bad target spacing {list(spacing)} / shape "
                          f"{list(shape)} (need 3 positive values each)")
    old_spacing = _spacing_from_affine(affine)
    if np.any(old_spacing <= 0):
        raise ConfigError(f"resample_volume: degenerate affine (spacing {old_spacing})")
    ratio = new_spacing / old_spacing  # input voxels per output voxel
    c_old = (np.asarray(array.shape, np.float64) - 1.0) / 2.0
    c_new = (np.asarray(new_shape, np.float64) - 1.0) / 2.0
    origin = c_old - c_new * ratio  # input index of output voxel 0
    src = array
    if antialias and np.any(ratio > 1.0):
        src = ndimage.gaussian_filter(array, sigma=_antialias_sigma(ratio), mode="nearest")
    out = ndimage.affine_transform(src, ratio, offset=origin, output_shape=new_shape,
                                   order=1, mode="constant", cval=0.0, prefilter=False)
    step = np.eye(4)
    step[:3, :3] = np.diag(ratio)
    step[:3, 3] = origin
    return out.astype(np.float32, copy=False), affine @ step


def resize_xray_with_transform(image, shape: Sequence[int], *, spacing=None,
                               antialias: bool = True) -> tuple[np.ndarray, dict]:
    """Resize an X-ray to ``shape`` keeping the physical aspect ratio, zero padded, centred.

    Args:
      image: an ``XRayImage`` (``.pixels`` (H, W), ``.spacing`` (row_mm, col_mm)) or an
        (H, W) array.
      shape: output (H', W').
      spacing: (row_mm, col_mm) of the input; default the image's own, else square pixels.

    Returns:
      ``(array (H', W') float32, transform)`` where ``transform`` maps input pixel indices
      to output pixel indices: ``out = in * scale + offset`` per axis (row, col), with keys
      ``scale``, ``offset``, ``spacing_mm`` (output pixel size in mm, or ``None`` when the
      input spacing is unknown), ``input_shape``, ``output_shape``.
    """
    pixels = getattr(image, "pixels", image)
    if spacing is None:
        spacing = getattr(image, "spacing", None)
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim != 2:
        raise ConfigError(f"resize_xray: expected (H, W) pixels, got {pixels.shape}")
    out_shape = tuple(int(s) for s in shape)
    if len(out_shape) != 2 or min(out_shape) < 1:
        raise ConfigError(f"resize_xray: bad target shape {list(shape)}")
    in_shape = np.asarray(pixels.shape, np.float64)
    sp = np.ones(2) if spacing is None else np.asarray(spacing, np.float64)
    if sp.shape != (2,) or np.any(sp <= 0):
        raise ConfigError(f"resize_xray: bad spacing {spacing}")
    extent = in_shape * sp  # mm (or pixels)
    out_sp = float(np.max(extent / np.asarray(out_shape, np.float64)))  # fit, square pixels
    scale = sp / out_sp  # output pixels per input pixel
    # pixel-edge alignment: input [0, H] -> output [pad, pad + H*scale], centred
    pad = (np.asarray(out_shape, np.float64) - in_shape * scale) / 2.0
    offset = pad + 0.5 * scale - 0.5  # for pixel-centre indices
    ratio = 1.0 / scale
    src = pixels
    if antialias and np.any(ratio > 1.0):
        src = ndimage.gaussian_filter(pixels, sigma=_antialias_sigma(ratio), mode="nearest")
    # input index = (out - offset) / scale
    out = ndimage.affine_transform(src, ratio, offset=-offset * ratio, output_shape=out_shape,
                                   order=1, mode="constant", cval=0.0, prefilter=False)
    transform = {
        "scale": [float(s) for s in scale],
        "offset": [float(o) for o in offset],
        "spacing_mm": None if spacing is None else [out_sp, out_sp],
        "input_shape": [int(s) for s in pixels.shape],
        "output_shape": list(out_shape),
    }
    return out.astype(np.float32, copy=False), transform


def resize_xray(image, shape: Sequence[int], *, spacing=None) -> np.ndarray:
    """``resize_xray_with_transform`` without the transform: (H', W') float32."""
    return resize_xray_with_transform(image, shape, spacing=spacing)[0]


def apply_xray_transform(transform: Mapping, rows_cols) -> np.ndarray:
    """Map input pixel coordinates (..., 2) [row, col] to output pixel coordinates."""
    rc = np.asarray(rows_cols, np.float64)
    return rc * np.asarray(transform["scale"]) + np.asarray(transform["offset"])


_MAX_PERCENTILE_SAMPLES = 1 << 20


def normalize_intensity(x, lo: float = 1, hi: float = 99, *, mask=None) -> np.ndarray:
    """Robust scaling: percentile ``lo`` -> 0, ``hi`` -> 1, clipped to [0, 1].

    Percentiles are taken over ``mask`` (e.g. the non-padded region) when given, else over
    all finite values (a strided subsample of at most 2**20 values for large images). A
    constant (or empty) region gives zeros; non-finite values give 0. Returns float32.
    """
    x = np.asarray(x, np.float32)
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"normalize_intensity: need 0 <= lo < hi <= 100, got {lo}, {hi}")
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    if mask is None:
        vals = x.ravel() if all_finite else x[finite]
    else:
        vals = x[finite & np.asarray(mask, bool)]
    if vals.size == 0:
        return np.zeros_like(x)
    if vals.size > _MAX_PERCENTILE_SAMPLES:  # deterministic strided subsample: same result
        vals = vals[:: -(-vals.size // _MAX_PERCENTILE_SAMPLES)]  # to ~1e-3 quantile
    p_lo, p_hi = np.percentile(vals, [lo, hi])
    if not p_hi > p_lo:  # constant region: nothing to scale
        return np.zeros_like(x)
    out = x - np.float32(p_lo)
    out *= np.float32(1.0 / (p_hi - p_lo))
    np.clip(out, 0.0, 1.0, out=out)
    if not all_finite:
        out[~finite] = 0.0
    return out


# -- config ----------------------------------------------------------------------------

def preprocessing_config(config) -> dict:
    """The config subset the cache depends on (JSON-able).

    Keys read (configs/default.py): ``mri.spacing`` (3 mm), ``mri.shape`` (3), ``xray.shape``
    (2), ``mri.norm_percentiles``, ``xray.norm_percentiles``, ``xray.keep_physical_aspect`` and
    the plausible input spacing ``mri.plausible_spacing_mm`` / ``xray.plausible_spacing_mm``
    (see ``lumbarjax.data.sanity.spacing_limits``; under ``"limits"``, outside the cache key:
    they decide which inputs are refused, not what a cached array holds). Every one is read with
    ``settings.setting``: a missing key is a ConfigError naming it (start a config from
    ``lumbarjax.defaults.get_config()`` and change what differs).
    """
    try:
        sub = {
            "mri": {
                "spacing": [float(v) for v in setting(config, "mri.spacing")],
                "shape": [int(v) for v in setting(config, "mri.shape")],
                "norm_percentiles": [float(v) for v in setting(config, "mri.norm_percentiles")],
            },
            "xray": {
                "shape": [int(v) for v in setting(config, "xray.shape")],
                "norm_percentiles": [float(v) for v in setting(config, "xray.norm_percentiles")],
                "keep_physical_aspect": bool(setting(config, "xray.keep_physical_aspect")),
            },
        }
    except TypeError as e:
        raise ConfigError("preprocess config needs mri.spacing (3 floats, mm), mri.shape "
                          f"(3 ints) and xray.shape (2 ints): {e}") from e
    if len(sub["mri"]["spacing"]) != 3 or len(sub["mri"]["shape"]) != 3 \
            or len(sub["xray"]["shape"]) != 2:
        raise ConfigError(f"preprocess config: mri.spacing / mri.shape need 3 values and "
                          f"xray.shape 2, got {sub}")
    try:
        sub["limits"] = {k: [float(v) for v in lh] for k, lh in sanity.spacing_limits(config).items()}
    except (TypeError, ValueError) as e:
        raise ConfigError(f"plausible_spacing_mm must be (lowest, highest) mm pairs: {e}") from e
    if any(len(lh) != 2 or not 0 < lh[0] < lh[1] for lh in sub["limits"].values()):
        raise ConfigError(f"plausible_spacing_mm: need 0 < lowest < highest mm, got {sub['limits']}")
    return sub


# -- decoding hooks (monkeypatched in tests) -------------------------------------------

def _load_mri(paths: list[str], source: str, limits=None):
    """Decode an MRI series -> Volume (spacing checked against ``limits``, see sanity)."""
    if source == "nifti":
        if len(paths) != 1:
            raise CohortError(f"nifti MRI must be one file, got {len(paths)}: {paths[:3]}")
        from lumbarjax.data import nifti
        vol = nifti.read_nifti(paths[0])
        sanity.check_volume_spacing(vol.spacing, paths[0], NiftiError, limits)
        return vol
    if source == "dicom":
        from lumbarjax.data import dicom
        return dicom.read_series(paths, limits=limits)
    if source == "mha":
        if len(paths) != 1:
            raise CohortError(f"mha MRI must be one file, got {len(paths)}: {paths[:3]}")
        from lumbarjax.data.metaimage import read_metaimage
        vol = read_metaimage(paths[0])
        sanity.check_volume_spacing(vol.spacing, paths[0], CohortError, limits)
        return vol
    raise CohortError(f"unknown mri_source {source!r} (expected 'dicom', 'nifti' or 'mha')")


def _load_xray(paths: list[str], source: str, limits=None) -> tuple[np.ndarray, Any]:
    """Decode an X-ray -> (pixels (H, W), spacing (2,) mm or None)."""
    if len(paths) > 1:
        log.warning("X-ray: %d files given, using the first (sorted): %s", len(paths), paths[0])
    path = paths[0]
    if source == "dicom":
        from lumbarjax.data import dicom
        img = dicom.read_xray(path, limits=limits)
        return img.pixels, img.spacing
    if source == "nifti":
        from lumbarjax.data import nifti
        vol = nifti.read_nifti(path)
        arr = np.asarray(vol.array)
        sp = np.asarray(vol.spacing, np.float64)
        keep = [i for i, n in enumerate(arr.shape) if n > 1]
        if arr.ndim != 3 or len(keep) != 2:
            raise CohortError(f"{path}: X-ray NIfTI must be 2D (one singleton axis), "
                              f"got array shape {arr.shape}")
        sanity.check_xray_spacing(sp[keep], path, NiftiError, limits)
        return arr.reshape([arr.shape[i] for i in keep]), sp[keep]
    raise CohortError(f"unknown xray_source {source!r} (expected 'dicom' or 'nifti')")


# -- cache -----------------------------------------------------------------------------

def _split_paths(s) -> list[str]:
    if s is None or (isinstance(s, float) and np.isnan(s)):
        return []
    return sorted(p for p in str(s).split(";") if p)


def _cache_key(modality: str, source: str, paths: list[str], sub: dict) -> str:
    files = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise CohortError(f"{p}: cannot stat input file: {e}") from e
        files.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    payload = {"modality": modality, "source": source, "files": files,
               "config": sub[modality], "code": CODE_VERSION}
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _process_mri(paths, source, sub) -> tuple[np.ndarray, dict]:
    vol = _load_mri(paths, source, sub["limits"])
    sanity.check_finite(np.asarray(vol.array), f"MRI {paths[0]}", CohortError)
    lo, hi = sub["mri"]["norm_percentiles"]
    arr = normalize_intensity(vol.array, lo, hi)
    out, affine = resample_volume((arr, vol.affine), sub["mri"]["spacing"], sub["mri"]["shape"])
    return out, {"affine": np.asarray(affine).tolist(),
                 "input_shape": list(np.shape(vol.array)),
                 "input_spacing": _spacing_from_affine(vol.affine).tolist()}


def _process_xray(paths, source, sub) -> tuple[np.ndarray, dict]:
    pixels, spacing = _load_xray(paths, source, sub["limits"])
    sanity.check_finite(np.asarray(pixels), f"X-ray {paths[0]}", CohortError)
    lo, hi = sub["xray"]["norm_percentiles"]
    pixels = normalize_intensity(pixels, lo, hi)
    if not sub["xray"]["keep_physical_aspect"]:
        spacing = None
    out, transform = resize_xray_with_transform(pixels, sub["xray"]["shape"], spacing=spacing)
    return out, {"transform": transform}


_PROCESSORS = {"mri": _process_mri, "xray": _process_xray}


def _cached_or_build(modality, paths, source, sub, cache_dir) -> tuple[str, dict, bool]:
    """Returns (npy path, meta, decoded?)."""
    key = _cache_key(modality, source, paths, sub)
    sub_dir = os.path.join(cache_dir, modality)
    npy = os.path.join(sub_dir, f"{key}.npy")
    meta_path = os.path.join(sub_dir, f"{key}.json")
    if os.path.exists(meta_path) and os.path.exists(npy):
        with open(meta_path) as f:
            return npy, json.load(f), False
    arr, meta = _PROCESSORS[modality](paths, source, sub)
    os.makedirs(sub_dir, exist_ok=True)
    with atomic.atomic_path(npy) as tmp:
        np.save(tmp, np.ascontiguousarray(arr, np.float32))
    atomic.write_json(meta_path, meta, sort_keys=False, indent=None)  # meta last: its presence marks a complete entry
    return npy, meta, True


def _one_patient(row: Mapping, sub: dict, cache_dir: str) -> dict:
    pid = str(row["patient_id"])
    out = {"patient_id": pid, "mri_file": "", "xray_file": "", "mri_affine": "",
           "xray_transform": "", "errors": "", "reason": "", "n_decoded": 0}
    errors, reasons = [], []
    for modality in ("mri", "xray"):
        paths = _split_paths(row.get(f"{modality}_paths", ""))
        if not paths:
            continue
        source = str(row.get(f"{modality}_source", "dicom") or "dicom").lower()
        try:
            npy, meta, decoded = _cached_or_build(modality, paths, source, sub, cache_dir)
        except Exception as e:  # noqa: BLE001 - counted, reasoned exclusion per patient
            msg = f"{modality}: {type(e).__name__}: {e}"
            errors.append(msg)
            reasons.append(getattr(e, "reason", REASON_DECODE))
            log.warning("patient %s: %s preprocessing failed (%s); excluded", pid, modality, msg)
            continue
        out[f"{modality}_file"] = npy
        out["n_decoded"] += int(decoded)
        if modality == "mri":
            out["mri_affine"] = json.dumps(meta["affine"])
        else:
            out["xray_transform"] = json.dumps(meta["transform"])
    out["errors"] = "; ".join(errors)
    out["reason"] = reasons[0] if reasons else ""
    return out


def preprocess_cohort(records: pd.DataFrame, config, cache_dir: str, *, progress: bool = False,
                      num_workers: int = 0) -> pd.DataFrame:
    """Decode, normalise, resample and cache every patient's X-ray and MRI.

    Args:
      records: ``build_cohort`` records: ``patient_id, xray_paths, xray_source, mri_paths,
        mri_source`` (";"-joined absolute paths, "" when missing; source "dicom"|"nifti").
      config: ConfigDict / dict with every setting ``preprocessing_config`` reads (``mri.*``,
        ``xray.*``: ``lumbarjax.defaults.get_config()`` with what differs changed).
      cache_dir: folder for ``mri/<sha256>.npy`` and ``xray/<sha256>.npy`` (+ ``.json`` meta,
        written last, each file atomically: an entry is complete or absent after a crash).
        The key hashes the sorted input paths, their sizes and mtimes, the config subset and
        ``CODE_VERSION``: a second call with unchanged inputs decodes nothing, and a run
        killed mid-way resumes: the relaunch reads back the entries already complete and
        decodes the rest, with the outputs of an uninterrupted run (the killed run's worker
        processes exit with it).
      progress: show a tqdm bar.
      num_workers: >0 decodes patients in that many worker processes when there are at least
        ``MIN_PATIENTS_FOR_WORKERS`` of them (0 = serial, in this process). Patients stream through: at most one patient's images per worker are in
        memory, and the result does not depend on the number of workers.

    Returns:
      DataFrame aligned with ``records`` (same order, one row per patient): ``patient_id,
      mri_file, xray_file`` (cached ``.npy`` paths, "" when missing or failed), ``mri_affine``
      (JSON 4x4 of the resampled grid), ``xray_transform`` (JSON, see
      ``resize_xray_with_transform``), ``errors`` ("" when fine), ``excluded`` (bool: an image
      was refused). ``df.attrs["exclusions"]`` is a DataFrame ``patient_id, reason, detail`` for
      those patients (reason "image_decode_failed", "non-finite image" or "implausible
      spacing"); ``df.attrs["n_decoded"]`` counts images decoded now.
    """
    missing = [c for c in ("patient_id", "mri_paths", "xray_paths") if c not in records.columns]
    if missing:
        raise CohortError(f"preprocess_cohort: records lack columns {missing}")
    sub = preprocessing_config(config)
    os.makedirs(cache_dir, exist_ok=True)
    rows = records.to_dict("records")
    work = functools.partial(_one_patient, sub=sub, cache_dir=cache_dir)
    if num_workers > 0 and len(rows) >= MIN_PATIENTS_FOR_WORKERS:
        # spawn, not fork: the parent may hold JAX's threads, which fork would copy half-alive;
        # the workers exit when this process is killed (workers.spawn_pool)
        with spawn_pool(min(num_workers, len(rows))) as pool:
            results = list(_progress(pool.map(work, rows, chunksize=4), len(rows), progress))
    else:
        results = [work(r) for r in _progress(rows, len(rows), progress)]
    df = pd.DataFrame(results, columns=["patient_id", "mri_file", "xray_file", "mri_affine",
                                        "xray_transform", "errors", "reason", "n_decoded"])
    df["excluded"] = df["errors"] != ""
    n_decoded = int(df.pop("n_decoded").sum())
    reasons = df.pop("reason")
    excl = df.loc[df["excluded"], ["patient_id", "errors"]].rename(columns={"errors": "detail"})
    excl.insert(1, "reason", reasons[df["excluded"]].to_numpy())
    df.attrs["exclusions"] = excl.reset_index(drop=True)
    df.attrs["n_decoded"] = n_decoded
    if len(excl):
        log.warning("preprocess_cohort: %d of %d patients excluded (%s)", len(excl), len(df),
                    {k: int(v) for k, v in excl["reason"].value_counts().items()})
    return df


def _progress(it, total, enabled):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc="preprocess")


def load_affine(cache_row) -> np.ndarray:
    """The (4, 4) affine of a cached MRI (row of ``preprocess_cohort``'s table)."""
    s = cache_row["mri_affine"]
    if not s:
        raise LumbarjaxError(f"patient {cache_row['patient_id']}: no cached MRI affine")
    return np.asarray(json.loads(s), np.float64)
