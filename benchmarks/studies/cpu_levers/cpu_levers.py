"""Two more CPU levers for issue 14, measured against the PyTorch twins in the same rounds:

* ``microbatch``: the batch-16 gradient of the slice2d / lesion2d outcome models as one program
  vs a ``lax.scan`` over 2, 4, 8 or 16 micro-batches that sums their gradients (the same maths:
  the models have no batch coupling in eval mode; the largest gradient difference is printed,
  relative to the largest gradient entry: a per-leaf ratio would flag slice2d's slice-attention
  score bias, whose true gradient is 0 by softmax's shift invariance). Small batches
  were where lumbarjax led the twin (benchmarks/history/2026-11.md, batch scaling); does splitting the batch
  inside one program keep that lead?
* ``bf16``: the grader / slice2d / lesion2d train steps with ``compute_dtype=bfloat16`` against
  the twin under ``torch.autocast("cpu", torch.bfloat16)``, both next to their float32 steps
  (this host has AVX-512 BF16 and AMX).

    PYTHONPATH=$PWD python benchmarks/studies/cpu_levers/cpu_levers.py [--rounds 7] [--out benchmarks/results/X.json]

Seconds are medians of the quiet rounds (run.py's ``alternate``: round-robin, each round records
its load); ratios are run.py's paired twin / lumbarjax (> 1: lumbarjax is faster). Quote only from
a quiet machine (load well under 1 per core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(os.path.dirname(HERE))  # benchmarks/, where run.py is
for p in (os.path.dirname(BENCH), BENCH):
    if p not in sys.path:
        sys.path.insert(0, p)

import run as R  # noqa: E402  (benchmarks/run.py: timing, steps, twins; sets OMP_WAIT_POLICY)

SPLITS = (1, 2, 4, 8, 16)


def grad_fns(jax, jnp, model, batch):
    """{n micro-batches: jitted params -> gradient of sum(outputs²) over the batch}, eval mode."""
    params = model.init(jax.random.PRNGKey(0), batch, train=False)["params"]

    def loss(p, bt):
        out = model.apply({"params": p}, bt, train=False)
        return sum(jnp.sum(jnp.asarray(v, jnp.float32) ** 2) for v in out.values())

    def split(n):
        def f(p, bt):
            mb = jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), bt)

            def body(acc, m):
                return jax.tree.map(jnp.add, acc, jax.grad(loss)(p, m)), None

            return jax.lax.scan(body, jax.tree.map(jnp.zeros_like, p), mb)[0]
        return jax.jit(f)

    fns = {n: (jax.jit(jax.grad(loss)) if n == 1 else split(n)) for n in SPLITS}
    return params, fns


def probe_microbatch(torch, cfg, lesion_cfg):
    """(contenders, extra JSON fields, {ratio key: (twin name, lumbarjax name)})."""
    import jax
    import jax.numpy as jnp
    nbm = R.make_batch(16, mri=tuple(cfg.mri.shape))
    batch = jax.tree.map(jnp.asarray, nbm)
    width = int(cfg.outcome.model.mri.width)
    fns, errors = {}, {}
    for arch, c in (("slice2d", cfg), ("lesion2d", lesion_cfg)):
        _, model = R.lj_models(c)
        params, gfs = grad_fns(jax, jnp, model, batch)
        ref = gfs[1](params, batch)
        scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree.leaves(ref))
        for n, g in gfs.items():
            out = g(params, batch)
            errors[f"{arch} x{n}"] = max(float(jnp.max(jnp.abs(a - r))) for a, r in
                                         zip(jax.tree.leaves(out), jax.tree.leaves(ref))) / scale
            fns[f"lumbarjax {arch} grad x{n}"] = (
                lambda g=g, p=params: jax.block_until_ready(g(p, batch)))
        fns[f"pytorch twin {arch} step"] = R.torch_outcome_step(torch, nbm, width, arch)
    pairs = {f"{a} x{n}": (f"pytorch twin {a} step", f"lumbarjax {a} grad x{n}")
             for a in ("slice2d", "lesion2d") for n in SPLITS}
    return fns, {"max_rel_grad_error_vs_x1": errors}, pairs


def probe_bf16(torch, cfg, lesion_cfg):
    """(contenders, extra JSON fields, {ratio key: (twin name, lumbarjax name)})."""
    import jax.numpy as jnp
    grader, slice2d = R.lj_models(cfg)
    _, lesion = R.lj_models(lesion_cfg)
    nbm = R.make_batch(16, mri=tuple(cfg.mri.shape))
    nbx = R.make_batch(16, xray=tuple(cfg.xray.shape))
    mw, gw = int(cfg.outcome.model.mri.width), int(cfg.grader.model.width)
    fns = {}
    for key, kind, model, nb, twin in (
            ("grader", "grader", grader, nbx, lambda: R.torch_grader_step(torch, nbx, gw)),
            ("slice2d", "outcome", slice2d, nbm, lambda: R.torch_outcome_step(torch, nbm, mw)),
            ("lesion2d", "outcome", lesion, nbm,
             lambda: R.torch_outcome_step(torch, nbm, mw, "lesion2d"))):
        fns[f"lumbarjax {key} f32"] = R.LJStep(kind, model, nb, cfg=cfg)
        fns[f"lumbarjax {key} bf16"] = R.LJStep(kind, model, nb, cfg=cfg,
                                               compute_dtype=jnp.bfloat16)
        fns[f"pytorch twin {key} f32"] = twin()
        step16 = twin()

        def autocast(step=step16):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step()
        fns[f"pytorch twin {key} bf16"] = autocast
    pairs = {f"{k} {d}": (f"pytorch twin {k} {d}", f"lumbarjax {k} {d}")
             for k in ("grader", "slice2d", "lesion2d") for d in ("f32", "bf16")}
    return fns, {}, pairs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", default="microbatch,bf16")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each round, wait up to this many seconds for load <= 1 per core")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    R.MEASURE["wait_quiet_s"] = args.wait_quiet
    torch, why = R.torch_or_none()
    if torch is None:
        sys.exit(f"cpu_levers: needs PyTorch for the twins ({why}); pip install -e '.[bench]'")
    cfg = R.demo_config()
    lesion_cfg = R.demo_config()
    lesion_cfg.outcome.model.mri.arch = "lesion2d"
    import jax
    report = {"command": "python benchmarks/studies/cpu_levers/cpu_levers.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "load_start": os.getloadavg(),
              "versions": {"jax": jax.__version__, "torch": torch.__version__},
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rounds": args.rounds,
              "probes": {}}
    probes = {"microbatch": probe_microbatch, "bf16": probe_bf16}
    for name in args.probes.split(","):
        fns, extra, pairs = probes[name](torch, cfg, lesion_cfg)
        res = R.alternate(fns, args.rounds)
        rec = {"rounds": R.rounds_summary(res), **extra,
               "median_s": {n: r["median_s"] for n, r in R.contenders(res)},
               "times_s": {n: r["times_s"] for n, r in R.contenders(res)},
               "round_load": res["__rounds__"],
               "twin_over_lumbarjax": {k: R.paired_ratio(res, twin, lj)
                                       for k, (twin, lj) in pairs.items()}}
        report["probes"][name] = rec
        print(f"\n[{name}] {rec['rounds']}")
        for n, s in rec["median_s"].items():
            print(f"  {n:34s} {s:.4f} s")
        for n, r in rec["twin_over_lumbarjax"].items():
            print(f"  twin / lumbarjax {n:18s} {r:.2f}x")
        for n, e in extra.get("max_rel_grad_error_vs_x1", {}).items():
            print(f"  max rel grad error {n:14s} {e:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
