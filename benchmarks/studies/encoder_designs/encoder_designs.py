"""Measure MRI encoder designs under XLA: train-step time, FLOPs, achieved GFLOP/s, learnability.

    python benchmarks/studies/encoder_designs/encoder_designs.py            # full (batch 4 x 16/32 x 128 x 128 x 1), ~4-5 min
    python benchmarks/studies/encoder_designs/encoder_designs.py --quick    # small shapes, < 1 min

One step = forward + backward + Adam update of MRIEncoder + a Dense(1) head on an MSE loss, jitted.
Designs are timed ALTERNATELY in the same process (round-robin, `--rounds` rounds), with a
2048x2048 float32 matmul timed in the same rounds as the machine's dot ceiling; medians and
ratios to the naive 3D ResNet are printed. FLOPs come from XLA's cost_analysis of the compiled step.

The learnability check (--learn; its own few minutes) trains every design for some Adam steps on a toy
stenosis task — a bright CSF canal (vertical band in the mid-sagittal slices) narrowed at one
level (positives) or not (negatives), volumes 8 x 64 x 32 — and reports held-out accuracy: a fast
design that cannot see a narrowing at one level is useless.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from lumbarjax.models.encoder3d import MRIEncoder

DESIGNS = {
    "resnet3d_naive": dict(arch="resnet3d_naive", width=32, pool="avg"),
    "patch3d": dict(arch="patch3d", width=32, patch=4, depth_patch=1),
    "patch3d_2x4x4": dict(arch="patch3d", width=32, patch=4, depth_patch=2),
    "slice2d": dict(arch="slice2d", width=32, patch=4),
    "vit": dict(arch="vit", vit_dim=128, vit_depth=4, vit_heads=4, patch=16, depth_patch=2),
}
REFERENCE = "resnet3d_naive"
# "patch3d" (1x4x4 stem) is dominated by patch3d_2x4x4 (see ENCODER_DESIGNS.md): left out by default
# to keep the full run near 5 minutes; pass --designs to include it.
DEFAULT_DESIGNS = ("resnet3d_naive", "patch3d_2x4x4", "slice2d", "vit")


class Probe(nn.Module):
    encoder: dict

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(1)(MRIEncoder(**self.encoder)(x, train))[:, 0]


def make_step(model, tx):
    def loss_fn(params, x, y):
        pred = model.apply({"params": params}, x, train=True)
        return jnp.mean((pred - y) ** 2)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def flops_of(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def time_call(fn):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0


def bench_speed(shape, batch, rounds, names):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch,) + shape + (1,)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(batch,)), jnp.float32)
    tx = optax.adam(1e-3)
    runs = {}
    for name in names:
        model = Probe(DESIGNS[name])
        params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
        n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
        opt_state = tx.init(params)
        step = make_step(model, tx)
        t0 = time.perf_counter()
        compiled = step.lower(params, opt_state, x, y).compile()
        compile_s = time.perf_counter() - t0
        flops = flops_of(compiled)
        params, opt_state, loss = compiled(params, opt_state, x, y)  # warm-up
        jax.block_until_ready(loss)
        runs[name] = dict(compiled=compiled, state=[params, opt_state], times=[], flops=flops,
                          compile_s=compile_s, n_params=n_params)
    a = jnp.asarray(rng.normal(size=(2048, 2048)), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    mm_times = []
    for _ in range(rounds):
        mm_times.append(time_call(lambda: mm(a)))
        for name in names:
            r = runs[name]

            def go(r=r):
                p, o, loss = r["compiled"](r["state"][0], r["state"][1], x, y)
                r["state"] = [p, o]
                return loss

            r["times"].append(time_call(go))
    mm_gflops = 2 * 2048 ** 3 / statistics.median(mm_times) / 1e9
    out = {}
    for name in names:
        r = runs[name]
        med = statistics.median(r["times"])
        out[name] = dict(step_s=med, flops=r["flops"], gflops=r["flops"] / med / 1e9,
                         compile_s=r["compile_s"], n_params=r["n_params"])
    return out, mm_gflops


def toy_stenosis(n, depth, h, w, seed):
    """Bright canal band at mid slices; positives narrowed at one of 5 levels. Returns x, y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, size=(n, depth, h, w)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    rng.shuffle(y)
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    for i in range(n):
        centre = w // 2 + rng.integers(-4, 5)
        half = np.full((h, 1), 4.0)
        if y[i]:
            level = rng.integers(0, 5)
            lc = int((level + 0.5) * h / 5)
            half = np.where(np.abs(rows - lc) < h // 12, 1.0, half)
        canal = (np.abs(cols - centre) <= half).astype(np.float32)
        # vertebral bodies (dark/bright bands) as distractors
        bodies = 0.5 * ((rows // (h // 10)) % 2 == 0) * (cols < centre - 6)
        mid = depth // 2
        for d in range(depth):
            wgt = np.exp(-((d - mid) ** 2) / 2.0)
            x[i, d] += 1.5 * wgt * canal + bodies
    return x[..., None], y


def bench_learn(names, depth, h, w, steps, batch, lr=1e-3, seed=0):
    xtr, ytr = toy_stenosis(steps * batch, depth, h, w, seed)
    xte, yte = toy_stenosis(64, depth, h, w, seed + 1)
    out = {}
    for name in names:
        model = Probe(DESIGNS[name])
        params = model.init(jax.random.PRNGKey(seed), jnp.asarray(xtr[:1]))["params"]
        tx = optax.adam(lr)
        opt_state = tx.init(params)

        def loss_fn(p, xb, yb):
            logit = model.apply({"params": p}, xb, train=True)
            return optax.sigmoid_binary_cross_entropy(logit, yb).mean()

        @jax.jit
        def step(p, o, xb, yb):
            loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o, loss

        predict = jax.jit(lambda p, xb: model.apply({"params": p}, xb, train=False))
        t0 = time.perf_counter()
        losses = []
        for s in range(steps):
            sl = slice(s * batch, (s + 1) * batch)
            params, opt_state, loss = step(params, opt_state, jnp.asarray(xtr[sl]), jnp.asarray(ytr[sl]))
            losses.append(float(loss))
        logits = np.asarray(predict(params, jnp.asarray(xte)))
        acc = float(np.mean((logits > 0) == (yte > 0.5)))
        auc = float(roc_auc_score(yte, logits))
        out[name] = dict(acc=acc, auc=auc, final_loss=float(np.mean(losses[-20:])),
                         train_s=time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (8/16 x 64 x 64), 3 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5, quick 3)")
    ap.add_argument("--designs", default=",".join(DEFAULT_DESIGNS),
                    help=f"comma-separated subset of {list(DESIGNS)}")
    ap.add_argument("--learn", action="store_true", help="also run the toy stenosis learnability check")
    ap.add_argument("--no-speed", action="store_true", help="skip the timing tables")
    ap.add_argument("--learn-steps", type=int, default=None, help="Adam steps of the learnability check")
    ap.add_argument("--learn-lr", type=float, default=1e-3, help="Adam learning rate of the learnability check")
    args = ap.parse_args(argv)
    names = [n for n in args.designs.split(",") if n]
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        sys.exit(f"unknown designs {unknown}; choose from {list(DESIGNS)}")
    if args.quick:
        shapes, batch, rounds = [(8, 64, 64)], 2, args.rounds or 3
        learn = dict(depth=8, h=48, w=32, steps=args.learn_steps or 20, batch=8)
    else:
        shapes, batch, rounds = [(16, 128, 128), (32, 128, 128)], 4, args.rounds or 3
        learn = dict(depth=8, h=64, w=32, steps=args.learn_steps or 300, batch=8)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    ref = REFERENCE if REFERENCE in names else names[0]
    t_start = time.perf_counter()
    for shape in [] if args.no_speed else shapes:
        res, mm = bench_speed(shape, batch, rounds, names)
        print(f"\n### batch {batch} x {'x'.join(map(str, shape))} x 1, fwd+bwd+Adam, median of {rounds} "
              f"alternating rounds; 2048^2 f32 matmul: {mm:.1f} GFLOP/s\n")
        print(f"| design | params | step s | vs {ref} | GFLOP/step | GFLOP/s | % of matmul | compile s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in names:
            r = res[n]
            print(f"| {n} | {r['n_params'] / 1e6:.2f}M | {r['step_s']:.3f} | "
                  f"{res[ref]['step_s'] / r['step_s']:.1f}x | {r['flops'] / 1e9:.1f} | "
                  f"{r['gflops']:.1f} | {100 * r['gflops'] / mm:.0f}% | {r['compile_s']:.1f} |")
        sys.stdout.flush()
    if args.learn:
        learn_names = [n for n in names if n != REFERENCE]
        res = bench_learn(learn_names, lr=args.learn_lr, **learn)
        print(f"\n### learnability: toy stenosis (narrowed canal at 1 of 5 levels vs none), "
              f"{learn['depth']}x{learn['h']}x{learn['w']}, {learn['steps']} Adam steps x batch "
              f"{learn['batch']} (fresh data every step), lr {args.learn_lr}; held-out AUC / accuracy on 64 "
              f"(chance 0.5)\n")
        print("| design | held-out AUC | held-out acc | train loss (last 20) | train s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for n in learn_names:
            r = res[n]
            print(f"| {n} | {r['auc']:.2f} | {r['acc']:.2f} | {r['final_loss']:.3f} | {r['train_s']:.1f} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
