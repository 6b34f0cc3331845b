"""lumbarjax.data.nifti: (D, H, W)/LPS convention, nibabel's own files, round trips, errors."""

import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from dicom_factory import write_mr_series
from lumbarjax.data import dicom, nifti
from lumbarjax.errors import NiftiError

RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz",
                                  "reoriented_anat_moved.nii"])
def test_nibabel_files_convention(name):
    """Files no one here wrote: values and world coordinates agree with nibabel's own view."""
    path = os.path.join(data_path, name)
    img = nib.load(path)
    data = img.get_fdata()
    v = nifti.read_nifti(path)
    i, j, k = img.shape[0], img.shape[1], img.shape[2]
    assert v.array.shape == (k, j, i) and v.array.dtype == np.float32
    for ijk in [(0, 0, 0), (i - 1, j - 1, k - 1), (i // 2, j // 3, k - 1), (1, j - 1, 0)]:
        d, h, w = ijk[2], ijk[1], ijk[0]
        assert v.array[d, h, w] == pytest.approx(data[ijk])
        ras = img.affine @ [*ijk, 1]
        np.testing.assert_allclose(v.affine @ [d, h, w, 1], [*(ras[:3] * RAS_TO_LPS), 1],
                                   atol=1e-5)
    np.testing.assert_allclose(v.spacing, np.asarray(img.header.get_zooms()[:3])[::-1],
                               rtol=1e-5)
    assert v.paths == [path]


@pytest.mark.parametrize("name,shape", [("example4d.nii.gz", "(128, 96, 24, 2)"),
                                        ("functional.nii", "(17, 21, 3, 20)"),
                                        ("example_nifti2.nii.gz", "(32, 20, 12, 2)")])
def test_4d_rejected_with_file_and_shape(name, shape):
    with pytest.raises(NiftiError, match=f"{name}: 4-D image of shape {shape.replace('(', '[(]').replace(')', '[)]')}"):
        nifti.read_nifti(os.path.join(data_path, name))


def test_4d_with_singleton_fourth_dim_accepted(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6, 1)
    p = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), p)
    v = nifti.read_nifti(p)
    np.testing.assert_array_equal(v.array, data[..., 0].transpose(2, 1, 0))
    np.testing.assert_allclose(v.spacing, [4.0, 3.0, 2.0])


def test_nifti2_and_scaling(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti2Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    p = tmp_path / "n2.nii"
    nib.save(img, p)
    v = nifti.read_nifti(p)
    np.testing.assert_allclose(v.array, (0.5 * data - 3.0).transpose(2, 1, 0))


def test_not_nifti_files(tmp_path):
    with pytest.raises(NiftiError, match="analyze.hdr: Spm2AnalyzeImage is not a NIfTI volume"):
        nifti.read_nifti(os.path.join(data_path, "analyze.hdr"))
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(NiftiError, match="bad.nii: not a readable NIfTI file"):
        nifti.read_nifti(bad)
    with pytest.raises(NiftiError, match="missing.nii.gz: file not found"):
        nifti.read_nifti(tmp_path / "missing.nii.gz")
    trunc = tmp_path / "trunc.nii"
    full = tmp_path / "full.nii"
    nifti.write_nifti(np.ones((4, 5, 6), np.float32), np.eye(4), full)
    trunc.write_bytes(full.read_bytes()[:400])
    with pytest.raises(NiftiError, match="trunc.nii"):
        nifti.read_nifti(trunc)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_exact(tmp_path, suffix):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 7, 9)).astype(np.float32)
    # oblique, anisotropic, with a small shear (gantry tilt): only the sform can hold it
    affine = np.array([[0.1, 0.0, 0.7, -30.5],
                       [0.3, 0.79, 0.0, 12.25],
                       [3.9, -0.05, 0.02, 100.0],
                       [0.0, 0.0, 0.0, 1.0]])
    p = nifti.write_nifti(array, affine, tmp_path / f"v{suffix}", description="T2 SAG")
    v = nifti.read_nifti(p)
    np.testing.assert_array_equal(v.array, array)
    np.testing.assert_allclose(v.affine, affine, rtol=1e-6, atol=1e-5)
    assert v.series_description == "T2 SAG"


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(NiftiError, match="x.nii: write_nifti needs a \\(D, H, W\\) array"):
        nifti.write_nifti(np.zeros((3, 4)), np.eye(4), tmp_path / "x.nii")
    with pytest.raises(NiftiError, match="y.nii: write_nifti needs a finite \\(4, 4\\) affine"):
        nifti.write_nifti(np.zeros((3, 4, 5)), np.eye(3), tmp_path / "y.nii")


@pytest.mark.parametrize("orientation", ["sag", "ax"])
def test_dicom_series_and_its_nifti_agree_in_world(tmp_path, orientation):
    vol = np.arange(5 * 8 * 6).reshape(5, 8, 6).astype(np.uint16)
    paths = write_mr_series(tmp_path / "dcm", vol, spacing=(4.0, 0.6, 0.9),
                            orientation=orientation, origin=(12.0, -50.0, 33.0))
    v = dicom.read_series(paths)
    out = nifti.write_nifti(v.array, v.affine, tmp_path / "v.nii.gz")
    n = nifti.read_nifti(out)
    np.testing.assert_array_equal(n.array, v.array)
    img = nib.load(out)  # nibabel's own (RAS) view of the file
    for d, h, w in [(0, 0, 0), (4, 7, 5), (2, 1, 3)]:
        lps = v.affine @ [d, h, w, 1]
        np.testing.assert_allclose(n.affine @ [d, h, w, 1], lps, atol=1e-4)
        ras = img.affine @ [w, h, d, 1]
        np.testing.assert_allclose(ras[:3], lps[:3] * RAS_TO_LPS, atol=1e-4)
        assert img.get_fdata()[w, h, d] == v.array[d, h, w]
