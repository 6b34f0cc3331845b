"""Can an MRI encoder learn stenosis from ~120 patients? Held-out check on the demo cohort.

    python benchmarks/studies/encoder_designs/encoder_generalisation.py --workdir /tmp/lj/gen            # ~15 min, 2 cores
    python benchmarks/studies/encoder_designs/encoder_generalisation.py --workdir DIR --designs lesion2d --steps 300

The demo cohort (written to <workdir>/cohort when absent) is indexed and preprocessed exactly as
`configs/demo.py` does (8 x 96 x 64 sagittal T2 at 4 x 2.5 x 2.5 mm). Each design — MRIEncoder +
LayerNorm + Dense(32) + Dense(1), AdamW with warmup + cosine — is trained on the first
`--train` patients with MRI, with the outcome model's augmentation (left-right flip, +-12-row
superior-inferior shift), on the *true* stenosis severity s from ground_truth.csv (MSE; the
easiest possible supervision: continuous, noise-free), and evaluated on the remaining patients:
Pearson r(prediction, s) on the held-out patients, and the AUC of that prediction for the
realised ZCQ success (the Bayes-optimal score's AUC on the same patients is printed beside it).

A design that cannot reach a useful held-out r with the true s as the label cannot learn it
from ~125 noisy binary outcomes either. Results: benchmarks/studies/encoder_designs/ENCODER_DESIGNS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from lumbarjax.eval.metrics import auc  # noqa: E402
from lumbarjax.models.encoder3d import MRIEncoder  # noqa: E402

DESIGNS = {
    "slice2d": dict(arch="slice2d", width=16),
    "lesion2d": dict(arch="lesion2d", width=16),
    "lesion2d_full": dict(arch="lesion2d", width=8, patch=1),
}


class Probe(nn.Module):
    encoder: dict

    @nn.compact
    def __call__(self, x, train=False):
        f = nn.LayerNorm()(MRIEncoder(**self.encoder)(x, train))
        return nn.Dense(1)(nn.relu(nn.Dense(32)(f)))[:, 0]


def load_demo(workdir: str):
    """(volumes (N, D, H, W, 1) float32, ground-truth rows (N,)) of the demo cohort's MRI patients."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "configs"))
    import demo  # configs/demo.py

    from lumbarjax.jobs import workflow
    from lumbarjax.synthetic import make_cohort

    cfg = demo.get_config()
    cohort = os.path.join(workdir, "cohort")
    if not os.path.exists(os.path.join(cohort, "ground_truth.csv")):
        make_cohort(cohort, n_patients=160, seed=0)
    cfg.data.cohort_dir = cohort
    manifest = workflow.stage_index(cfg, workdir)
    coh = workflow.stage_cohort(cfg, workdir, manifest)
    gt = pd.read_csv(os.path.join(cohort, "ground_truth.csv")).set_index("patient_id")
    cache = coh.cache[~coh.cache["excluded"].astype(bool)]
    cache = cache[cache["mri_file"].astype(str).str.len() > 0].sort_values("patient_id")
    vols = np.stack([np.load(f) for f in cache["mri_file"]])[..., None].astype(np.float32)
    return vols, gt.loc[cache["patient_id"].to_numpy()]


def train_and_test(design: dict, x, s, n_train: int, steps: int, lr: float, seed: int = 0):
    model = Probe(design)
    params = model.init(jax.random.key(seed), x[:2])
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 20, steps, lr * 0.02), weight_decay=1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, xb, True) - yb) ** 2))(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    predict = jax.jit(lambda p, xb: model.apply(p, xb))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = rng.choice(n_train, 16, replace=False)
        xb = np.roll(x[idx], int(rng.integers(-12, 13)), axis=2)  # superior-inferior shift
        if rng.random() < 0.5:
            xb = xb[:, ::-1]  # left-right flip (across slices)
        params, opt, _ = step(params, opt, np.ascontiguousarray(xb), s[idx])
    secs = time.perf_counter() - t0
    pred = np.concatenate([np.asarray(predict(params, x[i:i + 16])) for i in range(0, len(x), 16)])
    return pred[:n_train], pred[n_train:], secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--train", type=int, default=120, help="training patients (the rest are held out)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args(argv)

    x, gt = load_demo(args.workdir)
    s = gt["stenosis_severity"].to_numpy(np.float32)
    y = gt["zcq_success"].to_numpy(np.float32)
    p = gt["p_zcq_success"].to_numpy(np.float32)
    n = args.train
    print(f"{len(x)} patients with MRI {x.shape[1:4]}: {n} train, {len(x) - n} held out; {args.steps} steps, "
          f"batch 16, lr {args.lr}")
    print(f"held-out ZCQ-success AUC of the true s: {auc(y[n:], s[n:]):.3f}; of the Bayes-optimal p: "
          f"{auc(y[n:], p[n:]):.3f}")
    print(f"{'design':10s} {'train r':>8s} {'held-out r':>11s} {'held-out AUC(zcq)':>18s} {'train s':>8s}")
    for name in args.designs:
        ptr, pte, secs = train_and_test(DESIGNS[name], x, s, n, args.steps, args.lr)
        r_tr = np.corrcoef(ptr, s[:n])[0, 1]
        r_te = np.corrcoef(pte, s[n:])[0, 1]
        print(f"{name:10s} {r_tr:8.3f} {r_te:11.3f} {auc(y[n:], pte):18.3f} {secs:8.0f}", flush=True)


if __name__ == "__main__":
    main()
