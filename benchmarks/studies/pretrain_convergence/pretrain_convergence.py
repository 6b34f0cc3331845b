"""Does the MRI encoder's pretraining converge within its steps? Validation QWK per eval step
for learning rates x seeds on the demo's pretraining cohort.

    python benchmarks/studies/pretrain_convergence/pretrain_convergence.py --workdir /tmp/pconv --lrs 2e-3,1e-3,5e-4 --seeds 0,1
    python benchmarks/studies/pretrain_convergence/pretrain_convergence.py --workdir DIR --cohort /tmp/runs/demo9/pretrain_rsna2024

The demo's pretraining (configs/demo.py: lesion2d width 16, 800 steps x 16, CORN head, the
outcome model's augmentation, best of the evals every 200 steps on the 120 held-out patients)
is run once per (lr, seed) on one pretraining cohort in the RSNA 2024 layout (written to
``<workdir>/pretrain_rsna2024`` with the demo's seed when ``--cohort`` is not given), read and
preprocessed once. ``--seeds`` change the training seed (initialisation, batch order, the
train/validation split), not the cohort. Prints and writes ``<workdir>/pretrain_convergence.json``:
per run the QWK at every eval step and the selected (best) one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import ml_collections

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from configs import demo as demo_config  # noqa: E402
from lumbarjax.jobs import workflow  # noqa: E402
from lumbarjax.pipelines.public_inputs import pretraining_inputs  # noqa: E402
from lumbarjax.pipelines.pretrain import pretrain_encoder  # noqa: E402


def load_cohort(config, root: str, workdir: str):
    """The pretraining cohort read and preprocessed as ``mri_stages.stage_pretrain`` does."""
    pc = config.pretrain
    pdir = os.path.join(workdir, "cohort_cache")
    os.makedirs(pdir, exist_ok=True)
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.data.manifest, sub.data.cache_dir, sub.data.make_demo = "", "", False
    sub.clinical.mri_label_columns = (pc.label_column,)
    manifest, labels, _, _ = pretraining_inputs(pc, root, pdir, seed=int(config.seed) + 1,
                                                num_workers=int(config.data.num_workers))
    sub.data.cohort_dir, sub.data.clinical_file = root, labels
    return workflow.stage_cohort(sub, pdir, manifest)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--cohort", default="", help="an RSNA-layout pretraining folder (default: write the demo's)")
    ap.add_argument("--lrs", default="2e-3,1e-3,5e-4")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=0, help="pretraining steps (default: the demo's)")
    args = ap.parse_args(argv)
    base = demo_config.get_config()
    base.pretrain.levels.localise = False
    if args.steps:
        base.pretrain.train.num_steps = args.steps
    root = args.cohort or os.path.join(args.workdir, "pretrain_rsna2024")
    cohort = load_cohort(base, root, args.workdir)
    out_path = os.path.join(args.workdir, "pretrain_convergence.json")
    runs = json.load(open(out_path)) if os.path.exists(out_path) else []
    done = {(r["lr"], r["seed"], r["steps"]) for r in runs}
    for lr in (float(v) for v in args.lrs.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            steps = int(base.pretrain.train.num_steps)
            if (lr, seed, steps) in done:
                continue
            cfg = ml_collections.ConfigDict(base.to_dict())
            cfg.seed, cfg.pretrain.optim.lr = seed, lr
            wd = os.path.join(args.workdir, f"lr{lr:g}_seed{seed}_steps{steps}")
            t0 = time.perf_counter()
            _, summary = pretrain_encoder(cfg, wd, cohort.records, cohort.cache, training_data={"format": "rsna2024"})
            with open(os.path.join(wd, "metrics.jsonl")) as f:
                evals = [json.loads(line) for line in f if '"eval"' in line]
            rec = {"lr": lr, "seed": seed, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
                   "qwk_by_step": {int(e["step"]): round(float(e["qwk"]), 3) for e in evals},
                   "selected_qwk": round(float(summary["val_qwk"]), 3), "best_step": summary["best_step"]}
            runs.append(rec)
            print(json.dumps(rec), flush=True)
            with open(out_path, "w") as f:
                json.dump(runs, f, indent=1)
    for r in runs:
        print(f"lr {r['lr']:g} seed {r['seed']} steps {r['steps']}: QWK by step {r['qwk_by_step']} "
              f"-> selected {r['selected_qwk']} ({r['wall_s']} s)")


if __name__ == "__main__":
    main()
