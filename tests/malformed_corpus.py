"""A corpus of malformed inputs and the verdict lumbarjax must give for each.

Every case is ``Case(name, kind, build, verdict)``: ``build(tmp)`` writes the input under the
folder ``tmp`` (pytest's tmp_path; nothing is committed) and returns what the public API is
called with; ``kind`` says which API (see :func:`run_case`); ``verdict`` is one of

* ``Error(cls, fragment, reason=None)`` — the call raises ``cls`` whose message contains
  ``fragment`` (case-insensitive) and, when given, ``err.reason == reason``;
* ``Excluded(patient_id, reason)`` — a whole export runs through and ``patient_id`` is in the
  exclusions with ``reason`` (a counted exclusion, never a silent drop);
* ``Problem(column, fragment)`` — ``validate_clinical`` reports the value in ``problems``;
* ``Skipped(reason)`` — the indexer skips a file and counts it under ``reason``.

Nothing here may pass by accident: each builder writes exactly one defect into an otherwise
valid input (the ``valid_*`` helpers), and ``tests/test_malformed_corpus.py`` checks the
helpers' valid inputs are accepted.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom

from configs_for_tests import preprocess_config
from dicom_factory import (
    BASIC_TEXT_SR_SOP,
    new_uid,
    write_mr_series,
    write_non_image_dcm,
    write_xray_dcm,
)
from lumbarjax.data import clinical, cohort, dicom, index, nifti, preprocess
from lumbarjax.errors import ClinicalError, CohortError, DicomError, NiftiError

NON_FINITE = "non-finite image"
SPACING = "implausible spacing"
PREPROCESS = preprocess_config((4.0, 2.0, 2.0), (4, 8, 8), (16, 16))


@dataclasses.dataclass(frozen=True)
class Error:
    cls: type
    fragment: str
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Excluded:
    patient_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Problem:
    column: str
    fragment: str


@dataclasses.dataclass(frozen=True)
class Skipped:
    reason: str


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "xray" | "series" | "nifti" | "clinical" | "validate" | "export"
    build: Callable[[str], Any]
    verdict: Any


# --------------------------------------------------------------------------- valid inputs


def _pixels(h=16, w=16, seed=0) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 7 + seed * 13) % 4000 + 100


def valid_xray(path, **kw) -> str:
    return write_xray_dcm(path, _pixels().astype(np.uint16), **kw)


def valid_series(folder, depth=6, **kw) -> list[str]:
    vol = np.stack([_pixels(seed=d) for d in range(depth)]).astype(np.uint16)
    kw.setdefault("spacing", (4.0, 1.0, 1.0))
    return write_mr_series(folder, vol, **kw)


def valid_nifti(path, data=None, affine=None) -> str:
    data = np.arange(6 * 8 * 8, dtype=np.float32).reshape(8, 8, 6) if data is None else data
    affine = np.diag([1.0, 1.0, 4.0, 1.0]) if affine is None else affine
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


CLINICAL_HEADER = "patient_id,age,sex,bmi,zcq_success"


def valid_table(path, rows=(("P1", 61, "F", 27.5, 1), ("P2", 70, "M", 24.0, 0))) -> str:
    lines = [CLINICAL_HEADER] + [",".join(str(v) for v in r) for r in rows]
    _write(path, "\n".join(lines) + "\n")
    return path


def valid_patient(root, pid, *, xray=True, mri=True, xray_kw=None, mri_kw=None) -> None:
    """One patient of an export: a lateral DX and a 6-slice sagittal T2."""
    if xray:
        valid_xray(os.path.join(root, "export", pid, "x", "IM0001"), patient_id=pid,
                   **(xray_kw or {}))
    if mri:
        valid_series(os.path.join(root, "export", pid, "mr"), patient_id=pid, description="T2 SAG",
                     **(mri_kw or {}))


def valid_export(root, pids=("P1", "P2"), table_rows=None, **patient_kw) -> str:
    for pid in pids:
        valid_patient(root, pid, **patient_kw.get(pid, {}))
    rows = table_rows or [(pid, 60 + i, "F" if i % 2 else "M", 25.0, i % 2) for i, pid in enumerate(pids)]
    valid_table(os.path.join(root, "clinical.csv"), rows)
    return root


def run_export(root) -> dict:
    """What the workflow does with an export: index, read + validate the table, join, check
    the join kept someone, preprocess; returns the counted exclusions and skipped files."""
    manifest = index.index_cohort(root)
    table = clinical.read_clinical(os.path.join(root, "clinical.csv"))
    records, excl = cohort.build_cohort(manifest, table, root=root)
    cohort.check_not_empty(records, excl, table, manifest)
    cache = preprocess.preprocess_cohort(records, PREPROCESS, os.path.join(root, "..", "cache"))
    excl = pd.concat([excl, cache.attrs["exclusions"]], ignore_index=True)
    return {"exclusions": excl, "skipped": manifest.attrs["skipped"], "records": records,
            "cache": cache}


# --------------------------------------------------------------------------- helpers


def _write(path, text: str | bytes) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _patch(path, old: bytes, new: bytes) -> str:
    """Replace a unique byte string in a written file (a header value pydicom would refuse)."""
    data = open(path, "rb").read()
    assert data.count(old) == 1 and len(old) == len(new), (path, old)
    _write(path, data.replace(old, new))
    return path


def _edit(path, **values) -> str:
    ds = pydicom.dcmread(path)
    for k, v in values.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path)
    return path


def _x(tmp, **kw):
    return valid_xray(os.path.join(tmp, "IM0001"), **kw)


def _s(tmp, **kw):
    return valid_series(os.path.join(tmp, "mr"), **kw)


def _series_edit(tmp, index_: int, **values):
    paths = _s(tmp)
    _edit(paths[index_], **values)
    return paths


def _nii(tmp, data=None, affine=None, name="vol.nii.gz"):
    return valid_nifti(os.path.join(tmp, name), data, affine)


def _singular_nifti(tmp):
    """A header whose sform has a zero column (nibabel refuses to write one: patch the header)."""
    path = _nii(tmp, name="sing.nii")
    img = nib.load(path)
    hdr = img.header.copy()
    hdr["srow_z"] = [0.0, 0.0, 0.0, 0.0]
    hdr["qform_code"] = 0
    raw = bytearray(open(path, "rb").read())
    raw[:348] = hdr.binaryblock
    return _write(path, bytes(raw))


def _nan_data(frac=1.0):
    data = np.ones((8, 8, 6), np.float32)
    if frac >= 1.0:
        data[:] = np.nan
    else:
        data[2, 3, 1] = np.nan
    return data


def _table(tmp, text, name="clinical.csv"):
    return _write(os.path.join(tmp, name), text)


def _xlsx_dup_header(tmp):
    path = os.path.join(tmp, "clinical.xlsx")
    df = pd.DataFrame([["P1", 61, 50], ["P2", 70, 40]], columns=["patient_id", "age", "age2"])
    df.to_excel(path, index=False)
    import openpyxl
    wb = openpyxl.load_workbook(path)
    wb.active.cell(row=1, column=3, value="age")
    wb.save(path)
    return path


def _export_two_people(tmp):
    root = valid_export(tmp, ("P1", "P2"))
    # P2's X-ray belongs to another person filed under the same PatientID
    _edit(os.path.join(root, "export", "P2", "x", "IM0001"), PatientName="Other^Person",
          PatientBirthDate="19811111", PatientSex="M")
    return root


def _export_sex_differs(tmp):
    root = valid_export(tmp, ("P1", "P2"))
    for p in sorted(os.listdir(os.path.join(root, "export", "P1", "mr")))[:1]:
        _edit(os.path.join(root, "export", "P1", "mr", p), PatientSex="M")
    _edit(os.path.join(root, "export", "P1", "x", "IM0001"), PatientSex="F")
    return root


def _export_name_case_only(tmp):
    """Not a conflict: the same name in other case / with a trailing '^' (PACS differ)."""
    root = valid_export(tmp, ("P1", "P2"))
    _edit(os.path.join(root, "export", "P1", "x", "IM0001"), PatientName="DOE^JANE^")
    return root


def _export_mri_nan_slope(tmp):
    root = valid_export(tmp, ("P1", "P2"), P2={"mri_kw": {"slope": 7.25, "intercept": 0}})
    for p in os.listdir(os.path.join(root, "export", "P2", "mr")):
        _patch(os.path.join(root, "export", "P2", "mr", p), b"7.25", b"NaN ")
    return root


def _export_xray_text_slope(tmp):
    root = valid_export(tmp, ("P1", "P2"), P1={"xray_kw": {"slope": 7.25, "intercept": 0}})
    _patch(os.path.join(root, "export", "P1", "x", "IM0001"), b"7.25", b"abcd")
    return root


def _export_xray_100mm(tmp):
    return valid_export(tmp, ("P1", "P2"), P2={"xray_kw": {"pixel_spacing": (100.0, 100.0)}})


def _export_mri_100mm(tmp):
    return valid_export(tmp, ("P1", "P2"), P1={"mri_kw": {"spacing": (4.0, 100.0, 100.0)}})


def _export_mri_slices_50mm(tmp):
    return valid_export(tmp, ("P1", "P2"), P1={"mri_kw": {"spacing": (50.0, 1.0, 1.0)}})


def _export_nifti_all_nan(tmp):
    root = valid_export(tmp, ("P1", "P2"), P2={"mri": False})
    _nii(os.path.join(root, "nifti"), _nan_data(), name="P2.nii.gz")
    man = index.index_cohort(root)
    man = pd.concat([man, pd.DataFrame([{"patient_id": "P2", "role": "mri_t2_sag", "source": "nifti",
                                         "paths": "nifti/P2.nii.gz", "n_files": 1}])],
                    ignore_index=True)
    index.write_manifest(man, os.path.join(root, "manifest.csv"))
    return root


def _run_export_with_manifest(root):
    manifest = index.read_manifest(os.path.join(root, "manifest.csv"), root=root)
    table = clinical.read_clinical(os.path.join(root, "clinical.csv"))
    records, excl = cohort.build_cohort(manifest, table, root=root)
    cache = preprocess.preprocess_cohort(records, PREPROCESS, os.path.join(root, "..", "cache"))
    return {"exclusions": pd.concat([excl, cache.attrs["exclusions"]], ignore_index=True),
            "skipped": {}, "records": records, "cache": cache}


def _export_decimal_commas(tmp):
    root = valid_export(tmp, ("P1", "P2"))
    _write(os.path.join(root, "clinical.csv"),
           CLINICAL_HEADER + "\nP1,61,F,27,5,1\nP2,70,M,24,0,0\n")
    return root


def _export_ids_do_not_match(tmp):
    return valid_export(tmp, ("P1", "P2"), table_rows=[("0001", 61, "F", 25.0, 1),
                                                       ("0002", 70, "M", 25.0, 0)])


def _export_only_junk(tmp):
    _write(os.path.join(tmp, "export", "readme.txt"), "exported by PACS\n")
    write_non_image_dcm(os.path.join(tmp, "export", "sr"), sop_class=BASIC_TEXT_SR_SOP)
    valid_table(os.path.join(tmp, "clinical.csv"))
    return tmp


def _export_truncated_file(tmp):
    root = valid_export(tmp, ("P1", "P2"))
    full = valid_xray(os.path.join(tmp, "tmp_full"), patient_id="P3")
    _write(os.path.join(root, "export", "IM_trunc"), open(full, "rb").read()[:250])
    os.remove(full)
    return root


def _export_missing_row(tmp):
    root = valid_export(tmp, ("P1", "P2", "P3"))
    valid_table(os.path.join(root, "clinical.csv"))  # P3 has images but no row
    return root


def _export_no_images(tmp):
    root = valid_export(tmp, ("P1",))
    valid_table(os.path.join(root, "clinical.csv"))  # P2 has a row but no images
    return root


def _export_conflicting_rows(tmp):
    return valid_export(tmp, ("P1", "P2"), table_rows=[("P1", 61, "F", 25.0, 1),
                                                       ("P2", 70, "M", 25.0, 0),
                                                       ("P2", 71, "M", 25.0, 1)])


def _export_no_label(tmp):
    return valid_export(tmp, ("P1", "P2"), table_rows=[("P1", 61, "F", 25.0, 1),
                                                       ("P2", 70, "M", 25.0, "")])


def _export_truncated_pixels(tmp):
    root = valid_export(tmp, ("P1", "P2"))
    p = os.path.join(root, "export", "P1", "x", "IM0001")
    data = open(p, "rb").read()
    _write(p, data[:-300])
    return root


# --------------------------------------------------------------------------- the corpus


def _raw_mr(tmp, **values):
    paths = _s(tmp)
    for p in paths:
        _edit(p, **values)
    return paths


def _two_series(tmp):
    a = valid_series(os.path.join(tmp, "a"), depth=3)
    b = valid_series(os.path.join(tmp, "b"), depth=3, origin=(0.0, -100.0, 80.0))
    return a + b


def _missing_slice(tmp):
    paths = _s(tmp, depth=7)
    os.remove(paths[3])
    return paths[:3] + paths[4:]


def _duplicate_position(tmp):
    paths = _s(tmp)
    ds = pydicom.dcmread(paths[1])
    _edit(paths[2], ImagePositionPatient=list(ds.ImagePositionPatient))
    return paths


def _mixed_sizes(tmp):
    paths = _s(tmp)
    ds = pydicom.dcmread(paths[0])
    ds.Rows, ds.Columns = 8, 8
    ds.PixelData = (np.zeros((8, 8), np.uint16) + 100).tobytes()
    ds.save_as(paths[0])
    return paths


CASES: list[Case] = [
    # ---- DICOM radiographs (dicom.read_xray)
    Case("xray_not_dicom", "xray", lambda t: _write(os.path.join(t, "IM1"), "not an image\n"),
         Error(DicomError, "not a DICOM file")),
    Case("xray_file_missing", "xray", lambda t: os.path.join(t, "nothing_here"),
         Error(DicomError, "file not found")),
    Case("xray_truncated_header", "xray",
         lambda t: _write(os.path.join(t, "IM1"), open(_x(t), "rb").read()[:200]),
         Error(DicomError, "IM1")),
    Case("xray_truncated_pixels", "xray",
         lambda t: _write(os.path.join(t, "IM1"), open(_x(t), "rb").read()[:-300]),
         Error(DicomError, "cannot decode pixel data")),
    Case("xray_wrong_modality", "xray", lambda t: _edit(_x(t), Modality="MR"),
         Error(DicomError, "is not a projection X-ray")),
    Case("xray_no_spacing", "xray", lambda t: _x(t, pixel_spacing=None),
         Error(DicomError, "no pixel spacing")),
    Case("xray_spacing_100mm", "xray", lambda t: _x(t, pixel_spacing=(100.0, 100.0)),
         Error(DicomError, "outside the plausible range", SPACING)),
    Case("xray_spacing_0.001mm", "xray", lambda t: _x(t, imager_pixel_spacing=(0.001, 0.001),
                                                       pixel_spacing=None),
         Error(DicomError, "outside the plausible range", SPACING)),
    Case("xray_spacing_negative", "xray", lambda t: _x(t, pixel_spacing=(-0.1, 0.1)),
         Error(DicomError, "must be positive")),
    Case("xray_rescale_slope_nan", "xray",
         lambda t: _patch(_x(t, slope=7.25, intercept=0), b"7.25", b"NaN "),
         Error(DicomError, "not a finite number", NON_FINITE)),
    Case("xray_rescale_slope_text", "xray",
         lambda t: _patch(_x(t, slope=7.25, intercept=0), b"7.25", b"abcd"),
         Error(DicomError, "RescaleSlope", NON_FINITE)),
    Case("xray_rescale_intercept_inf", "xray",
         lambda t: _patch(_x(t, slope=2, intercept=7.25), b"7.25", b"inf "),
         Error(DicomError, "RescaleIntercept", NON_FINITE)),
    Case("xray_colour", "xray",
         lambda t: _edit(_x(t), SamplesPerPixel=3, PhotometricInterpretation="RGB"),
         Error(DicomError, "colour image")),
    Case("xray_multiframe", "xray", lambda t: _edit(_x(t), NumberOfFrames=4),
         Error(DicomError, "multi-frame")),
    Case("xray_structured_report", "xray",
         lambda t: write_non_image_dcm(os.path.join(t, "SR1")),
         Error(DicomError, "not an image")),
    Case("xray_palette_colour", "xray",
         lambda t: _edit(_x(t), PhotometricInterpretation="PALETTE COLOR"),
         Error(DicomError, "IM0001")),
    # ---- DICOM MR series (dicom.read_series)
    Case("series_empty_list", "series", lambda t: [], Error(DicomError, "empty list")),
    Case("series_missing_slice", "series", _missing_slice, Error(DicomError, "non-uniform slice spacing")),
    Case("series_duplicate_position", "series", _duplicate_position,
         Error(DicomError, "duplicate slice position")),
    Case("series_mixed_sizes", "series", _mixed_sizes, Error(DicomError, "mixed image sizes")),
    Case("series_mixed_orientation", "series",
         lambda t: _series_edit(t, 2, ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
         Error(DicomError, "mixed orientations")),
    Case("series_no_orientation", "series",
         lambda t: _series_edit(t, 0, ImageOrientationPatient=None),
         Error(DicomError, "missing ImageOrientationPatient")),
    Case("series_orientation_not_orthonormal", "series",
         lambda t: _raw_mr(t, ImageOrientationPatient=[0, 1, 0, 0, 1, 0]),
         Error(DicomError, "not orthonormal")),
    Case("series_two_series_mixed", "series", _two_series, Error(DicomError, "different series")),
    Case("series_pixel_spacing_100mm", "series", lambda t: _s(t, spacing=(4.0, 100.0, 100.0)),
         Error(DicomError, "outside the plausible range", SPACING)),
    Case("series_pixel_spacing_0.01mm", "series", lambda t: _s(t, spacing=(4.0, 0.01, 0.01)),
         Error(DicomError, "in-plane pixel spacing", SPACING)),
    Case("series_slices_50mm_apart", "series", lambda t: _s(t, spacing=(50.0, 1.0, 1.0)),
         Error(DicomError, "spacing between slices 50", SPACING)),
    Case("series_slices_0.1mm_apart", "series", lambda t: _s(t, spacing=(0.1, 1.0, 1.0)),
         Error(DicomError, "spacing between slices 0.1", SPACING)),
    Case("series_rescale_slope_nan", "series",
         lambda t: [_patch(p, b"7.25", b"NaN ") for p in _s(t, slope=7.25, intercept=0)],
         Error(DicomError, "RescaleSlope", NON_FINITE)),
    Case("series_one_slice_slope_text", "series",
         lambda t: [_patch(p, b"7.25", b"x.yz") if i == 3 else p
                    for i, p in enumerate(_s(t, slope=7.25, intercept=0))],
         Error(DicomError, "not a finite number", NON_FINITE)),
    Case("series_slice_not_dicom", "series",
         lambda t: _s(t)[:-1] + [_write(os.path.join(t, "notes.txt"), "hello\n")],
         Error(DicomError, "not a DICOM file")),
    # ---- NIfTI (nifti.read_nifti)
    Case("nifti_all_nan", "nifti", lambda t: _nii(t, _nan_data()),
         Error(NiftiError, "every value not finite", NON_FINITE)),
    Case("nifti_one_nan_voxel", "nifti", lambda t: _nii(t, _nan_data(0.01)),
         Error(NiftiError, "1 of 384 values not finite", NON_FINITE)),
    Case("nifti_infinite", "nifti", lambda t: _nii(t, np.full((8, 8, 6), np.inf, np.float32)),
         Error(NiftiError, "not finite", NON_FINITE)),
    Case("nifti_not_nifti", "nifti", lambda t: _write(os.path.join(t, "x.nii"), b"\0" * 400),
         Error(NiftiError, "not a readable NIfTI")),
    Case("nifti_truncated_gz", "nifti",
         lambda t: _write(os.path.join(t, "cut.nii.gz"), open(_nii(t), "rb").read()[:120]),
         Error(NiftiError, "cut.nii.gz")),
    Case("nifti_gz_of_garbage", "nifti",
         lambda t: _write(os.path.join(t, "g.nii.gz"), gzip.compress(b"garbage" * 50)),
         Error(NiftiError, "g.nii.gz")),
    Case("nifti_4d", "nifti", lambda t: _nii(t, np.zeros((8, 8, 6, 3), np.float32)),
         Error(NiftiError, "4-D image")),
    Case("nifti_2d", "nifti", lambda t: _nii(t, np.zeros((8, 8), np.float32)),
         Error(NiftiError, "2-D image")),
    Case("nifti_singular_affine", "nifti", _singular_nifti,
         Error(NiftiError, "singular")),
    Case("nifti_missing", "nifti", lambda t: os.path.join(t, "gone.nii.gz"),
         Error(NiftiError, "file not found")),
    # ---- clinical tables (clinical.read_clinical)
    Case("table_decimal_commas", "clinical",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,61,F,27,5,1\nP2,70,M,24,0,0\n"),
         Error(ClinicalError, "decimal commas? save as semicolon-separated or quote the numbers")),
    Case("table_decimal_commas_rows_named", "clinical",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,61,F,27,1\nP2,70,M,24,5,0\nP3,7,M,2,5,0\n"),
         Error(ClinicalError, "row(s) 3, 4 have more fields")),
    Case("table_duplicate_header", "clinical",
         lambda t: _table(t, "patient_id,age,age,sex\nP1,61,62,F\n"),
         Error(ClinicalError, "['age'] appear more than once")),
    Case("table_duplicate_header_spaces", "clinical",
         lambda t: _table(t, "patient_id;bmi ; bmi;sex\nP1;27,5;28;F\n"),
         Error(ClinicalError, "['bmi'] appear more than once")),
    Case("table_duplicate_header_xlsx", "clinical", _xlsx_dup_header,
         Error(ClinicalError, "['age'] appear more than once")),
    Case("table_column_map_collision", "clinical",
         lambda t: (_table(t, "Pat.-Nr.,patient_id,age\nP1,P1,61\n"), {"Pat.-Nr.": "patient_id"}),
         Error(ClinicalError, "more than once after column_map")),
    Case("table_empty", "clinical", lambda t: _table(t, ""), Error(ClinicalError, "empty")),
    Case("table_not_utf8", "clinical",
         lambda t: _table(t, "patient_id,name\nP1,M\xfcller\n".encode("latin-1")),
         Error(ClinicalError, "not UTF-8")),
    Case("table_no_id_column", "clinical", lambda t: _table(t, "Patient ID,age\nP1,61\n"),
         Error(ClinicalError, "close matches: 'Patient ID'")),
    Case("table_missing", "clinical", lambda t: os.path.join(t, "none.csv"),
         Error(ClinicalError, "not found")),
    Case("table_corrupt_xlsx", "clinical",
         lambda t: _write(os.path.join(t, "c.xlsx"), b"PK\x03\x04 not really a zip"),
         Error(ClinicalError, "cannot read Excel")),
    # ---- values (clinical.validate_clinical)
    Case("value_age_out_of_range", "validate",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,261,F,27.5,1\n"), Problem("age", "out of range")),
    Case("value_bmi_text", "validate",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,61,F,n/a,1\nP2,62,M,25,0\n"),
         Problem("bmi", "not a number")),
    Case("value_sex_numeric", "validate",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,61,1,27.5,1\n"), Problem("sex", "unknown code")),
    Case("value_zcq_item_out_of_range", "validate",
         lambda t: _table(t, "patient_id,zcq_fun_pre_1\nP1,9\n"), Problem("zcq_fun_pre_1", "out of range")),
    Case("value_success_not_binary", "validate",
         lambda t: _table(t, CLINICAL_HEADER + "\nP1,61,F,27.5,2\n"), Problem("zcq_success", "out of range")),
    Case("value_vas_over_100", "validate",
         lambda t: _table(t, "patient_id,back_pain_pre\nP1,250\n"), Problem("back_pain_pre", "out of range")),
    # ---- whole exports (index -> clinical -> cohort -> preprocess)
    Case("export_two_people_one_id", "export", _export_two_people,
         Excluded("P2", "conflicting identities")),
    Case("export_sex_disagrees", "export", _export_sex_differs,
         Excluded("P1", "conflicting identities")),
    Case("export_mri_rescale_nan", "export", _export_mri_nan_slope, Excluded("P2", NON_FINITE)),
    Case("export_xray_rescale_text", "export", _export_xray_text_slope, Excluded("P1", NON_FINITE)),
    Case("export_xray_100mm", "export", _export_xray_100mm, Excluded("P2", SPACING)),
    Case("export_mri_100mm", "export", _export_mri_100mm, Excluded("P1", SPACING)),
    Case("export_mri_slices_50mm", "export", _export_mri_slices_50mm, Excluded("P1", SPACING)),
    Case("export_nifti_all_nan", "export_manifest", _export_nifti_all_nan, Excluded("P2", NON_FINITE)),
    Case("export_truncated_pixels", "export", _export_truncated_pixels,
         Excluded("P1", "image_decode_failed")),
    Case("export_missing_clinical_row", "export", _export_missing_row, Excluded("P3", "no clinical row")),
    Case("export_row_without_images", "export", _export_no_images, Excluded("P2", "no images")),
    Case("export_conflicting_rows", "export", _export_conflicting_rows,
         Excluded("P2", "duplicate clinical rows")),
    Case("export_no_label", "export", _export_no_label, Excluded("P2", "no usable label")),
    Case("export_truncated_file", "export", _export_truncated_file, Skipped("unreadable")),
    Case("export_decimal_commas", "export", _export_decimal_commas,
         Error(ClinicalError, "decimal commas?")),
    Case("export_ids_do_not_match", "export", _export_ids_do_not_match,
         Error(CohortError, "clinical.csv: 0 patients left")),
    Case("export_only_junk", "export", _export_only_junk, Error(CohortError, "0 patients left")),
]

# Inputs that look odd but are fine: they must be accepted (no false alarms).
ACCEPTED: list[Case] = [
    Case("export_name_case_differs", "export", _export_name_case_only, None),
    Case("valid_export", "export", lambda t: valid_export(t, ("P1", "P2")), None),
    Case("valid_xray", "xray", _x, None),
    Case("valid_series", "series", _s, None),
    Case("valid_nifti", "nifti", _nii, None),
    Case("valid_table_semicolon_decimal_comma", "clinical",
         lambda t: _table(t, "patient_id;age;bmi\nP1;61;27,5\n"), None),
    Case("valid_table_trailing_separator", "clinical",
         lambda t: _table(t, "patient_id,age\nP1,61,\nP2,70,,\n"), None),
]


def run_case(case: Case, tmp: str):
    """Build the input and call the public API for its kind; returns the API's result."""
    built = case.build(tmp)
    if case.kind == "xray":
        return dicom.read_xray(built)
    if case.kind == "series":
        return dicom.read_series(built)
    if case.kind == "nifti":
        return nifti.read_nifti(built)
    if case.kind == "clinical":
        path, column_map = built if isinstance(built, tuple) else (built, None)
        return clinical.read_clinical(path, column_map=column_map)
    if case.kind == "validate":
        return clinical.validate_clinical(clinical.read_clinical(built))[1]
    if case.kind == "export":
        return run_export(built)
    if case.kind == "export_manifest":
        return _run_export_with_manifest(built)
    raise ValueError(case.kind)


def verdict_of(case: Case, tmp: str) -> tuple[bool, str]:
    """(handled as expected?, what happened)."""
    v = case.verdict
    try:
        out = run_case(case, tmp)
    except Exception as e:  # noqa: BLE001 - compared with the expected verdict
        got = f"{type(e).__name__}: {e}"
        if not isinstance(v, Error):
            return False, f"raised {got}"
        ok = isinstance(e, v.cls) and v.fragment.lower() in str(e).lower()
        if v.reason is not None:
            ok = ok and getattr(e, "reason", None) == v.reason
            got += f" [reason={getattr(e, 'reason', None)}]"
        return ok, got
    if isinstance(v, Error):
        return False, "no error"
    if isinstance(v, Excluded):
        ex = out["exclusions"]
        hit = ex[(ex["patient_id"] == v.patient_id) & (ex["reason"] == v.reason)]
        others_in = set(out["records"]["patient_id"]) - {v.patient_id}
        still_in = v.patient_id in set(out["cache"].loc[~out["cache"]["excluded"], "patient_id"])
        return len(hit) == 1 and not still_in and bool(others_in), \
            f"exclusions {ex[['patient_id', 'reason']].to_dict('records')}"
    if isinstance(v, Problem):
        hit = out[(out["column"] == v.column) & out["problem"].str.contains(v.fragment)]
        return len(hit) >= 1, f"problems {out[['column', 'problem']].to_dict('records')}"
    if isinstance(v, Skipped):
        return out["skipped"].get(v.reason, 0) >= 1, f"skipped {out['skipped']}"
    raise TypeError(v)
