"""2D convolution whose kernel gradient is one im2col matmul.

On XLA:CPU the backward-filter convolution can be slower than an im2col matmul at the small
channel counts this library runs (4-64 channels on 12x8 to 48x32 maps), and which is faster
depends on the shape, so the kernel gradient is chosen per conv (``weight_grad``). The forward
and the input gradient stay XLA's convolution; only the kernel gradient changes, and only its
summation order (the maths is the same). Measurements: benchmarks/studies/conv_parts/ and
benchmarks/history/ (2026-12-01, 2026-12-02).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumbarjax.errors import ConfigError

Pads = tuple  # ((top, bottom), (left, right)) in pixels
# Default kernel gradient of ResNet2D / BasicBlock / ConvND (the grader, slice2d): XLA's, since the
# im2col matmul lost on their stride-1 16-channel convs and gave their whole train steps no gain
# (benchmarks/history/2026-12-02.md); lesion2d sets its own, per conv.
WEIGHT_GRAD = "xla"


def same_pads(spatial, kernel, stride) -> Pads:
    """XLA's "SAME" padding of an (H, W) map for a (kh, kw) kernel and (sh, sw) stride."""
    return tuple(tuple(p) for p in jax.lax.padtype_to_pads(spatial, kernel, stride, "SAME"))


def patches(x: jax.Array, kernel, stride, out_hw, pads: Pads) -> jax.Array:
    """(N, H, W, C) -> (N, h, w, kh*kw*C): the input window of every output position (im2col by
    kh*kw strided slices; (i, j, c) order = the HWIO kernel's flattening)."""
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1)


def conv2d(x: jax.Array, kernel: jax.Array, stride: tuple, pads: Pads) -> jax.Array:
    """(N, H, W, Cin) x (kh, kw, Cin, Cout) -> (N, h, w, Cout), no bias: XLA's convolution."""
    return jax.lax.conv_general_dilated(x, kernel, stride, pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_im2col_dw(x: jax.Array, kernel: jax.Array, stride: tuple, pads: Pads) -> jax.Array:
    """:func:`conv2d` (same forward, same input gradient) with the kernel gradient computed as
    ``(kh*kw*Cin, N*h*w) @ (N*h*w, Cout)`` from the im2col patches and the output gradient."""
    return conv2d(x, kernel, stride, pads)


def _fwd(x, kernel, stride, pads):
    return conv2d(x, kernel, stride, pads), (x, kernel)


def _bwd(stride, pads, res, dy):
    x, kernel = res
    _, vjp_x = jax.vjp(lambda v: conv2d(v, kernel, stride, pads), x)
    (dx,) = vjp_x(dy)
    kh, kw, _, cout = kernel.shape
    p = patches(x, (kh, kw), stride, dy.shape[1:3], pads)
    dw = jnp.dot(p.reshape(-1, p.shape[-1]).T, dy.reshape(-1, cout),
                 preferred_element_type=jnp.float32)
    return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


conv2d_im2col_dw.defvjp(_fwd, _bwd)


class Conv2D(nn.Module):
    """Drop-in for ``nn.Conv(features, kernel, strides, padding, use_bias=False)`` on NHWC input:
    the same parameter ("kernel", HWIO, lecun-normal, float32), the same output (XLA's
    convolution), and, with ``weight_grad="im2col"``, the kernel gradient of
    :func:`conv2d_im2col_dw`. ``padding``: "SAME" or ((top, bottom), (left, right))."""

    features: int
    kernel: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    weight_grad: str = "im2col"   # "im2col" | "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_shape, strides = tuple(self.kernel), tuple(self.strides)
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            kernel_shape + (x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        pads = (same_pads(x.shape[1:3], kernel_shape, strides) if self.padding == "SAME"
                else tuple(tuple(p) for p in self.padding))
        if self.weight_grad == "im2col":
            return conv2d_im2col_dw(x, kernel, strides, pads)
        if self.weight_grad == "xla":
            return conv2d(x, kernel, strides, pads)
        raise ConfigError(f"conv weight_grad: expected 'im2col' or 'xla', got {self.weight_grad!r}")
