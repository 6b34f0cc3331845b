"""Known quirks of the real public downloads (issue 32, point 4), each on a fixture written in the
published layout (tests/public_fixtures.py), none needing a change to the dataset on disk.

RSNA 2024: two sagittal T2/STIR series in one study; instance numbers that start late or run
against the slice position; files of different byte size, or of different Rows/Columns, in one
series; coordinates on the Sagittal T1 / Axial T2. SPIDER: masks with every documented label
and with unknown ones; images whose direction matrix is not identity. (A study of train.csv
without images is pinned by test_public_rsna.py::test_partial_download_is_counted_not_silent.)
"""

import logging
import os
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from lumbarjax.data.dicom import read_series
from lumbarjax.data.index import resolve_paths
from lumbarjax.data.metaimage import read_metaimage
from lumbarjax.data.public import rsna2024, spider
from lumbarjax.schema import LEVELS
from tests.dicom_factory import compress_dataset
from tests.public_fixtures import write_rsna_fixture, write_spider_fixture, write_spider_scan

COORDS_CSV = "train_label_coordinates.csv"


def _series_dir(root, study_id, series_id):
    return os.path.join(root, "train_images", study_id, series_id)


def _instances(root, study_id, series_id):
    return sorted(int(f[:-4]) for f in os.listdir(_series_dir(root, study_id, series_id)))


def _rsna_point(root, study_id, series_id, instance, x, y):
    """RSNA's (instance_number, x = column, y = row) in LPS mm straight from that file's header."""
    ds = pydicom.dcmread(os.path.join(_series_dir(root, study_id, series_id), f"{instance}.dcm"))
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    return (np.asarray(ds.ImagePositionPatient, float) + x * col_spacing * iop[:3]
            + y * row_spacing * iop[3:])


def _position(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    return float(np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:]))


# --------------------------------------------------------------------------- RSNA 2024


def test_a_study_with_two_sagittal_t2_uses_the_annotated_one(tmp_path):
    # the unannotated series has more slices and the larger id: every other tie-break picks it
    studies = {"4003253": [("702807833", "Sagittal T2/STIR", "sag", 7),
                           ("3800798510", "Sagittal T2/STIR", "sag", 9),
                           ("1054713880", "Sagittal T1", "sag", 7)]}
    root = str(tmp_path / "rsna")
    write_rsna_fixture(root, studies=studies, instance_numbers={"702807833": range(1, 8)},
                       unannotated={"3800798510"})
    data = rsna2024.read_rsna2024(root, workers=1)
    assert data.exclusions.empty
    row = data.manifest.iloc[0]
    assert len(data.manifest) == 1 and row["series_uid"] == "702807833"
    assert row["n_files"] == 7 and row["shape"] == "7;32;32"
    assert row["reason"] == ("RSNA 2024 series description 'Sagittal T2/STIR', 7 slices; "
                             "2 'Sagittal T2/STIR' series, chosen: the one with canal coordinates")
    s = data.series.set_index("series_id")
    assert s.loc["3800798510", "role"] == "mri_t2_sag" and s.loc["3800798510", "n_files"] == 9
    canal = data.coordinates[data.coordinates["condition"] == "spinal_canal_stenosis"]
    assert len(canal) == 5 and set(canal["series_id"]) == {"702807833"}
    assert list(canal["d"]) == [3] * 5  # instance 4 of 1..7 numbered along the position
    for r in canal.itertuples():
        np.testing.assert_allclose([r.x_mm, r.y_mm, r.z_mm],
                                   _rsna_point(root, "4003253", "702807833", 4, r.x, r.y), atol=1e-6)


@pytest.mark.parametrize("numbers", [list(range(7, 22)), list(range(15, 0, -1)), list(range(21, 6, -1))],
                         ids=["start_at_7", "instance_1_at_the_highest_position", "both"])
def test_instance_numbers_off_or_against_position_land_on_the_right_slice(tmp_path, numbers):
    sid, se = "4646740", "3201256954"
    root = str(tmp_path / "rsna")
    write_rsna_fixture(root, studies={sid: [(se, "Sagittal T2/STIR", "sag", 15)]},
                       instance_numbers={se: numbers})
    assert _instances(root, sid, se) == sorted(numbers)
    # each level's canal point on a different instance: slices 0, 3, 7, 11, 14 by position
    path = os.path.join(root, COORDS_CSV)
    coords = pd.read_csv(path)
    want_d = [0, 3, 7, 11, 14]
    coords["instance_number"] = [numbers[d] for d in want_d]
    coords.to_csv(path, index=False)
    data = rsna2024.read_rsna2024(root, workers=1)
    assert data.exclusions.empty
    row = data.manifest.iloc[0]
    assert row["shape"] == "15;32;32" and row["spacing_mm"] == "4;0.8;0.8"
    paths = row["paths"].split(";")  # sorted by position along the slice normal, not by number
    assert [int(os.path.basename(p)[:-4]) for p in paths] == numbers
    pos = [_position(os.path.join(root, p)) for p in paths]
    np.testing.assert_allclose(np.diff(pos), 4.0, atol=1e-6)
    c = data.coordinates.sort_values("level", key=lambda s: s.map(LEVELS.index))
    assert list(c["d"]) == want_d
    vol = read_series(resolve_paths(row, root))
    for r in c.itertuples():
        assert vol.paths[r.d].endswith(f"/{r.instance_number}.dcm")
        want = _rsna_point(root, sid, se, r.instance_number, r.x, r.y)
        np.testing.assert_allclose([r.x_mm, r.y_mm, r.z_mm], want, atol=1e-6)
        np.testing.assert_allclose(vol.voxel_to_world([r.d, r.y, r.x]), want, atol=1e-6)


def test_files_of_different_byte_size_but_one_geometry_read_fine(tmp_path):
    clean = str(tmp_path / "clean")
    write_rsna_fixture(clean)
    root = str(tmp_path / "rsna")
    shutil.copytree(clean, root)
    folder = _series_dir(root, "4003253", "702807833")
    first, second = (os.path.join(folder, f"{n}.dcm") for n in _instances(root, "4003253", "702807833")[:2])
    ds = pydicom.dcmread(first)
    compress_dataset(ds, pydicom.uid.RLELossless)  # another transfer syntax in the same series
    ds.save_as(first, enforce_file_format=True)
    ds = pydicom.dcmread(second)
    ds.ImageComments = "x" * 1000  # a longer header
    ds.save_as(second, enforce_file_format=True)
    sizes = {os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)}
    assert len(sizes) == 3
    data, want = rsna2024.read_rsna2024(root, workers=1), rsna2024.read_rsna2024(clean, workers=1)
    assert data.exclusions.empty and len(data.manifest) == 3
    pd.testing.assert_frame_equal(data.manifest, want.manifest)
    pd.testing.assert_frame_equal(data.coordinates, want.coordinates)
    row = data.manifest.iloc[0]
    got, ref = read_series(resolve_paths(row, root)), read_series(resolve_paths(row, clean))
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_array_equal(got.affine, ref.affine)


def test_a_series_with_mixed_rows_columns_is_a_counted_logged_exclusion(tmp_path, caplog):
    root = str(tmp_path / "rsna")
    write_rsna_fixture(root)
    sid, se = "4003253", "702807833"
    last = _instances(root, sid, se)[-1]
    bad = os.path.join(_series_dir(root, sid, se), f"{last}.dcm")
    ds = pydicom.dcmread(bad)
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :24]).tobytes()
    ds.Columns = 24
    ds.save_as(bad, enforce_file_format=True)
    with caplog.at_level(logging.WARNING, logger="lumbarjax.data.public.rsna2024"):
        data = rsna2024.read_rsna2024(root, workers=1)
    ex = data.exclusions
    assert len(ex) == 1
    r = ex.iloc[0]
    assert (r["study_id"], r["series_id"], r["reason"]) == (sid, se, "unreadable or inconsistent series")
    assert r["detail"].startswith(f"study {sid} series {se}: mixed image sizes: ")
    assert r["detail"].endswith(f"/train_images/{sid}/{se}/{last}.dcm is 32x24 (Rows x Columns)")
    assert data.counts["exclusions"] == {"unreadable or inconsistent series": 1}
    assert data.counts["studies_with_t2_sag"] == 2 and list(data.manifest["patient_id"]) == ["4646740", "7143189"]
    assert data.manifest.attrs["missing"] == [{"patient_id": sid, "role": "mri_t2_sag",
                                               "reason": "no usable 'Sagittal T2/STIR' series"}]
    logged = [rec.getMessage() for rec in caplog.records]
    assert f"RSNA study {sid}: no usable 'Sagittal T2/STIR' series" in logged
    assert any(m.endswith(": 1 x unreadable or inconsistent series") for m in logged)
    # the series and its canal points stay in the tables, without a slice or mm
    assert data.series.set_index("series_id").loc[se, "n_files"] == 7
    canal = data.coordinates[(data.coordinates["study_id"] == sid)
                             & (data.coordinates["condition"] == "spinal_canal_stenosis")]
    assert len(canal) == 5 and canal["d"].isna().all() and canal["x_mm"].isna().all()


def test_coordinates_on_t1_and_axial_series_stay_on_their_own_series(tmp_path):
    from lumbarjax.pipelines.localise import centres_from_rsna

    root = str(tmp_path / "rsna")
    write_rsna_fixture(root)
    sid, t2, t1, ax = "4003253", "702807833", "1054713880", "2448190387"
    # a canal point labelled on the sagittal T1, and a foraminal one on the sagittal T2
    path = os.path.join(root, COORDS_CSV)
    coords = pd.read_csv(path, dtype=str)
    t1_mid, t2_mid = _instances(root, sid, t1)[3], _instances(root, sid, t2)[3]
    extra = pd.DataFrame([
        {"study_id": sid, "series_id": t1, "instance_number": t1_mid, "condition": "Spinal Canal Stenosis",
         "level": "L3/L4", "x": 20.0, "y": 20.0},
        {"study_id": sid, "series_id": t2, "instance_number": t2_mid,
         "condition": "Left Neural Foraminal Narrowing", "level": "L3/L4", "x": 21.0, "y": 22.0}])
    pd.concat([coords, extra.astype(str)]).to_csv(path, index=False)
    data = rsna2024.read_rsna2024(root, workers=1)
    assert data.exclusions.empty and data.manifest.iloc[0]["series_uid"] == t2
    c = data.coordinates[data.coordinates["study_id"] == sid]
    assert len(c) == 5 + 10 + 10 + 2
    by = c.groupby(["series_id", "role", "condition"]).size().to_dict()
    assert by == {(t2, "mri_t2_sag", "spinal_canal_stenosis"): 5,
                  (t2, "mri_t2_sag", "left_neural_foraminal_narrowing"): 1,
                  (t1, "mri_t1_sag", "spinal_canal_stenosis"): 1,
                  (t1, "mri_t1_sag", "left_neural_foraminal_narrowing"): 5,
                  (t1, "mri_t1_sag", "right_neural_foraminal_narrowing"): 5,
                  (ax, "mri_t2_ax", "left_subarticular_stenosis"): 5,
                  (ax, "mri_t2_ax", "right_subarticular_stenosis"): 5}
    # only points on the chosen sagittal T2 get a slice and mm; the others keep their pixels
    on_t2 = c["series_id"] == t2
    assert c.loc[on_t2, ["d", "x_mm", "y_mm", "z_mm"]].notna().all().all()
    assert c.loc[~on_t2, ["d", "x_mm", "y_mm", "z_mm"]].isna().all().all()
    fora = c[on_t2 & (c["condition"] == "left_neural_foraminal_narrowing")].iloc[0]
    np.testing.assert_allclose(fora[["x_mm", "y_mm", "z_mm"]].to_numpy(float),
                               _rsna_point(root, sid, t2, t2_mid, 21.0, 22.0), atol=1e-6)
    # the localiser's canal centres are the five T2 points: the T1 canal point is not mixed in
    canal_t2 = c[on_t2 & (c["condition"] == "spinal_canal_stenosis")].set_index("level")
    want = np.stack([canal_t2.loc[lv, ["x_mm", "y_mm", "z_mm"]].to_numpy(float) for lv in LEVELS])
    np.testing.assert_allclose(centres_from_rsna(data.coordinates)[sid], want, atol=0)
    t1_canal = c[(c["series_id"] == t1) & (c["condition"] == "spinal_canal_stenosis")].iloc[0]
    assert (t1_canal["instance_number"], t1_canal["x"], t1_canal["y"]) == (t1_mid, 20.0, 20.0)


# --------------------------------------------------------------------------- SPIDER

DOCUMENTED = list(range(1, 26)) + [100] + list(range(101, 126)) + list(range(201, 226))


def _label_mask(values):
    """(80, 4, 3) (k, j, i) mask: value v fills the k-row ``values.index(v)`` (4 x 3 = 12 voxels)."""
    mask = np.zeros((80, 4, 3), np.uint8)
    for k, v in enumerate(values):
        mask[k] = v
    return mask


def _spider_with_mask(tmp_path, values):
    root = str(tmp_path / "SPIDER")
    write_spider_fixture(root, patients=(1,), scans=("t2",))
    mask = _label_mask(values)
    _, mask_path = write_spider_scan(root, "1_t2", mask.astype(np.int16) * 3 + 50, mask)
    return root, sitk.ReadImage(mask_path)


def test_spider_mask_with_every_documented_label_reads_every_structure(tmp_path):
    root, ref = _spider_with_mask(tmp_path, DOCUMENTED)
    data = spider.read_spider(root)
    assert data.exclusions.empty and data.counts["exclusions"] == {}
    c = data.centres
    vert, disc = c[c["structure"] == "vertebra"], c[c["structure"] == "disc"]
    assert list(vert["label"]) == list(range(1, 26)) and list(disc["label"]) == list(range(1, 26))
    assert len(c) == 50 and set(c["n_voxels"]) == {12}  # 100 (canal), 101-125 (partial): no centre
    assert list(vert["level"]) == ["L5", "L4", "L3", "L2", "L1"] + [""] * 20
    assert list(disc["level"]) == ["L5S1", "L4L5", "L3L4", "L2L3", "L1L2"] + [""] * 20
    for r in c.itertuples():
        value = r.label + (200 if r.structure == "disc" else 0)
        want = ref.TransformContinuousIndexToPhysicalPoint((1.0, 1.5, float(DOCUMENTED.index(value))))
        np.testing.assert_allclose([r.x_mm, r.y_mm, r.z_mm], want, atol=1e-6)


def test_spider_unknown_mask_label_is_ignored_and_counted_naming_file_and_value(tmp_path, caplog):
    root, _ = _spider_with_mask(tmp_path, DOCUMENTED + [150, 255])
    with caplog.at_level(logging.WARNING, logger="lumbarjax.data.public.spider"):
        data = spider.read_spider(root)
    ex = data.exclusions
    assert len(ex) == 1 and data.counts["exclusions"] == {"unknown mask label": 1}
    r = ex.iloc[0]
    assert (r["patient_id"], r["file"], r["reason"]) == ("1", "masks/1_t2.mha", "unknown mask label")
    assert r["detail"] == ("value(s) 150 (12 voxels), 255 (12 voxels) not a SPIDER label (0, 1-25, "
                           "100, 101-125, 201-225): ignored, the other labels used")
    assert any(m.getMessage().endswith(": 1 x unknown mask label") for m in caplog.records)
    documented, _ = _spider_with_mask(tmp_path / "ref", DOCUMENTED)
    pd.testing.assert_frame_equal(data.centres, spider.read_spider(documented).centres)
    assert spider.read_spider(root, centres=False).exclusions.empty  # masks not decoded then


def _rotation(axis, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


ROT90 = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # i -> +z (rows), j -> +y, k -> -x (slices)
DIRECTIONS = {
    "rot90": ROT90,
    "oblique": _rotation(0, 20) @ _rotation(1, -15) @ ROT90,
    "mirrored": np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]),  # determinant -1
    "upside_down": np.array([[0.0, 0, -1], [0, -1, 0], [-1, 0, 0]]),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_spider_rotated_or_oblique_direction_keeps_every_voxel_and_the_mask_aligned(tmp_path, name):
    direction = DIRECTIONS[name]
    shape = (5, 20, 30)  # (k, j, i): k the slices, i along the spine
    mask = np.zeros(shape, np.uint8)
    for n in range(1, 6):
        mask[:, 4:12, (n - 1) * 6 + 2: n * 6] = n
        mask[:, 4:12, (n - 1) * 6: (n - 1) * 6 + 2] = 200 + n
    mask[:, 14:17, :] = 100
    image = np.arange(mask.size, dtype=np.int16).reshape(shape)  # the value names its voxel
    root = str(tmp_path / "SPIDER")
    write_spider_fixture(root, patients=(1,), scans=("t2",))
    img_path, mask_path = write_spider_scan(root, "1_t2", image, mask, spacing=(0.7, 0.6, 3.5),
                                            origin=(12.0, -80.0, 30.0), direction=direction)
    ref = sitk.ReadImage(img_path)
    np.testing.assert_allclose(np.reshape(ref.GetDirection(), (3, 3)), direction, atol=1e-12)
    vol, mvol = read_metaimage(img_path), read_metaimage(mask_path, labels=True)
    assert vol.array.shape == (5, 30, 20) and np.array_equal(vol.affine, mvol.affine)
    np.testing.assert_allclose(vol.spacing, (3.5, 0.7, 0.6), atol=1e-9)
    # every voxel: its (i, j, k) from its value, its mm against SimpleITK, its mask label
    d, h, w = np.indices(vol.array.shape).reshape(3, -1)
    k, j, i = np.unravel_index(vol.array[d, h, w].astype(int), shape)
    got = (vol.affine @ np.stack([d, h, w, np.ones_like(d)]).astype(float))[:3].T
    want = np.array([ref.TransformIndexToPhysicalPoint((int(a), int(b), int(c))) for a, b, c in zip(i, j, k)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(mvol.array[d, h, w], mask[k, j, i])
    # the reader: header geometry = the volume's, centres = SimpleITK's point of the label's mean index
    data = spider.read_spider(root)
    assert data.exclusions.empty
    s = data.series.iloc[0]
    assert s["shape"] == "5;30;20" and s["spacing_mm"] == "3.5;0.7;0.6"
    assert data.manifest.iloc[0]["shape"] == "5;30;20"
    c = data.centres
    assert len(c) == 10
    for r in c.itertuples():
        value = r.label + (200 if r.structure == "disc" else 0)
        kji = np.argwhere(mask == value).mean(axis=0)
        want = ref.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in kji[::-1]))
        np.testing.assert_allclose([r.x_mm, r.y_mm, r.z_mm], want, atol=1e-6)
        np.testing.assert_allclose(vol.voxel_to_world([r.d, r.h, r.w]), want, atol=1e-6)
    disc = c[c["structure"] == "disc"].set_index("level")
    assert list(disc.index) == ["L5S1", "L4L5", "L3L4", "L2L3", "L1L2"]
