"""Readers of the public radiograph sets (VinDr-SpineXR, BUU-LSPINE) on fixtures written in
the published layouts."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lumbarjax.data.public import buu_lspine, vindr_spinexr
from lumbarjax.errors import CohortError
from tests.dicom_factory import write_xray_dcm

HEADER = "image_id,lesion_type,xmin,ymin,xmax,ymax,rad_id\n"
IDS = ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "1f2e3d4c5b6a79881726354453627181",
       "2b3c4d5e6f708192a3b4c5d6e7f80912")


def _vindr(tmp_path, rows: str, images=IDS, split="train"):
    root = tmp_path / "vindr-spinexr"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{split}.csv").write_text(HEADER + rows)
    img_dir = root / f"{split}_images"
    img_dir.mkdir(exist_ok=True)
    for k, image_id in enumerate(images):
        px = (np.arange(200 * 120, dtype=np.uint16).reshape(200, 120) * (k + 1)) % 4096
        write_xray_dcm(img_dir / f"{image_id}.dicom", px, pixel_spacing=(0.2, 0.25),
                       bits_stored=12, patient_id=f"VD{k}")
    return root


GOOD = (f"{IDS[0]},Osteophytes,10.5,20,40.2,60,rad1\n"
        f"{IDS[0]},Disc space narrowing,30,100,90,118.5,rad1\n"
        f"{IDS[0]},Osteophytes,12,22,41,61,rad2\n"
        f"{IDS[0]},No finding,,,,,rad3\n"
        f"{IDS[1]},No finding,,,,,rad2\n"
        f"{IDS[2]},Spondylolysthesis,5,150,100,199,rad1\n")


def test_vindr_findings_table_counts_readers_and_labels(tmp_path):
    split = vindr_spinexr.read_split(_vindr(tmp_path, GOOD), "train")
    f = split.findings.set_index("image_id")
    assert len(split.excluded) == 0 and list(f.index) == sorted(IDS)
    assert f.loc[IDS[0], "n_readers"] == 3 and f.loc[IDS[0], "n_boxes"] == 3
    assert f.loc[IDS[0], "finding_osteophytes_readers"] == 2
    assert f.loc[IDS[0], "finding_osteophytes"] == 1
    assert f.loc[IDS[0], "finding_disc_space_narrowing"] == 1
    assert f.loc[IDS[0], "no_finding"] == 0
    assert f.loc[IDS[1], "no_finding"] == 1 and f.loc[IDS[1], "finding_osteophytes"] == 0
    assert f.loc[IDS[2], "finding_spondylolysthesis"] == 1
    assert (f.loc[IDS[0], ["rows", "cols"]].tolist() == [200, 120])
    assert f.loc[IDS[0], "spacing_row_mm"] == pytest.approx(0.2)
    # majority rule: 2 of 3 readers boxed osteophytes, 1 of 3 disc space narrowing
    maj = vindr_spinexr.findings_table(split.annotations, rule="majority").set_index("image_id")
    assert maj.loc[IDS[0], "finding_osteophytes"] == 1
    assert maj.loc[IDS[0], "finding_disc_space_narrowing"] == 0
    img = vindr_spinexr.read_image(split, IDS[2])
    assert img.pixels.shape == (200, 120) and img.spacing == (0.2, 0.25)


@pytest.mark.parametrize("row, message", [
    (f"{IDS[0]},Disc narrowing,1,2,3,4,rad1\n", "line 2: unknown lesion_type 'Disc narrowing'"),
    (f"{IDS[0]},Osteophytes,1,2,abc,4,rad1\n", "line 2: xmax='abc' is not a number"),
    (f"{IDS[0]},Osteophytes,10,2,3,4,rad1\n", "line 2: box (10.0, 2.0, 3.0, 4.0) is empty, inverted"),
    (f"{IDS[0]},Osteophytes,10,2,,4,rad1\n", "line 2: Osteophytes box is incomplete"),
    (f"{IDS[0]},No finding,1,2,3,4,rad1\n", "line 2: a 'No finding' row has a box"),
    (f"{IDS[0]},No finding,,,,,rad1\n{IDS[0]},Osteophytes,1,2,3,4,rad1\n",
     "reader 'rad1' marked both 'No finding' and lesion boxes"),
])
def test_vindr_bad_annotation_rows_name_the_line(tmp_path, row, message):
    root = _vindr(tmp_path, row)
    with pytest.raises(CohortError, match=None) as e:
        vindr_spinexr.read_split(root, "train")
    assert message in str(e.value) and "train.csv" in str(e.value)


def test_vindr_missing_columns_and_files(tmp_path):
    root = _vindr(tmp_path, GOOD)
    (root / "annotations" / "train.csv").write_text("image_id,lesion_type,xmin,ymin\n")
    with pytest.raises(CohortError, match=r"missing column\(s\) \['xmax', 'ymax', 'rad_id'\]"):
        vindr_spinexr.read_split(root, "train")
    with pytest.raises(CohortError, match=r"test.csv: not found \(incomplete download\? expected the VinDr-SpineXR annotations CSV"):
        vindr_spinexr.read_split(root, "test")


def test_vindr_partial_download_is_counted_exclusion(tmp_path):
    extra = "3c4d5e6f708192a3b4c5d6e7f8091a2b"
    rows = GOOD + f"{extra},No finding,,,,,rad1\n" + f"{IDS[1]},Osteophytes,0,0,130,10,rad1\n"
    root = _vindr(tmp_path, rows, images=IDS[:2] + ("ffff0000ffff0000ffff0000ffff0000",))
    (root / "train_images" / "ffff0000ffff0000ffff0000ffff0000.dicom").write_bytes(b"\0" * 10)
    split = vindr_spinexr.read_split(root, "train")
    reasons = dict(zip(split.excluded["image_id"], split.excluded["reason"]))
    assert set(reasons) == {IDS[2], extra, IDS[1], "ffff0000ffff0000ffff0000ffff0000"}
    assert f"{IDS[2]}.dicom is missing from train_images/" in reasons[IDS[2]]
    assert "lies outside the 120x200 image" in reasons[IDS[1]] and "line 9" in reasons[IDS[1]]
    assert "has no row in train.csv" in reasons["ffff0000ffff0000ffff0000ffff0000"]
    assert split.findings["image_id"].tolist() == [IDS[0]]
    with pytest.raises(CohortError, match="4 image\\(s\\) unusable"):
        vindr_spinexr.read_split(root, "train", strict=True)


# ----------------------------------------------------------------------------- BUU-LSPINE
def _la_lines(x0=100.0, y0=50.0, body=60.0, disc=12.0, depth=70.0):
    """11 lateral endplate lines cranial->caudal: (x1, y1, x2, y2)."""
    out, y = [], y0
    for _ in range(5):
        out.append((x0, y, x0 + depth, y))
        y += body
        out.append((x0, y, x0 + depth, y))
        y += disc
    out.append((x0, y, x0 + depth, y))
    return out


def _write_buu(folder, stem, lines, labels, *, header=False, size=(600, 400), film=True):
    folder.mkdir(parents=True, exist_ok=True)
    text = "x1,y1,x2,y2,label\n" if header else ""
    text += "".join(f"{a},{b},{c},{d},{lab}\n" for (a, b, c, d), lab in zip(lines, labels))
    (folder / f"{stem}.csv").write_text(text)
    if film:
        Image.fromarray(np.full(size, 90, np.uint8)).save(folder / f"{stem}.jpg")


NAMES_LA = ["L1a", "L1b", "L2a", "L2b", "L3a", "L3b", "L4a", "L4b", "L5a", "L5b", "S1a"]


def test_buu_both_vocabularies_and_header(tmp_path):
    root = tmp_path / "BUU-LSPINE"
    lines = _la_lines()
    _write_buu(root / "LA", "0001-F-037Y1", lines, [0] * 9 + [3, 0], header=True)
    # names in shuffled order, no header
    perm = [10, 3, 0, 1, 2, 4, 5, 6, 7, 8, 9]
    _write_buu(root / "LA", "0002-M-061Y1", [lines[i] for i in perm], [NAMES_LA[i] for i in perm])
    ap = [(100, 50 + 36 * k, 180, 52 + 36 * k) for k in range(10)]
    _write_buu(root / "AP", "0001-F-037Y0", ap, ["L1-top", "L1-bot", "L2-top", "L2-bot", "L3-top",
                                                 "L3-bot", "L4-top", "L4-bot", "L5-top", "L5-bot"])
    ds = buu_lspine.read_dataset(root)
    assert len(ds.excluded) == 0 and len(ds.images) == 3
    im = ds.images.set_index(["image_id", "view"])
    assert im.loc[("0001-F-037Y1", "LA"), "patient_id"] == "0001"
    assert im.loc[("0001-F-037Y1", "LA"), "sex"] == "F" and im.loc[("0001-F-037Y1", "LA"), "age"] == 37
    assert im.loc[("0001-F-037Y1", "LA"), "any_slip"] == 1
    assert np.isnan(im.loc[("0002-M-061Y1", "LA"), "any_slip"])
    a = ds.lines("0001-F-037Y1", "LA")
    b = ds.lines("0002-M-061Y1", "LA")
    assert a["endplate"].tolist() == list(buu_lspine.ENDPLATES["LA"])
    assert a["csv_line"].tolist() == list(range(2, 13))  # header = line 1
    np.testing.assert_allclose(a[list(buu_lspine.COORDS)], b[list(buu_lspine.COORDS)])
    assert a["slip_class"].tolist()[9] == 3 and b["slip_class"].isna().all()
    arr = buu_lspine.endplate_array(a)
    assert arr.shape == (11, 2, 2) and tuple(arr[1, 1]) == (110.0, 170.0)  # L1_inf right end (row, col)
    ap_lines = ds.lines("0001-F-037Y0", "AP")
    assert ap_lines["endplate"].tolist()[-1] == "L5_inf" and len(ap_lines) == 10
    assert buu_lspine.read_image(im.loc[("0001-F-037Y1", "LA"), "path"]).shape == (600, 400)


@pytest.mark.parametrize("mutate, message", [
    (lambda l, lab: (l[:10], lab[:10]), "10 endplate lines; a LA film has 11"),
    (lambda l, lab: (l, lab[:4] + ["7"] + lab[5:]), "line 5: unknown label '7'"),
    (lambda l, lab: (l, NAMES_LA[:10] + ["L5a"]), "duplicated ['L5_sup'], missing ['S1_sup']"),
    (lambda l, lab: ([(100, 50, 170, 50), (100, 40, 170, 40)] + l[2:], lab),
     "line 1: L1's upper endplate is not above its lower endplate"),
    (lambda l, lab: (l[:3] + [(100, 230, 470, 230)] + l[4:], lab), "line 4 (L2_inf): point outside the 400x600 image"),
])
def test_buu_bad_csv_errors_name_file_and_line(tmp_path, mutate, message):
    lines, labels = mutate(_la_lines(), ["0"] * 11)
    _write_buu(tmp_path / "LA", "0003-F-050Y1", lines, labels)
    with pytest.raises(CohortError) as e:
        buu_lspine.read_endplates(tmp_path / "LA" / "0003-F-050Y1.csv", "LA", (600, 400))
    assert message in str(e.value) and "0003-F-050Y1.csv" in str(e.value)


def test_buu_non_numeric_cell_and_bad_header(tmp_path):
    lines = [tuple(map(str, ln)) for ln in _la_lines()]
    lines[2] = ("100", "n/a", "170", "122")
    _write_buu(tmp_path / "LA", "x", lines, ["0"] * 11, header=True)
    with pytest.raises(CohortError, match="line 4: y1='n/a' is not a finite number"):
        buu_lspine.read_endplates(tmp_path / "LA" / "x.csv", "LA")
    (tmp_path / "LA" / "x.csv").write_text("a,b,c,d,e\n" + "1,2,3,4,0\n" * 11)
    with pytest.raises(CohortError, match="neither numbers nor the header"):
        buu_lspine.read_endplates(tmp_path / "LA" / "x.csv", "LA")


def test_buu_partial_download_is_counted_exclusion(tmp_path):
    root = tmp_path / "BUU"
    good = _la_lines()
    _write_buu(root / "LA", "0001-F-037Y1", good, ["0"] * 11)
    _write_buu(root / "LA", "0002-F-040Y1", good[:9], ["0"] * 9)           # wrong row count
    _write_buu(root / "LA", "0003-M-041Y1", good, ["0"] * 11, film=False)  # CSV without film
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(root / "LA" / "0004-M-042Y1.jpg")  # no CSV
    _write_buu(root / "LA", "0005-M-043Y1", good, ["0"] * 11)
    (root / "LA" / "0005-M-043Y1.jpg").write_bytes(b"\xff\xd8 truncated")  # broken film
    (root / "AP").mkdir()
    ds = buu_lspine.read_dataset(root)
    assert ds.images["image_id"].tolist() == ["0001-F-037Y1"]
    reasons = dict(zip(ds.excluded["image_id"], ds.excluded["reason"]))
    assert set(reasons) == {"0002-F-040Y1", "0003-M-041Y1", "0004-M-042Y1", "0005-M-043Y1"}
    assert "9 endplate lines" in reasons["0002-F-040Y1"]
    assert "has no film" in reasons["0003-M-041Y1"]
    assert "has no endplate CSV" in reasons["0004-M-042Y1"]
    assert "unreadable image" in reasons["0005-M-043Y1"]
    with pytest.raises(CohortError, match="4 film\\(s\\) unusable"):
        buu_lspine.read_dataset(root, strict=True)
    with pytest.raises(CohortError, match="BUU-LSPINE AP folder not found"):
        buu_lspine.read_dataset(tmp_path / "nothing")
