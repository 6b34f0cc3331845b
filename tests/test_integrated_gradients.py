"""Integrated gradients: closed forms, quadrature convergence, completeness, pytrees, chunking."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumbarjax.errors import ConfigError, LumbarjaxError
from lumbarjax.explain import (METHODS, blurred, expected_gradients, integrated_gradients,
                               noisy_baselines, quadrature, training_mean, zeros_like)

RNG = np.random.default_rng(0)
B, N = 3, 5
A = jnp.asarray(RNG.uniform(0.5, 1.5, size=(N,)), jnp.float32)
X = jnp.asarray(RNG.uniform(-1.0, 1.0, size=(B, N)), jnp.float32)
XB = jnp.asarray(RNG.uniform(-1.0, 1.0, size=(B, N)), jnp.float32)


def quad_fn(x):
    return jnp.sum(A * x ** 2, axis=1)


def lin_fn(x):
    return x @ A


def exp_fn(x):
    return jnp.sum(jnp.exp(A * x), axis=1)


def prod_fn(x):
    return jnp.prod(x, axis=1)


# ---------------------------------------------------------------- quadrature rules

@pytest.mark.parametrize("method", METHODS)
def test_quadrature_weights_sum_to_one_and_nodes_in_unit_interval(method):
    alphas, weights = quadrature(method, 7)
    assert alphas.shape == weights.shape == (7,)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    assert alphas.min() >= 0.0 and alphas.max() <= 1.0


def test_quadrature_nodes_exact():
    np.testing.assert_allclose(quadrature("riemann_left", 4)[0], [0, .25, .5, .75])
    np.testing.assert_allclose(quadrature("riemann_right", 4)[0], [.25, .5, .75, 1.])
    np.testing.assert_allclose(quadrature("riemann_middle", 4)[0], [.125, .375, .625, .875])
    a, w = quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(a, [0, .25, .5, .75, 1.])
    np.testing.assert_allclose(w, [.125, .25, .25, .25, .125])
    a, w = quadrature("gausslegendre", 2)
    np.testing.assert_allclose(a, [0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3)])
    np.testing.assert_allclose(w, [0.5, 0.5])


def test_bad_method_and_steps_raise():
    with pytest.raises(ConfigError, match="unknown method"):
        integrated_gradients(lin_fn, X, method="simpson")
    with pytest.raises(ConfigError, match="steps"):
        integrated_gradients(lin_fn, X, steps=0)
    with pytest.raises(ConfigError, match="steps >= 2"):
        integrated_gradients(lin_fn, X, steps=1, method="riemann_trapezoid")
    with pytest.raises(LumbarjaxError, match="one scalar per example"):
        integrated_gradients(lambda x: x, X)
    with pytest.raises(ConfigError, match="chunk_loop"):
        integrated_gradients(lin_fn, X, chunk_size=1, chunk_loop="while")
    with pytest.raises(LumbarjaxError, match="baseline shape"):
        integrated_gradients(lin_fn, X, XB[:, :2])


# ---------------------------------------------------------------- closed forms

@pytest.mark.parametrize("method", METHODS)
def test_linear_exact_for_every_rule(method):
    attr, delta = integrated_gradients(lin_fn, X, XB, steps=3, method=method)
    np.testing.assert_allclose(attr, A * (X - XB), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("method,steps", [("gausslegendre", 1), ("riemann_middle", 1),
                                          ("riemann_trapezoid", 2)])
def test_quadratic_exact_with_few_steps(method, steps):
    # The integrand dF/dx along the straight path is linear in alpha: GL (1 node), midpoint and
    # trapezoid are exact.
    attr, delta = integrated_gradients(quad_fn, X, XB, steps=steps, method=method)
    np.testing.assert_allclose(attr, A * (X ** 2 - XB ** 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("method", ["riemann_left", "riemann_right"])
def test_quadratic_left_right_error_is_exactly_half_step(method):
    # For a linear integrand g(a) = 2 A (x' + a d) d the left/right sums err by -/+ (g(1)-g(0))/(2n)
    # = -/+ A d^2 / n; check the closed form of the error and that it shrinks like 1/n.
    truth = A * (X ** 2 - XB ** 2)
    sign = -1.0 if method == "riemann_left" else 1.0
    for n in (4, 16, 64):
        attr, _ = integrated_gradients(quad_fn, X, XB, steps=n, method=method)
        np.testing.assert_allclose(attr - truth, sign * A * (X - XB) ** 2 / n, atol=2e-5)


def test_product_closed_form_zero_baseline():
    # F = prod_i x_i, baseline 0: dF/dx_i (a x) x_i = a^(n-1) prod(x), so IG_i = prod(x)/n.
    x = jnp.asarray(RNG.uniform(0.5, 1.5, size=(B, 4)), jnp.float32)
    attr, delta = integrated_gradients(prod_fn, x, steps=2, method="gausslegendre")
    expected = jnp.prod(x, axis=1, keepdims=True) / 4 * jnp.ones_like(x)
    np.testing.assert_allclose(attr, expected, rtol=1e-5)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


def test_exp_closed_form_gausslegendre():
    attr, delta = integrated_gradients(exp_fn, X, XB, steps=8, method="gausslegendre")
    np.testing.assert_allclose(attr, jnp.exp(A * X) - jnp.exp(A * XB), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("method,order", [("riemann_left", 1), ("riemann_right", 1),
                                          ("riemann_middle", 2), ("riemann_trapezoid", 2)])
def test_riemann_convergence_orders(method, order):
    truth = np.asarray(jnp.exp(A * X) - jnp.exp(A * XB), np.float64)
    errs = []
    for n in (4, 8, 16):
        attr, _ = integrated_gradients(exp_fn, X, XB, steps=n, method=method)
        errs.append(np.max(np.abs(np.asarray(attr, np.float64) - truth)))
    # Doubling n divides the error by ~2^order (trapezoid's n-1 intervals: slightly more).
    for e_coarse, e_fine in zip(errs, errs[1:]):
        ratio = e_coarse / e_fine
        assert 2 ** order * 0.75 < ratio < 2 ** order * 1.6, (method, errs)


# ---------------------------------------------------------------- structure, batching, chunks

def _tree_fn(x):
    return (jnp.sum(jnp.tanh(x["mri"]), axis=(1, 2, 3, 4))
            + jnp.sum(x["xray"] ** 2, axis=(1, 2, 3)) * 0.1
            + jnp.sum(jnp.sin(x["clinical"]), axis=1))


def _tree_inputs(batch=2):
    # numpy, not jax.random: eager jax.random ops each cost a compile
    rng = np.random.default_rng(batch)
    return {"mri": jnp.asarray(rng.normal(size=(batch, 3, 4, 4, 1)), jnp.float32),
            "xray": jnp.asarray(rng.normal(size=(batch, 5, 5, 1)), jnp.float32),
            "clinical": jnp.asarray(rng.normal(size=(batch, 6)), jnp.float32)}


def test_pytree_attributions_keep_structure_and_complete():
    x = _tree_inputs()
    attr, delta = integrated_gradients(_tree_fn, x, steps=16)
    assert set(attr) == {"mri", "xray", "clinical"}
    for k in x:
        assert attr[k].shape == x[k].shape and attr[k].dtype == x[k].dtype
    assert delta.shape == (2,)
    np.testing.assert_allclose(delta, 0.0, atol=1e-4)
    # the clinical part is separable: sin(x) - sin(0)
    np.testing.assert_allclose(attr["clinical"], jnp.sin(x["clinical"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk,loop", [(1, "scan"), (5, "scan"), (5, "python"),
                                        (16, "python"), (100, "scan"), (5, "unroll"),
                                        (1, "auto"), (3, "auto")])
def test_chunking_matches_unchunked(chunk, loop):
    x = _tree_inputs()
    ref, dref = integrated_gradients(_tree_fn, x, steps=16, method="riemann_middle")
    got, dgot = integrated_gradients(_tree_fn, x, steps=16, method="riemann_middle",
                                     chunk_size=chunk, chunk_loop=loop)
    for k in x:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dgot, dref, atol=1e-5)


def test_batched_equals_one_at_a_time():
    x = _tree_inputs(batch=3)
    base = jax.tree_util.tree_map(lambda a: 0.3 * a[::-1], x)
    attr, delta = integrated_gradients(_tree_fn, x, base, steps=5, method="riemann_left")
    for b in range(3):
        xb = jax.tree_util.tree_map(lambda a: a[b:b + 1], x)
        bb = jax.tree_util.tree_map(lambda a: a[b:b + 1], base)
        a1, d1 = integrated_gradients(_tree_fn, xb, bb, steps=5, method="riemann_left")
        np.testing.assert_allclose(d1[0], delta[b], rtol=1e-4, atol=1e-6)
        for k in x:
            np.testing.assert_allclose(a1[k][0], attr[k][b], rtol=1e-5, atol=1e-6)
    # riemann_left with 5 steps on a non-polynomial fn is inexact: delta is a real error, != 0
    assert float(jnp.max(jnp.abs(delta))) > 1e-3


def test_static_leaves_are_not_attributed():
    x = _tree_inputs()
    present = jnp.asarray([1.0, 0.0])

    def fn(inp, static):
        return _tree_fn(inp) * static["mri_present"]

    attr, delta = integrated_gradients(fn, x, steps=8, static={"mri_present": present})
    assert set(attr) == set(x)
    np.testing.assert_allclose(attr["mri"][1], 0.0)
    np.testing.assert_allclose(delta, 0.0, atol=1e-4)


# ---------------------------------------------------------------- baselines

def test_zeros_and_blurred_shapes():
    x = _tree_inputs()
    z = zeros_like(x)
    assert all(z[k].shape == x[k].shape and float(jnp.abs(z[k]).max()) == 0 for k in x)
    bl = blurred(x, 1.0)
    for k in x:
        assert bl[k].shape == x[k].shape and bl[k].dtype == x[k].dtype
    np.testing.assert_allclose(bl["clinical"], 0.0)
    # blurring reduces variance, keeps the mean (nearest-edge mode: approximately)
    assert float(jnp.std(bl["xray"])) < float(jnp.std(x["xray"]))
    # batch and channel axes are not mixed: a constant image per example stays constant
    const = {"img": jnp.stack([jnp.full((6, 6, 1), 2.0), jnp.full((6, 6, 1), -1.0)])}
    np.testing.assert_allclose(blurred(const, 2.0)["img"], const["img"], rtol=1e-6)
    bm = blurred(x, {"mri": (0.0, 1.0, 1.0), "xray": 0.5}, vector="mean")
    np.testing.assert_allclose(bm["clinical"][0], x["clinical"].mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="sigmas"):
        blurred(x, {"mri": (1.0, 1.0)})


def test_training_mean_broadcast():
    m = training_mean({"mri": jnp.ones((3, 4, 4, 1)), "clinical": jnp.arange(6.0)}, 2)
    assert m["mri"].shape == (2, 3, 4, 4, 1) and m["clinical"].shape == (2, 6)
    np.testing.assert_allclose(m["clinical"][1], np.arange(6.0))


def test_expected_gradients_average_of_ig():
    x = _tree_inputs()
    stack = noisy_baselines(zeros_like(x), n_samples=3, sigma=0.2, key=jax.random.key(3))
    assert stack["mri"].shape == (3, *x["mri"].shape)
    attr, delta = expected_gradients(_tree_fn, x, stack, steps=8)
    manual = [integrated_gradients(_tree_fn, x, jax.tree_util.tree_map(lambda s: s[i], stack),
                                   steps=8) for i in range(3)]
    for k in x:
        np.testing.assert_allclose(attr[k], sum(m[0][k] for m in manual) / 3, rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(delta, sum(m[1] for m in manual) / 3, atol=1e-6)
    # completeness of the average: sum(attr) = F(x) - mean_s F(x'_s) + delta
    total = sum(jnp.sum(a.reshape(2, -1), 1) for a in jax.tree_util.tree_leaves(attr))
    f_base = sum(_tree_fn(jax.tree_util.tree_map(lambda s: s[i], stack)) for i in range(3)) / 3
    np.testing.assert_allclose(total, _tree_fn(x) - f_base + delta, rtol=1e-4, atol=1e-4)


def test_expected_gradients_reference_set_linear():
    # For a linear fn, IG over baseline r is A (x - r): the average is A (x - mean of the draws).
    ref = jnp.asarray(RNG.normal(size=(10, N)), jnp.float32)
    attr, delta = expected_gradients(lin_fn, X, ref, n_samples=4, key=jax.random.key(0), steps=2)
    idx = jax.random.randint(jax.random.key(0), (4, B), 0, 10)
    np.testing.assert_allclose(attr, A * (X - ref[idx].mean(0)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)
    with pytest.raises(ConfigError, match="n_samples and key"):
        expected_gradients(lin_fn, X, ref, steps=2)


# ---------------------------------------------------------------- a real (tiny) flax CNN

class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3, 3), strides=2)(x["mri"])
        x = nn.gelu(x)
        x = nn.Conv(8, (3, 3, 3))(x)
        x = nn.gelu(x)
        x = jnp.mean(x, axis=(1, 2, 3))
        return nn.Dense(1)(x)[:, 0]


def test_flax_cnn_completeness_64_gausslegendre():
    model = TinyCNN()
    x = {"mri": jnp.asarray(RNG.normal(size=(2, 4, 8, 8, 1)), jnp.float32)}
    # random params from numpy (eager / jitted flax init compiles slowly on a loaded CPU)
    shapes = jax.eval_shape(model.init, jax.random.key(1), x)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(RNG.normal(0.0, 0.5, size=s.shape), jnp.float32), shapes)

    @jax.jit
    def fn(inp, p):
        return model.apply(p, inp)

    attr, delta = integrated_gradients(fn, x, steps=64, static=params, chunk_size=16)
    f_diff = fn(x, params) - fn(zeros_like(x), params)
    assert attr["mri"].shape == (2, 4, 8, 8, 1)
    assert float(jnp.min(jnp.abs(f_diff))) > 1e-3  # the test is not vacuous
    np.testing.assert_allclose(delta, 0.0, atol=1e-4 + 1e-3 * float(jnp.max(jnp.abs(f_diff))))


class _WideCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Conv(32, (3, 3))(x))
        y = nn.relu(nn.Conv(32, (3, 3))(y))
        return nn.Dense(1)(y.mean(axis=(1, 2)))[:, 0]


@pytest.mark.parametrize("loop", ["unroll", "scan"])
def test_chunked_program_memory_is_bounded_by_chunk(loop):
    """One compiled program; its temporary buffers scale with chunk_size, not steps."""
    model = _WideCNN()
    x = jnp.asarray(RNG.normal(size=(1, 32, 32, 1)), jnp.float32)
    params = model.init(jax.random.key(0), x)

    def fn(v, p):
        return model.apply(p, v)

    def temp_bytes(chunk):
        prog = jax.jit(lambda v: integrated_gradients(fn, v, steps=32, chunk_size=chunk,
                                                      static=params, chunk_loop=loop)[0])
        return prog.lower(x).compile().memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(None), temp_bytes(4)
    # 32 nodes at once hold 32 activation sets; chunks of 4 hold ~4 (plus the accumulator)
    assert chunked < 0.35 * full, (chunked, full)


def test_the_xray_film_baseline_is_the_film_blurred():
    """config.explain's "blurred" baseline blurs the film by explain.xray_blur_sigma_px (not a
    black film: a GroupNorm grader jumps next to 0 and IG then misses most of the output) and
    the MRI by blur_sigma_vox; clinical vectors go to zeros."""
    import scipy.ndimage
    from configs import default
    from lumbarjax.explain.heatmaps import ig_baseline
    cfg = default.get_config().explain
    rng = np.random.default_rng(0)
    film = rng.random((1, 32, 24, 1)).astype(np.float32)
    base = ig_baseline({"xray": film, "clinical": np.ones((1, 3), np.float32)}, cfg)
    want = scipy.ndimage.gaussian_filter(film, sigma=(0, cfg.xray_blur_sigma_px, cfg.xray_blur_sigma_px, 0),
                                         mode="nearest")
    np.testing.assert_allclose(np.asarray(base["xray"]), want, rtol=1e-6)
    assert np.asarray(base["xray"]).std() > 0 and not np.asarray(base["clinical"]).any()
    assert not np.asarray(ig_baseline({"xray": film}, cfg, baseline="zeros")["xray"]).any()
