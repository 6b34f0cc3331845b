"""Scale-out with ``jax.distributed``: two processes on this machine (one CPU device each, gloo
collectives) train the grader and the outcome network with the project's training loop,
stopped after 3 of 6 steps and relaunched to the end, and end with the losses, evaluations and
parameters of ONE process on TWO forced CPU devices running the same config uninterrupted; each
process reads from the grain loader only its own rows of every global batch.

Each process runs ``_multiprocess_worker.py`` (jax must be set up before it is imported). Every
launch has a deadline; on a failure or the deadline the process groups are killed, so a hung
collective cannot hang the suite. Slow (2-3 minutes on 2 busy cores: 5 JAX processes
that each compile two models):

    bash scripts/test.sh -m slow -k multiprocess
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_multiprocess_worker.py")
TASKS = ("grader", "outcome")
STOP_AT, NUM_STEPS, BATCH = 3, 6, 4
DEADLINE_S = 500  # per launch (baseline + first half together, then the second half)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _run(jobs: dict, folder) -> dict:
    """Start ``{name: (argv, env)}`` at once, each in its own process group, logs to files;
    wait for all. A failure or the deadline kills every group still running."""
    procs = {}
    for name, (argv, env) in jobs.items():
        log = open(folder / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, WORKER, *argv], env=env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True), log)
    deadline = time.monotonic() + DEADLINE_S
    failed = None
    try:
        while any(p.poll() is None for p, _ in procs.values()):
            failed = next((n for n, (p, _) in procs.items() if p.poll() not in (None, 0)), None)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        failed = failed or next((n for n, (p, _) in procs.items() if p.poll() not in (None, 0)),
                                None)
    finally:
        running = [n for n, (p, _) in procs.items() if p.poll() is None]
        for n in running:
            os.killpg(procs[n][0].pid, signal.SIGKILL)
        for p, log in procs.values():
            p.wait()
            log.close()
    if failed or running:
        name = failed or running[0]
        tail = (folder / f"{name}.log").read_text()[-4000:]
        why = f"{name} exited with {procs[name][0].returncode}" if failed else \
            f"{running} still running after {DEADLINE_S} s (killed)"
        pytest.fail(f"{why}:\n{tail}")
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in jobs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("multiprocess")

    def two(stop: str, tag: str) -> dict:
        port = _free_port()
        return {f"p{i}_{tag}": ([str(d / f"p{i}_{tag}.json"), str(d / "two"), stop,
                                 f"127.0.0.1:{port}", "2", str(i)], _env(1)) for i in (0, 1)}

    first = _run({"one": ([str(d / "one.json"), str(d / "one"), "none"], _env(2)),
                  **two(str(STOP_AT), "stop")}, d)
    second = _run(two("none", "end"), d)
    return {**first, **second}


def test_two_processes_with_one_device_each(runs):
    assert (runs["one"]["process_count"], runs["one"]["device_count"]) == (1, 2)
    for i in (0, 1):
        for phase in ("stop", "end"):
            r = runs[f"p{i}_{phase}"]
            assert (r["process_index"], r["process_count"], r["device_count"],
                    r["local_device_count"]) == (i, 2, 2, 1)


def test_stopped_and_resumed_from_the_checkpoint(runs):
    for kind in TASKS:
        assert runs["one"][kind]["resumed_from"] is None
        assert runs["one"][kind]["last_step"] == NUM_STEPS
        for i in (0, 1):
            assert runs[f"p{i}_stop"][kind]["resumed_from"] is None
            assert runs[f"p{i}_stop"][kind]["last_step"] == STOP_AT
            assert runs[f"p{i}_end"][kind]["resumed_from"] == STOP_AT
            assert runs[f"p{i}_end"][kind]["last_step"] == NUM_STEPS


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", TASKS)
def test_two_processes_train_as_one_process_on_two_devices(runs, kind):
    one = runs["one"][kind]
    losses = [r["loss"] for r in one["train"]]
    assert [r["step"] for r in one["train"]] == list(range(1, NUM_STEPS + 1))
    assert len(set(np.round(losses, 6))) > 1  # it trained: not a no-op that trivially matches
    for i in (0, 1):
        two = runs[f"p{i}_end"][kind]
        assert [r["step"] for r in two["train"]] == list(range(1, NUM_STEPS + 1))
        _close(losses, [r["loss"] for r in two["train"]])
        _close([r["grad_norm"] for r in one["train"]], [r["grad_norm"] for r in two["train"]])
        assert [e["step"] for e in two["eval"]] == [e["step"] for e in one["eval"]]
        for a, b in zip(one["eval"], two["eval"]):
            assert sorted(a) == sorted(b)  # the loss, its aux and the task's selection metric
            _close([a[k] for k in sorted(a)], [b[k] for k in sorted(a)])
        assert two["best_step"] == one["best_step"]
        for name in ("params", "opt_state"):
            assert len(two[name]) == len(one[name])
            for a, b in zip(one[name], two[name]):
                _close(a, b)


def _steps(reads: list, local_batch: int, n_steps: int) -> list:
    """A launch's reads -> the rows of each step's batch (after ``train_and_evaluate``'s
    sample batch for ``model.init``: the first ``local_batch`` rows of the source)."""
    assert reads[:local_batch] == list(range(local_batch))
    rows = reads[local_batch:]
    assert len(rows) == n_steps * local_batch  # read nothing beyond its own rows
    return [rows[s * local_batch:(s + 1) * local_batch] for s in range(n_steps)]


@pytest.mark.parametrize("kind", TASKS)
def test_each_process_reads_only_its_rows_of_each_global_batch(runs, kind):
    one = runs["one"][kind]
    assert one["local_batch"] == BATCH
    global_batches = _steps(one["reads"], BATCH, NUM_STEPS)
    local = {}
    for i in (0, 1):
        stop, end = runs[f"p{i}_stop"][kind], runs[f"p{i}_end"][kind]
        assert stop["local_batch"] == end["local_batch"] == BATCH // 2
        local[i] = (_steps(stop["reads"], BATCH // 2, STOP_AT)
                    + _steps(end["reads"], BATCH // 2, NUM_STEPS - STOP_AT))
    for s, rows in enumerate(global_batches):
        p0, p1 = local[0][s], local[1][s]
        assert not set(p0) & set(p1), f"step {s + 1}: both processes read {set(p0) & set(p1)}"
        assert sorted(p0 + p1) == sorted(rows)
        # process p holds rows [p * B/2, (p + 1) * B/2) of the batch: its device's shard
        assert (p0, p1) == (rows[:BATCH // 2], rows[BATCH // 2:])


@pytest.mark.parametrize("kind", TASKS)
def test_evaluation_predicts_each_validation_row_once(runs, kind):
    val_rows = list(range(12, 18))
    for name in ("one", "p0_stop", "p1_stop", "p0_end", "p1_end"):
        predicted = runs[name][kind]["predicted"]
        assert predicted and all(sorted(p) == val_rows for p in predicted)
