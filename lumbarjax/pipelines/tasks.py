"""The tasks lumbarjax trains: one small object per task, kept in the plain dict ``TASKS``.

A task owns everything that differs between tasks, so that cross-validation
(``pipelines.crossval``), pretraining (``pipelines.pretrain``), prediction (``predict``) and the workflow
never branch on the task's name:

  ``labels(records, cache, task_cfg)``   -> ``(usable (N,) bool, {head: labels}, heads)``
  ``build_model(task_cfg, clinical_only=False)`` -> the flax model (``Model(**cfg.model)``)
  ``inputs(task_cfg, clinical_only=False)`` -> the images that model reads ("mri", "xray"):
                                          the loader reads no other from disk
  ``loss(task_cfg, train_labels, train_masks)``  -> a hashable ``loss_fn(outputs, batch)``
  ``decode(outputs, task_cfg)``           -> ``{column: (N,) array}`` prediction columns
  ``selection_metric(cols, labels, task_cfg)`` -> ``{name: float}`` (higher is better)
  ``features`` (outcome only): the clinical feature encoder fitted on the training rows.

and what the jobs do with it (``lumbarjax.jobs``), as attributes instead of checks of its name:

  ``pretrained_encoder``  which pretraining stage gives its encoder ("xray" | "mri" | None)
  ``predicts_outcome``    its predictions are the patient outcome: the clinical baselines, the
                          source ablation, the model selection and external validation follow it
  ``xray_stage1``         its fold models' grades are the outcome's stage-1 X-ray scores
  ``patient_prediction``  how ``--mode=predict`` predicts one patient with its fold models
                          ("heads" | "grade" | None: not predicted)

Every method reads its settings from the task's config section (``config.grader``,
``config.outcome``, ``config.pretrain``; configs/default.py holds the defaults). To add a task,
write one such object and add it to ``TASKS``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import ml_collections
from flax.core import FrozenDict
import numpy as np
import pandas as pd

from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.models import ordinal
from lumbarjax.models.fusion import (ClinicalEncoder, build_grader, build_outcome_model,
                                     outcome_loss, positive_class_weights)
from lumbarjax.models.encoder3d import StenosisGrader
from lumbarjax.models.level_stenosis import LevelStenosisGrader
from lumbarjax.models.resnet2d import grader_loss
from lumbarjax.selection import clinical_offset
from lumbarjax.schema import LEVELS
from lumbarjax.settings import setting

__all__ = ["TASKS", "GraderTask", "OutcomeTask", "PretrainTask", "OrdinalLoss",
           "WeightedOutcomeLoss", "all_variants", "find_variant", "grade_columns", "get_task",
           "outcome_task", "xray_stage1_task"]


@dataclasses.dataclass(frozen=True)
class OrdinalLoss:
    """``grader_loss`` with the model's ordinal head ("corn" | "coral"); hashable by value so one
    compiled train step serves every fold."""
    head: str = "corn"

    def __call__(self, outputs, batch):
        return grader_loss(outputs, batch, head=self.head)


@dataclasses.dataclass(frozen=True)
class WeightedOutcomeLoss:
    """``outcome_loss`` with training-fold positive-class weights; hashable by value so that the
    jitted train step is reused whenever two folds have equal weights."""
    class_weights: tuple  # ((head, n_neg / n_pos), ...)

    def __call__(self, outputs, batch):
        return outcome_loss(outputs, batch, class_weights=dict(self.class_weights))


def grade_columns(task_cfg) -> list[str]:
    """The grader's label columns: ``xray_grade``, or one per level when ``model.num_levels`` is 5."""
    levels = int(task_cfg.model.num_levels)
    if levels == 1:
        return ["xray_grade"]
    if levels != len(LEVELS):
        raise ConfigError(f"grader.model.num_levels={levels}: use 1 (one grade per X-ray) or "
                          f"{len(LEVELS)} (one per level {', '.join(LEVELS)})")
    return [f"xray_grade_{lv}" for lv in LEVELS]


def _has(cache: pd.DataFrame, column: str) -> np.ndarray:
    return cache[column].fillna("").astype(str).str.len().to_numpy() > 0


def _ordinal_columns(logits, head: str) -> dict:
    """(N, L, K-1) ordinal logits -> ``pred_grade`` (+ ``prob_grade_k`` for L = 1, or
    ``pred_grade_<level>`` for L = 5), decoded by the rule of ``head``."""
    _, probs_fn, predict_fn = ordinal.ordinal_fns(head)
    logits = np.asarray(logits)
    probs = np.asarray(probs_fn(logits))                  # (N, L, K)
    pred = np.asarray(predict_fn(logits))                 # (N, L)
    cols = {}
    if logits.shape[1] == 1:
        cols["pred_grade"] = pred[:, 0]
        for k in range(probs.shape[-1]):
            cols[f"prob_grade_{k}"] = probs[:, 0, k]
    else:
        for j, lv in enumerate(LEVELS):
            cols[f"pred_grade_{lv}"] = pred[:, j]
        cols["pred_grade"] = pred.max(axis=1)
    return cols


def _qwk_metric(y, yhat, num_grades: int) -> float:
    y = np.asarray(y, float)
    if y.ndim > 1:
        y = np.nanmax(y, axis=1)
    keep = np.isfinite(y)
    q = metrics_lib.qwk(y[keep].astype(int), np.asarray(yhat)[keep].astype(int), num_grades) \
        if keep.sum() > 1 else float("nan")
    return q if np.isfinite(q) else 0.0


class GraderTask:
    """X-ray -> ordinal degeneration grade (CORN or CORAL head, ``grader.model.head``)."""
    name = "grader"
    has_features = False
    encoder_key = "backbone"   # the params subtree a pretrained X-ray backbone replaces
    pretrained_encoder = "xray"
    predicts_outcome = False
    xray_stage1 = True
    patient_prediction = "grade"

    def variants(self, task_cfg) -> tuple:
        """``(results key, folder under the workdir, clinical_only)`` of each cross-validation."""
        return (("grader", "grader", False),)

    def explains(self, config) -> bool:
        """Whether cross-validation collects integrated-gradients heat maps of this task."""
        return bool(config.explain.xray_patients)

    def heatmaps(self, config, workdir: str):
        """The ``after_fold`` hook that collects them (``<workdir>/grader/heatmaps``)."""
        from lumbarjax.explain.heatmaps import XrayHeatmapCollector
        return XrayHeatmapCollector(config, os.path.join(workdir, "grader", "heatmaps"))

    def saved_heatmaps(self, config, workdir: str):
        """The heat maps a finished run's cross-validation saved (``--mode=report``), or None."""
        folder = os.path.join(workdir, "grader", "heatmaps")
        if not os.path.isdir(folder):
            return None
        from lumbarjax.explain.heatmaps import XrayHeatmapCollector
        return XrayHeatmapCollector.load(config, folder)

    def uses_pretrained_encoder(self, config) -> bool:
        """Whether this task starts from a pretrained X-ray backbone (``config.xray_pretrain``,
        ``pipelines.xray_pretrain``)."""
        return bool(config.xray_pretrain.enabled or config.xray_pretrain.backbone_file)

    def after_crossval(self, config, workdir: str, td, oof: pd.DataFrame, cohort_root: str):
        """Work that follows this task's cross-validation on the same patients and folds:
        with ``config.levels.enabled`` the level-by-level X-ray pipeline, whose out-of-fold
        columns are merged into the grader's table (``pipelines.xray_levels``). Returns
        ``(oof, {results key: extra results})``."""
        if not config.levels.enabled:
            return oof, {}
        from lumbarjax.pipelines import xray_levels  # the landmark models: only when levels are on
        oof, levels = xray_levels.levels_beside_grader(config, workdir, td, oof, cohort_root)
        return oof, {"levels": levels}

    def labels(self, records, cache, task_cfg):
        cols = grade_columns(task_cfg)
        missing = [c for c in cols if c not in records.columns]
        if missing:
            raise CohortError(f"grader: clinical table has no grade column(s) {missing}")
        grades = records[cols].to_numpy(float)
        ok = _has(cache, "xray_file") & np.isfinite(grades).any(axis=1)
        return ok, {"grade": grades if len(cols) > 1 else grades[:, 0]}, ("grade",)

    def build_model(self, task_cfg, clinical_only: bool = False):
        return build_grader(task_cfg.model)

    def inputs(self, task_cfg, clinical_only: bool = False) -> tuple[str, ...]:
        return ("xray",)

    def loss(self, task_cfg, train_labels=None, train_masks=None):
        return OrdinalLoss(str(task_cfg.model.head))

    def decode(self, outputs: Mapping, task_cfg) -> dict:
        return _ordinal_columns(outputs["grade"], str(task_cfg.model.head))

    def selection_metric(self, cols: Mapping, labels: Mapping, task_cfg) -> dict:
        return {"qwk": _qwk_metric(labels["grade"], cols["pred_grade"], int(task_cfg.model.num_grades))}


class OutcomeTask:
    """MRI (+ X-ray) + clinical features -> ZCQ success, >=50 % back/leg pain improvement
    (binary, probabilities) and post-operative back/leg VAS (0-100 mm)."""
    name = "outcome"
    has_features = True
    encoder_key = "mri_encoder"   # the params subtree the pretrained MRI encoder replaces
    pretrained_encoder = "mri"
    predicts_outcome = True
    xray_stage1 = False
    patient_prediction = "heads"

    def variants(self, task_cfg) -> tuple:
        twin = (("clinical_only", "outcome_clinical_only", True),) if task_cfg.clinical_only else ()
        return (("outcome", "outcome", False),) + twin

    def explains(self, config) -> bool:
        return bool(config.outcome.model.mri.enabled and config.explain.max_patients)

    def heatmaps(self, config, workdir: str):
        from lumbarjax.explain.heatmaps import HeatmapCollector
        return HeatmapCollector(config, os.path.join(workdir, "heatmaps"))

    def saved_heatmaps(self, config, workdir: str):
        """The heat maps a finished run's cross-validation saved (``--mode=report``), in the
        run's order (the bootstrap CIs depend on it), or None."""
        folder = os.path.join(workdir, "heatmaps")
        if not os.path.isdir(folder):
            return None
        from lumbarjax.explain.heatmaps import HeatmapCollector
        hm = HeatmapCollector.load(config, folder)
        hm.items.sort(key=lambda it: (it["fold"], it["row"]))
        return hm

    def uses_pretrained_encoder(self, config) -> bool:
        return bool(config.pretrain.enabled and config.outcome.model.mri.enabled)

    def after_crossval(self, config, workdir: str, td, oof: pd.DataFrame, cohort_root: str):
        """Nothing follows the outcome's cross-validation inside the task (baselines and the
        report are workflow stages). Returns ``(oof, {})``."""
        return oof, {}

    def labels(self, records, cache, task_cfg):
        mc = task_cfg.model
        heads = tuple(mc.binary_heads) + tuple(mc.regression_heads)
        missing = [h for h in heads if h not in records.columns]
        if missing:
            raise CohortError(f"outcome: no column for head(s) {missing} in the cohort records")
        y = records[list(heads)].to_numpy(float)
        return np.isfinite(y).any(axis=1), {h: y[:, j] for j, h in enumerate(heads)}, heads

    def features(self, task_cfg, train_records: pd.DataFrame) -> ClinicalEncoder:
        """The clinical encoder fitted on the training rows (columns absent from the table are
        left out)."""
        numeric = [c for c in task_cfg.features.numeric if c in train_records.columns]
        categorical = [c for c in task_cfg.features.categorical if c in train_records.columns]
        return ClinicalEncoder.fit(train_records, numeric=numeric, categorical=categorical)

    def build_model(self, task_cfg, clinical_only: bool = False):
        mc = ml_collections.ConfigDict(task_cfg.model.to_dict())
        if clinical_offset.kind_of(task_cfg) == "glm":
            mc.clinical_skip = True  # the fitted clinical regression lives in the skip path
        if clinical_only:
            mc.mri.enabled = False
            mc.xray.enabled = False
        return build_outcome_model(mc)

    def inputs(self, task_cfg, clinical_only: bool = False) -> tuple[str, ...]:
        if clinical_only:
            return ()
        return tuple(k for k in ("mri", "xray") if task_cfg.model[k].enabled)

    def loss(self, task_cfg, train_labels, train_masks):
        weights = positive_class_weights(train_labels, train_masks, tuple(task_cfg.model.binary_heads))
        return WeightedOutcomeLoss(tuple(sorted(weights.items())))

    def decode(self, outputs: Mapping, task_cfg) -> dict:
        binary = tuple(task_cfg.model.binary_heads)
        cols = {}
        for h in binary + tuple(task_cfg.model.regression_heads):
            v = np.asarray(outputs[h], np.float64)
            cols[f"pred_{h}"] = 1.0 / (1.0 + np.exp(-v)) if h in binary else v
        return cols

    def selection_metric(self, cols: Mapping, labels: Mapping, task_cfg) -> dict:
        y = np.asarray(labels["zcq_success"])
        p = cols["pred_zcq_success"]
        keep = np.isfinite(y)
        a = metrics_lib.auc(y[keep], p[keep]) if keep.sum() > 1 and len(set(y[keep])) == 2 else 0.5
        return {"auc_zcq_success": a}


class PretrainTask:
    """Sagittal MRI -> ordinal stenosis grade (CORN) of a separate graded cohort: pretrains the
    outcome model's MRI encoder (``pipelines.pretrain``). Reads ``config.pretrain`` for the labels
    and ``config.outcome.model.mri`` for the encoder, so the parameters drop in. With
    ``pretrain.levels.enabled`` one grade per disc level, each read on a crop around the level
    (``models.level_stenosis``; the batch then carries ``mri_centres``)."""
    name = "pretrain"
    has_features = False
    head = "corn"
    pretrained_encoder = None
    predicts_outcome = False
    xray_stage1 = False
    patient_prediction = None

    @staticmethod
    def by_level(task_cfg) -> bool:
        """Whether the grade is read level by level (``config.pretrain.levels.enabled``)."""
        return bool(setting(task_cfg, "levels.enabled"))

    def label_columns(self, task_cfg) -> list[str]:
        """``[label_column]``, or ``<label_column>_<LEVEL>`` per level when graded by level."""
        col = task_cfg.label_column
        return [f"{col}_{lv}" for lv in LEVELS] if self.by_level(task_cfg) else [col]

    def labels(self, records, cache, task_cfg):
        cols, k = self.label_columns(task_cfg), int(task_cfg.num_grades)
        missing = [c for c in cols if c not in records.columns]
        if missing:
            raise CohortError(f"pretrain: the labels table has no column(s) {missing} "
                              f"(config.pretrain.label_column{', levels' if len(cols) > 1 else ''}); "
                              f"columns: {sorted(records.columns)}")
        grades = np.stack([pd.to_numeric(records[c], errors="coerce").to_numpy(float) for c in cols], axis=1)
        bad = np.isfinite(grades) & ((grades < 0) | (grades > k - 1) | (grades != np.round(grades)))
        if bad.any():
            r, j = np.argwhere(bad)[0]
            ids = records["patient_id"].to_numpy()[bad.any(axis=1)][:5].tolist()
            raise CohortError(f"pretrain: {cols[j]} must be an integer grade 0..{k - 1} "
                              f"(got {grades[r, j]!r}); bad values for {ids}")
        ok = np.isfinite(grades).any(axis=1) & _has(cache, "mri_file")
        return ok, {"grade": grades if len(cols) > 1 else grades[:, 0]}, ("grade",)

    def build_model(self, task_cfg, clinical_only: bool = False, *, encoder=None, crop_rows: int | None = None):
        """``StenosisGrader`` (one grade per volume), or ``LevelStenosisGrader`` (one per level,
        on crops of ``crop_rows`` rows) when graded by level."""
        if self.by_level(task_cfg):
            if not crop_rows:
                raise ConfigError("pretrain.levels: the level grader needs its crop height (crop_rows)")
            return LevelStenosisGrader(mri=FrozenDict(encoder), num_grades=int(task_cfg.num_grades),
                                       crop_rows=int(crop_rows))
        return StenosisGrader(mri=FrozenDict(encoder), num_grades=int(task_cfg.num_grades))

    def inputs(self, task_cfg, clinical_only: bool = False) -> tuple[str, ...]:
        return ("mri",)

    def loss(self, task_cfg, train_labels=None, train_masks=None):
        return OrdinalLoss(self.head)

    def decode(self, outputs: Mapping, task_cfg) -> dict:
        return _ordinal_columns(outputs["grade"], self.head)

    def selection_metric(self, cols: Mapping, labels: Mapping, task_cfg) -> dict:
        k = int(task_cfg.num_grades)
        y = np.asarray(labels["grade"], float)
        if y.ndim == 2:  # by level: QWK over every graded (patient, level)
            pred = np.stack([np.asarray(cols[f"pred_grade_{lv}"], float) for lv in LEVELS], axis=1)
            keep = np.isfinite(y)
            return {"qwk": float(metrics_lib.qwk(y[keep].astype(int), pred[keep].astype(int), k))}
        return {"qwk": float(metrics_lib.qwk(y.astype(int), np.asarray(cols["pred_grade"]).astype(int), k))}


TASKS = {"grader": GraderTask(), "outcome": OutcomeTask(), "pretrain": PretrainTask()}


def all_variants(task) -> tuple:
    """Every ``(results key, folder, clinical_only)`` a cross-validation of ``task`` can write
    (its optional variants included); ``()`` for a task that is not cross-validated."""
    if not hasattr(task, "variants"):
        return ()
    return task.variants(ml_collections.ConfigDict({"clinical_only": True}))


def find_variant(folder: str):
    """``(task, clinical_only)`` of the cross-validation written to ``<workdir>/<folder>``
    (``"grader"``, ``"outcome"``, ``"outcome_clinical_only"``)."""
    for task in TASKS.values():
        for _, sub, clinical_only in all_variants(task):
            if sub == folder:
                return task, clinical_only
    known = [sub for task in TASKS.values() for _, sub, _ in all_variants(task)]
    raise ConfigError(f"unknown task folder {folder!r}: expected one of {known}")


def outcome_task(names):
    """The task among ``names`` (``config.tasks``) whose predictions are the patient outcome
    (``predicts_outcome``), or None."""
    return next((t for t in map(get_task, names) if t.predicts_outcome), None)


def xray_stage1_task(names):
    """The task among ``names`` (``config.tasks``) whose fold models give the outcome's stage-1
    X-ray scores (``xray_stage1``), or None."""
    return next((t for t in map(get_task, names) if t.xray_stage1), None)


def get_task(name: str):
    """``TASKS[name]``; an unknown name is a ConfigError listing the known ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]
