"""Tests for lumbarjax.data.cohort: join, exclusions, folds, summary (hand-made manifests)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data.cohort import build_cohort, check_no_leakage, cohort_summary, make_folds
from lumbarjax.errors import CohortError


def manifest_row(pid, role, paths, source="dicom"):
    return {
        "patient_id": pid, "role": role, "source": source, "paths": paths,
        "study_uid": "1.2.3", "series_uid": f"1.2.3.{len(paths)}",
        "modality": "DX" if role == "xray" else "MR", "series_description": "",
        "n_files": len(paths.split(";")), "spacing_mm": "0.1;0.1", "shape": "64;64", "reason": "test",
    }


def clinical_table():
    return pd.DataFrame(
        {
            "patient_id": ["001", "002", "003", "004", "005", "006", "006"],
            "age": [60, 70, 55, 80, 66, 50, 51],
            "sex": ["M", "F", "F", "M", "M", "F", "F"],
            "back_pain_pre": [80, 60, 70, 50, np.nan, 40, 40],
            "back_pain_post": [40, 50, 10, 20, np.nan, 10, 10],
            "xray_grade": [2, 3, 1, 4, np.nan, 2, 2],
            "zcq_success": [1, 0, 1, np.nan, np.nan, 1, 1],
        }
    )


def test_build_cohort_join_and_exclusions(tmp_path):
    root = str(tmp_path)
    manifest = pd.DataFrame(
        [
            manifest_row("001", "xray", "p1/x.dcm"),
            manifest_row("001", "mri_t2_sag", "p1/mr/1.dcm;p1/mr/2.dcm"),
            manifest_row("002", "xray", "p2/x.dcm"),  # X-ray only -> included, has_mri False
            manifest_row("004", "mri_t2_sag", "p4/t2.nii.gz", source="nifti"),
            manifest_row("005", "xray", "p5/x.dcm"),  # no label, no grade -> "no usable label"
            manifest_row("006", "xray", "p6/x.dcm"),  # conflicting duplicate clinical rows
            manifest_row("999", "xray", "p9/x.dcm"),  # no clinical row
            manifest_row("001", "localizer", "p1/loc.dcm"),  # unknown role ignored
        ]
    )
    records, exclusions = build_cohort(manifest, clinical_table(), root=root)

    assert records["patient_id"].tolist() == ["001", "002", "004"]
    r = records.set_index("patient_id")
    assert r.loc["001", "xray_paths"] == os.path.join(root, "p1", "x.dcm")
    assert r.loc["001", "mri_paths"] == ";".join(os.path.join(root, "p1", "mr", f) for f in ("1.dcm", "2.dcm"))
    assert r.loc["001", "xray_source"] == "dicom" and r.loc["001", "mri_source"] == "dicom"
    assert bool(r.loc["002", "has_xray"]) and not bool(r.loc["002", "has_mri"])
    assert r.loc["002", "mri_paths"] == "" and r.loc["002", "mri_source"] == ""
    assert not bool(r.loc["004", "has_xray"]) and r.loc["004", "mri_source"] == "nifti"
    # clinical and derived columns are present
    assert r.loc["001", "age"] == 60.0 and r.loc["001", "xray_grade"] == 2.0
    assert r.loc["001", "back_pain_improved50"] == 1.0 and r.loc["002", "back_pain_improved50"] == 0.0
    assert r.loc["001", "zcq_success"] == 1.0 and np.isnan(r.loc["004", "zcq_success"])
    for col in ("zcq_symptom_pre", "leg_pain_improved50"):
        assert col in records.columns
    assert records[["has_xray", "has_mri"]].dtypes.tolist() == [bool, bool]

    got = {(e.patient_id, e.reason) for e in exclusions.itertuples()}
    assert got == {
        ("003", "no images"),
        ("005", "no usable label"),
        ("006", "duplicate clinical rows"),
        ("999", "no clinical row"),
    }
    assert list(exclusions.columns) == ["patient_id", "reason", "detail"]
    assert (exclusions["detail"].str.len() > 0).all()
    assert len(records) + len(exclusions) == 7  # every patient accounted for exactly once


def test_id_map_translates_dicom_patient_ids(tmp_path):
    clin = pd.DataFrame({"patient_id": ["001", "002"], "dicom_id": ["PX-1", "PX-2"], "zcq_success": [1, 0]})
    manifest = pd.DataFrame([manifest_row("PX-1", "xray", "a.dcm"), manifest_row("H-77", "xray", "b.dcm")])
    records, exclusions = build_cohort(manifest, clin, {"id_map_column": "dicom_id", "id_map": {"H-77": "002"}},
                                       root=str(tmp_path))
    assert records["patient_id"].tolist() == ["001", "002"]
    assert len(exclusions) == 0
    with pytest.raises(CohortError, match="id_map_column 'nope'"):
        build_cohort(manifest, clin, {"id_map_column": "nope"}, root=str(tmp_path))


def test_ambiguous_manifest_rows_excluded(tmp_path):
    clin = pd.DataFrame({"patient_id": ["1"], "zcq_success": [1]})
    manifest = pd.DataFrame([manifest_row("1", "xray", "a.dcm"), manifest_row("1", "xray", "b.dcm")])
    records, exclusions = build_cohort(manifest, clin, root=str(tmp_path))
    assert len(records) == 0
    assert exclusions[["patient_id", "reason"]].values.tolist() == [["1", "ambiguous images"]]


def test_manifest_missing_columns():
    with pytest.raises(CohortError, match="manifest lacks column"):
        build_cohort(pd.DataFrame({"patient_id": ["1"]}), pd.DataFrame({"patient_id": ["1"]}), root="/")


def synthetic_records(n=40, seed=1):
    rng = np.random.default_rng(seed)
    zcq = rng.integers(0, 2, n).astype(float)
    zcq[:5] = np.nan
    return pd.DataFrame(
        {"patient_id": [f"P{i:03d}" for i in range(n)], "zcq_success": zcq,
         "xray_grade": rng.integers(0, 5, n).astype(float)}
    )


def test_folds_deterministic_stratified_no_leakage():
    records = synthetic_records()
    k = 5
    f0 = make_folds(records, k=k, seed=0)
    assert f0.shape == (40,) and f0.dtype == np.int64 and set(f0) == set(range(k))
    np.testing.assert_array_equal(f0, make_folds(records, k=k, seed=0))
    assert not np.array_equal(f0, make_folds(records, k=k, seed=1))
    # stratified: per fold, each stratum (0, 1, missing) within ±1 of its expected count
    strata = records["zcq_success"].map(lambda v: "missing" if np.isnan(v) else str(v))
    for s, n_s in strata.value_counts().items():
        per_fold = np.bincount(f0[(strata == s).to_numpy()], minlength=k)
        assert np.all(np.abs(per_fold - n_s / k) <= 1), (s, per_fold)
    check_no_leakage(f0, records)
    # independent of row order
    shuffled = records.sample(frac=1.0, random_state=3)
    fs = make_folds(shuffled, k=k, seed=0)
    np.testing.assert_array_equal(pd.Series(fs, index=shuffled.index).sort_index().to_numpy(), f0)


def test_folds_on_combination_merge_small_strata():
    records = synthetic_records()
    folds = make_folds(records, k=5, seed=0, stratify_on=["zcq_success", "xray_grade"])
    assert sorted(np.bincount(folds).tolist()) == [8, 8, 8, 8, 8]
    check_no_leakage(folds, records)
    # zcq_success alone still balanced after merging the small combined strata
    for v in (0.0, 1.0):
        per_fold = np.bincount(folds[(records["zcq_success"] == v).to_numpy()], minlength=5)
        assert per_fold.max() - per_fold.min() <= 2


def test_folds_errors():
    records = synthetic_records(n=4)
    with pytest.raises(CohortError, match="k=5 folds but only 4 patients"):
        make_folds(records, k=5)
    with pytest.raises(CohortError, match="not in the records"):
        make_folds(records, k=2, stratify_on="nope")
    dup = pd.concat([records, records.iloc[:1]], ignore_index=True)
    with pytest.raises(CohortError, match="P000"):
        make_folds(dup, k=2)
    plain = make_folds(records, k=2, stratify_on=None)
    assert np.bincount(plain).tolist() == [2, 2]


def test_check_no_leakage_detects_patient_in_two_folds():
    records = pd.DataFrame({"patient_id": ["a", "b", "a"]})
    check_no_leakage(np.array([0, 1, 0]), records)
    with pytest.raises(CohortError, match=r"\['a'\]"):
        check_no_leakage(np.array([0, 1, 1]), records)
    with pytest.raises(CohortError, match="shape"):
        check_no_leakage(np.array([0, 1]), records)


def test_summary_json_counts_no_ids(tmp_path):
    manifest = pd.DataFrame(
        [
            manifest_row("001", "xray", "p1/x.dcm"),
            manifest_row("001", "mri_t2_sag", "p1/mr/1.dcm"),
            manifest_row("002", "xray", "p2/x.dcm"),
            manifest_row("004", "mri_t2_sag", "p4/t2.nii.gz", source="nifti"),
            manifest_row("999", "xray", "p9/x.dcm"),
        ]
    )
    records, exclusions = build_cohort(manifest, clinical_table(), root=str(tmp_path))
    summary = cohort_summary(records, exclusions)
    text = json.dumps(summary)
    assert summary["n_included"] == 3
    assert summary["n_excluded"] == 4
    assert summary["n_excluded_by_reason"] == {"duplicate clinical rows": 1, "no clinical row": 1, "no images": 2}
    assert summary["modalities"] == {"xray_and_mri": 1, "xray_only": 1, "mri_only": 1, "neither": 0}
    assert summary["class_balance"]["zcq_success"] == {"0": 1, "1": 1, "missing": 1}
    assert summary["grade_distribution"]["xray_grade"] == {"2": 1, "3": 1, "4": 1}
    assert summary["label_available"]["back_pain_improved50"] == 3
    for pid in ("001", "002", "004", "999"):
        assert pid not in text
    assert str(tmp_path) not in text
