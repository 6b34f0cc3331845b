"""Enhanced (multi-frame) MR: one file per series, read as the classic series it came from.

The multi-frame files are written by highdicom's legacy conversion from a classic series
(``dicom_factory.write_enhanced_mr``), never by lumbarjax: Legacy Converted Enhanced MR as
highdicom writes it, and Enhanced MR (the same frames with the MR functional groups a scanner
writes). The classic series is oblique, its file names and InstanceNumbers shuffled and its
RescaleSlope / RescaleIntercept different on every slice (so the per-frame Pixel Value
Transformation is exercised)."""

import logging
import os

import numpy as np
import pandas as pd
import pydicom
import pytest

from configs_for_tests import preprocess_config
from dicom_factory import write_enhanced_mr, write_mr_series, write_xray_dcm
from lumbarjax.data import dicom, index, preprocess
from lumbarjax.errors import DicomError

KINDS = ("legacy", "enhanced")
# Sagittal, tilted 10 degrees about the left-right axis.
_T = np.deg2rad(10)
OBLIQUE_SAG = ((0.0, np.cos(_T), np.sin(_T)), (0.0, np.sin(_T), -np.cos(_T)))


def _classic_series(directory, patient_id="CLASSIC", **extra):
    rng = np.random.default_rng(7)
    volume = rng.integers(0, 3000, size=(12, 16, 20)).astype(np.uint16)
    paths = write_mr_series(directory, volume, spacing=(3.5, 0.7, 0.6), orientation=OBLIQUE_SAG,
                            patient_id=patient_id, description="T2 TSE SAG", EchoTime=96.0,
                            RepetitionTime=3200.0, **extra)
    for i, p in enumerate(paths):  # a different rescale on every slice
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = 0.5 + 0.25 * i, -10.0 * i
        ds.save_as(p)
    return paths


def _with_patient(path, patient_id):
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """One classic patient and, per kind, a patient whose only MRI is one multi-frame file."""
    root = tmp_path_factory.mktemp("enhanced_export")
    classic = _classic_series(root / "CLASSIC" / "series")
    files = {}
    for kind in KINDS:
        pid = f"ENH_{kind.upper()}"
        path = write_enhanced_mr(classic, root / pid / "IM000001", kind=kind)
        files[kind] = _with_patient(path, pid)
    return {"root": str(root), "classic": classic, "files": files}


@pytest.mark.parametrize("kind", KINDS)
def test_a_multiframe_file_reads_as_the_classic_series(export, kind):
    classic = dicom.read_series(export["classic"])
    multi = dicom.read_series(export["files"][kind])
    assert multi.array.shape == classic.array.shape == (12, 16, 20)
    np.testing.assert_allclose(multi.array, classic.array, rtol=0, atol=1e-5)
    np.testing.assert_allclose(multi.spacing, classic.spacing, rtol=0, atol=1e-5)
    np.testing.assert_allclose(multi.affine, classic.affine, rtol=0, atol=1e-5)
    assert sorted(multi.frames) == list(range(1, 13)) and classic.frames == [0] * 12
    assert multi.paths == [export["files"][kind]] * 12
    # The per-slice rescale really differs, so a frame given another frame's transform fails.
    assert len({float(pydicom.dcmread(p).RescaleSlope) for p in export["classic"]}) == 12


def test_the_manifest_names_the_frames_of_one_file(export):
    df = index.index_cohort(export["root"]).set_index(["patient_id", "role"])
    classic = df.loc[("CLASSIC", "mri_t2_sag")]
    for kind in KINDS:
        row = df.loc[(f"ENH_{kind.upper()}", "mri_t2_sag")]
        rel = os.path.relpath(export["files"][kind], export["root"])
        assert row["paths"] == rel and row["n_files"] == 1
        assert row["shape"] == classic["shape"] == "12;16;20"
        assert row["spacing_mm"] == classic["spacing_mm"]
        assert f"frames 1-12 of {rel}" in row["reason"]
        assert "sagittal T2" in row["reason"]
    assert index.index_cohort(export["root"]).attrs["n_files"] == 12 + len(KINDS)


def test_preprocessing_gives_the_classic_array_and_grid(export, tmp_path):
    cfg = preprocess_config((4.0, 1.0, 1.0), (8, 12, 12), (16, 16))
    rows = [{"patient_id": "classic", "mri_paths": ";".join(export["classic"])}]
    rows += [{"patient_id": k, "mri_paths": export["files"][k]} for k in KINDS]
    records = pd.DataFrame([{**r, "mri_source": "dicom", "xray_paths": "", "xray_source": ""}
                            for r in rows])
    df = preprocess.preprocess_cohort(records, cfg, str(tmp_path / "cache")).set_index("patient_id")
    assert not df["excluded"].any()
    ref = np.load(df.loc["classic", "mri_file"])
    for kind in KINDS:
        np.testing.assert_allclose(np.load(df.loc[kind, "mri_file"]), ref, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.array(eval(df.loc[kind, "mri_affine"])),
                                   np.array(eval(df.loc["classic", "mri_affine"])), atol=1e-5)


def test_enhanced_mr_contrast_is_read_from_its_functional_groups(tmp_path):
    """No description text: TE / TR come from MREchoSequence / MRTimingAndRelatedParameters
    (Enhanced MR) or the Unassigned Converted Attributes (Legacy Converted); an
    AcquisitionContrast of T1 is rejected like a T1 description."""
    classic = _classic_series(tmp_path / "src")
    for pid, kind, contrast in [("TE_TR_ENH", "enhanced", "UNKNOWN"),
                                ("TE_TR_LEG", "legacy", None),
                                ("T1_ENH", "enhanced", "T1")]:
        path = write_enhanced_mr(classic, tmp_path / "export" / pid / "f.dcm", kind=kind,
                                 drop_text=True, acquisition_contrast=contrast)
        _with_patient(path, pid)
    df = index.index_cohort(tmp_path / "export")
    reasons = dict(zip(df["patient_id"], df["reason"]))
    assert "sagittal T2 by TE=96 ms/TR=3200 ms" in reasons["TE_TR_ENH"]
    assert "sagittal T2 by TE=96 ms/TR=3200 ms" in reasons["TE_TR_LEG"]
    assert "T1_ENH" not in reasons
    missing = {m["patient_id"]: m["reason"] for m in df.attrs["missing"]
               if m["role"] == "mri_t2_sag"}
    assert "sagittal T1" in missing["T1_ENH"]


@pytest.mark.parametrize("keyword, value, message", [
    ("StackID", lambda k: str(1 + k % 2), "2 stacks (StackID 1, 2) in one series"),
    ("TemporalPositionIndex", lambda k: 1 + k // 6, "2 temporal positions (a dynamic series)"),
])
def test_several_stacks_or_temporal_positions_are_refused_with_the_reason(
        export, tmp_path, keyword, value, message):
    ds = pydicom.dcmread(export["files"]["enhanced"])
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        setattr(item.FrameContentSequence[0], keyword, value(k))
    path = str(tmp_path / "P" / "multi.dcm")
    os.makedirs(os.path.dirname(path))
    ds.PatientID = "P"
    ds.save_as(path)
    with pytest.raises(DicomError, match=r"multi\.dcm: frames 1-12 are " + message.split(" (")[0]):
        dicom.read_series(path)
    df = index.index_cohort(tmp_path)
    assert df.empty
    assert message in df.attrs["missing"][-1]["reason"]


def test_a_multiframe_file_without_functional_groups_is_refused(tmp_path, export):
    ds = pydicom.dcmread(export["files"]["legacy"])
    del ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence
    path = str(tmp_path / "bare.dcm")
    ds.save_as(path)
    with pytest.raises(DicomError, match=r"bare\.dcm: multi-frame image \(12 frames\) without "
                                         "functional groups"):
        dicom.read_series(path)


def test_a_one_frame_multiframe_radiograph_reads_and_a_two_frame_one_is_refused(tmp_path, caplog):
    pixels = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    one = write_xray_dcm(tmp_path / "one" / "DX1", pixels, patient_id="ONE", NumberOfFrames=1)
    img = dicom.read_xray(one)
    assert img.pixels.shape == (40, 30)
    np.testing.assert_array_equal(img.pixels, pixels.astype(np.float32))
    two = write_xray_dcm(tmp_path / "two" / "DX2", np.stack([pixels, pixels]), patient_id="TWO",
                         NumberOfFrames=2)
    with pytest.raises(DicomError, match=r"DX2: multi-frame image \(2 frames\)"):
        dicom.read_xray(two)
    with caplog.at_level(logging.WARNING):
        df = index.index_cohort(tmp_path)
    assert df.loc[df["patient_id"] == "ONE", "paths"].tolist() == ["one/DX1"]
    missing = {m["patient_id"]: m["reason"] for m in df.attrs["missing"] if m["role"] == "xray"}
    assert "multi-frame" in missing["TWO"]
