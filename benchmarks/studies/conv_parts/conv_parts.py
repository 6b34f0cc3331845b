"""Where a 3x3 convolution's train-step time goes on this CPU: forward, input gradient (dx) and
kernel gradient (dw) timed apart, XLA's kernel gradient vs the im2col matmul
(``lumbarjax.models.conv``), against PyTorch's whole fwd+bwd of the same layer (issue 14).

    PYTHONPATH=$PWD python benchmarks/studies/conv_parts/conv_parts.py [--reps 20]

Shapes: the convs of the demo's encoders at the demo batch (16 volumes x 8 slices = 128 maps for
the MRI; 16 films for the grader). Prints one line per shape and the 1-min load average before
and after (quote it only from a quiet machine: load well under 1 per core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")))

# (N, H, W, Cin, Cout, stride): lesion2d's 4 convs, slice2d's stage-0/1 convs, the grader's stage 0
SHAPES = [(128, 48, 32, 4, 16, 1), (128, 48, 32, 16, 16, 2), (128, 24, 16, 16, 32, 1),
          (128, 24, 16, 32, 32, 2), (128, 24, 16, 16, 16, 1), (128, 12, 8, 32, 32, 1),
          (16, 40, 40, 16, 16, 1), (16, 40, 40, 16, 32, 2)]


def _median_ms(f, reps):
    for _ in range(3):
        f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from lumbarjax.models import conv as C
    try:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch = None
    print(f"load before {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; ms per call, median of {a.reps}")
    print("shape (N,H,W,Cin,Cout,stride) | fwd | dx | dw XLA | dw im2col | XLA fwd+dx+dw | torch fwd+bwd")
    rng = np.random.default_rng(0)
    for n, h, w, cin, cout, s in SHAPES:
        x = jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32) * 0.1
        st, pads = (s, s), ((1, 1), (1, 1))
        fwd = jax.jit(lambda x, k: C.conv2d(x, k, st, pads))
        dy = jnp.asarray(rng.normal(size=fwd(x, k).shape), jnp.float32)
        dx = jax.jit(lambda x, k, dy: jax.vjp(lambda v: C.conv2d(v, k, st, pads), x)[1](dy)[0])
        dw = jax.jit(lambda x, k, dy: jax.vjp(lambda kk: C.conv2d(x, kk, st, pads), k)[1](dy)[0])
        dw_i = jax.jit(lambda x, k, dy: jax.vjp(lambda kk: C.conv2d_im2col_dw(x, kk, st, pads), k)[1](dy)[0])
        full = jax.jit(jax.grad(lambda x, k: jnp.sum(C.conv2d(x, k, st, pads) * dy), argnums=(0, 1)))
        r = [_median_ms(lambda: jax.block_until_ready(fwd(x, k)), a.reps),
             _median_ms(lambda: jax.block_until_ready(dx(x, k, dy)), a.reps),
             _median_ms(lambda: jax.block_until_ready(dw(x, k, dy)), a.reps),
             _median_ms(lambda: jax.block_until_ready(dw_i(x, k, dy)), a.reps),
             _median_ms(lambda: jax.block_until_ready(full(x, k)), a.reps)]
        if torch is not None:
            m = torch.nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=False)
            tx = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous()

            def tstep():
                v = tx.clone().requires_grad_(True)
                m.zero_grad(set_to_none=True)
                m(v).sum().backward()
            r.append(_median_ms(tstep, a.reps))
        print(f"{(n, h, w, cin, cout, s)} | " + " | ".join(f"{v:.2f}" for v in r), flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
