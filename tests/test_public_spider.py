"""SPIDER reader and the MetaImage reader on fixtures written with SimpleITK in the published layout."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lumbarjax.data.index import read_manifest, write_manifest
from lumbarjax.data.metaimage import read_metaimage
from lumbarjax.data.public import spider
from lumbarjax.errors import CohortError, NiftiError
from tests.configs_for_tests import preprocess_config
from tests.public_fixtures import (
    ROWS_PER_VERTEBRA,
    SPIDER_ORIGIN,
    SPIDER_SPACING,
    write_spider_fixture,
)


@pytest.fixture(scope="module")
def spider_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spider") / "SPIDER"
    info = write_spider_fixture(root)
    return str(root), info


def _copy(spider_root, tmp_path):
    dst = tmp_path / "spider"
    shutil.copytree(spider_root[0], dst)
    return str(dst)


def test_metaimage_keeps_every_voxel_at_its_patient_coordinate(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1000, size=(9, 7, 4)).astype(np.int16)  # (k, j, i)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.3, 0.5, 0.45))
    img.SetOrigin((12.0, -80.0, 30.0))
    theta = np.deg2rad(8)  # a slightly oblique sagittal: i ~ x, j ~ y rotated about x, k ~ z
    c, s = np.cos(theta), np.sin(theta)
    img.SetDirection((1, 0, 0, 0, c, -s, 0, s, c))
    path = str(tmp_path / "x.mha")
    sitk.WriteImage(img, path)
    vol = read_metaimage(path)
    assert vol.array.shape == (4, 9, 7)  # d ~ x (i), h ~ z (k, flipped to run inferior), w ~ y (j)
    np.testing.assert_allclose(vol.spacing, (3.3, 0.45, 0.5), atol=1e-9)
    assert vol.affine[2, 1] < 0 and vol.affine[1, 2] > 0
    for d, h, w in rng.integers(0, (4, 9, 7), size=(20, 3)):
        k = 8 - h
        assert vol.array[d, h, w] == arr[k, w, d]
        want = img.TransformIndexToPhysicalPoint((int(d), int(w), int(k)))
        np.testing.assert_allclose(vol.voxel_to_world([d, h, w]), want, atol=1e-9)
    with pytest.raises(NiftiError, match="unreadable MetaImage"):
        open(tmp_path / "bad.mha", "w").write("not an image")
        read_metaimage(tmp_path / "bad.mha")


def test_reads_manifest_gradings_and_disc_centres(spider_root, tmp_path):
    root, info = spider_root
    data = spider.read_spider(root)
    m = data.manifest
    assert list(m["patient_id"]) == ["1", "2"]
    assert list(m["paths"]) == ["images/1_t2.mha", "images/2_t2.mha"] and set(m["source"]) == {"mha"}
    assert m.iloc[0]["shape"] == "5;40;24" and m.iloc[0]["spacing_mm"] == "3.5;0.7;0.6"
    write_manifest(m, tmp_path / "manifest.csv")
    assert list(read_manifest(tmp_path / "manifest.csv", root=root)["paths"]) == list(m["paths"])
    assert sorted(data.series["scan"]) == sorted(["t1", "t2", "t2_SPACE"] * 2)
    assert data.exclusions.empty
    g = data.gradings
    assert list(g.columns[4:]) == ["modic", "up_endplate", "low_endplate", "spondylolisthesis",
                                   "disc_herniation", "disc_narrowing", "disc_bulging", "pfirrmann_grade"]
    r = g[(g["patient_id"] == "2") & (g["ivd_label"] == 1)].iloc[0]
    assert r["level"] == "L5S1" and r["mask_value"] == 201 and r["pfirrmann_grade"] == 1 + (1 + 2) % 5
    assert r["disc_herniation"] == 1
    assert g.loc[g["ivd_label"] == 5, "level"].unique().tolist() == ["L1L2"]
    assert g.loc[g["ivd_label"] == 6, "level"].unique().tolist() == [""]  # T12/L1: no lumbar level
    wide = spider.level_labels(g).set_index("patient_id")
    assert wide.loc["1", "pfirrmann_grade_L4L5"] == 1 + (2 + 1) % 5
    # disc centres in patient mm: disc 200 + n spans k rows (n-1)*6, +1; columns 4..13; all x
    c = data.centres
    disc = c[(c["patient_id"] == "1") & (c["scan"] == "t2") & (c["structure"] == "disc")].set_index("level")
    sx, sy, sz = SPIDER_SPACING
    ox, oy, oz = SPIDER_ORIGIN
    for n, lv in ((1, "L5S1"), (3, "L3L4"), (5, "L1L2")):
        want = (ox + sx * 2.0, oy + sy * 8.5, oz + sz * ((n - 1) * ROWS_PER_VERTEBRA + 0.5))
        np.testing.assert_allclose(disc.loc[lv, ["x_mm", "y_mm", "z_mm"]].to_numpy(float), want, atol=1e-6)
    vert = c[(c["patient_id"] == "1") & (c["scan"] == "t2") & (c["structure"] == "vertebra")]
    assert vert.set_index("label").loc[1, "level"] == "L5" and len(vert) == 6
    assert disc.loc["L5S1", "z_mm"] < disc.loc["L1L2", "z_mm"]  # counted from the bottom


def test_partial_download_and_bad_values(spider_root, tmp_path):
    root = _copy(spider_root, tmp_path)
    os.remove(os.path.join(root, "masks", "2_t1.mha"))        # image without mask: counted
    os.remove(os.path.join(root, "images", "2_t2.mha"))       # ... and its mask -> error below
    with pytest.raises(CohortError, match=r"masks/2_t2.mha: mask without its image images/2_t2.mha"):
        spider.read_spider(root)
    os.remove(os.path.join(root, "masks", "2_t2.mha"))
    ov = pd.read_csv(os.path.join(root, "overview.csv"))
    ov = ov[ov["new_file_name"] != "1_t1"]
    ov.to_csv(os.path.join(root, "overview.csv"), index=False)
    data = spider.read_spider(root, centres=False)
    reasons = dict(zip(data.exclusions["file"], data.exclusions["reason"]))
    assert reasons["images/2_t1.mha"] == "image without mask"
    assert reasons["images/2_t2.mha"] == "listed in overview.csv, not downloaded"
    assert reasons["images/1_t1.mha"] == "not in overview.csv"
    assert data.manifest.set_index("patient_id").loc["2", "paths"] == "images/2_t2_SPACE.mha"
    assert data.centres.empty
    gp = os.path.join(root, "radiological_gradings.csv")
    g = pd.read_csv(gp)
    g.loc[3, "Pfirrman grade"] = 6
    g.to_csv(gp, index=False)
    with pytest.raises(CohortError, match=r"line 5 \(Patient=1\), column 'Pfirrman grade': value '6'"):
        spider.read_spider(root)
    g.rename(columns={"Pfirrman grade": "Pfirrmann grade"}).to_csv(gp, index=False)
    with pytest.raises(CohortError, match=r"missing column\(s\) \['Pfirrman grade'\]"):
        spider.read_spider(root)
    os.remove(gp)
    with pytest.raises(CohortError, match="radiological_gradings.csv: not found"):
        spider.read_spider(root)


def test_mask_on_another_grid_is_an_error(spider_root, tmp_path):
    root = _copy(spider_root, tmp_path)
    p = os.path.join(root, "masks", "1_t2.mha")
    img = sitk.ReadImage(p)
    img.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(img, p)
    with pytest.raises(CohortError, match="1_t2.mha: mask grid .* differs from its image"):
        spider.read_spider(root)


def test_mha_manifest_rows_preprocess_like_any_mri(spider_root, tmp_path):
    from lumbarjax.data.index import resolve_paths
    from lumbarjax.data.preprocess import preprocess_cohort

    root = spider_root[0]
    m = spider.read_spider(root, centres=False).manifest
    records = pd.DataFrame({"patient_id": m["patient_id"], "xray_paths": "", "xray_source": "",
                            "mri_paths": [";".join(resolve_paths(r, root)) for _, r in m.iterrows()],
                            "mri_source": m["source"]})
    cfg = preprocess_config((3.5, 1.4, 1.2), (4, 16, 16), (32, 32))
    cache = preprocess_cohort(records, cfg, str(tmp_path / "cache"))
    assert not cache["excluded"].any()
    arr = np.load(cache.loc[0, "mri_file"])
    assert arr.shape == (4, 16, 16) and np.isfinite(arr).all() and arr.std() > 0
