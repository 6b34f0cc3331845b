"""Tests of the synthetic demo cohort (lumbarjax.synthetic): small n, small images."""

import glob
import hashlib
import json
import os
import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy.ndimage import map_coordinates

from lumbarjax import atomic
from lumbarjax import synthetic
from lumbarjax.synthetic import anatomy, ceilings, cohort as cohort_module, outcomes, streams
from lumbarjax.synthetic.__main__ import main as synthetic_main
from lumbarjax.errors import ConfigError

LEVELS = ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")
SMALL = dict(xray_size=(192, 160), mri_size=(96, 96), n_mc=2000)


def _make(root, n=10, seed=0, **kw):
    args = dict(SMALL)
    args.update(kw)
    return synthetic.make_cohort(root, n, seed, **args)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    summary = _make(root, 12, seed=3)
    return root, summary


def _all_files(root):
    return sorted(f for f in glob.glob(os.path.join(root, "export", "**", "*"), recursive=True) if os.path.isfile(f))


def _image_datasets(root):
    """rel path → dataset, for every file that is a DICOM image."""
    out = {}
    for f in _all_files(root):
        try:
            ds = pydicom.dcmread(f)
        except Exception:
            continue
        if "PixelData" in ds:
            out[os.path.relpath(f, root)] = ds
    return out


@pytest.fixture(scope="module")
def datasets(cohort):
    return _image_datasets(cohort[0])


@pytest.fixture(scope="module")
def truth(cohort):
    return pd.read_csv(os.path.join(cohort[0], "ground_truth.csv"), keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def clinical(cohort):
    return pd.read_csv(os.path.join(cohort[0], "clinical.csv"), dtype={"patient_id": str})


def _by_series(datasets):
    out = {}
    for ds in datasets.values():
        out.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return out


def _pixel_hashes(root):
    return {rel: hashlib.sha256(ds.PixelData).hexdigest() for rel, ds in _image_datasets(root).items()}


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_differs(tmp_path, cohort):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _make(a, 8, seed=5)
    _make(b, 8, seed=5)
    _make(c, 8, seed=6)
    for name in ("clinical.csv", "ground_truth.csv", "ground_truth_summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    fa, fb = _all_files(a), _all_files(b)
    assert [os.path.relpath(f, a) for f in fa] == [os.path.relpath(f, b) for f in fb]
    for x, y in zip(fa, fb):
        assert open(x, "rb").read() == open(y, "rb").read(), x
    ha, hc = _pixel_hashes(a), _pixel_hashes(c)
    assert len(ha) > 50
    assert not set(ha.values()) & set(hc.values())
    assert (a / "clinical.csv").read_bytes() != (c / "clinical.csv").read_bytes()


def test_worker_processes_write_the_same_bytes(tmp_path):
    """make_cohort(num_workers=2) spawns writers once there are MIN_PATIENTS_FOR_WORKERS
    imaged patients; every file, table and the summary's file list equal the serial write."""
    n = synthetic.MIN_PATIENTS_FOR_WORKERS + 2
    a = _make(tmp_path / "serial", n, seed=3)
    b = _make(tmp_path / "workers", n, seed=3, num_workers=2)
    assert [os.path.relpath(f, a["out_dir"]) for f in a["files"]] == \
        [os.path.relpath(f, b["out_dir"]) for f in b["files"]]
    fa, fb = _all_files(tmp_path / "serial"), _all_files(tmp_path / "workers")
    assert len(fa) > 100 and [os.path.relpath(f, tmp_path / "serial") for f in fa] == \
        [os.path.relpath(f, tmp_path / "workers") for f in fb]
    for x, y in zip(fa, fb):
        assert open(x, "rb").read() == open(y, "rb").read(), x
    for name in ("clinical.csv", "ground_truth.csv"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes(), name


def test_patient_data_independent_of_image_size(tmp_path):
    _make(tmp_path / "a", 8, seed=2)
    _make(tmp_path / "b", 8, seed=2, xray_size=(128, 96), mri_size=(64, 64))
    assert (tmp_path / "a" / "clinical.csv").read_bytes() == (tmp_path / "b" / "clinical.csv").read_bytes()


# ----------------------------------------------------------------------------- DICOM validity


def test_files_are_valid_dicom(datasets, truth, cohort):
    root, summary = cohort
    assert len(datasets) == summary["n_dicom_files"]
    modalities = set()
    for rel, ds in datasets.items():
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns), rel
        assert arr.dtype in (np.uint16, np.int16)
        assert re.fullmatch(r"LJ\d{4}", ds.PatientID)
        assert "." not in os.path.basename(rel)  # hospital-like: no extension
        modalities.add(ds.Modality)
        if ds.Modality in ("CR", "DX"):
            assert ds.ViewPosition in ("LL", "AP")
            assert ds.BitsStored == 12 and arr.max() <= 4095
            assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
            assert "PixelSpacing" in ds or "ImagerPixelSpacing" in ds
            assert float(ds.RescaleSlope) > 0 and "RescaleIntercept" in ds
            assert float(ds.WindowWidth) > 0
        else:
            assert ds.Modality == "MR"
            assert len(ds.ImageOrientationPatient) == 6 and len(ds.ImagePositionPatient) == 3
            assert len(ds.PixelSpacing) == 2 and float(ds.RescaleSlope) == 1.0
    assert modalities >= {"MR"} and modalities & {"CR", "DX"}
    # the lateral X-ray named in the ground truth is an LL view with the stated spacing
    by_uid = _by_series(datasets)
    for _, r in truth[truth.has_xray == 1].iterrows():
        (ds,) = by_uid[r.xray_series_uid]
        assert ds.ViewPosition == "LL" and ds.PatientID == r.patient_id
        sp = ds.PixelSpacing if "PixelSpacing" in ds else ds.ImagerPixelSpacing
        assert float(sp[0]) == pytest.approx(r.xray_spacing_mm, rel=1e-4)


def test_sagittal_t2_geometry(datasets, truth):
    by_uid = _by_series(datasets)
    reversed_seen = set()
    for _, r in truth[truth.has_mri == 1].iterrows():
        sl = by_uid[r.t2_series_uid]
        assert 12 <= len(sl) <= 16
        desc = sl[0].SeriesDescription.lower()
        assert "t2" in desc and "sag" in desc
        for ds in sl:
            assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
            assert float(ds.SliceThickness) == 4.0
        normal = np.cross([0, 1, 0], [0, 0, -1])
        pos = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for ds in sl])
        order = np.argsort(pos)
        gaps = np.diff(pos[order])
        assert gaps == pytest.approx(np.full(len(gaps), float(sl[0].SpacingBetweenSlices)), abs=1e-3)
        ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sl])
        assert np.ptp(ipp[:, 1]) == 0 and np.ptp(ipp[:, 2]) == 0  # stepping along x only
        inst = np.array([int(ds.InstanceNumber) for ds in sl])[order]
        assert np.all(np.diff(inst) == 1) or np.all(np.diff(inst) == -1)
        reversed_seen.add(bool(inst[0] > inst[-1]))
        # the disc centres lie inside the slab and the in-plane field of view
        sp = float(sl[0].PixelSpacing[0])
        y0, z0 = ipp[0, 1], ipp[0, 2]
        for lv in LEVELS:
            assert pos.min() <= r[f"disc_{lv}_x_mm"] <= pos.max()
            assert 0 < (r[f"disc_{lv}_y_mm"] - y0) / sp < sl[0].Columns
            assert 0 < (z0 - r[f"disc_{lv}_z_mm"]) / sp < sl[0].Rows
    # distractor series in the same study: localizer (3 orientations), axial T2
    descs = {(ds.StudyInstanceUID, ds.SeriesDescription, tuple(ds.ImageType)) for ds in datasets.values()
             if ds.Modality == "MR"}
    assert any("LOCALIZER" in it for _, _, it in descs)
    axial = [ds for ds in datasets.values() if ds.Modality == "MR"
             and [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0] and "LOCALIZER" not in ds.ImageType]
    assert len(axial) >= 10


# ----------------------------------------------------------------------------- images encode the truth


def _canal_run_mm(slices, r):
    """Longest CSF-bright run (mm) along the posterior normal of the spine behind each disc."""
    d = min(slices, key=lambda d: abs(float(d.ImagePositionPatient[0]) - r["disc_L3L4_x_mm"]))
    img = d.pixel_array.astype(float)
    sp = float(d.PixelSpacing[0])
    y0, z0 = float(d.ImagePositionPatient[1]), float(d.ImagePositionPatient[2])
    thr = 0.85 * np.percentile(img, 99.5)  # CSF is the brightest T2 tissue
    pts = np.array([[(z0 - r[f"disc_{lv}_z_mm"]) / sp, (r[f"disc_{lv}_y_mm"] - y0) / sp] for lv in LEVELS])
    out = {}
    for j, lv in enumerate(LEVELS):
        t = pts[min(j + 1, 4)] - pts[max(j - 1, 0)]
        t /= np.linalg.norm(t)
        n = np.array([-t[1], t[0]]) * (1 if t[0] > 0 else -1)
        n = n if n[1] > 0 else -n  # posterior = +column
        s = np.arange(13.0, 45.0, 0.25) / sp  # start behind the nucleus
        bright = map_coordinates(img, [pts[j][0] + s * n[0], pts[j][1] + s * n[1]], order=1) > thr
        best = cur = 0
        for b in bright:
            cur = cur + 1 if b else 0
            best = max(best, cur)
        out[lv] = best * 0.25
    return out


def test_mri_canal_narrowed_at_stenotic_level(datasets, truth):
    by_uid = _by_series(datasets)
    narrowest, sten, other = 0, [], []
    rows = truth[truth.has_mri == 1]
    for _, r in rows.iterrows():
        w = _canal_run_mm(by_uid[r.t2_series_uid], r)
        rest = [v for k, v in w.items() if k not in (r.stenosis_level, r.stenosis_level_2)]
        narrowest += w[r.stenosis_level] < min(rest)
        sten.append(w[r.stenosis_level] / (1 - synthetic.STENOSIS_NARROWING * r.stenosis_severity))
        other.append(np.median(rest))
        assert w[r.stenosis_level] < np.median(rest), (r.patient_id, w)
    assert narrowest >= 0.7 * len(rows)
    # the residual width scales with (1 − 0.85·s): width/(1 − 0.85 s) ≈ the normal width
    assert np.median(sten) == pytest.approx(np.median(other), rel=0.5)
    # the stenosis point is the centre of the residual canal: still CSF-bright unless nearly closed
    for _, r in rows[rows.stenosis_severity < 0.8].iterrows():
        d = min(by_uid[r.t2_series_uid], key=lambda d: abs(float(d.ImagePositionPatient[0]) - r.stenosis_x_mm))
        sp = float(d.PixelSpacing[0])
        row = (float(d.ImagePositionPatient[2]) - r.stenosis_z_mm) / sp
        col = (r.stenosis_y_mm - float(d.ImagePositionPatient[1])) / sp
        img = d.pixel_array.astype(float)
        assert map_coordinates(img, [[row], [col]], order=1)[0] > 0.5 * np.percentile(img, 99.5), r.patient_id


def _xray_disc_heights(ds, r):
    """Disc height (mm) along the spine axis: the dark run between two bright bodies."""
    a = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = -a
    sp = float(r["xray_spacing_mm"])
    pts = np.array([[r[f"xray_disc_{lv}_row"], r[f"xray_disc_{lv}_col"]] for lv in LEVELS])
    out = {}
    for j, lv in enumerate(LEVELS):
        t = pts[min(j + 1, 4)] - pts[max(j - 1, 0)]
        t /= np.linalg.norm(t)
        s = np.arange(-14.0, 14.01, 0.25)
        prof = map_coordinates(a, [pts[j][0] + s / sp * t[0], pts[j][1] + s / sp * t[1]], order=1)
        below = prof < 0.5 * (prof.min() + np.percentile(prof, 90))
        mid = len(s) // 2
        k0 = k1 = mid
        while k0 > 0 and below[k0 - 1]:
            k0 -= 1
        while k1 < len(s) - 1 and below[k1 + 1]:
            k1 += 1
        out[lv] = (k1 - k0 + 1) * 0.25 if below[mid] else 0.0
    return out


def test_xray_disc_height_falls_with_grade(datasets, truth):
    by_uid = _by_series(datasets)
    by_grade = {}
    for _, r in truth[truth.has_xray == 1].iterrows():
        (ds,) = by_uid[r.xray_series_uid]
        for lv, h in _xray_disc_heights(ds, r).items():
            by_grade.setdefault(int(r[f"grade_{lv}"]), []).append(h)
    assert min(by_grade) == 0 and max(by_grade) >= 3
    h0, hi = np.mean(by_grade[0]), np.mean([h for g, hs in by_grade.items() if g >= 3 for h in hs])
    assert 6.0 < h0 < 13.0  # healthy lumbar discs ≈ 8–11 mm
    assert hi < 0.75 * h0, by_grade
    assert all(h > 0 for hs in by_grade.values() for h in hs)  # every truth point sits on a disc


def test_renderer_same_anatomy_grade_changes_disc_height():
    """Same patient drawn with grade 0 vs 4 at L4L5: the disc is thinner, no other change."""
    _, tr = synthetic.sample_patients(1, seed=0, edge_cases=False)
    t = tr.iloc[0].to_dict()
    heights = []
    for g in (0, 4):
        t.update({f"grade_{lv}": g for lv in LEVELS})
        an = anatomy.make_anatomy(streams.stream(0, 0, 1), t)
        heights.append(2 * an.disc_hh[1:])
        assert an.disc_grade[4] == g
    assert np.allclose(heights[1], heights[0] * (1 - 4 * synthetic.DISC_HEIGHT_LOSS_PER_GRADE))


# ----------------------------------------------------------------------------- clinical table


def _subscale(items):
    answered = ~np.isnan(items)
    return np.where((~answered).sum(axis=1) <= 1, np.nanmean(np.where(answered, items, np.nan), axis=1), np.nan)


def _zcq_success(df):
    """The ZCQ success rule (subscale = mean of the answered items, missing when more than one
    is unanswered; symptom and function drops >= 0.5 and satisfaction <= 2.5), reimplemented
    here independently of lumbarjax.data.clinical."""
    def sub(prefix, n):
        return _subscale(df[[f"{prefix}_{i}" for i in range(1, n + 1)]].to_numpy(float))
    sym = sub("zcq_sym_pre", 7) - sub("zcq_sym_post", 7)
    fun = sub("zcq_fun_pre", 5) - sub("zcq_fun_post", 5)
    sat = sub("zcq_sat_post", 6)
    ok = (sym >= 0.5) & (fun >= 0.5) & (sat <= 2.5)
    return np.where(np.isnan(sym) | np.isnan(fun) | np.isnan(sat), np.nan, ok.astype(float))


def test_clinical_columns_and_ranges(clinical):
    assert list(clinical.columns) == synthetic.CLINICAL_COLUMNS
    assert clinical.patient_id.str.fullmatch(r"LJ\d{4}").all()
    assert set(clinical.sex) <= {"M", "F"} and set(clinical.smoker) <= {0, 1}
    for c in ("back_pain_pre", "back_pain_post", "leg_pain_pre", "leg_pain_post"):
        v = clinical[c].dropna()
        assert ((v >= 0) & (v <= 100) & (v == v.round())).all()
    for prefix, hi in (("zcq_sym", 5), ("zcq_fun", 4), ("zcq_sat", 4)):
        v = clinical.filter(like=prefix).stack().dropna()
        assert v.between(1, hi).all() and (v == v.round()).all()
    assert clinical.xray_grade.dropna().between(0, 4).all()


@pytest.mark.parametrize("n,seed", [(12, 3), (400, 11)])
def test_zcq_items_reproduce_realised_success(n, seed):
    clin, tr = synthetic.sample_patients(n, seed)
    merged = clin.merge(tr[["patient_id", "zcq_success", "back_improved50", "leg_improved50"]], on="patient_id")
    derived = _zcq_success(merged)
    ok = ~np.isnan(derived)
    assert ok.sum() >= len(merged) - max(1, round(2 * n / 160))  # only the subscale-missing edge cases
    assert np.array_equal(derived[ok], merged.zcq_success.to_numpy(float)[ok])
    for region in ("back", "leg"):
        pre, post = merged[f"{region}_pain_pre"].to_numpy(float), merged[f"{region}_pain_post"].to_numpy(float)
        defined = ~np.isnan(pre) & ~np.isnan(post) & (pre > 0)
        rel = (pre[defined] - post[defined]) / pre[defined]
        assert np.array_equal((rel >= 0.5).astype(float), merged[f"{region}_improved50"].to_numpy(float)[defined])


def test_reader_grade_close_to_truth():
    clin, tr = synthetic.sample_patients(600, seed=4, edge_cases=False)
    diff = (clin.xray_grade.to_numpy(float) - tr.grade.to_numpy(float))
    assert set(np.unique(diff)) <= {-1.0, 0.0, 1.0}
    assert 0.10 < np.mean(diff != 0) < 0.20
    per_level = tr[[f"grade_{lv}" for lv in LEVELS]].to_numpy()
    assert np.array_equal(per_level.max(axis=1), tr.grade.to_numpy())  # g = max of the levels


# ----------------------------------------------------------------------------- PHI and edge cases


def test_phi_in_headers_only(cohort, datasets, truth):
    root, summary = cohort
    names = set()
    for ds in datasets.values():
        assert str(ds.PatientName) and "^" in str(ds.PatientName)
        assert re.fullmatch(r"\d{8}", ds.PatientBirthDate)
        assert ds.InstitutionName and ds.AccessionNumber and str(ds.ReferringPhysicianName)
        assert "^" in str(ds.PatientAddress) and re.fullmatch(r"MRN\d{8}", str(ds.OtherPatientIDs))
        assert ds.PatientID in set(truth.patient_id)
        names.add(str(ds.PatientName))
    written = "".join(open(os.path.join(root, f), encoding="utf-8").read()
                      for f in ("clinical.csv", "ground_truth.csv", "ground_truth_summary.json"))
    written += json.dumps({k: v for k, v in summary.items() if k != "files"})
    for name in names:
        assert name not in written and name.split("^")[0] not in written


def test_edge_cases_present(cohort, datasets, truth, clinical):
    root, summary = cohort
    edges = summary["edge_cases"]
    assert set(edges) == set(synthetic.EDGE_CASES_PER_160)
    assert all(len(v) == 1 for v in edges.values())  # n = 12: one each, distinct patients
    ids_with = {}
    for ds in datasets.values():
        ids_with.setdefault(ds.PatientID, set()).add(ds.Modality)
    (p,) = edges["no_images"]
    assert p not in ids_with and p in set(clinical.patient_id)
    (p,) = edges["no_clinical"]
    assert p in ids_with and p not in set(clinical.patient_id)
    (p,) = edges["no_mri"]
    assert "MR" not in ids_with[p] and ids_with[p] & {"CR", "DX"}
    c = clinical.set_index("patient_id")
    assert np.isnan(c.loc[edges["missing_xray_grade"][0], "xray_grade"])
    assert c.loc[edges["missing_post_pain"][0], ["back_pain_post", "leg_pain_post"]].isna().all()
    assert c.loc[edges["back_pain_pre_zero"][0], "back_pain_pre"] == 0
    items = c.filter(like="zcq_")
    assert items.loc[edges["zcq_one_item_missing"][0]].isna().sum() == 1
    assert items.loc[edges["zcq_subscale_missing"][0]].isna().sum() == 2
    assert items.drop(index=[edges["zcq_one_item_missing"][0], edges["zcq_subscale_missing"][0]]).notna().all().all()
    g = truth.set_index("patient_id")
    assert g.loc[edges["no_mri"][0], "has_mri"] == 0 and np.isnan(g.loc[edges["no_mri"][0], "disc_L4L5_x_mm"])
    assert g.loc[edges["no_clinical"][0], "in_clinical"] == 0
    # non-image files that an indexer must skip
    base = [os.path.basename(f) for f in _all_files(root)]
    assert "README.txt" in base and "DICOMDIR" in base
    assert summary["non_dicom_files"]["empty_file"] == 1
    assert len(base) == summary["n_dicom_files"] + sum(summary["non_dicom_files"].values())
    assert "PixelData" not in pydicom.dcmread(os.path.join(root, "export", "DICOMDIR"))


def test_ground_truth_columns(truth, cohort):
    assert list(truth.columns) == synthetic.GROUND_TRUTH_COLUMNS
    assert set(truth.stenosis_level) <= set(synthetic.STENOSIS_LEVELS)
    assert truth.stenosis_severity.between(0.3, 1.0).all()
    assert truth.p_zcq_success.between(0, 1).all()
    p = truth.p_zcq_success
    assert np.allclose(truth.p_back_improved50, 0.20 + 0.50 * p, atol=1e-5)
    assert np.allclose(truth.p_leg_improved50, 0.25 + 0.60 * p, atol=1e-5)
    assert json.load(open(cohort[1]["summary_json"]))["counts"]["n_patients"] == 12


def test_too_small_or_existing_export_raises(tmp_path, cohort):
    with pytest.raises(ConfigError, match="n_patients=5"):
        synthetic.make_cohort(tmp_path / "x", 5, **SMALL)
    with pytest.raises(ConfigError, match="already exists"):
        synthetic.make_cohort(cohort[0], 12, 3, **SMALL)
    s = synthetic.make_cohort(tmp_path / "y", 3, 1, edge_cases=False, **SMALL)
    assert s["n_with_mri"] == 3 and s["n_clinical_rows"] == 3


def test_completion_marker_written_last(tmp_path, monkeypatch, cohort):
    """A cohort whose writing died part-way is recognisably incomplete; a hospital export
    (no synthetic tag) never is."""
    from lumbarjax import atomic
    assert atomic.is_complete(cohort[0]) and not synthetic.is_synthetic_incomplete(cohort[0])

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(cohort_module, "bayes_auc", crash)  # after the tables, before the summary
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_cohort(tmp_path / "c", 3, 1, edge_cases=False, **SMALL)
    assert (tmp_path / "c" / "clinical.csv").exists()
    assert synthetic.is_synthetic_incomplete(tmp_path / "c")
    assert not list((tmp_path / "c").glob(".*tmp-*"))  # no temporary file left behind
    monkeypatch.undo()
    synthetic.make_cohort(tmp_path / "c", 3, 1, edge_cases=False, overwrite=True, **SMALL)
    assert not synthetic.is_synthetic_incomplete(tmp_path / "c")
    (tmp_path / "hospital").mkdir()
    (tmp_path / "hospital" / "clinical.csv").write_text("patient_id\nP1\n")
    assert not synthetic.is_synthetic_incomplete(tmp_path / "hospital")


# ----------------------------------------------------------------------------- Bayes AUC


def test_bayes_auc_values(cohort):
    aucs = cohort[1]["bayes_auc"]
    for name in ("zcq_success", "back_improved50", "leg_improved50"):
        a = aucs[name]
        assert 0.5 < a["population"] < 1.0
        assert 0.5 <= a["population_no_stenosis"] < a["population"]
        assert 0.0 <= a["empirical"] <= 1.0 and a["n"] > 0


def test_bayes_auc_empirical_matches_population_for_large_n():
    _, tr = synthetic.sample_patients(1500, seed=7, edge_cases=False)
    aucs = synthetic.bayes_auc(tr, n_mc=20000, seed=1)
    for name in ("zcq_success", "back_improved50", "leg_improved50"):
        assert aucs[name]["empirical"] == pytest.approx(aucs[name]["population"], abs=0.04)
    assert aucs["zcq_success"]["population"] - aucs["zcq_success"]["population_no_stenosis"] > 0.1


def test_auc_helper():
    from lumbarjax.eval.metrics import auc  # the one AUC (bayes_auc uses it)
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_cli(tmp_path, capsys):
    rc = synthetic_main(["--out", str(tmp_path / "cli"), "--n", "8", "--seed", "1",
                         "--xray-size", "128", "96", "--mri-size", "64", "64"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_patients"] == 8 and os.path.exists(out["clinical_csv"])


# ----------------------------------------------------------------------------- outcome regimes

# sha256 of sample_patients(160, seed=0)'s clinical and truth tables (to_csv) as written before the
# outcome regimes existed (main at 32e5774): the demo regime must keep that cohort bit for bit.
DEMO_SEED0_SHA256 = ("ecc591ac9e649732f936c22d3213bf0c4b387a1c3c1f7991c042868261b41652",
                     "d59fa7c9f54cfe2348f7ee3696a5a4b2fea46a442272fbe04c0290d2d77d7b6d")


def _sha(df):
    return hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def test_demo_regime_is_bit_identical_to_the_cohort_before_regimes():
    for regime in ("demo", dict(synthetic.OUTCOME_REGIMES["demo"])):
        clinical, truth = synthetic.sample_patients(160, 0, regime=regime)
        assert (_sha(clinical), _sha(truth)) == DEMO_SEED0_SHA256


def test_regimes_change_only_the_outcomes():
    base_c, base_t = synthetic.sample_patients(300, 4, edge_cases=False)
    # everything but the post-operative answers: the reader's X-ray grade (the grader's label)
    # and the pre-operative scores are the demo's, so a regime's stage 1 is the demo's
    same = ["age", "sex", "bmi", "smoker", "symptom_months", "back_pain_pre", "leg_pain_pre",
            "xray_grade", *[c for c in base_c if c.startswith(("zcq_sym_pre", "zcq_fun_pre"))]]
    latent = ["grade", *[f"grade_{lv}" for lv in LEVELS], "stenosis_level", "stenosis_severity"]
    for name in ("clinical_dominant", "xray_contributing", "null", "nonlinear"):
        c, t = synthetic.sample_patients(300, 4, edge_cases=False, regime=name)
        pd.testing.assert_frame_equal(c[same], base_c[same])
        pd.testing.assert_frame_equal(t[latent], base_t[latent])
        assert not np.allclose(t["p_zcq_success"], base_t["p_zcq_success"])
        assert (t["zcq_success"] != base_t["zcq_success"]).any()
        if name == "nonlinear":
            continue
        b = synthetic.OUTCOME_REGIMES[name]
        age, fem = c["age"].to_numpy(float), (c["sex"] == "F").to_numpy(float)
        months = c["symptom_months"].to_numpy(float)
        logit = (b["b0"] + b["s"] * t["stenosis_severity"] + b["g"] * t["grade"] + b["age"] * (age - 65) / 10
                 + b["female"] * fem + b["log_months"] * np.log(months / 18))
        np.testing.assert_allclose(t["p_zcq_success"], 1 / (1 + np.exp(-logit)), atol=2e-6)
    # null: the true probability is a function of the clinical columns only
    _, t = synthetic.sample_patients(300, 4, edge_cases=False, regime="null")
    resid = t["p_zcq_success"] - t.groupby([base_c["age"], base_c["sex"], base_c["symptom_months"]])[
        "p_zcq_success"].transform("mean")
    assert np.abs(resid).max() < 1e-6
    assert abs(np.corrcoef(t["p_zcq_success"], t["stenosis_severity"])[0, 1]) < 0.15


def test_a_regimes_cohort_has_the_demo_regimes_files_but_the_outcome_tables(tmp_path):
    """Every image file of a cohort is the same in every regime (a regime's stage 1 is the
    demo's); only the tables with the outcomes differ."""
    def files(root):
        out = {}
        for d, _, names in os.walk(root):
            for n in names:
                with open(os.path.join(d, n), "rb") as f:
                    out[os.path.relpath(os.path.join(d, n), root)] = hashlib.sha256(f.read()).hexdigest()
        return out
    a = files(synthetic.make_cohort(tmp_path / "demo", 12, 3, **SMALL)["out_dir"])
    b = files(synthetic.make_cohort(tmp_path / "nl", 12, 3, regime="nonlinear", **SMALL)["out_dir"])
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k]}
    assert differ <= {"clinical.csv", "ground_truth.csv", "ground_truth_summary.json", atomic.MARKER}
    assert "clinical.csv" in differ
    assert sum(k.startswith("export") for k in a) > 50


def test_regime_bayes_auc_ceilings():
    _, t = synthetic.sample_patients(400, 2, edge_cases=False, regime="null")
    a = synthetic.bayes_auc(t, n_mc=20000, regime="null")["zcq_success"]
    assert a["population"] == a["population_no_stenosis"] == a["population_clinical"]
    _, t = synthetic.sample_patients(400, 2, edge_cases=False, regime="xray_contributing")
    a = synthetic.bayes_auc(t, n_mc=20000, regime="xray_contributing")["zcq_success"]
    assert a["population_no_stenosis"] - a["population_clinical"] > 0.08  # the grade carries signal
    demo = synthetic.bayes_auc(t, n_mc=20000)["zcq_success"]
    assert demo["population"] - demo["population_no_stenosis"] > 0.15    # the stenosis dominates


def test_make_cohort_records_the_regime(tmp_path):
    s = synthetic.make_cohort(tmp_path / "c", 3, 1, edge_cases=False, regime="clinical_dominant", **SMALL)
    with open(s["summary_json"]) as fh:
        js = json.load(fh)
    assert js["regime"] == s["regime"] == "clinical_dominant"
    assert js["generative_model"]["beta"] == synthetic.OUTCOME_REGIMES["clinical_dominant"]
    with pytest.raises(ConfigError, match="unknown; choose one of"):
        synthetic.make_cohort(tmp_path / "d", 3, 1, edge_cases=False, regime="strong", **SMALL)
    with pytest.raises(ConfigError, match=r"unknown effect key\(s\) \['beta_s'\]"):
        synthetic.outcome_effects({"beta_s": 1.0})


def test_nonlinear_regime_counts_the_stenosis_above_a_threshold_and_with_short_symptoms():
    c, t = synthetic.sample_patients(300, 4, edge_cases=False, regime="nonlinear")
    b = synthetic.OUTCOME_REGIMES["nonlinear"]
    age, fem = c["age"].to_numpy(float), (c["sex"] == "F").to_numpy(float)
    months, s = c["symptom_months"].to_numpy(float), t["stenosis_severity"].to_numpy(float)
    term = np.maximum(s - b["s_threshold"], 0.0) * (months <= b["s_within_months"])
    logit = b["b0"] + b["s"] * term + b["g"] * t["grade"] + b["age"] * (age - 65) / 10 + b["female"] * fem
    np.testing.assert_allclose(t["p_zcq_success"], 1 / (1 + np.exp(-logit)), atol=2e-6)
    # below the threshold, or after 24 months of symptoms, the stenosis changes nothing
    flat = (s <= b["s_threshold"]) | (months > b["s_within_months"])
    assert 60 < flat.sum() < 240
    same = synthetic.outcome_logit(s[flat], t["grade"][flat], age[flat], fem[flat], months[flat],
                                   effects=b)
    np.testing.assert_allclose(same, synthetic.outcome_logit(0.0 * s[flat], t["grade"][flat], age[flat],
                                                             fem[flat], months[flat], effects=b))
    a = synthetic.bayes_auc(t, n_mc=20000, regime="nonlinear")["zcq_success"]
    assert a["population"] - a["population_no_stenosis"] > 0.08   # the MRI carries the signal
    with pytest.raises(ConfigError, match="needs symptom_months"):
        synthetic.outcome_logit(0.5, 2, 60, 1, None, effects=b)


def test_bayes_vas_is_the_median_and_mean_of_the_generators_post_operative_vas():
    rng = np.random.default_rng(5)
    n = 4000
    pre = np.clip(np.rint(rng.normal(66, 17, n)), 10, 100)
    p = rng.uniform(0, 1, n)
    values, weights = synthetic.vas_post_distribution(pre, p, synthetic.Q_LEG)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    mean, median = ceilings._mean_median(values, weights)
    # draw post exactly as the generator does (_draw_vas_post) and compare
    success = rng.random(n) < p
    improved = rng.random(n) < np.where(success, synthetic.Q_LEG[1], synthetic.Q_LEG[0])
    post = np.array([outcomes._draw_vas_post(rng, int(a), b) for a, b in zip(pre, improved)])
    assert abs(float((post - mean).mean())) < 1.0                     # unbiased (mm)
    mae_median = float(np.abs(post - median).mean())
    assert mae_median < float(np.abs(post - mean).mean())               # the median is the MAE's best
    assert mae_median < float(np.abs(post - np.median(post)).mean()) - 2.0
    # the cohort's empirical value and the population value agree for a large cohort
    c, t = synthetic.sample_patients(1500, 3, edge_cases=False)
    b = synthetic.bayes_vas(c, t, n_mc=20000)
    for head in ("back_pain_post", "leg_pain_post"):
        assert b[head]["n"] == 1500
        assert abs(b[head]["mae"] - b[head]["mae_empirical"]) < 1.2
        assert 0.1 < b[head]["r2"] < 0.4 and 0.1 < b[head]["r2_empirical"] < 0.45
