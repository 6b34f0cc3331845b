"""Restoring a finished cross-validation's fold models (``--mode=predict`` and ``--mode=evaluate``).

* :func:`saved_config` / :func:`check_run_config`: the run's saved ``config.json`` and the check
  that the given config matches it on everything the checkpoints and preprocessing depend on.
* :func:`load_fold_models` rebuilds the k fold models of one task from the run's config and
  restores each fold's best checkpoint (the one its out-of-fold predictions came from).
* :func:`feature_frame`: a fold encoder's clinical features for new patients.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.settings import setting

__all__ = ["FoldModel", "saved_config", "check_run_config", "load_fold_models", "feature_frame", "memo"]


class FoldModel(NamedTuple):
    """One restored fold model. ``state.step`` is the optimiser step of the checkpoint."""
    model: Any                    # flax module (eval mode: ``model.apply(state.variables, b)``)
    state: Any                    # TrainState restored from the fold's best checkpoint
    encoder: Any                  # ClinicalEncoder of the fold (outcome tasks) or None
    fold: int


# -- the run's config -----------------------------------------------------------------------

def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config a run saved as ``<workdir>/config.json`` (``workflow.run`` writes it), or
    None when absent. JSON lists stand where the original had tuples."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run config: {e}") from e


def _plain(x):
    """ConfigDict / tuples -> JSON-comparable plain values."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    return json.loads(json.dumps(x, default=str))


# Sections that must equal the run's for its checkpoints and preprocessing to apply.
_MUST_MATCH = ("seed", "mri", "xray", "grader.model", "grader.optim", "grader.train.num_steps",
               "outcome.model", "outcome.features", "outcome.optim", "outcome.train.num_steps",
               "clinical")


def _section(cfg, dotted: str):
    """``cfg.<dotted>`` as plain data, None where a saved run's config lacks it (so it differs)."""
    try:
        return _plain(setting(cfg, dotted))
    except ConfigError:
        return None


def check_run_config(config, workdir: str) -> list[str]:
    """Compare ``config`` with the run's saved ``config.json`` on everything the checkpoints
    and the preprocessing depend on. Returns notes (empty = identical or nothing saved).

    Raises:
      ConfigError: a model / preprocessing / feature section differs (names the sections).
    """
    saved = saved_config(workdir)
    if saved is None:
        return [f"{workdir} has no config.json: the given config is assumed to be the run's"]
    diff = [s for s in _MUST_MATCH if _section(config, s) != _section(saved, s)]
    if diff:
        raise ConfigError(f"the config differs from the run's {os.path.join(workdir, 'config.json')} "
                          f"in {diff}: the checkpoints and preprocessing of that run need the "
                          "same settings (pass the run's config file and overrides)")
    return []


# -- fold models --------------------------------------------------------------------------

_MEMO: dict = {}


def memo(key, make):
    """One object per key for this process: equal configs give the very same model, jitted
    forward and IG head function, so a second prediction compiles nothing."""
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


def _sample_batch(config, num_features: int) -> dict:
    """A one-example batch of the run's input shapes (for model init / abstract state)."""
    d, h, w = (int(v) for v in config.mri.shape)
    xh, xw = (int(v) for v in config.xray.shape)
    return {"mri": np.zeros((1, d, h, w, 1), np.float32), "mri_present": np.ones((1,), np.float32),
            "xray": np.zeros((1, xh, xw, 1), np.float32), "xray_present": np.ones((1,), np.float32),
            "clinical": np.zeros((1, num_features), np.float32),
            "index": np.zeros((1,), np.int32), "valid": np.ones((1,), np.float32)}


def _abstract_state(config, model, num_features: int, run_cfg, num_steps: int):
    """The train state's structure, shapes and (replicated) shardings, without running or
    compiling the init: ``jax.eval_shape`` of ``create_train_state``."""
    from lumbarjax.train.state import create_train_state
    from lumbarjax.train.mesh import make_mesh, replicated_sharding
    batch = _sample_batch(config, num_features)
    shapes = jax.eval_shape(lambda: create_train_state(jax.random.PRNGKey(int(config.seed)), model,
                                                       batch, run_cfg, num_steps=num_steps))
    repl = replicated_sharding(make_mesh())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), shapes)


def _choose_step(mngr, fold_dir: str) -> tuple[int, str]:
    """The step whose weights made the fold's OOF predictions: the loop's recorded best step,
    else orbax's best step, else the latest."""
    import orbax.checkpoint as ocp
    latest = mngr.latest_step()
    if latest is None:
        raise CohortError(f"{fold_dir}/checkpoints: no checkpoint (is the cross-validation finished?)")
    steps = set(mngr.all_steps())
    try:
        loop = mngr.restore(latest, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"]
        best = loop.get("best_step")
    except Exception as e:  # noqa: BLE001 - older checkpoints: fall back to orbax's view
        logging.warning("%s: cannot read the loop bookkeeping (%s); using orbax's best step",
                        fold_dir, e)
        best = None
    if best is not None and int(best) in steps:
        return int(best), "best"
    best = mngr.best_step()
    if best is not None:
        return int(best), "best (orbax)"
    return int(latest), "latest"


def load_fold_models(config, workdir: str, task: str) -> list[FoldModel]:
    """Rebuild and restore every fold model of a finished cross-validation.

    Args:
      config: the run's config (see :func:`check_run_config`).
      workdir: the run's folder; fold ``k`` lives in ``<workdir>/<task>/fold_<k>/`` with
        ``checkpoints/`` (orbax), ``split.json`` and, for outcome tasks,
        ``clinical_encoder.json``.
      task: ``"grader"``, ``"outcome"`` or ``"outcome_clinical_only"``.

    Returns:
      ``[FoldModel(model, state, encoder, fold), …]`` for folds 0..k-1, each state restored
      from the fold's best checkpoint (the loop's recorded best step; orbax's best or the
      latest step as fall-backs; with ``cv.refit`` the refitted model in ``fold_<k>/refit/``) into a state built by ``create_train_state`` with inputs of
      ``config.mri.shape`` / ``config.xray.shape`` and F = the fold encoder's features.

    Raises:
      ConfigError: unknown task. CohortError: the task's folders or checkpoints are missing.
    """
    from lumbarjax.models.fusion import ClinicalEncoder
    from lumbarjax.pipelines import crossval
    from lumbarjax.train.loop import restore_checkpoint, make_checkpoint_manager, train_config
    from lumbarjax.pipelines.tasks import find_variant

    task_obj, clinical_only = find_variant(task)
    kind = task_obj.name
    task_cfg = config[kind]
    task_dir = os.path.join(workdir, task)
    k = int(task_cfg.cv.num_folds)
    missing = [f for f in range(k) if not os.path.isdir(os.path.join(task_dir, f"fold_{f}", "checkpoints"))]
    if missing:
        raise CohortError(f"{task_dir}: no checkpoints for fold(s) {missing} of {k}: not a finished "
                          f"{task} cross-validation (run --mode=crossval first)")
    key = ("model", kind, clinical_only, json.dumps(_plain(task_cfg.model), sort_keys=True))
    model = memo(key, lambda: task_obj.build_model(task_cfg, clinical_only))
    run_cfg = crossval.run_config(config, task_cfg)
    tc = train_config(run_cfg)
    out = []
    for f in range(k):
        fold_dir = os.path.join(task_dir, f"fold_{f}")
        enc = None
        if task_obj.has_features:
            path = os.path.join(fold_dir, "clinical_encoder.json")
            try:
                with open(path) as fh:
                    enc = ClinicalEncoder.from_dict(json.load(fh))
            except (OSError, ValueError) as e:
                raise CohortError(f"{path}: cannot read the fold's clinical encoder: {e}") from e
        n_feat = enc.num_features if enc is not None else 0
        like = _abstract_state(config, model, n_feat, run_cfg, tc["num_steps"])
        # with cv.refit the test fold was predicted by the model retrained on all its training
        # patients (fold_<k>/refit/, stopped at the chosen step): that one is the fold model
        ckpt_dir = os.path.join(fold_dir, "refit" if setting(task_cfg, "cv.refit") else "", "checkpoints")
        if not os.path.isdir(ckpt_dir):
            raise CohortError(f"{ckpt_dir}: missing (config.{kind}.cv.refit is on): not a finished "
                              f"{task} cross-validation")
        mngr = make_checkpoint_manager(ckpt_dir,
                                       best_metric=tc["best_metric"], best_mode=tc["best_metric_mode"],
                                       max_to_keep=tc["max_to_keep"], keep_best=tc["keep_best"],
                                       async_checkpointing=False)
        try:
            step, how = _choose_step(mngr, fold_dir)
            try:
                state, _ = restore_checkpoint(mngr, step, like, items=("state",))
            except Exception as e:  # noqa: BLE001 - orbax errors say little about why
                raise CohortError(f"{fold_dir}/checkpoints/{step}: cannot restore into the model "
                                  f"built from config.{kind}.model ({type(e).__name__}: {e}); was "
                                  "the run made with another config?") from e
        finally:
            mngr.close()
        logging.info("%s fold %d: restored step %d (%s)", task, f, step, how)
        out.append(FoldModel(model, state, enc, f))
    return out


def feature_frame(config, records: pd.DataFrame, enc) -> np.ndarray:
    """(N, F) features of the fold's encoder for ``records``; absent columns count as missing
    values."""
    df = records.copy()
    for c in list(enc.numeric) + list(enc.categorical):
        if c not in df.columns:
            df[c] = np.nan
    return enc.transform(df)
