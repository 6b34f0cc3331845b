"""Enhanced (multi-frame) images: each frame's geometry, MR timing and pixels.

Enhanced MR Image Storage, Legacy Converted Enhanced MR Image Storage and other
functional-group images hold a whole series in one file: N frames of (Rows, Columns) pixels,
with the per-slice attributes of a classic series moved into *functional groups*. An
attribute's macro sits either in ``SharedFunctionalGroupsSequence[0]`` (the same for every
frame) or in ``PerFrameFunctionalGroupsSequence[k]`` (frame k, 0-based here, "frame k+1" in
DICOM and in every message):

- ``PlanePositionSequence[0].ImagePositionPatient`` (3,) mm, ``PlaneOrientationSequence[0].
  ImageOrientationPatient`` (6,), ``PixelMeasuresSequence[0].PixelSpacing`` (2,) mm (row, col);
- ``PixelValueTransformationSequence`` (RescaleSlope / RescaleIntercept) per frame;
- ``FrameContentSequence[0]``: StackID, InStackPositionNumber, TemporalPositionIndex;
- MR: ``MREchoSequence[0].EffectiveEchoTime`` ms, ``MRTimingAndRelatedParametersSequence[0].
  RepetitionTime`` ms; a Legacy Converted file keeps EchoTime / RepetitionTime in the
  "Unassigned Converted Attributes" sequences.

The pixel transforms are highdicom's (:meth:`highdicom.Image.get_frame`); this module only looks
the functional groups up. :mod:`lumbarjax.data.dicom` turns the frames into slices of a series.
"""

from __future__ import annotations

import warnings

import numpy as np
from pydicom.dataset import Dataset

from lumbarjax.errors import DicomError

GEOMETRY_KEYWORDS = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
_MACROS = {  # keyword -> functional group macros that may hold it
    "ImagePositionPatient": ("PlanePositionSequence",),
    "ImageOrientationPatient": ("PlaneOrientationSequence",),
    "PixelSpacing": ("PixelMeasuresSequence",),
    "SpacingBetweenSlices": ("PixelMeasuresSequence",),
    "SliceThickness": ("PixelMeasuresSequence",),
    "EffectiveEchoTime": ("MREchoSequence",),
    "EchoTime": ("UnassignedPerFrameConvertedAttributesSequence",
                 "UnassignedSharedConvertedAttributesSequence"),
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence",
                       "UnassignedPerFrameConvertedAttributesSequence",
                       "UnassignedSharedConvertedAttributesSequence"),
    "StackID": ("FrameContentSequence",),
    "InStackPositionNumber": ("FrameContentSequence",),
    "TemporalPositionIndex": ("FrameContentSequence",),
    "FrameAcquisitionNumber": ("FrameContentSequence",),
}


def has_functional_groups(ds: Dataset) -> bool:
    """True for an Enhanced / Legacy Converted image (per-frame or shared functional groups)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def n_frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent or not a number)."""
    try:
        with warnings.catch_warnings():  # pydicom warns on a malformed IS value
            warnings.simplefilter("ignore")
            return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def frame_value(ds: Dataset, k: int, keyword: str):
    """The value of ``keyword`` for frame ``k`` (0-based): the per-frame item's macro, else the
    shared item's, else the top-level attribute; None when absent everywhere."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and k < len(per_frame):
        groups.append(per_frame[k])
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    for group in groups:
        for macro in _MACROS.get(keyword, ()):
            items = group.get(macro, None)
            if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
                return items[0][keyword].value
    value = ds.get(keyword, None)
    return None if value in (None, "") else value


def frame_plane(ds: Dataset, k: int) -> Dataset:
    """Frame ``k``'s plane as a small classic-style header (ImageOrientationPatient,
    ImagePositionPatient, PixelSpacing, Rows, Columns; only those present), so the classic
    slice checks (:func:`lumbarjax.data.dicom.slice_geometry`) apply to it unchanged."""
    plane = Dataset()
    for keyword in GEOMETRY_KEYWORDS:
        value = frame_value(ds, k, keyword)
        if value is not None:
            setattr(plane, keyword, value)
    plane.Rows, plane.Columns = ds.get("Rows", 0), ds.get("Columns", 0)
    return plane


def frame_timing(ds: Dataset, k: int) -> tuple[float | None, float | None]:
    """(echo time ms, repetition time ms) of frame ``k``; None where absent or not a number."""
    def num(value):
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None
    echo = frame_value(ds, k, "EffectiveEchoTime")
    if echo is None:
        echo = frame_value(ds, k, "EchoTime")
    return num(echo), num(frame_value(ds, k, "RepetitionTime"))


def frame_dimensions(ds: Dataset, k: int) -> tuple[str, int]:
    """(StackID, TemporalPositionIndex) of frame ``k``: ("", 0) where absent."""
    stack = frame_value(ds, k, "StackID")
    temporal = frame_value(ds, k, "TemporalPositionIndex")
    try:
        temporal = int(temporal) if temporal is not None else 0
    except (TypeError, ValueError):
        temporal = 0
    return ("" if stack is None else str(stack).strip()), temporal


def dimension_problem(dims: list[tuple[str, int]]) -> str | None:
    """Why frames with these (StackID, TemporalPositionIndex) pairs are not one volume, or None:
    several stacks (e.g. several slabs or planes in one file) or several temporal positions
    (a dynamic series) are refused, never mixed into one volume."""
    stacks = sorted({s for s, _ in dims if s})
    temporal = sorted({t for _, t in dims if t})
    if len(stacks) > 1:
        return f"{len(stacks)} stacks (StackID {', '.join(stacks[:5])}) in one series"
    if len(temporal) > 1:
        return f"{len(temporal)} temporal positions (a dynamic series) in one series"
    return None


def frame_ranges(numbers) -> str:
    """1-based frame numbers as ranges: [1, 2, 3, 5] -> "1-3, 5"."""
    numbers = sorted(int(n) for n in numbers)
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(parts)


def read_frames(ds: Dataset, path: str) -> np.ndarray:
    """Every frame after its Modality LUT / Pixel Value Transformation: (N, H, W) float32.

    The transform (shared or per frame) is applied by highdicom in float64 and cast, as
    :func:`pydicom.pixels.apply_modality_lut` does for a classic slice. DicomError naming the
    file when highdicom cannot decode or transform the frames.
    """
    import highdicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = highdicom.Image.from_dataset(ds, copy=False)
            frames = [image.get_frame(k + 1, dtype=np.float64, apply_modality_transform=None,
                                      apply_real_world_transform=False,
                                      apply_voi_transform=False)
                      for k in range(n_frames(ds))]
    except Exception as e:  # highdicom/pydicom raise many types for odd files
        ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "unknown")
        raise DicomError(f"{path}: cannot decode the frames of this multi-frame image "
                         f"(transfer syntax {ts}): {type(e).__name__}: {e}") from e
    return np.stack(frames).astype(np.float32)


__all__ = [
    "dimension_problem",
    "frame_dimensions",
    "frame_plane",
    "frame_ranges",
    "frame_timing",
    "frame_value",
    "has_functional_groups",
    "n_frames",
    "read_frames",
]
