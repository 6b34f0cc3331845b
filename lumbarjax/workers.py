"""One way to spread independent jobs over worker processes (``config.data.num_workers``)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor


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
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(int(num_workers), len(jobs)), mp_context=ctx) as pool:
        return list(pool.map(fn, jobs, chunksize=max(int(chunksize), 1)))
