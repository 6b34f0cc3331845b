"""Write small, valid DICOM files with pydicom for tests (never commit the output).

Everything here writes under a directory the caller gives (pytest's ``tmp_path``).

- :func:`write_xray_dcm` — one CR/DX image (spacing, MONOCHROME1/2, rescale, window, view).
- :func:`write_mr_series` — an MR series from a ``(D, H, W)`` volume with real geometry
  (ImageOrientationPatient / ImagePositionPatient), shuffled file names and InstanceNumbers.
- :func:`write_non_image_dcm` — a DICOM file without pixel data (Basic Text SR, DICOMDIR-like).
- :func:`write_enhanced_mr` — one Legacy Converted Enhanced MR or Enhanced MR file made from a
  classic series by highdicom's legacy conversion (an independent, maintained writer).
- :func:`compress_dataset` — re-encode a dataset in any of the supported transfer syntaxes
  (RLE, JPEG-LS and JPEG 2000 through pydicom's encoders; JPEG baseline through Pillow; JPEG
  lossless process 14 through the small encoder :func:`encode_jpeg_lossless` in this file).

The fake PHI written (PatientName, PatientBirthDate) is there on purpose so that tests can check
that nothing downstream copies it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
ENHANCED_MR_SOP = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
LEGACY_ENHANCED_MR_SOP = "1.2.840.10008.5.1.4.1.1.4.4"  # Legacy Converted Enhanced MR
BASIC_TEXT_SR_SOP = "1.2.840.10008.5.1.4.1.1.88.11"
MEDIA_DIRECTORY_SOP = "1.2.840.10008.1.3.10"  # DICOMDIR

# Row cosine, column cosine (patient LPS) for each named orientation.
ORIENTATIONS = {
    # sagittal: rows run anterior -> posterior (+y), columns superior -> inferior (-z)
    "sag": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    # axial: rows run right -> left (+x), columns anterior -> posterior (+y)
    "ax": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    # coronal: rows run right -> left (+x), columns superior -> inferior (-z)
    "cor": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def random_name(rng: np.random.Generator | None = None) -> str:
    """A meaningless hospital-style file name without extension (``IM`` + hex or a UID)."""
    rng = rng or np.random.default_rng()
    if rng.random() < 0.5:
        return "IM%08X" % int(rng.integers(0, 2**31))
    return "1.2.826.0.1.%d.%d" % (int(rng.integers(0, 2**31)), int(rng.integers(0, 2**31)))


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base_dataset(sop_class: str, patient_id: str, modality: str) -> Dataset:
    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"  # fake PHI on purpose
    ds.PatientBirthDate = "19500101"
    ds.Modality = modality
    ds.StudyDate = "20240102"
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int | None):
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        bits_alloc, bits_stored = 8, bits_stored or 8
    else:
        if pixels.min() < 0:
            raise ValueError("test factory writes unsigned pixels only")
        pixels = pixels.astype(np.uint16)
        bits_alloc = 16
        bits_stored = bits_stored or (12 if pixels.max() < 4096 else 16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits_alloc == 8 else "OW"


def _save(ds: Dataset, path, transfer_syntax: str | None) -> str:
    if transfer_syntax is not None:
        compress_dataset(ds, transfer_syntax)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_xray_dcm(
    path,
    pixels,
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    pixel_spacing: Sequence[float] | None = (0.15, 0.15),
    imager_pixel_spacing: Sequence[float] | None = None,
    slope: float = 1,
    intercept: float = 0,
    window: tuple[float, float] | None = None,
    view: str | None = "LL",
    patient_id: str = "P001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "L-SPINE",
    bits_stored: int | None = None,
    transfer_syntax: str | None = None,
    **extra,
) -> str:
    """Write one projection X-ray. ``pixels`` (H, W) uint8/uint16 stored values.

    ``slope``/``intercept`` are written as RescaleSlope/Intercept only when not (1, 0);
    ``window`` = (center, width); ``extra`` sets any other attribute by keyword.
    Returns the path written.
    """
    sop = {"DX": DX_SOP, "CR": CR_SOP}.get(modality, DX_SOP)
    ds = _base_dataset(sop, patient_id, modality)
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = description
    ds.BodyPartExamined = "LSPINE"
    if view is not None:
        ds.ViewPosition = view
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [float(v) for v in imager_pixel_spacing]
    if slope != 1 or intercept != 0:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    _set_pixels(ds, pixels, photometric, bits_stored)
    for key, value in extra.items():
        setattr(ds, key, value)
    return _save(ds, path, transfer_syntax)


def write_mr_series(
    directory,
    volume,
    *,
    spacing: Sequence[float] = (4.0, 0.8, 0.8),
    orientation: str | tuple = "sag",
    origin: Sequence[float] = (-20.0, -100.0, 80.0),
    patient_id: str = "P001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "T2 SAG",
    series_number: int = 1,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    slope: float = 1,
    intercept: float = 0,
    shuffle_names: bool = True,
    transfer_syntax: str | None = None,
    seed: int = 0,
    **extra,
) -> list[str]:
    """Write volume (D, H, W) uint16 as an MR series; returns paths in true slice order.

    Slice ``d`` sits at ``origin + d * spacing[0] * normal`` with
    ``normal = row_cosine x col_cosine``; pixel (h, w) of a slice at
    ``IPP + h * spacing[1] * col_cosine + w * spacing[2] * row_cosine`` (DICOM PixelSpacing =
    (row spacing, column spacing) = (spacing[1], spacing[2])). InstanceNumbers are shuffled and,
    when ``shuffle_names``, file names are random, so neither predicts the slice order.
    ``orientation`` is "sag" | "ax" | "cor" or a (row_cosine, col_cosine) pair.
    """
    rng = np.random.default_rng(seed)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError("volume must be (D, H, W)")
    row, col = ORIENTATIONS[orientation] if isinstance(orientation, str) else orientation
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    depth = volume.shape[0]
    instance_numbers = rng.permutation(depth) + 1
    paths = []
    for d in range(depth):
        ds = _base_dataset(MR_SOP, patient_id, "MR")
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = int(instance_numbers[d])
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ipp = np.asarray(origin, float) + d * float(spacing[0]) * normal
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.SliceLocation = round(float(ipp @ normal), 6)
        if slope != 1 or intercept != 0:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept
        _set_pixels(ds, volume[d], "MONOCHROME2", None)
        for key, value in extra.items():
            setattr(ds, key, value)
        name = random_name(rng) if shuffle_names else "slice_%03d.dcm" % d
        paths.append(_save(ds, os.path.join(os.fspath(directory), name), transfer_syntax))
    return paths


def write_non_image_dcm(
    path, *, sop_class: str = BASIC_TEXT_SR_SOP, patient_id: str = "P001", modality: str = "SR"
) -> str:
    """A valid DICOM file without Rows/Columns/PixelData (Basic Text SR by default).

    ``sop_class=MEDIA_DIRECTORY_SOP`` gives a DICOMDIR-like file (only the media SOP class)."""
    if sop_class == MEDIA_DIRECTORY_SOP:
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, generate_uid())
        ds.FileSetID = "TESTSET"
        ds.FileSetConsistencyFlag = 0
    else:
        ds = _base_dataset(sop_class, patient_id, modality)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.ValueType = "CONTAINER"
    return _save(ds, path, None)


# --------------------------------------------------------------------------- compression


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, value: int, nbits: int):
        for i in range(nbits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0x00)  # byte stuffing
                self.acc, self.n = 0, 0

    def flush(self) -> bytes:
        if self.n:
            self.write((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1-bits
        return bytes(self.out)


def encode_jpeg_lossless(arr: np.ndarray, precision: int) -> bytes:
    """Encode a (H, W) unsigned image as JPEG lossless, process 14, predictor 1 (ITU T.81 H).

    One Huffman table with every difference category 0..16 coded on 5 bits: simple, valid, not
    small. The stream is valid for both 1.2.840.10008.1.2.4.70 (SV1) and ...4.57.
    """
    arr = np.asarray(arr).astype(np.int64)
    rows, cols = arr.shape
    bits = bytes([0, 0, 0, 0, 17] + [0] * 11)
    huffval = bytes(range(17))
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision])
    out += rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    out += b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + bytes([0x00]) + bits + huffval
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    writer = _BitWriter()
    for r in range(rows):
        for c in range(cols):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif r == 0:
                pred = arr[r, c - 1]
            elif c == 0:
                pred = arr[r - 1, c]
            else:
                pred = arr[r, c - 1]
            diff = int(arr[r, c] - pred) % 65536
            if diff >= 32768:
                diff -= 65536
            ssss = 0 if diff == 0 else abs(diff).bit_length()
            writer.write(ssss, 5)
            if 0 < ssss < 16:
                writer.write(diff if diff > 0 else diff - 1 + (1 << ssss), ssss)
    out += writer.flush() + b"\xff\xd9"
    return bytes(out)


def _encapsulate(ds: Dataset, frame: bytes, transfer_syntax: str):
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax


def compress_dataset(ds: Dataset, transfer_syntax: str) -> Dataset:
    """Compress ``ds`` (single frame, monochrome) in place into ``transfer_syntax``.

    RLE, JPEG-LS (lossless / near-lossless) and JPEG 2000 (lossless / lossy) use pydicom's
    encoders; JPEG baseline (8-bit only) uses Pillow; JPEG lossless 4.57/4.70 uses
    :func:`encode_jpeg_lossless`.
    """
    arr = ds.pixel_array
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, arr)
    elif transfer_syntax in (JPEGLSLossless, JPEGLSNearLossless):
        kwargs = {"jls_error": 2} if transfer_syntax == JPEGLSNearLossless else {}
        ds.compress(transfer_syntax, arr, encoding_plugin="pyjpegls", **kwargs)
    elif transfer_syntax in (JPEG2000Lossless, JPEG2000):
        kwargs = {"j2k_cr": [5]} if transfer_syntax == JPEG2000 else {}
        ds.compress(transfer_syntax, arr, encoding_plugin="pylibjpeg", **kwargs)
    elif transfer_syntax == JPEGBaseline8Bit:
        from PIL import Image

        if ds.BitsAllocated != 8:
            raise ValueError("JPEG baseline test files must be 8-bit")
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, "JPEG", quality=95)
        _encapsulate(ds, buf.getvalue(), transfer_syntax)
    elif transfer_syntax in (JPEGLossless, JPEGLosslessSV1):
        _encapsulate(ds, encode_jpeg_lossless(arr, int(ds.BitsStored)), transfer_syntax)
    else:
        raise ValueError(f"no test encoder for transfer syntax {transfer_syntax}")
    return ds


def write_enhanced_mr(classic_paths, path, *, kind: str = "legacy", drop_text: bool = False,
                      acquisition_contrast: str | None = None) -> str:
    """Convert a classic MR series (files in any order) into ONE multi-frame file at ``path``.

    ``kind="legacy"``: highdicom's :class:`highdicom.legacy.LegacyConvertedEnhancedMRImage`
    as it writes it (SOP class 1.2.840.10008.5.1.4.1.1.4.4; EchoTime / RepetitionTime in the
    Unassigned Converted Attributes sequences; per-frame Pixel Value Transformation).
    ``kind="enhanced"``: the same conversion re-labelled Enhanced MR Image Storage
    (1.2.840.10008.5.1.4.1.1.4.1) with the MR functional groups an Enhanced MR scanner writes:
    ``MREchoSequence.EffectiveEchoTime``, ``MRTimingAndRelatedParametersSequence.
    RepetitionTime``, top-level ``AcquisitionContrast`` and ``PulseSequenceName``; the
    Unassigned sequences removed. ``drop_text`` removes SeriesDescription / ProtocolName /
    SequenceName so only the Enhanced MR attributes tell the contrast. Returns ``path``.
    """
    import highdicom

    classic = [pydicom.dcmread(os.fspath(p)) for p in classic_paths]
    image = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        classic, series_instance_uid=classic[0].SeriesInstanceUID,
        series_number=int(classic[0].get("SeriesNumber", 1) or 1),
        sop_instance_uid=generate_uid(), instance_number=1)
    if kind == "enhanced":
        shared = image.SharedFunctionalGroupsSequence[0]
        unassigned = shared.get("UnassignedSharedConvertedAttributesSequence", [Dataset()])[0]
        echo, repetition = unassigned.get("EchoTime"), unassigned.get("RepetitionTime")
        for item in [shared, *image.PerFrameFunctionalGroupsSequence]:
            for key in ("UnassignedSharedConvertedAttributesSequence",
                        "UnassignedPerFrameConvertedAttributesSequence",
                        "ConversionSourceAttributesSequence"):
                if key in item:
                    del item[key]
        if echo is not None:
            shared.MREchoSequence = [Dataset()]
            shared.MREchoSequence[0].EffectiveEchoTime = float(echo)
        if repetition is not None:
            shared.MRTimingAndRelatedParametersSequence = [Dataset()]
            shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime = float(repetition)
        image.SOPClassUID = ENHANCED_MR_SOP
        image.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_SOP
        image.PulseSequenceName = "TSE"
        image.AcquisitionContrast = acquisition_contrast or "T2"
    elif kind != "legacy":
        raise ValueError(f"kind must be 'legacy' or 'enhanced', got {kind!r}")
    elif acquisition_contrast:
        image.AcquisitionContrast = acquisition_contrast
    if drop_text:
        for key in ("SeriesDescription", "ProtocolName", "SequenceName"):
            if key in image:
                del image[key]
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    image.save_as(os.fspath(path), enforce_file_format=True)
    return os.fspath(path)


def new_uid() -> str:
    """A fresh DICOM UID (for grouping series/studies in tests)."""
    return generate_uid()


__all__ = [
    "BASIC_TEXT_SR_SOP",
    "CR_SOP",
    "DX_SOP",
    "ENHANCED_MR_SOP",
    "LEGACY_ENHANCED_MR_SOP",
    "MEDIA_DIRECTORY_SOP",
    "MR_SOP",
    "ORIENTATIONS",
    "compress_dataset",
    "encode_jpeg_lossless",
    "new_uid",
    "random_name",
    "write_mr_series",
    "write_enhanced_mr",
    "write_non_image_dcm",
    "write_xray_dcm",
]
