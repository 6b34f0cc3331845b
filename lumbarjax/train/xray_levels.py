"""The X-ray scale level by level: find the discs, refine their endplate corners, measure the
disc height index and listhesis, grade each level and aggregate to the patient.

Stages (settings in ``config.levels``, see :func:`default_config`):

1. **Landmark models** (:func:`train_landmark_models`), trained once on films with known points
   — a landmark cohort that is not the graded one (BUU-LSPINE lateral films via
   ``data.public.buu_lspine``, or the synthetic generator's ground truth of a separate cohort):
   the *finder* (whole film at ``view_shape`` -> 5 disc centres) and the *refiner* (a
   ``crop_shape`` crop at ``crop_mm_per_px`` around each disc, centre jittered by up to
   ``centre_jitter_mm`` -> the 4 corners A_u, P_u, A_l, P_l). Saved with a model card
   (``train.landmarks.save``).
2. **Measurement** (:func:`measure`): finder -> crops -> refiner -> corners in film pixels ->
   ``eval.xray_indices.level_indices`` in mm (pixel spacing from the DICOM).
3. **Level grader** (``models.level_grader``): cut points on the relative disc height loss,
   fitted on each training fold's patient grades under ``rule`` ("max" | "sum"), applied to the
   held-out fold (:func:`crossval_levels`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.data import dicom, xray_levels
from lumbarjax.errors import CohortError, DicomError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.eval import xray_indices
from lumbarjax.models.landmarks import LandmarkNet
from lumbarjax.models.level_grader import fit_level_grader
from lumbarjax.schema import LEVELS
from lumbarjax.train import landmarks


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        view_shape=(160, 160),          # whole film for the disc finder (physical aspect kept)
        crop_shape=(40, 64),            # per-disc crop (30 x 48 mm): both endplates, tilted ±25°
        crop_mm_per_px=0.75,
        finder=dict(widths=(12, 16, 24, 32), stem_stride=2, out_stride=4),
        refiner=dict(widths=(8, 16, 24, 32), stem_stride=1, out_stride=2),
        finder_steps=200, refiner_steps=500, batch_size=16, lr=3e-3, shift_px=4,
        centre_jitter_mm=4.0,
        rule="max", ref_quantile=0.9, tau=0.03,
    ))


def film_of(paths: str) -> dicom.XRayImage:
    """The lateral film of a cohort record (``xray_paths``: one path, or several joined by '|')."""
    path = str(paths).split("|")[0]
    return dicom.read_xray(path)


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
    fp = landmarks.fit(finder, views[~val], vc[~val], steps=int(cfg.finder_steps), batch_size=int(cfg.batch_size),
                       lr=float(cfg.lr), seed=seed, shift_px=int(cfg.shift_px))
    pred = landmarks.predict(finder, fp, views[val])
    mm_per_view_px = np.array([t["spacing_mm"][0] for t, v in zip(tfs, val) if v])
    finder_err = float(np.mean(np.linalg.norm(pred - vc[val], axis=-1) * mm_per_view_px[:, None]))
    crops, tgt = _jittered_crops(films, centres, corners, cfg, rng)
    per_film = np.repeat(np.arange(n), len(LEVELS))
    refiner = LandmarkNet(num_points=4, **cfg.refiner.to_dict())
    rp = landmarks.fit(refiner, crops[~val[per_film]], tgt[~val[per_film]], steps=int(cfg.refiner_steps),
                       batch_size=int(cfg.batch_size) * 2, lr=float(cfg.lr), seed=seed + 1, shift_px=2, gamma=0.2)
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
    crops, ctfs = [], []
    for f, c in zip(films, centres):
        cr, t = xray_levels.level_crops(f.pixels, f.spacing, c, cfg.crop_shape, cfg.crop_mm_per_px)
        crops.append(cr)
        ctfs.append(t)
    cp = landmarks.predict(refiner, rp, np.concatenate(crops)).reshape(len(films), len(LEVELS), 4, 2)
    corners = np.stack([np.stack([xray_levels.crop_to_source(t, p) for t, p in zip(ts, pts)])
                        for ts, pts in zip(ctfs, cp)])
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


__all__ = ["crossval_levels", "default_config", "film_of", "measure", "qwk_table", "train_landmark_models"]
