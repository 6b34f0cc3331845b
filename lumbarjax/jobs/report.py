"""Regenerate a finished run's report: :func:`report_from_workdir` re-draws ``report.html`` /
``metrics.json`` from the run's saved artefacts (OOF tables, baselines, saved IG maps) without
training (``--mode=report``).
"""

from __future__ import annotations

import glob
import json
import os

import pandas as pd

from lumbarjax.errors import CohortError
from lumbarjax.jobs import mri_stages, workflow
from lumbarjax.jobs.restore import check_run_config
from lumbarjax.pipelines.tasks import TASKS, all_variants, outcome_task

__all__ = ["report_from_workdir"]


def _read_oof(path: str) -> pd.DataFrame | None:
    if not os.path.exists(path):
        return None
    return pd.read_csv(path, dtype={"patient_id": str})


def report_from_workdir(config, workdir: str) -> tuple[str, str]:
    """Re-draw ``report.html`` and ``metrics.json`` of a finished run from its artefacts.

    Reads ``cohort_summary.json``, ``exclusions.csv``, ``<task>/oof.csv``,
    ``outcome_clinical_only/oof.csv``, ``outcome/selected_oof.csv`` + ``selection.json``,
    ``baseline_<head>.csv``, ``ablation.json``, ``levels/levels_metrics.json``,
    ``xray_pretrain/xray_pretrain_summary.json``, ``mri_levels/mri_levels.json``,
    ``mri_score_heatmaps/summary.json`` and the saved IG maps
    (``heatmaps/*_ig.npz``) and calls :func:`lumbarjax.jobs.workflow.stage_report` — the very code of
    the run — so the numbers (same bootstrap seed) equal the run's. The timings of the run are
    carried over from its old ``metrics.json``. Overwrites both files in ``workdir``.

    Raises:
      CohortError: ``cohort_summary.json`` or every OOF table is missing (not a finished run).
    """
    check_run_config(config, workdir)
    path = os.path.join(workdir, "cohort_summary.json")
    if not os.path.exists(path):
        raise CohortError(f"{path} not found: {workdir} is not a finished run (--mode=crossval)")
    with open(path) as f:
        summary = json.load(f)
    results = workflow.RunResults()
    main = []   # the folders of the tasks' own cross-validations (not their clinical-only twins)
    for task in TASKS.values():
        for key, sub, clinical_only in all_variants(task):
            main += [] if clinical_only else [sub]
            if clinical_only or task.name in config.tasks:
                df = _read_oof(os.path.join(workdir, sub, "oof.csv"))
                if df is not None:
                    results.oof[key] = df
    if not any(key in results.oof for task in TASKS.values() for key, _, clinical_only in all_variants(task)
               if not clinical_only):
        raise CohortError(f"{workdir}: no {' or '.join(f'{sub}/oof.csv' for sub in main)}: nothing to report")
    baselines = {}
    for p in sorted(glob.glob(os.path.join(workdir, "baseline_*.csv"))):
        head = os.path.basename(p)[len("baseline_"):-len(".csv")]
        baselines[head] = pd.read_csv(p, dtype={"patient_id": str})
    if baselines:
        results.baselines = baselines
    for task in TASKS.values():
        hm = task.saved_heatmaps(config, workdir) if hasattr(task, "saved_heatmaps") else None
        if hm is not None:
            results.heatmaps[task.name] = hm
    old = os.path.join(workdir, "metrics.json")
    if os.path.exists(old):
        try:
            with open(old) as f:
                results.timing_s = (json.load(f).get("extra") or {}).get("timing_s", {})
        except ValueError:
            pass
    task = outcome_task(config.tasks)   # the selected outcome model (workflow.stage_selection)
    if task is not None and task.name in results.oof:
        sel_oof = _read_oof(os.path.join(workdir, task.name, "selected_oof.csv"))
        sel_json = os.path.join(workdir, task.name, "selection.json")
        if sel_oof is not None and os.path.exists(sel_json):
            with open(sel_json) as f:
                results.selected, results.selection = sel_oof, json.load(f)
    abl = os.path.join(workdir, "ablation.json")
    if os.path.exists(abl):
        with open(abl) as f:
            results.ablation = json.load(f)
    lv_metrics = os.path.join(workdir, "levels", "levels_metrics.json")
    if config.levels.enabled and os.path.exists(lv_metrics):
        with open(lv_metrics) as f:
            results.levels = json.load(f)
    xp_summary = os.path.join(workdir, "xray_pretrain", "xray_pretrain_summary.json")
    if os.path.exists(xp_summary) and not config.xray_pretrain.backbone_file:
        with open(xp_summary) as f:
            results.xray_pretrain = json.load(f)
    for key, rel in (("mri_levels", mri_stages.MRI_LEVELS_JSON),
                     ("mri_score_heatmaps", mri_stages.MRI_HEATMAPS_JSON)):
        if config.pretrain.enabled and os.path.exists(os.path.join(workdir, rel)):
            with open(os.path.join(workdir, rel)) as f:
                results.add({key: json.load(f)})
    pre_summary = os.path.join(workdir, "pretrain", "pretrain_summary.json")
    if config.pretrain.enabled and os.path.exists(pre_summary):
        with open(pre_summary) as f:
            results.pretrain = json.load(f)
    excl_path = os.path.join(workdir, "exclusions.csv")
    excl = pd.read_csv(excl_path, dtype={"patient_id": str}) if os.path.exists(excl_path) \
        else pd.DataFrame(columns=["patient_id", "reason", "detail"])
    cohort = workflow.Cohort(records=pd.DataFrame(), cache=pd.DataFrame(), exclusions=excl,
                             summary=summary)
    root = config.data.cohort_dir or os.path.join(workdir, "demo_cohort")
    return workflow.stage_report(config, workdir, cohort, results, root)
