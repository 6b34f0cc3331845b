"""3D MRI encoders: (B, D, H, W, 1) sagittal T2 volume -> (B, F) features (float32).

D runs across (thick, ~4 mm) sagittal slices, H superior -> inferior, W anterior -> posterior
(CONTRACTS "Coordinates"). Architectures (``arch``), all measured in
benchmarks/studies/encoder_designs/ENCODER_DESIGNS.md (fwd+bwd+Adam on the 2-core CPU):

* "slice2d"  2.5D: a 2D ResNet (patchify stem) on every slice (slices folded into the batch),
             per-slice feature maps aggregated across D by a learned softmax-over-slices
             attention at every (h, w) position, then avg+max spatial pooling.
* "patch3d"  anisotropic 3D ResNet: (pd, p, p) patchify stem (one big matmul), (1,3,3) kernels and
             in-plane-only strides in the early stages, 3x3x3 kernels + isotropic strides later.
* "vit"      ViT: (pd, p, p) patch embedding + fixed 3D sin-cos positions + pre-LN transformer
             blocks (all matmuls), mean-pooled tokens.
* "resnet3d_naive"  reference: 7^3 stride-2 stem + 3^3 max-pool + 3^3 basic blocks.
* "lesion2d" a small plain CNN on every slice at near-full resolution (2x2 patchify, 3x3 convs,
             GroupNorm, two stride-2 stages) with max + mean pooling over slices and positions: a
             local-finding detector (a narrowed canal segment). Trained on ~120 patients'
             outcomes alone it does not find the stenosis reliably (no encoder does); pretrained
             on a graded cohort it does (benchmarks/studies/encoder_designs/ENCODER_DESIGNS.md,
             pipelines.pretrain).

The default is chosen from the measured table (see MRIEncoder.arch).
"""

from __future__ import annotations

import types
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lumbarjax.errors import ConfigError
from lumbarjax.models.conv import Conv2D
from lumbarjax.models.group_norm import GroupNorm
from lumbarjax.models.resnet2d import (BasicBlock, PatchifyStem, ResNet2D, global_pool, norm_layer,
                                       space_to_depth)

Dtype = Any


class NaiveResNet3D(nn.Module):
    """Reference 3D ResNet: 7^3/2 stem, 3^3/2 max-pool, stages width*2**i with 3^3 kernels."""

    stage_sizes: Sequence[int] = (1, 1, 1, 1)
    width: int = 32
    norm: str = "group"
    pool: str = "avg"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        x = nn.Conv(self.width, (7, 7, 7), (2, 2, 2), padding=[(3, 3)] * 3, use_bias=False,
                    dtype=self.dtype, name="stem")(x)
        x = nn.relu(norm_layer(self.norm, self.width, train, self.dtype, name="stem_norm")(x))
        x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), padding=[(1, 1)] * 3)
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                s = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(self.width * 2 ** i, (3, 3, 3), (s, s, s), self.norm, self.dtype,
                               name=f"stage{i}_block{j}")(x, train)
        return global_pool(x, self.pool)


class PatchResNet3D(nn.Module):
    """Anisotropic 3D ResNet with a patchify stem.

    Stem: (depth_patch, patch, patch) space-to-depth + Dense -> width channels.
    Stage i (width * 2**i channels): the first ``inplane_stages`` stages use (1,3,3) kernels and
    (1,2,2) strides (thick slices: mix in-plane first), later stages 3x3x3 kernels and (2,2,2)
    strides (depth stride only while D > 1). Stage 0 has stride 1.
    """

    stage_sizes: Sequence[int] = (1, 1, 1, 1)
    width: int = 32
    patch: int = 4
    depth_patch: int = 2
    inplane_stages: int = 2
    norm: str = "group"
    pool: str = "avgmax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        x = PatchifyStem(self.width, (self.depth_patch, self.patch, self.patch), self.norm, self.dtype,
                         name="stem")(x, train)
        for i, n in enumerate(self.stage_sizes):
            inplane = i < self.inplane_stages
            kernel = (1, 3, 3) if inplane else (3, 3, 3)
            for j in range(n):
                if i > 0 and j == 0:
                    sd = 1 if inplane or x.shape[1] == 1 else 2
                    strides = (sd, 2, 2)
                else:
                    strides = (1, 1, 1)
                x = BasicBlock(self.width * 2 ** i, kernel, strides, self.norm, self.dtype,
                               name=f"stage{i}_block{j}")(x, train)
        return global_pool(x, self.pool)


class SliceAttentionPool(nn.Module):
    """(B, D, h, w, C) -> (B, h, w, C): softmax over slices of a learned per-position score."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        score = nn.Dense(1, dtype=jnp.float32, name="score")(x.astype(jnp.float32))  # (B,D,h,w,1)
        weight = jax.nn.softmax(score, axis=1)
        return jnp.sum(weight * x.astype(jnp.float32), axis=1)


class SliceEncoder(nn.Module):
    """2.5D encoder: shared ResNet2D trunk per slice, attention over slices, spatial avg+max pool.

    The H (superior-inferior) resolution of the map before pooling is H / (patch * 2**(S-1))
    (e.g. 96 / 32 = 3 rows at 4 stages, 96/16 = 6 rows with 3 stages).
    """

    stage_sizes: Sequence[int] = (1, 1, 1)
    width: int = 32
    patch: int = 4
    norm: str = "group"
    pool: str = "avgmax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, d = x.shape[:2]
        trunk = ResNet2D(self.stage_sizes, self.width, "patchify", self.patch, self.norm, "avg", self.dtype,
                         name="slice_trunk")
        fmap = trunk.feature_map(x.reshape((b * d,) + x.shape[2:]), train)
        fmap = fmap.reshape((b, d) + fmap.shape[1:])
        fmap = SliceAttentionPool(self.dtype, name="slice_pool")(fmap)  # (B, h, w, C) float32
        return global_pool(fmap, self.pool)


class LesionCNN(nn.Module):
    """(B, D, H, W, 1) -> (B, 2 * channels[-1]): per-slice plain CNN, max + mean over (D, h, w).

    patch x patch space-to-depth, then one 3x3 conv + GroupNorm + relu per entry of ``channels``;
    every second conv has stride 2 (e.g. 96 x 64 -> 48 x 32 -> 24 x 16 -> 12 x 8 with patch 2 and
    4 convs). Global max pooling keeps the strongest local response wherever along the canal it
    lies; the mean keeps the global context.
    """

    channels: Sequence[int] = (16, 16, 32, 32)
    patch: int = 2
    norm: str = "group"
    dtype: Dtype = jnp.float32
    # per conv: kernel gradient by im2col matmul ("im2col") or XLA's convolution ("xla");
    # a string of one letter per conv, "i" / "x" (same parameters and outputs either way)
    weight_grad: str = "iiii"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, d = x.shape[:2]
        y = x.astype(self.dtype).reshape((b * d,) + x.shape[2:])
        if self.patch > 1:
            y = space_to_depth(y, (self.patch, self.patch))
        for i, c in enumerate(self.channels):
            stride = (2, 2) if i % 2 else (1, 1)
            wg = "im2col" if self.weight_grad[i % len(self.weight_grad)] == "i" else "xla"
            y = Conv2D(int(c), (3, 3), stride, "SAME", wg, self.dtype, name=f"conv{i}")(y)
            # groups of 4 channels, as in the small CNN that generalised (ENCODER_DESIGNS.md), by
            # lumbarjax's GroupNorm (same parameters as flax's; faster for this encoder's step but
            # not for the ResNets', which keep flax's: benchmarks/studies/group_norm/)
            if self.norm == "group" and int(c) % 4 == 0:
                norm = GroupNorm(num_groups=None, group_size=4, dtype=self.dtype, name=f"norm{i}")
            else:
                norm = norm_layer(self.norm, int(c), train, self.dtype, name=f"norm{i}", group_size=4)
            y = nn.relu(norm(y))
        y = y.astype(jnp.float32).reshape((b, d) + y.shape[1:])
        return jnp.concatenate([y.max(axis=(1, 2, 3)), y.mean(axis=(1, 2, 3))], axis=-1)


def sincos_3d(grid: Sequence[int], dim: int) -> np.ndarray:
    """Fixed 3D sin-cos position embedding (prod(grid), dim); dim split over the 3 axes."""
    per_axis = [dim // 3 // 2 * 2] * 3
    per_axis[0] += dim - sum(per_axis)
    embs = []
    coords = np.meshgrid(*[np.arange(g, dtype=np.float64) for g in grid], indexing="ij")
    for c, n in zip(coords, per_axis):
        half = max(n // 2, 1)
        freq = 1.0 / (10000 ** (np.arange(half) / half))
        ang = c.reshape(-1, 1) * freq[None]
        e = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)[:, :n]
        embs.append(e)
    return np.concatenate(embs, axis=1).astype(np.float32)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block of :class:`ViT3D`: (B, N, dim) tokens -> (B, N, dim).

    ``x + MHSA(LayerNorm(x))`` with ``heads`` heads, then ``x + MLP(LayerNorm(x))`` with a GELU
    hidden layer of ``dim * mlp_ratio`` units; no dropout.
    """

    dim: int
    heads: int
    mlp_ratio: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, name="attn")(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
        y = nn.Dense(self.dim * self.mlp_ratio, dtype=self.dtype, name="fc1")(y)
        y = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(nn.gelu(y))
        return x + y


class ViT3D(nn.Module):
    """(B, D, H, W, C) -> (B, dim): (depth_patch, patch, patch) tokens, `depth` transformer blocks."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    patch: int = 16
    depth_patch: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = space_to_depth(x.astype(self.dtype), (self.depth_patch, self.patch, self.patch))
        grid = x.shape[1:4]
        x = nn.Dense(self.dim, dtype=self.dtype, name="embed")(x)
        x = x.reshape(x.shape[0], -1, self.dim) + jnp.asarray(sincos_3d(grid, self.dim), self.dtype)
        for i in range(self.depth):
            x = TransformerBlock(self.dim, self.heads, dtype=self.dtype, name=f"block{i}")(x)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_out")(x)
        return x.astype(jnp.float32).mean(axis=1)


class MRIEncoder(nn.Module):
    """Sagittal MRI volume (B, D, H, W, 1) -> (B, F) float32 features.

    arch: a name in ENCODERS (= ARCHS; default "slice2d", the measured winner —
      benchmarks/studies/encoder_designs/ENCODER_DESIGNS.md).
    width: channels of the first stage (ResNets; "lesion2d" uses (w, w, 2w, 2w)) — ignored by "vit".
    stage_sizes: blocks per stage; None = the arch's default (its ENCODERS entry).
    patch / depth_patch: in-plane / depth patch of patchify stems (None = the arch's default,
      its ENCODERS entry).
    pool: "avg" | "max" | "avgmax" for the ResNets (vit mean-pools tokens).
    """

    arch: str = "slice2d"
    width: int = 32
    stage_sizes: Sequence[int] | None = None
    patch: int | None = None
    depth_patch: int | None = None
    norm: str = "group"
    pool: str = "avgmax"
    vit_dim: int = 128
    vit_depth: int = 4
    vit_heads: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 5:
            raise ConfigError(f"MRIEncoder: expected (B, D, H, W, C) input, got shape {x.shape}")
        if self.arch not in ENCODERS:
            raise ConfigError(f"MRIEncoder.arch: unknown architecture {self.arch!r}; expected one of {ARCHS}")
        build, defaults = ENCODERS[self.arch]
        settings = {f: getattr(self, f) for f in _SETTINGS}
        # a setting left None (or empty) takes the architecture's default from its ENCODERS entry
        settings.update({k: settings[k] or v for k, v in defaults.items()})
        return build(types.SimpleNamespace(**settings), self.arch)(x, train)


# -- the encoder registry: name -> (constructor, the architecture's defaults) ------------------
# Each constructor takes the MRIEncoder's settings (``_SETTINGS``, those left None filled from the
# entry's defaults) and the module name (= the arch, the params subtree). A new encoder is one
# new entry.

_SETTINGS = ("width", "stage_sizes", "patch", "depth_patch", "norm", "pool", "vit_dim", "vit_depth",
             "vit_heads", "dtype")


def _slice2d(s, name):
    return SliceEncoder(tuple(s.stage_sizes), s.width, s.patch, s.norm, s.pool, s.dtype, name=name)


def _patch3d(s, name):
    return PatchResNet3D(tuple(s.stage_sizes), s.width, s.patch, s.depth_patch, 2, s.norm, s.pool, s.dtype,
                         name=name)


def _vit(s, name):
    return ViT3D(s.vit_dim, s.vit_depth, s.vit_heads, s.patch, s.depth_patch, s.dtype, name=name)


def _resnet3d_naive(s, name):
    return NaiveResNet3D(tuple(s.stage_sizes), s.width, s.norm, s.pool, s.dtype, name=name)


def _lesion2d(s, name):
    w = int(s.width)
    return LesionCNN((w, w, 2 * w, 2 * w), s.patch, s.norm, s.dtype, name=name)


ENCODERS: dict[str, tuple[Callable[[Any, str], nn.Module], dict]] = {
    "slice2d": (_slice2d, dict(stage_sizes=(1, 1, 1), patch=4)),
    "patch3d": (_patch3d, dict(stage_sizes=(1, 1, 1, 1), patch=4, depth_patch=2)),
    "vit": (_vit, dict(patch=16, depth_patch=2)),
    "resnet3d_naive": (_resnet3d_naive, dict(stage_sizes=(1, 1, 1, 1))),
    "lesion2d": (_lesion2d, dict(patch=2)),
}
ARCHS = tuple(ENCODERS)


class StenosisGrader(nn.Module):
    """batch["mri"] (B, D, H, W, 1) -> {"grade": (B, 1, K-1)} CORN logits of the stenosis grade.

    The MRI-encoder pretraining model (``lumbarjax.pipelines.pretrain``): the encoder is named
    ``mri_encoder`` exactly as in ``OutcomeModel``, so its parameters can replace the outcome
    model's.
    """

    mri: Mapping
    num_grades: int = 3

    @nn.compact
    def __call__(self, batch: Mapping, train: bool = False) -> dict:
        feats = MRIEncoder(**dict(self.mri), name="mri_encoder")(batch["mri"], train)
        feats = nn.LayerNorm(dtype=jnp.float32, name="ln")(feats.astype(jnp.float32))
        logits = nn.Dense(self.num_grades - 1, dtype=jnp.float32, name="head")(feats)
        return {"grade": logits[:, None, :]}
