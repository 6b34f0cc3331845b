"""What a model can reach on a cohort of the demo's size, with perfect image scores.

The Bayes-optimal AUC (``synthetic.bayes_auc``) is the AUC of the *true* outcome probabilities:
a model would need to know the effect sizes and which clinical columns are noise. A model that
has to learn them from ~125 training patients per fold cannot reach it. This script measures
how far it stays below, with everything an image pipeline could ever hand over given for free:

* ``clinical``: the cohort's clinical columns (configs/default.py ``outcome.features``: age,
  BMI, smoking, symptom months, pre-operative VAS and ZCQ subscales, sex), through
  ``data.clinical`` as a run reads them;
* ``clinical + true s, g``: plus the true stenosis severity ``s`` (what the MRI shows) and the
  true degeneration grade ``g`` (what the X-ray shows), i.e. a perfect stage 1;
* ``clinical + true s + reader grade``: with the radiologist's X-ray grade (off by one for 15 %)
  instead of ``g``.

``--runs ROOT`` does the same on finished runs of benchmarks/outcome_chain_regimes.py
(``ROOT/<regime>_s<seed>``): on the run's own patients and folds, the linear models on the
clinical columns + the run's estimated stage-1 scores, against the same with the true ``s``
and/or ``g`` swapped in: how much a better image pipeline could still add.

Each set goes through the outcome chain's linear models on 5 stratified patient folds
(``data.cohort.make_folds``, as the outcome task): the clinical reference model (logistic
regression C = 1, ``models.linear.REFERENCE``) and the penalised family with its inner penalty
choice (``models.linear.fit_penalised``). The generator is sampled without images
(``synthetic.sample_patients``), so seeds are cheap; the demo's own cohort is seed 0.

    PYTHONPATH=$PWD python benchmarks/learnable_ceiling.py --seeds 0-19 --out benchmarks/LEARNABLE_CEILING.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import default  # noqa: E402
from lumbarjax.data import clinical as clinical_lib  # noqa: E402
from lumbarjax.data import synthetic  # noqa: E402
from lumbarjax.data.cohort import make_folds  # noqa: E402
from lumbarjax.eval import metrics as metrics_lib  # noqa: E402
from lumbarjax.models import linear  # noqa: E402

HEAD = "zcq_success"


def cohort_table(n: int, seed: int, regime: str) -> tuple[pd.DataFrame, list[str]]:
    """One synthetic cohort's outcome patients: the clinical feature columns as a run derives
    them, the true latents ``true_s`` / ``true_g``, the reader's ``xray_grade`` and ``zcq_success``."""
    clinical, truth = synthetic.sample_patients(n, seed, regime=regime)
    clean, _ = clinical_lib.validate_clinical(clinical)
    table = clinical_lib.derive_outcomes(clean)
    truth = truth.rename(columns={"stenosis_severity": "true_s", "grade": "true_g"})
    table = table.merge(truth[["patient_id", "true_s", "true_g", "has_mri", "has_xray"]], on="patient_id")
    # the outcome task's patients: a label and both images (what a run with stage-1 scores keeps)
    table = table[table[HEAD].notna() & table["has_mri"].astype(bool) & table["has_xray"].astype(bool)]
    feats = default.get_config().outcome.features
    cols = list(feats.numeric) + list(feats.categorical)
    return table.reset_index(drop=True), cols


def oof_auc(table: pd.DataFrame, folds: np.ndarray, features: list[str], grid) -> float:
    oof = linear.crossval_penalised(table, folds, HEAD, features, task="binary", seed=0, grid=grid)
    y, p = pd.to_numeric(table[HEAD], errors="coerce").to_numpy(float), oof["pred"].to_numpy(float)
    ok = np.isfinite(y) & np.isfinite(p)
    return float(metrics_lib.auc(y[ok], p[ok]))


def run(regimes, seeds, n: int) -> list[dict]:
    rows = []
    for regime in regimes:
        for seed in seeds:
            table, clin = cohort_table(n, seed, regime)
            folds = make_folds(table, k=5, seed=seed, stratify_on=HEAD)
            _, truth = synthetic.sample_patients(n, seed, regime=regime)
            sets = {"clinical": clin, "clinical + true s, g": clin + ["true_s", "true_g"],
                    "clinical + true s + reader grade": clin + ["true_s", "xray_grade"]}
            row = {"regime": regime, "seed": seed, "n": len(table),
                   "bayes": synthetic.bayes_auc(truth, regime=regime)[HEAD]["population"]}
            for name, cols in sets.items():
                row[f"{name}: logreg C=1"] = oof_auc(table, folds, cols, [linear.REFERENCE["binary"]])
                row[f"{name}: penalised family"] = oof_auc(table, folds, cols, None)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)
    return rows


def run_dirs(root: str) -> list[dict]:
    """The stage-1 swap on each finished run under ``root`` (see the module docstring)."""
    from absl import logging
    from configs import demo
    from lumbarjax import workflow
    from lumbarjax.train import crossval
    logging.set_verbosity("error")
    rows = []
    for name in sorted(os.listdir(root)):
        wd = os.path.join(root, name)
        if not os.path.exists(os.path.join(wd, "metrics.json")) or "_s" not in name:
            continue
        regime, seed = name.rsplit("_s", 1)
        c = demo.get_config()
        c.seed, c.data.demo_regime = int(seed), regime
        cohort = workflow.join_cohort(c, wd, workflow.stage_index(c, wd))
        td = crossval.prepare_task("outcome", c, cohort.records, cohort.cache)
        read = lambda p: pd.read_csv(os.path.join(wd, p), dtype={"patient_id": str})  # noqa: E731
        recs, cols, _ = workflow.stage1_records(c, wd, td, read("grader/oof.csv"), read("mri_scores.csv"))
        gt = pd.read_csv(os.path.join(wd, "demo_cohort", "ground_truth.csv"),
                         dtype={"patient_id": str}).set_index("patient_id")
        recs = recs.copy()
        has_mri = np.isfinite(recs[cols["mri"][0]].to_numpy(float))   # the true s only where an MRI is
        recs["true_s"] = np.where(has_mri, gt["stenosis_severity"].reindex(recs["patient_id"]).to_numpy(float), np.nan)
        recs["true_g"] = gt["grade"].reindex(recs["patient_id"]).to_numpy(float)
        clin, xr, mri = cols["clinical"], cols["xray"], cols["mri"]
        sets = {"estimated X-ray + MRI": clin + xr + mri, "true s + estimated X-ray": clin + xr + ["true_s"],
                "estimated MRI + true g": clin + mri + ["true_g"], "true s, g": clin + ["true_s", "true_g"]}
        row = {"regime": regime, "seed": int(seed), "n": int(np.isfinite(pd.to_numeric(recs[HEAD], errors="coerce")).sum()),
               "bayes": synthetic.bayes_auc(gt.reset_index(), regime=regime)[HEAD]["population"]}
        for k, fs in sets.items():
            row[f"{k}: logreg C=1"] = oof_auc(recs, td.folds, fs, [linear.REFERENCE["binary"]])
            row[f"{k}: penalised family"] = oof_auc(recs, td.folds, fs, None)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def markdown(rows: list[dict], command: str,
             title: str = "The learnable ceiling at the demo's cohort size (OOF ZCQ-success AUC, 5-fold)") -> str:
    keys = [k for k in rows[0] if ": " in k]
    out = [f"# {title}", "",
           f"`{command}`. Mean (sd) over seeds; `Bayes` is the population AUC of the true "
           "probabilities, `Bayes − 0.05` the bar of issue 13.", "",
           "| regime | seeds | n | " + " | ".join(keys) + " | Bayes | Bayes − 0.05 |",
           "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " | --- | --- |"]
    for regime in dict.fromkeys(r["regime"] for r in rows):
        rs = [r for r in rows if r["regime"] == regime]
        cell = lambda k: f"{np.mean([r[k] for r in rs]):.3f} ({np.std([r[k] for r in rs]):.3f})"  # noqa: E731
        bayes = float(np.mean([r["bayes"] for r in rs]))
        out.append(f"| {regime} | {len(rs)} | {int(np.mean([r['n'] for r in rs]))} | "
                   + " | ".join(cell(k) for k in keys) + f" | {bayes:.3f} | {bayes - 0.05:.3f} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", default="demo,null,clinical_dominant,xray_contributing")
    ap.add_argument("--seeds", default="0-19", help="a range a-b or a list a,b,c")
    ap.add_argument("--patients", type=int, default=160)
    ap.add_argument("--runs", default="", help="a --root of outcome_chain_regimes.py: the stage-1 swap")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    if a.runs:
        rows = run_dirs(a.runs)
        write(markdown(rows, f"PYTHONPATH=$PWD python benchmarks/learnable_ceiling.py --runs {a.runs}",
                       title="The stage-1 swap on finished regime runs (OOF ZCQ-success AUC, the run's folds)"),
              rows, a.out)
        return
    if "-" in a.seeds:
        lo, hi = (int(v) for v in a.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(v) for v in a.seeds.split(",")]
    rows = run(a.regimes.split(","), seeds, a.patients)
    write(markdown(rows, f"PYTHONPATH=$PWD python benchmarks/learnable_ceiling.py --regimes {a.regimes} "
                         f"--seeds {a.seeds} --patients {a.patients}"), rows, a.out)


def write(text: str, rows: list[dict], out: str) -> None:
    """Print the table; with ``out`` also write it and its rows (``.json`` beside it)."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
        with open(os.path.splitext(out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
