"""Device mesh, batch sharding and the jitted train / eval steps.

Data parallelism is plain ``jax.jit`` over a 1-D ``Mesh`` with a ``"data"`` axis: the batch
is sharded along its leading axis (``P("data")``) and the train state is replicated
(``P()``). ``jit`` sees the *global* batch, so a loss averaged over the batch is averaged
over all devices (and hosts) and a sharded step computes the same numbers as an unsharded
one. The same code runs on one CPU, N forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), GPUs and many hosts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lumbarjax.errors import ConfigError
from lumbarjax.train.state import TrainState

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "batch_sharding",
    "replicated_sharding",
    "shard_batch",
    "cast_inputs",
    "make_train_step",
    "make_eval_step",
    "make_predict_step",
]

DATA_AXIS = "data"

# Batch keys that are targets / bookkeeping and never cast to the compute dtype.
_NO_CAST_KEYS = ("labels", "label_mask", "valid", "index")


_MEMO: "OrderedDict[tuple, Any]" = OrderedDict()
_MEMO_SIZE = 64


def _key(obj) -> Any:
    """``obj`` itself when hashable (flax modules hash by their fields), else its id."""
    try:
        hash(obj)
        return obj
    except TypeError:
        return ("__id__", id(obj))


def memoize(kind: str, parts: tuple, build: Callable[[], Any]) -> Any:
    """Return the jitted function built for ``(kind, *parts)`` (LRU of 64).

    Building the same step twice (cross-validation folds, a resumed run, repeated
    ``predict`` calls) then reuses one ``jax.jit`` object and its compiled executables
    instead of compiling again. ``parts`` are keyed by value when hashable (flax modules,
    meshes, dtypes) and by identity otherwise (the objects are kept alive with the entry).
    """
    key = (kind,) + tuple(_key(p) for p in parts)
    hit = _MEMO.get(key)
    if hit is None:
        hit = (parts, build())
        _MEMO[key] = hit
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    else:
        _MEMO.move_to_end(key)
    return hit[1]


def make_mesh(devices=None) -> Mesh:
    """1-D mesh with axis ``"data"`` over ``devices`` (default: all global devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (the train state)."""
    return NamedSharding(mesh, P())


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
    """Host-local numpy batch -> global ``jax.Array`` batch sharded over ``"data"``.

    With P processes each holding ``B_local`` rows, the global batch has
    ``B = P * B_local`` rows (process ``p``'s rows land on its own devices).

    Raises:
      ConfigError: when the global batch size is not divisible by the number of devices,
        or the leaves disagree on ``B``.
    """
    leaves, treedef = jax.tree.flatten(batch)
    if not leaves:
        raise ConfigError("shard_batch: empty batch")
    arrays = []
    sizes = set()
    for path, leaf in jax.tree.flatten_with_path(batch)[0]:
        a = np.asarray(leaf)
        if a.dtype == object or a.dtype.kind in "USO":
            raise ConfigError(f"shard_batch: batch[{jax.tree_util.keystr(path)}] has dtype "
                              f"{a.dtype}; only numeric arrays can go to devices (no ids/text)")
        if a.ndim == 0:
            raise ConfigError(f"shard_batch: batch[{jax.tree_util.keystr(path)}] is a scalar; "
                              "every batch entry needs a leading batch axis B")
        sizes.add(a.shape[0])
        arrays.append(a)
    if len(sizes) != 1:
        raise ConfigError(f"shard_batch: batch entries disagree on the batch size: {sorted(sizes)}")
    local_b = sizes.pop()
    global_b = local_b * jax.process_count()
    n_dev = mesh.size
    if global_b % n_dev:
        raise ConfigError(
            f"batch size {global_b} (= {local_b} per process x {jax.process_count()} "
            f"processes) is not divisible by the number of devices {n_dev} on mesh axis "
            f"'{DATA_AXIS}'; use a batch size that is a multiple of {n_dev}"
        )
    sharding = batch_sharding(mesh)
    out = [jax.make_array_from_process_local_data(sharding, a) for a in arrays]
    return jax.tree.unflatten(treedef, out)


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_inputs(batch: Mapping[str, Any], dtype) -> dict:
    """Cast the float model inputs (mri, xray, clinical, *_present, …) to ``dtype``;
    labels, label_mask, valid and index keep their dtypes. ``dtype=None``: unchanged."""
    if dtype is None:
        return dict(batch)
    return {k: (v if k in _NO_CAST_KEYS else _cast_floats(v, dtype)) for k, v in batch.items()}


def _flatten_aux(aux: Mapping[str, Any], prefix: str = "") -> dict:
    out = {}
    for k, v in aux.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten_aux(v, name + "/"))
        else:
            out[name] = v
    return out


def _forward(model, variables, batch, *, train, compute_dtype, dropout_rng=None):
    """model.apply with optional mixed precision; outputs are returned as float32."""
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


def make_train_step(model, loss_fn: Callable, mesh: Mesh, *, compute_dtype=None):
    """Build the jitted ``train_step(state, batch) -> (state, metrics)``.

    Args:
      model: flax module, ``apply(variables, batch, train=True, rngs={"dropout": k},
        mutable=["batch_stats"]) -> ({head: (B, …)}, mutated)``.
      loss_fn: ``loss_fn(outputs, batch) -> (scalar loss, aux dict of scalars)``; averages
        over valid (``batch["valid"]``) and observed (``batch["label_mask"]``) entries.
      mesh: from ``make_mesh``; batch sharded over ``"data"``, state replicated.
      compute_dtype: e.g. ``jnp.bfloat16``: params and float inputs are cast for the
        forward/backward pass; the fp32 master params, optimiser state and batch_stats
        stay float32; outputs are cast back to float32 before the loss.

    Returns:
      A ``jax.jit`` function. ``state`` is donated (its buffers are reused: do not use the
      state passed in after the call). ``metrics``: ``loss``, the aux entries (nested dicts
      flattened with "/"), ``grad_norm`` (global L2 norm before clipping) and ``lr`` (the
      learning rate of this update); replicated scalars.
    """
    return memoize("train_step", (model, loss_fn, mesh, compute_dtype),
                   lambda: _build_train_step(model, loss_fn, mesh, compute_dtype))


def _build_train_step(model, loss_fn, mesh, compute_dtype):
    repl = replicated_sharding(mesh)
    data = batch_sharding(mesh)

    def train_step(state: TrainState, batch):
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def compute_loss(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            outputs, mutated = _forward(model, variables, batch, train=True,
                                        compute_dtype=compute_dtype, dropout_rng=dropout_rng)
            loss, aux = loss_fn(outputs, batch)
            return loss.astype(jnp.float32), (aux, mutated)

        (loss, (aux, mutated)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        batch_stats = state.batch_stats
        if state.batch_stats:
            new_bs = mutated["batch_stats"]
            batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_bs,
                                       state.batch_stats)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in _flatten_aux(aux).items()}
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.tree.norm(grads)
        if state.lr_fn is not None:
            metrics["lr"] = jnp.asarray(state.lr_fn(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return jax.jit(train_step, in_shardings=(repl, data), out_shardings=(repl, repl),
                   donate_argnums=0)


def make_eval_step(model, mesh: Mesh, *, compute_dtype=None):
    """Build the jitted ``eval_step(state, batch) -> outputs`` (eval mode: no dropout,
    BatchNorm running averages). ``outputs`` ({head: (B, …)} float32) are replicated so
    every process can read them whole."""
    return memoize("eval_step", (model, mesh, compute_dtype),
                   lambda: _build_eval_step(model, mesh, compute_dtype, with_rows=False))


def make_predict_step(model, mesh: Mesh, *, compute_dtype=None):
    """Like ``make_eval_step`` but returns ``(outputs, index, valid)``, all replicated, so
    rows and their bookkeeping stay aligned across processes."""
    return memoize("predict_step", (model, mesh, compute_dtype),
                   lambda: _build_eval_step(model, mesh, compute_dtype, with_rows=True))


def _build_eval_step(model, mesh, compute_dtype, *, with_rows: bool):
    repl = replicated_sharding(mesh)
    data = batch_sharding(mesh)

    def eval_step(state: TrainState, batch):
        outputs, _ = _forward(model, state.variables, batch, train=False,
                              compute_dtype=compute_dtype)
        return (outputs, batch["index"], batch["valid"]) if with_rows else outputs

    return jax.jit(eval_step, in_shardings=(repl, data), out_shardings=repl)
