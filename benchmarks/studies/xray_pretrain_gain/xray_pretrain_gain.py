"""Does pretraining the grader's backbone on VinDr-style films help the whole-film grader?

The demo cohort's grader cross-validation (configs/demo.py: 5 folds, 800 steps, the same folds
for both arms) from scratch and from a backbone pretrained on a separate synthetic cohort written
in the VinDr-SpineXR layout (``synthetic.vindr_layout``: disc space narrowing / osteophyte
boxes from the generator's level grades, 2 readers who each miss 15 % of findings), read back
through the VinDr reader exactly as a download would be. Out-of-fold QWK with bootstrap CIs and
the paired difference; the JSON goes to ``--out``.

    python benchmarks/studies/xray_pretrain_gain/xray_pretrain_gain.py --workdir /tmp/xpg --films 600 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))  # the repo root

import numpy as np  # noqa: E402

from configs import demo as demo_config  # noqa: E402
from lumbarjax.jobs import workflow  # noqa: E402
from lumbarjax.synthetic import vindr_layout  # noqa: E402
from lumbarjax.eval import metrics  # noqa: E402
from lumbarjax.pipelines import crossval, xray_pretrain  # noqa: E402


def qwk5(y, yhat):
    return metrics.qwk(y, yhat, 5)


def one_seed(seed: int, args) -> dict:
    root = os.path.join(args.workdir, f"seed{seed}")
    c = demo_config.get_config()
    c.seed = seed
    c.tasks = ("grader",)
    c.levels.enabled = False
    c.explain.xray_patients = 0
    c.data.cohort_dir = os.path.join(root, "demo_cohort")
    c.xray_pretrain.root = os.path.join(args.workdir, f"vindr_{args.films}_s{seed + 20}")
    c.xray_pretrain.train.num_steps = args.steps
    t0 = time.perf_counter()
    vindr_layout.write_synthetic_vindr(c.xray_pretrain.root, n_films=args.films, seed=seed + 20,
                                       num_workers=int(c.data.num_workers))
    t_write = time.perf_counter() - t0
    cohort = workflow.stage_cohort(c, root, workflow.stage_index(c, root))
    td = crossval.prepare_task("grader", c, cohort.records, cohort.cache)
    t0 = time.perf_counter()
    backbone, summary = xray_pretrain.stage_xray_pretrain(c, root)
    t_pre = time.perf_counter() - t0
    out = {"seed": seed, "films": args.films, "write_s": round(t_write, 1), "pretrain_s": round(t_pre, 1),
           "pretrain_val": {k: v for k, v in summary.items() if k.startswith("val_")}}
    preds = {}
    for arm, enc in (("scratch", None), ("pretrained", backbone)):
        t0 = time.perf_counter()
        oof = crossval.run_crossval(td, c, os.path.join(root, f"grader_{arm}"), encoder_params=enc)
        out[f"{arm}_s"] = round(time.perf_counter() - t0, 1)
        preds[arm] = oof
        y, yhat = oof["label_grade"].to_numpy(float), oof["pred_grade"].to_numpy(float)
        ci = metrics.bootstrap_ci(qwk5, y, yhat, n_boot=1000, seed=seed)
        out[f"{arm}_qwk"] = [round(float(v), 3) for v in ci]
    a, b = preds["pretrained"], preds["scratch"]
    assert (a["patient_id"].to_numpy() == b["patient_id"].to_numpy()).all()
    d = metrics.paired_bootstrap_diff(qwk5, a["label_grade"].to_numpy(float), a["pred_grade"].to_numpy(float),
                                      b["pred_grade"].to_numpy(float), n_boot=1000, seed=seed)
    out["pretrained_minus_scratch"] = [round(float(v), 3) for v in d]
    print(json.dumps(out), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--films", type=int, default=600)
    p.add_argument("--steps", type=int, default=1000, help="pretraining steps")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default=os.path.join(HERE, "XRAY_PRETRAIN.json"))
    args = p.parse_args(argv)
    rows = [one_seed(int(s), args) for s in args.seeds.split(",")]
    mean = {k: float(np.mean([r[k][0] for r in rows])) for k in ("scratch_qwk", "pretrained_qwk")}
    with open(args.out, "w") as f:
        json.dump({"command": "python benchmarks/studies/xray_pretrain_gain/xray_pretrain_gain.py " + " ".join(argv or sys.argv[1:]),
                   "rows": rows, "mean": mean}, f, indent=1)
    print(json.dumps(mean))


if __name__ == "__main__":
    main()
