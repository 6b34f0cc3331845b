"""Overlay figures (PNG) and the attribution NIfTI."""
import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from lumbarjax.errors import LumbarjaxError
from lumbarjax.explain.overlays import (save_attribution_nifti, save_clinical_bar_png,
                                        save_mri_overlay_png, save_xray_overlay_png, top_slices)

RNG = np.random.default_rng(0)


def _read_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0 and img.shape[2] in (3, 4)
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


def test_top_slices_picks_largest_abs_attribution():
    att = np.zeros((8, 4, 4), np.float32)
    att[2] = -5.0
    att[6] = 3.0
    att[0] = 1.0
    assert top_slices(att, 2) == [2, 6]
    assert top_slices(att, 20) == list(range(8))


def test_mri_overlay_png(tmp_path):
    vol = RNG.normal(size=(6, 16, 12)).astype(np.float32)
    att = np.zeros_like(vol)
    att[3, 4:8, 4:8] = 1.0
    att[1, 2:4, 2:4] = -0.5
    path = save_mri_overlay_png(vol, att, tmp_path / "sub" / "mri.png", spacing=(4.0, 0.5, 0.5),
                                title="P001")
    _read_png(path)
    # explicit slices, trailing channel accepted, non-square pixels
    _read_png(save_mri_overlay_png(vol[..., None], att[..., None], tmp_path / "mri2.png",
                                   slices=[0, 1, 2, 3, 4], spacing=(4.0, 1.0, 0.5)))
    with pytest.raises(LumbarjaxError, match="out of range"):
        save_mri_overlay_png(vol, att, tmp_path / "bad.png", slices=[6])
    with pytest.raises(LumbarjaxError, match="attribution shape"):
        save_mri_overlay_png(vol, att[:3], tmp_path / "bad.png")


def test_xray_overlay_and_clinical_bar_png(tmp_path):
    img = RNG.uniform(size=(20, 16)).astype(np.float32)
    att = RNG.normal(size=(20, 16)).astype(np.float32)
    _read_png(save_xray_overlay_png(img, att, tmp_path / "xray.png", spacing=(0.2, 0.2),
                                    title="P001"))
    values = np.array([0.1, -0.7, 0.3, 0.0], np.float32)
    names = ["age", "bmi", "leg_pain_pre", "smoker"]
    _read_png(save_clinical_bar_png(values, names, tmp_path / "clin.png", top_k=3))
    with pytest.raises(LumbarjaxError, match="4 values but 3 feature names"):
        save_clinical_bar_png(values, names[:3], tmp_path / "bad.png")
    with pytest.raises(LumbarjaxError, match="NaN"):
        save_xray_overlay_png(img, att * np.nan, tmp_path / "bad.png")


def test_attribution_nifti_affine(tmp_path):
    # oblique-ish LPS affine: columns = directions of d, h, w times spacing, plus origin
    affine = np.array([[0.0, 0.0, 0.7, -12.5],
                       [4.0, 0.0, 0.0, 30.0],
                       [0.0, -0.7, 0.0, 101.0],
                       [0.0, 0.0, 0.0, 1.0]])
    att = RNG.normal(size=(3, 5, 4)).astype(np.float32)
    path = save_attribution_nifti(att, affine, tmp_path / "att.nii.gz")
    img = nib.load(path)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    # voxel (0,0,0) -> RAS-flipped world coordinate of affine @ [0,0,0,1]
    np.testing.assert_allclose(img.affine @ [0, 0, 0, 1], lps_to_ras @ affine @ [0, 0, 0, 1],
                               atol=1e-4)
    # NIfTI (i, j, k) = (w, h, d): voxel i=1 is w=1, k=2 is d=2
    np.testing.assert_allclose(img.affine @ [1, 0, 2, 1], lps_to_ras @ affine @ [2, 0, 1, 1],
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.dataobj).transpose(2, 1, 0), att, rtol=1e-6)
    with pytest.raises(LumbarjaxError, match="affine must be"):
        save_attribution_nifti(att, affine[:3], tmp_path / "bad.nii.gz")
