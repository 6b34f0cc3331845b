"""Train and evaluate the disc-level localiser; cut per-level crops around its centres.

Inputs are the preprocessed (cached) sagittal volumes ``(D, H, W)`` of a cohort and the disc
centres in patient coordinates (LPS mm) from whatever source has them:
:func:`centres_from_rsna` (RSNA 2024 canal coordinates placed by the reader),
:func:`centres_from_spider` (SPIDER mask centres), :func:`centres_from_truth` (the synthetic
ground truth ``disc_<LEVEL>_{x,y,z}_mm``). They are mapped into each cached grid through its
affine; the model sees the ``slab`` middle slices and predicts (row, col) per level.

The error is reported in mm on held-out patients (in-plane Euclidean distance, using the grid's
row/column spacing), per level, beside the naive baseline that predicts every level at its mean
training position — a localiser that does not beat it has learnt nothing.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from lumbarjax.errors import CohortError
from lumbarjax.models.localiser import LevelLocaliser, localiser_loss
from lumbarjax.schema import LEVELS
from lumbarjax.train.state import make_optimizer


# --------------------------------------------------------------------------- centres


def centres_from_truth(truth: pd.DataFrame) -> dict:
    """patient_id -> (L, 3) LPS mm from ``disc_<LEVEL>_{x,y,z}_mm`` columns."""
    cols = [f"disc_{lv}_{a}_mm" for lv in LEVELS for a in "xyz"]
    arr = truth[cols].to_numpy(float).reshape(len(truth), len(LEVELS), 3)
    return dict(zip(truth["patient_id"].astype(str), arr))


def centres_from_rsna(coordinates: pd.DataFrame, condition: str = "spinal_canal_stenosis") -> dict:
    """study_id -> (L, 3) LPS mm of the canal coordinates on the sagittal T2 (NaN where absent)."""
    sub = coordinates[(coordinates["condition"] == condition) & coordinates["x_mm"].notna()]
    return _by_level(sub, "study_id")


def centres_from_spider(centres: pd.DataFrame, scan: str = "t2") -> dict:
    """patient_id -> (L, 3) LPS mm of the disc mask centres of one scan type (NaN where absent)."""
    sub = centres[(centres["structure"] == "disc") & (centres["level"] != "") & (centres["scan"] == scan)]
    return _by_level(sub, "patient_id")


def _by_level(rows: pd.DataFrame, key: str) -> dict:
    out = {}
    for pid, g in rows.groupby(key):
        arr = np.full((len(LEVELS), 3), np.nan)
        for r in g.itertuples():
            arr[LEVELS.index(r.level)] = (r.x_mm, r.y_mm, r.z_mm)
        out[str(pid)] = arr
    return out


# --------------------------------------------------------------------------- data


def slab(volume: np.ndarray, n: int = 3) -> np.ndarray:
    """(D, H, W) -> (H, W, n): the ``n`` middle slices as channels."""
    d = volume.shape[0]
    lo = max(0, d // 2 - n // 2)
    sl = volume[lo:lo + n]
    if sl.shape[0] < n:
        sl = np.concatenate([sl, np.repeat(sl[-1:], n - sl.shape[0], 0)])
    return np.moveaxis(sl, 0, -1).astype(np.float32)


def localiser_data(cache: pd.DataFrame, centres: dict, *, n_slices: int = 3):
    """Images (N, H, W, n), targets (N, L, 2) pixels, mask (N, L), spacing (row, col) mm, ids.

    ``cache``: ``preprocess_cohort`` output (``patient_id, mri_file, mri_affine``); patients
    without an MRI, a cached file or any centre are left out."""
    images, targets, masks, ids, spacing = [], [], [], [], None
    for r in cache.itertuples():
        c = centres.get(str(r.patient_id))
        if c is None or not r.mri_file or not np.isfinite(c).any():
            continue
        affine = np.asarray(json.loads(r.mri_affine), float)
        vol = np.load(r.mri_file)
        vox = (np.linalg.inv(affine) @ np.c_[np.nan_to_num(c), np.ones(len(c))].T).T[:, :3]
        ok = np.isfinite(c).all(axis=1)
        images.append(slab(vol, n_slices))
        targets.append(vox[:, 1:3])
        masks.append(ok.astype(np.float32))
        ids.append(str(r.patient_id))
        sp = np.linalg.norm(affine[:3, :3], axis=0)[1:3]
        if spacing is not None and not np.allclose(sp, spacing):
            raise CohortError(f"localiser_data: patient {r.patient_id} cached at spacing {sp}, others {spacing}")
        spacing = sp
    if not images:
        raise CohortError("localiser_data: no patient has both a cached MRI and disc centres")
    return (np.stack(images), np.stack(targets).astype(np.float32), np.stack(masks), spacing, ids)


# --------------------------------------------------------------------------- train / evaluate


def errors_mm(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, spacing) -> np.ndarray:
    """(N, L) in-plane Euclidean error in mm; NaN where ``mask`` is 0."""
    d = (pred - target) * np.asarray(spacing, float)[None, None, :]
    e = np.sqrt((d ** 2).sum(-1))
    return np.where(mask > 0, e, np.nan)


def summarise(err: np.ndarray) -> dict:
    """Summary of an (N, L) error table in mm (:func:`errors_mm`; NaN = no target).

    Returns ``{"mean_mm", "median_mm", "within_10mm", "per_level"}`` over the known entries:
    mean and median error (mm, 2 decimals), the fraction within 10 mm (3 decimals) and, per
    level name of ``schema.LEVELS`` with at least one known entry, its mean and median.
    """
    per = {lv: {"mean_mm": round(float(np.nanmean(err[:, j])), 2),
                "median_mm": round(float(np.nanmedian(err[:, j])), 2)} for j, lv in enumerate(LEVELS)
           if np.isfinite(err[:, j]).any()}
    return {"mean_mm": round(float(np.nanmean(err)), 2), "median_mm": round(float(np.nanmedian(err)), 2),
            # over the known entries only: NaN <= 10 is False and would count as a miss
            "within_10mm": round(float(np.mean(err[np.isfinite(err)] <= 10.0) if np.isfinite(err).any()
                                       else np.nan), 3),
            "per_level": per}


def train_localiser(images, targets, mask, spacing, *, config, steps: int, batch_size: int,
                    width: int, seed: int = 0, val_fraction: float = 0.2):
    """Train :class:`LevelLocaliser` on a seeded split; returns (variables, report).

    ``config``: a section with the ``optim`` settings (``config.pretrain.levels.localiser``):
    the optimiser is ``train.state.make_optimizer``'s, with the warmup at most a tenth of the
    run (``steps // 10 + 1``).

    report: ``n_train, n_val, steps, val`` (errors in mm: mean, median, fraction within 10 mm,
    per level), ``baseline_mean_position`` (same, predicting each level's mean training
    position), ``train_loss_last``."""
    n = len(images)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    val, tr = perm[:n_val], perm[n_val:]
    if len(tr) < 2:
        raise CohortError(f"train_localiser: {n} patients; need at least 3")
    model = LevelLocaliser(num_levels=targets.shape[1], width=width)
    # rbg keys: compiling the threefry init of this net took ~45 s CPU on XLA:CPU here (rbg: ~5 s)
    variables = jax.jit(model.init)(jax.random.key(seed, impl="rbg"), jnp.asarray(images[:1]))
    scale = float(images.shape[1])
    tx, _ = make_optimizer(config, int(steps), warmup_cap=int(steps) // 10 + 1)
    opt = tx.init(variables["params"])

    @jax.jit
    def step(params, opt, x, y, m):
        def loss_fn(p):
            out = model.apply({"params": p}, x, train=True)
            return localiser_loss(out["centres"], y, m, scale)
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    @jax.jit
    def predict(params, x):
        return model.apply({"params": params}, x)["centres"]

    params = variables["params"]
    loss = jnp.nan
    for s in range(steps):
        idx = tr[rng.integers(0, len(tr), batch_size)]
        params, opt, loss = step(params, opt, jnp.asarray(images[idx]), jnp.asarray(targets[idx]),
                                 jnp.asarray(mask[idx]))
    pred = np.concatenate([np.asarray(predict(params, jnp.asarray(images[val[i:i + 32]])))
                           for i in range(0, len(val), 32)])
    err = errors_mm(pred, targets[val], mask[val], spacing)
    mean_pos = np.nansum(targets[tr] * mask[tr][..., None], 0) / np.maximum(mask[tr].sum(0), 1)[:, None]
    base = errors_mm(np.broadcast_to(mean_pos, targets[val].shape), targets[val], mask[val], spacing)
    report = {"n_train": int(len(tr)), "n_val": int(len(val)), "steps": int(steps),
              "val": summarise(err), "baseline_mean_position": summarise(base),
              "train_loss_last": float(loss)}
    return {"params": params}, report


# --------------------------------------------------------------------------- crops


def level_crops(volume: np.ndarray, centres: np.ndarray, size) -> np.ndarray:
    """(D, H, W) volume, (L, 2) centres (row, col) pixels -> (L, D, ch, cw) crops centred on each
    level (zero outside the volume; NaN centres give zero crops)."""
    d, h, w = volume.shape
    ch, cw = (int(v) for v in size)
    out = np.zeros((len(centres), d, ch, cw), np.float32)
    for j, (r, c) in enumerate(np.asarray(centres, float)):
        if not (np.isfinite(r) and np.isfinite(c)):
            continue
        r0, c0 = int(round(r)) - ch // 2, int(round(c)) - cw // 2
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + ch, h), min(c0 + cw, w)
        if rs < re and cs < ce:
            out[j, :, rs - r0:re - r0, cs - c0:ce - c0] = volume[:, rs:re, cs:ce]
    return out


__all__ = ["centres_from_rsna", "centres_from_spider", "centres_from_truth", "errors_mm",
           "level_crops", "localiser_data", "slab", "summarise", "train_localiser"]
