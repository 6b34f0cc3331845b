"""models.conv: XLA's convolution with the kernel gradient as one im2col matmul."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumbarjax.errors import ConfigError
from lumbarjax.models.conv import Conv2D, conv2d, conv2d_im2col_dw, same_pads


@pytest.mark.parametrize("shape,kernel,stride,pads", [
    ((3, 12, 10, 4), (3, 3), (1, 1), "SAME"),
    ((3, 12, 10, 4), (3, 3), (2, 2), "SAME"),            # SAME on even maps pads (0, 1)
    ((3, 12, 10, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ConvND's explicit padding
    ((2, 9, 7, 3), (1, 1), (2, 2), ((0, 0), (0, 0))),    # the 1x1 projection shortcut
])
def test_im2col_kernel_gradient_equals_xlas(shape, kernel, stride, pads):
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=shape), jnp.float32)
    k = jnp.asarray(r.normal(size=kernel + (shape[-1], 5)), jnp.float32)
    pads = same_pads(shape[1:3], kernel, stride) if pads == "SAME" else pads
    y = conv2d(x, k, stride, pads)
    ct = jnp.asarray(r.normal(size=y.shape), jnp.float32)
    np.testing.assert_array_equal(conv2d_im2col_dw(x, k, stride, pads), y)
    g_ref = jax.grad(lambda a, b: jnp.sum(conv2d(a, b, stride, pads) * ct), argnums=(0, 1))(x, k)
    g = jax.grad(lambda a, b: jnp.sum(conv2d_im2col_dw(a, b, stride, pads) * ct), argnums=(0, 1))(x, k)
    np.testing.assert_array_equal(g[0], g_ref[0])                   # XLA's input gradient
    np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-5, atol=1e-5)  # same sum, other order


def test_conv2d_module_is_a_drop_in_for_flax_conv():
    import flax.linen as nn
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 6, 3)), jnp.float32)
    ref = nn.Conv(4, (3, 3), (2, 2), padding=[(1, 1), (1, 1)], use_bias=False)
    params = ref.init(jax.random.key(0), x)
    for wg in ("im2col", "xla"):
        mine = Conv2D(4, (3, 3), (2, 2), ((1, 1), (1, 1)), wg)
        assert jax.tree.map(np.shape, mine.init(jax.random.key(0), x)) == jax.tree.map(np.shape, params)
        np.testing.assert_allclose(mine.apply(params, x), ref.apply(params, x), atol=1e-6)
    with pytest.raises(ConfigError, match="weight_grad: expected 'im2col' or 'xla', got 'torch'"):
        Conv2D(4, weight_grad="torch").init(jax.random.key(0), x)
