"""Landmark regression on radiographs: a small U-Net that outputs one heat map per point and
reads the point off it by a spatial soft-argmax (integral regression, Sun et al. ECCV 2018).

Two uses on the lateral lumbar film (lumbarjax.data.xray_levels):

* the **disc finder**: the whole film (e.g. 160 x 160 at ~1.6 mm/px) -> the 5 disc centres
  L1L2 … L5S1 (``num_points=5``);
* the **endplate refiner**: a crop around one disc at ~0.75 mm/px -> the 4 corners
  (A_u, P_u, A_l, P_l) of the disc's two endplates (``num_points=4``), from which
  ``data.xray_indices`` measures the disc height index and listhesis.

Input ``x``: (B, H, W) or (B, H, W, 1) float32, intensities ~[0, 1]. Output: (B, P, 2) point
coordinates (row, col) in input pixels (0-based pixel centres). The decoder stops at
``out_stride``; the soft-argmax is over that grid, so sub-pixel positions are expressed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class _Stage(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (3, 3), strides=(self.stride, self.stride), padding="SAME")(x)
        x = nn.relu(nn.GroupNorm(num_groups=math.gcd(8, self.features))(x))
        x = nn.Conv(self.features, (3, 3), padding="SAME")(x)
        return nn.relu(nn.GroupNorm(num_groups=math.gcd(8, self.features))(x))


def soft_argmax(logits: jax.Array, stride: int) -> jax.Array:
    """(B, h, w, P) heat-map logits -> (B, P, 2) expected (row, col) in input pixels of a grid
    downsampled by ``stride`` (cell (i, j) centred at input pixel stride·i + (stride − 1)/2)."""
    b, h, w, p = logits.shape
    prob = jax.nn.softmax(logits.reshape(b, h * w, p).astype(jnp.float32), axis=1).reshape(b, h, w, p)
    rows = jnp.arange(h, dtype=jnp.float32) * stride + (stride - 1) / 2.0
    cols = jnp.arange(w, dtype=jnp.float32) * stride + (stride - 1) / 2.0
    r = jnp.einsum("bhwp,h->bp", prob, rows)
    c = jnp.einsum("bhwp,w->bp", prob, cols)
    return jnp.stack([r, c], axis=-1)


class LandmarkNet(nn.Module):
    """U-Net encoder (stride 2 per stage after the first) + decoder back to ``out_stride``.

    widths: channels per encoder stage; the first stage has stride ``stem_stride``.
    """
    num_points: int
    widths: Sequence[int] = (16, 24, 32, 48)
    stem_stride: int = 2
    out_stride: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim == 3:
            x = x[..., None]
        skips, stride = [], 1
        for i, w in enumerate(self.widths):
            s = self.stem_stride if i == 0 else 2
            x = _Stage(w, s)(x)
            stride *= s
            skips.append((stride, x))
        for skip_stride, skip in reversed(skips[:-1]):
            if stride <= self.out_stride:
                break
            x = jax.image.resize(x, (x.shape[0], skip.shape[1], skip.shape[2], x.shape[3]), "bilinear")
            x = jnp.concatenate([x, skip], axis=-1)
            x = _Stage(skip.shape[-1], 1)(x)
            stride = skip_stride
        logits = nn.Conv(self.num_points, (1, 1))(x)
        return soft_argmax(logits, stride)


def landmark_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean Euclidean distance (input pixels) over the points with ``mask`` 1 (B, P)."""
    d = jnp.sqrt(jnp.sum((pred - target) ** 2, axis=-1) + 1e-6)
    if mask is None:
        return jnp.mean(d)
    return jnp.sum(d * mask) / jnp.maximum(jnp.sum(mask), 1.0)


__all__ = ["LandmarkNet", "landmark_loss", "soft_argmax"]
