"""Train state (a pytree), the optimiser, and ``create_train_state``.

The state holds arrays only (step, params, batch_stats, opt_state, rng) plus two static
(non-pytree) fields, the optax transformation ``tx`` and the learning-rate schedule ``lr_fn``,
so it can be passed through ``jax.jit`` and saved / restored with orbax as one pytree (static
fields are part of the tree structure, not of the checkpoint). Every setting is read from the
config (``configs/default.py`` holds the defaults); a missing one is a ``ConfigError``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lumbarjax.errors import ConfigError
from lumbarjax.settings import setting
from lumbarjax.train.mesh import make_mesh, replicated_sharding

__all__ = ["TrainState", "make_optimizer", "create_train_state"]

OPTIM_FIELDS = ("lr", "weight_decay", "warmup_steps", "end_lr_ratio", "clip_norm", "frozen",
                "b1", "b2", "eps", "decay_on")
DECAY_ON = ("kernels", "all")


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: () int32, number of optimiser updates applied.
      params: model parameters (fp32 pytree).
      batch_stats: BatchNorm running statistics (``{}`` when the model has none).
      opt_state: optax state.
      rng: (2,) uint32 raw PRNG key; the dropout key of step ``s`` is ``fold_in(rng, s)``.
      tx: the optax transformation (static).
      lr_fn: the learning-rate schedule ``step -> lr`` (static; logging only).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)
    lr_fn: Callable[[Any], Any] = flax.struct.field(pytree_node=False, default=None)

    @property
    def variables(self) -> dict:
        """``{"params": …, "batch_stats": …}`` for ``model.apply`` (no empty collections)."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def _decay_mask(params):
    """Weight decay on kernels (ndim > 1) only: not on biases, norm scales/offsets."""
    return jax.tree.map(lambda p: np.ndim(p) > 1, params)


def make_optimizer(config, num_steps: int, *,
                   warmup_cap: int | None = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with global-norm clipping and a linear-warmup + cosine learning rate: the one
    optimiser builder of every trainer (task models, landmark networks, the level localiser).

    Reads ``config.optim.{lr, weight_decay, warmup_steps, end_lr_ratio, clip_norm, frozen, b1,
    b2, eps, decay_on}``: warmup 0 -> ``lr`` over ``warmup_steps`` (at most ``warmup_cap``
    steps when given: short runs warm up over a fraction of the run), cosine decay to
    ``lr * end_lr_ratio`` at ``num_steps``; decoupled weight decay on kernels only
    (``decay_on="kernels"``) or on every parameter (``"all"``); ``clip_norm`` None/0 = off.
    ``frozen`` names top-level parameter subtrees (e.g. ``("mri_encoder",)`` for a pretrained
    encoder) that ``optax.multi_transform`` gives zero updates and no optimiser state, so they
    stay exactly as initialised. Equal settings return the very same objects (memoised), so
    states built from equal configs have equal tree structures and a compiled step is reused.

    Returns:
      ``(tx, schedule)``: the optax transformation and the learning-rate schedule.
    """
    unknown = sorted(set(setting(config, "optim")) - set(OPTIM_FIELDS))
    if unknown:
        raise ConfigError(f"config.optim: unknown key(s) {unknown}; known keys: {sorted(OPTIM_FIELDS)}")
    spec = {k: setting(config, f"optim.{k}") for k in OPTIM_FIELDS}
    lr, warmup, wd, clip = float(spec["lr"]), int(spec["warmup_steps"]), float(spec["weight_decay"]), spec["clip_norm"]
    if warmup_cap is not None:
        warmup = min(warmup, int(warmup_cap))
    if spec["decay_on"] not in DECAY_ON:
        raise ConfigError(f"config.optim.decay_on must be one of {DECAY_ON}, got {spec['decay_on']!r}")
    if lr <= 0:
        raise ConfigError(f"config.optim.lr must be > 0, got {lr}")
    if int(num_steps) < 1:
        raise ConfigError(f"num_steps (config.train.num_steps) must be >= 1, got {num_steps}")
    if not 0 <= warmup < int(num_steps):
        raise ConfigError(f"config.optim.warmup_steps={warmup} must be in [0, num_steps={num_steps})")
    if wd < 0:
        raise ConfigError(f"config.optim.weight_decay must be >= 0, got {wd}")
    if clip and float(clip) <= 0:
        raise ConfigError(f"config.optim.clip_norm must be > 0 or None, got {clip}")
    return _optimizer(lr, warmup, float(spec["end_lr_ratio"]), int(num_steps),
                      float(clip) if clip else None, wd, float(spec["b1"]), float(spec["b2"]),
                      float(spec["eps"]), tuple(sorted(str(k) for k in (spec["frozen"] or ()))),
                      str(spec["decay_on"]))


@functools.lru_cache(maxsize=32)
def _optimizer(lr, warmup, end_ratio, num_steps, clip, wd, b1, b2, eps, frozen, decay_on):
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else lr, peak_value=lr, warmup_steps=warmup,
        decay_steps=num_steps, end_value=lr * end_ratio)
    parts = [optax.clip_by_global_norm(clip)] if clip else []
    parts.append(optax.adamw(learning_rate=schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                             mask=_decay_mask if decay_on == "kernels" else None))
    tx = optax.chain(*parts)
    if frozen:
        def labels(params):
            return {k: jax.tree.map(lambda _, k=k: "frozen" if k in frozen else "train", v)
                    for k, v in params.items()}
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


def _raw_key(rng) -> jax.Array:
    rng = jnp.asarray(rng) if not isinstance(rng, int) else jax.random.PRNGKey(rng)
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return rng


@functools.partial(jax.jit, static_argnames=("model", "tx", "lr_fn", "mesh"))
def _init_state(batch, k_params, k_dropout, k_train, *, model, tx, lr_fn, mesh):
    variables = model.init({"params": k_params, "dropout": k_dropout}, batch, train=False)
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                       rng=k_train, tx=tx, lr_fn=lr_fn)
    return jax.lax.with_sharding_constraint(state, replicated_sharding(mesh))


def create_train_state(rng, model, sample_batch, config, *, num_steps: int | None = None,
                       mesh=None) -> TrainState:
    """Initialise the model and optimiser, replicated over ``mesh``.

    Args:
      rng: PRNG key (raw or typed) or int seed. Split into init-params, init-dropout and the
        training key stored in the state.
      model: flax linen module; ``model.init(rngs, batch, train=False)``.
      sample_batch: a batch dict (numpy, leading B; any B) used for shapes only.
      config: reads ``config.train.num_steps`` (unless ``num_steps`` is given) and
        ``config.optim.*`` (see ``make_optimizer``).
      num_steps: total optimiser steps (length of the cosine schedule).
      mesh: device mesh (default ``mesh.make_mesh()``); the state is replicated on it.

    Returns:
      ``TrainState`` at step 0.
    """
    if num_steps is None:
        num_steps = setting(config, "train.num_steps")
    mesh = make_mesh() if mesh is None else mesh
    tx, schedule = make_optimizer(config, int(num_steps))
    k_params, k_dropout, k_train = jax.random.split(_raw_key(rng), 3)
    batch = jax.tree.map(np.asarray, sample_batch)
    # The same computation on every process (same rng) -> identical replicas.
    return _init_state(batch, k_params, k_dropout, k_train, model=model, tx=tx, lr_fn=schedule,
                       mesh=mesh)
