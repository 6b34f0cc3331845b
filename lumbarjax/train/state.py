"""Train state (a pytree), the optimiser, and ``create_train_state``.

The state holds arrays only (step, params, batch_stats, opt_state, rng) plus two static
(non-pytree) fields, the optax transformation ``tx`` and the learning-rate schedule
``lr_fn``, so it can be passed through ``jax.jit`` and saved / restored with orbax as one
pytree (static fields are part of the tree structure, not of the checkpoint).
"""

from __future__ import annotations

from typing import Any, Callable

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lumbarjax.errors import ConfigError

__all__ = [
    "TrainState",
    "cfg_get",
    "make_lr_schedule",
    "make_optimizer",
    "create_train_state",
    "OPTIM_DEFAULTS",
]

# Defaults for ``config.optim.*`` (used when a field is absent).
OPTIM_DEFAULTS = {
    "lr": 1e-3,             # peak learning rate after warmup
    "weight_decay": 1e-4,   # decoupled (AdamW); applied to kernels only (ndim > 1)
    "warmup_steps": 0,      # linear warmup 0 -> lr over this many steps
    "end_lr_ratio": 0.0,    # cosine decays to lr * end_lr_ratio at num_steps
    "clip_norm": 1.0,       # global-norm gradient clipping; None / 0 = off
    "frozen": (),           # top-level parameter names (e.g. "mri_encoder") kept fixed
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
}


def cfg_get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config.a.b`` for a ConfigDict / dict / object, or ``default`` when absent or None."""
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, dict) or hasattr(node, "keys"):
            try:
                node = node[part] if part in node else None
            except TypeError:
                node = getattr(node, part, None)
        else:
            node = getattr(node, part, None)
    return default if node is None else node


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


def _optim_value(config, name):
    return cfg_get(config, f"optim.{name}", OPTIM_DEFAULTS[name])


def make_lr_schedule(config, num_steps: int) -> optax.Schedule:
    """Linear warmup (0 -> ``optim.lr`` over ``optim.warmup_steps``) then cosine decay to
    ``lr * optim.end_lr_ratio`` at ``num_steps``."""
    lr = float(_optim_value(config, "lr"))
    warmup = int(_optim_value(config, "warmup_steps"))
    end_ratio = float(_optim_value(config, "end_lr_ratio"))
    num_steps = int(num_steps)
    if lr <= 0:
        raise ConfigError(f"config.optim.lr must be > 0, got {lr}")
    if num_steps < 1:
        raise ConfigError(f"num_steps (config.train.num_steps) must be >= 1, got {num_steps}")
    if not 0 <= warmup < num_steps:
        raise ConfigError(f"config.optim.warmup_steps={warmup} must be in [0, num_steps="
                          f"{num_steps})")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else lr, peak_value=lr, warmup_steps=warmup,
        decay_steps=num_steps, end_value=lr * end_ratio)


def _decay_mask(params):
    """Weight decay on kernels (ndim > 1) only: not on biases, BatchNorm scales/offsets."""
    return jax.tree.map(lambda p: np.ndim(p) > 1, params)


def _frozen_mask(frozen: tuple):
    """Params under the top-level names ``frozen`` -> True (their updates are set to zero)."""
    def mask(params):
        return {k: jax.tree.map(lambda _: k in frozen, v) for k, v in params.items()}
    return mask


def make_optimizer(config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with global-norm clipping and warmup + cosine learning rate.

    Reads ``config.optim.{lr, weight_decay, warmup_steps, clip_norm, end_lr_ratio, b1, b2,
    eps, frozen}`` (defaults in ``OPTIM_DEFAULTS``). ``frozen`` names top-level parameter
    subtrees (e.g. ``("mri_encoder",)`` for a pretrained encoder) that get zero gradients and
    zero updates (no weight decay), so they stay exactly as initialised. Equal settings return
    the very same objects (memoised), so train states built from equal configs have equal tree structures and a
    jitted step compiled for one (e.g. fold 1 of a cross-validation) is reused by the next.

    Returns:
      ``(tx, schedule)``: the optax transformation and the learning-rate schedule.
    """
    make_lr_schedule(config, num_steps)  # validates lr / warmup / num_steps
    clip = _optim_value(config, "clip_norm")
    wd = float(_optim_value(config, "weight_decay"))
    if wd < 0:
        raise ConfigError(f"config.optim.weight_decay must be >= 0, got {wd}")
    if clip and float(clip) <= 0:
        raise ConfigError(f"config.optim.clip_norm must be > 0 or None, got {clip}")
    spec = (
        float(_optim_value(config, "lr")),
        int(_optim_value(config, "warmup_steps")),
        float(_optim_value(config, "end_lr_ratio")),
        int(num_steps),
        float(clip) if clip else None,
        wd,
        float(_optim_value(config, "b1")),
        float(_optim_value(config, "b2")),
        float(_optim_value(config, "eps")),
        tuple(str(k) for k in (_optim_value(config, "frozen") or ())),
    )
    return _optimizer_from_spec(spec)


@functools.lru_cache(maxsize=32)
def _optimizer_from_spec(spec):
    lr, warmup, end_ratio, num_steps, clip, wd, b1, b2, eps, frozen = spec
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else lr, peak_value=lr, warmup_steps=warmup,
        decay_steps=num_steps, end_value=lr * end_ratio)
    freeze = [optax.masked(optax.set_to_zero(), _frozen_mask(frozen))] if frozen else []
    parts = freeze + ([optax.clip_by_global_norm(clip)] if clip else [])
    parts.append(optax.adamw(learning_rate=schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                             mask=_decay_mask))
    return optax.chain(*(parts + freeze)), schedule


def _raw_key(rng) -> jax.Array:
    rng = jnp.asarray(rng) if not isinstance(rng, int) else jax.random.PRNGKey(rng)
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return rng


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
      mesh: device mesh (default ``steps.make_mesh()``); the state is replicated on it.

    Returns:
      ``TrainState`` at step 0.
    """
    from lumbarjax.train.steps import make_mesh, memoize

    if num_steps is None:
        num_steps = cfg_get(config, "train.num_steps")
        if num_steps is None:
            raise ConfigError("config.train.num_steps is missing (needed for the lr schedule)")
    mesh = make_mesh() if mesh is None else mesh
    tx, schedule = make_optimizer(config, num_steps)
    key = _raw_key(rng)
    k_params, k_dropout, k_train = jax.random.split(key, 3)
    batch = jax.tree.map(np.asarray, sample_batch)
    init = memoize("init_state", (model, tx, schedule, mesh),
                   lambda: _build_init(model, tx, schedule, mesh))
    # The same computation on every process (same rng) -> identical replicas.
    return init(batch, k_params, k_dropout, k_train)


def _build_init(model, tx, schedule, mesh):
    from lumbarjax.train.steps import replicated_sharding

    def init(batch, k_params, k_dropout, k_train):
        variables = model.init({"params": k_params, "dropout": k_dropout}, batch, train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=k_train,
            tx=tx,
            lr_fn=schedule,
        )

    return jax.jit(init, out_shardings=replicated_sharding(mesh))
