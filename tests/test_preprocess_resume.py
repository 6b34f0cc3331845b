"""The preprocessing cache resumes: a run SIGKILLed after k patients, relaunched on the same
cache folder, decodes only the other patients and ends with the outputs of an uninterrupted run;
the killed run's worker processes do not outlive it (``workers.spawn_pool``).

The kill lands at a known place: in the first run (``_preprocess_resume_child.py``) patient
``STUCK`` never finishes decoding, so the run (or the worker holding that patient) stalls there,
with the patients before it complete, until it is killed.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data import preprocess as pp
from tests.configs_for_tests import preprocess_config
from tests.dicom_factory import write_mr_series

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

N, STUCK = 10, 6
CONFIG = preprocess_config((4.0, 2.0, 2.0), (4, 16, 16), (16, 16))  # = the child's
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(REPO, "tests", "_preprocess_resume_child.py")


def _records(root) -> pd.DataFrame:
    rows = []
    for i in range(N):
        vol = (np.arange(5 * 24 * 20).reshape(5, 24, 20) * (i + 1) % 997).astype(np.uint16)
        paths = write_mr_series(os.path.join(root, f"P{i}"), vol, patient_id=f"P{i}", seed=i)
        rows.append({"patient_id": f"P{i}", "mri_paths": ";".join(sorted(paths)), "mri_source": "dicom",
                     "xray_paths": "", "xray_source": ""})
    return pd.DataFrame(rows)


def _complete(cache) -> int:
    d = os.path.join(cache, "mri")
    return sum(n.endswith(".json") for n in os.listdir(d)) if os.path.isdir(d) else 0


def _descendants(pid: int) -> list[int]:
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp_ in parent.items() if pp_ == p]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_preprocessing_resumes_with_the_uninterrupted_outputs(tmp_path, num_workers):
    records = _records(str(tmp_path / "cohort"))
    records_csv = str(tmp_path / "records.csv")
    records.to_csv(records_csv, index=False)
    cache, ref_cache = str(tmp_path / "cache"), str(tmp_path / "ref_cache")
    env = {**os.environ, "LJ_RESUME_STALL": records.loc[STUCK, "mri_paths"].split(";")[0],
           "PYTHONPATH": os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.Popen([sys.executable, CHILD, records_csv, cache, str(num_workers)], cwd=REPO, env=env)
    workers = []
    try:
        # serial: patients 0..STUCK-1 complete, then the run stalls on STUCK; with workers the
        # other worker goes on past it, so wait for every patient outside the blocked chunk
        want = STUCK if num_workers == 0 else N - 4
        _wait(lambda: _complete(cache) >= want or proc.poll() is not None, 60, f"{want} cache entries")
        assert proc.poll() is None, "the first run ended instead of stalling"
        time.sleep(0.3)
        workers = _descendants(proc.pid)
        assert (len(workers) >= num_workers), workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # the workers (and multiprocessing's resource tracker) go with their parent
        _wait(lambda: not any(_alive(p) for p in workers), 10, f"the killed run's workers {workers} to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:   # only if the check above failed: do not leave them behind
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    done = _complete(cache)
    assert 0 < done < N
    if num_workers == 0:
        assert done == STUCK

    resumed = pp.preprocess_cohort(records, CONFIG, cache)
    assert resumed.attrs["n_decoded"] == N - done          # continues with the rest only
    assert pp.preprocess_cohort(records, CONFIG, cache).attrs["n_decoded"] == 0
    ref = pp.preprocess_cohort(records, CONFIG, ref_cache)  # uninterrupted
    assert ref.attrs["n_decoded"] == N
    cols = ["patient_id", "mri_affine", "xray_file", "xray_transform", "errors", "excluded"]
    pd.testing.assert_frame_equal(resumed[cols], ref[cols])
    assert not resumed["excluded"].any()
    for a, b in zip(resumed["mri_file"], ref["mri_file"]):
        assert os.path.basename(a) == os.path.basename(b)   # same cache key
        np.testing.assert_array_equal(np.load(a), np.load(b))
    leftovers = [n for _, _, fs in os.walk(cache) for n in fs if ".tmp-" in n]
    assert not leftovers, leftovers
