"""Source ablation of the outcome task: clinical only / + X-ray / + MRI / all three, with the
penalised linear family of lumbarjax.selection.linear on each column set, out of fold.

Each row gives the out-of-fold metric with a patient bootstrap CI: AUC for binary heads, MAE in
VAS mm (and R²) for regression heads. It also gives the paired bootstrap difference to the
clinical logistic regression (ridge for VAS) on the same folds and, when known, the Bayes-optimal
value (AUC; MAE and R² for VAS).
On a synthetic cohort a last row (:func:`with_true_latents`) hands the linear family the true
latents instead of the image scores: the ceiling a perfect stage 1 would reach at this cohort size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lumbarjax.errors import ClinicalError, CohortError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.eval.baselines import clinical_baselines
from lumbarjax.selection.linear import crossval_penalised


def feature_sets(clinical: Sequence[str], xray: Sequence[str] = (), mri: Sequence[str] = ()) -> dict:
    """``{"clinical": …, "+xray": …, "+mri": …, "all": …}``; a set whose source has no columns is
    left out."""
    sets = {"clinical": list(clinical)}
    if xray:
        sets["+xray"] = [*clinical, *xray]
    if mri:
        sets["+mri"] = [*clinical, *mri]
    if xray and mri:
        sets["all"] = [*clinical, *xray, *mri]
    return sets


TRUE_COLUMNS = {"xray": ("true_grade", "grade"), "mri": ("true_stenosis_severity", "stenosis_severity")}


def with_true_latents(records: pd.DataFrame, cols: Mapping[str, Sequence[str]],
                      truth: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A synthetic cohort's records plus, per image source with stage-1 columns, its true latent
    (``truth`` = ground_truth.csv): the degeneration grade the X-ray shows (``true_grade``) and
    the stenosis severity the MRI shows (``true_stenosis_severity``), each only where that
    source has a score (a perfect stage 1 sees no more patients than the real one). The
    ablation's ``schema.PERFECT_STAGE1`` row: what the same linear family reaches on the same
    patients and folds if the image models were perfect — the learnable ceiling beside the
    Bayes-optimal AUC. Evaluation only: the outcome models never see these columns."""
    truth = truth.assign(patient_id=truth["patient_id"].astype(str)).set_index("patient_id")
    ids = records["patient_id"].astype(str)
    out, added = records.copy(), []
    for source, (name, latent) in TRUE_COLUMNS.items():
        if not cols.get(source) or latent not in truth.columns:
            continue
        seen = np.isfinite(pd.to_numeric(records[cols[source][0]], errors="coerce").to_numpy(float))
        out[name] = np.where(seen, pd.to_numeric(truth[latent], errors="coerce").reindex(ids).to_numpy(float), np.nan)
        added.append(name)
    return out, added


def stage1_vs_truth(records: pd.DataFrame, cols: Mapping[str, Sequence[str]], truth: pd.DataFrame,
                    grader_oof: pd.DataFrame | None = None, *, n_boot: int = 1000, seed: int = 0,
                    num_grades: int = 5) -> dict:
    """How well stage 1 reads the latents of a synthetic cohort, on the outcome patients
    (``records`` with the stage-1 columns ``cols``; ``truth`` = ground_truth.csv), each with a
    patient-bootstrap CI:

    * ``mri_r``: Pearson r of the MRI score (``mri_stenosis_expected``, the pretrained grader's
      expected grade) with the true stenosis severity;
    * ``xray_qwk``: QWK of the grader's out-of-fold grade (``grader_oof.pred_grade``) against the
      true degeneration grade; ``xray_level_qwk``: the same for the level-by-level patient grade
      (``level_pred_grade``), when the run has it.

    Evaluation only (the truth never reaches a model). A score a run does not have is left out."""
    truth = truth.assign(patient_id=truth["patient_id"].astype(str)).set_index("patient_id")
    ids = records["patient_id"].astype(str)
    out = {}
    if "mri_stenosis_expected" in records.columns and "stenosis_severity" in truth.columns:
        x = pd.to_numeric(records["mri_stenosis_expected"], errors="coerce").to_numpy(float)
        t = pd.to_numeric(truth["stenosis_severity"], errors="coerce").reindex(ids).to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(t)
        if ok.sum() > 2:
            ci = metrics_lib.bootstrap_ci(lambda a, b: float(np.corrcoef(a, b)[0, 1]), x[ok], t[ok],
                                          n_boot=n_boot, seed=seed).as_dict()
            out["mri_r"] = {**ci, "n": int(ok.sum()), "definition": "Pearson r(mri_stenosis_expected, true "
                            "stenosis severity)"}
    if grader_oof is not None and "grade" in truth.columns:
        g = grader_oof.assign(patient_id=grader_oof["patient_id"].astype(str)).set_index("patient_id")
        t = pd.to_numeric(truth["grade"], errors="coerce").reindex(ids).to_numpy(float)
        for key, col in (("xray_qwk", "pred_grade"), ("xray_level_qwk", "level_pred_grade")):
            if col not in g.columns:
                continue
            p = pd.to_numeric(g[col], errors="coerce").reindex(ids).to_numpy(float)
            ok = np.isfinite(p) & np.isfinite(t)
            if ok.sum() > 2:
                ci = metrics_lib.bootstrap_ci(lambda a, b: metrics_lib.qwk(a, b, num_grades), t[ok], p[ok],
                                              n_boot=n_boot, seed=seed).as_dict()
                out[key] = {**ci, "n": int(ok.sum()), "definition": f"QWK({col}, true degeneration grade)"}
    return out


def ablation(records: pd.DataFrame, folds: np.ndarray, head: str, sets: Mapping[str, Sequence[str]], *,
             n_boot: int = 1000, seed: int = 0, bayes: Mapping | None = None, grid=None) -> dict:
    """Out-of-fold ablation of one ``head`` over the column ``sets`` (see :func:`feature_sets`).

    Returns ``{"head", "metric", "bayes", "rows": [{"features", "n_columns", "models",
    "value": CI dict, "r2": CI dict (regression) or None, "diff_vs_clinical_logreg": PairedDiff
    dict}, ...], "clinical_logreg": CI dict, "clinical_logreg_r2": CI dict or None}``.
    For MAE the difference is MAE(set) − MAE(logreg), so negative is better. ``bayes``: the
    head's Bayes-optimal values (``{"auc"}``, or ``{"mae", "r2"}`` for VAS), stored as given.
    ``grid``: the linear candidates (default lumbarjax.selection.linear.candidates).
    """
    if "clinical" not in sets:
        raise ClinicalError("ablation: the column sets need a 'clinical' entry (the reference)")
    base = clinical_baselines(records, folds, head, features=list(sets["clinical"]), seed=seed)
    y = base["label"].to_numpy(float)
    binary = base.attrs["task"] == "binary"
    metric = metrics_lib.auc if binary else metrics_lib.mae
    keep = np.isfinite(y)
    ref = base["pred_logreg"].to_numpy(float)
    def r2(p):
        return None if binary else metrics_lib.bootstrap_ci(metrics_lib.r2, y[keep], p[keep], n_boot=n_boot,
                                                            seed=seed).as_dict()

    out = {"head": head, "metric": "auc" if binary else "mae", "bayes": dict(bayes) if bayes else None,
           "clinical_logreg": metrics_lib.bootstrap_ci(metric, y[keep], ref[keep], n_boot=n_boot,
                                                        seed=seed).as_dict(),
           "clinical_logreg_r2": r2(ref), "rows": []}
    for name, cols in sets.items():
        oof = crossval_penalised(records, folds, head, cols, task=base.attrs["task"], seed=seed, grid=grid)
        p = oof["pred"].to_numpy(float)
        out["rows"].append({
            "features": name, "n_columns": len(cols), "models": sorted(set(oof["model"])),
            "value": metrics_lib.bootstrap_ci(metric, y[keep], p[keep], n_boot=n_boot, seed=seed).as_dict(),
            "r2": r2(p),
            "diff_vs_clinical_logreg": metrics_lib.paired_bootstrap_diff(metric, y, p, ref, n_boot=n_boot,
                                                                         seed=seed).as_dict()})
    return out


def ablation_or_error(job) -> dict | str:
    """:func:`ablation` of one head, ``job = (records, folds, head, sets, keyword arguments)``;
    the message of a CohortError / ClinicalError (e.g. a fold's training rows with one class)
    instead of raising it, so that heads can run side by side in worker processes."""
    records, folds, head, sets, kwargs = job
    try:
        return ablation(records, folds, head, sets, **kwargs)
    except (CohortError, ClinicalError) as e:
        return str(e)


def markdown(results: Sequence[dict]) -> str:
    """A plain table of :func:`ablation` results (one block of rows per head)."""
    lines = ["| head | features | metric [95 % CI] | − clinical LR [95 % CI] | Bayes |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        b = "" if not r.get("bayes") or r["bayes"].get(r["metric"]) is None else f"{r['bayes'][r['metric']]:.3f}"
        c = r["clinical_logreg"]
        lines.append(f"| {r['head']} | clinical LR | {r['metric']} {c['point']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] | | {b} |")
        for row in r["rows"]:
            v, d = row["value"], row["diff_vs_clinical_logreg"]
            lines.append(f"| {r['head']} | {row['features']} | {r['metric']} {v['point']:.3f} [{v['lo']:.3f}, "
                         f"{v['hi']:.3f}] | {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | {b} |")
    return "\n".join(lines)
