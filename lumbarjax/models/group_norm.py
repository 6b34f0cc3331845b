"""Group normalisation for channel-last maps, statistics taken channel by channel first.

Same layer as ``flax.linen.GroupNorm`` (parameters "scale" and "bias", shape (C,), float32; the
same maths: per example and group, var = E[x²] - E[x]² clipped at 0, y = (x - mean) * scale /
sqrt(var + epsilon) + bias), so its parameters and encoder files are interchangeable with
flax's. What differs is the order of the sums: flax reduces x reshaped to (N, ..., G, C/G) over
the positions and the group's channels at once, which XLA:CPU runs with the short group axis
innermost; here the per-channel sums over the positions come first (channels stay the minor,
vectorised axis) and the C/G channel sums of each group after. Only ``LesionCNN`` uses it (its
train step gained; the ResNets' did not, so they keep flax's: benchmarks/studies/group_norm/ and
benchmarks/history/2026-12-03.md). Results agree with flax's to float32 rounding (~1e-6 relative).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumbarjax.errors import ConfigError


class GroupNorm(nn.Module):
    """(N, ..., C) -> (N, ..., C), normalised over the positions (every axis but the first and
    last) and the channels of each group, per example.

    num_groups: groups G (C must be a multiple); ignored when ``group_size`` is given.
    group_size: channels per group (C must be a multiple).
    epsilon: added to the variance.
    dtype: output dtype (None: float32, or the input's if wider); statistics always >= float32.
    """

    num_groups: int | None = 32
    group_size: int | None = None
    epsilon: float = 1e-6
    dtype: Any = None
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, c = x.shape[0], x.shape[-1]
        size = self.group_size or (c // self.num_groups if self.num_groups else 0)
        if not size or c % size or (not self.group_size and c % self.num_groups):
            raise ConfigError(f"GroupNorm {self.name}: {c} channels do not split into "
                              f"num_groups={self.num_groups} / group_size={self.group_size}")
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        bias = self.param("bias", self.bias_init, (c,), jnp.float32)
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        axes = tuple(range(1, x.ndim - 1))
        count = math.prod(x.shape[1:-1]) * size

        def group_mean(v):                       # (N, C) channel sums -> (N, C) group means
            g = v.reshape(n, c // size, size).sum(-1) / count
            return jnp.repeat(g, size, axis=1)

        mean = group_mean(jnp.sum(xf, axes))
        var = jnp.maximum(0.0, group_mean(jnp.sum(jnp.square(xf), axes)) - jnp.square(mean))
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        per_example = (n,) + (1,) * len(axes) + (c,)
        y = (xf - mean.reshape(per_example)) * mul.reshape(per_example) + bias
        return y.astype(self.dtype or jnp.result_type(xf, scale))
