"""The whole chain per generator regime and seed (issue 13's acceptance table): the demo job
(`configs/demo.py`: grader + levels, pretrained MRI encoder, outcome CV with model selection,
baselines, ablation) on the cohort of each ``--regimes`` × ``--seeds``, and one table of
out-of-fold ZCQ-success AUC:

* ``selected``: the report's outcome model (``train.select``: network or penalised linear family
  per fold, chosen on the inner validation split), with its paired bootstrap difference to
* ``logreg``: the clinical logistic regression on the same folds (95 % CI);
* ``network``: the fusion network alone; ``clinical net``: the clinical-only network;
* ``Bayes``: the Bayes-optimal AUC of the cohort's true outcome probabilities (population);
* ``network folds``: in how many folds the selection kept the network.

    PYTHONPATH=$PWD python benchmarks/outcome_chain_regimes.py --seeds 0,1,2 \\
        --regimes demo,clinical_dominant,xray_contributing,null --out benchmarks/OUTCOME_CHAIN.md

``--stage1-from OLD_ROOT`` starts each run from the finished stage 1 (cohort, index, grader,
levels, pretraining) of ``OLD_ROOT/<regime>_s<seed>`` and redoes the outcome side only (about 5
min instead of 15): for a change of the outcome model alone.

``--reselect`` redoes the model selection of finished runs with the current ``train.select``
(no training: it reads the runs' saved fold predictions) and re-draws their reports.

Each run is a separate ``launch.py`` process in ``<--root>/<regime>_s<seed>`` (kept: a rerun
resumes or reuses finished runs). One run takes the demo's time (about 15-20 min on 2 cores), so
the full 4 × 3 table takes hours; ``--pretrained`` reuses the MRI encoder file of the same seed's
first run (the pretraining cohort does not depend on the outcome regime, so the file is the same
one that run would write), which saves the pretraining of the other regimes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What a run writes after stage 1 (grader, levels, pretraining): ``--stage1-from`` copies the rest.
OUTCOME_SIDE = ("outcome", "outcome_clinical_only", "heatmaps", "predictions", "metrics.json",
                "report.html", "ablation.json", "launch.log")


def copy_stage1(src: str, wd: str) -> None:
    """Seed a new run folder with a finished run's cohort, index, cache, grader, levels and
    pretraining outputs (the run then resumes from their finished checkpoints and redoes only
    the outcome side). Valid when the two runs differ only in the outcome model's code/config."""
    os.makedirs(wd, exist_ok=True)
    for name in sorted(os.listdir(src)):
        if name in OUTCOME_SIDE or os.path.exists(os.path.join(wd, name)):
            continue
        s = os.path.join(src, name)
        (shutil.copytree if os.path.isdir(s) else shutil.copy2)(s, os.path.join(wd, name))


def run_one(root: str, regime: str, seed: int, encoder_file: str | None, extra: list[str],
            stage1_from: str = "") -> str:
    wd = os.path.join(root, f"{regime}_s{seed}")
    if os.path.exists(os.path.join(wd, "metrics.json")):
        return wd
    src = os.path.join(stage1_from, f"{regime}_s{seed}") if stage1_from else ""
    if src and os.path.exists(os.path.join(src, "metrics.json")):
        copy_stage1(src, wd)
    cmd = [sys.executable, "launch.py", "--config=configs/demo.py", f"--workdir={wd}",
           f"--config.seed={seed}", f"--config.data.demo_regime={regime}", *extra]
    if encoder_file:
        cmd.append(f"--config.pretrain.encoder_file={encoder_file}")
    env = dict(os.environ, PYTHONPATH=REPO,
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=2"))
    os.makedirs(wd, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(wd, "launch.log"), "w") as log:
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {wd}/launch.log")
    print(f"{regime} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return wd


def reselect(wd: str, regime: str, seed: int, encoder_file: str | None) -> None:
    """Redo a finished run's model selection with this checkout's ``train.select`` and re-draw
    its report (``predict.report_from_workdir``). Selection only reads the run's saved artefacts
    (fold splits, the networks' inner-validation and out-of-fold predictions, stage-1 scores),
    so the result equals a fresh run of the same config with this selection code."""
    sys.path.insert(0, REPO)
    from configs import demo
    from lumbarjax import atomic, predict, workflow
    from lumbarjax.train import crossval
    c = demo.get_config()
    c.seed, c.data.demo_regime = seed, regime
    if encoder_file:
        c.pretrain.encoder_file = encoder_file
    manifest = workflow.stage_index(c, wd)
    cohort = workflow.join_cohort(c, wd, manifest)   # leaves the run's cohort summary as it was
    td = crossval.prepare_task("outcome", c, cohort.records, cohort.cache)
    read = lambda p: pd.read_csv(os.path.join(wd, p), dtype={"patient_id": str})  # noqa: E731
    stage1 = workflow.stage1_records(c, wd, td, read("grader/oof.csv"), read("mri_scores.csv"))
    workflow.stage_selection(c, wd, td, read("outcome/oof.csv"), stage1)
    atomic.write_text(os.path.join(wd, "config.json"), c.to_json_best_effort(indent=2, sort_keys=True))
    predict.report_from_workdir(c, wd)


def row(wd: str, regime: str, seed: int) -> dict:
    with open(os.path.join(wd, "metrics.json")) as f:
        m = json.load(f)
    z = m["outcomes"]["zcq_success"]
    comp = z["comparators"]
    d = z["paired_difference"]["clinical logreg"]
    sel = (m.get("extra") or {}).get("outcome_model_selection", {})
    bayes = (m.get("bayes_optimal") or {}).get("zcq_success")
    if isinstance(bayes, dict):
        bayes = bayes.get("auc")

    def point(name):
        return comp[name]["auc"]["point"] if name in comp else None

    return {"regime": regime, "seed": seed, "selected": z["model"]["auc"]["point"],
            "logreg": point("clinical logreg"), "diff": d["diff"], "lo": d["lo"], "hi": d["hi"],
            "network": point("fusion network"), "clinical_net": point("clinical-only network"),
            "bayes": bayes, "network_folds": sel.get("network_chosen_in_folds", {}).get("zcq_success")}


def fmt(v, signed=False):
    if v is None:
        return "–"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def markdown(rows: list[dict], header: str, before: dict | None = None) -> str:
    """The table; ``before``: ``{(regime, seed): an earlier table's row}`` adds its selected
    model's AUC as the column "selected before" (e.g. the previous selection rule)."""
    b = (lambda r: before.get((r["regime"], r["seed"]), {}).get("selected")) if before else None
    extra_h, extra_s = (" selected before |", " --- |") if before else ("", "")
    out = [header, "", f"| regime | seed | selected |{extra_h} logreg | selected − logreg [95 % CI] | network | "
           f"clinical net | Bayes | network folds |", f"| --- | --- | --- |{extra_s} --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        col = f" {fmt(b(r))} |" if before else ""
        out.append(f"| {r['regime']} | {r['seed']} | {fmt(r['selected'])} |{col} {fmt(r['logreg'])} | "
                   f"{fmt(r['diff'], True)} [{fmt(r['lo'], True)}, {fmt(r['hi'], True)}] | {fmt(r['network'])} | "
                   f"{fmt(r['clinical_net'])} | {fmt(r['bayes'])} | {r['network_folds']} |")
    for regime in dict.fromkeys(r["regime"] for r in rows):
        rs = [r for r in rows if r["regime"] == regime]

        def mean(k):
            v = [r[k] for r in rs if r[k] is not None]
            return sum(v) / len(v) if v else None
        if before:
            v = [b(r) for r in rs if b(r) is not None]
            col = f" {fmt(sum(v) / len(v) if v else None)} |"
        else:
            col = ""
        out.append(f"| **{regime}** | mean of {len(rs)} | {fmt(mean('selected'))} |{col} {fmt(mean('logreg'))} | "
                   f"{fmt(mean('diff'), True)} | {fmt(mean('network'))} | {fmt(mean('clinical_net'))} | "
                   f"{fmt(mean('bayes'))} | |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", default="demo,clinical_dominant,xray_contributing,null")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default="/tmp/lj_regimes")
    ap.add_argument("--pretrained", action="store_true",
                    help="reuse each seed's first MRI encoder file for the other regimes")
    ap.add_argument("--reselect", action="store_true",
                    help="redo the model selection of finished runs with this checkout's code (no training)")
    ap.add_argument("--stage1-from", default="",
                    help="a --root of finished runs: copy each run's stage-1 outputs (cohort, "
                         "grader, levels, pretraining) and redo only the outcome side")
    ap.add_argument("--before", default="",
                    help="the JSON of an earlier table: its selected AUC per run as a column")
    ap.add_argument("--out", default="")
    ap.add_argument("extra", nargs="*", help="further --config.… overrides for every run")
    a = ap.parse_args(argv)
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        encoder = None
        for regime in a.regimes.split(","):
            wd = run_one(a.root, regime, seed, encoder, a.extra, a.stage1_from)
            if a.reselect:
                reselect(wd, regime, seed, encoder)
            if a.pretrained and encoder is None:
                encoder = os.path.join(wd, "pretrain", "mri_encoder.msgpack")
            rows.append(row(wd, regime, seed))
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    header = (f"# The whole chain per regime (OOF ZCQ-success AUC, 5-fold, demo budget)\n\n"
              f"`PYTHONPATH=$PWD python benchmarks/outcome_chain_regimes.py --regimes {a.regimes} "
              f"--seeds {a.seeds}{' --pretrained' if a.pretrained else ''}"
              f"{' --stage1-from ' + a.stage1_from if a.stage1_from else ''}"
              f"{' --reselect' if a.reselect else ''}`; load at the end "
              f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores.")
    before = None
    if a.before:
        with open(a.before) as f:
            before = {(r["regime"], r["seed"]): r for r in json.load(f)}
        header += f" Column \"selected before\": {a.before}."
    text = markdown(rows, header, before)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
