"""The X-ray scale level by level: find the discs, refine their endplate corners, measure the
disc height index and listhesis, grade each level and aggregate to the patient.

Stages (settings in ``config.levels``, defaults in configs/default.py ``levels_config``):

1. **Landmark models** (:func:`train_landmark_models`), trained once on films with known points
   — a landmark cohort that is not the graded one (BUU-LSPINE lateral films via
   ``data.public.buu_lspine``, or the synthetic generator's ground truth of a separate cohort):
   the *finder* (whole film at ``view_shape`` -> 5 disc centres) and the *refiner* (a
   ``crop_shape`` crop at ``crop_mm_per_px`` around each disc, centre jittered by up to
   ``centre_jitter_mm`` -> the 4 corners A_u, P_u, A_l, P_l). Saved with a model card
   (``pipelines.landmarks.save``).
2. **Measurement** (:func:`measure`): finder -> crops -> refiner -> corners in film pixels ->
   (``edge_refine``) each corner moved along the disc normal onto the film's endplate edge
   (``data.xray_levels.refine_corners``) -> ``data.xray_indices.level_indices`` in mm (pixel
   spacing from the DICOM).
3. **Level grader** (``models.level_grader``): cut points on the relative disc height loss,
   fitted on each training fold's patient grades under ``rule`` ("max" | "sum"), applied to the
   held-out fold (:func:`crossval_levels`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.data import dicom, xray_levels
from lumbarjax.errors import CohortError, ConfigError, DicomError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.data import xray_indices
from lumbarjax.models.landmarks import LandmarkNet
from lumbarjax.models.level_grader import fit_level_grader
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import landmarks


LEVELS_KEYS = ("enabled", "view_shape", "crop_shape", "crop_mm_per_px", "finder", "refiner",
               "finder_steps", "refiner_steps", "batch_size", "optim", "shift_px", "centre_jitter_mm",
               "refine_passes", "edge_refine", "edge_search_mm", "rule", "ref_quantile", "tau",
               "model_dir", "buu_root", "buu_spacing_mm", "landmark_cohort_dir", "make_demo",
               "landmark_patients")


def check_config(cfg) -> None:
    """``config.levels`` (configs/default.py ``levels_config``) has exactly the keys read here."""
    keys = set(cfg.keys())
    unknown, missing = sorted(keys - set(LEVELS_KEYS)), sorted(set(LEVELS_KEYS) - keys)
    if unknown or missing:
        raise ConfigError(f"config.levels: unknown key(s) {unknown}, missing key(s) {missing}; "
                          f"known keys: {list(LEVELS_KEYS)}")


def film_of(paths: str) -> dicom.XRayImage:
    """The lateral film of a cohort record (``xray_paths``: one path, or several joined by ';')."""
    path = str(paths).split(";")[0]
    return dicom.read_xray(path)


@dataclasses.dataclass
class Film:
    """A film that is not DICOM (BUU-LSPINE JPEG): pixels (H, W) and spacing (row_mm, col_mm)."""
    pixels: np.ndarray
    spacing: tuple


def synthetic_training_set(cohort_dir: str):
    """Films and true landmarks of a synthetic-style cohort (``ground_truth.csv`` with the
    ``xray_disc_*`` / ``xray_ep_*`` columns, DICOM below ``export/``)."""
    gt = pd.read_csv(os.path.join(cohort_dir, "ground_truth.csv"), dtype={"patient_id": str})
    missing = [c for c in ("xray_series_uid", "xray_ep_S1_sup_post_col") if c not in gt.columns]
    if missing:
        raise CohortError(f"{cohort_dir}/ground_truth.csv: no landmark columns {missing}")
    uid2path = {}
    for dirpath, _, names in os.walk(os.path.join(cohort_dir, "export")):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                ds = dicom.read_header(path)
            except DicomError:
                continue
            if ds is not None and str(ds.get("Modality", "")) in ("CR", "DX") and ds.get("ViewPosition") == "LL":
                uid2path[str(ds.SeriesInstanceUID)] = path
    gt = gt[gt["xray_series_uid"].astype(str).isin(uid2path)].reset_index(drop=True)
    films = [dicom.read_xray(uid2path[u]) for u in gt["xray_series_uid"].astype(str)]
    cen, cor = zip(*(xray_levels.truth_landmarks(r) for _, r in gt.iterrows()))
    return films, np.stack(cen), np.stack(cor), gt


def buu_training_set(root: str, spacing_mm: float):
    """Lateral BUU-LSPINE films (JPEG, ``spacing_mm`` per pixel) and their landmarks."""
    from lumbarjax.data.public import buu_lspine
    if not spacing_mm > 0:
        raise ConfigError("levels.buu_spacing_mm must be > 0: BUU-LSPINE JPEGs carry no pixel spacing")
    ds = buu_lspine.read_dataset(root, views=("LA",))
    films, cen, cor = [], [], []
    for _, im in ds.images.iterrows():
        e = buu_lspine.endplate_array(ds.lines(im["image_id"], "LA"))
        try:
            c, k = xray_levels.endplate_landmarks(e, "auto", (spacing_mm, spacing_mm))
        except ConfigError as err:
            logging.warning("BUU-LSPINE %s: %s (film not used)", im["image_id"], err)
            continue
        films.append(Film(buu_lspine.read_image(im["path"]), (spacing_mm, spacing_mm)))
        cen.append(c)
        cor.append(k)
    if not films:
        raise CohortError(f"{root}: no usable lateral BUU-LSPINE film")
    return films, np.stack(cen), np.stack(cor)


def _finder_inputs(films, shape):
    views, tfs = zip(*(xray_levels.film_view(f.pixels, f.spacing, shape) for f in films))
    return np.stack(views), list(tfs)


def _jittered_crops(films, centres, corners, cfg, rng):
    crops, targets = [], []
    for f, cen, cor in zip(films, centres, corners):
        jitter_px = cfg.centre_jitter_mm / np.asarray(f.spacing)
        c0 = cen + rng.uniform(-1, 1, size=cen.shape) * jitter_px
        cr, tfs = xray_levels.level_crops(f.pixels, f.spacing, c0, cfg.crop_shape, cfg.crop_mm_per_px)
        crops.append(cr)
        targets.append(np.stack([xray_levels.source_to_crop(t, c) for t, c in zip(tfs, cor)]))
    return np.concatenate(crops), np.concatenate(targets)


def train_landmark_models(films: Sequence, centres: np.ndarray, corners: np.ndarray, cfg, *,
                          seed: int = 0, out_stem: str = "", source: str = "") -> dict:
    """Train the finder and the refiner on films with known points.

    films: XRayImage-likes (``.pixels``, ``.spacing``); centres (N, 5, 2) and corners
    (N, 5, 4, 2) in source pixels. ``out_stem``: write ``<stem>_finder`` / ``<stem>_refiner``
    (+ model cards). Returns ``{"finder": (model, params), "refiner": (model, params), "card": …}``.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = len(films)
    val = np.zeros(n, bool)
    val[rng.permutation(n)[: max(1, n // 10)]] = True
    views, tfs = _finder_inputs(films, cfg.view_shape)
    vc = np.stack([xray_levels.preprocess.apply_xray_transform(t, c) for t, c in zip(tfs, centres)])
    finder = LandmarkNet(num_points=len(LEVELS), **cfg.finder.to_dict())
    fp = landmarks.fit(finder, views[~val], vc[~val], config=cfg, steps=int(cfg.finder_steps),
                       batch_size=int(cfg.batch_size), seed=seed, shift_px=int(cfg.shift_px))
    pred = landmarks.predict(finder, fp, views[val])
    mm_per_view_px = np.array([t["spacing_mm"][0] for t, v in zip(tfs, val) if v])
    finder_err = float(np.mean(np.linalg.norm(pred - vc[val], axis=-1) * mm_per_view_px[:, None]))
    crops, tgt = _jittered_crops(films, centres, corners, cfg, rng)
    per_film = np.repeat(np.arange(n), len(LEVELS))
    refiner = LandmarkNet(num_points=4, **cfg.refiner.to_dict())
    rp = landmarks.fit(refiner, crops[~val[per_film]], tgt[~val[per_film]], config=cfg,
                       steps=int(cfg.refiner_steps), batch_size=int(cfg.batch_size) * 2, seed=seed + 1,
                       shift_px=2, gamma=0.2)
    rpred = landmarks.predict(refiner, rp, crops[val[per_film]])
    refiner_err = float(np.mean(np.linalg.norm(rpred - tgt[val[per_film]], axis=-1)) * cfg.crop_mm_per_px)
    card = {"source": source, "n_films_train": int((~val).sum()), "n_films_val": int(val.sum()),
            "view_shape": list(cfg.view_shape), "crop_shape": list(cfg.crop_shape),
            "crop_mm_per_px": float(cfg.crop_mm_per_px), "finder_steps": int(cfg.finder_steps),
            "refiner_steps": int(cfg.refiner_steps), "seed": int(seed),
            "val_finder_error_mm": round(finder_err, 3), "val_refiner_corner_error_mm": round(refiner_err, 3),
            "seconds": round(time.perf_counter() - t0, 1)}
    logging.info("landmark models: finder %.2f mm, refiner %.2f mm on %d validation films",
                 finder_err, refiner_err, int(val.sum()))
    if out_stem:
        landmarks.save(out_stem + "_finder", fp, {**card, "model": {"num_points": len(LEVELS), **cfg.finder.to_dict()},
                                                 "points": [f"disc_{lv}" for lv in LEVELS]})
        landmarks.save(out_stem + "_refiner", rp, {**card, "model": {"num_points": 4, **cfg.refiner.to_dict()},
                                                  "points": ["A_u", "P_u", "A_l", "P_l"]})
    return {"finder": (finder, fp), "refiner": (refiner, rp), "card": card}


def measure(films: Sequence, models: dict, cfg) -> dict:
    """Per film: predicted centres (N, 5, 2) and corners (N, 5, 4, 2) in source pixels and a
    DataFrame of ``dhi_LEVEL, disc_height_mm_LEVEL, listhesis_mm_LEVEL`` (N rows)."""
    finder, fp = models["finder"]
    refiner, rp = models["refiner"]
    views, tfs = _finder_inputs(films, cfg.view_shape)
    vc = landmarks.predict(finder, fp, views)
    centres = np.stack([xray_levels.view_to_source(t, c) for t, c in zip(tfs, vc)])
    crop_centres = centres
    for _ in range(max(1, int(cfg.refine_passes))):   # later passes re-centre on the corners
        crops, ctfs = [], []
        for f, c in zip(films, crop_centres):
            cr, t = xray_levels.level_crops(f.pixels, f.spacing, c, cfg.crop_shape, cfg.crop_mm_per_px)
            crops.append(cr)
            ctfs.append(t)
        cp = landmarks.predict(refiner, rp, np.concatenate(crops)).reshape(len(films), len(LEVELS), 4, 2)
        corners = np.stack([np.stack([xray_levels.crop_to_source(t, p) for t, p in zip(ts, pts)])
                            for ts, pts in zip(ctfs, cp)])
        crop_centres = corners.mean(axis=2)
    if cfg.edge_refine:
        corners = np.stack([xray_levels.refine_corners(f.pixels, f.spacing, c, search_mm=float(cfg.edge_search_mm))
                            for f, c in zip(films, corners)])
    rows = []
    for f, cor in zip(films, corners):
        ind = xray_indices.level_indices(cor * np.asarray(f.spacing))
        rows.append({f"{c}_{lv}": float(ind.loc[lv, c]) for c in ("dhi", "disc_height_mm", "listhesis_mm")
                     for lv in LEVELS})
    return {"centres": centres, "corners": corners, "indices": pd.DataFrame(rows)}


def crossval_levels(indices: pd.DataFrame, grades: np.ndarray, folds: np.ndarray, cfg, *,
                    num_grades: int = 5) -> tuple[pd.DataFrame, list]:
    """Fit the level grader on the other folds, predict each fold. Returns the out-of-fold
    columns (``pred_grade``, ``expected_grade``, ``scale``, ``pred_grade_LEVEL``) in row order
    and the fitted graders (one per fold)."""
    dhi = indices[[f"dhi_{lv}" for lv in LEVELS]].to_numpy(float)
    out = pd.DataFrame(index=np.arange(len(indices)))
    fitted = []
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        g = fit_level_grader(dhi[tr], grades[tr], num_grades=num_grades, rule=cfg.rule,
                             ref_quantile=float(cfg.ref_quantile), tau=float(cfg.tau))
        fitted.append(g.to_dict())
        lg = g.level_grades(dhi[te])
        out.loc[te, "pred_grade"] = g.patient_grade(dhi[te])
        out.loc[te, "expected_grade"] = g.expected_grade(dhi[te])
        out.loc[te, "scale"] = lg.sum(axis=1)
        for j, lv in enumerate(LEVELS):
            out.loc[te, f"pred_grade_{lv}"] = lg[:, j]
    return out, fitted


def qwk_table(oof: pd.DataFrame, truth: pd.DataFrame | None, reader: np.ndarray, num_grades: int = 5) -> dict:
    """Patient QWK vs the reader's grade (and vs the truth when given), per-level QWK vs the truth."""
    res = {}
    ok = np.isfinite(reader)
    res["qwk_patient_vs_reader"] = float(metrics_lib.qwk(reader[ok].astype(int),
                                                         oof["pred_grade"].to_numpy()[ok].astype(int), num_grades))
    if truth is not None:
        res["qwk_patient_vs_truth"] = float(metrics_lib.qwk(truth["grade"].to_numpy(int),
                                                            oof["pred_grade"].to_numpy(int), num_grades))
        res["qwk_reader_vs_truth"] = float(metrics_lib.qwk(truth["grade"].to_numpy()[ok].astype(int),
                                                           reader[ok].astype(int), num_grades))
        for lv in LEVELS:
            res[f"qwk_{lv}_vs_truth"] = float(metrics_lib.qwk(truth[f"grade_{lv}"].to_numpy(int),
                                                              oof[f"pred_grade_{lv}"].to_numpy(int), num_grades))
    return res


def _signature(cfg, source: str, seed: int) -> dict:
    keys = ("view_shape", "crop_shape", "crop_mm_per_px", "finder", "refiner", "finder_steps",
            "refiner_steps", "batch_size", "optim", "shift_px", "centre_jitter_mm")
    d = {k: (cfg[k].to_dict() if hasattr(cfg[k], "to_dict") else cfg[k]) for k in keys}
    return json.loads(json.dumps({**d, "source": source, "seed": int(seed)}))


def landmark_models(cfg, workdir: str, seed: int, exclude_ids=(), num_workers: int = 0) -> dict:
    """Load the saved finder/refiner of ``cfg.model_dir`` (or ``<workdir>``) when their card
    matches this config; else train them on the configured landmark data and save them."""
    model_dir = cfg.model_dir or workdir
    stem = os.path.join(model_dir, "landmarks")
    if cfg.buu_root:
        source = f"BUU-LSPINE lateral films at {cfg.buu_root} ({cfg.buu_spacing_mm} mm/px)"
    elif cfg.landmark_cohort_dir:
        source = f"synthetic-style cohort {cfg.landmark_cohort_dir}"
    elif cfg.make_demo:
        source = f"synthetic landmark cohort, {int(cfg.landmark_patients)} patients, seed {seed + 2}"
    else:
        source = ""
    sig = _signature(cfg, source, seed)
    if landmarks.exists(stem + "_finder") and landmarks.exists(stem + "_refiner"):
        finder, fp, card = landmarks.load(stem + "_finder")
        refiner, rp, _ = landmarks.load(stem + "_refiner")
        if card.get("signature") == sig or cfg.model_dir:
            logging.info("levels: using the landmark models in %s", model_dir)
            return {"finder": (finder, fp), "refiner": (refiner, rp), "card": card}
    if not source:
        raise ConfigError("levels: no landmark models in model_dir and no landmark data (set "
                          "levels.buu_root, levels.landmark_cohort_dir or levels.make_demo)")
    if cfg.buu_root:
        films, cen, cor = buu_training_set(cfg.buu_root, float(cfg.buu_spacing_mm))
    else:
        root = cfg.landmark_cohort_dir or os.path.join(workdir, "landmark_cohort")
        if not cfg.landmark_cohort_dir and not os.path.exists(os.path.join(root, "ground_truth.csv")):
            from lumbarjax.synthetic import make_cohort
            logging.info("levels: writing the synthetic landmark cohort to %s", root)
            make_cohort(root, n_patients=int(cfg.landmark_patients), seed=seed + 2, mri_size=(48, 48),
                        edge_cases=False, overwrite=True, n_mc=1000, id_prefix="LM", num_workers=num_workers)
        films, cen, cor, gt = synthetic_training_set(root)
        shared = sorted(set(gt["patient_id"]) & set(map(str, exclude_ids)))
        if shared:
            raise CohortError(f"levels: the landmark cohort shares patient ids with the graded cohort "
                              f"({shared[:5]}): train the landmark models on other patients")
    out = train_landmark_models(films, cen, cor, cfg, seed=seed, source=source)
    out["card"]["signature"] = sig
    os.makedirs(model_dir, exist_ok=True)
    landmarks.save(stem + "_finder", out["finder"][1],
                   {**out["card"], "model": {"num_points": len(LEVELS), **cfg.finder.to_dict()},
                    "points": [f"disc_{lv}" for lv in LEVELS]})
    landmarks.save(stem + "_refiner", out["refiner"][1],
                   {**out["card"], "model": {"num_points": 4, **cfg.refiner.to_dict()},
                    "points": ["A_u", "P_u", "A_l", "P_l"]})
    return out


def run_levels(cfg, workdir: str, records: pd.DataFrame, folds: np.ndarray, grades: np.ndarray, *,
               seed: int = 0, num_grades: int = 5, truth: pd.DataFrame | None = None,
               num_workers: int = 0):
    """The level pipeline on a graded cohort, fold-honestly.

    records: the grader task's patients (``patient_id``, ``xray_paths``, ``xray_source``), row
    i = patient i; folds (N,) and grades (N,) the grader's outer folds and patient grades.
    truth: optional ground truth (synthetic demo) with ``grade``, ``grade_LEVEL`` and the
    landmark columns, for the landmark error in mm and per-level QWK (evaluation only).
    num_workers: processes that write a synthetic landmark cohort (``make_cohort``).
    Writes ``<workdir>/oof.csv`` and ``<workdir>/levels_metrics.json``; returns both.
    """
    check_config(cfg)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    models = landmark_models(cfg, workdir, seed, exclude_ids=records["patient_id"], num_workers=num_workers)
    films, ok = [], np.zeros(len(records), bool)
    excluded = []
    for i, r in records.reset_index(drop=True).iterrows():
        if str(r.get("xray_source", "dicom")) != "dicom" or not str(r.get("xray_paths", "")):
            excluded.append((r["patient_id"], "no DICOM lateral film"))
            continue
        try:
            films.append(film_of(r["xray_paths"]))
            ok[i] = True
        except DicomError as e:
            excluded.append((r["patient_id"], str(e)))
    if excluded:
        logging.warning("levels: %d patient(s) without a measurable film (first: %s)", len(excluded), excluded[0])
    meas = measure(films, models, cfg)
    ind = pd.DataFrame(np.nan, index=np.arange(len(records)), columns=meas["indices"].columns)
    ind.loc[ok] = meas["indices"].to_numpy()
    use = ok & np.isfinite(np.asarray(grades, float))
    part, fitted = crossval_levels(ind[use].reset_index(drop=True), np.asarray(grades, float)[use],
                                   np.asarray(folds)[use], cfg, num_grades=num_grades)
    oof = pd.DataFrame({"patient_id": records["patient_id"].to_numpy(), "fold": np.asarray(folds),
                        "label_grade": np.asarray(grades, float)})
    for c in part.columns:
        oof[c] = np.nan
        oof.loc[use, c] = part[c].to_numpy()
    oof = pd.concat([oof, ind], axis=1)
    metrics = {"n_patients": int(len(records)), "n_measured": int(ok.sum()), "n_graded": int(use.sum()),
               "excluded": [{"patient_id": p, "reason": why} for p, why in excluded],
               "rule": cfg.rule, "landmark_model": {k: v for k, v in models["card"].items() if k != "signature"},
               "fitted": fitted}
    sub = oof.loc[use].reset_index(drop=True)
    if truth is not None:
        t = truth.set_index("patient_id").loc[sub["patient_id"]].reset_index()
        metrics.update(qwk_table(sub, t, sub["label_grade"].to_numpy(float), num_grades))
        pids = list(records["patient_id"].to_numpy()[ok])
        tt = truth.set_index("patient_id").loc[pids]
        tc, tco = zip(*(xray_levels.truth_landmarks(r) for _, r in tt.iterrows()))
        sp = np.array([f.spacing for f in films])
        metrics["landmark_centre_error_mm"] = float(np.mean(np.linalg.norm((meas["centres"] - np.stack(tc)) * sp[:, None], axis=-1)))
        metrics["landmark_corner_error_mm"] = float(np.mean(np.linalg.norm((meas["corners"] - np.stack(tco)) * sp[:, None, None], axis=-1)))
    else:
        metrics.update(qwk_table(sub, None, sub["label_grade"].to_numpy(float), num_grades))
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    atomic.write_text(os.path.join(workdir, "oof.csv"), oof.to_csv(index=False))
    atomic.write_json(os.path.join(workdir, "levels_metrics.json"), metrics)
    return oof, metrics


def levels_beside_grader(config, workdir: str, td, grader_oof: pd.DataFrame, cohort_root: str):
    """Run :func:`run_levels` on the grader task's patients and folds (``td``: crossval.TaskData)
    and merge its out-of-fold columns into the grader's table (``<workdir>/grader/oof.csv`` is
    rewritten). Returns ``(merged grader oof, levels metrics)``. A ``ground_truth.csv`` in the
    cohort folder (synthetic demo) is used for evaluation only (per-level QWK, landmark error).
    """
    gt_csv = os.path.join(cohort_root, "ground_truth.csv")
    truth = pd.read_csv(gt_csv, dtype={"patient_id": str}) if os.path.exists(gt_csv) else None
    grades = np.asarray(td.labels["grade"], float)
    if grades.ndim > 1:
        grades = np.nanmax(grades, axis=1)
    oof, metrics = run_levels(config.levels, os.path.join(workdir, "levels"), td.records, td.folds, grades,
                              seed=int(config.seed), num_grades=int(config.grader.model.num_grades), truth=truth,
                              num_workers=int(config.data.num_workers))
    cols = oof.drop(columns=["fold", "label_grade"]).rename(columns={"pred_grade": "level_pred_grade"})
    clash = [c for c in cols.columns if c != "patient_id" and c in grader_oof.columns]
    cols = cols.rename(columns={c: f"levels_{c}" for c in clash})
    merged = grader_oof.merge(cols, on="patient_id", how="left", validate="one_to_one")
    atomic.write_text(os.path.join(workdir, "grader", "oof.csv"), merged.to_csv(index=False))
    return merged, metrics


def predict_levels(cfg, levels_dir: str, xray_paths: str) -> dict:
    """The level-by-level scale of one new film with a finished run's models
    (``--mode=predict``): the landmark models saved in ``levels_dir`` (``landmarks_finder`` /
    ``landmarks_refiner``) measure the film, and each fold's level grader
    (``levels_metrics.json`` → ``fitted``) grades it.

    Returns ``{"indices": {dhi_LEVEL, disc_height_mm_LEVEL, listhesis_mm_LEVEL: float},
    "grade_per_level": {LEVEL: median over folds}, "grade": median fold patient grade,
    "scale": {"mean", "sd"} over folds, "expected_grade": {"mean", "sd"}, "folds": [...]}``.
    Raises CohortError naming the missing file when the run has no level models.
    """
    return grade_films(cfg, levels_dir, [film_of(xray_paths)])[0]


def grade_films(cfg, levels_dir: str, films: Sequence) -> list[dict]:
    """:func:`predict_levels` for several films at once (one landmark pass over all of them):
    one result dict per film, in order."""
    from lumbarjax.models.level_grader import LevelGrader
    stem = os.path.join(levels_dir, "landmarks")
    metrics_path = os.path.join(levels_dir, "levels_metrics.json")
    for need in (stem + "_finder.msgpack", stem + "_refiner.msgpack", metrics_path):
        if not os.path.exists(need):
            raise CohortError(f"{need} is missing: the run has no level-by-level models (config.levels)")
    finder, fp, _ = landmarks.load(stem + "_finder")
    refiner, rp, _ = landmarks.load(stem + "_refiner")
    meas = measure(list(films), {"finder": (finder, fp), "refiner": (refiner, rp)}, cfg)
    with open(metrics_path) as f:
        fitted = json.load(f)["fitted"]
    graders = [LevelGrader.from_dict(d) for d in fitted]
    rule = fitted[0]["rule"] if fitted else cfg.rule
    out = []
    for i in range(len(films)):
        ind = meas["indices"].iloc[i]
        dhi = ind[[f"dhi_{lv}" for lv in LEVELS]].to_numpy(float)[None]
        folds = []
        for k, g in enumerate(graders):
            lg = g.level_grades(dhi)[0]
            folds.append({"fold": k, "grade": int(g.patient_grade(dhi)[0]), "scale": int(lg.sum()),
                          "expected_grade": float(g.expected_grade(dhi)[0]),
                          "grade_per_level": {lv: int(v) for lv, v in zip(LEVELS, lg)}})

        def spread(key):
            v = np.array([f[key] for f in folds], float)
            return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

        out.append({"rule": rule, "indices": {k: float(v) for k, v in ind.items()},
                    "grade_per_level": {lv: int(np.median([f["grade_per_level"][lv] for f in folds]))
                                        for lv in LEVELS},
                    "grade": int(np.median([f["grade"] for f in folds])), "scale": spread("scale"),
                    "expected_grade": spread("expected_grade"), "folds": folds,
                    "centres_px": meas["centres"][i].tolist()})
    return out


def report_summary(metrics: dict) -> dict:
    """The numbers of :func:`run_levels` shown in the report (``extra``)."""
    keys = [k for k in metrics if k.startswith("qwk_") or (k.startswith("landmark_") and k.endswith("_mm"))]
    out = {k: round(float(metrics[k]), 3) for k in keys}
    out.update(rule=metrics["rule"], n_graded=metrics["n_graded"], n_measured=metrics["n_measured"],
               landmark_model=metrics["landmark_model"].get("source", ""))
    return out


__all__ = ["LEVELS_KEYS", "check_config", "crossval_levels", "film_of", "grade_films", "landmark_models", "levels_beside_grader", "measure", "qwk_table",
           "report_summary", "run_levels",
           "train_landmark_models"]
