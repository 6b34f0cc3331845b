"""Where a run's wall time goes: per stage, XLA compile time and count, input and device waits.

``with timing.stage("grader"):`` times a block (stages nest: an inner stage's time counts in
its own row and in its parents'). While a stage is open, JAX's monitoring events add to it:

- ``compile_s`` — seconds tracing, lowering and compiling (``/jax/core/compile/*_duration``),
  ``n_compiles`` — XLA backend compiles, ``compiles`` — their count per jitted function name
  (a name compiled twice with the same shapes is work a cache should have saved);
- ``cache_hits`` — executables loaded from the persistent compilation cache instead.

The training loop adds the seconds it waits for the host input pipeline (``input_s``:
``next(loader)``) and for device results (``device_s``: blocking ``device_get`` of metrics and
outputs, i.e. the compute still in flight). ``other_s`` = wall − compile − input − device: Python,
file I/O, scikit-learn and everything else on the host. All times are seconds of wall clock.

:func:`breakdown` returns ``{stage: {...}}``; the workflow writes it to ``<workdir>/timing.json``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_open: list[str] = []  # the stack of open stages, outermost first
_rows: dict[str, dict] = {}
_listening = False


def _row(name: str) -> dict:
    if name not in _rows:
        _rows[name] = {"wall_s": 0.0, "compile_s": 0.0, "n_compiles": 0, "cache_hits": 0,
                       "input_s": 0.0, "device_s": 0.0, "compiles": collections.Counter()}
    return _rows[name]


def add(key: str, seconds: float) -> None:
    """Add ``seconds`` to ``key`` ("input_s" | "device_s") of every open stage."""
    with _lock:
        for name in _open:
            _row(name)[key] += seconds


@contextlib.contextmanager
def waiting(key: str):
    """Time a block as ``key`` ("input_s" | "device_s") of the open stages."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(key, time.perf_counter() - t0)


def timed_iter(iterable):
    """Yield from ``iterable``, timing each ``next`` as ``input_s`` of the open stages."""
    it = iter(iterable)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            add("input_s", time.perf_counter() - t0)
            return
        add("input_s", time.perf_counter() - t0)
        yield item


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event not in _COMPILE_EVENTS or not _open:
        return
    with _lock:
        for name in _open:
            row = _row(name)
            row["compile_s"] += duration
            if event == _BACKEND_COMPILE:
                row["n_compiles"] += 1
                row["compiles"][str(kwargs.get("fun_name", "?"))] += 1


def _on_event(event: str, **kwargs) -> None:
    if event == _CACHE_HIT and _open:
        with _lock:
            for name in _open:
                _row(name)["cache_hits"] += 1


def _listen() -> None:
    global _listening
    if _listening:
        return
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(_on_duration)
    monitoring.register_event_listener(_on_event)
    _listening = True


@contextlib.contextmanager
def stage(name: str):
    """Time the block as stage ``name`` (nested names are recorded as "outer/inner")."""
    _listen()
    full = "/".join([*_open[-1:], name]) if _open else name
    with _lock:
        _row(full)
        _open.append(full)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        with _lock:
            _row(full)["wall_s"] += time.perf_counter() - t0
            _open.remove(full)


def breakdown() -> dict:
    """``{stage: {wall_s, compile_s, n_compiles, cache_hits, input_s, device_s, other_s,
    compiles: {function: count}, recompiled: [functions compiled more than once: other shapes
    or static arguments, or the same ones again]}}``."""
    with _lock:
        out = {}
        for name, row in _rows.items():
            r = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                 if k != "compiles"}
            r["other_s"] = round(row["wall_s"] - row["compile_s"] - row["input_s"]
                                 - row["device_s"], 3)
            r["compiles"] = dict(sorted(row["compiles"].items()))
            r["recompiled"] = sorted(f for f, n in row["compiles"].items() if n > 1)
            out[name] = r
        return out


def reset() -> None:
    """Forget every recorded stage (stages still open keep timing)."""
    with _lock:
        _rows.clear()


__all__ = ["add", "breakdown", "reset", "stage", "timed_iter", "waiting"]
