"""Integrated-gradients speed: lumbarjax IG vs the floor (one batched fwd+bwd), chunking, compile.

    python benchmarks/bench_ig.py --small            # 1 x 16x64x64x1, 64 steps
    python benchmarks/bench_ig.py                    # 1 x 32x128x128x1, 64 steps
    python benchmarks/bench_ig.py --model small_cnn --chunks none,32,16,8 --json out.json

IG with ``steps`` nodes costs ``steps`` gradient evaluations of the model; the floor is what that
minimally costs: one jitted fwd+bwd (gradient w.r.t. the input) of a batch of ``steps``
examples through the same model. The reported ratio IG / floor shows the overhead of the
interpolation, the weighted accumulation, the two extra forwards for delta and chunking.
Compile time (lower + XLA compile) is reported separately and excluded from run times; run
times are the median of ``--repeats`` runs. ``memory_analysis()`` of the compiled program gives
the temporary buffer size, which is what ``chunk_size`` bounds.

Models (importable by name for the peer benchmark: ``from bench_ig import get_model``):
``"mri_encoder"`` = ``lumbarjax.models.encoder3d.MRIEncoder`` (default arch) + a Dense(1) head,
``"small_cnn"`` = :class:`SmallCNN3D` below. ``--model auto`` uses mri_encoder when importable.

The Captum (PyTorch) comparison is :func:`captum_ig_time` — it runs only when torch and captum
import; otherwise it prints "peer missing: torch/captum not installed".
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lumbarjax.explain import blurred, integrated_gradients
from lumbarjax.explain.integrated_gradients import chunked_nodes, compiled_programs


class SmallCNN3D(nn.Module):
    """Local small 3D CNN: (B, D, H, W, 1) -> (B,) logit. Patchify stem (1,4,4)/(1,4,4) — one
    matmul; a 1-channel 3x5x5 stem took 125 s per fwd+bwd of 64 x 16x64x64 on XLA:CPU — then two
    strided 3x3x3 conv stages, GroupNorm (no cross-example mixing), global average pool,
    Dense(1)."""

    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (1, 4, 4), strides=(1, 4, 4), padding="VALID")(x)
        x = nn.relu(nn.GroupNorm(num_groups=4)(x))
        x = nn.Conv(2 * self.width, (3, 3, 3), strides=2)(x)
        x = nn.relu(nn.GroupNorm(num_groups=4)(x))
        x = nn.Conv(4 * self.width, (3, 3, 3), strides=2)(x)
        x = nn.relu(nn.GroupNorm(num_groups=4)(x))
        return nn.Dense(1)(jnp.mean(x, axis=(1, 2, 3)))[:, 0]


class EncoderHead(nn.Module):
    """``lumbarjax.models.encoder3d.MRIEncoder`` (default arch) + Dense(1): (B,D,H,W,1) -> (B,)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        from lumbarjax.models.encoder3d import MRIEncoder
        return nn.Dense(1)(MRIEncoder()(x, train=train))[:, 0]


def get_model(name: str = "auto") -> tuple[nn.Module, str]:
    """Benchmark model by name: "mri_encoder", "small_cnn" or "auto" (mri_encoder if present)."""
    if name in ("auto", "mri_encoder"):
        try:
            from lumbarjax.models.encoder3d import MRIEncoder  # noqa: F401
            return EncoderHead(), "mri_encoder"
        except ImportError:
            if name == "mri_encoder":
                raise
    if name in ("auto", "small_cnn"):
        return SmallCNN3D(), "small_cnn"
    raise ValueError(f"unknown model {name!r}; expected auto, mri_encoder or small_cnn")


def init_params(model: nn.Module, shape, seed: int = 0):
    """Params for ``model`` on inputs (1, *shape[1:]); jitted init (one compile)."""
    x = jnp.zeros((1, *shape[1:]), jnp.float32)
    return jax.jit(model.init)(jax.random.key(seed), x)


def _time(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def bench(model_name="auto", shape=(1, 16, 64, 64, 1), steps=64, chunks=(16, 8),
          method="gausslegendre", repeats=3, loops=("scan", "python"), baseline_sigma=2.0):
    """Time IG without chunking and with each chunk size x chunk loop, against the floor."""
    model, model_name = get_model(model_name)
    params = init_params(model, shape)

    def fn(inputs, p):
        return model.apply(p, inputs["mri"])

    rng = np.random.default_rng(0)
    x = {"mri": jnp.asarray(rng.normal(size=shape), jnp.float32)}
    # Blurred baseline: with a zero baseline, GroupNorm makes F(a x) ~ F(x) for all a > 1e-4
    # (scale invariance), the whole path integral sits at a ~ 0 and no quadrature resolves it.
    base = blurred(x, baseline_sigma)
    f_diff = float(fn(x, params)[0] - fn(base, params)[0])
    results = {"model": model_name, "shape": list(shape), "steps": steps, "method": method,
               "device": str(jax.devices()[0]), "backend": jax.default_backend(), "rows": []}

    # floor: one batched fwd+bwd (grad w.r.t. the input) of `steps` examples
    xf = jnp.asarray(rng.normal(size=(steps * shape[0], *shape[1:])), jnp.float32)
    floor = jax.jit(jax.grad(lambda v, p: jnp.sum(model.apply(p, v))))
    t = time.perf_counter()
    floor_c = floor.lower(xf, params).compile()
    floor_compile = time.perf_counter() - t
    floor_mem = floor_c.memory_analysis()
    floor_s, _ = _time(lambda: floor_c(xf, params), repeats)
    results["floor"] = {"compile_s": floor_compile, "run_s": floor_s,
                        "temp_mib": getattr(floor_mem, "temp_size_in_bytes", 0) / 2 ** 20}
    print(f"model={model_name} input={tuple(shape)} steps={steps} method={method} "
          f"device={results['device']} baseline=blurred(sigma={baseline_sigma} vox) "
          f"F(x)-F(x')={f_diff:+.4f}")
    print(f"floor  fwd+bwd batch {steps * shape[0]:>3}: run {floor_s:7.3f} s  "
          f"compile {floor_compile:6.2f} s  temp {results['floor']['temp_mib']:8.1f} MiB")

    programs = compiled_programs(fn, True)
    configs = [(None, "-")] + [(c, loop) for c in chunks if c is not None and c < steps
                               for loop in loops]
    for chunk, loop in configs:
        alphas, weights = chunked_nodes(method, steps, chunk)
        t = time.perf_counter()
        if loop in ("-", "scan"):
            compiled = [programs.run.lower(x, base, params, alphas, weights).compile()]
        else:  # python loop: one chunk step + finish
            compiled = [programs.accumulate.lower(base, x, base, params, alphas[0],
                                                  weights[0]).compile(),
                        programs.finish.lower(base, x, base, params).compile()]
        compile_s = time.perf_counter() - t
        temp = max(getattr(c.memory_analysis(), "temp_size_in_bytes", 0) for c in compiled)
        temp /= 2 ** 20
        kw = dict(steps=steps, method=method, chunk_size=chunk, static=params,
                  chunk_loop="scan" if loop == "-" else loop)
        _, delta = integrated_gradients(fn, x, base, **kw)  # warm the jit cache
        ig_s, _ = _time(lambda: integrated_gradients(fn, x, base, **kw), repeats)
        row = {"chunk_size": chunk, "chunk_loop": loop, "compile_s": compile_s, "run_s": ig_s,
               "ratio_to_floor": ig_s / floor_s, "temp_mib": temp,
               "delta": float(delta[0]), "f_diff": f_diff}
        results["rows"].append(row)
        print(f"IG chunk_size={str(chunk):>4} loop={loop:>6}: run {ig_s:7.3f} s  "
              f"compile {compile_s:6.2f} s  IG/floor {ig_s / floor_s:5.2f}  "
              f"temp {temp:8.1f} MiB  delta {row['delta']:+.2e}")
    return results


# ---------------------------------------------------------------- PEER: Captum (PyTorch)
# Runs only when torch and captum import (the `bench` extra); not exercised in CI.

def captum_ig_time(shape=(1, 16, 64, 64, 1), steps=64, internal_batch_size=None, repeats=1,
                   width=16):
    """Captum ``IntegratedGradients`` (method "gausslegendre", ``n_steps=steps``) on a PyTorch
    twin of :class:`SmallCNN3D`, CPU, same input shape (channels-first). Returns the median
    seconds, or None (printing "peer missing: torch/captum not installed") when either
    import fails."""
    try:
        import torch
        from captum.attr import IntegratedGradients
    except ImportError:
        print("peer missing: torch/captum not installed")
        return None

    class TorchSmallCNN3D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.body = torch.nn.Sequential(
                torch.nn.Conv3d(1, w, (1, 4, 4), stride=(1, 4, 4)),
                torch.nn.GroupNorm(4, w), torch.nn.ReLU(),
                torch.nn.Conv3d(w, 2 * w, 3, stride=2, padding=1),
                torch.nn.GroupNorm(4, 2 * w), torch.nn.ReLU(),
                torch.nn.Conv3d(2 * w, 4 * w, 3, stride=2, padding=1),
                torch.nn.GroupNorm(4, 4 * w), torch.nn.ReLU())
            self.head = torch.nn.Linear(4 * w, 1)

        def forward(self, x):
            return self.head(self.body(x).mean(dim=(2, 3, 4)))[:, 0]

    model = TorchSmallCNN3D().eval()
    b, d, h, w_, c = shape
    x = torch.randn(b, c, d, h, w_)
    ig = IntegratedGradients(model)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method="gausslegendre",
                     internal_batch_size=internal_batch_size)
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(f"captum IG (torch twin of small_cnn) input={tuple(shape)} steps={steps} "
          f"internal_batch_size={internal_batch_size}: {s:.3f} s")
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="1 x 16x64x64x1 instead of 32x128x128")
    p.add_argument("--model", default="auto", choices=["auto", "mri_encoder", "small_cnn"])
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--method", default="gausslegendre")
    p.add_argument("--chunks", default="16,8",
                   help="comma-separated chunk sizes (the unchunked run is always timed)")
    p.add_argument("--loops", default="scan,python", help="chunk loops to time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--captum", action="store_true", help="also time the Captum peer")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    shape = (1, 16, 64, 64, 1) if a.small else (1, 32, 128, 128, 1)
    chunks = tuple(int(c) for c in a.chunks.split(",") if c.strip().lower() not in ("", "none"))
    res = bench(a.model, shape, a.steps, chunks, a.method, a.repeats,
                tuple(a.loops.split(",")))
    if a.captum:
        res["captum_s"] = captum_ig_time(shape, a.steps)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
