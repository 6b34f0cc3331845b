"""Tests for lumbarjax.data.preprocess (tiny arrays; decoders monkeypatched)."""

import json
import os
import types

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data import preprocess as pp
from lumbarjax.data.pipeline import CachedExamples, make_loader
from lumbarjax.errors import ConfigError
from tests.configs_for_tests import preprocess_config


def _affine(spacing=(4.0, 0.7, 0.7), origin=(-30.0, -100.0, 50.0)):
    # sagittal-like: d -> x (L-R), h -> -z (superior->inferior), w -> y (anterior->posterior)
    a = np.zeros((4, 4))
    a[0, 0] = spacing[0]
    a[2, 1] = -spacing[1]
    a[1, 2] = spacing[2]
    a[:3, 3] = origin
    a[3, 3] = 1.0
    return a


@pytest.mark.parametrize("shape", [(16, 48, 48), (8, 20, 20)])  # pad / crop
def test_resample_preserves_world_coordinates(shape):
    A = _affine()
    arr = np.zeros((12, 100, 90), np.float32)
    d, h, w = 5, 40, 38
    arr[d, h:h + 3, w:w + 3] = 1.0  # a small bright blob, centre (5, 41, 39)
    world = A @ np.array([d, h + 1, w + 1, 1.0])
    out, B = pp.resample_volume(types.SimpleNamespace(array=arr, affine=A), (4.0, 2.0, 2.0),
                                shape)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(B[:3, :3], axis=0), [4.0, 2.0, 2.0])
    predicted = (np.linalg.inv(B) @ world)[:3]
    peak = np.array(np.unravel_index(np.argmax(out), out.shape))
    assert out.max() > 0.1
    assert np.all(np.abs(peak - predicted) <= 1.0), (peak, predicted)
    # the grid centre stays the input centre
    c_in = A @ np.r_[(np.array(arr.shape) - 1) / 2, 1]
    c_out = B @ np.r_[(np.array(shape) - 1) / 2, 1]
    np.testing.assert_allclose(c_in, c_out, atol=1e-9)


def test_resample_pads_with_zeros_and_keeps_mean_inside():
    A = _affine(spacing=(2.0, 2.0, 2.0))
    arr = np.ones((4, 10, 10), np.float32)
    out, _ = pp.resample_volume((arr, A), (2.0, 2.0, 2.0), (8, 16, 16))
    # input occupies the centre: 4 x 10 x 10 voxels of ones, zeros around
    assert np.isclose(out.sum(), 400.0)
    assert out[0].sum() == 0 and out[:, 0].sum() == 0
    np.testing.assert_array_equal(out[2:6, 3:13, 3:13], 1.0)
    with pytest.raises(ConfigError, match="target spacing"):
        pp.resample_volume((arr, A), (2.0, 2.0), (8, 16, 16))


def test_resize_xray_keeps_physical_aspect_and_maps_points():
    img = np.ones((200, 100), np.float32)
    # square pixels: 2:1 portrait -> 64 x 32 content, padded left/right
    out, t = pp.resize_xray_with_transform(img, (64, 64))
    cols = np.flatnonzero(out.max(axis=0) > 0.5)
    rows = np.flatnonzero(out.max(axis=1) > 0.5)
    assert out.shape == (64, 64)
    assert len(rows) == 64 and len(cols) == 32 and cols[0] == 16
    assert t["spacing_mm"] is None
    # anisotropic pixels: 200 x 0.2 mm = 40 mm tall, 100 x 0.4 mm = 40 mm wide -> square
    out2, t2 = pp.resize_xray_with_transform(img, (64, 64), spacing=(0.2, 0.4))
    assert (out2 > 0.5).all()
    np.testing.assert_allclose(t2["spacing_mm"], [0.625, 0.625])
    # an XRayImage-like object supplies its own spacing; a dot lands where transform says
    dot = np.zeros((200, 100), np.float32)
    dot[50:53, 79:82] = 1.0
    xr = types.SimpleNamespace(pixels=dot, spacing=(0.2, 0.4))
    out3, t3 = pp.resize_xray_with_transform(xr, (64, 64))
    assert t3 == t2
    pred = pp.apply_xray_transform(t3, [51, 80])
    peak = np.array(np.unravel_index(np.argmax(out3), out3.shape))
    assert np.all(np.abs(peak - pred) <= 1.0), (peak, pred)
    assert pp.resize_xray(xr, (32, 16)).shape == (32, 16)


def test_normalize_intensity_robust():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, (50, 50)).astype(np.float32)
    x[0, 0] = 1e6  # a hot pixel must not squash the rest
    y = pp.normalize_intensity(x)
    assert y.dtype == np.float32 and y.min() == 0.0 and y.max() == 1.0
    assert 0.4 < np.median(y) < 0.6
    assert np.all(pp.normalize_intensity(np.full((4, 4), 7.0)) == 0.0)
    z = np.arange(16, dtype=np.float32).reshape(4, 4)
    z[0, 0] = np.nan
    nz = pp.normalize_intensity(z, 0, 100)
    assert nz[0, 0] == 0.0 and np.isfinite(nz).all() and nz.max() == 1.0
    # mask: percentiles over the non-padded region only
    padded = np.zeros((10, 10), np.float32)
    padded[:5] = np.linspace(10, 20, 50).reshape(5, 10)
    m = pp.normalize_intensity(padded, 0, 100, mask=padded > 0)
    assert np.isclose(m[:5].min(), 0.0) and np.isclose(m[:5].max(), 1.0)
    with pytest.raises(ConfigError):
        pp.normalize_intensity(z, 50, 10)


CFG = preprocess_config((4.0, 2.0, 2.0), (4, 16, 16), (24, 16))


@pytest.fixture
def fake_cohort(tmp_path, monkeypatch):
    """Three patients with placeholder input files and counting fake decoders."""
    calls = {"mri": 0, "xray": 0}
    rng = np.random.default_rng(0)

    def load_mri(paths, source, limits=None):
        calls["mri"] += 1
        if any("broken" in p for p in paths):
            raise ValueError(f"{paths[0]}: truncated pixel data")
        return types.SimpleNamespace(array=rng.random((6, 30, 30)).astype(np.float32) * 500,
                                     affine=_affine((4.0, 1.0, 1.0)))

    def load_xray(paths, source, limits=None):
        calls["xray"] += 1
        return rng.random((40, 20)).astype(np.float32) * 4000, (0.2, 0.2)

    monkeypatch.setattr(pp, "_load_mri", load_mri)
    monkeypatch.setattr(pp, "_load_xray", load_xray)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rows = []
    for i, pid in enumerate(["P1", "P2", "P3"]):
        mri = []
        for s in range(2):
            f = inputs / f"{pid}_{'broken' if pid == 'P3' else 'ok'}_{s}.dcm"
            f.write_bytes(b"x" * (10 + s))
            mri.append(str(f))
        xr = ""
        if pid != "P2":
            f = inputs / f"{pid}_xr.dcm"
            f.write_bytes(b"y")
            xr = str(f)
        rows.append({"patient_id": pid, "mri_paths": ";".join(mri), "mri_source": "dicom",
                     "xray_paths": xr, "xray_source": "dicom" if xr else ""})
    return pd.DataFrame(rows), calls, tmp_path / "cache"


def test_preprocess_cohort_outputs_and_errors(fake_cohort):
    records, calls, cache = fake_cohort
    df = pp.preprocess_cohort(records, CFG, str(cache))
    assert list(df["patient_id"]) == ["P1", "P2", "P3"]
    assert calls == {"mri": 3, "xray": 2}
    assert df.attrs["n_decoded"] == 4
    m = np.load(df.loc[0, "mri_file"])
    assert m.shape == (4, 16, 16) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    assert np.load(df.loc[0, "xray_file"]).shape == (24, 16)
    aff = np.asarray(json.loads(df.loc[0, "mri_affine"]))
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [4.0, 2.0, 2.0])
    assert json.loads(df.loc[0, "xray_transform"])["output_shape"] == [24, 16]
    assert df.loc[1, "xray_file"] == "" and df.loc[1, "xray_transform"] == ""
    # P3's MRI fails: recorded, excluded, X-ray still cached
    assert list(df["excluded"]) == [False, False, True]
    assert "truncated pixel data" in df.loc[2, "errors"] and df.loc[2, "mri_file"] == ""
    ex = df.attrs["exclusions"]
    assert list(ex["patient_id"]) == ["P3"] and ex.loc[0, "reason"] == "image_decode_failed"
    # no temp files left behind
    leftovers = [f for _, _, fs in os.walk(cache) for f in fs if f.startswith(".tmp-")]
    assert leftovers == []
    # the cache table feeds the pipeline directly
    src = CachedExamples(df, {"labels": {"y": np.array([1.0, 0.0, np.nan], np.float32)}})
    batch = next(make_loader(src, batch_size=4, shuffle=False, seed=0, num_epochs=1))
    assert batch["mri"].shape == (4, 4, 16, 16, 1) and batch["xray"].shape == (4, 24, 16, 1)
    np.testing.assert_array_equal(batch["mri_present"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batch["xray_present"], [1, 0, 1, 0])
    np.testing.assert_array_equal(batch["valid"], [1, 1, 1, 0])


def test_cache_hit_decodes_nothing_and_invalidates(fake_cohort):
    records, calls, cache = fake_cohort
    first = pp.preprocess_cohort(records, CFG, str(cache))
    calls.update(mri=0, xray=0)
    second = pp.preprocess_cohort(records, CFG, str(cache))
    # P3's broken MRI is retried (failures are never cached); everything else is a hit
    assert calls == {"mri": 1, "xray": 0}
    assert second.attrs["n_decoded"] == 0
    pd.testing.assert_frame_equal(first, second)
    # a config change (MRI shape) re-decodes the MRIs only, into new files
    calls.update(mri=0, xray=0)
    cfg2 = preprocess_config((4.0, 2.0, 2.0), (4, 8, 8), (24, 16))
    third = pp.preprocess_cohort(records, cfg2, str(cache))
    assert calls == {"mri": 3, "xray": 0}
    assert third.loc[0, "mri_file"] != first.loc[0, "mri_file"]
    assert np.load(third.loc[0, "mri_file"]).shape == (4, 8, 8)
    assert third.loc[0, "xray_file"] == first.loc[0, "xray_file"]
    # a modified input file (size/mtime) re-decodes that patient only
    calls.update(mri=0, xray=0)
    p = records.loc[0, "mri_paths"].split(";")[0]
    with open(p, "ab") as f:
        f.write(b"more")
    pp.preprocess_cohort(records, CFG, str(cache))
    assert calls == {"mri": 2, "xray": 0}  # P1 changed + P3 still broken


def test_preprocess_config_errors_name_keys(fake_cohort):
    records, _, cache = fake_cohort
    with pytest.raises(ConfigError, match="mri.spacing"):
        pp.preprocess_cohort(records, {"mri": {"shape": (4, 8, 8)}, "xray": {"shape": (8, 8)}},
                             str(cache))
    sub = pp.preprocessing_config(CFG)
    assert sub["mri"]["norm_percentiles"] == [1.0, 99.0]
    assert sub["xray"]["keep_physical_aspect"] is True
    # no fallback defaults: every setting the cache depends on must be in the config
    full = CFG.to_dict()
    for dotted in ("mri.norm_percentiles", "xray.norm_percentiles", "xray.keep_physical_aspect",
                   "mri.plausible_spacing_mm", "xray.plausible_spacing_mm"):
        section, key = dotted.split(".")
        partial = {**full, section: {k: v for k, v in full[section].items() if k != key}}
        with pytest.raises(ConfigError, match=dotted):
            pp.preprocessing_config(partial)


def test_preprocessing_config_accepts_configdict():
    import ml_collections as mc

    c = preprocess_config((4.0, 1.0, 1.0), (16, 64, 64), (128, 96),
                          xray_norm_percentiles=(0.5, 99.5))
    sub = pp.preprocessing_config(c)
    assert sub["mri"]["shape"] == [16, 64, 64] and sub["xray"]["norm_percentiles"] == [0.5, 99.5]
    assert pp.preprocessing_config(mc.FrozenConfigDict(c)) == sub
    assert pp.preprocessing_config(c.to_dict()) == sub  # a plain dict as well


def _write_sagittal_series(folder, dot_ijk, n_slices=6, rows=40, cols=32):
    """A tiny sagittal MR series (shuffled file names); returns the world coordinate of the dot.

    Rows run superior->inferior (-z), columns anterior->posterior (+y), slices left->right
    (+x in LPS). 4 mm slices, 0.8 mm pixels.
    """
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series_uid, study_uid = generate_uid(), generate_uid()
    row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row_dir, col_dir)  # +x
    origin = np.array([-10.0, -15.0, 20.0])
    ps, thick = 0.8, 4.0
    order = np.random.default_rng(0).permutation(n_slices)
    for k in range(n_slices):
        img = (100 + 10 * np.arange(rows)[:, None] + np.zeros((1, cols))).astype(np.uint16)
        if k == dot_ijk[0]:
            img[dot_ijk[1] - 1:dot_ijk[1] + 2, dot_ijk[2] - 1:dot_ijk[2] + 2] = 3000
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientID = "P9"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription = "T2 SAG"
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.ImagePositionPatient = list(origin + k * thick * normal)
        ds.PixelSpacing = [ps, ps]
        ds.SliceThickness = thick
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = img.tobytes()
        ds.save_as(os.path.join(folder, f"IM{order[k]:04d}"), enforce_file_format=True)
    d, h, w = dot_ijk
    # DICOM: pixel (r, c) at IPP + c * ps * row_dir + r * ps * col_dir
    return origin + d * thick * normal + w * ps * row_dir + h * ps * col_dir


def test_preprocess_real_dicom_series_keeps_geometry(tmp_path):
    pytest.importorskip("lumbarjax.data.dicom")  # written in parallel; required once present
    folder = tmp_path / "series"
    folder.mkdir()
    world = _write_sagittal_series(str(folder), (3, 22, 12))
    paths = sorted(str(p) for p in folder.iterdir())
    records = pd.DataFrame([{"patient_id": "P9", "mri_paths": ";".join(paths),
                             "mri_source": "dicom", "xray_paths": "", "xray_source": ""}])
    # full-range scaling: the 3x3 dot is far less than 1% of the voxels
    cfg = preprocess_config((4.0, 1.6, 1.6), (8, 24, 24), (8, 8), mri_norm_percentiles=(0, 100))
    df = pp.preprocess_cohort(records, cfg, str(tmp_path / "cache"))
    assert df.loc[0, "errors"] == "", df.loc[0, "errors"]
    vol = np.load(df.loc[0, "mri_file"])
    affine = pp.load_affine(df.loc[0])
    predicted = (np.linalg.inv(affine) @ np.r_[world, 1.0])[:3]
    peak = np.array(np.unravel_index(np.argmax(vol), vol.shape))
    assert np.all(np.abs(peak - predicted) <= 1.0), (peak, predicted)


def test_preprocess_nifti_inputs(tmp_path):
    nifti = pytest.importorskip("lumbarjax.data.nifti")  # written in parallel
    A = _affine(spacing=(4.0, 0.8, 0.8))
    mri = np.tile(np.linspace(0, 1, 20, dtype=np.float32)[None, :, None], (6, 1, 16))
    nifti.write_nifti(mri, A, str(tmp_path / "mri.nii.gz"))
    xr = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, None, :], (1, 40, 1))
    nifti.write_nifti(xr, _affine(spacing=(1.0, 0.2, 0.4)), str(tmp_path / "xr.nii.gz"))
    records = pd.DataFrame([{"patient_id": "N1", "mri_paths": str(tmp_path / "mri.nii.gz"),
                             "mri_source": "nifti", "xray_paths": str(tmp_path / "xr.nii.gz"),
                             "xray_source": "nifti"}])
    df = pp.preprocess_cohort(records, CFG, str(tmp_path / "cache"))
    assert df.loc[0, "errors"] == "", df.loc[0, "errors"]
    assert np.load(df.loc[0, "mri_file"]).shape == (4, 16, 16)
    t = json.loads(df.loc[0, "xray_transform"])
    assert t["input_shape"] == [40, 16]
    # 40 x 0.2 mm = 8 mm tall, 16 x 0.4 mm = 6.4 mm wide -> physical aspect kept
    assert t["scale"][1] == pytest.approx(2 * t["scale"][0])


def test_worker_processes_give_the_serial_result(tmp_path, monkeypatch):
    """index_cohort / preprocess_cohort with 2 worker processes == serial, bit for bit."""
    from malformed_corpus import PREPROCESS, valid_export

    from lumbarjax.data import index
    root = valid_export(str(tmp_path / "export"), ("P1", "P2", "P3"))
    monkeypatch.setattr(index, "MIN_FILES_FOR_WORKERS", 0)
    monkeypatch.setattr(pp, "MIN_PATIENTS_FOR_WORKERS", 0)
    serial = index.index_cohort(root)
    infos_serial, _ = index.scan_files(root)
    infos_pool, _ = index.scan_files(root, num_workers=2, chunk_size=4)
    assert [f.path for f in infos_pool] == [f.path for f in infos_serial]
    pd.testing.assert_frame_equal(index.index_cohort(root, num_workers=2), serial)
    from lumbarjax.data import clinical, cohort
    records, _ = cohort.build_cohort(serial, clinical.read_clinical(os.path.join(root, "clinical.csv")),
                                     root=root)
    a = pp.preprocess_cohort(records, PREPROCESS, str(tmp_path / "c0"))
    b = pp.preprocess_cohort(records, PREPROCESS, str(tmp_path / "c2"), num_workers=2)
    assert a.attrs["n_decoded"] == b.attrs["n_decoded"] == 6
    for col in ("mri_file", "xray_file"):
        for fa, fb in zip(a[col], b[col]):
            assert os.path.basename(fa) == os.path.basename(fb)  # same cache key
            np.testing.assert_array_equal(np.load(fa), np.load(fb))
    pd.testing.assert_frame_equal(a[["patient_id", "mri_affine", "xray_transform", "errors"]],
                                  b[["patient_id", "mri_affine", "xray_transform", "errors"]])
