"""lumbarjax.data.dicom: X-ray display pipeline, series sorting/affine, errors, codecs."""

import os
import random
import shutil

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_factory import (
    ORIENTATIONS,
    new_uid,
    write_mr_series,
    write_non_image_dcm,
    write_xray_dcm,
)
from lumbarjax.data import dicom
from lumbarjax.errors import DicomError

RNG = np.random.default_rng(0)


def _img(h=24, w=32, hi=4096):
    return RNG.integers(0, hi, (h, w)).astype(np.uint16)


def _smooth(h=32, w=32, hi=4000):
    yy, xx = np.mgrid[0:h, 0:w]
    return (hi * (0.5 + 0.4 * np.sin(yy / 5.0) * np.cos(xx / 7.0))).astype(np.uint16)


# --------------------------------------------------------------------------- X-ray


def test_xray_plain_values_spacing_and_ids(tmp_path):
    img = _img()
    p = write_xray_dcm(tmp_path / "IM0001", img, pixel_spacing=(0.14, 0.16), patient_id="P042")
    x = dicom.read_xray(p)
    assert x.pixels.dtype == np.float32 and x.pixels.shape == (24, 32)
    np.testing.assert_array_equal(x.pixels, img.astype(np.float32))
    assert x.spacing == (0.14, 0.16)
    assert x.spacing_source == "PixelSpacing"
    assert x.modality == "DX" and x.patient_id == "P042" and x.path == str(p)


def test_xray_pixel_spacing_preferred_over_imager(tmp_path):
    p = write_xray_dcm(tmp_path / "a", _img(), pixel_spacing=(0.1, 0.1),
                       imager_pixel_spacing=(0.2, 0.2))
    x = dicom.read_xray(p)
    assert x.spacing == (0.1, 0.1) and x.spacing_source == "PixelSpacing"


def test_xray_imager_pixel_spacing_fallback(tmp_path):
    p = write_xray_dcm(tmp_path / "a", _img(), modality="CR", pixel_spacing=None,
                       imager_pixel_spacing=(0.175, 0.2))
    x = dicom.read_xray(p)
    assert x.spacing == (0.175, 0.2)
    assert x.spacing_source == "ImagerPixelSpacing"
    assert x.modality == "CR"


def test_xray_without_spacing_names_file(tmp_path):
    p = write_xray_dcm(tmp_path / "nospacing", _img(), pixel_spacing=None)
    with pytest.raises(DicomError, match="nospacing.*no pixel spacing"):
        dicom.read_xray(p)


def test_xray_monochrome1_inverted(tmp_path):
    img = _img()
    p = write_xray_dcm(tmp_path / "m1", img, photometric="MONOCHROME1", bits_stored=12)
    x = dicom.read_xray(p)
    # higher = brighter: stored 0 (white in MONOCHROME1) becomes the maximum 4095
    np.testing.assert_array_equal(x.pixels, 4095.0 - img)


def test_xray_rescale_slope_intercept(tmp_path):
    img = _img()
    p = write_xray_dcm(tmp_path / "r", img, slope=2.0, intercept=-100.0)
    np.testing.assert_allclose(dicom.read_xray(p).pixels, 2.0 * img - 100.0)


def _window(x, c, w, ymin, ymax):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR, written out independently."""
    x = np.asarray(x, float)
    out = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin
    out[x <= c - 0.5 - (w - 1) / 2] = ymin
    out[x > c - 0.5 + (w - 1) / 2] = ymax
    return out


def test_xray_window_applied(tmp_path):
    img = np.linspace(0, 4095, 24 * 32).reshape(24, 32).astype(np.uint16)
    p = write_xray_dcm(tmp_path / "w", img, window=(2048, 1025), bits_stored=12)
    x = dicom.read_xray(p)
    expected = _window(img, 2048, 1025, 0, 4095)
    np.testing.assert_allclose(x.pixels, expected, rtol=1e-6, atol=1e-3)
    assert x.pixels.min() == 0 and x.pixels.max() == 4095
    assert 0 < np.mean((x.pixels > 0) & (x.pixels < 4095)) < 0.5  # the window clips


def test_xray_window_then_monochrome1_inversion(tmp_path):
    img = np.linspace(0, 4095, 24 * 32).reshape(24, 32).astype(np.uint16)
    p = write_xray_dcm(tmp_path / "w1", img, window=(2048, 1025), bits_stored=12,
                       photometric="MONOCHROME1")
    x = dicom.read_xray(p)
    np.testing.assert_allclose(x.pixels, 4095 - _window(img, 2048, 1025, 0, 4095), atol=1e-3)


def test_xray_rejects_other_modality(tmp_path):
    paths = write_mr_series(tmp_path, _img(16, 16)[None].repeat(5, 0))
    with pytest.raises(DicomError, match="modality MR.*expected one of CR, DX"):
        dicom.read_xray(paths[0])


def test_xray_multiframe_rejected(tmp_path):
    frames = RNG.integers(0, 4000, (3, 16, 16)).astype(np.uint16)
    p = write_xray_dcm(tmp_path / "mf", frames, NumberOfFrames=3)
    with pytest.raises(DicomError, match="mf: multi-frame image \\(3 frames\\)"):
        dicom.read_xray(p)


def test_non_image_dicom_rejected(tmp_path):
    sr = write_non_image_dcm(tmp_path / "report")
    with pytest.raises(DicomError, match="report: not an image"):
        dicom.read_xray(sr)
    with pytest.raises(DicomError, match="report: not an image"):
        dicom.read_series([sr])
    # a DICOM SR no one here wrote
    with pytest.raises(DicomError, match="reportsi.dcm: not an image"):
        dicom.read_series([get_testdata_file("reportsi.dcm")])


def test_not_dicom_and_missing_file(tmp_path):
    txt = tmp_path / "readme.txt"
    txt.write_text("hello")
    with pytest.raises(DicomError, match="readme.txt: not a DICOM file"):
        dicom.read_xray(txt)
    assert dicom.read_header(txt) is None
    with pytest.raises(DicomError, match="nothere: file not found"):
        dicom.read_xray(tmp_path / "nothere")


@pytest.mark.parametrize("keep", ["pixels", "header", "meta"])
def test_truncated_file_names_file(tmp_path, keep):
    p = write_xray_dcm(tmp_path / "full", _img())
    data = open(p, "rb").read()
    cut = {"pixels": len(data) - 500, "header": 600, "meta": 250}[keep]
    q = tmp_path / f"cut_{keep}"
    q.write_bytes(data[:cut])
    with pytest.raises(DicomError, match=f"cut_{keep}.*truncated"):
        dicom.read_xray(q)


def test_truncated_file_from_pydicom_testdata():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(DicomError, match="MR_truncated.dcm: cannot decode pixel data"):
        dicom.read_series([path])


def test_undecodable_file_from_pydicom_testdata():
    # JPEG-lossy.dcm is a known-broken JPEG extended stream: a DicomError, not a raw traceback
    with pytest.raises(DicomError, match="JPEG-lossy.dcm: cannot decode.*1.2.840.10008.1.2.4.51"):
        dicom.read_pixels(get_testdata_file("JPEG-lossy.dcm"))


# --------------------------------------------------------------------------- series


def _vol(d=6, h=12, w=10):
    # every voxel unique: slice index in the high part
    return (np.arange(d * h * w).reshape(d, h, w) + 7).astype(np.uint16)


def test_series_sorted_by_position_not_name_or_instance(tmp_path):
    vol = _vol()
    paths = write_mr_series(tmp_path, vol, seed=3)
    instance = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in paths]
    assert instance != sorted(instance)  # InstanceNumber does not give the order
    assert [os.path.basename(p) for p in paths] != sorted(os.path.basename(p) for p in paths)
    shuffled = list(paths)
    random.Random(1).shuffle(shuffled)
    v = dicom.read_series(shuffled)
    np.testing.assert_array_equal(v.array, vol.astype(np.float32))
    assert v.array.dtype == np.float32
    assert v.paths == paths
    assert v.patient_id == "P001" and v.series_description == "T2 SAG"


@pytest.mark.parametrize("orientation", ["sag", "ax", "cor"])
def test_series_affine_maps_voxels_to_patient_mm(tmp_path, orientation):
    vol = _vol(5, 8, 6)
    spacing = (3.5, 0.5, 0.7)  # anisotropic in-plane: catches swapped PixelSpacing
    origin = (10.0, -20.0, 30.0)
    paths = write_mr_series(tmp_path, vol, spacing=spacing, orientation=orientation,
                            origin=origin)
    v = dicom.read_series(paths[::-1])
    row, col = (np.asarray(c, float) for c in ORIENTATIONS[orientation])
    normal = np.cross(row, col)
    for d, h, w in [(0, 0, 0), (4, 7, 5), (2, 3, 1), (1, 0, 5)]:
        expected = (np.asarray(origin) + d * spacing[0] * normal + h * spacing[1] * col
                    + w * spacing[2] * row)
        np.testing.assert_allclose(v.affine @ [d, h, w, 1], [*expected, 1], atol=1e-6)
        np.testing.assert_allclose(v.voxel_to_world([d, h, w]), expected, atol=1e-6)
    np.testing.assert_allclose(v.spacing, spacing)
    # each file's ImagePositionPatient is the world position of its first voxel
    for d, p in enumerate(v.paths):
        ipp = np.asarray(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, float)
        np.testing.assert_allclose(v.affine @ [d, 0, 0, 1], [*ipp, 1], atol=1e-5)


def test_series_slice_step_from_positions_not_thickness(tmp_path):
    paths = write_mr_series(tmp_path, _vol(4, 8, 8), spacing=(4.4, 1.0, 1.0),
                            SliceThickness=3.0)
    v = dicom.read_series(paths)
    assert v.spacing[0] == pytest.approx(4.4)


def test_series_rescale(tmp_path):
    vol = _vol(4, 8, 8)
    paths = write_mr_series(tmp_path, vol, slope=0.5, intercept=-10.0)
    np.testing.assert_allclose(dicom.read_series(paths).array, 0.5 * vol - 10.0)


def test_series_mixed_sizes(tmp_path):
    uid = new_uid()
    a = write_mr_series(tmp_path / "a", _vol(3, 8, 8), series_uid=uid)
    b = write_mr_series(tmp_path / "b", _vol(3, 10, 8), series_uid=uid,
                        origin=(-8.0, -100.0, 80.0))
    with pytest.raises(DicomError, match="mixed image sizes.*8x8.*10x8"):
        dicom.read_series(a + b)


def test_series_mixed_orientations(tmp_path):
    uid = new_uid()
    a = write_mr_series(tmp_path / "a", _vol(3, 8, 8), series_uid=uid, orientation="sag")
    b = write_mr_series(tmp_path / "b", _vol(3, 8, 8), series_uid=uid, orientation="ax")
    with pytest.raises(DicomError, match="mixed orientations"):
        dicom.read_series(a + b)


def test_series_from_several_series_rejected(tmp_path):
    a = write_mr_series(tmp_path / "a", _vol(3, 8, 8))
    b = write_mr_series(tmp_path / "b", _vol(3, 8, 8), origin=(40.0, 0.0, 0.0))
    with pytest.raises(DicomError, match="2 different series"):
        dicom.read_series(a + b)


def test_series_duplicate_positions_name_both_files(tmp_path):
    paths = write_mr_series(tmp_path, _vol(5, 8, 8))
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = pydicom.dcmread(paths[1]).ImagePositionPatient
    ds.save_as(paths[3])
    with pytest.raises(DicomError, match="duplicate slice position") as err:
        dicom.read_series(paths)
    assert os.path.basename(paths[1]) in str(err.value)
    assert os.path.basename(paths[3]) in str(err.value)


def test_series_missing_orientation_names_file(tmp_path):
    paths = write_mr_series(tmp_path, _vol(4, 8, 8))
    ds = pydicom.dcmread(paths[2])
    del ds.ImageOrientationPatient
    ds.save_as(paths[2])
    with pytest.raises(DicomError, match=f"{os.path.basename(paths[2])}: missing "
                                         "ImageOrientationPatient"):
        dicom.read_series(paths)


def test_series_missing_slice_is_non_uniform_error(tmp_path):
    paths = write_mr_series(tmp_path, _vol(6, 8, 8), spacing=(4.0, 1.0, 1.0))
    with pytest.raises(DicomError, match="non-uniform slice spacing.*8.0"):
        dicom.read_series(paths[:2] + paths[3:])


def test_series_truncated_slice_names_file(tmp_path):
    paths = write_mr_series(tmp_path, _vol(4, 8, 8))
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[:-40])
    with pytest.raises(DicomError, match=os.path.basename(paths[1]) + ".*cannot decode"):
        dicom.read_series(paths)


# --------------------------------------------------------------------------- real files


def _expected_single_slice_affine(ds, step):
    iop = np.asarray(ds.ImageOrientationPatient, float)
    ps = np.asarray(ds.PixelSpacing, float)
    aff = np.eye(4)
    aff[:3, 0] = np.cross(iop[:3], iop[3:]) * step
    aff[:3, 1] = iop[3:] * ps[0]
    aff[:3, 2] = iop[:3] * ps[1]
    aff[:3, 3] = np.asarray(ds.ImagePositionPatient, float)
    return aff


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_pydicom_real_files_geometry(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    v = dicom.read_series([path])
    assert v.array.shape == (1, ds.Rows, ds.Columns)
    step = float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
    np.testing.assert_allclose(v.affine, _expected_single_slice_affine(ds, step), atol=1e-6)
    np.testing.assert_allclose(
        v.spacing, [step, float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])], rtol=1e-6)
    expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(v.array[0], expected)


def test_nibabel_real_two_slice_oblique_series():
    """nibabel ships two slices of a real Siemens series (oblique IOP, 3 mm step, 2.5 mm
    thickness): sorted by position, step from positions (3 mm) not SliceThickness."""
    d = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")
    p0, p1 = os.path.join(d, "0.dcm"), os.path.join(d, "1.dcm")
    v = dicom.read_series([p1, p0])
    assert v.paths == [p0, p1]
    h0 = pydicom.dcmread(p0, stop_before_pixels=True)
    h1 = pydicom.dcmread(p1, stop_before_pixels=True)
    ipp0 = np.asarray(h0.ImagePositionPatient, float)
    ipp1 = np.asarray(h1.ImagePositionPatient, float)
    iop = np.asarray(h0.ImageOrientationPatient, float)
    np.testing.assert_allclose(v.affine[:3, 3], ipp0)
    np.testing.assert_allclose(v.affine[:3, 0], ipp1 - ipp0)
    np.testing.assert_allclose(v.affine[:3, 1], iop[3:] * 1.796875)
    np.testing.assert_allclose(v.affine[:3, 2], iop[:3] * 1.796875)
    assert v.spacing[0] == pytest.approx(3.0)
    assert v.array.shape == (2, 256, 256)


# --------------------------------------------------------------------------- codecs

LOSSLESS = [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLossless, JPEGLosslessSV1]


@pytest.mark.parametrize("ts", LOSSLESS, ids=lambda t: t.name)
def test_lossless_syntaxes_decode_exactly(tmp_path, ts):
    vol = RNG.integers(0, 4096, (3, 32, 40)).astype(np.uint16)  # J2K needs >= 32 px
    paths = write_mr_series(tmp_path, vol, transfer_syntax=ts)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    np.testing.assert_array_equal(dicom.read_series(paths).array, vol.astype(np.float32))
    img = _img(36, 32)
    x = dicom.read_xray(write_xray_dcm(tmp_path / "x.dcm", img, transfer_syntax=ts))
    np.testing.assert_array_equal(x.pixels, img.astype(np.float32))


@pytest.mark.parametrize("ts,tol", [(JPEGLSNearLossless, 2), (JPEG2000, 150)],
                         ids=["jpegls-near", "j2k-lossy"])
def test_lossy_syntaxes_decode_close(tmp_path, ts, tol):
    img = _smooth()
    x = dicom.read_xray(write_xray_dcm(tmp_path / "x", img, transfer_syntax=ts))
    assert np.max(np.abs(x.pixels - img)) <= tol
    assert np.std(x.pixels) > 100  # really an image, not a constant


def test_jpeg_baseline_decodes(tmp_path):
    img = (_smooth(hi=250)).astype(np.uint8)
    x = dicom.read_xray(write_xray_dcm(tmp_path / "x", img, transfer_syntax=JPEGBaseline8Bit))
    assert x.pixels.shape == img.shape
    assert np.mean(np.abs(x.pixels - img)) < 2.0


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_compressed_mr_small_matches_uncompressed(name):
    ref = dicom.read_series([get_testdata_file("MR_small.dcm")])
    v = dicom.read_series([get_testdata_file(name)])
    np.testing.assert_array_equal(v.array, ref.array)
    np.testing.assert_allclose(v.affine, ref.affine)


def test_pydicom_lossy_files_decode():
    # JPEG 2000 (4.91) and JPEG extended (4.51) encodings of the same NM image
    j2k = dicom.read_pixels(get_testdata_file("JPEG2000.dcm"))
    ext = dicom.read_pixels(get_testdata_file("JPGExtended.dcm"))
    assert j2k.shape == ext.shape == (1024, 256)
    assert np.mean(np.abs(j2k - ext)) < 10 and np.std(j2k) > 10
    near = dicom.read_pixels(get_testdata_file("JPEGLSNearLossless_16.dcm"))  # 4.81
    assert near.shape == (50, 10) and near.max() > near.min()


def test_read_header_stops_before_pixels(tmp_path):
    p = write_xray_dcm(tmp_path / "x", _img())
    h = dicom.read_header(p)
    assert "PixelData" not in h and h.Rows == 24
    assert dicom.is_image_header(h)
    assert dicom.header_problem(dicom.read_header(write_non_image_dcm(tmp_path / "s"))) == \
        "non-image"
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    assert dicom.header_problem(dicom.read_header(tmp_path / "DICOMDIR")) == "non-image"
