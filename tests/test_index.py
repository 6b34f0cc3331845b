"""lumbarjax.data.index: choosing series in a messy nested export, skip counts, manifest I/O."""

import os

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from dicom_factory import (
    MEDIA_DIRECTORY_SOP,
    new_uid,
    random_name,
    write_mr_series,
    write_non_image_dcm,
    write_xray_dcm,
)
from lumbarjax.data import dicom, index, nifti
from lumbarjax.errors import CohortError

RNG = np.random.default_rng(0)


def _vol(d, h=16, w=16):
    return RNG.integers(0, 1000, (d, h, w)).astype(np.uint16)


def _xr(h=40, w=32):
    return RNG.integers(0, 4000, (h, w)).astype(np.uint16)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A nested hospital-style export; returns (root, expected facts)."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(1)
    exp = {}

    # P001: full MR study with distractors, X-ray series holding AP + LL
    st = new_uid()
    d = root / "export" / "P001" / "1.2.3" / random_name(rng)
    exp["P001_mri"] = write_mr_series(d / "s7", _vol(12), patient_id="P001", study_uid=st,
                                      description="T2 TSE SAG", series_number=7, seed=1)
    write_mr_series(d / "s1", _vol(3), patient_id="P001", study_uid=st, description="3-pl loc",
                    series_number=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), seed=2)
    write_mr_series(d / "s9", _vol(20), patient_id="P001", study_uid=st, description="T2 TSE AX",
                    orientation="ax", series_number=9, seed=3)
    write_mr_series(d / "s5", _vol(14), patient_id="P001", study_uid=st, description="T1 TSE SAG",
                    series_number=5, seed=4)
    xst, xse = new_uid(), new_uid()
    write_xray_dcm(d / "x" / random_name(rng), _xr(), view="AP", patient_id="P001",
                   study_uid=xst, series_uid=xse)
    exp["P001_xray"] = write_xray_dcm(d / "x" / random_name(rng), _xr(48, 36), view="LL",
                                      patient_id="P001", study_uid=xst, series_uid=xse,
                                      pixel_spacing=(0.14, 0.15))
    write_non_image_dcm(root / "export" / "DICOMDIR", sop_class=MEDIA_DIRECTORY_SOP)
    write_non_image_dcm(d / random_name(rng), patient_id="P001")  # Basic Text SR

    # P002: CR lateral known only from the description (MONOCHROME1, imager spacing);
    # its only sagittal T2 has 3 slices -> no MRI
    d = root / "export" / "P002"
    exp["P002_xray"] = write_xray_dcm(d / "IM00001", _xr(), modality="CR", view=None,
                                      photometric="MONOCHROME1", pixel_spacing=None,
                                      imager_pixel_spacing=(0.2, 0.2), patient_id="P002",
                                      description="L-SPINE LAT")
    write_mr_series(d / "mr", _vol(3), patient_id="P002", description="T2 SAG", seed=5)

    # P003: only AP X-ray -> no xray; sagittal T2 and STIR -> T2 chosen
    d = root / "P003"
    write_xray_dcm(d / "1.2.840.99", _xr(), view="PA", patient_id="P003")
    st = new_uid()
    exp["P003_mri"] = write_mr_series(d / "a", _vol(10), patient_id="P003", study_uid=st,
                                      description="SAG T2 FRFSE", series_number=4,
                                      spacing=(3.5, 0.9, 0.9), seed=6)
    write_mr_series(d / "b", _vol(15), patient_id="P003", study_uid=st, description="SAG STIR",
                    series_number=6, seed=7)

    # distractors
    (root / "readme.txt").write_text("exported by PACS\n")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "export" / "thumb.jpg")
    full = write_xray_dcm(root / "tmp_full", _xr(), patient_id="P004")
    (root / "export" / "IM_trunc").write_bytes(open(full, "rb").read()[:250])  # header cut
    os.remove(full)
    write_xray_dcm(root / "noid", _xr(), patient_id="")
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # other modality, same patient
    ct.PatientID = "P001"
    ct.PatientName, ct.PatientBirthDate = "Doe^Jane", "19500101"  # same person (identity check)
    del ct.PatientSex
    ct.save_as(root / "export" / "P001" / "ct")
    return root, exp


def _rel(root, paths):
    return ";".join(os.path.relpath(p, root) for p in paths)


def test_index_picks_right_series_with_reasons(cohort):
    root, exp = cohort
    df = index.index_cohort(root)
    assert list(df.columns) == index.COLUMNS
    assert list(zip(df.patient_id, df.role)) == [
        ("P001", "mri_t2_sag"), ("P001", "xray"), ("P002", "xray"), ("P003", "mri_t2_sag")]
    r = df.set_index(["patient_id", "role"])

    m1 = r.loc[("P001", "mri_t2_sag")]
    assert m1.paths == _rel(root, exp["P001_mri"])  # sorted along the normal
    assert m1.source == "dicom" and m1.modality == "MR" and m1.n_files == 12
    assert m1.series_description == "T2 TSE SAG"
    assert m1["shape"] == "12;16;16" and m1.spacing_mm == "4;0.8;0.8"
    assert "sagittal T2 ('T2 TSE SAG'), 12 slices" in m1.reason
    assert "4 MR series" in m1.reason
    assert "localizer (3 files)" in m1.reason
    assert "axial T2 (20 files)" in m1.reason
    assert "sagittal T1 (14 files)" in m1.reason

    x1 = r.loc[("P001", "xray")]
    assert x1.paths == os.path.relpath(exp["P001_xray"], root)
    assert x1.reason.startswith("DX, ViewPosition=LL")
    assert "rejected: AP/PA view (1 file)" in x1.reason
    assert x1.spacing_mm == "0.14;0.15" and x1["shape"] == "48;36" and x1.n_files == 1

    x2 = r.loc[("P002", "xray")]
    assert x2.paths == os.path.relpath(exp["P002_xray"], root)
    assert x2.modality == "CR" and "description 'L-SPINE LAT'" in x2.reason
    assert x2.spacing_mm == "0.2;0.2"

    m3 = r.loc[("P003", "mri_t2_sag")]
    assert m3.paths == _rel(root, exp["P003_mri"])
    assert "not chosen: sagittal STIR ('SAG STIR') (15 files)" in m3.reason
    assert m3.spacing_mm == "3.5;0.9;0.9"


def test_index_counts_skipped_and_lists_missing(cohort):
    root, _ = cohort
    df = index.index_cohort(root)
    assert df.attrs["skipped"] == {
        "not DICOM": 2,  # readme.txt, thumb.jpg
        "no pixel data / non-image SOP": 2,  # DICOMDIR, SR
        "unreadable": 1,  # truncated header
        "no PatientID": 1,
    }
    missing = {(m["patient_id"], m["role"]): m["reason"] for m in df.attrs["missing"]}
    assert set(missing) == {("P002", "mri_t2_sag"), ("P003", "xray")}
    assert "too few slices (< 5) (3 files)" in missing[("P002", "mri_t2_sag")]
    assert "AP/PA view (1 file)" in missing[("P003", "xray")]
    n_files = sum(len(f) for _, _, f in os.walk(root))
    assert df.attrs["n_files"] == n_files


def test_manifest_rows_read_back_as_the_same_images(cohort):
    root, _ = cohort
    df = index.index_cohort(root)
    for row in df.itertuples():
        paths = index.resolve_paths(row._asdict(), root)
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in paths)
        if row.role == "mri_t2_sag":
            v = dicom.read_series(paths)
            assert ";".join(str(s) for s in v.array.shape) == row.shape
            np.testing.assert_allclose(v.spacing, [float(s) for s in row.spacing_mm.split(";")],
                                       rtol=1e-5)
            assert v.paths == paths
        else:
            x = dicom.read_xray(paths[0])
            assert ";".join(str(s) for s in x.pixels.shape) == row.shape
            assert x.patient_id == row.patient_id


def test_manifest_round_trip_and_no_phi(cohort, tmp_path):
    root, _ = cohort
    df = index.index_cohort(root)
    p = index.write_manifest(df, tmp_path / "manifest.csv")
    text = open(p).read()
    assert "Doe" not in text and "19500101" not in text  # fake PHI in the headers
    back = index.read_manifest(p, root=root)
    pd.testing.assert_frame_equal(back, df, check_dtype=True, check_index_type=False,
                                  check_column_type=False)


def test_manifest_nifti_row(cohort, tmp_path):
    root, exp = cohort
    df = index.index_cohort(root)
    vol = dicom.read_series(exp["P001_mri"])
    nii_dir = tmp_path / "nifti"
    nifti.write_nifti(vol.array, vol.affine, nii_dir / "P001_t2.nii.gz")
    p = index.write_manifest(df, tmp_path / "manifest.csv")
    # a person edits the row in a text editor: point the MRI at the NIfTI
    edited = pd.read_csv(p, dtype=str, keep_default_na=False)
    i = edited.index[(edited.patient_id == "P001") & (edited.role == "mri_t2_sag")][0]
    edited.loc[i, "source"] = "nifti"
    edited.loc[i, "paths"] = str(nii_dir / "P001_t2.nii.gz")  # absolute path is fine
    edited.loc[i, "n_files"] = "1"
    edited.to_csv(p, index=False)
    back = index.read_manifest(p, root=root)
    row = back.iloc[i]
    assert row.source == "nifti"
    (path,) = index.resolve_paths(row, root)
    n = nifti.read_nifti(path)
    np.testing.assert_array_equal(n.array, vol.array)
    np.testing.assert_allclose(n.affine, vol.affine, atol=1e-4)


def _write(tmp_path, df, name="m.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_read_manifest_validation(cohort, tmp_path):
    root, _ = cohort
    df = index.index_cohort(root).astype({"n_files": str})
    with pytest.raises(CohortError, match="m.csv: manifest lacks required column\\(s\\) \\['role'\\]"):
        index.read_manifest(_write(tmp_path, df.drop(columns=["role"])))
    bad = df.copy()
    bad.loc[2, "role"] = "ct"
    with pytest.raises(CohortError, match="m.csv: line 4 \\(patient_id=P002, role=ct\\): "
                                          "unknown role 'ct'"):
        index.read_manifest(_write(tmp_path, bad))
    bad = df.copy()
    bad.loc[1, "paths"] = "export/P001/gone.dcm"
    with pytest.raises(CohortError, match="line 3 \\(patient_id=P001, role=xray\\): file not "
                                          "found: .*gone.dcm"):
        index.read_manifest(_write(tmp_path, bad), root=root)
    index.read_manifest(_write(tmp_path, bad))  # without root, files are not checked
    bad = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(CohortError, match="line 6 .*duplicate of line 2"):
        index.read_manifest(_write(tmp_path, bad))
    bad = df.copy()
    bad.loc[0, "source"] = "nifti"
    with pytest.raises(CohortError, match="line 2 .*nifti row needs exactly one .nii"):
        index.read_manifest(_write(tmp_path, bad))
    bad = df.copy()
    bad.loc[0, "source"] = "png"
    with pytest.raises(CohortError, match="unknown source 'png'"):
        index.read_manifest(_write(tmp_path, bad))
    with pytest.raises(CohortError, match="nope.csv: manifest not found"):
        index.read_manifest(tmp_path / "nope.csv")


def test_minimal_hand_written_manifest(cohort, tmp_path):
    root, exp = cohort
    p = tmp_path / "hand.csv"
    p.write_text("patient_id,role,source,paths\n"
                 f"007,xray,dicom,{os.path.relpath(exp['P001_xray'], root)}\n")
    df = index.read_manifest(p, root=root)
    assert df.loc[0, "patient_id"] == "007"  # leading zeros kept: IDs are strings
    assert list(df.columns) == index.COLUMNS
    assert index.resolve_paths(df.loc[0], root) == [os.path.normpath(exp["P001_xray"])]


def test_index_empty_and_missing_root(tmp_path):
    df = index.index_cohort(tmp_path)
    assert len(df) == 0 and list(df.columns) == index.COLUMNS
    assert df.attrs["skipped"] == {"not DICOM": 0, "no pixel data / non-image SOP": 0,
                                   "unreadable": 0}
    with pytest.raises(CohortError, match="nowhere: cohort folder not found"):
        index.index_cohort(tmp_path / "nowhere")


def test_mri_series_with_duplicate_positions_rejected(tmp_path):
    a = write_mr_series(tmp_path / "a", _vol(6), patient_id="P9", description="T2 SAG")
    ds = pydicom.dcmread(a[4])
    ds.ImagePositionPatient = pydicom.dcmread(a[2]).ImagePositionPatient
    ds.save_as(a[4])
    df = index.index_cohort(tmp_path, progress=True)
    assert len(df) == 0
    (m,) = [m for m in df.attrs["missing"] if m["role"] == "mri_t2_sag"]
    assert "inconsistent geometry (duplicate slice position" in m["reason"]
    (m,) = [m for m in df.attrs["missing"] if m["role"] == "xray"]
    assert m == {"patient_id": "P9", "role": "xray", "reason": "no CR/DX image"}


def test_fallbacks_unknown_view_flexion_and_te_tr(tmp_path):
    # PA: view unknown is used only because no lateral exists
    write_xray_dcm(tmp_path / "a" / "1", _xr(), view=None, description="", patient_id="PA")
    # PB: a neutral lateral beats a (larger) flexion lateral
    write_xray_dcm(tmp_path / "b" / "1", _xr(64, 64), view="LL", description="LAT FLEXION",
                   patient_id="PB")
    neutral = write_xray_dcm(tmp_path / "b" / "2", _xr(), view="LL", patient_id="PB")
    # PB MRI: no contrast words; TE/TR say T2; a coronal T2 is rejected
    t2 = write_mr_series(tmp_path / "b" / "m1", _vol(6), patient_id="PB", description="SAG TSE",
                         EchoTime=100.0, RepetitionTime=3000.0)
    write_mr_series(tmp_path / "b" / "m2", _vol(8), patient_id="PB", description="COR T2",
                    orientation="cor")
    df = index.index_cohort(tmp_path).set_index(["patient_id", "role"])
    assert "view unknown" in df.loc[("PA", "xray"), "reason"]
    assert df.loc[("PB", "xray"), "paths"] == os.path.relpath(neutral, tmp_path)
    assert "1 other eligible not chosen" in df.loc[("PB", "xray"), "reason"]
    m = df.loc[("PB", "mri_t2_sag")]
    assert m.paths == _rel(tmp_path, t2)
    assert "sagittal T2 by TE=100 ms/TR=3000 ms" in m.reason
    assert "rejected: coronal T2 (8 files)" in m.reason
