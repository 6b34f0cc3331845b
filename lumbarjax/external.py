"""External validation (``--mode=evaluate``): a finished run's outcome fold ensemble on another
labelled cohort.

The other cohort is indexed, joined with its clinical table and preprocessed exactly as the run's
own cohort (``workflow.stage_index`` / ``stage_cohort`` with ``data.cohort_dir`` = that cohort; its
manifest, cache, exclusions and cohort summary go to the output folder, never to the run's). The
k outcome fold models are restored as for ``--mode=predict`` (``predict.load_fold_models``: each
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

import os

import jax
import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic, predict, workflow
from lumbarjax.data.pipeline import CachedExamples, make_loader
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.train.loop import predict as predict_batches
from lumbarjax.train.tasks import get_task


def cohort_config(config, cohort_dir: str) -> ml_collections.ConfigDict:
    """The run's config pointed at ``cohort_dir``: its own clinical table, manifest and cache
    (defaults under the output folder), no synthetic cohort written."""
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.data.cohort_dir = cohort_dir
    sub.data.clinical_file, sub.data.manifest, sub.data.cache_dir = "", "", ""
    sub.data.make_demo = False
    return sub


def ensemble_predictions(config, workdir: str, records: pd.DataFrame, cache: pd.DataFrame) -> pd.DataFrame:
    """``patient_id, pred_<head>`` (mean of the k outcome fold models) for every row of
    ``records`` / ``cache`` (aligned by row); ``attrs["per_fold"]`` holds each fold model's
    ``{pred_<head>: (N,)}`` and ``attrs["n_fold_models"]`` k."""
    task = get_task("outcome")
    folds = predict.load_fold_models(config, workdir, "outcome")
    bs = int(config.outcome.train.batch_size)
    per_fold = []
    for fm in folds:
        x = predict.feature_frame(config, records, fm.encoder)
        source = CachedExamples(cache, {"clinical": x}, mri_shape=tuple(config.mri.shape),
                                xray_shape=tuple(config.xray.shape))
        out = predict_batches(fm.state, fm.model,
                              make_loader(source, batch_size=bs, shuffle=False, seed=int(config.seed),
                                          num_epochs=1))
        order = np.argsort(np.asarray(out["index"]))
        cols = task.decode({k: np.asarray(jax.device_get(v))[order] for k, v in out.items()},
                           config.outcome)
        per_fold.append(cols)
    out = pd.DataFrame({"patient_id": records["patient_id"].astype(str).to_numpy()})
    for c in per_fold[0]:
        out[c] = np.mean([p[c] for p in per_fold], axis=0)
    out.attrs["n_fold_models"] = len(folds)
    out.attrs["per_fold"] = per_fold
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
    if "outcome" not in config.tasks:
        raise ConfigError("--mode=evaluate applies the outcome fold models: config.tasks has no 'outcome'")
    if not os.path.isdir(cohort_dir):
        raise CohortError(f"--mode=evaluate: the cohort folder {cohort_dir} does not exist")
    if os.path.abspath(cohort_dir) == os.path.abspath(config.data.cohort_dir or os.path.join(workdir, "demo_cohort")):
        raise ConfigError(f"--mode=evaluate: {cohort_dir} is the run's own cohort; external "
                          "validation needs another cohort (the run's own estimate is its report)")
    predict.check_run_config(config, workdir)
    out_dir = out_dir or os.path.join(workdir, "external", os.path.basename(os.path.normpath(cohort_dir)))
    os.makedirs(out_dir, exist_ok=True)
    sub = cohort_config(config, cohort_dir)
    manifest = workflow.stage_index(sub, out_dir)
    cohort = workflow.stage_cohort(sub, out_dir, manifest)
    task = get_task("outcome")
    ok, labels, heads = task.labels(cohort.records, cohort.cache, config.outcome)
    ok = ok & ~cohort.cache["excluded"].to_numpy(bool)
    if not ok.any():
        raise CohortError(f"{cohort_dir}: no patient with an outcome label and usable inputs "
                          f"({len(cohort.records)} joined; see {out_dir}/exclusions.csv)")
    records = cohort.records.loc[ok].reset_index(drop=True)
    cache = cohort.cache.loc[ok].reset_index(drop=True)
    logging.info("evaluate: %d of %d patients of %s have an outcome label", len(records),
                 len(cohort.records), cohort_dir)
    pred = ensemble_predictions(config, workdir, records, cache)
    table = pred[["patient_id"]].copy()
    for h in heads:
        table[f"label_{h}"] = labels[h][ok]
        table[f"pred_{h}"] = pred[f"pred_{h}"].to_numpy()
    pred_path = os.path.join(out_dir, "predictions.csv")
    atomic.write_csv(table, pred_path)
    from lumbarjax.eval.report import write_report
    extra = {"external_validation": {
        "run": os.path.basename(os.path.normpath(workdir)),
        "cohort": os.path.basename(os.path.normpath(cohort_dir)),
        "n_fold_models": pred.attrs["n_fold_models"], "n_patients": int(len(table)),
        "ensemble": "mean of the k outcome fold models' predictions (probabilities / VAS mm)",
        "note": "no patient of this cohort was used in training or model selection"}}
    html, metrics = write_report(
        out_dir, title="lumbarjax external validation", cohort_summary=cohort.summary,
        outcome_oof=table, bayes=workflow.bayes_auc(cohort_dir), extra=extra,
        n_boot=int(config.eval.n_boot), seed=int(config.seed), threshold=float(config.eval.threshold))
    return {"html": html, "metrics": metrics, "predictions": pred_path, "n_patients": int(len(table))}
