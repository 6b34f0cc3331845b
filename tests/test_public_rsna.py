"""RSNA 2024 reader on a fixture written in the published layout, and the challenge metric."""

import math
import os
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest

from lumbarjax.data.dicom import read_series
from lumbarjax.data.index import read_manifest, resolve_paths, write_manifest
from lumbarjax.data.public import rsna2024
from lumbarjax.errors import CohortError, LumbarjaxError
from lumbarjax.eval.rsna_metric import rsna_score
from lumbarjax.schema import LEVELS
from tests.public_fixtures import RSNA_STUDIES, write_rsna_fixture


@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna") / "rsna-2024-lumbar-spine-degenerative-classification"
    info = write_rsna_fixture(root)
    return str(root), info


def _copy(rsna_root, tmp_path):
    dst = tmp_path / "rsna"
    shutil.copytree(rsna_root[0], dst)
    return str(dst)


def test_fixture_is_the_published_layout(rsna_root):
    root, _ = rsna_root
    assert sorted(os.listdir(root)) == ["train.csv", "train_images", "train_label_coordinates.csv",
                                        "train_series_descriptions.csv"]
    train = pd.read_csv(os.path.join(root, "train.csv"))
    assert list(train.columns[:3]) == ["study_id", "spinal_canal_stenosis_l1_l2",
                                       "spinal_canal_stenosis_l2_l3"]
    assert len(train.columns) == 26 and train.columns[-1] == "right_subarticular_stenosis_l5_s1"
    vals = set(train.iloc[:, 1:].stack().dropna())
    assert vals <= {"Normal/Mild", "Moderate", "Severe"}
    coords = pd.read_csv(os.path.join(root, "train_label_coordinates.csv"))
    assert list(coords.columns) == ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    assert set(coords["level"]) == {"L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"}
    assert "Left Neural Foraminal Narrowing" in set(coords["condition"])
    ds = pydicom.dcmread(os.path.join(root, "train_images", "4003253", "702807833", "1.dcm"))
    assert ds.PatientID == "4003253" and ds.StudyInstanceUID == "4003253"
    assert ds.SeriesInstanceUID == "702807833" and ds.InstanceNumber == 1
    for phi in ("PatientName", "PatientBirthDate", "SeriesDescription"):
        assert phi not in ds


def test_reads_manifest_labels_and_coordinates(rsna_root, tmp_path):
    root, info = rsna_root
    data = rsna2024.read_rsna2024(root, workers=1)
    m = data.manifest
    assert list(m["patient_id"]) == sorted(RSNA_STUDIES, key=int)
    assert set(m["role"]) == {"mri_t2_sag"} and set(m["source"]) == {"dicom"}
    row = m.iloc[0]
    assert row["series_uid"] == "702807833" and row["n_files"] == 7
    assert row["spacing_mm"] == "4;0.8;0.8" and row["shape"] == "7;32;32"
    assert all(p.startswith("train_images/4003253/702807833/") for p in row["paths"].split(";"))
    # the manifest is a valid lumbarjax manifest (round trip through write/read, files exist)
    write_manifest(m, tmp_path / "manifest.csv")
    back = read_manifest(tmp_path / "manifest.csv", root=root)
    assert list(back["paths"]) == list(m["paths"])
    # the other series are recorded, not dropped
    s = data.series.set_index("series_id")
    assert s.loc["1054713880", "role"] == "mri_t1_sag" and s.loc["2448190387", "role"] == "mri_t2_ax"
    assert len(data.series) == 6 and data.exclusions.empty
    # labels: long table, levels from schema, grades 0/1/2 as written
    lab = data.labels.set_index(["study_id", "condition", "level"])["grade"]
    for g in info["grades"]:
        for c in rsna2024.CONDITIONS:
            for lv in LEVELS:
                want = g[f"{c}_{lv}"]
                if want is None:
                    assert (g["study_id"], c, lv) not in lab.index
                else:
                    assert lab[(g["study_id"], c, lv)] == want
    assert data.counts["blank_label_cells"] == sum(v is None for g in info["grades"] for v in g.values())
    # coordinates on the sagittal T2: slice index d of that instance + LPS mm through the affine
    c = data.coordinates
    canal = c[c["condition"] == "spinal_canal_stenosis"]
    assert len(canal) == 15 and canal["d"].notna().all()
    assert c.loc[c["role"] == "mri_t1_sag", "d"].isna().all()
    first = canal[canal["study_id"] == "4003253"].iloc[2]
    vol = read_series(resolve_paths(row, root))
    d = int(first["d"])
    assert vol.paths[d].endswith(f"/{first['instance_number']}.dcm")
    np.testing.assert_allclose(first[["x_mm", "y_mm", "z_mm"]].to_numpy(float),
                               vol.voxel_to_world([d, first["y"], first["x"]]), atol=1e-6)


def test_level_grades_worst_level(rsna_root):
    data = rsna2024.read_rsna2024(rsna_root[0], workers=1)
    wide = rsna2024.level_grades(data.labels)
    g = rsna_root[1]["grades"][1]
    r = wide.set_index("patient_id").loc[g["study_id"]]
    per_level = [g[f"spinal_canal_stenosis_{lv}"] for lv in LEVELS]
    assert [r[f"spinal_canal_stenosis_{lv}"] for lv in LEVELS] == per_level
    assert r["stenosis_grade"] == max(per_level)


def test_process_pool_gives_the_same_tables(rsna_root):
    one = rsna2024.read_rsna2024(rsna_root[0], workers=1)
    two = rsna2024.read_rsna2024(rsna_root[0], workers=2)
    pd.testing.assert_frame_equal(one.manifest, two.manifest)
    pd.testing.assert_frame_equal(one.coordinates, two.coordinates)


def test_partial_download_is_counted_not_silent(rsna_root, tmp_path):
    root = _copy(rsna_root, tmp_path)
    img = os.path.join(root, "train_images")
    shutil.rmtree(os.path.join(img, "4003253", "1054713880"))          # a series folder missing
    for f in os.listdir(os.path.join(img, "4646740", "3201256954")):    # the T2 series is empty
        os.remove(os.path.join(img, "4646740", "3201256954", f))
    shutil.rmtree(os.path.join(img, "7143189"))                        # a whole study missing
    os.makedirs(os.path.join(img, "9999999", "1"))                      # a stray study folder
    coords = pd.read_csv(os.path.join(root, "train_label_coordinates.csv"))
    extra = coords.iloc[[0]].assign(series_id=123456)                   # coordinates, unknown series
    pd.concat([coords, extra]).to_csv(os.path.join(root, "train_label_coordinates.csv"), index=False)
    data = rsna2024.read_rsna2024(root, workers=1)
    ex = data.exclusions
    folders = ex[~ex["reason"].str.startswith("coordinates")]
    reasons = dict(zip(folders["study_id"] + "/" + folders["series_id"], folders["reason"]))
    assert reasons["4003253/1054713880"] == "series folder missing"
    assert reasons["4646740/3201256954"] == "series without files"
    assert reasons["7143189/"] == "study folder missing"
    assert reasons["9999999/"] == "study folder not described"
    unknown = ex[ex["reason"] == "coordinates for an unknown series"]
    assert list(unknown["series_id"]) == ["123456"]
    assert "train_label_coordinates.csv line 47" in ex.loc[ex["series_id"] == "123456", "detail"].iloc[0]
    assert list(data.manifest["patient_id"]) == ["4003253"]
    assert {m["patient_id"] for m in data.manifest.attrs["missing"]} == {"4646740", "7143189"}
    assert data.counts["exclusions"]["study folder missing"] == 1      # counted, labels kept
    assert "7143189" in set(data.labels["study_id"]) and data.counts["studies_labelled"] == 3
    assert data.counts["exclusions"]["coordinates for a series not downloaded"] == 10 + 5 + 5
    assert "coordinates for a missing instance" not in data.counts["exclusions"]
    assert len(data.coordinates) == 45 - 20  # 25 + 15 + 5 written; the extra row dropped too
    paths = data.write(str(tmp_path / "out"))
    assert len(pd.read_csv(paths["exclusions"])) == len(ex)


@pytest.mark.parametrize("case, message", [
    ("missing_csv", "train_series_descriptions.csv: not found"),
    ("missing_column", "missing column(s) ['spinal_canal_stenosis_l5_s1']"),
    ("bad_severity", "line 3 (study_id=4646740), column spinal_canal_stenosis_l2_l3: unknown severity 'Mild'"),
    ("bad_level", "line 2 (study_id=4003253): unknown level 'L6/S1'"),
    ("bad_description", "unknown series_description 'Sagittal T2'"),
])
def test_vocabulary_errors_name_file_and_line(rsna_root, tmp_path, case, message):
    root = _copy(rsna_root, tmp_path)
    train = os.path.join(root, "train.csv")
    if case == "missing_csv":
        os.remove(os.path.join(root, "train_series_descriptions.csv"))
    elif case == "missing_column":
        pd.read_csv(train).drop(columns="spinal_canal_stenosis_l5_s1").to_csv(train, index=False)
    elif case == "bad_severity":
        df = pd.read_csv(train, dtype=str)
        df.loc[1, "spinal_canal_stenosis_l2_l3"] = "Mild"
        df.to_csv(train, index=False)
    elif case == "bad_level":
        p = os.path.join(root, "train_label_coordinates.csv")
        df = pd.read_csv(p)
        df.loc[0, "level"] = "L6/S1"
        df.to_csv(p, index=False)
    else:
        p = os.path.join(root, "train_series_descriptions.csv")
        df = pd.read_csv(p)
        df.loc[0, "series_description"] = "Sagittal T2"
        df.to_csv(p, index=False)
    with pytest.raises(CohortError) as e:
        rsna2024.read_rsna2024(root, workers=1)
    assert message in str(e.value)


# --------------------------------------------------------------------------- metric


def test_rsna_metric_matches_a_hand_computation():
    # Two studies. Study A: canal L1L2 severe, L2L3 normal; foraminal left L1L2 moderate;
    # subarticular right L1L2 normal. Study B: canal L1L2 moderate, L2L3 normal; foraminal
    # right L2L3 normal; subarticular left L2L3 severe.
    sol = pd.DataFrame([
        ("A", "spinal_canal_stenosis", "L1L2", 2), ("A", "spinal_canal_stenosis", "L2L3", 0),
        ("A", "left_neural_foraminal_narrowing", "L1L2", 1), ("A", "right_subarticular_stenosis", "L1L2", 0),
        ("B", "spinal_canal_stenosis", "L1L2", 1), ("B", "spinal_canal_stenosis", "L2L3", 0),
        ("B", "right_neural_foraminal_narrowing", "L2L3", 0), ("B", "left_subarticular_stenosis", "L2L3", 2),
    ], columns=["study_id", "condition", "level", "grade"])
    p = [(0.2, 0.3, 0.5), (0.7, 0.2, 0.1), (0.5, 0.4, 0.1), (0.8, 0.1, 0.1),
         (0.3, 0.6, 0.1), (0.9, 0.05, 0.05), (0.6, 0.2, 0.2), (0.25, 0.25, 1.0)]  # last row sums to 1.5
    sub = sol[["study_id", "condition", "level"]].copy()
    sub[["p_normal_mild", "p_moderate", "p_severe"]] = p
    ln = math.log
    spinal = (4 * -ln(0.5) + 1 * -ln(0.7) + 2 * -ln(0.6) + 1 * -ln(0.9)) / (4 + 1 + 2 + 1)
    foraminal = (2 * -ln(0.4) + 1 * -ln(0.6)) / 3
    subarticular = (1 * -ln(0.8) + 4 * -ln(1.0 / 1.5)) / 5     # row normalised before the log
    # any severe: A label 1, weight max(4,1)=4, pred max(0.5,0.1); B label 0, weight 2, pred 0.1
    any_severe = (4 * -ln(0.5) + 2 * -ln(1 - 0.1)) / 6
    got = rsna_score(sol, sub)
    assert got["spinal"] == pytest.approx(spinal, rel=1e-12)
    assert got["foraminal"] == pytest.approx(foraminal, rel=1e-12)
    assert got["subarticular"] == pytest.approx(subarticular, rel=1e-12)
    assert got["any_severe_spinal"] == pytest.approx(any_severe, rel=1e-12)
    assert got["score"] == pytest.approx((spinal + foraminal + subarticular + any_severe) / 4, rel=1e-12)


def test_rsna_metric_agrees_with_sklearn_and_rejects_gaps():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    rows = [(str(s), "spinal_canal_stenosis", lv, int(rng.integers(0, 3))) for s in range(20) for lv in LEVELS]
    sol = pd.DataFrame(rows, columns=["study_id", "condition", "level", "grade"])
    probs = rng.dirichlet([1, 1, 1], len(sol))
    sub = sol[["study_id", "condition", "level"]].copy()
    sub[["p_normal_mild", "p_moderate", "p_severe"]] = probs
    w = np.array([1, 2, 4])[sol["grade"]]
    want = log_loss(sol["grade"], probs, sample_weight=w, labels=[0, 1, 2])
    got = rsna_score(sol, sub)
    assert got["spinal"] == pytest.approx(want, rel=1e-9)
    assert math.isnan(got["foraminal"])
    assert got["score"] == pytest.approx((got["spinal"] + got["any_severe_spinal"]) / 2)
    with pytest.raises(LumbarjaxError, match="no prediction for study 3"):
        rsna_score(sol, sub.drop(index=17))


# --------------------------------------------------------------------------- demo in RSNA layout


def test_synthetic_pretraining_cohort_in_rsna_layout_keeps_todays_labels(tmp_path):
    from lumbarjax.synthetic.rsna_layout import write_synthetic_pretraining
    from lumbarjax.synthetic import sample_patients, stenosis_grades

    out = tmp_path / "rsna_demo"
    summary = write_synthetic_pretraining(out, n_patients=10, seed=1, mri_size=(48, 48))
    assert not summary["reused"] and not os.path.exists(out / ".source")
    assert write_synthetic_pretraining(out, n_patients=10, seed=1, mri_size=(48, 48))["reused"]
    data = rsna2024.read_rsna2024(out, workers=1)
    assert data.exclusions.empty and len(data.manifest) == summary["n_studies"]
    # today's labels table: the same reader-noised grade per patient (worst level)
    _, truth = sample_patients(10, 1, edge_cases=False)
    today = stenosis_grades(truth, 1)
    today = dict(zip(today["patient_id"].str[2:].astype(int) + 4_000_000, today["stenosis_grade"]))
    wide = rsna2024.level_grades(data.labels)
    assert len(wide) == sum(np.isfinite(v) for v in today.values())
    for sid, grade in zip(wide["patient_id"], wide["stenosis_grade"]):
        assert grade == today[int(sid)]
    # canal coordinates land on the synthetic disc centres (x to the nearest slice)
    gt = pd.read_csv(out / "ground_truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    c = data.coordinates
    for r in c.itertuples():
        want = [gt.loc[r.study_id, f"disc_{r.level}_{a}_mm"] for a in "xyz"]
        assert abs(r.x_mm - want[0]) <= 2.3
        np.testing.assert_allclose([r.y_mm, r.z_mm], want[1:], atol=0.01)
    other = tmp_path / "not_ours"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(Exception, match="refusing to overwrite"):
        write_synthetic_pretraining(other, n_patients=10, seed=1, mri_size=(48, 48))


def test_synthetic_rsna_layout_is_the_same_bytes_with_worker_processes(tmp_path):
    """num_workers=2 writes the cohort and re-writes its studies in spawned processes (from
    MIN_STUDIES_FOR_WORKERS studies on): every file equals the serial write's."""
    from lumbarjax.synthetic import rsna_layout

    n = rsna_layout.MIN_STUDIES_FOR_WORKERS + 2
    rsna_layout.write_synthetic_pretraining(tmp_path / "serial", n_patients=n, seed=2, mri_size=(48, 48))
    rsna_layout.write_synthetic_pretraining(tmp_path / "workers", n_patients=n, seed=2, mri_size=(48, 48),
                                            num_workers=2)

    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

    a, b = files(tmp_path / "serial"), files(tmp_path / "workers")
    assert a == b and sum(f.endswith(".dcm") for f in a) > 50
    for f in a:
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "workers" / f).read_bytes(), f


@pytest.mark.slow  # generates the cohort twice (~20 s CPU): bash scripts/test.sh -m slow tests/test_public_rsna.py
def test_rsna_layout_demo_gives_the_same_volumes_labels_and_folds_as_the_old_path(tmp_path):
    from lumbarjax.data.cohort import make_folds
    from lumbarjax.data.index import index_cohort
    from lumbarjax.synthetic.rsna_layout import write_synthetic_pretraining
    from lumbarjax.synthetic import make_pretraining_cohort

    old = make_pretraining_cohort(tmp_path / "old", n_patients=10, seed=1, mri_size=(48, 48))
    write_synthetic_pretraining(tmp_path / "new", n_patients=10, seed=1, mri_size=(48, 48))
    m = index_cohort(old["export_dir"])
    m = m[m["role"] == "mri_t2_sag"].set_index("patient_id")
    new = rsna2024.read_rsna2024(tmp_path / "new", workers=1)
    r = new.manifest.set_index("patient_id")
    assert len(r) == len(m)
    for pid in m.index:
        a = read_series(resolve_paths(m.loc[pid], old["export_dir"]))
        b = read_series(resolve_paths(r.loc[str(4_000_000 + int(pid[2:]))], str(tmp_path / "new")))
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)
    lab = pd.read_csv(old["labels_csv"]).dropna().reset_index(drop=True)
    wide = rsna2024.level_grades(new.labels)
    assert list(lab["stenosis_grade"]) == list(wide["stenosis_grade"])
    f_old = make_folds(lab, k=5, seed=2, stratify_on="stenosis_grade")
    f_new = make_folds(wide, k=5, seed=2, stratify_on="stenosis_grade")
    np.testing.assert_array_equal(f_old, f_new)
