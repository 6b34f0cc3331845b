"""models.group_norm: the same layer as flax's GroupNorm, statistics summed per channel first."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumbarjax.errors import ConfigError
from lumbarjax.models.group_norm import GroupNorm


@pytest.mark.parametrize("shape,kwargs", [
    ((3, 12, 10, 16), {"num_groups": None, "group_size": 4}),   # lesion2d's groups of 4
    ((3, 12, 10, 16), {"num_groups": 8}),                       # norm_layer's gcd(C, 8) groups
    ((2, 4, 6, 5, 8), {"num_groups": 2}),                       # a 3D map (N, D, H, W, C)
    ((2, 7, 8), {"num_groups": 8}),                             # one group per channel
])
def test_group_norm_equals_flax_output_and_gradients(shape, kwargs):
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=shape) * 3 + 2, jnp.float32)   # mean far from 0 (E[x²]-E[x]²)
    ct = jnp.asarray(r.normal(size=shape), jnp.float32)
    ours, theirs = GroupNorm(**kwargs), nn.GroupNorm(**kwargs)
    v = theirs.init(jax.random.PRNGKey(0), x)
    v = jax.tree.map(lambda a: a + jnp.asarray(r.normal(size=a.shape), jnp.float32), v)  # not 1 / 0
    assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(v)
    np.testing.assert_allclose(ours.apply(v, x), theirs.apply(v, x), rtol=2e-5, atol=2e-5)
    loss = lambda m: (lambda p, a: jnp.sum(m.apply(p, a) * ct))
    g_ours = jax.grad(loss(ours), argnums=(0, 1))(v, x)
    g_theirs = jax.grad(loss(theirs), argnums=(0, 1))(v, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_group_norm_normalises_each_example_and_group_alone():
    r = np.random.default_rng(1)
    x = jnp.asarray(r.normal(size=(2, 5, 5, 4)), jnp.float32)
    x = x.at[1].multiply(100.0).at[..., 2:].add(7.0)            # example 1 and group 1 shifted
    y = np.asarray(GroupNorm(num_groups=2).init_with_output(jax.random.PRNGKey(0), x)[0])
    for i in range(2):
        for grp in (slice(0, 2), slice(2, 4)):
            np.testing.assert_allclose(y[i, ..., grp].mean(), 0.0, atol=1e-5)
            np.testing.assert_allclose(y[i, ..., grp].std(), 1.0, rtol=1e-4)


def test_group_norm_keeps_bfloat16_output_with_float32_statistics():
    x = jnp.full((2, 4, 4, 8), 100.0, jnp.bfloat16).at[:, 0].set(101.0)   # exact in bf16
    y = GroupNorm(num_groups=4, dtype=jnp.bfloat16).init_with_output(jax.random.PRNGKey(0), x)[0]
    assert y.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    assert float(y[0, 0, 0, 0]) > 1.0 and float(y[0, 1, 0, 0]) < 0.0   # the 101 row above the mean


def test_group_norm_names_a_channel_count_that_does_not_split():
    with pytest.raises(ConfigError, match=r"GroupNorm .*6 channels.*num_groups=4"):
        GroupNorm(num_groups=4, name="norm1").init(jax.random.PRNGKey(0), jnp.ones((1, 3, 3, 6)))
    with pytest.raises(ConfigError, match=r"6 channels.*group_size=4"):
        GroupNorm(num_groups=None, group_size=4).init(jax.random.PRNGKey(0), jnp.ones((1, 3, 3, 6)))


def test_lesion2d_features_equal_those_with_flaxs_group_norm(monkeypatch):
    """An encoder file written with flax's GroupNorm in LesionCNN (before lumbarjax's) loads into
    the same parameter tree and gives the same features."""
    from lumbarjax.models import encoder3d
    x = jnp.asarray(np.random.default_rng(2).random((2, 3, 16, 12, 1)), jnp.float32)
    net = encoder3d.LesionCNN(channels=(8, 8, 12, 12))
    v = net.init(jax.random.PRNGKey(0), x)
    ours = net.apply(v, x)
    calls = []

    class FlaxGroupNorm(nn.GroupNorm):
        def __call__(self, y):
            calls.append(y.shape)
            return super().__call__(y)

    monkeypatch.setattr(encoder3d, "GroupNorm", FlaxGroupNorm)
    v_flax = net.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, v_flax) == jax.tree.map(jnp.shape, v)
    assert set(v["params"]) >= {"norm0", "norm3"} and set(v["params"]["norm0"]) == {"scale", "bias"}
    assert ours.shape == (2, 24)
    np.testing.assert_allclose(net.apply(v, x), ours, rtol=1e-5, atol=1e-5)
    assert len(calls) == 8                                   # flax's ran: 4 norms, init + apply
