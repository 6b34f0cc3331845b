"""The MRI level by level on the demo: pretrain the encoder per disc level, score the outcome
cohort, and compare with the whole-volume encoder the demo uses.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python benchmarks/studies/mri_levels/mri_levels.py --run /tmp/runs/demo8 --crop-mm 60,40 --out benchmarks/studies/mri_levels/MRI_LEVELS.json

``--run`` is a finished demo run (``configs/demo.py``): its outcome cohort and its
``mri_scores.csv`` (the whole-volume encoder's stage-1 scores); the 600-patient RSNA-layout
pretraining cohort is written as the demo writes it, once under ``--dir``. For each crop height the script runs, in its own work directory under
``--dir``, exactly the workflow's stages with ``pretrain.levels.enabled``: index + preprocess,
``stage_pretrain`` (level grader + localiser), ``stage_mri_scores`` (localiser on the outcome
cohort, per-level grades, level heat maps). It reports the localiser error (mm), the per-level
QWK against the generator's noise-free grade, the pointing game of the level heat maps, and the
out-of-fold ZCQ AUC of the penalised linear family on clinical + MRI scores on the run's own
folds (the ablation's "+mri" row) for the level scores (worst level; and every level) beside the
whole-volume scores. One JSON object per crop to ``--out``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")))


def plus_mri_auc(cfg, wd, td, mri_scores, bayes):
    """The ablation's "+mri" ZCQ AUC (point, CI) with ``mri_scores`` as the MRI columns."""
    from lumbarjax.jobs import workflow
    from lumbarjax.selection import ablation as ablation_lib
    records, cols, notes = workflow.stage1_records(cfg, wd, td, None, mri_scores)
    sets = {"clinical": cols["clinical"], "+mri": [*cols["clinical"], *cols["mri"]]}
    grid = workflow.linear_grids(cfg, td, notes)["zcq_success"]
    r = ablation_lib.ablation(records, td.folds, "zcq_success", sets, n_boot=int(cfg.eval.n_boot),
                              seed=int(cfg.seed), bayes=bayes, grid=grid)
    v = next(row["value"] for row in r["rows"] if row["features"] == "+mri")
    return {"point": round(v["point"], 3), "lo": round(v["lo"], 3), "hi": round(v["hi"], 3),
            "columns": list(cols["mri"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a finished demo run directory")
    ap.add_argument("--crop-mm", default="60,40")
    ap.add_argument("--dir", default="/tmp/mri_levels_bench")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    import numpy as np
    import pandas as pd

    from configs import demo
    from lumbarjax.jobs import mri_stages, workflow
    from lumbarjax.models import stage1
    from lumbarjax.pipelines import crossval, mri_levels, pretrain

    results = []
    for crop in [float(x) for x in a.crop_mm.split(",")]:
        cfg = demo.get_config()
        cfg.pretrain.levels.enabled = True
        cfg.pretrain.levels.crop_mm = crop
        cfg.data.cohort_dir, cfg.data.make_demo = os.path.join(a.run, "demo_cohort"), False
        # the pretraining cohort as the demo writes it (same seed and size), once for all crops
        cfg.pretrain.cohort_dir = os.path.join(a.dir, "pretrain_rsna2024")
        wd = os.path.join(a.dir, f"crop{int(crop)}")
        os.makedirs(wd, exist_ok=True)
        t0 = time.perf_counter()
        cohort = workflow.stage_cohort(cfg, wd, workflow.stage_index(cfg, wd))
        t1 = time.perf_counter()
        _, summary = mri_stages.stage_pretrain(cfg, wd, cohort.records["patient_id"])
        t2 = time.perf_counter()
        scores, extra = mri_stages.stage_mri_scores(cfg, wd, cohort)
        lv = extra["mri_levels"]
        t3 = time.perf_counter()
        td = crossval.prepare_task("outcome", cfg, cohort.records, cohort.cache)
        bayes = (workflow.bayes_ceilings(cfg.data.cohort_dir) or {}).get("zcq_success")
        probs, _ = mri_levels.level_probs(cfg, pretrain.file_grader(cfg, os.path.join(wd, "pretrain", "mri_encoder.msgpack")),
                                          cohort.cache)
        present = np.isfinite(probs).reshape(len(probs), -1).all(axis=1)
        full = stage1.mri_scores(cohort.records["patient_id"].to_numpy(), np.nan_to_num(probs), present,
                                 detail="full")
        whole = pd.read_csv(os.path.join(a.run, "mri_scores.csv"), dtype={"patient_id": str})
        h = extra["mri_score_heatmaps"]
        results.append({
            "crop_mm": crop, "crop_rows": lv["pretraining"]["crop_rows"],
            "pretrain_val_qwk_all_levels": round(summary["val_qwk"], 3),
            "localiser_mm": {"pretraining_val": lv["pretraining"]["localiser_val"]["mean_mm"],
                             "mean_position_baseline": lv["pretraining"]["localiser_baseline_mean_position"]["mean_mm"],
                             "outcome_cohort": lv["localiser_error_mm"]["mean_mm"],
                             "outcome_cohort_per_level": {k: v["mean_mm"] for k, v in
                                                          lv["localiser_error_mm"]["per_level"].items()}},
            "qwk_vs_truth": {"all_levels": lv["vs_truth"]["qwk_all_levels"],
                             "worst_level": lv["vs_truth"]["qwk_worst_level"],
                             "per_level": {k: v["qwk"] for k, v in lv["vs_truth"]["per_level"].items()}},
            "level_heatmaps": {"n": h["n"], "pointing_game": round(h["hit_rate"]["point"], 3),
                               "pointing_game_ci": [round(h["hit_rate"]["lo"], 3), round(h["hit_rate"]["hi"], 3)],
                               "mass_in_true_level": round(h["mean_fraction"]["point"], 3),
                               "chance": round(h["chance_hit_rate"], 3),
                               "completeness_abs_median": round(h["completeness_abs_median"], 4)},
            "zcq_auc_plus_mri": {"level_worst": plus_mri_auc(cfg, wd, td, scores, bayes),
                                 "level_every": plus_mri_auc(cfg, wd, td, full, bayes),
                                 "whole_volume_run": plus_mri_auc(cfg, wd, td, whole, bayes),
                                 "bayes": bayes},
            "seconds": {"cohort": round(t1 - t0, 1), "pretrain": round(t2 - t1, 1), "scores": round(t3 - t2, 1)},
            "load_1min": os.getloadavg()[0]})
        print(json.dumps(results[-1]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
