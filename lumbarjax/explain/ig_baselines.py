"""Baselines for integrated gradients, and IG averaged over several baselines.

A baseline is a pytree with the structure and shapes of the inputs (leading batch dim ``B``).
Image leaves are those with ``ndim >= 3``: ``(B, H, W, C)`` or ``(B, D, H, W, C)`` — the batch
axis and the last (channel) axis are never blurred. Leaves with ``ndim <= 2`` (clinical vectors
``(B, F)``, scalars ``(B,)``) are "vector" leaves.

Per-leaf parameters (``sigma_vox``, ``sigma``) are a scalar, a per-axis tuple, or — for dict
inputs — a mapping from top-level key to either.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from lumbarjax.errors import ConfigError, LumbarjaxError
from lumbarjax.explain.integrated_gradients import integrated_gradients

__all__ = ["zeros_like", "blurred", "training_mean", "noisy_baselines", "expected_gradients"]

PyTree = Any


def _leaf_param(param, path, what):
    """Pick a leaf's parameter: scalar/tuple as is, Mapping by the leaf's top-level dict key."""
    if isinstance(param, Mapping):
        if not path or not isinstance(path[0], jax.tree_util.DictKey):
            raise ConfigError(f"{what}: a mapping is only allowed for dict inputs")
        key = path[0].key
        if key not in param:
            return None
        return param[key]
    return param


def zeros_like(inputs: PyTree) -> PyTree:
    """All-zero baseline with the structure, shapes and dtypes of ``inputs``."""
    return jax.tree_util.tree_map(jnp.zeros_like, inputs)


def blurred(inputs: PyTree, sigma_vox, *, vector: str = "zeros") -> PyTree:
    """Gaussian-blurred baseline (Sundararajan et al. 2017; Sturmfels et al. 2020).

    Args:
      inputs: pytree of batched arrays.
      sigma_vox: Gaussian standard deviation in voxels (not mm — divide mm by the spacing):
        a scalar (all spatial axes of all image leaves), a tuple with one value per spatial axis
        (``(sd, sh, sw)`` for ``(B, D, H, W, C)``), or a mapping top-level key -> scalar/tuple
        (keys not in the mapping are left unblurred). Separable blur
        (``scipy.ndimage.gaussian_filter``, truncated at 4 sigma, ``mode="nearest"``) over the
        spatial axes only.
      vector: what vector leaves (``ndim <= 2``, e.g. clinical ``(B, F)``) become: ``"zeros"``
        or ``"mean"`` (the mean over the batch of each feature, broadcast to ``(B, F)``; with
        standardised features zeros *is* the training mean).

    Returns:
      pytree like ``inputs`` (float32 where the input was float32).
    """
    if vector not in ("zeros", "mean"):
        raise ConfigError(f"blurred: vector must be 'zeros' or 'mean', got {vector!r}")

    def one(path, x):
        x = np.asarray(x)
        if x.ndim <= 2:
            if vector == "zeros":
                return jnp.zeros_like(x)
            return jnp.broadcast_to(x.mean(axis=0, keepdims=True), x.shape).astype(x.dtype)
        sig = _leaf_param(sigma_vox, path, "blurred")
        if sig is None:
            return jnp.asarray(x)
        n_spatial = x.ndim - 2
        if np.ndim(sig) == 0:
            sig = (float(sig),) * n_spatial
        sig = tuple(float(s) for s in sig)
        if len(sig) != n_spatial or any(s < 0 for s in sig):
            raise ConfigError(
                f"blurred: leaf {jax.tree_util.keystr(path)} of shape {x.shape} needs "
                f"{n_spatial} non-negative sigmas (voxels), got {sig}")
        out = scipy.ndimage.gaussian_filter(x, sigma=(0.0, *sig, 0.0), mode="nearest")
        return jnp.asarray(out.astype(x.dtype))

    return jax.tree_util.tree_map_with_path(one, inputs)


def training_mean(mean_pytree: PyTree, batch_size: int) -> PyTree:
    """Baseline = a per-example mean (e.g. the training-set mean image / feature vector).

    Args:
      mean_pytree: pytree of *unbatched* arrays, e.g. ``{"mri": (D,H,W,1), "clinical": (F,)}``.
      batch_size: ``B``.

    Returns:
      each leaf broadcast to ``(B, *leaf.shape)``.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"training_mean: batch_size must be >= 1, got {batch_size}")
    return jax.tree_util.tree_map(
        lambda m: jnp.broadcast_to(jnp.asarray(m), (int(batch_size), *np.shape(m))), mean_pytree)


def noisy_baselines(baselines: PyTree, *, n_samples: int, sigma, key: jax.Array) -> PyTree:
    """``n_samples`` copies of ``baselines`` plus i.i.d. Gaussian noise (SmoothGrad-style).

    Args:
      baselines: pytree of batched arrays ``(B, ...)``.
      n_samples: number of noisy copies ``S``.
      sigma: noise standard deviation in input units (scalar, or mapping top-level key ->
        scalar; keys not in the mapping get no noise).
      key: ``jax.random`` key.

    Returns:
      pytree with leaves ``(S, B, ...)`` — a stack of full baselines for
      :func:`expected_gradients`.
    """
    if int(n_samples) < 1:
        raise ConfigError(f"noisy_baselines: n_samples must be >= 1, got {n_samples}")
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(baselines)
    sigmas = []
    for path, _ in leaves_with_path:
        s = _leaf_param(sigma, path, "noisy_baselines")
        sigmas.append(0.0 if s is None else float(s))
        if sigmas[-1] < 0:
            raise ConfigError(f"noisy_baselines: sigma for leaf {jax.tree_util.keystr(path)} "
                              f"must be >= 0, got {s}")
    leaves = [jnp.asarray(b) for _, b in leaves_with_path]
    out = _add_noise(leaves, key, int(n_samples), tuple(sigmas))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _add_noise(leaves, key, n_samples, sigmas):
    # One compiled program (eager jax.random ops compile one by one, which is slow on CPU).
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, b, s in zip(keys, leaves, sigmas):
        stacked = jnp.broadcast_to(b, (n_samples, *b.shape))
        if s == 0.0:
            out.append(stacked)
        else:
            # Drawn flat and reshaped: XLA:CPU compiles high-rank threefry normals ~10x slower.
            noise = jax.random.normal(k, (stacked.size,), dtype=b.dtype).reshape(stacked.shape)
            out.append(stacked + s * noise)
    return out


def _draw_baselines(inputs, baseline_samples, n_samples, key):
    """Return a list of S full baselines (pytrees of (B, ...) leaves)."""
    in_leaves = jax.tree_util.tree_leaves(inputs)
    ref_leaves = jax.tree_util.tree_leaves(baseline_samples)
    treedef = jax.tree_util.tree_structure(inputs)
    if jax.tree_util.tree_structure(baseline_samples) != treedef:
        raise LumbarjaxError(
            "expected_gradients: baseline_samples structure "
            f"{jax.tree_util.tree_structure(baseline_samples)} does not match inputs {treedef}")
    batch = int(in_leaves[0].shape[0])
    stacked = [r.ndim == x.ndim + 1 and r.shape[1:] == x.shape
               for x, r in zip(in_leaves, ref_leaves)]
    reference = [r.ndim == x.ndim and r.shape[1:] == x.shape[1:]
                 for x, r in zip(in_leaves, ref_leaves)]
    if all(stacked):
        total = int(ref_leaves[0].shape[0])
        if len({int(r.shape[0]) for r in ref_leaves}) != 1:
            raise LumbarjaxError("expected_gradients: stacked baselines differ in their leading S")
        s = total if n_samples is None else int(n_samples)
        if not 1 <= s <= total:
            raise ConfigError(
                f"expected_gradients: n_samples={n_samples} but {total} stacked baselines given")
        return [jax.tree_util.tree_unflatten(treedef, [r[i] for r in ref_leaves])
                for i in range(s)]
    if all(reference):
        n_ref = {int(r.shape[0]) for r in ref_leaves}
        if len(n_ref) != 1:
            raise LumbarjaxError(
                f"expected_gradients: reference-set leaves have different sizes N: {n_ref}")
        if n_samples is None or key is None:
            raise ConfigError(
                "expected_gradients: drawing from a reference set needs n_samples and key")
        idx = jax.random.randint(key, (int(n_samples), batch), 0, n_ref.pop())
        return [jax.tree_util.tree_unflatten(treedef, [r[idx[i]] for r in ref_leaves])
                for i in range(int(n_samples))]
    shapes = [(x.shape, r.shape) for x, r in zip(in_leaves, ref_leaves)]
    raise LumbarjaxError(
        "expected_gradients: each baseline_samples leaf must be a reference set (N, ...example "
        f"shape) or a stack of baselines (S, B, ...); got (input, baseline) shapes {shapes}")


def expected_gradients(fn: Callable, inputs: PyTree, baseline_samples: PyTree, *,
                       n_samples: int | None = None, key: jax.Array | None = None,
                       steps: int = 64, method: str = "gausslegendre",
                       chunk_size: int | None = None, static: PyTree | None = None,
                       chunk_loop: str = "auto"):
    """IG averaged over several baselines (expected gradients, Erion et al. 2021, with the path
    integral done by quadrature instead of a random alpha; or SmoothGrad-style noisy baselines).

    Args:
      fn, steps, method, chunk_size, static, chunk_loop: as in :func:`integrated_gradients`.
      inputs: pytree of batched arrays ``(B, ...)``.
      baseline_samples: either
        * a reference set: every leaf ``(N, *example_shape)`` (e.g. N training examples);
          ``n_samples`` baselines are drawn with replacement, independently per example, with
          ``key``; or
        * a stack of full baselines: every leaf ``(S, B, ...)`` (e.g. from
          :func:`noisy_baselines`); the first ``n_samples`` (default all S) are used.
      n_samples: number of baselines averaged over.
      key: ``jax.random`` key (reference-set mode).

    Returns:
      ``(attributions, delta)``: attributions averaged over the baselines (structure of
      ``inputs``) and the mean per-example completeness error (B,). Completeness of the average:
      ``sum(attributions) = fn(inputs) - mean_s fn(baseline_s) + delta``.
    """
    inputs = jax.tree_util.tree_map(jnp.asarray, inputs)
    baseline_samples = jax.tree_util.tree_map(jnp.asarray, baseline_samples)
    draws = _draw_baselines(inputs, baseline_samples, n_samples, key)
    acc, delta_acc = None, None
    for base in draws:
        attr, delta = integrated_gradients(fn, inputs, base, steps=steps, method=method,
                                           chunk_size=chunk_size, static=static,
                                           chunk_loop=chunk_loop)
        acc = attr if acc is None else jax.tree_util.tree_map(jnp.add, acc, attr)
        delta_acc = delta if delta_acc is None else delta_acc + delta
    s = len(draws)
    return jax.tree_util.tree_map(lambda a: a / s, acc), delta_acc / s
