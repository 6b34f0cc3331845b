"""Training, prediction and the saved file of a landmark model (models.landmarks.LandmarkNet).

A landmark model is trained on films (or crops) with known points — BUU-LSPINE endplate lines,
or the synthetic ground truth of a cohort that is *not* the one being graded — and written as
``<name>.msgpack`` (parameters) + ``<name>.json`` (the model card: architecture, input
geometry, training data, steps, validation error in pixels and mm). The cohort being graded
only ever runs it forward.

Augmentation: random integer shifts of up to ``shift_px`` (image and points move together,
zero fill) and a random intensity gamma in [1 − gamma, 1 + gamma].
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lumbarjax import atomic
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.models.landmarks import LandmarkNet, landmark_loss
from lumbarjax.train.state import make_optimizer


def _shift(images: np.ndarray, points: np.ndarray, rng: np.random.Generator, shift_px: int):
    if shift_px <= 0:
        return images, points
    out = np.zeros_like(images)
    pts = points.copy()
    h, w = images.shape[1:3]
    for i in range(len(images)):
        dr, dc = rng.integers(-shift_px, shift_px + 1, size=2)
        src = images[i, max(0, -dr): h - max(0, dr), max(0, -dc): w - max(0, dc)]
        out[i, max(0, dr): max(0, dr) + src.shape[0], max(0, dc): max(0, dc) + src.shape[1]] = src
        pts[i] += (dr, dc)
    return out, pts


def fit(model: LandmarkNet, images: np.ndarray, points: np.ndarray, *, config, steps: int,
        batch_size: int, shift_px: int, seed: int = 0, gamma: float = 0.2, log_every: int = 100):
    """Train ``model`` on images (N, H, W) in [0, 1] and points (N, P, 2) (row, col) pixels.

    ``config``: a section with the ``optim`` settings (``config.levels``): the optimiser is
    ``train.state.make_optimizer``'s, decayed over ``max(steps, 2)`` steps with the warmup at
    most a tenth of the run (``steps // 10 + 1``). Returns the parameters (numpy pytree).
    Deterministic in ``seed`` on one machine."""
    images = np.asarray(images, np.float32)
    points = np.asarray(points, np.float32)
    if images.ndim != 3 or points.shape[:1] != images.shape[:1] or points.shape[1:] != (model.num_points, 2):
        raise ConfigError(f"landmarks.fit: images (N, H, W) and points (N, {model.num_points}, 2) expected, "
                          f"got {images.shape} and {points.shape}")
    if not np.all(np.isfinite(points)):
        raise CohortError("landmarks.fit: non-finite target points")
    n = len(images)
    rng = np.random.default_rng(seed)
    params = model.init(jax.random.PRNGKey(seed), jnp.asarray(images[:1]))["params"]
    tx, _ = make_optimizer(config, max(int(steps), 2), warmup_cap=int(steps) // 10 + 1)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss_fn(p):
            return landmark_loss(model.apply({"params": p}, x), y)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    bs = min(batch_size, n)
    order = rng.permutation(n)
    pos = 0
    for t in range(int(steps)):
        if pos + bs > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos: pos + bs]
        pos += bs
        x, y = _shift(images[idx], points[idx], rng, int(shift_px))
        if gamma > 0:
            g = rng.uniform(1 - gamma, 1 + gamma, size=(bs, 1, 1)).astype(np.float32)
            x = np.clip(x, 0, 1) ** g
        params, opt, loss = step(params, opt, jnp.asarray(x), jnp.asarray(y))
        if log_every and (t + 1) % log_every == 0:
            logging.info("landmarks: step %d/%d, mean point error %.2f px", t + 1, steps, float(loss))
    return jax.device_get(params)


def predict(model: LandmarkNet, params, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, P, 2) predicted points (row, col) for images (N, H, W)."""
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
    images = np.asarray(images, np.float32)
    out = [np.asarray(apply(params, jnp.asarray(images[i: i + batch_size])))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.num_points, 2), np.float32)


def save(path_stem: str, params, card: Mapping) -> tuple[str, str]:
    """Write ``<stem>.msgpack`` and the model card ``<stem>.json`` atomically."""
    weights = path_stem + ".msgpack"
    atomic.write_bytes(weights, flax.serialization.msgpack_serialize(jax.device_get(params)))
    atomic.write_json(path_stem + ".json", dict(card))
    return weights, path_stem + ".json"


def load(path_stem: str) -> tuple[LandmarkNet, dict, dict]:
    """``(model, params, card)`` from :func:`save`'s files; the card's ``model`` entry holds the
    LandmarkNet keyword arguments."""
    try:
        with open(path_stem + ".json") as f:
            card = json.load(f)
        with open(path_stem + ".msgpack", "rb") as f:
            params = flax.serialization.msgpack_restore(f.read())
    except FileNotFoundError as e:
        raise CohortError(f"no landmark model at {path_stem}.msgpack/.json: train it first") from e
    return LandmarkNet(**card["model"]), params, card


def exists(path_stem: str) -> bool:
    """Whether both files of a saved landmark model (:func:`save`) are there:
    ``<path_stem>.msgpack`` and ``<path_stem>.json``."""
    return os.path.exists(path_stem + ".msgpack") and os.path.exists(path_stem + ".json")


__all__ = ["exists", "fit", "load", "predict", "save"]
