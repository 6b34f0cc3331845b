"""Real vendor / codec DICOM files shipped inside pydicom's wheel, and lumbarjax's verdict on each.

``ROOT`` is ``pydicom/data/test_files`` of the installed pydicom (no download: only files in the
wheel). ``ENTRIES`` lists every file below it, one ``Entry(name, verdict, skip)`` each,
``name`` relative to ``ROOT`` with "/" separators. ``verdict`` is one of

* ``Decodes(reader, note)`` — ``reader`` ("read_pixels" for any grayscale image, "read_xray" for
  CR/DX, "read_series" for an MR/CT slice with geometry) returns exactly pydicom's pixels: the
  Modality LUT of ``ds.pixel_array`` as float32 (read_xray: then the VOI LUT and, for
  MONOCHROME1, the inversion over the display range, as lumbarjax/data/dicom.py documents).
  Exact equality: lumbarjax decodes through pydicom, so no tolerance is needed anywhere;
* ``Refused(fragment, why)`` — ``read_pixels`` raises ``DicomError`` whose message contains
  ``fragment``; ``why`` says in words why; ``pydicom_decodes`` says whether pydicom itself gets
  pixels out of the file (checked), i.e. whether lumbarjax refuses something decodable;
* ``NotImage(what)`` — a DICOM header that is not an image (SR, RT plan, DICOMDIR ...);
* ``NotDicom(what)`` — not a DICOM Part 10 file at all (text, JSON, ICC profile, gzip ...).

``skip`` is what ``lumbarjax.data.index.scan_files`` does with the file alone: ``INDEXED``, or
the reason it is skipped under (default: "not DICOM" for NotDicom, "no pixel data / non-image
SOP" for NotImage, ``INDEXED`` otherwise).

``SERIES`` runs whole real series (folders of dicomdirtests/) through ``read_series``.
``corpus_listing()`` renders the table as text (``python tests/real_corpus.py`` prints it).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections import Counter

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from lumbarjax.data import dicom, index
from lumbarjax.errors import DicomError

ROOT = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
INDEXED = "indexed"


@dataclasses.dataclass(frozen=True)
class Decodes:
    reader: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Refused:
    fragment: str
    why: str
    pydicom_decodes: bool = False


@dataclasses.dataclass(frozen=True)
class NotImage:
    what: str


@dataclasses.dataclass(frozen=True)
class NotDicom:
    what: str


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    verdict: object
    skip: str = ""  # "" -> the default for the verdict (see the module docstring)

    @property
    def expected_skip(self) -> str:
        if self.skip:
            return self.skip
        if isinstance(self.verdict, NotDicom):
            return index.SKIP_NOT_DICOM
        if isinstance(self.verdict, NotImage):
            return index.SKIP_NON_IMAGE
        return INDEXED

    @property
    def path(self) -> str:
        return path(self.name)


def path(name: str) -> str:
    return os.path.join(ROOT, *name.split("/"))


# --------------------------------------------------------------------------- table helpers

NO_PID = index.SKIP_NO_PATIENT
UNREADABLE = index.SKIP_UNREADABLE
MULTI = "multi-frame image (15 frames)"
STUB = "but no pixel data / Rows / Columns (truncated file?)"


def _series(name, note=""):
    return Entry(name, Decodes("read_series", note or "single slice with geometry"))


def _colour(name, photometric, skip="", what="secondary capture"):
    return Entry(name, Refused(f"colour image ({photometric})",
                               f"colour {what} ({photometric}, 3 samples/pixel), not a grayscale "
                               "modality", pydicom_decodes=True), skip)


def _multi(name, what):
    return Entry(name, Refused(MULTI, what, pydicom_decodes=True))


def _stub(name, what):
    return Entry(name, Refused(STUB, f"header-only stub ({what}): image SOP class but no Rows, "
                                     "Columns or PixelData; pydicom has nothing to decode either"),
                 UNREADABLE)


DICOMDIR = "DICOMDIR (media storage directory, SOP 1.2.840.10008.1.3.10): an index of files"
JPEG_EXT_NOTE = ("JPEG Extended 12-bit (process 4): decoded by pylibjpeg + pylibjpeg-libjpeg; "
                 "Pillow cannot do 12-bit, GDCM is not needed")
SC_RGB = "SC_rgb_"

# TINY_ALPHA: 50 header-only CT files written by pydicom's DICOMDIR tests (IM000000 ... IM00001D).
TINY_ALPHA_IMAGES = (
    "IM000000 IM000001 IM000002 IM000003 IM000004 IM000005 IM000006 IM000007 IM000008 IM000009 "
    "IM00000A IM00000B IM00000C IM00000D IM00000E IM00000F IM00000G IM00000H IM00000I IM00000J "
    "IM00000K IM00000L IM00000M IM00000N IM00000O IM00000P IM00000Q IM00000R IM00000S IM00000T "
    "IM00000U IM00000V IM00000W IM00000X IM00000Y IM00000Z IM000010 IM000011 IM000012 IM000013 "
    "IM000014 IM000015 IM000016 IM000017 IM000018 IM000019 IM00001A IM00001B IM00001C IM00001D"
).split()

ENTRIES: list[Entry] = [
    # ---- grayscale images lumbarjax decodes (transfer syntaxes, byte orders, codecs)
    _series("693_J2KI.dcm", "CT, JPEG 2000: BitsStored 14 but a 16-bit J2K stream (pydicom #693)"),
    _series("CT_small.dcm", "CT, Explicit VR Little Endian, RescaleIntercept to HU"),
    _series("J2K_pixelrep_mismatch.dcm",
            "CT, JPEG 2000 Lossless: unsigned stream, PixelRepresentation 1, BitsStored 13"),
    Entry("JPEG2000.dcm", Decodes("read_pixels", "NM, JPEG 2000 (openjpeg); no patient geometry")),
    Entry("JPEGLSNearLossless_08.dcm",
          Decodes("read_pixels", "JPEG-LS near-lossless 8-bit (pyjpegls); header has no PatientID"),
          NO_PID),
    Entry("JPEGLSNearLossless_16.dcm",
          Decodes("read_pixels", "JPEG-LS near-lossless 16-bit (pyjpegls); header has no PatientID"),
          NO_PID),
    Entry("JPGExtended.dcm", Decodes("read_pixels", f"NM; {JPEG_EXT_NOTE}")),
    _series("MR_small.dcm", "MR, Explicit VR Little Endian"),
    _series("MR_small_RLE.dcm", "MR, RLE Lossless (pylibjpeg-rle)"),
    _series("MR_small_bigendian.dcm", "MR, Explicit VR Big Endian"),
    _series("MR_small_expb.dcm", "MR, Explicit VR Big Endian"),
    _series("MR_small_implicit.dcm", "MR, Implicit VR Little Endian"),
    _series("MR_small_jp2klossless.dcm", "MR, JPEG 2000 Lossless (openjpeg)"),
    _series("MR_small_jpeg_ls_lossless.dcm", "MR, JPEG-LS Lossless (pyjpegls)"),
    _series("MR_small_padded.dcm", "MR with trailing padding after the pixel data"),
    _series("examples_overlay.dcm", "MR with an overlay plane in group 6000 (not burned in)"),
    Entry("image_dfl.dcm", Decodes("read_pixels", "Deflated Explicit VR Little Endian (zlib); "
                                                  "header has no PatientID"), NO_PID),
    Entry("rtdose_1frame.dcm", Decodes("read_pixels", "RT Dose, one frame: a dose grid, decoded "
                                                      "like an image (DoseGridScaling not applied)")),
    Entry("rtdose_expb_1frame.dcm", Decodes("read_pixels", "RT Dose, one frame, big endian")),
    Entry("rtdose_rle_1frame.dcm", Decodes("read_pixels", "RT Dose, one frame, RLE")),
    # ---- decode failures
    Entry("JPEG-lossy.dcm", Refused(
        "cannot decode pixel data (transfer syntax 1.2.840.10008.1.2.4.51",
        "corrupt JPEG Extended 12-bit stream (invalid SOS parameters: libjpeg error -1038); "
        "JPGExtended.dcm is the fixed copy; only GDCM tolerates it")),
    Entry("JPEG2000-embedded-sequence-delimiter.dcm", Refused(
        "cannot decode pixel data (transfer syntax 1.2.840.10008.1.2.4.91",
        "corrupt JPEG 2000 stream: 4 bytes overwritten with a Sequence Delimiter (pydicom #1140)")),
    Entry("MR_truncated.dcm", Refused(
        "cannot decode pixel data (transfer syntax 1.2.840.10008.1.2.1 Explicit VR Little Endian; "
        "truncated file", "truncated file: 8130 of 8192 pixel bytes")),
    Entry("badVR.dcm", Refused(
        "invalid literal for int() with base 10: '1A'",
        "RT Dose whose NumberOfFrames is '1A' (invalid IS value): the frame count is unknown")),
    # ---- colour and multi-frame images
    _colour("ExplVR_BigEnd.dcm", "RGB", NO_PID, "ultrasound"),
    _colour("GDCMJ2K_TextGBR.dcm", "YBR_RCT", NO_PID),
    _colour("SC_jpeg_no_color_transform.dcm", "RGB", NO_PID, "slide tile"),
    _colour("SC_jpeg_no_color_transform_2.dcm", "RGB", NO_PID, "slide tile"),
    _colour(SC_RGB + "dcmtk_+eb+cr.dcm", "RGB"),
    _colour(SC_RGB + "dcmtk_+eb+cy+n1.dcm", "YBR_FULL"),
    _colour(SC_RGB + "dcmtk_+eb+cy+n2.dcm", "YBR_FULL"),
    _colour(SC_RGB + "dcmtk_+eb+cy+np.dcm", "YBR_FULL_422"),
    _colour(SC_RGB + "dcmtk_+eb+cy+s2.dcm", "YBR_FULL_422"),
    _colour(SC_RGB + "dcmtk_+eb+cy+s4.dcm", "YBR_FULL"),
    _colour(SC_RGB + "gdcm_KY.dcm", "RGB"),
    _colour(SC_RGB + "jls_lossy_line.dcm", "RGB", NO_PID),
    _colour(SC_RGB + "jls_lossy_sample.dcm", "RGB", NO_PID),
    _colour(SC_RGB + "jpeg.dcm", "RGB", NO_PID),
    _colour(SC_RGB + "jpeg_app14_dcmd.dcm", "RGB", NO_PID),
    _colour(SC_RGB + "jpeg_dcmd.dcm", "RGB", NO_PID),
    _colour(SC_RGB + "jpeg_dcmtk.dcm", "YBR_FULL"),
    _colour(SC_RGB + "jpeg_gdcm.dcm", "RGB"),
    _colour(SC_RGB + "jpeg_lossy_gdcm.dcm", "YBR_FULL"),
    _colour(SC_RGB + "rle.dcm", "RGB"),
    _colour(SC_RGB + "rle_16bit.dcm", "RGB"),
    _colour(SC_RGB + "rle_32bit.dcm", "RGB"),
    _colour(SC_RGB + "small_odd.dcm", "RGB"),
    _colour(SC_RGB + "small_odd_big_endian.dcm", "RGB"),
    _colour(SC_RGB + "small_odd_jpeg.dcm", "YBR_FULL"),
    _colour("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
    _colour("examples_jpeg2k.dcm", "YBR_RCT", what="ultrasound"),
    _colour("examples_rgb_color.dcm", "RGB", what="ultrasound"),
    # colour and multi-frame: the colour check comes first (the multi-frame check second)
    _colour(SC_RGB + "rle_2frame.dcm", "RGB", what="2-frame secondary capture"),
    _colour(SC_RGB + "rle_16bit_2frame.dcm", "RGB", what="2-frame secondary capture"),
    _colour(SC_RGB + "rle_32bit_2frame.dcm", "RGB", what="2-frame secondary capture"),
    _colour("examples_ybr_color.dcm", "YBR_FULL_422", what="30-frame ultrasound cine"),
    _multi("rtdose.dcm", "RT Dose: multi-frame (15) dose grid, not an image series"),
    _multi("rtdose_expb.dcm", "RT Dose: multi-frame (15) dose grid, not an image series"),
    _multi("rtdose_rle.dcm", "RT Dose: multi-frame (15) dose grid, not an image series"),
    Entry("examples_palette.dcm",
          Refused("PALETTE COLOR", "PALETTE COLOR ultrasound: stored values are indices into a "
                                   "colour LUT, not intensities", pydicom_decodes=True)),
    # ---- header-only stubs of image SOP classes
    _stub("UN_sequence.dcm", "CT SOP class, one private sequence with VR UN"),
    _stub("priv_SQ.dcm", "MR SOP class, one private undefined-length sequence"),
    _stub("no_meta_group_length.dcm", "RT Image SOP class, file meta without group length"),
    # ---- DICOM headers that are not images
    Entry("ExplVR_LitEndNoMeta.dcm",
          NotImage("RT Ion Plan header (SOP ...481.8), no preamble / file meta")),
    Entry("rtstruct.dcm", NotImage("RT Structure Set (SOP ...481.3): contours, no pixels")),
    Entry("empty_charset_LEI.dcm", NotImage("dataset fragment: no SOP class, no pixel data")),
    Entry("meta_missing_tsyntax.dcm",
          NotImage("file meta without Transfer Syntax UID; no SOP class, no pixel data")),
    Entry("nested_priv_SQ.dcm", NotImage("nested private sequences only; no SOP class")),
    Entry("liver_1frame.dcm", NotImage("Segmentation (SOP ...66.4): a 1-bit mask, not an image")),
    Entry("liver_expb_1frame.dcm", NotImage("Segmentation (SOP ...66.4), big endian")),
    Entry("reportsi.dcm", NotImage("Structured Report (SOP ...88.11)")),
    Entry("reportsi_with_empty_number_tags.dcm", NotImage("Structured Report (SOP ...88.11)")),
    Entry("test-SR.dcm", NotImage("Structured Report (SOP ...88.33)")),
    Entry("rtplan.dcm", NotImage("RT Plan (SOP ...481.5)")),
    Entry("rtplan_truncated.dcm", NotImage("RT Plan (SOP ...481.5), truncated")),
    Entry("waveform_ecg.dcm", NotImage("ECG waveform (SOP ...9.1.1)")),
    # ---- not DICOM at all
    Entry("README.txt", NotDicom("text: pydicom's description of these files")),
    Entry("crayons.icc", NotDicom("ICC colour profile")),
    Entry("rtplan.dump", NotDicom("text dump of rtplan.dcm")),
    Entry("rtstruct.dump", NotDicom("text dump of rtstruct.dcm")),
    Entry("test1.json", NotDicom("DICOM JSON model (text), not a Part 10 file")),
    Entry("test_PN.json", NotDicom("DICOM JSON model (text), not a Part 10 file")),
    Entry("zipMR.gz", NotDicom("gzip of MR_small.dcm: the indexer does not open archives")),
    Entry("no_meta.dcm", NotDicom(
        "broken copy of CT_small.dcm: a stray 0x20 byte before (0008,0005); pydicom force-reads "
        "a single garbage element (0820,0500) from it")),
    Entry("ExplVR_BigEndNoMeta.dcm", NotDicom(
        "RT Ion Plan header in Explicit VR Big Endian without preamble / file meta: the byte "
        "sniffer only knows little-endian starts (harmless: no pixel data)")),
    # ---- dicomdirtests/: a DICOMDIR and the 16x16 images it indexes
    Entry("dicomdirtests/README.txt", NotDicom("text: description of the DICOMDIR tests")),
    *[Entry(f"dicomdirtests/{n}", NotImage(DICOMDIR)) for n in (
        "DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-empty.dcm", "DICOMDIR-implicit",
        "DICOMDIR-nooffset", "DICOMDIR-nopatient", "DICOMDIR-reordered", "TINY_ALPHA/DICOMDIR")],
    Entry("dicomdirtests/TINY_ALPHA/README", NotDicom("text: how TINY_ALPHA was made")),
    *[_stub(f"dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/{n}",
            "CT SOP class, written for DICOMDIR tests") for n in TINY_ALPHA_IMAGES],
    *[Entry(f"dicomdirtests/77654033/{n}",
            Decodes("read_xray", "CR, MONOCHROME1, RescaleSlope 0.684, window 1600/2800, "
                                 "ImagerPixelSpacing")) for n in ("CR1/6154", "CR2/6247", "CR3/6278")],
    *[_series(f"dicomdirtests/{n}", "16x16 slice") for n in (
        "77654033/CT2/17106", "77654033/CT2/17136", "77654033/CT2/17166", "77654033/CT2/17196",
        "98892001/CT2N/6293", "98892001/CT2N/6924", "98892001/CT5N/2062", "98892001/CT5N/2392",
        "98892001/CT5N/2693", "98892001/CT5N/3023", "98892001/CT5N/3353",
        "98892003/MR1/15820", "98892003/MR1/4919", "98892003/MR1/5641", "98892003/MR2/15970",
        "98892003/MR2/4950", "98892003/MR2/4981", "98892003/MR2/5011", "98892003/MR2/6273",
        "98892003/MR2/6605", "98892003/MR2/6935", "98892003/MR700/4467", "98892003/MR700/4528",
        "98892003/MR700/4558", "98892003/MR700/4588", "98892003/MR700/4618",
        "98892003/MR700/4648", "98892003/MR700/4678")],
]
BY_NAME = {e.name: e for e in ENTRIES}


@dataclasses.dataclass(frozen=True)
class Series:
    folder: str  # below ROOT; every file in it is one series
    verdict: object  # Decodes("read_series") or Refused(fragment, why)


SERIES: list[Series] = [
    Series("dicomdirtests/98892001/CT5N",
           Decodes("read_series", "5 axial CT slices, file names in reverse position order")),
    Series("dicomdirtests/98892001/CT2N", Refused(
        "mixed orientations", "localizer pair: one sagittal and one coronal image")),
    Series("dicomdirtests/98892003/MR700", Refused(
        "mixed orientations", "radial MRA: 7 slices rotated about one axis")),
    Series("dicomdirtests/77654033/CT2", Refused(
        "non-uniform slice spacing", "head CT with 202.5 mm missing between the 1st and 2nd slice")),
]


# --------------------------------------------------------------------------- checks


def all_files() -> list[str]:
    """Every file below ROOT, relative, "/"-separated, sorted."""
    out = []
    for dirpath, _, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        out.extend(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}" for f in filenames)
    return sorted(out)


def _dataset(p: str, **kw) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(p, force=True, **kw)


def pydicom_pixels(p: str) -> np.ndarray:
    """pydicom's own decode of the stored values (raises whatever pydicom raises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dataset(p).pixel_array


def modality_reference(p: str) -> np.ndarray:
    """pydicom's Modality LUT output as float32: what read_pixels / read_series must return."""
    ds = _dataset(p)
    return np.asarray(apply_modality_lut(pydicom_pixels(p), ds), dtype=np.float32)


def xray_reference(p: str) -> np.ndarray:
    """The display pipeline of lumbarjax/data/dicom.py computed with pydicom: Modality LUT, VOI LUT
    (index 0), and for MONOCHROME1 ``lo + hi - x`` with [lo, hi] the output range over every
    possible stored value."""
    ds = _dataset(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = apply_voi_lut(apply_modality_lut(pydicom_pixels(p), ds), ds, index=0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            bits = int(ds.BitsStored)
            lo, hi = ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation
                      else (0, 2 ** bits - 1))
            grid = apply_voi_lut(apply_modality_lut(np.arange(lo, hi + 1), ds), ds, index=0)
            out = (float(grid.min()) + float(grid.max())) - out
    return np.asarray(out, dtype=np.float32)


def _read(reader: str, p: str):
    return dicom.read_series([p]) if reader == "read_series" else getattr(dicom, reader)(p)


def reader_problem(p: str, verdict) -> str | None:
    """None when the readers give ``verdict`` on file ``p``; else what happened instead."""
    if isinstance(verdict, Decodes):
        try:
            out = _read(verdict.reader, p)
        except Exception as e:  # noqa: BLE001 - reported as the mismatch
            return f"{verdict.reader} raised {type(e).__name__}: {e}"
        if verdict.reader == "read_xray":
            got, ref = out.pixels, xray_reference(p)
        elif verdict.reader == "read_series":
            ds = _dataset(p, stop_before_pixels=True)
            if out.array.shape[0] != 1:
                return f"read_series gave {out.array.shape[0]} slices for one file"
            if not np.array_equal(out.affine[:3, 3], np.asarray(ds.ImagePositionPatient, float)):
                return f"affine origin {out.affine[:3, 3]} != ImagePositionPatient"
            # rtol 1e-4: vendors round ImageOrientationPatient to a few decimals (the column
            # cosine of J2K_pixelrep_mismatch.dcm has norm 1.0000125) and the affine keeps it.
            if not np.allclose(out.spacing[1:], np.asarray(ds.PixelSpacing, float), rtol=1e-4):
                return f"in-plane spacing {out.spacing[1:]} != PixelSpacing {ds.PixelSpacing}"
            got, ref = out.array[0], modality_reference(p)
        else:
            got, ref = out, modality_reference(p)
        if got.dtype != np.float32 or got.shape != ref.shape or not np.array_equal(got, ref):
            diff = np.max(np.abs(got.astype(float) - ref)) if got.shape == ref.shape else "n/a"
            return (f"{verdict.reader}: {got.dtype} {got.shape} vs pydicom {ref.shape}, "
                    f"max |diff| {diff}")
        return None
    fragment = {Refused: lambda v: v.fragment, NotImage: lambda v: "not an image",
                NotDicom: lambda v: "not a DICOM file"}[type(verdict)](verdict)
    try:
        dicom.read_pixels(p)
    except DicomError as e:
        if fragment.lower() in str(e).lower():
            return None
        return f"DicomError without {fragment!r}: {e}"
    except Exception as e:  # noqa: BLE001 - a crash, not a verdict
        return f"crashed with {type(e).__name__}: {e}"
    return "read_pixels returned pixels"


def header_problem(p: str, verdict) -> str | None:
    """The header-level part of the verdict: read_header / header_problem agree with it."""
    try:
        ds = dicom.read_header(p)
    except DicomError as e:
        return None if isinstance(verdict, Refused) else f"read_header raised {e}"
    if isinstance(verdict, NotDicom):
        return None if ds is None else "read_header parsed a header"
    if ds is None:
        return "read_header says not DICOM"
    got = dicom.header_problem(ds)
    want = "non-image" if isinstance(verdict, NotImage) else (
        "truncated" if isinstance(verdict, Refused) and verdict.fragment.endswith(STUB) else None)
    return None if got == want else f"header_problem {got!r}, expected {want!r}"


def pydicom_problem(p: str, verdict) -> str | None:
    """For Refused: pydicom decodes the file exactly when ``pydicom_decodes`` says so."""
    if not isinstance(verdict, Refused):
        return None
    try:
        pydicom_pixels(p)
        decodes = True
    except Exception:  # noqa: BLE001 - any failure means pydicom cannot decode it
        decodes = False
    return None if decodes == verdict.pydicom_decodes else f"pydicom decodes: {decodes}"


def indexer_outcome(p: str, tmp: str) -> str:
    """What scan_files does with file ``p`` alone (copied into the empty folder ``tmp``)."""
    os.makedirs(tmp, exist_ok=True)
    shutil.copy(p, os.path.join(tmp, os.path.basename(p)))
    infos, skipped = index.scan_files(tmp)
    reasons = [r for r, n in skipped.items() for _ in range(n)]
    if len(infos) + len(reasons) != 1:
        return f"{len(infos)} indexed, skipped {dict(skipped)}"
    return INDEXED if infos else reasons[0]


def problems(p: str, verdict, skip: str, tmp: str) -> list[str]:
    """Every way the file departs from (verdict, skip); empty when it matches."""
    out = [reader_problem(p, verdict), header_problem(p, verdict), pydicom_problem(p, verdict)]
    got = indexer_outcome(p, tmp)
    out.append(None if got == skip else f"indexer: {got!r}, expected {skip!r}")
    return [x for x in out if x]


def expected_scan(entries=ENTRIES) -> tuple[set[str], Counter]:
    """(files scan_files(ROOT) indexes, skip counts) today, from the table."""
    skips = [e.expected_skip for e in entries]
    indexed = {e.name for e, s in zip(entries, skips) if s == INDEXED}
    return indexed, Counter(s for s in skips if s != INDEXED)


# --------------------------------------------------------------------------- listing


def _label(verdict) -> tuple[str, str]:
    if isinstance(verdict, Decodes):
        return f"decodes ({verdict.reader})", verdict.note
    if isinstance(verdict, Refused):
        return "refused", verdict.why
    if isinstance(verdict, NotImage):
        return "not an image", verdict.what
    return "not DICOM", verdict.what


def counts(entries=ENTRIES) -> Counter:
    """Entries per verdict kind."""
    return Counter(type(e.verdict).__name__ for e in entries)


def corpus_listing(entries=ENTRIES) -> str:
    """The table as text: file | transfer syntax | modality / SOP class | verdict | why."""
    rows = [("file", "transfer syntax", "modality / SOP class", "verdict", "why / note")]
    for e in entries:
        ts = sop = "-"
        if not isinstance(e.verdict, NotDicom):
            ds = _dataset(e.path, stop_before_pixels=True)
            meta = getattr(ds, "file_meta", None) or {}
            uid = meta.get("TransferSyntaxUID")
            ts = f"{uid} {uid.keyword or uid.name}" if uid else "(no file meta)"
            sop_uid = ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
            sop = " / ".join(x for x in (str(ds.get("Modality", "") or ""),
                                         sop_uid.name if sop_uid else "") if x) or "-"
        verdict, why = _label(e.verdict)
        rows.append((e.name, ts, sop, verdict, why))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + " | " + r[4] for r in rows]
    c = counts(entries)
    lines.append(f"{len(entries)} files: {c['Decodes']} decode, {c['Refused']} refused, "
                 f"{c['NotImage']} not images, {c['NotDicom']} not DICOM")
    return "\n".join(lines)


if __name__ == "__main__":
    print(corpus_listing())
