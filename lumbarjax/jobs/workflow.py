"""The job's stages, each a function of ``(config, workdir)``, and their order (:func:`run`):

    index -> cohort -> preprocess -> cross-validate (grader, outcome, clinical-only twin)
          -> baselines -> heat maps -> report

The MRI stages (encoder pretraining, stage-1 MRI scores, MRI levels and their heat maps) are in
``lumbarjax.jobs.mri_stages``. The stages hand each other a :class:`RunResults`.

``launch.py`` picks the stages from ``--mode``. Everything written under ``workdir`` is keyed by
the pseudonymous ``patient_id``; no DICOM PHI leaves the readers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic, synthetic, timing
from lumbarjax.jobs import mri_stages
# the cohort stages are stages of this job too (workflow.stage_index, workflow.stage_cohort)
from lumbarjax.jobs.cohort_stages import Cohort, cohort_dir, dump_json, stage_cohort, stage_index
from lumbarjax.pipelines import crossval, xray_levels, xray_pretrain
from lumbarjax.pipelines.tasks import get_task, outcome_task, xray_stage1_task
from lumbarjax.schema import PERFECT_STAGE1
from lumbarjax.settings import setting
from lumbarjax.workers import process_map


def sweep_temporary(config, workdir: str) -> int:
    """Remove the temporary files a killed run left in ``workdir`` (and the cache folders when
    they lie elsewhere); returns how many. Logged, since it means an earlier run was interrupted."""
    folders = [workdir] + [d for d in (config.data.cache_dir,) if d and not
                           os.path.abspath(d).startswith(os.path.abspath(workdir) + os.sep)]
    removed = [p for d in folders for p in atomic.sweep_temporary(d)]
    if removed:
        logging.warning("removed %d temporary file(s) of an interrupted run, e.g. %s",
                        len(removed), removed[0])
    return len(removed)


# -- the whole job ------------------------------------------------------------------------

@dataclasses.dataclass
class RunResults:
    """What the stages of one run hand each other, and :func:`run` returns; :func:`stage_report`
    turns it into report.html + metrics.json (``report.report_from_workdir`` fills it from a
    finished run's files)."""
    task_data: dict[str, crossval.TaskData] = dataclasses.field(default_factory=dict)  # task name -> its data
    oof: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  # results key (task.variants) -> OOF table
    heatmaps: dict[str, Any] = dataclasses.field(default_factory=dict)  # task name -> heat-map collector or None
    xray_pretrain: dict | None = None        # the pretrained X-ray backbone's summary
    pretrain: dict | None = None             # the pretrained MRI encoder's summary
    mri_scores: pd.DataFrame | None = None   # stage-1 MRI scores of the outcome cohort
    mri_levels: dict | None = None           # the localiser / level grader on the outcome cohort
    mri_score_heatmaps: dict | None = None   # heat maps of the stage-1 MRI score
    levels: dict | None = None               # the level-by-level X-ray pipeline (task.after_crossval)
    baselines: dict | None = None            # head -> the clinical baselines' OOF table
    ablation: dict | None = None             # ablation.json
    selected: pd.DataFrame | None = None     # the selected outcome model's OOF table
    selection: dict | None = None            # selection.json
    timing_s: dict = dataclasses.field(default_factory=dict)  # stage -> wall seconds (metrics.json)
    manifest: pd.DataFrame | None = None
    report: str | None = None                # report.html
    metrics: str | None = None               # metrics.json

    def add(self, extra: Mapping) -> None:
        """Set the fields named in ``extra`` (a stage's or a task hook's extra results)."""
        for key, value in extra.items():
            if key not in {f.name for f in dataclasses.fields(self)}:
                raise TypeError(f"RunResults has no field {key!r}")
            setattr(self, key, value)


TIMING_JSON = "timing.json"  # lumbarjax.timing.breakdown() of the run


def _xray_encoder(config, workdir: str, cohort: Cohort, results: RunResults):
    """The pretrained X-ray backbone (``pipelines.xray_pretrain``); its summary to ``results``."""
    with timing.stage("xray_pretrain"):
        encoder, results.xray_pretrain = xray_pretrain.stage_xray_pretrain(config, workdir)
    return encoder


# task.pretrained_encoder -> the stage that gives the task's encoder params
ENCODER_STAGES = {"xray": _xray_encoder, "mri": mri_stages.stage_mri_encoder}


def stage_crossval(config, workdir: str, cohort: Cohort) -> RunResults:
    """Cross-validate every task in ``config.tasks``; returns OOF tables and heat-map items."""
    results = RunResults()
    for kind in config.tasks:
        task = get_task(kind)
        td = crossval.prepare_task(kind, config, cohort.records, cohort.cache)
        results.task_data[kind] = td
        hook = task.heatmaps(config, workdir) if task.explains(config) else None
        encoder = None
        if task.uses_pretrained_encoder(config):
            encoder = ENCODER_STAGES[task.pretrained_encoder](config, workdir, cohort, results)
        for key, sub, clinical_only in task.variants(config[kind]):
            with timing.stage(key):
                results.oof[key] = crossval.run_crossval(
                    td, config, os.path.join(workdir, sub), clinical_only=clinical_only,
                    after_fold=None if clinical_only else hook,
                    encoder_params=None if clinical_only else encoder)
        results.heatmaps[kind] = hook
        with timing.stage(f"{kind}_after_crossval"):
            results.oof[kind], extra = task.after_crossval(config, workdir, td, results.oof[kind],
                                                           cohort_dir(config, workdir))
        results.add(extra)
    return results


def stage_baselines(config, workdir: str, td: crossval.TaskData) -> dict:
    """scikit-learn clinical-only baselines on the outcome task's own folds."""
    from lumbarjax.eval.baselines import clinical_baselines
    feats = list(config.outcome.features.numeric) + list(config.outcome.features.categorical)
    out = {}
    for head in td.heads:
        df = clinical_baselines(td.records, td.folds, head, features=feats, seed=int(config.seed))
        atomic.write_csv(df, os.path.join(workdir, f"baseline_{head}.csv"))
        out[head] = df
    return out


def stage1_records(config, workdir: str, td: crossval.TaskData, grader_oof: pd.DataFrame | None,
                   mri_scores: pd.DataFrame | None) -> tuple[pd.DataFrame, dict, list]:
    """The outcome task's records with the stage-1 score columns joined (``models.stage1``):
    the grader's out-of-fold X-ray grades (checked fold-honest against
    ``<workdir>/grader/fold_*/split.json``) and the pretrained grader's MRI stenosis scores.
    Returns ``(records, {"clinical": cols, "xray": cols, "mri": cols}, notes)``."""
    from lumbarjax.models import stage1
    feats = list(config.outcome.features.numeric) + list(config.outcome.features.categorical)
    cols = {"clinical": [c for c in feats if c in td.records.columns], "xray": [], "mri": []}
    records, notes = td.records, []
    if grader_oof is not None and len(grader_oof):
        n = stage1.check_fold_honest(grader_oof, run_dir=os.path.join(workdir, "grader"),
                                     what="X-ray grades")
        records, cols["xray"] = stage1.attach(records, stage1.xray_scores(
            grader_oof, detail=str(config.outcome.stage1_xray)))
        n_scored = int(np.isfinite(records[cols["xray"][0]].to_numpy(float)).sum())
        notes.append(f"X-ray: the grader's out-of-fold grades ({', '.join(cols['xray'])}); {n} grader "
                     f"predictions checked fold-honest, {n_scored} of {len(records)} outcome patients "
                     "scored (the rest: missing, imputed with an indicator)")
    else:
        notes.append("X-ray scores left out: the grader did not run (config.tasks)")
    if mri_scores is not None and len(mri_scores):
        records, cols["mri"] = stage1.attach(records, mri_scores)
        n_scored = int(np.isfinite(records[cols["mri"][0]].to_numpy(float)).sum())
        notes.append(f"MRI: the pretrained stenosis grader's scores ({', '.join(cols['mri'])}); it never "
                     f"saw an outcome patient, {n_scored} of {len(records)} outcome patients scored")
    else:
        notes.append("MRI scores left out: no pretrained encoder with a grading head")
    return records, cols, notes


def linear_grids(config, td: crossval.TaskData, notes: list) -> dict:
    """``{head: None (the full linear grid) | [reference candidate]}``: a head with fewer than 8
    labelled training patients in some fold gets no inner penalty choice."""
    from lumbarjax.selection import linear
    grids = {}
    for h in td.heads:
        y = pd.to_numeric(td.records[h], errors="coerce").to_numpy(float)
        fewest = min(int((np.isfinite(y) & (td.folds != f)).sum()) for f in np.unique(td.folds))
        grids[h] = None
        if fewest < 8:  # linear.fit_penalised's inner split needs >= 2 folds of >= 4 patients
            task = "binary" if h in config.outcome.model.binary_heads else "regression"
            grids[h] = [linear.REFERENCE[task]]
            notes.append(f"{h}: {fewest} labelled training patients in a fold are too few for an "
                         f"inner penalty choice; the linear family is the reference model "
                         f"{grids[h][0].name} only")
    return grids


def stage_ablation(config, workdir: str, td: crossval.TaskData, stage1: tuple, root: str,
                   grader_oof: pd.DataFrame | None = None) -> dict:
    """Source ablation of every outcome head on the outcome task's folds (lumbarjax.selection.ablation):
    clinical / + X-ray / + MRI / all three (``stage1`` = :func:`stage1_records`'s result), each
    with the penalised linear family, vs clinical logistic regression (ridge for VAS), with the
    Bayes-optimal values of a synthetic cohort, its learnable ceiling (the perfect-stage-1 row)
    and ``stage1_vs_truth`` (``selection.ablation.stage1_vs_truth``: the MRI score's r with the true
    severity, the X-ray grades' QWK with the true grade). Sets without their source's scores are
    left out and named in ``notes``. Writes and returns ``<workdir>/ablation.json``."""
    from lumbarjax.selection import ablation as ablation_lib
    records, cols, notes = stage1[0], stage1[1], list(stage1[2])
    sets = ablation_lib.feature_sets(cols["clinical"], cols["xray"], cols["mri"])
    grids = linear_grids(config, td, notes)
    bayes = bayes_ceilings(root) or {}
    truth_csv = os.path.join(root, "ground_truth.csv")
    quality = None
    if bayes and os.path.exists(truth_csv):   # a synthetic cohort: the perfect-stage-1 row
        truth = pd.read_csv(truth_csv, dtype={"patient_id": str})
        quality = ablation_lib.stage1_vs_truth(records, cols, truth, grader_oof, n_boot=int(config.eval.n_boot),
                                               seed=int(config.seed), num_grades=int(config.clinical.num_grades))
        records, true_cols = ablation_lib.with_true_latents(records, cols, truth)
        if true_cols:
            sets[PERFECT_STAGE1] = [*cols["clinical"], *true_cols]
            notes.append(f"'{PERFECT_STAGE1}': the clinical columns + the generator's "
                         f"true {', '.join(true_cols)} in place of the image scores (ground truth, "
                         "evaluation only): the ceiling a perfect stage 1 reaches at this cohort size")
    jobs = [(records, td.folds, h, sets, dict(n_boot=int(config.eval.n_boot), seed=int(config.seed),
                                              bayes=bayes.get(h), grid=grids[h])) for h in td.heads]
    heads = []
    for h, result in zip(td.heads, process_map(ablation_lib.ablation_or_error, jobs, int(config.data.num_workers))):
        if isinstance(result, str):  # e.g. a fold's training rows with one class
            logging.warning("ablation of %s not computed: %s", h, result)
            notes.append(f"{h}: not computed ({result})")
        else:
            heads.append(result)
    out = {"feature_sets": {k: list(v) for k, v in sets.items()}, "notes": notes, "heads": heads,
           "stage1_vs_truth": quality,
           "definition": "out-of-fold AUC (binary) or MAE in VAS mm (regression) of the penalised "
                         "linear family (lumbarjax.selection.linear; penalty chosen in the training "
                         "folds) on each column set; difference = set − clinical logistic "
                         "regression (ridge for VAS) on the same patients and folds"}
    dump_json(out, os.path.join(workdir, "ablation.json"))
    return out


def stage_selection(config, workdir: str, td: crossval.TaskData, oof: Mapping, stage1: tuple):
    """The outcome model the report leads with (``selection.select``): per outer fold and head, the
    convex combination of ``config.outcome.stack.candidates`` (the penalised linear family on
    [clinical + X-ray + MRI scores], the fusion network, its clinical-only twin, …) whose
    weights are fitted on the inner validation patients (``stage1`` = :func:`stage1_records`'s
    result; ``oof``: results key -> the networks' out-of-fold tables, ``RunResults.oof``). Writes
    ``<workdir>/outcome/selected_oof.csv`` and ``selection.json``; returns ``(oof, summary)``."""
    from lumbarjax.selection.select import NETWORK_DIRS, stack_models
    records, cols, notes = stage1[0], stage1[1], list(stage1[2])
    grids = linear_grids(config, td, notes)
    found = {name: (oof[key], os.path.join(workdir, NETWORK_DIRS[name]))
             for name, key in (("network", "outcome"), ("clinical network", "clinical_only"))
             if oof.get(key) is not None}
    sc = config.outcome.stack
    oof, summary = stack_models(records, td.folds, td.heads, tuple(config.outcome.model.binary_heads),
                                cols["clinical"] + cols["xray"] + cols["mri"],
                                {k: v[0] for k, v in found.items()}, {k: v[1] for k, v in found.items()},
                                os.path.join(workdir, "outcome"), candidates=tuple(sc.candidates),
                                clinical_candidates=tuple(sc.clinical_candidates), image_gate=bool(sc.image_gate),
                                primary_head=str(sc.primary_head), shrink=float(sc.shrink),
                                weight_step=float(sc.weight_step), seed=int(config.seed),
                                grid_for=grids.get, reference_features=cols["clinical"],
                                num_workers=int(config.data.num_workers))
    summary["notes"] = notes + summary["notes"]
    return oof, summary


def bayes_ceilings(root: str) -> dict | None:
    """The Bayes-optimal value of every outcome head of a synthetic cohort, None for any other
    cohort: ``{binary head: {"auc"}}`` (``ground_truth_summary.json``: the population AUC of the
    true outcome probabilities) and ``{VAS head: {"mae", "r2", "mae_empirical", "r2_empirical",
    "n"}}`` (``synthetic.bayes_vas`` from ``clinical.csv`` and ``ground_truth.csv``: the best
    prediction knows the pre-operative VAS and the true success probability)."""
    gt_path = os.path.join(root, "ground_truth_summary.json")
    if not os.path.exists(gt_path):
        return None
    with open(gt_path) as f:
        summary = json.load(f)
    b = summary["bayes_auc"]
    names = {"zcq_success": "zcq_success", "back_pain_improved50": "back_improved50",
             "leg_pain_improved50": "leg_improved50"}
    out = {head: {"auc": b[src]["population"]} for head, src in names.items() if src in b}
    clinical_csv, truth_csv = os.path.join(root, "clinical.csv"), os.path.join(root, "ground_truth.csv")
    if os.path.exists(clinical_csv) and os.path.exists(truth_csv):
        vas = synthetic.bayes_vas(pd.read_csv(clinical_csv, dtype={"patient_id": str}),
                                  pd.read_csv(truth_csv, dtype={"patient_id": str}),
                                  regime=summary.get("generative_model", {}).get("beta", "demo"),
                                  seed=int(summary.get("seed", 0)))
        out.update({h: v for h, v in vas.items() if h in synthetic.VAS_HEADS})
    return out


def xray_heatmap_summary(config, items: list, root: str) -> dict:
    """The grader's heat maps in numbers: IG completeness |Δ| (expected-grade units) and, on a
    synthetic cohort (``ground_truth.csv``), the level-by-level pointing game against the film's
    worst degenerated level (``eval.localisation.film_level_summary``)."""
    delta = np.abs([it["delta"] for it in items])
    out = {"n_films": len(items), "n": len(items), "completeness_abs_median": float(np.median(delta)),
           "completeness_abs_max": float(delta.max()),
           "definition": "integrated gradients of the grader's expected grade over the film (baseline: "
                         f"config.explain.baseline={config.explain.baseline!r}); pointing game: the "
                         "largest positive attribution lies in the region of a level with the film's "
                         "worst true grade (n: films scored, n_excluded: films with every level at "
                         "grade 0)"}
    gt_csv = os.path.join(root, "ground_truth.csv")
    if os.path.exists(gt_csv):
        from lumbarjax.eval.localisation import film_level_summary
        gt = pd.read_csv(gt_csv, dtype={"patient_id": str}).set_index("patient_id")
        items = [it for it in items if it["patient_id"] in gt.index and it["transform"]]
        if items:
            s = film_level_summary([it["attr"] for it in items], [it["transform"] for it in items],
                                   gt.loc[[it["patient_id"] for it in items]].reset_index(),
                                   n_boot=int(config.eval.n_boot), seed=int(config.seed))
            out.update({k: s[k] for k in ("n", "n_excluded", "hit_rate", "mean_fraction", "chance_hit_rate",
                                          "by_level", "true_level_definition")})
    return out


def stage_report(config, workdir: str, cohort: Cohort | dict, results: RunResults,
                 root: str) -> tuple[str, str]:
    """report.html + metrics.json from the results of ``stage_crossval`` (+ ``baselines``).
    ``cohort``: this run's Cohort, or only its summary dict (``report.report_from_workdir``
    re-draws a finished run's report from its saved artefacts)."""
    from lumbarjax.eval.report import write_report
    summary = cohort.summary if isinstance(cohort, Cohort) else dict(cohort)
    localisation, heatmaps, completeness = None, None, None
    bayes = bayes_ceilings(root)
    hm = results.heatmaps.get("outcome")
    if hm is not None and hm.items:
        completeness = np.array([it["delta"] for it in hm.items])
        heatmaps = hm.gallery(int(config.explain.gallery))
        gt_csv = os.path.join(root, "ground_truth.csv")
        if os.path.exists(gt_csv):
            from lumbarjax.eval.localisation import localisation_summary
            gt = pd.read_csv(gt_csv, dtype={"patient_id": str}).set_index("patient_id")
            items = [it for it in hm.items if it["patient_id"] in gt.index]
            rows = gt.loc[[it["patient_id"] for it in items]].reset_index()
            localisation = localisation_summary([it["attr"] for it in items],
                                                [it["affine"] for it in items], rows,
                                                n_boot=int(config.eval.n_boot), seed=int(config.seed))
    extra = {"timing_s": results.timing_s}
    xhm = results.heatmaps.get("grader")
    if xhm is not None and xhm.items:
        extra["xray_heatmaps"] = xray_heatmap_summary(config, xhm.items, root)
    if results.levels:
        extra["xray_levels"] = xray_levels.report_summary(results.levels)
    if results.mri_levels:
        extra["mri_levels"] = results.mri_levels
    if results.mri_score_heatmaps:
        extra["mri_score_heatmaps"] = results.mri_score_heatmaps
    if results.xray_pretrain:
        extra["pretrained_xray_backbone"] = {k: v for k, v in results.xray_pretrain.items()
                                             if k != "signature"}
    if results.pretrain:
        extra["pretrained_mri_encoder"] = {k: v for k, v in results.pretrain.items() if k != "signature"}
    outcome_oof, others = results.oof.get("outcome"), {}
    if results.selected is not None:  # the selected model leads; the network is a comparator
        outcome_oof, others = results.selected, {"fusion network": results.oof.get("outcome")}
        sel = results.selection
        extra["outcome_model_selection"] = {"rule": sel["rule"], "folds": sel["folds"],
                                            "mean_weights": sel["mean_weights"]}
    return write_report(
        workdir, title="lumbarjax cross-validated report", cohort_summary=summary,
        grader_oof=results.oof.get("grader"), outcome_oof=outcome_oof, other_models=others,
        baseline_oof=results.baselines, clinical_only_oof=results.oof.get("clinical_only"),
        bayes=bayes, heatmaps=heatmaps, completeness=completeness, localisation=localisation,
        ablation=results.ablation, extra=extra, n_boot=int(config.eval.n_boot), seed=int(config.seed),
        threshold=float(config.eval.threshold))


def run(config, workdir: str, mode: str) -> RunResults:
    """Run ``mode``: ``index`` | ``crossval`` (= the whole job incl. report) | ``demo``."""
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    timing.reset()
    with timing.stage("run"):
        sweep_temporary(config, workdir)
        with timing.stage("index"):
            manifest = stage_index(config, workdir)
        if mode == "index":
            return RunResults(manifest=manifest)
        # The config of the models in this workdir: predict / report check against it.
        atomic.write_text(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2, sort_keys=True))
        with timing.stage("cohort"):
            cohort = stage_cohort(config, workdir, manifest)
        results = stage_crossval(config, workdir, cohort)
        results.manifest = manifest
        task = outcome_task(config.tasks)   # the clinical comparisons follow the outcome's CV
        if task is not None:
            td = results.task_data[task.name]
            xray_task = xray_stage1_task(config.tasks)
            grader_oof = results.oof.get(xray_task.name) if xray_task is not None else None
            with timing.stage("baselines"):
                results.baselines = stage_baselines(config, workdir, td)
            with timing.stage("ablation"):
                stage1 = stage1_records(config, workdir, td, grader_oof, results.mri_scores)
                results.ablation = stage_ablation(config, workdir, td, stage1, manifest.attrs["root"],
                                                  grader_oof=grader_oof)
            if setting(config, f"{task.name}.select_model"):
                with timing.stage("selection"):
                    results.selected, results.selection = stage_selection(
                        config, workdir, td, results.oof, stage1)
        results.timing_s = {name.split("/", 1)[1]: row["wall_s"]
                            for name, row in timing.breakdown().items() if "/" in name}
        results.timing_s["total_before_report"] = time.perf_counter() - t0
        with timing.stage("report"):
            results.report, results.metrics = stage_report(config, workdir, cohort, results,
                                                           manifest.attrs["root"])
    atomic.write_json(os.path.join(workdir, TIMING_JSON), timing.breakdown())
    logging.info("report: %s (%.0f s in all; where it went: %s)", results.report,
                 timing.breakdown()["run"]["wall_s"], os.path.join(workdir, TIMING_JSON))
    return results
