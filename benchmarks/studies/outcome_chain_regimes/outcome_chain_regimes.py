"""The whole chain per generator regime and seed: the demo job (`configs/demo.py`: grader +
levels, pretrained MRI encoder, outcome CV, the reported model of ``selection.select``, baselines,
ablation) on the cohort of each ``--regimes`` × ``--seeds``, and one table per outcome head
(AUC for the binary heads; MAE in VAS mm and R² for the VAS heads), out of fold:

* ``reported``: the report's outcome model, with its paired bootstrap difference to the
  clinical logistic regression (ridge for VAS) on the same folds (95 % CI);
* the comparators: the fusion network, the clinical-only network, clinical logreg / ridge and
  gradient boosting; ``significantly worse than`` / ``better than``: the comparators whose paired
  bootstrap 95 % CI of the difference to the reported model excludes 0;
* ``learnable ceiling``: the same linear family with the generator's true grade and stenosis
  severity in place of the image scores (the ablation's last row); ``Bayes``: the true outcome
  model (population AUC; for VAS the conditional median's MAE and the conditional mean's R²);
* a last table: stage 1 against the truth (r of the MRI score with the true severity, the
  X-ray grades' QWK with the true grade).

    PYTHONPATH=$PWD python benchmarks/studies/outcome_chain_regimes/outcome_chain_regimes.py --seeds 0,1,2 --share-stage1 \
        --regimes demo,nonlinear,xray_contributing,clinical_dominant,null --out benchmarks/studies/outcome_chain_regimes/OUTCOME_CHAIN.md

``--stage1-from OLD_ROOT`` starts each run from the finished stage 1 (cohort, index, grader,
levels, pretraining) of ``OLD_ROOT/<regime>_s<seed>`` and redoes the outcome side only (about 5
min instead of 15): for a change of the outcome model alone.

``--share-stage1`` runs stage 1 once per seed (the first regime) and starts the seed's other
regimes from it: a regime changes only the outcomes (the images, checked byte for byte, the
reader's X-ray grades and the pre-operative scores are the same), so stage 1 is the one each run
would compute; about 6 min instead of 15 a run.

``--reselect`` redoes what finished runs compute without training (baselines, ablation, the
reported model) with this checkout's code and re-draws their reports.

Each run is a separate ``launch.py`` process in ``<--root>/<regime>_s<seed>`` (kept: a rerun
resumes or reuses finished runs). One run takes the demo's time (about 15-20 min on 2 cores), so
the full 5 × 3 table takes hours; ``--pretrained`` reuses the MRI encoder file of the same seed's
first run (the pretraining cohort does not depend on the outcome regime, so the file is the same
one that run would write), which saves the pretraining of the other regimes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


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


def _export_digest(cohort: str) -> dict[str, str]:
    """relative path → md5 of every file under a cohort's ``export`` folder (the images)."""
    out = {}
    export = os.path.join(cohort, "export")
    for d, _, files in os.walk(export):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), export)] = hashlib.md5(fh.read()).hexdigest()
    return out


def share_stage1(src: str, wd: str, regime: str, seed: int) -> None:
    """Seed ``wd`` with the stage 1 of ``src``, a finished run of another regime of the same seed,
    and write ``regime``'s cohort in it. Valid because the regime changes only the outcomes: the
    images are byte-identical (checked here, every file), the grader folds are stratified on the
    X-ray grade and the MRI encoder is pretrained on its own cohort, so stage 1 is the one this
    run would compute."""
    sys.path.insert(0, REPO)
    from lumbarjax import synthetic
    copy_stage1(src, wd)
    cohort = os.path.join(wd, "demo_cohort")
    n = json.load(open(os.path.join(cohort, "ground_truth_summary.json")))["counts"]["n_patients"]
    synthetic.make_cohort(cohort, n_patients=int(n), seed=seed, overwrite=True, regime=regime)
    if _export_digest(cohort) != _export_digest(os.path.join(src, "demo_cohort")):
        raise SystemExit(f"{cohort}: the images differ from {src}'s; stage 1 cannot be shared")


def run_one(root: str, regime: str, seed: int, encoder_file: str | None, extra: list[str],
            stage1_from: str = "", share_from: str = "") -> str:
    wd = os.path.join(root, f"{regime}_s{seed}")
    if os.path.exists(os.path.join(wd, "metrics.json")):
        return wd
    src = os.path.join(stage1_from, f"{regime}_s{seed}") if stage1_from else ""
    if src and os.path.exists(os.path.join(src, "metrics.json")):
        copy_stage1(src, wd)
    elif share_from and not os.path.exists(os.path.join(wd, "grader")):
        share_stage1(share_from, wd, regime, seed)
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
    """Redo what a finished run computes without training — the clinical baselines, the source
    ablation and the reported model (``selection.select``) — with this checkout's code, and re-draw
    its report (``report.report_from_workdir``). They only read the run's saved artefacts (fold
    splits, the networks' inner-validation and out-of-fold predictions, stage-1 scores), so the
    result equals a fresh run of the same config with this code and the run's networks."""
    sys.path.insert(0, REPO)
    from configs import demo
    from lumbarjax import atomic
    from lumbarjax.jobs import cohort_stages, report, workflow
    from lumbarjax.pipelines import crossval
    c = demo.get_config()
    c.seed, c.data.demo_regime = seed, regime
    if encoder_file:
        c.pretrain.encoder_file = encoder_file
    manifest = workflow.stage_index(c, wd)
    cohort = cohort_stages.join_cohort(c, wd, manifest)   # leaves the run's cohort summary as it was
    td = crossval.prepare_task("outcome", c, cohort.records, cohort.cache)
    read = lambda p: pd.read_csv(os.path.join(wd, p), dtype={"patient_id": str})  # noqa: E731
    stage1 = workflow.stage1_records(c, wd, td, read("grader/oof.csv"), read("mri_scores.csv"))
    workflow.stage_baselines(c, wd, td)
    workflow.stage_ablation(c, wd, td, stage1, os.path.join(wd, "demo_cohort"), grader_oof=read("grader/oof.csv"))
    nets = {"outcome": read("outcome/oof.csv"), "clinical_only": read("outcome_clinical_only/oof.csv")}
    workflow.stage_selection(c, wd, td, nets, stage1)
    atomic.write_text(os.path.join(wd, "config.json"), c.to_json_best_effort(indent=2, sort_keys=True))
    report.report_from_workdir(c, wd)


HEADS = ("zcq_success", "back_pain_improved50", "leg_pain_improved50", "back_pain_post", "leg_pain_post")
COMPARATORS = {"auc": ("fusion network", "clinical-only network", "clinical logreg", "clinical GBM"),
               "mae": ("fusion network", "clinical-only network", "clinical ridge", "clinical GBM")}


def head_row(m: dict, head: str) -> dict | None:
    """One head of a run's ``metrics.json``: the reported model, every comparator, the paired
    differences (which comparators the model is significantly worse / better than: the 95 % CI
    of model − comparator excludes 0), the learnable ceiling and the Bayes value."""
    o = (m.get("outcomes") or {}).get(head)
    if o is None:
        return None
    metric = "auc" if o["task"] == "binary" else "mae"
    sign = 1.0 if metric == "auc" else -1.0   # + = the model better
    comp, diffs = o["comparators"], o["paired_difference"]
    summ = next((r for r in m.get("summary", []) if r["head"] == head), {})
    worse, better = [], []
    for name, d in diffs.items():
        if d.get("lo") is None:
            continue
        lo, hi = sorted((sign * d["lo"], sign * d["hi"]))
        if hi < 0:
            worse.append(name)
        elif lo > 0:
            better.append(name)
    ceil = (summ.get("learnable_ceiling") or {})
    bayes = summ.get("bayes") or {}
    r = {"metric": metric, "reported": o["model"][metric]["point"],
         **{name: comp[name][metric]["point"] for name in COMPARATORS[metric] if name in comp},
         "ceiling": (ceil.get("value") or {}).get("point"), "bayes": bayes.get("value"),
         "worse_than": worse, "better_than": better}
    if metric == "mae":
        r.update(reported_r2=o["model"]["r2"]["point"], ceiling_r2=(ceil.get("r2") or {}).get("point"),
                 bayes_r2=bayes.get("r2"))
    base = "clinical logreg" if metric == "auc" else "clinical ridge"
    if base in diffs:
        r.update(diff=diffs[base]["diff"], lo=diffs[base]["lo"], hi=diffs[base]["hi"])
    return r


def row(wd: str, regime: str, seed: int) -> dict:
    """A finished run: per head :func:`head_row`, the model-selection counts and stage 1 against the truth."""
    with open(os.path.join(wd, "metrics.json")) as f:
        m = json.load(f)
    sel = (m.get("extra") or {}).get("outcome_model_selection", {})
    q = m.get("stage1_vs_truth") or (m.get("ablation") or {}).get("stage1_vs_truth") or {}
    heads = {h: head_row(m, h) for h in HEADS}
    sel_path = os.path.join(wd, "outcome", "selection.json")
    if os.path.exists(sel_path):   # how many folds' combinations used the image candidates
        with open(sel_path) as f:
            detail = json.load(f)["folds_detail"]
        for h, r in heads.items():
            used = [bool(e.get("images", {}).get("used", True)) for e in detail if e["head"] == h]
            if r is not None and used:
                r["image_folds"] = f"{sum(used)}/{len(used)}"
    return {"regime": regime, "seed": seed, "heads": heads,
            "mean_weights": sel.get("mean_weights"),
            "mri_r": (q.get("mri_r") or {}).get("point"), "xray_qwk": (q.get("xray_qwk") or {}).get("point"),
            "xray_level_qwk": (q.get("xray_level_qwk") or {}).get("point")}


def fmt(v, signed=False, digits=3):
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def head_table(rows: list[dict], head: str) -> list[str]:
    """The markdown table of one head over the runs, with the regime means."""
    rs = [(r, r["heads"][head]) for r in rows if r["heads"].get(head)]
    if not rs:
        return []
    metric = rs[0][1]["metric"]
    d = 3 if metric == "auc" else 2
    comps = list(COMPARATORS[metric])
    extra = ["reported R²", "ceiling R²", "Bayes R²"] if metric == "mae" else []
    keys = ["reported", *comps, "ceiling", "bayes"] + (["reported_r2", "ceiling_r2", "bayes_r2"] if metric == "mae" else [])
    out = [f"### {head} ({'AUC, higher is better' if metric == 'auc' else 'MAE in VAS mm, lower is better'})", "",
           "| regime | seed | reported | " + " | ".join(comps) + " | learnable ceiling | Bayes | "
           + "".join(f"{x} | " for x in extra) + "reported − clinical [95 % CI] | folds with images | "
           "significantly worse than | better than |",
           "| " + " | ".join("---" for _ in range(9 + len(extra) + 4)) + " |"]
    for r, h in rs:
        out.append(f"| {r['regime']} | {r['seed']} | " + " | ".join(fmt(h.get(k), digits=d) for k in keys)
                   + f" | {fmt(h.get('diff'), True, d)} [{fmt(h.get('lo'), True, d)}, {fmt(h.get('hi'), True, d)}] | "
                   f"{h.get('image_folds', '–')} | {', '.join(h['worse_than']) or 'none'} | {', '.join(h['better_than']) or '–'} |")
    for regime in dict.fromkeys(r["regime"] for r, _ in rs):
        hs = [h for r, h in rs if r["regime"] == regime]

        def mean(k):
            v = [h[k] for h in hs if h.get(k) is not None]
            return sum(v) / len(v) if v else None
        out.append(f"| **{regime}** | mean of {len(hs)} | " + " | ".join(fmt(mean(k), digits=d) for k in keys)
                   + f" | {fmt(mean('diff'), True, d)} | | {sum(bool(h['worse_than']) for h in hs)} run(s) | |")
    return out + [""]


def markdown(rows: list[dict], header: str) -> str:
    """One table per head (:func:`head_table`) and one of stage 1 against the truth."""
    out = [header, ""]
    for head in HEADS:
        out += head_table(rows, head)
    out += ["### Stage 1 against the truth (outcome patients)", "",
            "| regime | seed | r(MRI score, true severity) | X-ray grade QWK vs truth | X-ray level grade QWK vs truth |",
            "| --- | --- | --- | --- | --- |"]
    out += [f"| {r['regime']} | {r['seed']} | {fmt(r['mri_r'])} | {fmt(r['xray_qwk'])} | {fmt(r['xray_level_qwk'])} |"
            for r in rows]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", default="demo,nonlinear,xray_contributing,clinical_dominant,null")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default="/tmp/lj_regimes")
    ap.add_argument("--pretrained", action="store_true",
                    help="reuse each seed's first MRI encoder file for the other regimes")
    ap.add_argument("--reselect", action="store_true",
                    help="redo the model selection of finished runs with this checkout's code (no training)")
    ap.add_argument("--stage1-from", default="",
                    help="a --root of finished runs: copy each run's stage-1 outputs (cohort, "
                         "grader, levels, pretraining) and redo only the outcome side")
    ap.add_argument("--share-stage1", action="store_true",
                    help="run stage 1 once per seed (the first regime) and share it with the seed's "
                         "other regimes, whose images are the same (checked byte for byte)")
    ap.add_argument("--tabulate", action="store_true",
                    help="run nothing: tabulate the finished runs under --root (others are left out)")
    ap.add_argument("--out", default="")
    a, extra = ap.parse_known_args(argv)   # the rest: --config.… overrides for every run
    bad = [x for x in extra if not x.startswith("--config.")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)} (only --config.… overrides pass to the runs)")
    a.extra = extra
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        encoder, first = None, ""
        for regime in a.regimes.split(","):
            if a.tabulate:
                wd = os.path.join(a.root, f"{regime}_s{seed}")
                if os.path.exists(os.path.join(wd, "metrics.json")):
                    rows.append(row(wd, regime, seed))
                continue
            wd = run_one(a.root, regime, seed, encoder, a.extra, a.stage1_from,
                         first if a.share_stage1 else "")
            first = first or wd
            if a.reselect:
                reselect(wd, regime, seed, encoder)
            if a.pretrained and encoder is None:
                encoder = os.path.join(wd, "pretrain", "mri_encoder.msgpack")
            rows.append(row(wd, regime, seed))
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    header = (f"# The whole chain per regime, every outcome head (5-fold out of fold, demo budget)\n\n"
              f"`PYTHONPATH=$PWD python benchmarks/studies/outcome_chain_regimes/outcome_chain_regimes.py --regimes {a.regimes} "
              f"--seeds {a.seeds}{' --pretrained' if a.pretrained else ''}"
              f"{' --stage1-from ' + a.stage1_from if a.stage1_from else ''}"
              f"{' --share-stage1' if a.share_stage1 else ''}"
              f"{' --reselect' if a.reselect else ''}`; load at the end "
              f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores. "
              "`reported`: the model the report leads with; learnable ceiling: the same linear family "
              "given the true latents (the ablation's last row); `significantly worse than`: the comparators "
              "whose paired bootstrap 95 % CI of the difference excludes 0 in their favour; `folds with images`: "
              "the outer folds whose combination used the image candidates (the gate of `selection.select`), "
              "0/5 = a clinical-only model, so no claim about the images.")
    text = markdown(rows, header)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
