"""XLA:CPU library flags vs the demo's train steps (issue 14): one fresh process per flag set.

    python benchmarks/studies/xla_flags/xla_flags.py --out benchmarks/results/2026-12-02-xla-flags.json

Each child process sets ``XLA_FLAGS`` before importing jax, compiles the grader, slice2d and
lesion2d outcome train steps of ``benchmarks/run.py`` at the demo sizes, and reports per step
the best of ``--rounds`` medians of ``--steps`` timed steps (seconds). The parent records the
1-minute load average after each child. Compare within one run only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FLAG_SETS = ("", "--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
             "--xla_cpu_experimental_onednn_fusion_type=individual_convolution",
             "--xla_cpu_experimental_xnn_fusion_type=individual_convolution",
             "--xla_cpu_experimental_ynn_fusion_type=individual_convolution")


def child(rounds: int, steps: int) -> dict:
    bench = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
    sys.path.insert(0, bench)
    sys.path.insert(0, os.path.dirname(bench))
    import run as R
    cfg = R.demo_config()
    grader, outcome = R.lj_models(cfg)
    lesion_cfg = R.demo_config()
    lesion_cfg.outcome.model.mri.arch = "lesion2d"
    _, lesion = R.lj_models(lesion_cfg)
    b = int(cfg.grader.train.batch_size)
    nbx, nbm = R.make_batch(b, xray=tuple(cfg.xray.shape)), R.make_batch(b, mri=tuple(cfg.mri.shape))
    fns = {"grader": R.LJStep("grader", grader, nbx, cfg=cfg), "slice2d": R.LJStep("outcome", outcome, nbm, cfg=cfg),
           "lesion2d": R.LJStep("outcome", lesion, nbm, cfg=cfg)}
    best = {}
    for _ in range(rounds):
        for name, fn in fns.items():   # round-robin, one warm-up step each
            fn()
            ts = []
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            best[name] = min(best.get(name, float("inf")), statistics.median(ts))
    return {k: round(v, 4) for k, v in best.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.rounds, a.steps)))
        return
    rows = []
    for flags in FLAG_SETS:
        env = dict(os.environ, XLA_FLAGS=flags)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--rounds", str(a.rounds),
                              "--steps", str(a.steps)], env=env, capture_output=True, text=True, timeout=900)
        last = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        row = {"flags": flags, **(json.loads(last[-1]) if last else {"error": out.stderr[-500:]}),
               "load_1min_after": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    for r in rows[1:]:
        r["speedup_vs_no_flags"] = {k: round(base[k] / r[k], 3) for k in ("grader", "slice2d", "lesion2d") if k in r}
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
