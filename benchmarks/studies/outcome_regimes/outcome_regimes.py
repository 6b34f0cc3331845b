"""Outcome models per generator regime: penalised linear family vs clinical logistic regression vs
the Bayes-optimal AUC, 5-fold CV, seeds 0, 1, 2 (issue 13).

The linear-family part only (cheap: no images are drawn). For every regime of
``lumbarjax.synthetic.OUTCOME_REGIMES`` and seed it draws the demo's clinical table
(``sample_patients(160, seed, regime=…)``), makes the outcome task's folds (stratified on
zcq_success, as ``crossval.prepare_task``), and reports out-of-fold ZCQ-success AUC of

* ``logreg``: the clinical logistic regression of lumbarjax.eval.baselines (C = 1);
* ``selected``: lumbarjax.selection.linear's selected penalised model on the same columns;
* ``oracle``: the selected penalised model on the clinical columns plus the *true* degeneration
  grade and stenosis severity (what a perfect stage 1 would hand the outcome model). It is not a
  result of the chain, only the ceiling of the linear family on this cohort;

with the paired bootstrap difference selected − logreg (95 % CI) and the Bayes-optimal AUCs
(empirical on the cohort; population; population_clinical = the clinical columns' ceiling).

    PYTHONPATH=$PWD nice -n 10 python benchmarks/studies/outcome_regimes/outcome_regimes.py --out benchmarks/studies/outcome_regimes/OUTCOME_REGIMES.md

The full chain (grader + pretrained MRI encoder + outcome CV per regime) is not run here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from lumbarjax import synthetic
from lumbarjax.data.clinical import validate_clinical
from lumbarjax.data.outcomes import derive_outcomes
from lumbarjax.data.cohort import make_folds
from lumbarjax.eval.baselines import clinical_baselines
from lumbarjax.eval.metrics import auc, paired_bootstrap_diff
from lumbarjax.selection.linear import crossval_penalised

FEATURES = ["age", "sex", "bmi", "smoker", "symptom_months", "back_pain_pre", "leg_pain_pre",
            "zcq_symptom_pre", "zcq_function_pre"]   # configs/default.py's outcome features


def one(regime: str, seed: int, n: int, n_boot: int) -> dict:
    clinical, truth = synthetic.sample_patients(n, seed, regime=regime)
    clean, _ = validate_clinical(clinical)
    rec = derive_outcomes(clean)
    rec = rec[rec["zcq_success"].notna()].reset_index(drop=True)
    tr = truth.set_index("patient_id").loc[rec["patient_id"]]
    rec["true_grade"] = tr["grade"].to_numpy(float)
    rec["true_severity"] = tr["stenosis_severity"].to_numpy(float)
    folds = make_folds(rec, k=5, seed=seed, stratify_on="zcq_success")
    y = rec["zcq_success"].to_numpy(float)
    lr = clinical_baselines(rec, folds, "zcq_success", FEATURES, seed=seed)["pred_logreg"].to_numpy()
    sel = crossval_penalised(rec, folds, "zcq_success", FEATURES, seed=seed)
    orc = crossval_penalised(rec, folds, "zcq_success", FEATURES + ["true_grade", "true_severity"], seed=seed)
    d = paired_bootstrap_diff(auc, y, sel["pred"].to_numpy(), lr, n_boot=n_boot, seed=seed)
    b = synthetic.bayes_auc(truth, seed=seed, regime=regime)["zcq_success"]
    return {"regime": regime, "seed": seed, "n": int(len(rec)), "auc_logreg": auc(y, lr),
            "auc_selected": auc(y, sel["pred"].to_numpy()), "auc_oracle": auc(y, orc["pred"].to_numpy()),
            "diff_selected_logreg": d.as_dict(), "selected_models": sorted(set(sel["model"])),
            "bayes_empirical": b["empirical"], "bayes_population": b["population"],
            "bayes_population_clinical": b["population_clinical"]}


def table(rows: list[dict]) -> str:
    out = ["| regime | seed | logreg | selected | selected − logreg [95 % CI] | oracle stage 1 | "
           "Bayes empirical | Bayes population | clinical ceiling |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        d = r["diff_selected_logreg"]
        out.append(f"| {r['regime']} | {r['seed']} | {r['auc_logreg']:.3f} | {r['auc_selected']:.3f} | "
                   f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | {r['auc_oracle']:.3f} | "
                   f"{r['bayes_empirical']:.3f} | {r['bayes_population']:.3f} | {r['bayes_population_clinical']:.3f} |")
    for regime in dict.fromkeys(r["regime"] for r in rows):
        rs = [r for r in rows if r["regime"] == regime]
        m = {k: np.mean([r[k] for r in rs]) for k in ("auc_logreg", "auc_selected", "auc_oracle",
                                                       "bayes_empirical", "bayes_population",
                                                       "bayes_population_clinical")}
        dm = np.mean([r["diff_selected_logreg"]["diff"] for r in rs])
        out.append(f"| **{regime}** | mean | {m['auc_logreg']:.3f} | {m['auc_selected']:.3f} | {dm:+.3f} | "
                   f"{m['auc_oracle']:.3f} | {m['bayes_empirical']:.3f} | {m['bayes_population']:.3f} | "
                   f"{m['bayes_population_clinical']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="", help="markdown file to write (a .json beside it)")
    ap.add_argument("--regimes", default=",".join(synthetic.OUTCOME_REGIMES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--n_boot", type=int, default=500)
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for regime in args.regimes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(one(regime, seed, args.n, args.n_boot))
            print(json.dumps(rows[-1]), flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    md = (f"# Outcome regimes: linear family vs clinical logistic regression (OOF ZCQ AUC, 5-fold)\n\n"
          f"`python benchmarks/studies/outcome_regimes/outcome_regimes.py {' '.join(sys.argv[1:])}`, n = {args.n}, "
          f"{time.time() - t0:.0f} s; load: `{load}`\n\n{table(rows)}\n")
    print(md)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(md)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
            json.dump(rows, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
