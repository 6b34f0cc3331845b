"""Pretrain the MRI encoder on a labelled stenosis cohort, for transfer to a small outcome cohort.

Why: a small cohort's noisy outcomes are too few for an MRI encoder to discover canal stenosis
on its own (the measurements are in benchmarks/studies/encoder_designs/ENCODER_DESIGNS.md). The field's answer is
transfer: a *separate* cohort with radiologist stenosis grades (e.g. the public RSNA 2024 lumbar spine set: spinal canal stenosis
normal-mild / moderate / severe) teaches the encoder what a narrowed canal looks like; the
outcome model then starts from (and by default freezes) that encoder.

The pretraining cohort is any cohort folder lumbarjax can index (DICOM/NIfTI below it) plus a
labels table (CSV/Excel, read like the clinical table) with ``patient_id`` and an ordinal grade
column (``config.pretrain.label_column``, 0 .. num_grades-1). Its patients must not be the
outcome cohort's patients. The model is the outcome model's MRI encoder (same config, so the
parameters drop in) + LayerNorm + a CORN head (``tasks.TASKS["pretrain"]`` owns its labels,
loss, decoder and selection metric); 20 % of the patients (stratified, seeded) pick the best
checkpoint by quadratic weighted kappa.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.data.cohort import make_folds
from lumbarjax.data.pipeline import CachedExamples, Subset, make_loader
from lumbarjax.data.preprocess import preprocessing_config
from lumbarjax.pipelines.public_inputs import label_names
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.models import encoder_file
from lumbarjax.models.fusion import build_outcome_model
from lumbarjax.schema import LEVELS
from lumbarjax.settings import setting
from lumbarjax.pipelines import mri_levels
from lumbarjax.train.loop import predict, train_and_evaluate
from lumbarjax.pipelines.tasks import TASKS

ENCODER_FILE = "mri_encoder.msgpack"
SUMMARY_FILE = "pretrain_summary.json"


def encoder_kwargs(config) -> dict:
    """The outcome model's MRIEncoder kwargs (config.outcome.model.mri, defaults filled in) — as
    ``build_outcome_model`` resolves them, so the pretrained parameters drop in."""
    mc = ml_collections.ConfigDict(config.outcome.model.to_dict())
    mc.mri.enabled = True
    return dict(build_outcome_model(mc).mri)


def _signature(config) -> dict:
    """What the saved encoder depends on: a changed field means pretrain again."""
    p = config.pretrain
    return {"encoder": encoder_kwargs(config), "mri": {"spacing": list(config.mri.spacing),
                                                      "shape": list(config.mri.shape)},
            "seed": int(config.seed), "label_column": p.label_column, "num_grades": int(p.num_grades),
            "train": p.train.to_dict(), "optim": p.optim.to_dict(), "augment": config.outcome.augment.to_dict(),
            **({"levels": p.levels.to_dict()} if p.levels.enabled else {}),
            **({"localiser": p.levels.localiser.to_dict()} if localises(p) else {})}


def localises(pc) -> bool:
    """Whether pretraining trains the disc-level localiser: always by level
    (``pretrain.levels.enabled``), and with ``pretrain.levels.localise`` beside a whole-volume
    grader (when the cohort has level centres)."""
    return bool(setting(pc, "levels.enabled") or setting(pc, "levels.localise"))


def load_encoder(workdir: str):
    """The saved encoder parameters (a pytree of numpy arrays) and the run summary."""
    path = os.path.join(workdir, ENCODER_FILE)
    if not os.path.exists(path):
        raise CohortError(f"no pretrained encoder at {path}: run the pretraining first")
    params, _ = encoder_file.load_encoder_file(path)
    with open(os.path.join(workdir, SUMMARY_FILE)) as f:
        return params, json.load(f)


def load_pretrained(config, path: str):
    """``config.pretrain.encoder_file``: (params, summary) from an encoder file, after checking
    that its card fits ``config`` (ConfigError naming the differing field)."""
    params, card = encoder_file.load_encoder_file(path)
    encoder_file.check_compatible(card, encoder_kwargs=encoder_kwargs(config),
                                  preprocessing=preprocessing_config(config), path=path)
    logging.info("pretrain: using the encoder file %s (%s, trained on %s)", path,
                 card.get("architecture"), card.get("training_data", {}).get("format", "?"))
    summary = {"encoder_file": os.path.abspath(path), "training_data": card.get("training_data", {}),
               "lumbarjax_version": card.get("lumbarjax_version")}
    summary.update({f"val_{k}": v for k, v in card.get("validation", {}).items()})
    return params, summary


def pretrain_encoder(config, workdir: str, records: pd.DataFrame, cache: pd.DataFrame, *,
                     training_data: Mapping | None = None, centres_mm: Mapping | None = None):
    """Train ``StenosisGrader`` on ``records[config.pretrain.label_column]`` — or, with
    ``pretrain.levels.enabled``, ``LevelStenosisGrader`` on ``<label_column>_<LEVEL>`` at the
    disc-level centres ``centres_mm`` plus the level localiser (``pipelines.mri_levels``); save and
    return the encoder.

    Args:
      config: the experiment ConfigDict (reads ``pretrain.*``, ``outcome.model.mri``,
        ``outcome.augment``, ``mri.shape``, ``xray.shape``, ``seed``).
      workdir: run directory (checkpoints, metrics, ``mri_encoder.msgpack``,
        ``pretrain_summary.json``). When the saved encoder was made with the same settings it
        is loaded instead of retrained.
      records / cache: the pretraining cohort (``workflow.stage_cohort``), aligned by row.
      training_data: what the model card says about the data (format, counts; no patient ids).
      centres_mm: by level only: ``patient_id`` -> (L, 3) LPS mm disc-level centres (NaN where
        unknown; a level without a centre is left out of the loss, and counted).

    Returns:
      ``(encoder_params, summary)``; summary has the patient counts and the validation QWK.
    """
    pc = config.pretrain
    sig = _signature(config)
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    if os.path.exists(summary_path) and os.path.exists(os.path.join(workdir, ENCODER_FILE)):
        params, summary = load_encoder(workdir)
        if summary.get("signature") == json.loads(json.dumps(sig)):
            logging.info("pretrain: using the saved encoder in %s", workdir)
            return params, summary
    task = TASKS["pretrain"]
    col, k = pc.label_column, int(pc.num_grades)
    by_level = task.by_level(pc)
    ok, labels, _ = task.labels(records, cache, pc)
    ok = ok & ~cache["excluded"].to_numpy(bool)
    extras, levels_info = {}, {}
    if by_level:
        if not centres_mm:
            raise ConfigError("config.pretrain.levels.enabled: the pretraining cohort has no disc-level "
                              "centres (RSNA 2024 coordinates, SPIDER masks or a synthetic ground truth)")
        centres = mri_levels.centres_px(cache, centres_mm)              # (N, L, 2)
        graded = np.isfinite(labels["grade"])
        placed = np.isfinite(centres).all(axis=-1)
        levels_info["graded_levels_without_centre"] = int((graded & ~placed & ok[:, None]).sum())
        if levels_info["graded_levels_without_centre"]:
            logging.warning("pretrain: %d graded levels have no centre and are not used",
                            levels_info["graded_levels_without_centre"])
        labels = {"grade": np.where(placed, labels["grade"], np.nan)}
        ok = ok & np.isfinite(labels["grade"]).any(axis=1)
        extras["mri_centres"] = np.nan_to_num(centres[ok]).astype(np.float32)
    n_skipped = int((~ok).sum())
    if n_skipped:
        logging.warning("pretrain: %d of %d patients have no MRI or no %s and are not used",
                        n_skipped, len(records), col)
    recs = records.loc[ok].reset_index(drop=True)
    cache = cache.loc[ok].reset_index(drop=True)
    if len(recs) < 10:
        raise CohortError(f"pretrain: only {len(recs)} patients with an MRI and a {col}; need >= 10")
    grades = labels["grade"]
    labels = {"grade": grades[ok]}
    worst = np.nanmax(grades[ok], axis=1) if by_level else grades[ok]   # stratify on the worst level
    folds = make_folds(recs.assign(**{col: worst}), k=5, seed=int(config.seed), stratify_on=col)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)

    rows = mri_levels.crop_rows(config) if by_level else None
    model = task.build_model(pc, encoder=encoder_kwargs(config), crop_rows=rows)
    d, h, w = config.mri.shape
    source = CachedExamples(cache, {"labels": labels, **extras}, mri_shape=(d, h, w),
                            xray_shape=tuple(config.xray.shape), modalities=task.inputs(pc))
    run_cfg = ml_collections.ConfigDict(dict(seed=int(config.seed), train=pc.train.to_dict(),
                                             optim=pc.optim.to_dict(), augment=config.outcome.augment.to_dict()))
    bs = int(pc.train.batch_size)

    def eval_fn(state):
        out = predict(state, model, make_loader(source, batch_size=bs, shuffle=False, seed=0, num_epochs=1,
                                                indices=val_idx))
        order = np.argsort(out["index"])
        cols = task.decode({"grade": np.asarray(out["grade"])[order]}, pc)
        return task.selection_metric(cols, {"grade": labels["grade"][val_idx]}, pc)

    counts = np.bincount(labels["grade"][np.isfinite(labels["grade"])].astype(int), minlength=k).tolist()
    logging.info("pretrain: %d train, %d validation patients, grades %s%s", len(train_idx), len(val_idx),
                 counts, " (over all graded levels)" if by_level else "")
    result = train_and_evaluate(run_cfg, workdir, model=model, loss_fn=task.loss(pc),
                                train_source=Subset(source, train_idx), eval_fn=eval_fn,
                                row_ids=recs["patient_id"].to_numpy())
    all_params = jax.device_get(result["state"].params)
    params = all_params["mri_encoder"]
    head = {k: v for k, v in all_params.items() if k != "mri_encoder"}
    summary = {"patients_train": int(len(train_idx)), "patients_val": int(len(val_idx)),
               "patients_not_used": n_skipped, "best_step": int(result["best"]["step"] or 0),
               "val_qwk": float((result["best"]["metrics"] or {}).get("qwk", float("nan"))),
               "grade_counts": counts, "signature": sig}
    localiser = None
    if localises(pc) and not centres_mm:   # by level, centres were required above
        logging.info("pretrain: the cohort has no disc-level centres: no level localiser is trained")
    elif localises(pc):
        # the localiser learns from the training patients only: its held-out error is on the
        # same validation patients as the grade's
        localiser, loc_card = mri_levels.train_level_localiser(config, cache.iloc[train_idx], centres_mm)
        levels_info.update(localiser=loc_card, levels=list(LEVELS), graded_by_level=by_level)
        if by_level:
            levels_info.update(crop_mm=float(pc.levels.crop_mm), crop_rows=int(rows))
        val_cache = cache.iloc[val_idx]
        val_err = mri_levels.centre_error(mri_levels.predict_centres(localiser, loc_card, val_cache), val_cache,
                                          centres_mm)
        levels_info["localiser"]["val"] = val_err
        summary["levels"] = {k_: v for k_, v in levels_info.items() if k_ != "localiser"}
        summary["levels"]["localiser_val"] = val_err
        summary["levels"]["localiser_baseline_mean_position"] = loc_card["baseline_mean_position"]
    data = {"patients_train": summary["patients_train"], "patients_val": summary["patients_val"],
            "grade_counts": summary["grade_counts"], **dict(training_data or {"format": "lumbarjax"})}
    card = encoder_file.model_card(
        encoder_kwargs=sig["encoder"], preprocessing=preprocessing_config(config), label_column=col,
        label_names=label_names(col, k), training_data=data,
        validation={"qwk": summary["val_qwk"], "best_step": summary["best_step"],
                    "patients": summary["patients_val"]})
    if localiser is not None:
        card["levels"] = levels_info
    encoder_file.save_encoder_file(os.path.join(workdir, ENCODER_FILE), params, card, head=head,
                                   localiser=localiser)
    atomic.write_json(summary_path, summary, indent=1, sort_keys=False)  # last: marks the encoder complete
    return params, summary


def encoder_path(config, workdir: str) -> str:
    """The encoder file the job's outcome model starts from: ``pretrain.encoder_file``, or the
    one pretraining writes under ``<workdir>/pretrain``."""
    return config.pretrain.encoder_file or os.path.join(workdir, "pretrain", ENCODER_FILE)


class FileGrader(NamedTuple):
    """The stenosis grader an encoder file holds: ``model`` (``StenosisGrader``, or
    ``LevelStenosisGrader`` for a by-level file), its ``variables`` (encoder + grading head),
    the file's ``card`` and the ``localiser`` parameters that place the levels (always by
    level; beside a whole-volume grader when it was trained with ``pretrain.levels.localise``,
    else None)."""
    model: Any
    variables: dict
    card: dict
    localiser: Any = None

    @property
    def by_level(self) -> bool:
        """Whether the grader grades every level on a crop (else the whole volume)."""
        return is_by_level(self.card)


def is_by_level(card: Mapping) -> bool:
    """Whether an encoder file's model card describes a by-level grader (its ``levels`` entry
    has the crop; a localiser beside a whole-volume grader has none)."""
    return "crop_rows" in (card.get("levels") or {})


def file_grader(config, path: str) -> FileGrader:
    """The grader of the encoder file ``path`` (one read); ConfigError naming the file when it
    has no grading head, or a by-level card without its localiser."""
    parts = encoder_file.load_parts(path)
    card, head = parts["card"], parts["head"]
    if head is None:
        raise ConfigError(f"{path}: the encoder file has no grading head")
    levels, by_level = card.get("levels"), is_by_level(card)
    if levels and parts["localiser"] is None:
        raise ConfigError(f"{path}: the model card has a 'levels' entry but the file holds no localiser")
    k = int(card.get("labels", {}).get("num_grades") or config.pretrain.num_grades)
    pc = ml_collections.ConfigDict({"num_grades": k, "levels": {"enabled": by_level}})
    model = TASKS["pretrain"].build_model(pc, encoder=encoder_kwargs(config),
                                          crop_rows=int(levels["crop_rows"]) if by_level else None)
    return FileGrader(model, {"params": {**head, "mri_encoder": parts["params"]}}, card,
                      parts["localiser"] if levels else None)


def with_mri(cache: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the cache rows with a cached MRI that is not excluded."""
    return (cache["mri_file"].fillna("").astype(str) != "").to_numpy() & ~cache["excluded"].to_numpy(bool)


def grader_probs(config, grader: FileGrader, cache: pd.DataFrame, *, batch_size: int = 16):
    """``(probs, centres)``: (N, K) stenosis-grade probabilities of every row of ``cache`` (a
    preprocess cache table) from a :class:`FileGrader` (CORN decoding), NaN rows where a patient
    has no MRI, and ``centres`` the localised (N, L, 2) px when the file carries a localiser
    (else None); by level (``pipelines.mri_levels.level_probs``) (N, L, K) probabilities."""
    from lumbarjax.models.ordinal import corn_probs

    if grader.by_level:
        return mri_levels.level_probs(config, grader, cache, batch_size=batch_size)
    model = grader.model
    apply = jax.jit(lambda v, mri: corn_probs(model.apply(v, {"mri": mri}, train=False)["grade"][:, 0]))
    source = CachedExamples(cache, {}, mri_shape=tuple(config.mri.shape), xray_shape=tuple(config.xray.shape))
    probs = np.full((len(cache), int(model.num_grades)), np.nan)
    for batch in make_loader(source, batch_size=batch_size, shuffle=False, seed=0, num_epochs=1,
                             indices=np.flatnonzero(with_mri(cache))):
        keep = np.asarray(batch["valid"]) > 0
        p = np.asarray(apply(grader.variables, batch["mri"]))
        probs[np.asarray(batch["index"])[keep]] = p[keep]
    centres = None
    if grader.localiser is not None:
        centres = mri_levels.predict_centres(grader.localiser, grader.card["levels"]["localiser"], cache)
    return probs, centres


def stenosis_probs(config, path: str, cache: pd.DataFrame, *, batch_size: int = 16) -> np.ndarray | None:
    """(N, K) stenosis-grade probabilities of every patient of ``cache`` from the pretrained
    grader in the encoder file ``path`` (:func:`grader_probs`; (N, L, K) from a by-level file),
    None when the file holds no grading head.

    The pretraining patients are never the outcome patients (``mri_stages.stage_pretrain``
    checks), so these scores are out of sample for every outcome patient and fold."""
    if encoder_file.load_grading_head(path) is None:
        return None
    return grader_probs(config, file_grader(config, path), cache, batch_size=batch_size)[0]


def with_encoder(encoder_params, key: str = "mri_encoder") -> callable:
    """``init_params`` hook for ``train_and_evaluate``: put ``encoder_params`` into params[key]
    ("mri_encoder": the outcome model's pretrained MRI encoder; "backbone": the grader's
    pretrained X-ray backbone, ``pipelines.xray_pretrain``)."""
    section = {"mri_encoder": "config.outcome.model.mri", "backbone": "config.grader.model"}.get(key, key)

    def init(params):
        if key not in params:
            raise ConfigError(f"pretrained {key} given but the model has no {key}")
        want = jax.tree.map(np.shape, params[key])
        got = jax.tree.map(np.shape, encoder_params)
        if want != got:
            raise ConfigError(f"the pretrained {key} does not match {section} "
                              "(different architecture or width): pretrain again")
        return {**params, key: encoder_params}
    return init
