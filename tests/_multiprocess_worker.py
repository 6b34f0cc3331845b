"""One JAX process of tests/test_train_multiprocess.py: trains the tiny grader and outcome
networks with the project's training loop, as cross-validation trains one fold
(``train_and_evaluate`` with the task's model, loss, ``run_config`` and inner-validation
``eval_fn``), and writes what the test compares to ``OUT``.

    python _multiprocess_worker.py OUT.json WORKDIR STOP_AT [COORDINATOR NUM_PROCESSES PROCESS_ID]

``STOP_AT``: ``train_and_evaluate(stop_at=...)`` ("none" = run to the end; a second launch with
the same WORKDIR resumes from the checkpoint). With the last three arguments the process joins a
``jax.distributed`` job (CPU collectives: gloo, jax's default); without them it is one process
on the devices ``XLA_FLAGS`` gives it.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

N_TRAIN, N_VAL = 12, 6   # 12 training rows = 3 global batches of 4: an epoch ends every 3 steps


class RecordingSource:
    """A random-access source that remembers which rows (``index``) this process read."""

    def __init__(self, source):
        self._source = source
        self.reads: list[int] = []

    def __len__(self):
        return len(self._source)

    def __getitem__(self, i):
        ex = self._source[i]
        self.reads.append(int(ex["index"]))
        return ex


def tiny_config():
    """configs/default.py's grader and outcome sections shrunk to seconds (tests/conftest.py
    ``tiny_config`` sizes), 6 steps of global batch 4, evaluated and checkpointed every 3."""
    from configs import default
    c = default.get_config()
    c.seed = 0
    c.mri.shape = (4, 32, 32)
    c.xray.shape = (32, 32)
    c.grader.model.update(width=4, stage_sizes=(1, 1))
    om = c.outcome.model
    om.mri.update(width=4, stage_sizes=(1, 1))
    om.xray.update(enabled=True, width=4, stage_sizes=(1, 1))
    om.update(clinical_hidden=(8,), fusion_hidden=(8,))
    for t in (c.grader, c.outcome):
        t.train.update(num_steps=6, batch_size=4, log_every=1, eval_every=3, checkpoint_every=3,
                       progress_bar=False)
        t.optim.warmup_steps = 1
    return c


def tiny_data(seed: int = 0):
    """``(extras, labels)`` of N_TRAIN + N_VAL synthetic patients: MRI, X-ray (some missing),
    5 clinical features, an X-ray grade and the 5 outcome heads (some labels missing)."""
    from lumbarjax.schema import BINARY_HEADS, REGRESSION_HEADS
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VAL
    grade = rng.integers(0, 5, n).astype(np.float32)
    grade[[2, 13]] = np.nan
    labels = {"grade": grade}
    for h in BINARY_HEADS:
        y = (rng.random(n) < 0.5).astype(np.float32)
        y[:2] = (0.0, 1.0)  # both classes among the training rows
        labels[h] = y
    for h in REGRESSION_HEADS:
        labels[h] = rng.uniform(0, 100, n).astype(np.float32)
    for h, rows in zip(BINARY_HEADS + REGRESSION_HEADS, ([5], [3, 7], [9], [4, 15], [11])):
        labels[h][rows] = np.nan
    extras = {
        "mri": rng.normal(size=(n, 4, 32, 32)).astype(np.float32),
        "mri_present": (np.arange(n) % 5 != 1).astype(np.float32),
        "xray": (rng.normal(size=(n, 32, 32))
                 + np.nan_to_num(grade).reshape(-1, 1, 1) / 4).astype(np.float32),
        "xray_present": (np.arange(n) % 4 != 3).astype(np.float32),
        "clinical": rng.normal(size=(n, 5)).astype(np.float32),
    }
    return extras, labels


def train_task(kind: str, config, extras, labels, workdir: str, stop_at):
    """One task as ``crossval.run_fold`` trains a fold (rows 0..N_TRAIN-1 inner training,
    the rest inner validation); returns what the test compares."""
    from lumbarjax.data.pipeline import CachedExamples, Subset
    from lumbarjax.selection import clinical_offset
    from lumbarjax.pipelines.crossval import run_config
    from lumbarjax.train.loop import host_local_batches, predict, train_and_evaluate
    from lumbarjax.pipelines.tasks import get_task

    task, task_cfg = get_task(kind), config[kind]
    train_idx, val_idx = np.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_VAL)
    heads = ("grade",) if kind == "grader" else tuple(task_cfg.model.binary_heads) + tuple(
        task_cfg.model.regression_heads)
    task_labels = {h: labels[h] for h in heads}
    masks = {h: np.isfinite(v).astype(np.float32) for h, v in task_labels.items()}
    ex = dict(extras, labels=task_labels)
    if kind == "grader":
        ex = {k: v for k, v in ex.items() if k in ("xray", "xray_present", "labels")}
    source = CachedExamples(None, ex)
    model = task.build_model(task_cfg)
    loss_fn = task.loss(task_cfg, {h: v[train_idx] for h, v in task_labels.items()},
                        {h: v[train_idx] for h, v in masks.items()})
    init = None
    if kind == "outcome" and clinical_offset.kind_of(task_cfg) == "glm":
        mc = task_cfg.model
        init = clinical_offset.with_offsets(clinical_offset.fit_offsets(
            extras["clinical"][train_idx], {h: v[train_idx] for h, v in task_labels.items()},
            tuple(mc.binary_heads), tuple(mc.regression_heads), dict(loss_fn.class_weights)))
    bs = int(task_cfg.train.batch_size)
    predicted = []

    def eval_fn(state):  # crossval.run_fold's: predict the inner validation rows, task metric
        out = predict(state, model, host_local_batches(source, bs, val_idx))
        predicted.append(np.asarray(out["index"]).tolist())
        order = np.argsort(out["index"])
        out = {k: np.asarray(v)[order] for k, v in out.items()}
        return task.selection_metric(task.decode(out, task_cfg),
                                     {h: v[val_idx] for h, v in task_labels.items()}, task_cfg)

    ckpt = os.path.join(workdir, "checkpoints")
    resumed_from = max((int(d) for d in os.listdir(ckpt) if d.isdigit()), default=None) \
        if os.path.isdir(ckpt) else None
    train_source = RecordingSource(Subset(source, train_idx))
    res = train_and_evaluate(run_config(config, task_cfg), workdir, model=model, loss_fn=loss_fn,
                             train_source=train_source, eval_source=Subset(source, val_idx),
                             eval_fn=eval_fn, init_params=init, stop_at=stop_at)
    leaves = lambda tree: [np.asarray(x, np.float64).ravel().tolist() for x in jax.tree.leaves(tree)]
    return {
        "resumed_from": resumed_from,
        "reads": train_source.reads,
        "local_batch": bs // jax.process_count(),
        "train": [{"step": r["step"], "loss": r["loss"], "grad_norm": r["grad_norm"]}
                  for r in res["history"]["train"]],
        "eval": res["history"]["eval"],
        "best_step": res["best"]["step"],
        "last_step": res["last_step"],
        "params": leaves(res["last_state"].params),
        "opt_state": leaves(res["last_state"].opt_state),
        "predicted": predicted,
    }


def main(out_path: str, workdir: str, stop_at: str, *dist: str) -> None:
    from lumbarjax.train.mesh import maybe_initialize_distributed
    if dist:
        coordinator, num_processes, process_id = dist
        maybe_initialize_distributed(True, coordinator_address=coordinator,
                                     num_processes=int(num_processes), process_id=int(process_id))
    config = tiny_config()
    extras, labels = tiny_data()
    stop = None if stop_at == "none" else int(stop_at)
    out = {"process_index": jax.process_index(), "process_count": jax.process_count(),
           "device_count": jax.device_count(), "local_device_count": jax.local_device_count()}
    for kind in ("grader", "outcome"):
        out[kind] = train_task(kind, config, extras, labels, os.path.join(workdir, kind), stop)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
