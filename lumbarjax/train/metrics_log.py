"""Metrics logging: JSON lines + TensorBoard. Numbers only (never ids, names or text).

``workdir/metrics.jsonl``: one object per line, ``{"step": int, "split": "train"|"eval",
<name>: float|null, …}`` (non-finite values are written as ``null``).
``workdir/tb``: TensorBoard event files (tensorboardX), tag ``<split>/<name>``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from lumbarjax import atomic

__all__ = ["MetricsLogger", "flatten_metrics", "scalar_metrics", "read_metrics"]


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with "a/b" keys; values untouched (works inside ``jit``)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, name + "/"))
        else:
            out[name] = v
    return out


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten ``metrics`` (nested dicts -> "a/b") to python floats.

    Raises:
      TypeError: for a value that is not a real number or a size-1 array (text, ids, …),
        naming the key: logs must hold numbers only.
    """
    out: dict[str, float] = {}
    for name, v in flatten_metrics(metrics, prefix).items():
        if isinstance(v, (bool, np.bool_, numbers.Real)):
            out[name] = float(v)
            continue
        a = np.asarray(v)
        if a.size == 1 and a.dtype.kind in "biuf":
            out[name] = float(a.reshape(()))
            continue
        raise TypeError(f"metric {name!r}: expected a real number, got {type(v).__name__} "
                        f"{getattr(a, 'shape', '')} {getattr(a, 'dtype', '')}; only scalar "
                        "numbers are logged")
    return out


def _json_value(x: float):
    return x if math.isfinite(x) else None


class MetricsLogger:
    """Writes metrics of ``split`` at ``step`` to JSONL and TensorBoard.

    Args:
      workdir: run directory (``metrics.jsonl`` and ``tb/`` go there).
      enabled: False on processes other than 0 (then every call is a no-op).
      resume_step: when resuming from a checkpoint at this step, lines with a larger step
        (written by the interrupted run after its last checkpoint) are dropped from
        ``metrics.jsonl`` and TensorBoard purges its events after this step.
    """

    def __init__(self, workdir, *, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl")
        self._writer = None
        if not enabled:
            return
        os.makedirs(os.fspath(workdir), exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif os.path.exists(self.path):
            os.remove(self.path)  # a fresh run starts a fresh log
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(
            logdir=os.path.join(os.fspath(workdir), "tb"),
            purge_step=None if resume_step is None else int(resume_step) + 1,
            flush_secs=30,
        )

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        keep = []
        with open(self.path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a half-written last line from a killed run
                if int(rec.get("step", 0)) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
        atomic.write_text(self.path, "".join(keep))

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> dict:
        """Log ``metrics`` (scalars, nested dicts allowed); returns the flattened record."""
        values = scalar_metrics(metrics)
        record = {"step": int(step), "split": str(split)}
        record.update({k: _json_value(v) for k, v in values.items()})
        if not self.enabled:
            return record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in values.items():
            self._writer.add_scalar(f"{split}/{k}", v, global_step=int(step))
        return record

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(workdir, split: str | None = None) -> list[dict]:
    """The records of ``workdir/metrics.jsonl`` (optionally only one ``split``)."""
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    out = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if split is None or rec.get("split") == split:
                out.append(rec)
    return out
