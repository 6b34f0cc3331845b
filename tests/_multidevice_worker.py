"""Toy model / data for the train tests, and a worker run in a subprocess with N forced CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` must be set before jax is
imported, hence a separate process).

    python _multidevice_worker.py OUT.json WORKDIR
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lumbarjax.data.pipeline import CachedExamples, make_loader


class ToyModel(nn.Module):
    """clinical (B, F) -> {"y": (B,) logit}; optional BatchNorm and dropout."""

    use_bn: bool = False
    dropout: float = 0.0
    hidden: int = 8

    @nn.compact
    def __call__(self, batch, train: bool):
        # No bias before BatchNorm: BN removes it, its gradient is pure round-off and Adam
        # would amplify that noise into real updates.
        h = nn.Dense(self.hidden, use_bias=not self.use_bn)(batch["clinical"])
        if self.use_bn:
            h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h)
        if self.dropout:
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return {"y": nn.Dense(1)(h)[:, 0]}


def toy_loss(outputs, batch):
    """Masked binary cross-entropy averaged over valid, observed rows."""
    logits = outputs["y"]
    labels = batch["labels"]["y"]
    mask = batch["label_mask"]["y"] * batch["valid"]
    per = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    per = jnp.where(mask > 0, per, 0.0)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(per) / n
    acc = jnp.sum(jnp.where(mask > 0, ((logits > 0) == (labels > 0.5)), 0.0)) / n
    return loss, {"acc": acc}


def toy_source(n: int = 64, f: int = 4, seed: int = 0) -> CachedExamples:
    """Linearly separable toy problem: y = [x @ w > 0]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    w = np.linspace(-1.0, 1.5, f).astype(np.float32)
    y = (x @ w > 0).astype(np.float32)
    return CachedExamples(None, {"clinical": x, "labels": {"y": y}})


def toy_config(**train) -> ml_collections.ConfigDict:
    """configs/default.py's train and optim settings, sized for the toy problem."""
    from configs import default
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.augment = None
    cfg.train = default.train_config(
        num_steps=10, batch_size=8, log_every=2, eval_every=5, checkpoint_every=4,
        best_metric="loss", best_metric_mode="min", progress_bar=False, async_checkpointing=True)
    cfg.train.update(train)
    cfg.optim = default.optim_config(lr=0.05, weight_decay=1e-4, warmup_steps=2, clip_norm=1.0,
                                     end_lr_ratio=0.0)
    return cfg


def run_worker(out_path: str, workdir: str) -> None:
    from lumbarjax.errors import ConfigError
    from lumbarjax.train import (create_train_state, make_mesh, make_train_step, predict,
                                 shard_batch, train_and_evaluate)

    mesh = make_mesh()
    model = ToyModel(use_bn=True, dropout=0.25)
    source = toy_source(n=40)
    cfg = toy_config(num_steps=6)
    it = make_loader(source, batch_size=8, shuffle=True, seed=0)
    sample = next(make_loader(source, batch_size=8, shuffle=False, seed=0, num_epochs=1))
    state = create_train_state(0, model, sample, cfg, mesh=mesh)
    step = make_train_step(model, toy_loss, mesh)
    losses, grad_norms = [], []
    for _ in range(6):
        state, m = step(state, shard_batch(next(it), mesh))
        losses.append(float(m["loss"]))
        grad_norms.append(float(m["grad_norm"]))
    params = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)]
    stats = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.batch_stats)]
    eval_src = toy_source(n=20, seed=1)
    preds = predict(state, model, make_loader(eval_src, batch_size=8, shuffle=False, seed=0,
                                              num_epochs=1), mesh)
    error = None
    try:
        shard_batch({"x": np.zeros((3, 2), np.float32)}, mesh)
    except ConfigError as e:
        error = str(e)
    # The whole loop on this mesh, interrupted at step 2 and resumed (sharded restore).
    loop_cfg = toy_config(num_steps=4, eval_every=2, log_every=2)
    kw = dict(model=model, loss_fn=toy_loss, train_source=source, eval_source=eval_src)
    train_and_evaluate(loop_cfg, workdir, stop_at=2, **kw)
    res = train_and_evaluate(loop_cfg, workdir, **kw)
    loop_params = [np.asarray(x).ravel().tolist()
                   for x in jax.tree.leaves(res["last_state"].params)]
    with open(out_path, "w") as f:
        json.dump({"n_devices": jax.device_count(), "losses": losses,
                   "grad_norms": grad_norms, "params": params, "batch_stats": stats,
                   "pred_y": preds["y"].tolist(), "pred_index": preds["index"].tolist(),
                   "sharding_error": error, "loop_params": loop_params,
                   "loop_eval": res["history"]["eval"], "loop_last_step": res["last_step"]}, f)


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2])
