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

``--runs ROOT`` does the same on finished runs of benchmarks/studies/outcome_chain_regimes/outcome_chain_regimes.py
(``ROOT/<regime>_s<seed>``, any regime; folders without ``metrics.json`` are skipped) for all
five outcome heads: on the run's own patients and outer folds, the linear models on

* ``estimated X-ray + MRI``: the clinical columns + the run's estimated stage-1 scores (the
  grader's out-of-fold X-ray grades, the pretrained grader's MRI stenosis scores);
* ``true s + estimated X-ray`` / ``estimated MRI + true g``: one source swapped for its truth;
* ``true s, g``: the clinical columns + both true latents (a perfect stage 1: the learnable
  ceiling at this n),

beside ``Bayes`` (the head's Bayes-optimal value under the run's regime, population:
``synthetic.bayes_auc`` / ``synthetic.bayes_vas``) and ``model`` (the run's reported outcome
model, ``metrics.json``). Binary heads (``zcq_success``, ``back_pain_improved50``,
``leg_pain_improved50``) are scored by out-of-fold AUC, the VAS heads (``back_pain_post``,
``leg_pain_post``) by out-of-fold MAE (VAS mm, 0-100) and R². The gap that is left splits, with
the penalised family's numbers and signed so that a positive number is a gain, into
``stage 1`` = value(true s, g) − value(estimated) (what a perfect image pipeline would add;
for MAE estimated − true, in mm) and ``stage 2 at this n`` = Bayes − value(true s, g) (what
the outcome model loses learning the effects from ~125 training patients; for MAE true − Bayes).

    PYTHONPATH=$PWD python benchmarks/studies/learnable_ceiling/learnable_ceiling.py --runs ROOT --out benchmarks/studies/learnable_ceiling/STAGE1_SWAP.md

Each set goes through the outcome chain's linear models on 5 stratified patient folds
(``data.cohort.make_folds``, as the outcome task): the clinical reference model (logistic
regression C = 1, ``selection.linear.REFERENCE``) and the penalised family with its inner penalty
choice (``selection.linear.fit_penalised``). The generator is sampled without images
(``synthetic.sample_patients``), so seeds are cheap; the demo's own cohort is seed 0.

    PYTHONPATH=$PWD python benchmarks/studies/learnable_ceiling/learnable_ceiling.py --seeds 0-19 --out benchmarks/studies/learnable_ceiling/LEARNABLE_CEILING.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
import pandas as pd

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
sys.path.insert(0, REPO)

from configs import default  # noqa: E402
from lumbarjax.data import clinical as clinical_lib, outcomes as outcomes_lib  # noqa: E402
from lumbarjax import synthetic  # noqa: E402
from lumbarjax.data.cohort import make_folds  # noqa: E402
from lumbarjax.eval import metrics as metrics_lib  # noqa: E402
from lumbarjax.selection import linear  # noqa: E402

HEAD = "zcq_success"


def cohort_table(n: int, seed: int, regime: str) -> tuple[pd.DataFrame, list[str]]:
    """One synthetic cohort's outcome patients: the clinical feature columns as a run derives
    them, the true latents ``true_s`` / ``true_g``, the reader's ``xray_grade`` and ``zcq_success``."""
    clinical, truth = synthetic.sample_patients(n, seed, regime=regime)
    clean, _ = clinical_lib.validate_clinical(clinical)
    table = outcomes_lib.derive_outcomes(clean)
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


# The five outcome heads: task and the ground-truth name of the binary ones (synthetic.bayes_auc).
HEADS = {"zcq_success": ("binary", "zcq_success"), "back_pain_improved50": ("binary", "back_improved50"),
         "leg_pain_improved50": ("binary", "leg_improved50"), "back_pain_post": ("regression", None),
         "leg_pain_post": ("regression", None)}
METRICS = {"binary": ("auc",), "regression": ("mae", "r2")}
REFERENCE_NAME = {"binary": "logreg C=1", "regression": "ridge alpha=1"}
PENALISED = "penalised family"
ESTIMATED, CEILING = "estimated X-ray + MRI", "true s, g"
UNITS = {"auc": "OOF AUC", "mae": "OOF MAE, VAS mm", "r2": "OOF R²"}


def oof_scores(table: pd.DataFrame, folds: np.ndarray, head: str, features: list[str], task: str,
               grid) -> dict[str, float]:
    """Out-of-fold scores of the linear model(s) ``grid`` (None: the penalised family) of
    ``head`` on ``features``: ``{"auc"}`` (binary) or ``{"mae" (VAS mm), "r2"}`` (regression),
    on the labelled patients."""
    oof = linear.crossval_penalised(table, folds, head, features, task=task, seed=0, grid=grid)
    y, p = pd.to_numeric(table[head], errors="coerce").to_numpy(float), oof["pred"].to_numpy(float)
    ok = np.isfinite(y) & np.isfinite(p)
    if task == "binary":
        return {"auc": float(metrics_lib.auc(y[ok], p[ok]))}
    return {"mae": float(metrics_lib.mae(y[ok], p[ok])), "r2": float(metrics_lib.r2(y[ok], p[ok]))}


def run_records(wd: str, regime: str, seed: int):
    """A finished run's outcome records with its stage-1 scores and the true latents ``true_s``
    (only where an MRI score is) / ``true_g``; returns ``(records, folds, feature sets,
    {head: grid}, ground_truth, clinical)`` (the tables of ``<wd>/demo_cohort``)."""
    from configs import demo
    from lumbarjax.jobs import cohort_stages, workflow
    from lumbarjax.pipelines import crossval
    c = demo.get_config()
    c.seed, c.data.demo_regime = int(seed), regime
    cohort = cohort_stages.join_cohort(c, wd, workflow.stage_index(c, wd))
    td = crossval.prepare_task("outcome", c, cohort.records, cohort.cache)
    read = lambda p: pd.read_csv(os.path.join(wd, p), dtype={"patient_id": str})  # noqa: E731
    recs, cols, notes = workflow.stage1_records(c, wd, td, read("grader/oof.csv"), read("mri_scores.csv"))
    gt, clinical = read("demo_cohort/ground_truth.csv"), read("demo_cohort/clinical.csv")
    truth = gt.set_index("patient_id")
    recs = recs.copy()
    has_mri = np.isfinite(recs[cols["mri"][0]].to_numpy(float))   # the true s only where an MRI is
    recs["true_s"] = np.where(has_mri, truth["stenosis_severity"].reindex(recs["patient_id"]).to_numpy(float), np.nan)
    recs["true_g"] = truth["grade"].reindex(recs["patient_id"]).to_numpy(float)
    clin, xr, mri = cols["clinical"], cols["xray"], cols["mri"]
    sets = {ESTIMATED: clin + xr + mri, "true s + estimated X-ray": clin + xr + ["true_s"],
            "estimated MRI + true g": clin + mri + ["true_g"], CEILING: clin + ["true_s", "true_g"]}
    return recs, td.folds, sets, workflow.linear_grids(c, td, notes), gt, clinical


def bayes_values(gt: pd.DataFrame, clinical: pd.DataFrame, regime: str) -> dict[str, dict]:
    """``{head: {metric: Bayes-optimal population value}}`` under ``regime``: AUC of the true
    probabilities (binary heads), MAE (VAS mm) / R² of the best VAS prediction (regression)."""
    auc = synthetic.bayes_auc(gt, regime=regime)
    vas = synthetic.bayes_vas(clinical, gt, regime=regime)
    return {h: ({"auc": auc[src]["population"]} if task == "binary"
                else {"mae": vas[h]["mae"], "r2": vas[h]["r2"]}) for h, (task, src) in HEADS.items()}


def reported(wd: str) -> dict[str, dict]:
    """``{head: {metric: the run's reported outcome model's point value}}`` (``metrics.json``;
    None where absent)."""
    with open(os.path.join(wd, "metrics.json")) as f:
        outcomes = json.load(f).get("outcomes") or {}
    out = {}
    for h, (task, _) in HEADS.items():
        model = (outcomes.get(h) or {}).get("model") or {}
        out[h] = {k: (model.get(k) or {}).get("point") for k in METRICS[task]}
    return out


def gaps(row: dict, metric: str) -> dict:
    """The remaining gap of one head and metric in the penalised family's numbers, signed so
    that positive = gain: ``stage 1`` = ceiling − estimated, ``stage 2 at this n`` = Bayes −
    ceiling (MAE, mm: estimated − ceiling and ceiling − Bayes)."""
    sign = -1.0 if metric == "mae" else 1.0
    est, ceil, bayes = (row[f"{ESTIMATED}: {PENALISED}"], row[f"{CEILING}: {PENALISED}"], row["bayes"])
    return {"stage 1": sign * (ceil - est),
            "stage 2 at this n": None if bayes is None else sign * (bayes - ceil)}


def head_rows(recs, folds, sets, grid, head: str, base: dict, bayes: dict, model: dict) -> list[dict]:
    """One row per metric of ``head``: every set through the reference model and the penalised
    family (``grid``: None, or the reference alone where a fold has too few labels), Bayes,
    the reported model and the gap split."""
    task = HEADS[head][0]
    grids = {REFERENCE_NAME[task]: [linear.REFERENCE[task]], PENALISED: grid}
    scores = {f"{k}: {g}": oof_scores(recs, folds, head, fs, task, gr)
              for k, fs in sets.items() for g, gr in grids.items()}
    n = int(np.isfinite(pd.to_numeric(recs[head], errors="coerce").to_numpy(float)).sum())
    rows = []
    for metric in METRICS[task]:
        row = {**base, "head": head, "metric": metric, "n": n, **{k: v[metric] for k, v in scores.items()},
               "bayes": bayes[metric], "model": model[metric]}
        rows.append({**row, **gaps(row, metric)})
    return rows


def run_dirs(root: str) -> list[dict]:
    """The stage-1 swap on each finished run under ``root`` (see the module docstring): one
    row per run, head and metric."""
    from absl import logging
    logging.set_verbosity("error")
    rows = []
    for name in sorted(os.listdir(root)):
        wd = os.path.join(root, name)
        if not os.path.exists(os.path.join(wd, "metrics.json")) or "_s" not in name:
            continue
        regime, seed = name.rsplit("_s", 1)
        recs, folds, sets, grids, gt, clinical = run_records(wd, regime, int(seed))
        bayes, model = bayes_values(gt, clinical, regime), reported(wd)
        for head in HEADS:
            for row in head_rows(recs, folds, sets, grids.get(head), head, {"regime": regime, "seed": int(seed)},
                                 bayes[head], model[head]):
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
    return rows


def _cell(values, digits: int) -> str:
    """``mean (sd)`` of the non-missing values, ``–`` when there are none."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return f"{np.mean(v):.{digits}f} ({np.std(v):.{digits}f})" if v else "–"


SWAP_COLUMNS = (
    "Each table: one outcome head and metric, mean (sd) over the seeds of each regime, on the "
    "run's own outcome patients (`n`: with a label) and outer folds. Columns `<set>: <model>`: the "
    "out-of-fold value of the reference model (logistic regression C = 1 for binary heads, ridge "
    "alpha = 1 for VAS) or of the penalised linear family (penalty chosen in the training folds) "
    f"on the clinical columns plus: `{ESTIMATED}` the run's estimated stage-1 scores; "
    "`true s + estimated X-ray` / `estimated MRI + true g` one source swapped for its true "
    f"latent; `{CEILING}` the true stenosis severity and degeneration grade (a perfect stage 1: "
    "the learnable ceiling at this n). `Bayes`: the Bayes-optimal population value under the "
    "regime (AUC of the true probabilities; MAE in VAS mm / R² of the best VAS prediction). "
    "`model`: the run's reported outcome model (metrics.json). `stage 1` = penalised family "
    f"`{CEILING}` − `{ESTIMATED}` (what a perfect stage 1 would add), `stage 2 at this n` = "
    f"`Bayes` − `{CEILING}` (what learning the effects from this many patients costs); for MAE "
    "both are reversed (estimated − true, true − Bayes, mm), so a positive number is always a gain.")


def swap_table(rows: list[dict], head: str, metric: str) -> str:
    """The markdown table of one head and metric (mean (sd) over seeds per regime)."""
    rs = [r for r in rows if r["head"] == head and r["metric"] == metric]
    keys = [k for k in rs[0] if ": " in k] + ["bayes", "model", "stage 1", "stage 2 at this n"]
    names = [k.replace("bayes", "Bayes") for k in keys]
    digits = 2 if metric == "mae" else 3
    out = [f"## {head} ({UNITS[metric]})", "",
           "| regime | seeds | n | " + " | ".join(names) + " |",
           "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for regime in dict.fromkeys(r["regime"] for r in rs):
        rr = [r for r in rs if r["regime"] == regime]
        out.append(f"| {regime} | {len(rr)} | {int(np.mean([r['n'] for r in rr]))} | "
                   + " | ".join(_cell([r[k] for r in rr], digits) for k in keys) + " |")
    return "\n".join(out) + "\n"


def swap_markdown(rows: list[dict], command: str) -> str:
    """All heads' stage-1 swap tables under one title, the command and the column definitions."""
    out = ["# The stage-1 swap on finished regime runs (all outcome heads, the run's folds)", "",
           f"`{command}`.", "", SWAP_COLUMNS, ""]
    for head in HEADS:
        for metric in METRICS[HEADS[head][0]]:
            if any(r["head"] == head and r["metric"] == metric for r in rows):
                out.append(swap_table(rows, head, metric))
    return "\n".join(out)


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
        write(swap_markdown(rows, f"PYTHONPATH=$PWD python benchmarks/studies/learnable_ceiling/learnable_ceiling.py --runs {a.runs}"),
              rows, a.out)
        return
    if "-" in a.seeds:
        lo, hi = (int(v) for v in a.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(v) for v in a.seeds.split(",")]
    rows = run(a.regimes.split(","), seeds, a.patients)
    write(markdown(rows, f"PYTHONPATH=$PWD python benchmarks/studies/learnable_ceiling/learnable_ceiling.py --regimes {a.regimes} "
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
