"""Scale: indexing + preprocessing 1,000 generated patients keeps memory flat (patients stream
through the worker processes; no volume is held beyond its own patient) and uses both cores.

    nice -n 10 python -m pytest -m slow tests/test_scale.py -s

Runs ``benchmarks/bench_data.py --scale 160,1000 --num-workers 2`` (each size in a fresh
interpreter) and compares the peak RSS of the two sizes.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_index_and_preprocess_1000_patients_with_flat_memory(tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_data.py"), "--scale", "160,1000",
           "--num-workers", "2", "--workdir", str(tmp_path), "--cohort-mri-size", "96,96",
           "--cohort-xray-size", "192,160", "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                         text=True, timeout=7200)
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout)
    small, large = json.loads(out.read_text())
    assert (small["patients"], large["patients"]) == (160, 1000)
    assert large["patients_indexed"] >= 0.95 * 1000 and large["files"] > 5 * small["files"]
    # flat: 6x the patients, the peak of any one process grows by less than 50 % (+64 MiB slack)
    peak = lambda r: max(r["peak_rss_mb"]["self_mb"], r["peak_rss_mb"]["max_child_mb"])  # noqa: E731
    assert peak(large) < 1.5 * peak(small) + 64, (peak(small), peak(large))
    # the work ran in worker processes (children with a measured peak), and few patients failed
    assert large["num_workers"] == 2 and large["peak_rss_mb"]["max_child_mb"] > 0
    assert large["excluded"] <= 0.05 * large["patients_indexed"]
