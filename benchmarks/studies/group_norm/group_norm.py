"""lumbarjax's GroupNorm vs flax's nn.GroupNorm (issue 14): one layer's fwd+bwd at the demo
encoders' map sizes, and the whole grader / slice2d / lesion2d train steps built with each in
every network, against PyTorch's GroupNorm and the PyTorch twins, all timed round-robin in one
process. (The library uses lumbarjax's in lesion2d only: the choice these figures made.)

    PYTHONPATH=$PWD python benchmarks/studies/group_norm/group_norm.py [--rounds 9] [--out benchmarks/results/X.json]

Layer figures: ms per fwd+bwd of ``sum(relu(norm(x)) * r)`` (median of the quiet rounds); step
figures: seconds per train step, and the paired per-round ratios flax / lumbarjax (> 1: ours is
faster) and twin / lumbarjax (run.py's convention: > 1 lumbarjax is faster). Quote only from a
quiet machine (load well under 1 per core before the start; each round records its load).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(os.path.dirname(HERE))  # benchmarks/, where run.py is
for p in (os.path.dirname(BENCH), BENCH):
    if p not in sys.path:
        sys.path.insert(0, p)

import run as R  # noqa: E402  (benchmarks/run.py: timing, steps, twins; sets OMP_WAIT_POLICY)

# (N, H, W, C, group_size or None for norm_layer's gcd(C, 8) groups): lesion2d's four norms
# (128 = 16 volumes x 8 slices), slice2d's stage maps, the grader's stage 0 (16 films)
LAYERS = [(128, 48, 32, 16, 4), (128, 24, 16, 16, 4), (128, 24, 16, 32, 4), (128, 12, 8, 32, 4),
          (128, 12, 8, 16, None), (16, 40, 40, 16, None)]


def layer_fns(jax, jnp, nn, torch, shape):
    """{contender: blocking fwd+bwd call} for one layer shape."""
    import numpy as np
    from lumbarjax.models.group_norm import GroupNorm
    n, h, w, c, gs = shape
    groups = c // gs if gs else math.gcd(c, 8)
    kw = {"num_groups": None, "group_size": gs} if gs else {"num_groups": groups}
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=(n, h, w, c)) + 0.5, jnp.float32)
    ct = jnp.asarray(r.normal(size=(n, h, w, c)), jnp.float32)
    out = {}
    for name, mod in (("flax", nn.GroupNorm(**kw)), ("lumbarjax", GroupNorm(**kw))):
        v = mod.init(jax.random.PRNGKey(0), x)
        g = jax.jit(jax.grad(lambda p, a, m=mod: jnp.sum(jax.nn.relu(m.apply(p, a)) * ct), argnums=(0, 1)))
        out[name] = lambda g=g, v=v: jax.block_until_ready(g(v, x))
    if torch is not None:
        tn = torch.nn.GroupNorm(groups, c)
        tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
        tc = torch.from_numpy(np.array(ct)).permute(0, 3, 1, 2).contiguous()

        def tstep():
            a = tx.clone().requires_grad_(True)
            tn.zero_grad(set_to_none=True)
            (torch.relu(tn(a)) * tc).sum().backward()
        out["torch"] = tstep
    return out


def step_fns(jax, torch):
    """{(model, contender): one blocking train step}: the demo's three steps with flax's GroupNorm
    in every network and with lumbarjax's in every network (flax.linen.GroupNorm, which the
    ResNets' norm_layer calls, and LesionCNN's own swapped by name while the steps are traced),
    plus the twins."""
    import flax.linen as nn
    from lumbarjax.models import encoder3d, group_norm
    cfg = R.demo_config()
    lcfg = R.demo_config()
    lcfg.outcome.model.mri.arch = "lesion2d"
    b = int(cfg.grader.train.batch_size)
    nbx, nbm = R.make_batch(b, xray=tuple(cfg.xray.shape)), R.make_batch(b, mri=tuple(cfg.mri.shape))
    out = {}
    flax_gn = nn.GroupNorm
    for tag, cls in (("flax", flax_gn), ("lumbarjax", group_norm.GroupNorm)):
        nn.GroupNorm = encoder3d.GroupNorm = cls
        jax.clear_caches()   # equal modules would otherwise reuse the other variant's trace
        g, o = R.lj_models(cfg)
        _, ol = R.lj_models(lcfg)
        out[("grader", tag)] = R.LJStep("grader", g, nbx, cfg=cfg)
        out[("slice2d", tag)] = R.LJStep("outcome", o, nbm, cfg=cfg)
        out[("lesion2d", tag)] = R.LJStep("outcome", ol, nbm, cfg=lcfg)
    nn.GroupNorm, encoder3d.GroupNorm = flax_gn, group_norm.GroupNorm
    if torch is not None:
        gw, mw = int(cfg.grader.model.width), int(cfg.outcome.model.mri.width)
        out[("grader", "twin")] = R.torch_grader_step(torch, nbx, gw)
        out[("slice2d", "twin")] = R.torch_outcome_step(torch, nbm, mw)
        out[("lesion2d", "twin")] = R.torch_outcome_step(torch, nbm, mw, "lesion2d")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    torch, why = R.torch_or_none()
    if why:
        R.log(why)
    result = {"command": " ".join(["python"] + sys.argv), "cpu_count": os.cpu_count(),
              "load_1min_before": round(os.getloadavg()[0], 2), "layers": [], "steps": {}}
    print(f"load before {result['load_1min_before']} on {os.cpu_count()} cores")
    print("layer (N,H,W,C,group_size) | flax ms | lumbarjax ms | torch ms | flax/lumbarjax")
    for shape in LAYERS:
        fns = layer_fns(jax, jnp, nn, torch, shape)
        res = R.alternate(fns, a.rounds)
        row = {"shape": list(shape), **{k: round(1e3 * res[k]["median_s"], 3) for k in fns},
               "flax_over_lumbarjax": round(R.paired_ratio(res, "flax", "lumbarjax"), 3),
               "loads": [round(x["load1"], 2) for x in res["__rounds__"]]}
        result["layers"].append(row)
        print(f"{shape} | {row['flax']:.2f} | {row['lumbarjax']:.2f} | {row.get('torch', float('nan')):.2f} "
              f"| {row['flax_over_lumbarjax']:.2f}x", flush=True)
    fns = step_fns(jax, torch)
    res = R.alternate({f"{m} {t}": f for (m, t), f in fns.items()}, a.rounds)
    print("train step | flax s | lumbarjax s | twin s | flax/lumbarjax | twin/lumbarjax | twin/flax")
    for m in ("grader", "slice2d", "lesion2d"):
        row = {t: round(res[f"{m} {t}"]["median_s"], 4) for t in ("flax", "lumbarjax", "twin") if f"{m} {t}" in res}
        row["flax_over_lumbarjax"] = round(R.paired_ratio(res, f"{m} flax", f"{m} lumbarjax"), 3)
        if "twin" in row:
            row["twin_over_lumbarjax"] = round(R.paired_ratio(res, f"{m} twin", f"{m} lumbarjax"), 3)
            row["twin_over_flax"] = round(R.paired_ratio(res, f"{m} twin", f"{m} flax"), 3)
        result["steps"][m] = row
        print(f"{m} | {row['flax']:.4f} | {row['lumbarjax']:.4f} | {row.get('twin', float('nan')):.4f} | "
              f"{row['flax_over_lumbarjax']:.2f}x | {row.get('twin_over_lumbarjax', float('nan')):.2f}x | "
              f"{row.get('twin_over_flax', float('nan')):.2f}x", flush=True)
    result["step_loads"] = [round(x["load1"], 2) for x in res["__rounds__"]]
    result["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(f"load after {result['load_1min_after']}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
