"""Read projection X-rays and MR series from DICOM with their real geometry.

Conventions (docs/CONTRACTS.md):

- :class:`XRayImage.pixels` is (H, W) float32, display-ready: Modality LUT (RescaleSlope /
  RescaleIntercept or a Modality LUT Sequence), then VOI LUT (VOI LUT Sequence, or WindowCenter /
  WindowWidth), then MONOCHROME1 inverted so that higher = brighter. ``spacing`` is
  (row_mm, col_mm) from PixelSpacing, falling back to ImagerPixelSpacing.
- :class:`Volume.array` is (D, H, W) float32 after the Modality LUT (no windowing: MR values stay
  quantitative). ``affine @ [d, h, w, 1] = [x, y, z, 1]`` in patient LPS mm. Slices are sorted by
  ImagePositionPatient projected on the slice normal ``row_cosine x col_cosine``, never by file
  name or InstanceNumber. DICOM PixelSpacing is (row spacing, column spacing): h+1 moves
  PixelSpacing[0] mm along the column cosine (IOP[3:6]); w+1 moves PixelSpacing[1] mm along the
  row cosine (IOP[0:3]). The d column is the mean step between consecutive sorted
  ImagePositionPatient vectors (derived from the positions, not from SliceThickness), so a
  gantry tilt (sheared grid) is represented exactly.
- Slice spacing must be uniform: a series whose positions deviate from an evenly spaced line by
  more than ``SLICE_TOLERANCE`` (10 % of the mean step, at least 0.01 mm) raises
  :class:`DicomError` (most often a missing slice); silently resampling such a series would
  distort the anatomy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from lumbarjax.data import multiframe, sanity
from lumbarjax.errors import DicomError
from lumbarjax.schema import XRAY_MODALITIES  # dicom.XRAY_MODALITIES still resolves

SLICE_TOLERANCE = 0.1  # fraction of the mean slice step
_ORIENTATION_TOL = 1e-3
_DUPLICATE_TOL_MM = 1e-3
IMAGE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1."  # storage SOP classes (images and others)

# SOP classes that never hold an image (DICOMDIR, SR, presentation states, RT plans, ...).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT brachy treatment record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT treatment summary record
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT ion beams treatment record
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, ...
)


@dataclass
class XRayImage:
    """One projection radiograph.

    pixels: (H, W) float32, display-ready, higher = brighter.
    spacing: (row_mm, col_mm) — mm between rows, mm between columns.
    spacing_source: "PixelSpacing" | "ImagerPixelSpacing".
    """

    pixels: np.ndarray
    spacing: tuple[float, float]
    spacing_source: str
    modality: str
    path: str
    patient_id: str


@dataclass
class Volume:
    """A 3-D image. array (D, H, W) float32; spacing (3,) mm = column norms of affine[:3, :3];
    affine (4, 4): [d, h, w, 1] -> patient LPS mm; ``paths`` (D,) the file of each slice in
    sorted slice order and ``frames`` (D,) its 1-based frame number in that file (0 for a
    single-frame file; a multi-frame file's path repeats once per frame)."""

    array: np.ndarray
    spacing: np.ndarray
    affine: np.ndarray
    paths: list[str] = field(default_factory=list)
    patient_id: str = ""
    series_description: str = ""
    frames: list[int] = field(default_factory=list)

    def voxel_to_world(self, index) -> np.ndarray:
        """(…, 3) voxel indices (d, h, w) -> (…, 3) LPS mm."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]


# --------------------------------------------------------------------------- reading


def _looks_like_dicom(path: str) -> bool:
    """Cheap check on the first bytes: 'DICM' preamble, or a bare dataset starting at group
    0x0002/0x0008 (old files without preamble). Keeps forced parsing away from JPEGs/text."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] in (
        b"\x00\x00",
        b"\x01\x00",
        b"\x05\x00",
        b"\x08\x00",
        b"\x16\x00",
        b"\x18\x00",
        b"\x20\x00",
    )


def read_header(path) -> Dataset | None:
    """Header only (``stop_before_pixels``). None when the file is not DICOM at all.

    Raises DicomError when the file looks like DICOM but cannot be parsed (truncated header).
    """
    path = os.fspath(path)
    if not _looks_like_dicom(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as e:  # pydicom raises many types for broken files
        raise DicomError(f"{path}: unreadable DICOM header ({type(e).__name__}: {e})") from e
    if len(ds) == 0:
        if not getattr(ds, "file_meta", None):
            return None
        if _media_sop(ds).startswith(IMAGE_SOP_PREFIX) and not _is_non_image_sop(_media_sop(ds)):
            raise DicomError(f"{path}: file meta says {_media_sop(ds)} but no data elements "
                             "follow (truncated file?)")
    return ds


def _media_sop(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None) or {}
    return str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "") or "")


def _is_non_image_sop(sop: str) -> bool:
    return any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES)


def header_problem(ds: Dataset) -> str | None:
    """None for an image header; else "non-image" (SR, DICOMDIR, no Rows/Columns in a non-image
    SOP class) or "truncated" (an image-storage SOP class whose header lacks Rows/Columns)."""
    if is_image_header(ds):
        return None
    sop = _media_sop(ds)
    if sop.startswith(IMAGE_SOP_PREFIX) and not _is_non_image_sop(sop):
        return "truncated"
    return "non-image"


def is_image_header(ds: Dataset) -> bool:
    """True when the header describes an image: Rows/Columns present, not a non-image SOP."""
    if _is_non_image_sop(_media_sop(ds)):
        return False
    return "Rows" in ds and "Columns" in ds and bool(ds.Rows) and bool(ds.Columns)


def _read_full(path: str) -> Dataset:
    if not os.path.isfile(path):
        raise DicomError(f"{path}: file not found")
    if not _looks_like_dicom(path):
        raise DicomError(f"{path}: not a DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, Exception) as e:
        raise DicomError(f"{path}: unreadable DICOM file ({type(e).__name__}: {e})") from e
    if len(ds) == 0:
        raise DicomError(f"{path}: no data elements after the file meta (truncated file?)")
    return ds


def _check_image(ds: Dataset, path: str) -> None:
    """DicomError unless ``ds`` holds grayscale pixel data with Rows / Columns."""
    if "PixelData" not in ds or not is_image_header(ds):
        sop = _media_sop(ds)
        if sop.startswith(IMAGE_SOP_PREFIX) and not _is_non_image_sop(sop):
            raise DicomError(f"{path}: image SOP class {sop} but no pixel data / Rows / Columns "
                             "(truncated file?)")
        raise DicomError(f"{path}: not an image (no pixel data; SOP class {sop or 'missing'})")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(
            f"{path}: colour image ({ds.get('PhotometricInterpretation')}); expected grayscale"
        )
    photometric = _photometric(ds)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"{path}: PhotometricInterpretation {photometric} is not grayscale "
                         "(stored values are not intensities)")


def _photometric(ds: Dataset) -> str:
    """PhotometricInterpretation; MONOCHROME2 when absent or empty."""
    return str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip()


def _check_single_frame_image(ds: Dataset, path: str) -> None:
    """DicomError unless ``ds`` is a grayscale image of one frame (NumberOfFrames absent or 1)."""
    _check_image(ds, path)
    frames = multiframe.n_frames(ds)
    if frames > 1:
        raise DicomError(f"{path}: multi-frame image ({frames} frames) where one image is "
                         "expected")


def _decode(ds: Dataset, path: str) -> np.ndarray:
    """Stored pixel values (H, W); DicomError with the transfer syntax on any decode failure."""
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "unknown")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as e:
        name = getattr(ts, "name", ts)
        raise DicomError(
            f"{path}: cannot decode pixel data (transfer syntax {ts} {name}; truncated file or "
            f"missing decoder plugin): {type(e).__name__}: {e}"
        ) from e
    if arr.ndim != 2:
        raise DicomError(f"{path}: expected a 2-D image, decoded shape {arr.shape}")
    return arr


def _floats(value, n: int, what: str, path: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DicomError(f"{path}: {what} is not numeric ({value!r})") from e
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DicomError(f"{path}: {what} must have {n} finite values, got {value!r}")
    return out


def _check_rescale(ds: Dataset, path: str) -> None:
    """RescaleSlope / RescaleIntercept must be finite numbers when present (a "NaN" or text slope
    would make every pixel NaN): DicomError with reason "non-finite image" otherwise."""
    for key in ("RescaleSlope", "RescaleIntercept"):
        if key not in ds:
            continue
        raw = ds[key].value
        try:
            ok = raw in (None, "") or np.isfinite(float(raw))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            err = DicomError(f"{path}: {key} {raw!r} is not a finite number; the image would be "
                             "all NaN")
            err.reason = sanity.REASON_NON_FINITE
            raise err


def _spacing_2d(ds: Dataset, path: str) -> tuple[tuple[float, float], str]:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds and ds[key].value:
            sp = _floats(ds[key].value, 2, key, path)
            if np.any(sp <= 0):
                raise DicomError(f"{path}: {key} must be positive, got {list(sp)}")
            return (float(sp[0]), float(sp[1])), key
    raise DicomError(
        f"{path}: no pixel spacing (neither PixelSpacing nor ImagerPixelSpacing is present)"
    )


def _display_range(ds: Dataset) -> tuple[float, float]:
    """Range of the display pipeline output over every possible stored value."""
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    grid = np.arange(lo, hi + 1) if bits <= 16 else np.array([lo, hi])
    mapped = apply_voi_lut(apply_modality_lut(grid, ds), ds, index=0)
    return float(np.min(mapped)), float(np.max(mapped))


def read_xray(path, *, limits=None) -> XRayImage:
    """Read a CR/DX radiograph: display-ready (H, W) float32 pixels, higher = brighter.

    DicomError when the pixel spacing is outside ``limits["xray"]`` mm (default
    :data:`lumbarjax.data.sanity.XRAY_PIXEL_MM`) or any pixel is not finite.
    """
    path = os.fspath(path)
    ds = _read_full(path)
    _check_single_frame_image(ds, path)
    modality = str(ds.get("Modality", "") or "")
    if modality not in XRAY_MODALITIES:
        raise DicomError(
            f"{path}: modality {modality or '(missing)'!s} is not a projection X-ray "
            f"(expected one of {', '.join(XRAY_MODALITIES)})"
        )
    spacing, source = _spacing_2d(ds, path)
    sanity.check_xray_spacing(spacing, f"{path} ({source})", DicomError, limits)
    _check_rescale(ds, path)
    stored = _decode(ds, path)
    photometric = _photometric(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0)
            if photometric == "MONOCHROME1":
                lo, hi = _display_range(ds)
                pixels = (lo + hi) - pixels
    except DicomError:
        raise
    except Exception as e:
        raise DicomError(f"{path}: bad Modality/VOI LUT ({type(e).__name__}: {e})") from e
    pixels = np.asarray(pixels, dtype=np.float32)
    sanity.check_finite(pixels, path, DicomError)
    return XRayImage(
        pixels=pixels,
        spacing=spacing,
        spacing_source=source,
        modality=modality,
        path=path,
        patient_id=str(ds.get("PatientID", "") or ""),
    )


def read_pixels(path) -> np.ndarray:
    """Decode any single-frame grayscale DICOM image: (H, W) float32 after the Modality LUT.

    No modality check, no windowing, no geometry: the common decode step (any supported
    transfer syntax) that :func:`read_xray` and :func:`read_series` build on.
    """
    path = os.fspath(path)
    ds = _read_full(path)
    _check_single_frame_image(ds, path)
    _check_rescale(ds, path)
    stored = _decode(ds, path)
    try:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    except Exception as e:
        raise DicomError(f"{path}: bad Modality LUT ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------- series geometry


@dataclass(slots=True)
class SliceGeometry:
    """Header geometry of one slice (what sorting and the affine need)."""

    path: str
    rows: int
    cols: int
    iop: np.ndarray  # (6,) row cosine, column cosine
    ipp: np.ndarray  # (3,) mm
    pixel_spacing: np.ndarray  # (2,) (row spacing, column spacing) mm


def slice_geometry(ds: Dataset, path: str) -> SliceGeometry:
    """Geometry of one slice header; DicomError naming the file when IOP/IPP/spacing is missing."""
    missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
                           "Rows", "Columns") if k not in ds or ds[k].value in (None, "", [])]
    if missing:
        raise DicomError(f"{path}: missing {', '.join(missing)}; cannot place the slice in space")
    iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path)
    row, col = iop[:3], iop[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2
            and abs(row @ col) < 1e-2):
        raise DicomError(f"{path}: ImageOrientationPatient {list(iop)} is not orthonormal")
    ipp = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path)
    ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", path)
    if np.any(ps <= 0):
        raise DicomError(f"{path}: PixelSpacing must be positive, got {list(ps)}")
    return SliceGeometry(path, int(ds.Rows), int(ds.Columns), iop, ipp, ps)


@dataclass
class SeriesGeometry:
    """Sorted series geometry: order (indices into the input), affine (4, 4), shape (D, H, W)."""

    order: list[int]
    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def series_geometry(slices: Sequence[SliceGeometry], name: str, fallback_step=None) -> SeriesGeometry:
    """Sort slices along the normal and build the affine; DicomError for inconsistent series.

    ``name`` labels the series in messages. ``fallback_step`` (mm) is used for a single slice
    (SpacingBetweenSlices / SliceThickness); 1.0 when absent.
    """
    if not slices:
        raise DicomError(f"{name}: no slices")
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.cols) != (first.rows, first.cols):
            raise DicomError(
                f"{name}: mixed image sizes: {first.path} is {first.rows}x{first.cols} but "
                f"{s.path} is {s.rows}x{s.cols} (Rows x Columns)"
            )
        if np.max(np.abs(s.iop - first.iop)) > _ORIENTATION_TOL:
            raise DicomError(
                f"{name}: mixed orientations: {first.path} has ImageOrientationPatient "
                f"{np.round(first.iop, 4).tolist()} but {s.path} has {np.round(s.iop, 4).tolist()}"
                " (localizer or multi-plane series?)"
            )
        if np.max(np.abs(s.pixel_spacing - first.pixel_spacing)) > 1e-4:
            raise DicomError(
                f"{name}: mixed PixelSpacing: {first.path} {first.pixel_spacing.tolist()} vs "
                f"{s.path} {s.pixel_spacing.tolist()}"
            )
    row, col = first.iop[:3], first.iop[3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    pos = np.array([s.ipp @ normal for s in slices])
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    pos_sorted = pos[order]
    gaps = np.diff(pos_sorted)
    if gaps.size and np.min(gaps) < _DUPLICATE_TOL_MM:
        k = int(np.argmin(gaps))
        a, b = slices[order[k]].path, slices[order[k + 1]].path
        raise DicomError(
            f"{name}: duplicate slice position {pos_sorted[k]:.3f} mm along the normal in "
            f"{a} and {b} (multi-echo / repeated acquisition mixed in one series?)"
        )
    ipps = np.stack([slices[i].ipp for i in order])
    n = len(order)
    if n > 1:
        step_vec = (ipps[-1] - ipps[0]) / (n - 1)
        expected = ipps[0] + np.arange(n)[:, None] * step_vec
        err = np.linalg.norm(ipps - expected, axis=1)
        tol = max(SLICE_TOLERANCE * np.linalg.norm(step_vec), 0.01)
        if np.max(err) > tol:
            raise DicomError(
                f"{name}: non-uniform slice spacing: steps along the normal are "
                f"{np.round(gaps, 3).tolist()} mm (tolerance {tol:.3f} mm; missing slice?)"
            )
    else:
        step = float(fallback_step) if fallback_step else 1.0
        step_vec = normal * step
    affine = np.eye(4)
    affine[:3, 0] = step_vec
    affine[:3, 1] = col * first.pixel_spacing[0]
    affine[:3, 2] = row * first.pixel_spacing[1]
    affine[:3, 3] = ipps[0]
    return SeriesGeometry(order, affine, (n, first.rows, first.cols))


def _fallback_step(ds: Dataset) -> float | None:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(multiframe.frame_value(ds, 0, key) or 0)
        except (TypeError, ValueError):
            v = 0
        if v > 0:
            return v
    return None


@dataclass(slots=True)
class _Slice:
    """One slice of a series: a single-frame file (frame 0) or frame ``frame`` (1-based) of a
    multi-frame file."""

    path: str
    frame: int
    ds: Dataset
    geometry: SliceGeometry


def _slices_of(ds: Dataset, path: str) -> list[_Slice]:
    """The slices one file contributes: itself, or each frame of an Enhanced / Legacy Converted
    image (geometry from its functional groups). DicomError for a multi-frame file without
    functional groups or whose frames are several stacks / temporal positions."""
    _check_image(ds, path)
    n = multiframe.n_frames(ds)
    if not multiframe.has_functional_groups(ds):
        if n > 1:
            raise DicomError(f"{path}: multi-frame image ({n} frames) without functional groups: "
                             "no per-frame position to place the frames in space")
        return [_Slice(path, 0, ds, slice_geometry(ds, path))]
    problem = multiframe.dimension_problem([multiframe.frame_dimensions(ds, k) for k in range(n)])
    if problem:
        raise DicomError(f"{path}: frames 1-{n} are {problem}; not one volume (export the "
                         "stacks as separate series)")
    return [_Slice(path, k + 1, ds,
                   slice_geometry(multiframe.frame_plane(ds, k), f"{path} frame {k + 1}"))
            for k in range(n)]


def _slice_pixels(s: _Slice, decoded: dict[str, np.ndarray]) -> np.ndarray:
    """(H, W) float32 after the Modality LUT (the frame's Pixel Value Transformation)."""
    if s.frame:
        if s.path not in decoded:
            decoded[s.path] = multiframe.read_frames(s.ds, s.path)
        return decoded[s.path][s.frame - 1]
    _check_rescale(s.ds, s.path)
    stored = _decode(s.ds, s.path)
    try:
        return np.asarray(apply_modality_lut(stored, s.ds), dtype=np.float32)
    except Exception as e:
        raise DicomError(f"{s.path}: bad Modality LUT ({type(e).__name__}: {e})") from e


def read_series(paths: str | os.PathLike | Iterable, *, limits=None) -> Volume:
    """Read one DICOM series into a Volume (D, H, W) float32 after RescaleSlope/Intercept.

    ``paths``: the files of one series in any order (or a single file path): classic
    single-frame slices, or Enhanced / Legacy Converted Enhanced files whose frames are the
    slices (:mod:`lumbarjax.data.multiframe`). Slices are sorted along the slice normal.
    DicomError (naming the files) for unreadable or non-image files, multi-frame files without
    functional groups or with several stacks / temporal positions, files from several series,
    mixed sizes / orientations, missing ImageOrientationPatient / ImagePositionPatient, duplicate
    positions, non-uniform spacing, spacing outside ``limits`` (mm; default
    :func:`lumbarjax.data.sanity.default_limits`) and non-finite voxels (``err.reason`` says
    which, for the exclusion count).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise DicomError("read_series: empty list of files")
    name = f"series of {len(paths)} file(s) starting {paths[0]}"
    datasets = [_read_full(p) for p in paths]
    slices = [s for ds, p in zip(datasets, paths) for s in _slices_of(ds, p)]
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(uids) > 1:
        raise DicomError(f"{name}: files belong to {len(uids)} different series {uids}")
    name = f"series {uids[0] or '(no SeriesInstanceUID)'} ({len(paths)} files, first {paths[0]})"
    geom = series_geometry([s.geometry for s in slices], name, _fallback_step(datasets[0]))
    between = geom.spacing[0] if len(slices) > 1 else None  # one slice: no measured step
    sanity.check_volume_spacing([between, *geom.spacing[1:]], name, DicomError, limits)
    decoded: dict[str, np.ndarray] = {}
    array = np.stack([_slice_pixels(slices[i], decoded) for i in geom.order])
    sanity.check_finite(array, name, DicomError)
    first = slices[geom.order[0]].ds
    return Volume(
        array=array,
        spacing=geom.spacing,
        affine=geom.affine,
        paths=[slices[i].path for i in geom.order],
        patient_id=str(first.get("PatientID", "") or ""),
        series_description=str(first.get("SeriesDescription", "") or ""),
        frames=[slices[i].frame for i in geom.order],
    )


__all__ = [
    "DicomError",
    "SeriesGeometry",
    "SliceGeometry",
    "Volume",
    "XRayImage",
    "header_problem",
    "is_image_header",
    "read_header",
    "read_pixels",
    "read_series",
    "read_xray",
    "series_geometry",
    "slice_geometry",
]
