"""One way to spread independent jobs over worker processes (``config.data.num_workers``)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

#: How often (s) a pool worker checks that the process that started it is still alive.
PARENT_POLL_S = 0.5


def _exit_with_parent(parent_pid: int, poll_s: float) -> None:
    """Pool initializer: a daemon thread ends this worker as soon as its parent is gone.

    A SIGKILLed parent (OOM killer, scheduler, ``kill -9``) leaves ``ProcessPoolExecutor``'s
    workers behind: they finish the tasks already queued to them and then wait on the task
    queue for ever, each holding its imports (~100 MB) and, mid-task, a decoded image. With
    this, a killed run leaves nothing behind and the relaunch resumes alone
    (``tests/test_preprocess_resume.py``)."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def spawn_pool(num_workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``num_workers`` spawned workers that exit when this process
    dies (:func:`_exit_with_parent`). Spawn, not fork: the parent may hold JAX's threads."""
    return ProcessPoolExecutor(int(num_workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(), PARENT_POLL_S))


def process_map(fn: Callable, jobs: Sequence, num_workers: int, *, min_jobs: int = 2,
                chunksize: int = 1) -> list:
    """``[fn(job) for job in jobs]``, in this process or in ``num_workers`` spawned ones.

    Workers are used only when ``num_workers > 0`` and there are at least ``min_jobs`` jobs
    (starting a spawned worker costs ~1-2 s of imports). ``fn`` must be a module-level function
    and each job picklable; results come back in the order of ``jobs``, so a caller whose jobs
    are deterministic gets the same result with any ``num_workers``. An exception in a job is
    raised here, as it would be in the serial loop. Spawn, not fork: the parent may hold JAX's
    threads.
    """
    jobs = list(jobs)
    if num_workers <= 0 or len(jobs) < max(min_jobs, 2):
        return [fn(job) for job in jobs]
    with spawn_pool(min(int(num_workers), len(jobs))) as pool:
        return list(pool.map(fn, jobs, chunksize=max(int(chunksize), 1)))
