"""Ordinal regression heads and losses: CORN (default) and CORAL.

K ordinal grades 0..K-1 are predicted with K-1 binary tasks "is y > k?".

* CORN (Shi, Cao & Raschka 2021, "Deep neural networks for rank-consistent ordinal regression
  based on conditional probabilities"): task k is trained only on examples with y >= k (the
  conditional training subset) and predicts P(y > k | y > k-1); the unconditional
  P(y > k) = prod_{j<=k} P(y > j | y > j-1) is monotone by construction.
* CORAL (Cao, Mirjalili & Raschka 2020): one shared weight vector + K-1 biases, every task
  trained on every example with target 1[y > k].

Shapes: logits (..., K-1) float, labels (...) int grade in [0, K-1], mask (...) float/bool
(1 = label present). Every loss is a masked mean; with no valid entries it is exactly 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def bce_with_logits(logits: jax.Array, targets: jax.Array, pos_weight=1.0) -> jax.Array:
    """Elementwise binary cross-entropy from logits, numerically stable (log-sigmoid);
    ``pos_weight`` scales the positive term (e.g. n_neg / n_pos of the training fold)."""
    return -(pos_weight * targets * jax.nn.log_sigmoid(logits)
             + (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def _task_targets(logits: jax.Array, labels: jax.Array):
    """(targets 1[y>k], conditional-subset indicator 1[y>=k]) with shape of logits (..., K-1)."""
    k = jnp.arange(logits.shape[-1])
    y = jnp.asarray(labels).astype(jnp.int32)[..., None]
    return (y > k).astype(jnp.float32), (y >= k).astype(jnp.float32)


def _masked_sum_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    total = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(total, 1.0)


def corn_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """CORN loss: BCE of task k over its conditional subset {y >= k}, summed over tasks and
    divided by the total size of all subsets (as in the reference implementation).

    Args:
      logits: (..., K-1) conditional logits.
      labels: (...) int grades in [0, K-1] (values at masked positions are ignored).
      mask: (...) 1 where the label is present; None = all present.
    Returns: scalar float32; 0.0 (no NaN) when nothing is valid. Masked positions get exactly
      zero gradient.
    """
    logits = logits.astype(jnp.float32)
    targets, subset = _task_targets(logits, labels)
    m = jnp.ones(logits.shape[:-1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    weights = subset * m[..., None]
    # double where: NaN/inf logits at masked positions never reach the value or the gradient
    safe = jnp.where(weights > 0, logits, 0.0)
    bce = jnp.where(weights > 0, bce_with_logits(safe, targets), 0.0)
    return _masked_sum_mean(bce, weights)


def corn_cumprobs(logits: jax.Array) -> jax.Array:
    """(..., K-1) logits -> (..., K-1) unconditional P(y > k), monotone non-increasing in k."""
    return jnp.cumprod(jax.nn.sigmoid(logits.astype(jnp.float32)), axis=-1)


def _cum_to_class_probs(cum: jax.Array) -> jax.Array:
    ones = jnp.ones(cum.shape[:-1] + (1,), cum.dtype)
    zeros = jnp.zeros(cum.shape[:-1] + (1,), cum.dtype)
    upper = jnp.concatenate([ones, cum], axis=-1)   # P(y > k-1) for k = 0..K-1
    lower = jnp.concatenate([cum, zeros], axis=-1)  # P(y > k)
    return upper - lower


def corn_probs(logits: jax.Array) -> jax.Array:
    """(..., K-1) CORN logits -> (..., K) class probabilities (sum to 1, all >= 0)."""
    return _cum_to_class_probs(corn_cumprobs(logits))


def corn_predict(logits: jax.Array) -> jax.Array:
    """(..., K-1) CORN logits -> (...) int32 grade = #{k : P(y > k) > 0.5}."""
    return jnp.sum(corn_cumprobs(logits) > 0.5, axis=-1).astype(jnp.int32)


def coral_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """CORAL loss: mean BCE over all K-1 tasks with targets 1[y > k], masked mean over examples."""
    logits = logits.astype(jnp.float32)
    targets, _ = _task_targets(logits, labels)
    m = jnp.ones(logits.shape[:-1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    weights = jnp.broadcast_to(m[..., None], logits.shape)
    safe = jnp.where(weights > 0, logits, 0.0)
    bce = jnp.where(weights > 0, bce_with_logits(safe, targets), 0.0)
    return _masked_sum_mean(bce, weights)


def coral_probs(logits: jax.Array) -> jax.Array:
    """(..., K-1) CORAL logits -> (..., K) class probs (cumulative sigmoids, sorted to be monotone)."""
    cum = jax.nn.sigmoid(logits.astype(jnp.float32))
    cum = jax.lax.cummin(cum, axis=cum.ndim - 1)  # enforce P(y>k) non-increasing
    return _cum_to_class_probs(cum)


def coral_predict(logits: jax.Array) -> jax.Array:
    """(..., K-1) CORAL logits -> (...) int32 grade = #{k : sigmoid(logit_k) > 0.5}."""
    return jnp.sum(jax.nn.sigmoid(logits.astype(jnp.float32)) > 0.5, axis=-1).astype(jnp.int32)


ORDINAL_FNS = {
    "corn": (corn_loss, corn_probs, corn_predict),
    "coral": (coral_loss, coral_probs, coral_predict),
}


def ordinal_fns(kind: str):
    """Return (loss, probs, predict) for "corn" or "coral"."""
    from lumbarjax.errors import ConfigError

    if kind not in ORDINAL_FNS:
        raise ConfigError(f"model.head: unknown ordinal head {kind!r}; expected one of {sorted(ORDINAL_FNS)}")
    return ORDINAL_FNS[kind]


class OrdinalHead(nn.Module):
    """Features (B, F) -> ordinal logits (B, num_levels, K-1), computed in float32.

    kind="corn": an independent Dense per task (K-1 outputs per level).
    kind="coral": one shared weight vector per level + K-1 biases (rank consistency).
    """

    num_grades: int = 5
    num_levels: int = 1
    kind: str = "corn"

    @nn.compact
    def __call__(self, feats: jax.Array) -> jax.Array:
        feats = feats.astype(jnp.float32)
        km1 = self.num_grades - 1
        b = feats.shape[0]
        if self.kind == "corn":
            out = nn.Dense(self.num_levels * km1, dtype=jnp.float32, name="corn")(feats)
            return out.reshape(b, self.num_levels, km1)
        if self.kind == "coral":
            score = nn.Dense(self.num_levels, use_bias=False, dtype=jnp.float32, name="coral_w")(feats)
            init_bias = jnp.linspace(1.0, -1.0, km1)  # ordered initial thresholds
            bias = self.param("coral_b", lambda _k, s: jnp.broadcast_to(init_bias, s).astype(jnp.float32),
                              (self.num_levels, km1))
            return score[:, :, None] + bias[None]
        ordinal_fns(self.kind)  # raises ConfigError
        raise AssertionError
