"""The MRI level by level: disc-level centres in each cached volume, the disc-level localiser
that finds them on a new cohort, and the per-level stenosis grades of an encoder file.

With ``config.pretrain.levels.enabled`` the pretraining (``pipelines.pretrain``) grades every disc
level on a crop around it (``models.level_stenosis``). The centres of the pretraining cohort
come from its reader (RSNA 2024 canal coordinates, SPIDER disc-mask centres, the synthetic
ground truth); the outcome cohort has none, so the pretraining also trains a
``LevelLocaliser`` (``pipelines.localise``) on the same patients, and the encoder file carries it:
``{"localiser": params}`` beside the encoder and the per-level head, its settings and held-out
error in the card's ``levels`` entry. :func:`level_probs` runs localiser + level grader
(``pipelines.pretrain.file_grader``) on any cohort.

Units: centres are (row, col) pixels of the preprocessed volume (D, H, W) — row along the
spine (superior -> inferior), col anterior -> posterior; errors in mm.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lumbarjax.errors import CohortError
from lumbarjax.models.level_stenosis import crop_rows_for
from lumbarjax.models.localiser import LevelLocaliser
from lumbarjax.models.ordinal import corn_probs
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import localise


def crop_rows(config) -> int:
    """Crop height in rows for ``config.pretrain.levels.crop_mm`` at ``config.mri.spacing``."""
    return crop_rows_for(float(config.mri.spacing[1]), float(config.pretrain.levels.crop_mm))


def centres_px(cache: pd.DataFrame, centres_mm: dict) -> np.ndarray:
    """(N, L, 2) (row, col) pixels of every cache row's level centres (LPS mm, ``patient_id`` ->
    (L, 3)) in that row's cached grid; NaN where a patient or level has no centre or no MRI."""
    out = np.full((len(cache), len(LEVELS), 2), np.nan)
    for i, r in enumerate(cache.itertuples()):
        c = centres_mm.get(str(r.patient_id))
        if c is None or not isinstance(r.mri_file, str) or not r.mri_file or not r.mri_affine:
            continue
        c = np.asarray(c, float)
        affine = np.asarray(json.loads(r.mri_affine), float)
        vox = (np.linalg.inv(affine) @ np.c_[np.nan_to_num(c), np.ones(len(c))].T).T[:, :3]
        ok = np.isfinite(c).all(axis=1)
        out[i, ok] = vox[ok, 1:3]
    return out


def train_level_localiser(config, cache: pd.DataFrame, centres_mm: dict):
    """Train the disc-level localiser on ``cache``'s patients with centres
    (``pretrain.levels.localiser`` settings, ``config.seed``). Returns ``(params, card)``; the
    card holds the settings and the held-out error (mm) beside the mean-position baseline."""
    lc = config.pretrain.levels.localiser
    images, targets, mask, spacing, ids = localise.localiser_data(cache, centres_mm, n_slices=int(lc.slices))
    variables, report = localise.train_localiser(
        images, targets, mask, spacing, config=lc, steps=int(lc.steps),
        batch_size=int(lc.batch_size), width=int(lc.width), seed=int(config.seed))
    card = {"model": {"num_levels": len(LEVELS), "width": int(lc.width)}, "slices": int(lc.slices),
            "spacing_mm": [float(s) for s in spacing], "patients": len(ids), **report}
    return jax.device_get(variables["params"]), card


def predict_centres(params, card: dict, cache: pd.DataFrame, *, batch_size: int = 32) -> np.ndarray:
    """(N, L, 2) centres predicted by a saved localiser for every cache row (NaN without MRI)."""
    model = LevelLocaliser(**card["model"])
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x)["centres"])
    out = np.full((len(cache), len(LEVELS), 2), np.nan)
    rows = [i for i, f in enumerate(cache["mri_file"]) if isinstance(f, str) and f
            and not bool(cache["excluded"].iloc[i])]
    for s in range(0, len(rows), batch_size):
        idx = rows[s:s + batch_size]
        x = np.stack([localise.slab(np.load(cache["mri_file"].iloc[i]), int(card["slices"])) for i in idx])
        out[idx] = np.asarray(apply(params, jnp.asarray(x)))
    return out


def centre_error(pred: np.ndarray, cache: pd.DataFrame, centres_mm: dict) -> dict:
    """In-plane error (mm; mean, median, within 10 mm, per level) of predicted centres (N, L, 2)
    px of ``cache``'s rows against their known centres (LPS mm, ``patient_id`` -> (L, 3))."""
    truth = centres_px(cache, centres_mm)
    mask = np.isfinite(truth).all(-1) & np.isfinite(pred).all(-1)
    if not mask.any():
        raise CohortError("localiser error: no patient has both a predicted and a known centre")
    row = int(np.flatnonzero(mask.any(axis=1))[0])
    spacing = np.linalg.norm(np.asarray(json.loads(cache["mri_affine"].iloc[row]), float)[:3, :3], axis=0)[1:3]
    return localise.summarise(localise.errors_mm(np.nan_to_num(pred), np.nan_to_num(truth),
                                                 mask.astype(float), spacing))


def level_source(config, cache: pd.DataFrame, centres: np.ndarray):
    """A ``CachedExamples`` of ``cache`` whose examples carry their ``mri_centres`` (L, 2)."""
    from lumbarjax.data.pipeline import CachedExamples
    d, h, w = config.mri.shape
    return CachedExamples(cache, {"mri_centres": np.nan_to_num(centres).astype(np.float32)},
                          mri_shape=(d, h, w), xray_shape=tuple(config.xray.shape))


def level_probs(config, grader, cache: pd.DataFrame, *, batch_size: int = 16):
    """Per-level stenosis-grade probabilities of every cache row from a by-level encoder file's
    grader (``pipelines.pretrain.file_grader``): its localiser places the levels, its level grader
    grades them. Returns ``(probs (N, L, K), centres (N, L, 2) px)``, NaN rows where a patient
    has no MRI."""
    from lumbarjax.data.pipeline import make_loader

    centres = predict_centres(grader.localiser, grader.card["levels"]["localiser"], cache)
    model = grader.model
    apply = jax.jit(lambda v, b: corn_probs(model.apply(v, b, train=False)["grade"]))
    source = level_source(config, cache, centres)
    probs = np.full((len(cache), len(LEVELS), int(model.num_grades)), np.nan)
    idx = np.flatnonzero(np.isfinite(centres).all(axis=(1, 2)))
    for batch in make_loader(source, batch_size=batch_size, shuffle=False, seed=0, num_epochs=1, indices=idx):
        keep = np.asarray(batch["valid"]) > 0
        p = np.asarray(apply(grader.variables, {"mri": batch["mri"], "mri_centres": batch["mri_centres"]}))
        probs[np.asarray(batch["index"])[keep]] = p[keep]
    return probs, centres


def true_level_grades(truth: pd.DataFrame) -> pd.DataFrame:
    """``patient_id`` + ``grade_<LEVEL>``: the synthetic cohort's noise-free canal grade per
    level (``synthetic.stenosis_grade_of`` of the primary and secondary stenosis, 0 elsewhere)."""
    from lumbarjax.synthetic import stenosis_grade_of
    out = pd.DataFrame({"patient_id": truth["patient_id"].astype(str).to_numpy()})
    for lv in LEVELS:
        g = np.zeros(len(truth))
        for lcol, scol in (("stenosis_level", "stenosis_severity"), ("stenosis_level_2", "stenosis_severity_2")):
            if lcol in truth:
                at = (truth[lcol].astype(str) == lv).to_numpy()
                g = np.where(at, np.maximum(g, stenosis_grade_of(truth[scol].to_numpy(float))), g)
        out[f"grade_{lv}"] = g
    return out


def outcome_cohort_summary(probs: np.ndarray | None, centres: np.ndarray, cache: pd.DataFrame,
                           truth: pd.DataFrame | None, *, num_grades: int) -> dict:
    """The localiser and level grader on the outcome cohort in numbers: patients placed (and
    graded), by level (``probs`` (N, L, K); None for a whole-volume grader) the predicted grade
    counts per level and, with a synthetic ground truth, the localiser's error (mm, per level)
    and the per-level QWK against the noise-free true grade."""
    from lumbarjax.eval import metrics as metrics_lib
    graded = probs is not None
    ok = np.isfinite(centres).all(axis=(1, 2)) & (np.isfinite(probs).all(axis=(1, 2)) if graded else True)
    out = {"patients": int(ok.sum()), "graded_by_level": graded}
    if graded:
        pred = np.argmax(np.nan_to_num(probs), axis=-1)   # (N, L) most probable grade
        out["pred_grade_counts"] = {lv: np.bincount(pred[ok, j], minlength=num_grades).tolist()
                                    for j, lv in enumerate(LEVELS)}
    if truth is None:
        return out
    t = truth.set_index(truth["patient_id"].astype(str))
    ids = cache["patient_id"].astype(str).to_numpy()
    have = ok & np.isin(ids, t.index)
    if not have.any():
        return out
    out["localiser_error_mm"] = centre_error(np.where(have[:, None, None], centres, np.nan), cache,
                                             localise.centres_from_truth(truth))
    if not graded:
        return out
    tg = true_level_grades(t.loc[ids[have]].reset_index(drop=True))
    per = {}
    for j, lv in enumerate(LEVELS):
        y = tg[f"grade_{lv}"].to_numpy().astype(int)
        # QWK needs two true grades at the level (none where no patient is stenotic there)
        q = metrics_lib.qwk(y, pred[have, j], num_grades) if len(np.unique(y)) > 1 else None
        per[lv] = {"qwk": None if q is None else round(float(q), 3),
                   "true_grade_counts": np.bincount(y, minlength=num_grades).tolist()}
    y_all = tg[[f"grade_{lv}" for lv in LEVELS]].to_numpy().astype(int)
    out["vs_truth"] = {"qwk_all_levels": round(float(metrics_lib.qwk(y_all.ravel(), pred[have].ravel(), num_grades)), 3),
                       "qwk_worst_level": round(float(metrics_lib.qwk(y_all.max(1), pred[have].max(1), num_grades)), 3),
                       "per_level": per,
                       "definition": "most probable grade per level vs the generator's noise-free canal grade"}
    return out


__all__ = ["centre_error", "centres_px", "crop_rows", "level_probs", "level_source", "outcome_cohort_summary",
           "predict_centres", "train_level_localiser", "true_level_grades"]
