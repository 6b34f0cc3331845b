"""The training loop: checkpoints (resume exactly), evaluation, early stopping, logging.

``train_and_evaluate`` follows flax's examples/imagenet: create the state, jit the steps,
loop over the (infinite, seeded) grain loader, log every ``log_every`` steps, evaluate every
``eval_every`` steps and checkpoint with orbax. A checkpoint holds the train state, the grain
iterator position and the loop's own bookkeeping (best metric, patience counter, history),
so a run that is interrupted and restarted with the same ``workdir`` ends in the same state
as an uninterrupted run.
"""

from __future__ import annotations

import base64
import functools
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lumbarjax import timing
from lumbarjax.errors import ConfigError, NonFiniteError
from lumbarjax.train import mesh as mesh_lib
from lumbarjax.train import steps as steps_lib
from lumbarjax.train.metrics_log import MetricsLogger, scalar_metrics
from lumbarjax.settings import setting
from lumbarjax.train.state import TrainState, create_train_state

__all__ = [
    "TRAIN_FIELDS",
    "train_config",
    "make_checkpoint_manager",
    "restore_checkpoint",
    "evaluate_loss",
    "predict",
    "host_local_batches",
    "train_and_evaluate",
]

# Every ``config.train.*`` field the loop reads; their defaults live in configs/default.py.
TRAIN_FIELDS = ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                "max_to_keep", "keep_best", "best_metric", "best_metric_mode",
                "early_stopping_patience", "eval_at_start", "progress_bar", "compute_dtype",
                "async_checkpointing", "distributed", "on_nonfinite")


def train_config(config) -> dict:
    """``config.train.*`` as a checked dict (every field of ``TRAIN_FIELDS`` is required).

    Raises:
      ConfigError: a field is missing or a value is out of range.
    """
    unknown = sorted(set(setting(config, "train")) - set(TRAIN_FIELDS))
    if unknown:
        raise ConfigError(f"config.train: unknown key(s) {unknown}; known keys: {sorted(TRAIN_FIELDS)}")
    tc = {k: setting(config, f"train.{k}") for k in TRAIN_FIELDS}
    for k in ("num_steps", "batch_size"):
        if tc[k] is None:
            raise ConfigError(f"config.train.{k} is required")
        tc[k] = int(tc[k])
        if tc[k] < 1:
            raise ConfigError(f"config.train.{k} must be >= 1, got {tc[k]}")
    for k in ("log_every", "eval_every", "checkpoint_every", "max_to_keep", "keep_best",
              "early_stopping_patience"):
        tc[k] = int(tc[k])
        if tc[k] < 0:
            raise ConfigError(f"config.train.{k} must be >= 0, got {tc[k]}")
    if tc["max_to_keep"] < 1 or tc["keep_best"] < 1:
        raise ConfigError("config.train.max_to_keep and config.train.keep_best must be >= 1 "
                          f"(got {tc['max_to_keep']}, {tc['keep_best']})")
    if tc["best_metric_mode"] not in ("min", "max"):
        raise ConfigError("config.train.best_metric_mode must be 'min' or 'max', got "
                          f"{tc['best_metric_mode']!r}")
    if tc["on_nonfinite"] not in ("stop", "skip"):
        raise ConfigError("config.train.on_nonfinite must be 'stop' or 'skip', got "
                          f"{tc['on_nonfinite']!r}")
    tc["compute_dtype"] = _dtype(tc["compute_dtype"])
    return tc


def _dtype(name):
    if name is None or name in ("", "none", "None"):
        return None
    try:
        dt = jnp.dtype(name)
    except TypeError as e:
        raise ConfigError(f"config.train.compute_dtype: unknown dtype {name!r}") from e
    if dt == jnp.float32:
        return None
    if dt not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(f"config.train.compute_dtype must be float32/bfloat16/float16, got {name!r}")
    return dt


# -- checkpointing ---------------------------------------------------------------------

_ITEMS = ("state", "data_iter", "loop")


def make_checkpoint_manager(directory, *, best_metric: str = "loss", best_mode: str = "min",
                            max_to_keep: int = 2, keep_best: int = 1,
                            async_checkpointing: bool = True) -> ocp.CheckpointManager:
    """orbax manager keeping the ``max_to_keep`` latest checkpoints (to resume) and the
    ``keep_best`` best by eval metric ``best_metric`` (``best_mode`` "min"/"max");
    items: ``state`` (StandardSave), ``data_iter`` and ``loop`` (JSON)."""

    def best_fn(metrics):
        # Ties go to the earliest step, as in the loop's own strict-improvement bookkeeping,
        # so orbax never deletes the checkpoint the loop calls best (e.g. a QWK stuck at 0).
        tie = 1e-12 * float(metrics.get("_step", 0))
        return float(metrics[best_metric]) + (tie if best_mode == "min" else -tie)

    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=max_to_keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=best_fn, reverse=(best_mode == "min"),
                                      n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn,
        best_mode=best_mode,
        preservation_policy=policy,
        enable_async_checkpointing=async_checkpointing,
        create=True,
        cleanup_tmp_directories=True,  # a killed save leaves an orbax tmp folder behind
    )
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options,
                                 item_names=_ITEMS)


def _abstract(state: TrainState):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _iter_state_to_json(s) -> dict:
    if isinstance(s, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(s)).decode("ascii")}
    return s


def _iter_state_from_json(s):
    if isinstance(s, Mapping) and set(s) == {"__bytes__"}:
        return base64.b64decode(s["__bytes__"])
    return s


def restore_checkpoint(mngr, step, state_like: TrainState, *, items=_ITEMS):
    """Restore ``items`` of checkpoint ``step`` into the shapes/shardings of ``state_like``;
    returns ``(state, {item: restored})``."""
    args = {"state": ocp.args.StandardRestore(_abstract(state_like))}
    if "data_iter" in items:
        args["data_iter"] = ocp.args.JsonRestore()
    if "loop" in items:
        args["loop"] = ocp.args.JsonRestore()
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
    return restored["state"], restored


# -- evaluation / prediction -------------------------------------------------------------

def _pad_to(batches: Iterable[Mapping], n_batches: int | None):
    """Yield ``batches`` then all-padding batches (valid=0, index=-1) up to ``n_batches``
    (multi-host: every process must run the same number of steps)."""
    last = None
    count = 0
    for b in batches:
        last = b
        count += 1
        yield b
    if n_batches is None or last is None:
        return
    pad = jax.tree.map(np.zeros_like, last)
    pad["valid"] = np.zeros_like(last["valid"])
    pad["index"] = np.full_like(last["index"], -1)
    for _ in range(count, n_batches):
        yield pad


def predict(state: TrainState, model, loader_or_batches: Iterable[Mapping], mesh=None, *,
            compute_dtype=None) -> dict:
    """Eval-mode outputs for every valid row of a finite stream of batches.

    Args:
      state: train state (replicated on ``mesh``).
      model: the flax module.
      loader_or_batches: finite iterable of host-local batch dicts with ``index`` (B,) and
        ``valid`` (B,) (e.g. ``make_loader(..., shuffle=False, num_epochs=1)``). With several
        processes every process must yield the same number of batches.
      mesh: default ``make_mesh()``.

    Returns:
      ``{head: (N, …) float32 numpy, "index": (N,) int}`` over the rows with ``valid > 0``
      (padding dropped), in stream order; ``index`` maps rows back to the records table
      (and so to ``patient_id``).
    """
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    step_fn = steps_lib.make_predict_step(model, mesh, compute_dtype=compute_dtype)
    chunks, indices = [], []
    for batch in timing.timed_iter(loader_or_batches):
        outputs, index, valid = step_fn(state, mesh_lib.shard_batch(batch, mesh))
        with timing.waiting("device_s"):
            outputs, index, valid = jax.device_get((outputs, index, valid))
        keep = np.asarray(valid) > 0
        chunks.append(jax.tree.map(lambda x: np.asarray(x)[keep], outputs))
        indices.append(np.asarray(index)[keep])
    if not chunks:
        raise ConfigError("predict: the loader yielded no batches")
    out = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *chunks)
    out = dict(out)
    if "index" in out:
        raise ConfigError("predict: the model has an output head named 'index' (reserved)")
    out["index"] = np.concatenate(indices)
    return out


def evaluate_loss(state: TrainState, model, loss_fn, batches: Iterable[Mapping], mesh=None, *,
                  compute_dtype=None) -> dict:
    """Eval-mode ``loss_fn`` (and its aux) over a finite stream of batches, each batch's
    value weighted by its number of valid rows. Returns ``{"loss": float, <aux>: float}``."""
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    step_fn = functools.partial(steps_lib.loss_eval_step, model=model, loss_fn=loss_fn, mesh=mesh,
                                compute_dtype=compute_dtype)
    totals: dict[str, float] = {}
    n_total = 0.0
    for batch in timing.timed_iter(batches):
        out = step_fn(state, mesh_lib.shard_batch(batch, mesh))
        with timing.waiting("device_s"):
            metrics, n = jax.device_get(out)
        n = float(n)
        if n == 0:
            continue
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        n_total += n
    if n_total == 0:
        raise ConfigError("evaluate_loss: no valid examples in the evaluation batches")
    return {k: v / n_total for k, v in totals.items()}


def _eval_batches(make_loader, source, local_bs: int, indices=None):
    """Finite, padded, host-local eval batches of ``source`` (or of its rows ``indices``):
    process p reads rows p, p+P, … and every process yields the same number of batches."""
    pc, pi = jax.process_count(), jax.process_index()
    if pc == 1:
        return make_loader(source, batch_size=local_bs, shuffle=False, seed=0, num_epochs=1,
                           indices=indices)
    rows = np.arange(len(source)) if indices is None else np.asarray(indices)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    n = len(rows)
    per_proc = math.ceil(n / pc)
    n_batches = math.ceil(per_proc / local_bs)
    it = make_loader(source, batch_size=local_bs, shuffle=False, seed=0, num_epochs=1,
                     indices=rows[pi::pc])
    return _pad_to(it, n_batches)


def host_local_batches(source, batch_size: int, indices=None):
    """Finite batches of ``source`` (or of its rows ``indices``) for ``predict`` /
    ``evaluate_loss``, ``batch_size`` rows per global batch: one process reads them all in order
    (``make_loader(shuffle=False, num_epochs=1)``); P processes each read ``batch_size / P``
    rows per batch (process p: rows p, p+P, …), padded to the same number of batches."""
    local_bs = max(1, int(batch_size) // jax.process_count())
    from lumbarjax.data.pipeline import make_loader
    return _eval_batches(make_loader, source, local_bs, indices)


def _train_batches(source, *, local_bs: int, seed: int, augment):
    """The infinite, shuffled training batches of this process: the global stream of one
    process (shuffle, epochs and augmentation of the whole source), cut into local batches of
    ``local_bs`` rows of which process p takes p, p+P, … (``make_loader(shard=(p, P))``): P
    processes train on exactly one process's batches, and the iterator state is the same on
    every process, so the ``data_iter`` item orbax saves from process 0 resumes every process."""
    from lumbarjax.data.pipeline import make_loader

    pc, pi = jax.process_count(), jax.process_index()
    return make_loader(source, batch_size=local_bs, shuffle=True, seed=seed, num_epochs=None,
                       augment=augment, shard=(pi, pc))


# -- the loop ------------------------------------------------------------------------------


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _mean_metrics(pending: list) -> dict:
    host = jax.device_get(pending)
    keys = host[0].keys()
    return {k: float(np.mean([float(m[k]) for m in host])) for k in keys}


def train_and_evaluate(
    config,
    workdir,
    *,
    model,
    loss_fn: Callable,
    train_source,
    eval_source=None,
    eval_fn: Callable[[TrainState], Mapping[str, Any]] | None = None,
    sample_batch: Mapping | None = None,
    mesh=None,
    stop_at: int | None = None,
    init_params: Callable[[Any], Any] | None = None,
    row_ids=None,
) -> dict:
    """Train ``model`` on ``train_source``; evaluate, checkpoint, log; resume if possible.

    Args:
      config: ConfigDict. Reads ``seed``, ``augment`` (see ``data.pipeline.augment_example``;
        None = off), ``train.*`` (``TRAIN_FIELDS``) and ``optim.*`` (``state.make_optimizer``);
        configs/default.py holds every default. ``train.on_nonfinite``: "stop" raises
        ``NonFiniteError`` naming the first step with a NaN/Inf loss or gradient, its batch's
        patients and the last good checkpoint; "skip" leaves the state unchanged on such steps
        (counted as ``train/skipped_nonfinite`` in the log).
      workdir: run directory: ``checkpoints/``, ``metrics.jsonl``, ``tb/``. If it holds a
        checkpoint, training resumes from the latest one (state, optimiser, rng, step, data
        position, best metric and patience) and ends exactly as an uninterrupted run.
      model: flax module (see ``steps.make_train_step``).
      loss_fn: ``(outputs, batch) -> (loss, aux)``.
      train_source: random-access source of example dicts (``len`` + ``__getitem__``);
        read by ``make_loader(shuffle=True, seed=config.seed, num_epochs=None)``.
      eval_source: optional source; when given, each evaluation includes eval-mode
        ``loss`` and aux (weighted over valid rows).
      eval_fn: optional ``eval_fn(state) -> {name: scalar}`` (e.g. AUC on the validation
        fold, typically via ``predict``); merged over (and overriding) the loss metrics.
      sample_batch: a batch for ``model.init``; default: the first batch of ``train_source``.
      mesh: default ``make_mesh()`` (all devices).
      stop_at: stop (after checkpointing) once this step is reached without ending the run
        (for jobs with a wall-clock limit; the next call resumes). The schedule still runs
        to ``config.train.num_steps``.
      init_params: optional ``params -> params`` applied to the freshly initialised params
        (e.g. copying a pretrained encoder in); ignored when resuming from a checkpoint.
      row_ids: optional sequence naming example ``index`` values (e.g. patient ids) for the
        non-finite error message.

    Returns:
      ``{"state": best TrainState (the last one when nothing was evaluated),
      "last_state": TrainState at the last step, "history": {"train": [...], "eval":
      [...]}, "best": {"step", "metric", "mode", "value", "metrics"}, "last_step": int,
      "stopped_early": bool}``.
    """
    from lumbarjax.data.pipeline import make_loader
    from tqdm.auto import tqdm

    tc = train_config(config)
    mesh_lib.maybe_initialize_distributed(bool(tc["distributed"]))
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    num_steps, batch_size = tc["num_steps"], tc["batch_size"]
    pc, pi = jax.process_count(), jax.process_index()
    if batch_size % pc or batch_size % mesh.size:
        raise ConfigError(f"config.train.batch_size={batch_size} must be divisible by the "
                          f"number of processes ({pc}) and of devices ({mesh.size})")
    local_bs = batch_size // pc
    seed = int(setting(config, "seed"))
    augment = setting(config, "augment")
    stop_at = num_steps if stop_at is None else min(int(stop_at), num_steps)
    do_eval = eval_fn is not None or eval_source is not None
    eval_every = tc["eval_every"] or num_steps
    best_metric, mode = tc["best_metric"], tc["best_metric_mode"]
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)

    train_iter = _train_batches(train_source, local_bs=local_bs, seed=seed, augment=augment)
    if sample_batch is None:
        sample_batch = next(make_loader(train_source, batch_size=local_bs, shuffle=False,
                                        seed=seed, num_epochs=1))
    state = create_train_state(jax.random.PRNGKey(seed), model, sample_batch, config,
                               num_steps=num_steps, mesh=mesh)
    if init_params is not None:
        new = init_params(jax.device_get(state.params))
        if jax.tree.structure(new) != jax.tree.structure(state.params):
            raise ConfigError("train_and_evaluate: init_params changed the parameter tree structure")
        state = state.replace(params=jax.tree.map(
            lambda old, v: jax.device_put(jnp.asarray(v, old.dtype), old.sharding), state.params, new))
    cdt = tc["compute_dtype"]
    skip = tc["on_nonfinite"] == "skip"
    train_step = steps_lib.make_train_step(model, loss_fn, mesh, compute_dtype=cdt,
                                           skip_nonfinite=skip)

    mngr = make_checkpoint_manager(
        os.path.join(workdir, "checkpoints"), best_metric=best_metric, best_mode=mode,
        max_to_keep=tc["max_to_keep"], keep_best=tc["keep_best"],
        async_checkpointing=bool(tc["async_checkpointing"]))
    loop = {"best_value": None, "best_step": None, "best_metrics": None, "bad_evals": 0,
            "stopped_early": False, "skipped_nonfinite": 0,
            "history": {"train": [], "eval": []}}
    latest = mngr.latest_step()
    if latest is not None:
        state, restored = restore_checkpoint(mngr, latest, state)
        train_iter.set_state(_iter_state_from_json(restored["data_iter"]))
        loop = {"skipped_nonfinite": 0, **restored["loop"]}
    step = int(jax.device_get(state.step))
    logger = MetricsLogger(workdir, enabled=(pi == 0),
                           resume_step=None if latest is None else step)

    def evaluate(state) -> dict:
        metrics: dict[str, float] = {}
        if eval_source is not None:
            metrics.update(evaluate_loss(state, model, loss_fn,
                                         _eval_batches(make_loader, eval_source, local_bs),
                                         mesh, compute_dtype=cdt))
        if eval_fn is not None:
            metrics.update(scalar_metrics(eval_fn(state)))
        if best_metric not in metrics:
            raise ConfigError(f"config.train.best_metric={best_metric!r} is not among the "
                              f"eval metrics {sorted(metrics)}")
        return metrics

    def save(step, state, eval_metrics):
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data_iter=ocp.args.JsonSave(_iter_state_to_json(train_iter.get_state())),
            loop=ocp.args.JsonSave(loop),
        ), metrics=None if eval_metrics is None else {**eval_metrics, "_step": step}, force=True)

    show_bar = bool(tc["progress_bar"]) and pi == 0 and sys.stderr.isatty()
    pbar = tqdm(total=num_steps, initial=step, disable=not show_bar, desc="train",
                dynamic_ncols=True)
    pending: list = []        # (step, metrics, batch rows) since the last log
    checked = [0]             # entries of ``pending`` already checked for non-finite values
    t_last = time.perf_counter()

    def check_finite():
        """Before anything is logged, evaluated or saved: stop at the first non-finite step
        (or count the skipped ones)."""
        with timing.waiting("device_s"):
            flags = jax.device_get([m["finite"] for _, m, _ in pending[checked[0]:]])
        bad = [checked[0] + i for i, f in enumerate(flags) if float(f) < 1.0]
        checked[0] = len(pending)
        if not bad:
            return
        if skip:
            loop["skipped_nonfinite"] += len(bad)
            return
        bad_step, _, rows = pending[bad[0]]
        rows = [int(r) for r in rows]
        names = [str(row_ids[r]) for r in rows] if row_ids is not None else rows
        mngr.wait_until_finished()
        last = mngr.latest_step()
        raise NonFiniteError(
            f"training {workdir}: the loss or gradient became NaN/Inf at step {bad_step} "
            f"(batch {'patients' if row_ids is not None else 'rows'} {names}); last good "
            f"checkpoint: {'none' if last is None else os.path.join(workdir, 'checkpoints', str(last))}. "
            "Lower optim.lr, check these inputs, or set train.on_nonfinite='skip'")

    steps_since = 0
    try:
        if tc["eval_at_start"] and do_eval and latest is None and step == 0 < stop_at:
            # the initial parameters compete too (e.g. the clinical regression the outcome
            # network starts from, selection.clinical_offset): checkpointed as step 0
            eval_metrics = evaluate(state)
            if _is_better(eval_metrics[best_metric], None, mode):
                loop.update(best_value=eval_metrics[best_metric], best_step=0, best_metrics=eval_metrics)
            logger.write(0, "eval", eval_metrics)
            loop["history"]["eval"].append({"step": 0, **eval_metrics})
            save(0, state, eval_metrics)
        while step < stop_at and not loop["stopped_early"]:
            with timing.waiting("input_s"):
                batch = next(train_iter)
            state, metrics = train_step(state, mesh_lib.shard_batch(batch, mesh))
            step += 1
            steps_since += 1
            pending.append((step, metrics, np.asarray(batch["index"])[np.asarray(batch["valid"]) > 0]))
            pbar.update(1)
            do_eval_now = do_eval and (step % eval_every == 0 or step == num_steps)
            do_log = (tc["log_every"] and step % tc["log_every"] == 0) or step == num_steps
            if (do_log or do_eval_now or step == stop_at
                    or (tc["checkpoint_every"] and step % tc["checkpoint_every"] == 0)):
                check_finite()
            if do_log:
                rec = _mean_metrics([m for _, m, _ in pending])
                rec["skipped_nonfinite"] = float(loop["skipped_nonfinite"])
                now = time.perf_counter()
                rec["steps_per_sec"] = steps_since / max(now - t_last, 1e-9)
                t_last, steps_since, pending, checked[0] = now, 0, [], 0
                logger.write(step, "train", rec)
                loop["history"]["train"].append({"step": step, **rec})
                pbar.set_postfix(loss=f"{rec['loss']:.4g}", refresh=False)
            eval_metrics = None
            if do_eval_now:
                eval_metrics = evaluate(state)
                value = eval_metrics[best_metric]
                if _is_better(value, loop["best_value"], mode):
                    loop.update(best_value=value, best_step=step, best_metrics=eval_metrics,
                                bad_evals=0)
                else:
                    loop["bad_evals"] += 1
                    patience = tc["early_stopping_patience"]
                    if patience and loop["bad_evals"] >= patience:
                        loop["stopped_early"] = True
                logger.write(step, "eval", eval_metrics)
                loop["history"]["eval"].append({"step": step, **eval_metrics})
                pbar.set_postfix(**{best_metric: f"{value:.4g}"}, refresh=False)
            if (eval_metrics is not None or step == stop_at or loop["stopped_early"]
                    or (tc["checkpoint_every"] and step % tc["checkpoint_every"] == 0)):
                save(step, state, eval_metrics)
        if mngr.latest_step() is None:
            # nothing trained (stop_at=0: a refit told to stop at step 0): the initial parameters
            # are the run's model, so they are checkpointed like any finished run's
            save(step, state, None)
        mngr.wait_until_finished()
        last_state = state
        best_step = loop["best_step"]
        if best_step is not None and best_step != step:
            best_state, _ = restore_checkpoint(mngr, best_step, state, items=("state",))
        else:
            best_state = state
    finally:
        pbar.close()
        logger.close()
        mngr.close()
    return {
        "state": best_state,
        "last_state": last_state,
        "history": loop["history"],
        "best": {"step": loop["best_step"], "metric": best_metric, "mode": mode,
                 "value": loop["best_value"], "metrics": loop["best_metrics"]},
        "last_step": step,
        "stopped_early": bool(loop["stopped_early"]),
    }
