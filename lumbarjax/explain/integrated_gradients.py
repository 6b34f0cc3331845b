"""Integrated gradients (Sundararajan et al., ICML 2017) for pytrees of batched inputs.

For a model output ``F`` (one scalar per example), an input ``x`` and a baseline ``x'``, the
attribution of input element ``i`` is

    IG_i = (x_i - x'_i) * integral_0^1 dF/dx_i (x' + a (x - x')) da
         ~ (x_i - x'_i) * sum_k w_k dF/dx_i (x' + a_k (x - x'))

with quadrature nodes ``a_k`` and weights ``w_k`` on [0, 1] (:func:`quadrature`). Completeness
says that the attributions of all elements of all leaves add up to ``F(x) - F(x')``; the error
of that sum (quadrature error plus float round-off) is returned per example as ``delta``.

Assumptions
-----------
* ``fn`` maps a pytree of batched inputs (leading ``B`` in every leaf) to ``(B,)`` — any head:
  a logit, a probability, a VAS prediction.
* Examples are independent: ``fn``'s output for example ``b`` depends only on example ``b``'s
  inputs. The per-example gradients are taken as ``grad(lambda x: fn(x).sum())``, which is only
  correct under that assumption. A model that mixes examples (BatchNorm in *train* mode,
  attention across the batch) gives wrong attributions: call models in eval mode.
* Leaves that must not be attributed (presence flags, masks, model parameters) are kept out of
  ``inputs``: either close over them in ``fn`` or pass them as ``static`` — then ``fn`` is called
  as ``fn(inputs, static)``. Passing them via ``static`` lets the compiled function be reused
  across patients (closed-over arrays are baked into the compiled program as constants, and a
  fresh closure per call means a fresh compile).

Cost and memory
---------------
One call evaluates ``steps`` forward+backward passes of the whole batch, vectorised with
``jax.vmap`` over the quadrature nodes, in **one compiled program** (``jax.jit``; no host round
trip between steps). Without ``chunk_size`` all nodes are evaluated at once (memory ~ ``steps``
x one fwd+bwd); with ``chunk_size=c`` the nodes are processed ``c`` at a time and the weighted
gradient sum is accumulated, so the peak memory is ~ ``c`` x one fwd+bwd whatever ``steps`` is
(256 steps on a full volume fit). How the chunks are sequenced is ``chunk_loop``: by default
(``"auto"``) written out one after another in the program, each chunk depending on the previous sum
(up to ``MAX_UNROLL`` chunks; a ``lax.scan`` beyond); measured against the floor (one batched
fwd+bwd of ``steps`` points) in benchmarks/history/2026-12-01.md.
Compiled functions are cached per ``fn`` object (keep passing the same ``fn``); inside that,
``jax.jit`` compiles once per (input shapes/dtypes, steps, chunk_size) — the quadrature nodes and
weights are runtime arguments, so switching ``method`` does not recompile.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lumbarjax.errors import ConfigError, LumbarjaxError

__all__ = ["METHODS", "CHUNK_LOOPS", "MAX_UNROLL", "quadrature", "integrated_gradients",
           "clear_cache", "chunked_nodes", "compiled_programs"]

PyTree = Any

CHUNK_LOOPS = ("auto", "unroll", "scan", "python")
# "auto" unrolls up to this many chunks (compile time grows with the count), scans beyond.
MAX_UNROLL = 16
METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alphas`` (steps,) and weights (steps,) of a quadrature rule on [0, 1].

    Every rule uses exactly ``steps`` gradient evaluations and its weights sum to 1:

    * ``riemann_left``:   a_k = k/n,        k = 0..n-1, w_k = 1/n          (error O(1/n))
    * ``riemann_right``:  a_k = k/n,        k = 1..n,   w_k = 1/n          (error O(1/n))
    * ``riemann_middle``: a_k = (k + 1/2)/n, k = 0..n-1, w_k = 1/n         (error O(1/n^2))
    * ``riemann_trapezoid``: ``steps`` nodes including both ends, a_k = k/(n-1), k = 0..n-1,
      i.e. n-1 intervals; w_k = 1/(n-1) inside, 1/(2(n-1)) at the two ends (error O(1/n^2);
      needs ``steps >= 2``).
    * ``gausslegendre``: ``numpy.polynomial.legendre.leggauss(n)`` mapped from [-1, 1] to
      [0, 1]: a_k = (x_k + 1)/2, w_k = w'_k/2; exact for integrands that are polynomials of
      degree <= 2n - 1 in a (so IG of a polynomial F of degree <= 2n is exact).

    Computed in float64; cast by the caller.
    """
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"integrated_gradients: steps must be a positive int, got {steps!r}")
    n = int(steps)
    if method == "riemann_left":
        alphas = np.arange(n, dtype=np.float64) / n
        weights = np.full(n, 1.0 / n)
    elif method == "riemann_right":
        alphas = np.arange(1, n + 1, dtype=np.float64) / n
        weights = np.full(n, 1.0 / n)
    elif method == "riemann_middle":
        alphas = (np.arange(n, dtype=np.float64) + 0.5) / n
        weights = np.full(n, 1.0 / n)
    elif method == "riemann_trapezoid":
        if n < 2:
            raise ConfigError(
                f"integrated_gradients: method 'riemann_trapezoid' needs steps >= 2, got {n}")
        alphas = np.arange(n, dtype=np.float64) / (n - 1)
        weights = np.full(n, 1.0 / (n - 1))
        weights[0] = weights[-1] = 0.5 / (n - 1)
    elif method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        alphas = (x + 1.0) / 2.0
        weights = w / 2.0
    else:
        raise ConfigError(
            f"integrated_gradients: unknown method {method!r}; expected one of {METHODS}")
    return alphas, weights


def _batch_size(inputs: PyTree, what: str) -> int:
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves:
        raise LumbarjaxError(f"integrated_gradients: {what} has no array leaves")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) >= 1 else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = jax.tree_util.tree_map(np.shape, inputs)
        raise LumbarjaxError(
            f"integrated_gradients: every leaf of {what} needs the same leading batch dim B; "
            f"got shapes {shapes}")
    return sizes.pop()


@functools.lru_cache(maxsize=128)
def chunked_nodes(method: str, steps: int, chunk_size: int | None):
    """Nodes and weights reshaped to (n_chunks, chunk); padding nodes get weight 0 (their
    gradients are computed and discarded). Cached (read-only arrays): no host work per call."""
    alphas, weights = quadrature(method, steps)
    chunk = steps if chunk_size is None or chunk_size >= steps else int(chunk_size)
    n_chunks = -(-steps // chunk)
    pad = n_chunks * chunk - steps
    alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(n_chunks, chunk).astype(np.float32)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(n_chunks, chunk).astype(np.float32)
    alphas.flags.writeable = weights.flags.writeable = False
    return alphas, weights


class _Programs(NamedTuple):
    run: Callable         # (inputs, baselines, static, alphas, weights, loop=) -> (attributions, delta)
    accumulate: Callable  # (acc, inputs, baselines, static, alphas_c, weights_c) -> acc
    finish: Callable      # (avg_grad, inputs, baselines, static) -> (attributions, delta)


@functools.lru_cache(maxsize=64)
def compiled_programs(fn: Callable, has_static: bool) -> _Programs:
    """The jitted IG programs for one ``fn``. Nodes and weights are arguments, so every method
    with the same (steps, chunk_size) and input shapes shares one compiled program; ``jax.jit``
    caches per shape (i.e. per steps, chunk_size and input shapes)."""

    def call(x, static):
        out = fn(x, static) if has_static else fn(x)
        # checked while tracing (once per compiled shape), not by an extra trace per call
        batch = _batch_size(x, "inputs")
        if getattr(out, "shape", None) != (batch,):
            raise LumbarjaxError(
                f"integrated_gradients: fn must return one scalar per example, shape ({batch},); "
                f"got {getattr(out, 'shape', type(out).__name__)}")
        return out

    def weighted_sum(inputs, baselines, static, alphas_c, weights_c):
        """sum_k w_k grad F(x' + a_k (x - x')) over one chunk of nodes; leaves like inputs."""
        diff = jax.tree_util.tree_map(lambda x, b: x - b, inputs, baselines)
        grad_fn = jax.grad(lambda x: jnp.sum(call(x, static)))

        def grad_at(alpha):
            point = jax.tree_util.tree_map(lambda b, d: b + alpha.astype(d.dtype) * d,
                                           baselines, diff)
            return grad_fn(point)

        grads = jax.vmap(grad_at)(alphas_c)   # leaves (chunk, B, ...)
        return jax.tree_util.tree_map(
            lambda g: jnp.tensordot(weights_c.astype(g.dtype), g, axes=1), grads)

    def finish(avg_grad, inputs, baselines, static):
        attributions = jax.tree_util.tree_map(lambda x, b, g: (x - b) * g,
                                              inputs, baselines, avg_grad)
        total = sum(jnp.sum(a.reshape(a.shape[0], -1), axis=1)
                    for a in jax.tree_util.tree_leaves(attributions))
        delta = total - (call(inputs, static) - call(baselines, static))
        return attributions, delta

    def run(inputs, baselines, static, alphas, weights, loop="unroll"):
        # alphas, weights: (n_chunks, chunk)
        if alphas.shape[0] == 1:
            avg_grad = weighted_sum(inputs, baselines, static, alphas[0], weights[0])
        elif loop == "unroll":
            # The chunks written out one after another in one program. Chunk k's points get a
            # data dependency on the sum after chunk k-1 (a zero that XLA cannot fold away:
            # (s != s) is 0/1, never NaN, times 0.0), so XLA runs the chunks in sequence and
            # reuses their buffers: memory stays ~one chunk. (An optimization barrier is dropped
            # by XLA:CPU before scheduling; a lax.scan/while body ran 3x slower on XLA:CPU —
            # benchmarks/history/2026-12-01.md.)
            avg_grad = jax.tree_util.tree_map(jnp.zeros_like, inputs)
            for k in range(alphas.shape[0]):
                x_k, b_k = inputs, baselines
                if k:
                    first = jax.tree_util.tree_leaves(avg_grad)[0].ravel()[0]
                    zero = (first != first).astype(jnp.float32) * 0.0
                    x_k = jax.tree_util.tree_map(lambda v: v + zero.astype(v.dtype), inputs)
                    b_k = jax.tree_util.tree_map(lambda v: v + zero.astype(v.dtype), baselines)
                part = weighted_sum(x_k, b_k, static, alphas[k], weights[k])
                avg_grad = jax.tree_util.tree_map(jnp.add, avg_grad, part)
        else:
            def body(acc, aw):
                part = weighted_sum(inputs, baselines, static, *aw)
                return jax.tree_util.tree_map(jnp.add, acc, part), None

            init = jax.tree_util.tree_map(jnp.zeros_like, inputs)
            avg_grad, _ = jax.lax.scan(body, init, (alphas, weights))
        return finish(avg_grad, inputs, baselines, static)

    def accumulate(acc, inputs, baselines, static, alphas_c, weights_c):
        part = weighted_sum(inputs, baselines, static, alphas_c, weights_c)
        return jax.tree_util.tree_map(jnp.add, acc, part)

    return _Programs(jax.jit(run, static_argnames="loop"), jax.jit(accumulate, donate_argnums=0),
                     jax.jit(finish))


def clear_cache() -> None:
    """Forget the compiled IG functions (they hold references to the ``fn`` they were built for)."""
    compiled_programs.cache_clear()


def integrated_gradients(fn: Callable, inputs: PyTree, baselines: PyTree | None = None, *,
                         steps: int = 64, method: str = "gausslegendre",
                         chunk_size: int | None = None,
                         static: PyTree | None = None,
                         chunk_loop: str = "auto") -> tuple[PyTree, jax.Array]:
    """Integrated gradients of ``fn`` at ``inputs`` relative to ``baselines``.

    Args:
      fn: ``fn(inputs) -> (B,)`` (or ``fn(inputs, static) -> (B,)`` when ``static`` is given);
        one scalar per example — a logit, probability or regression output. Must not mix
        examples (eval-mode BatchNorm only). Must be hashable (functions are); the compiled
        function is cached per ``fn`` object, so pass the same ``fn`` to reuse it.
      inputs: pytree of float arrays, every leaf with leading batch dim ``B``, e.g.
        ``{"mri": (B,D,H,W,1), "xray": (B,H,W,1), "clinical": (B,F)}``.
      baselines: pytree with the same structure and shapes; ``None`` -> zeros.
      steps: number of quadrature nodes = gradient evaluations per example (see
        :func:`quadrature` for each rule's nodes and weights).
      method: ``"gausslegendre"`` (default), ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"`` or ``"riemann_trapezoid"``.
      chunk_size: evaluate at most this many nodes at once (``lax.scan`` over chunks,
        accumulating the weighted gradients) to bound memory; ``None`` = all at once. The
        result equals the unchunked one up to float summation order.
      static: optional pytree passed unchanged as ``fn``'s second argument and not attributed
        (presence flags, masks, parameters).
      chunk_loop: how chunks are sequenced when ``chunk_size < steps`` (same result and
        memory bound; only speed and compile time differ): ``"auto"`` (default) = ``"unroll"``
        up to ``MAX_UNROLL`` chunks, else ``"scan"``; ``"unroll"`` — one program with the chunks
        written out in sequence (a data dependency between chunks keeps one live at a time;
        compile time grows with the number of chunks); ``"scan"`` — one program with a
        ``jax.lax.scan`` over chunks (smallest program; on XLA:CPU the loop body ran ~3x
        slower, benchmarks/history/2026-12-01.md); ``"python"`` — a host loop calling a jitted chunk step
        (accumulator donated) and a jitted finish (one dispatch per chunk).
    Returns:
      ``(attributions, delta)``: ``attributions`` has the structure and shapes of ``inputs``;
      ``delta`` (B,) = sum over all leaves and elements of the attributions minus
      ``(fn(inputs) - fn(baselines))`` — the completeness error per example.
    """
    if method not in METHODS:
        raise ConfigError(
            f"integrated_gradients: unknown method {method!r}; expected one of {METHODS}")
    quadrature(method, steps)  # validates steps
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                   or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ConfigError(
            f"integrated_gradients: chunk_size must be a positive int or None, got {chunk_size!r}")
    inputs = jax.tree_util.tree_map(jnp.asarray, inputs)
    if baselines is None:
        baselines = jax.tree_util.tree_map(jnp.zeros_like, inputs)
    else:
        baselines = jax.tree_util.tree_map(jnp.asarray, baselines)
        in_struct = jax.tree_util.tree_structure(inputs)
        base_struct = jax.tree_util.tree_structure(baselines)
        if in_struct != base_struct:
            raise LumbarjaxError(
                f"integrated_gradients: baselines structure {base_struct} does not match "
                f"inputs structure {in_struct}")
        for (path, x), b in zip(jax.tree_util.tree_leaves_with_path(inputs),
                                jax.tree_util.tree_leaves(baselines)):
            if x.shape != b.shape:
                raise LumbarjaxError(
                    f"integrated_gradients: leaf {jax.tree_util.keystr(path)}: baseline shape "
                    f"{b.shape} != input shape {x.shape}")
        baselines = jax.tree_util.tree_map(lambda x, b: b.astype(x.dtype), inputs, baselines)
    for path, x in jax.tree_util.tree_leaves_with_path(inputs):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise LumbarjaxError(
                f"integrated_gradients: leaf {jax.tree_util.keystr(path)} has dtype {x.dtype}; "
                "only float leaves can be attributed (pass flags/indices via `static` or a "
                "closure)")
    _batch_size(inputs, "inputs")
    if chunk_loop not in CHUNK_LOOPS:
        raise ConfigError(
            f"integrated_gradients: chunk_loop must be one of {CHUNK_LOOPS}, got {chunk_loop!r}")
    try:
        programs = compiled_programs(fn, static is not None)
    except TypeError as e:  # unhashable fn
        raise LumbarjaxError(f"integrated_gradients: fn must be hashable: {e}") from e
    alphas, weights = chunked_nodes(method, int(steps),
                                     None if chunk_size is None else int(chunk_size))
    if chunk_loop == "auto":
        chunk_loop = "unroll" if alphas.shape[0] <= MAX_UNROLL else "scan"
    if alphas.shape[0] == 1 or chunk_loop in ("unroll", "scan"):
        return programs.run(inputs, baselines, static, alphas, weights,
                            loop="scan" if alphas.shape[0] == 1 else chunk_loop)
    acc = jax.tree_util.tree_map(jnp.zeros_like, inputs)
    for alphas_c, weights_c in zip(alphas, weights):
        acc = programs.accumulate(acc, inputs, baselines, static, alphas_c, weights_c)
    return programs.finish(acc, inputs, baselines, static)
