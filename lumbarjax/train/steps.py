"""The jitted train, eval and predict steps (module-level ``jax.jit`` with static arguments).

Each step is one ``jax.jit`` function; the model, the loss, the mesh and the compute dtype are
static arguments (hashable: flax modules hash by their fields, losses are frozen dataclasses
or module-level functions), so every cross-validation fold, resumed run and repeated
``predict`` with equal settings reuses the same compiled executable. The batch arrives sharded
over the mesh's ``"data"`` axis (``mesh.shard_batch``) and the state replicated
(``state.create_train_state``); outputs are constrained to be replicated, so every process can
read them whole.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from lumbarjax.train.mesh import replicated_sharding
from lumbarjax.train.metrics_log import flatten_metrics
from lumbarjax.train.state import TrainState

__all__ = ["cast_inputs", "forward", "train_step", "eval_step", "predict_step", "loss_eval_step",
           "make_train_step", "make_eval_step", "make_predict_step"]

# Batch keys that are targets / bookkeeping and never cast to the compute dtype.
_NO_CAST_KEYS = ("labels", "label_mask", "valid", "index")
_STATIC = ("model", "loss_fn", "mesh", "compute_dtype")
_TRAIN_STATIC = _STATIC + ("skip_nonfinite",)


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_inputs(batch: Mapping[str, Any], dtype) -> dict:
    """Cast the float model inputs (mri, xray, clinical, *_present, …) to ``dtype``;
    labels, label_mask, valid and index keep their dtypes. ``dtype=None``: unchanged."""
    if dtype is None:
        return dict(batch)
    return {k: (v if k in _NO_CAST_KEYS else _cast_floats(v, dtype)) for k, v in batch.items()}


def forward(model, variables, batch, *, train: bool, compute_dtype=None, dropout_rng=None):
    """``model.apply`` with optional mixed precision; outputs are returned as float32.
    Returns ``(outputs, mutated collections)`` (``{}`` in eval mode)."""
    if compute_dtype is not None:
        variables = dict(variables)
        variables["params"] = _cast_floats(variables["params"], compute_dtype)
        batch = cast_inputs(batch, compute_dtype)
    if train:
        outputs, mutated = model.apply(variables, batch, train=True,
                                       rngs={"dropout": dropout_rng},
                                       mutable=["batch_stats"])
    else:
        outputs, mutated = model.apply(variables, batch, train=False, mutable=False), {}
    if compute_dtype is not None:
        outputs = _cast_floats(outputs, jnp.float32)
    return outputs, mutated


def _replicated(tree, mesh: Mesh):
    return jax.lax.with_sharding_constraint(tree, replicated_sharding(mesh))


@functools.partial(jax.jit, static_argnames=_TRAIN_STATIC, donate_argnums=0)
def train_step(state: TrainState, batch, *, model, loss_fn: Callable, mesh: Mesh,
               compute_dtype=None, skip_nonfinite: bool = False):
    """One optimiser update: ``(state, batch) -> (state, metrics)``.

    Args:
      state: replicated ``TrainState``; donated (do not use it after the call).
      batch: dict sharded over ``"data"`` (``mesh.shard_batch``).
      model: flax module, ``apply(variables, batch, train=True, rngs={"dropout": k},
        mutable=["batch_stats"]) -> ({head: (B, …)}, mutated)``.
      loss_fn: ``loss_fn(outputs, batch) -> (scalar loss, aux dict)``, averaging over valid
        (``batch["valid"]``) and observed (``batch["label_mask"]``) entries.
      mesh: the device mesh (static).
      compute_dtype: e.g. ``jnp.bfloat16``: params and float inputs are cast for the forward /
        backward pass; fp32 master params, optimiser state and batch_stats stay float32.
      skip_nonfinite: when the loss or the gradient norm is NaN/Inf, keep params, optimiser
        state and batch_stats unchanged (the step counter still advances).

    Returns:
      ``(new_state, metrics)``: ``loss``, the aux entries (flattened with "/"), ``grad_norm``
      (global L2 norm before clipping), ``lr`` and ``finite`` (1.0 when the loss and the
      gradient norm are finite); replicated float32 scalars.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def compute_loss(params):
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        outputs, mutated = forward(model, variables, batch, train=True,
                                   compute_dtype=compute_dtype, dropout_rng=dropout_rng)
        loss, aux = loss_fn(outputs, batch)
        return loss.astype(jnp.float32), (aux, mutated)

    (loss, (aux, mutated)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    batch_stats = state.batch_stats
    if state.batch_stats:
        batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype),
                                   mutated["batch_stats"], state.batch_stats)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in flatten_metrics(aux).items()}
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["finite"] = (jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])).astype(jnp.float32)
    if state.lr_fn is not None:
        metrics["lr"] = jnp.asarray(state.lr_fn(state.step), jnp.float32)
    if skip_nonfinite:
        keep = metrics["finite"] > 0
        params, opt_state, batch_stats = jax.tree.map(
            lambda new, old: jnp.where(keep, new, old), (params, opt_state, batch_stats),
            (state.params, state.opt_state, state.batch_stats))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return _replicated((new_state, metrics), mesh)


@functools.partial(jax.jit, static_argnames=("model", "mesh", "compute_dtype"))
def eval_step(state: TrainState, batch, *, model, mesh: Mesh, compute_dtype=None):
    """Eval-mode outputs ``{head: (B, …)}`` float32 (no dropout, BatchNorm running averages),
    replicated."""
    outputs, _ = forward(model, state.variables, batch, train=False, compute_dtype=compute_dtype)
    return _replicated(outputs, mesh)


@functools.partial(jax.jit, static_argnames=("model", "mesh", "compute_dtype"))
def predict_step(state: TrainState, batch, *, model, mesh: Mesh, compute_dtype=None):
    """Like ``eval_step`` but returns ``(outputs, index, valid)``, all replicated, so rows and
    their bookkeeping stay aligned across processes."""
    outputs, _ = forward(model, state.variables, batch, train=False, compute_dtype=compute_dtype)
    return _replicated((outputs, batch["index"], batch["valid"]), mesh)


@functools.partial(jax.jit, static_argnames=_STATIC)
def loss_eval_step(state: TrainState, batch, *, model, loss_fn: Callable, mesh: Mesh,
                   compute_dtype=None):
    """Eval-mode ``loss_fn`` and its aux: ``(metrics, number of valid rows)``, replicated."""
    outputs, _ = forward(model, state.variables, batch, train=False, compute_dtype=compute_dtype)
    loss, aux = loss_fn(outputs, batch)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in flatten_metrics(aux).items()}
    metrics["loss"] = jnp.asarray(loss, jnp.float32)
    return _replicated((metrics, jnp.sum(batch["valid"])), mesh)


def make_train_step(model, loss_fn: Callable, mesh: Mesh, *, compute_dtype=None,
                    skip_nonfinite: bool = False):
    """``train_step`` with its static arguments bound: ``step(state, batch)``."""
    return functools.partial(train_step, model=model, loss_fn=loss_fn, mesh=mesh,
                             compute_dtype=compute_dtype, skip_nonfinite=skip_nonfinite)


def make_eval_step(model, mesh: Mesh, *, compute_dtype=None):
    """``eval_step`` with its static arguments bound: ``step(state, batch) -> outputs``."""
    return functools.partial(eval_step, model=model, mesh=mesh, compute_dtype=compute_dtype)


def make_predict_step(model, mesh: Mesh, *, compute_dtype=None):
    """``predict_step`` with its static arguments bound."""
    return functools.partial(predict_step, model=model, mesh=mesh, compute_dtype=compute_dtype)
