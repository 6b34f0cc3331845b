"""External validation (``--mode=evaluate``): a finished run's outcome fold ensemble on another
labelled cohort.

The other cohort is indexed, joined with its clinical table and preprocessed exactly as the run's
own cohort (``workflow.stage_index`` / ``stage_cohort`` with ``data.cohort_dir`` = that cohort; its
manifest, cache, exclusions and cohort summary go to the output folder, never to the run's). The
k outcome fold models are restored as for ``--mode=predict`` (``restore.load_fold_models``: each
fold's best checkpoint and clinical encoder); each predicts every usable patient, and the
ensemble prediction is the mean of the k fold models' outputs (probabilities for binary heads,
VAS 0-100 mm for regression heads). Nothing of the other cohort was seen in training or model
selection, so its metrics are an external estimate.

Written to ``out_dir`` (default ``<workdir>/external/<cohort folder name>``):

* ``predictions.csv`` — ``patient_id, label_<head>, pred_<head>`` (ensemble mean) per patient;
* ``metrics.json`` + ``report.html`` (lumbarjax.eval.report.write_report): per head the AUC
  (binary) or MAE (VAS) with patient-bootstrap CIs (``config.eval.n_boot``), calibration slope
  and intercept with a calibration plot, a decision curve (net benefit), and, when the cohort is
  synthetic, its Bayes-optimal AUC; ``extra.external_validation`` says which run and how many
  fold models.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.jobs import cohort_stages, restore, workflow
from lumbarjax.data.pipeline import CachedExamples, make_loader
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.train.loop import predict as predict_batches
from lumbarjax.pipelines.tasks import find_variant, outcome_task, xray_stage1_task
from lumbarjax.settings import setting


def cohort_config(config, cohort_dir: str) -> ml_collections.ConfigDict:
    """The run's config pointed at ``cohort_dir``: its own clinical table, manifest and cache
    (defaults under the output folder), no synthetic cohort written."""
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.data.cohort_dir = cohort_dir
    sub.data.clinical_file, sub.data.manifest, sub.data.cache_dir = "", "", ""
    sub.data.make_demo = False
    return sub


def fold_outputs(config, workdir: str, task_name: str, records: pd.DataFrame, cache: pd.DataFrame) -> list:
    """Each fold model of the finished cross-validation in ``<workdir>/<task_name>``
    (``"outcome"``, ``"outcome_clinical_only"`` or ``"grader"``) applied to every row of
    ``records`` / ``cache`` (aligned by row): one dict of decoded columns (``pred_<head>``,
    ``prob_grade_k`` …, (N,) each) per fold, fold order. An outcome fold model sees the clinical
    columns through its own fold's encoder."""
    task, _ = find_variant(task_name)
    task_cfg = config[task.name]
    per_fold = []
    for fm in restore.load_fold_models(config, workdir, task_name):
        extras = {"clinical": restore.feature_frame(config, records, fm.encoder)} if fm.encoder is not None else {}
        source = CachedExamples(cache, extras, mri_shape=tuple(config.mri.shape),
                                xray_shape=tuple(config.xray.shape))
        out = predict_batches(fm.state, fm.model,
                              make_loader(source, batch_size=int(task_cfg.train.batch_size), shuffle=False,
                                          seed=int(config.seed), num_epochs=1))
        order = np.argsort(np.asarray(out["index"]))
        per_fold.append(task.decode({k: np.asarray(jax.device_get(v))[order] for k, v in out.items()},
                                    task_cfg))
    return per_fold


def ensemble_predictions(config, workdir: str, records: pd.DataFrame, cache: pd.DataFrame) -> pd.DataFrame:
    """``patient_id, pred_<head>`` (mean of the k outcome fold models) for every row of
    ``records`` / ``cache`` (aligned by row); ``attrs["per_fold"]`` holds each fold model's
    ``{pred_<head>: (N,)}`` and ``attrs["n_fold_models"]`` k."""
    per_fold = fold_outputs(config, workdir, "outcome", records, cache)
    out = pd.DataFrame({"patient_id": records["patient_id"].astype(str).to_numpy()})
    for c in per_fold[0]:
        out[c] = np.mean([p[c] for p in per_fold], axis=0)
    out.attrs["n_fold_models"] = len(per_fold)
    out.attrs["per_fold"] = per_fold
    return out


def stage1_scores(config, workdir: str, records: pd.DataFrame, cache: pd.DataFrame) -> pd.DataFrame:
    """The stage-1 score columns (``models.stage1``) of new patients from the finished run's
    models: the grader fold ensemble's X-ray grade probabilities (mean over folds; NaN without an
    X-ray), the level scale (``pipelines.xray_levels.grade_films``: landmark models + every fold's
    level grader, when the run has them), and the pretrained MRI grader's stenosis scores.
    Returns ``patient_id`` + the ``xray_…`` / ``mri_…`` columns the run's linear models use."""
    from lumbarjax.models import stage1
    from lumbarjax.pipelines import pretrain, xray_levels
    ids = records["patient_id"].astype(str).to_numpy()
    tables = []
    xray_task = xray_stage1_task(config.tasks)
    if xray_task is not None:
        has_xray = cache["xray_file"].fillna("").astype(str).str.len().to_numpy() > 0
        per_fold = fold_outputs(config, workdir, xray_task.name, records, cache)
        g = pd.DataFrame({"patient_id": ids, "fold": -1})
        for c in per_fold[0]:
            v = np.stack([p[c] for p in per_fold]).astype(float)
            g[c] = np.median(v, axis=0) if c.startswith("pred_grade") else v.mean(axis=0)
        levels_dir = config.levels.model_dir or os.path.join(workdir, "levels")
        if config.levels.enabled and os.path.exists(os.path.join(levels_dir, "levels_metrics.json")):
            rows = np.flatnonzero(has_xray)
            graded = xray_levels.grade_films(config.levels, levels_dir,
                                             [xray_levels.film_of(p) for p in records["xray_paths"].iloc[rows]])
            g["level_pred_grade"], g["scale"] = np.nan, np.nan
            g.loc[rows, "level_pred_grade"] = [r["grade"] for r in graded]
            g.loc[rows, "scale"] = [r["scale"]["mean"] for r in graded]
        num = [c for c in g.columns if c not in ("patient_id", "fold")]
        g.loc[~has_xray, num] = np.nan
        tables.append(stage1.xray_scores(g, detail=str(config.outcome.stage1_xray)))
    path = pretrain.encoder_path(config, workdir)
    if config.pretrain.enabled and os.path.exists(path):
        probs = pretrain.stenosis_probs(config, path, cache)
        if probs is not None:
            tables.append(stage1.mri_scores(ids, np.nan_to_num(probs),
                                            np.isfinite(probs).reshape(len(probs), -1).all(axis=1),
                                            detail=str(config.outcome.stage1_mri)))
    out = pd.DataFrame({"patient_id": ids})
    for t in tables:
        out = out.merge(t, on="patient_id", how="left", validate="one_to_one")
    return out


def selected_predictions(config, workdir: str, records: pd.DataFrame, cache: pd.DataFrame,
                         network_per_fold: list) -> pd.DataFrame | None:
    """The run's reported outcome model (``selection.select``) on new patients: per outer fold and
    head, the fold's combination of its candidates with the fold's weights — the fold's fusion
    network (``network_per_fold[k]``) and clinical-only network, and the linear candidates
    refitted exactly as the run fitted them (``select.fit_linear``, deterministic) on that fold's
    training patients, applied to the new patients' clinical columns + :func:`stage1_scores`;
    then the mean over folds. ``attrs["per_fold"]``: head -> the k per-fold combinations;
    ``attrs["candidates"]``: head -> per fold ``{candidate: (N,) prediction}``;
    ``attrs["comparators"]``: the clinical baselines as the run's report names them ("clinical
    logreg" for the binary heads, "clinical ridge" for VAS, "clinical-only network"), each the
    mean over folds of its fold model, as a table ``patient_id, pred_<head>``. None when the run
    has no reported combination (``outcome.select_model`` off)."""
    from lumbarjax.selection import stack
    from lumbarjax.models import stage1
    from lumbarjax.pipelines import crossval
    from lumbarjax.selection import select
    sel_path = os.path.join(workdir, "outcome", "selection.json")
    if not setting(config, "outcome.select_model") or not os.path.exists(sel_path):
        return None
    with open(sel_path) as f:
        summary = json.load(f)
    run = cohort_stages.join_cohort(config, workdir, workflow.stage_index(config, workdir))  # writes nothing
    td = crossval.prepare_task("outcome", config, run.records, run.cache)
    read = lambda p: (pd.read_csv(os.path.join(workdir, p), dtype={"patient_id": str})  # noqa: E731
                      if os.path.exists(os.path.join(workdir, p)) else None)
    run_records = workflow.stage1_records(config, workdir, td, read("grader/oof.csv"), read("mri_scores.csv"))[0]
    new_records, _ = stage1.attach(records.assign(patient_id=records["patient_id"].astype(str)),
                                   stage1_scores(config, workdir, records, cache))
    networks = {select.NETWORK: network_per_fold}
    if os.path.isdir(os.path.join(workdir, select.NETWORK_DIRS[select.CLINICAL_NETWORK])):
        networks[select.CLINICAL_NETWORK] = fold_outputs(config, workdir, select.NETWORK_DIRS[select.CLINICAL_NETWORK],
                                                         records, cache)
    grids = workflow.linear_grids(config, td, [])
    binary = tuple(config.outcome.model.binary_heads)
    ids = td.records["patient_id"].astype(str)
    train_rows = {}   # fold -> all of its training patients (the rows the linear candidates refit on)
    for f in sorted({int(e["fold"]) for e in summary["folds_detail"]}):
        with open(os.path.join(workdir, "outcome", f"fold_{f}", "split.json")) as fh:
            split = json.load(fh)
        train_rows[f] = np.flatnonzero(ids.isin(set(split["inner_train"]) | set(split["inner_val"])).to_numpy())
    @functools.cache   # the clinical reference is both a fold's candidate and a comparator
    def candidate(c: str, h: str, task: str, f: int) -> np.ndarray:
        """(N,) prediction of candidate ``c`` of fold ``f`` for head ``h`` on the new patients."""
        if c in networks:
            return np.asarray(networks[c][f][f"pred_{h}"], float)
        return select.fit_linear(run_records, h, task, train_rows[f], c, summary["features"],
                                 summary["reference_features"], grids.get(h),
                                 int(config.seed) + f).predict(new_records)

    pid = new_records["patient_id"].to_numpy()
    out = pd.DataFrame({"patient_id": pid})
    out.attrs["per_fold"], out.attrs["candidates"] = {}, {}
    baselines = {name: pd.DataFrame({"patient_id": pid})
                 for name in ("clinical logreg", "clinical ridge", "clinical-only network")}
    for h in td.heads:
        task = "binary" if h in binary else "regression"
        per_fold, parts = [], []
        for e in (e for e in summary["folds_detail"] if e["head"] == h):
            preds = {c: candidate(c, h, task, int(e["fold"])) for c in e["weights"]}
            parts.append(preds)
            per_fold.append(stack.combine(preds, e["weights"]))
        out.attrs["per_fold"][h], out.attrs["candidates"][h] = per_fold, parts
        out[f"pred_{h}"] = np.mean(per_fold, axis=0)
        out[f"model_{h}"] = "mean over folds of: " + " | ".join(
            stack.describe(e["weights"]) for e in summary["folds_detail"] if e["head"] == h)
        folds = sorted(train_rows)
        base = "clinical logreg" if task == "binary" else "clinical ridge"
        baselines[base][f"pred_{h}"] = np.mean([candidate(select.REFERENCE, h, task, f) for f in folds], axis=0)
        if select.CLINICAL_NETWORK in networks:
            baselines["clinical-only network"][f"pred_{h}"] = np.mean(
                [candidate(select.CLINICAL_NETWORK, h, task, f) for f in folds], axis=0)
    out.attrs["comparators"] = {k: v for k, v in baselines.items() if v.shape[1] > 1}
    return out


def evaluate_cohort(config, workdir: str, cohort_dir: str, *, out_dir: str | None = None) -> dict:
    """Apply the finished run ``workdir``'s outcome fold ensemble to the labelled cohort
    ``cohort_dir`` and write predictions.csv, metrics.json and report.html (module docstring).

    Returns ``{"html", "metrics", "predictions", "n_patients"}`` (paths and the number of
    patients predicted).

    Raises:
      ConfigError: the config differs from the run's, or the run has no outcome task.
      CohortError: the run is not finished, the cohort folder is missing, or no patient of it
        has an outcome label and a usable image / clinical row.
    """
    task = outcome_task(config.tasks)
    if task is None:
        raise ConfigError("--mode=evaluate applies the outcome fold models: config.tasks has no 'outcome'")
    if not os.path.isdir(cohort_dir):
        raise CohortError(f"--mode=evaluate: the cohort folder {cohort_dir} does not exist")
    if os.path.abspath(cohort_dir) == os.path.abspath(config.data.cohort_dir or os.path.join(workdir, "demo_cohort")):
        raise ConfigError(f"--mode=evaluate: {cohort_dir} is the run's own cohort; external "
                          "validation needs another cohort (the run's own estimate is its report)")
    restore.check_run_config(config, workdir)
    out_dir = out_dir or os.path.join(workdir, "external", os.path.basename(os.path.normpath(cohort_dir)))
    os.makedirs(out_dir, exist_ok=True)
    sub = cohort_config(config, cohort_dir)
    manifest = workflow.stage_index(sub, out_dir)
    cohort = workflow.stage_cohort(sub, out_dir, manifest)
    ok, labels, heads = task.labels(cohort.records, cohort.cache, config[task.name])
    ok = ok & ~cohort.cache["excluded"].to_numpy(bool)
    if not ok.any():
        raise CohortError(f"{cohort_dir}: no patient with an outcome label and usable inputs "
                          f"({len(cohort.records)} joined; see {out_dir}/exclusions.csv)")
    records = cohort.records.loc[ok].reset_index(drop=True)
    cache = cohort.cache.loc[ok].reset_index(drop=True)
    logging.info("evaluate: %d of %d patients of %s have an outcome label", len(records),
                 len(cohort.records), cohort_dir)
    pred = ensemble_predictions(config, workdir, records, cache)
    selected = selected_predictions(config, workdir, records, cache, pred.attrs["per_fold"])
    lead = pred if selected is None else selected
    table = pred[["patient_id"]].copy()
    for h in heads:
        table[f"label_{h}"] = labels[h][ok]
        table[f"pred_{h}"] = lead[f"pred_{h}"].to_numpy()
    others = None
    if selected is not None:
        for h in heads:
            table[f"network_pred_{h}"] = pred[f"pred_{h}"].to_numpy()
            table[f"model_{h}"] = selected[f"model_{h}"].to_numpy()
        others = {"fusion network": pred, **selected.attrs["comparators"]}
    pred_path = os.path.join(out_dir, "predictions.csv")
    atomic.write_csv(table, pred_path)
    from lumbarjax.eval.report import write_report
    extra = {"external_validation": {
        "run": os.path.basename(os.path.normpath(workdir)),
        "cohort": os.path.basename(os.path.normpath(cohort_dir)),
        "n_fold_models": pred.attrs["n_fold_models"], "n_patients": int(len(table)),
        "ensemble": "mean of the k outcome fold models' predictions (probabilities / VAS mm)",
        "model": ("the fusion network" if selected is None else
                  "the reported model (selection.select): per fold the combination of the fold's networks and "
                  "linear models (refitted on that fold's training patients) with the fold's weights, "
                  "averaged over the folds; beside it the fusion network, the clinical-only network and "
                  "the clinical logistic (ridge) regression, each the mean of its fold models"),
        "note": "no patient of this cohort was used in training or model selection"}}
    html, metrics = write_report(
        out_dir, title="lumbarjax external validation", cohort_summary=cohort.summary,
        outcome_oof=table, other_models=others, bayes=workflow.bayes_ceilings(cohort_dir), extra=extra,
        n_boot=int(config.eval.n_boot), seed=int(config.seed), threshold=float(config.eval.threshold))
    return {"html": html, "metrics": metrics, "predictions": pred_path, "n_patients": int(len(table))}
