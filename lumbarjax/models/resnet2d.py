"""2D ResNet backbone and the X-ray degeneration grader (ordinal CORN/CORAL head).

Also holds the layers shared with the 3D encoder (norm factory, space-to-depth patchify stem,
N-d basic block) so that 2D and 3D models use the same building blocks.

Calling convention of every full model in lumbarjax.models:
    model.apply(variables, batch, train=bool, rngs={"dropout": key},
                mutable=["batch_stats"] if train else False)
where ``batch`` is the data.pipeline batch dict; the model returns a dict of outputs.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumbarjax.errors import ConfigError
from lumbarjax.models import ordinal
from lumbarjax.models.conv import WEIGHT_GRAD, Conv2D

Dtype = Any


# ----------------------------------------------------------------------------- shared layers
def norm_layer(kind: str, channels: int, train: bool, dtype: Dtype, name: str | None = None,
               zero_init: bool = False, group_size: int | None = None) -> nn.Module:
    """Channel-last normalisation.

    kind: "group" (GroupNorm, up to 8 groups; does not mix examples, so padded valid=0 examples and
    batch size 1 are harmless — the default), "batch" (BatchNorm, collection "batch_stats";
    padded examples DO enter the batch statistics), "layer" (LayerNorm over channels only).
    zero_init: scale initialised to 0 (last norm of a residual branch -> block starts as identity).
    group_size: "group" only — channels per group instead of the default gcd(C, 8) groups
      (ignored when it does not divide C).
    """
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    if kind == "group":
        if group_size and channels % group_size == 0:
            return nn.GroupNorm(num_groups=None, group_size=group_size, dtype=dtype, scale_init=scale_init,
                                name=name)
        return nn.GroupNorm(num_groups=math.gcd(channels, 8), dtype=dtype, scale_init=scale_init, name=name)
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype,
                            scale_init=scale_init, name=name)
    if kind == "layer":
        return nn.LayerNorm(dtype=dtype, scale_init=scale_init, name=name)
    raise ConfigError(f"model norm: unknown norm {kind!r}; expected 'group', 'batch' or 'layer'")


def space_to_depth(x: jax.Array, patch: Sequence[int]) -> jax.Array:
    """(B, *S, C) -> (B, *ceil(S/p), prod(p)*C): non-overlapping patches folded into channels.

    Spatial sizes that are not multiples of the patch are zero-padded at the end.
    """
    patch = tuple(int(p) for p in patch)
    nd = len(patch)
    if x.ndim != nd + 2:
        raise ConfigError(f"space_to_depth: input rank {x.ndim} does not match patch {patch}")
    spatial = x.shape[1:-1]
    pads = [(0, 0)] + [(0, (-s) % p) for s, p in zip(spatial, patch)] + [(0, 0)]
    if any(p[1] for p in pads):
        x = jnp.pad(x, pads)
    b, c = x.shape[0], x.shape[-1]
    grid = [s // p for s, p in zip(x.shape[1:-1], patch)]
    shape = [b]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape + [c])
    # (B, g0, p0, g1, p1, ..., C) -> (B, g0, g1, ..., p0, p1, ..., C)
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1 + 2 * nd]
    x = x.transpose(perm)
    return x.reshape([b] + grid + [math.prod(patch) * c])


class PatchifyStem(nn.Module):
    """Space-to-depth + Dense: a strided 'patch' conv written as one big matmul (fast on XLA CPU)."""

    features: int
    patch: Sequence[int]
    norm: str = "group"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = space_to_depth(x, self.patch)
        x = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="proj")(x)
        x = norm_layer(self.norm, self.features, train, self.dtype, name="norm")(x)
        return nn.relu(x)


class ConvND(nn.Module):
    """Channel-last conv of any rank; a 2D kernel, or a (1, k, k) 3D kernel with depth stride 1
    (depth folded into the batch: same maths), runs as :class:`~lumbarjax.models.conv.Conv2D`,
    whose kernel gradient is an im2col matmul when ``weight_grad="im2col"``."""

    features: int
    kernel: Sequence[int]
    strides: Sequence[int]
    dtype: Dtype = jnp.float32
    weight_grad: str = WEIGHT_GRAD

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, strides = tuple(self.kernel), tuple(self.strides)
        pad = [((k - 1) // 2, k // 2) for k in kernel]
        if len(kernel) == 2:
            return Conv2D(self.features, kernel, strides, pad, self.weight_grad, self.dtype, name="conv")(x)
        if len(kernel) == 3 and kernel[0] == 1 and strides[0] == 1:
            b, d = x.shape[:2]
            conv = Conv2D(self.features, kernel[1:], strides[1:], pad[1:], self.weight_grad, self.dtype,
                          name="conv")
            y = conv(x.reshape((b * d,) + x.shape[2:]))
            return y.reshape((b, d) + y.shape[1:])
        return nn.Conv(self.features, kernel, strides, padding=pad, use_bias=False, dtype=self.dtype,
                       name="conv")(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two k-convs, identity or strided 1x1 shortcut), any spatial rank."""

    features: int
    kernel: Sequence[int]
    strides: Sequence[int]
    norm: str = "group"
    dtype: Dtype = jnp.float32
    weight_grad: str = WEIGHT_GRAD

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        ones = (1,) * len(self.kernel)
        wg = self.weight_grad
        y = ConvND(self.features, self.kernel, self.strides, self.dtype, wg, name="conv1")(x)
        y = nn.relu(norm_layer(self.norm, self.features, train, self.dtype, name="norm1")(y))
        y = ConvND(self.features, self.kernel, ones, self.dtype, wg, name="conv2")(y)
        y = norm_layer(self.norm, self.features, train, self.dtype, name="norm2", zero_init=True)(y)
        if x.shape[-1] != self.features or tuple(self.strides) != ones:
            x = ConvND(self.features, ones, self.strides, self.dtype, wg, name="proj")(x)
            x = norm_layer(self.norm, self.features, train, self.dtype, name="proj_norm")(x)
        return nn.relu(x + y)


def global_pool(x: jax.Array, pool: str) -> jax.Array:
    """(B, *S, C) -> (B, C) ("avg", "max") or (B, 2C) ("avgmax"), in float32."""
    axes = tuple(range(1, x.ndim - 1))
    x = x.astype(jnp.float32)
    if pool == "avg":
        return x.mean(axes)
    if pool == "max":
        return x.max(axes)
    if pool == "avgmax":
        return jnp.concatenate([x.mean(axes), x.max(axes)], axis=-1)
    raise ConfigError(f"model pool: unknown pooling {pool!r}; expected 'avg', 'max' or 'avgmax'")


# ----------------------------------------------------------------------------- 2D ResNet
class ResNet2D(nn.Module):
    """2D ResNet of basic blocks: (B, H, W, C) -> (B, F) pooled features (float32).

    stage_sizes: blocks per stage; stage i has width * 2**i channels and (for i > 0) stride 2.
    stem: "patchify" (patch x patch space-to-depth + Dense, stride = patch, default 4) or "conv7"
      (7x7 stride-2 conv + 3x3 stride-2 conv; overall stride 4, no max-pool).
    F = width * 2**(len(stage_sizes)-1) (x2 for pool="avgmax").
    """

    stage_sizes: Sequence[int] = (1, 1, 1, 1)
    width: int = 16
    stem: str = "patchify"
    patch: int = 4
    norm: str = "group"
    pool: str = "avg"
    dtype: Dtype = jnp.float32
    weight_grad: str = WEIGHT_GRAD   # 3x3 convs' kernel gradient: "im2col" matmul or "xla"

    def feature_map(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(B, H, W, C) -> (B, H/(patch*2**(S-1)), W/…, F) unpooled features (compute dtype)."""
        return self._trunk(x, train)

    @nn.compact
    def _trunk(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        if self.stem == "patchify":
            x = PatchifyStem(self.width, (self.patch, self.patch), self.norm, self.dtype, name="stem")(x, train)
        elif self.stem == "conv7":
            x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                        dtype=self.dtype, name="stem_conv7")(x)
            x = nn.relu(norm_layer(self.norm, self.width, train, self.dtype, name="stem_norm1")(x))
            x = nn.Conv(self.width, (3, 3), (2, 2), padding=[(1, 1), (1, 1)], use_bias=False,
                        dtype=self.dtype, name="stem_conv3")(x)
            x = nn.relu(norm_layer(self.norm, self.width, train, self.dtype, name="stem_norm2")(x))
        else:
            raise ConfigError(f"ResNet2D.stem: unknown stem {self.stem!r}; expected 'patchify' or 'conv7'")
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                s = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(self.width * 2 ** i, (3, 3), (s, s), self.norm, self.dtype,
                               self.weight_grad, name=f"stage{i}_block{j}")(x, train)
        return x

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return global_pool(self._trunk(x, train), self.pool)


# ----------------------------------------------------------------------------- grader
class Grader(nn.Module):
    """X-ray degeneration grader: batch["xray"] (B, H, W, 1) -> {"grade": (B, num_levels, K-1)}.

    Ordinal logits (K = num_grades) for the CORN head (default) or CORAL (head="coral").
    Backbone fields are passed to ResNet2D; dropout acts on the pooled features.
    """

    num_grades: int = 5
    num_levels: int = 1
    head: str = "corn"
    stage_sizes: Sequence[int] = (1, 1, 1, 1)
    width: int = 16
    stem: str = "patchify"
    patch: int = 4
    norm: str = "group"
    pool: str = "avg"
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> dict:
        feats = ResNet2D(self.stage_sizes, self.width, self.stem, self.patch, self.norm, self.pool,
                         self.dtype, name="backbone")(batch["xray"], train)
        feats = nn.Dropout(self.dropout, deterministic=not train)(feats)
        logits = ordinal.OrdinalHead(self.num_grades, self.num_levels, self.head, name="head")(feats)
        return {"grade": logits}


def grader_loss(outputs: dict, batch: dict, head: str = "corn", label_key: str = "grade"):
    """Masked ordinal loss of the grader.

    ``outputs["grade"]``: (B, L, K-1) logits. ``batch["labels"][label_key]``: (B,) or (B, L) grades
    (float or int; NaN allowed where masked); ``batch["label_mask"][label_key]`` same shape;
    ``batch["valid"]`` (B,). Returns (loss scalar, aux dict with loss, count, accuracy, mae) — aux
    metrics are over the valid, labelled entries (0 when there are none).
    """
    loss_fn, _, predict_fn = ordinal.ordinal_fns(head)
    logits = outputs["grade"]
    b, n_levels = logits.shape[:2]
    labels = jnp.asarray(batch["labels"][label_key]).reshape(b, -1)
    mask = jnp.asarray(batch["label_mask"][label_key], jnp.float32).reshape(b, -1)
    if labels.shape[1] != n_levels:
        raise ConfigError(f"grader_loss: labels[{label_key!r}] has {labels.shape[1]} levels but the "
                          f"model predicts {n_levels} (model.num_levels)")
    valid = jnp.asarray(batch.get("valid", jnp.ones((b,))), jnp.float32).reshape(b, 1)
    mask = mask * valid
    labels = jnp.where(mask > 0, jnp.nan_to_num(labels.astype(jnp.float32)), 0.0)
    labels = jnp.round(labels).astype(jnp.int32)
    loss = loss_fn(logits, labels, mask)
    pred = predict_fn(logits)
    count = mask.sum()
    denom = jnp.maximum(count, 1.0)
    aux = {
        "loss": loss,
        "count": count,
        "accuracy": jnp.sum((pred == labels) * mask) / denom,
        "mae": jnp.sum(jnp.abs(pred - labels) * mask) / denom,
    }
    return loss, aux
