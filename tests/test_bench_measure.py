"""benchmarks/run.py measurement helpers: per-round load records, noisy-round flags, medians
over quiet rounds, paired per-round ratios (no model is run; a few milliseconds)."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import run as bench  # noqa: E402


def _sleeper(seconds):
    return lambda: time.sleep(seconds)


@pytest.fixture
def threshold():
    saved = dict(bench.MEASURE)
    yield bench.MEASURE
    bench.MEASURE.update(saved)


def test_rounds_recorded_and_quiet_medians(threshold):
    threshold["max_load_per_core"] = 1e9  # every round quiet
    res = bench.alternate({"a": _sleeper(0.002), "b": _sleeper(0.006)}, rounds=3, warmup=0)
    info = res["__rounds__"]
    assert len(info) == 3
    assert all(not r["noisy"] and r["load1"] >= 0 for r in info)
    assert [n for n, _ in bench.contenders(res)] == ["a", "b"]
    assert res["a"]["quiet_rounds"] == 3 and not res["a"]["noisy"]
    assert len(res["a"]["times_s"]) == 3
    # b sleeps 3x longer than a, in the same rounds
    assert 2.0 < bench.paired_ratio(res, "b", "a") < 6.0
    assert "3 rounds, 3 quiet" in bench.rounds_summary(res)


def test_all_rounds_noisy_are_flagged(threshold):
    threshold["max_load_per_core"] = -1.0  # every round counts as noisy
    res = bench.alternate({"a": _sleeper(0.001)}, rounds=2, warmup=0)
    assert all(r["noisy"] for r in res["__rounds__"])
    assert res["a"]["noisy"] is True and res["a"]["quiet_rounds"] == 0
    assert res["a"]["median_s"] == res["a"]["median_all_s"]
    assert "ALL ROUNDS NOISY" in bench.rounds_summary(res)


def test_median_uses_only_quiet_rounds(threshold):
    res = {"x": {"times_s": [1.0, 9.0, 3.0]}, "y": {"times_s": [2.0, 9.0, 3.0]},
           "__rounds__": [{"noisy": False}, {"noisy": True}, {"noisy": False}]}
    # ratios of the quiet rounds 0 and 2: 2.0 and 1.0 -> median 1.5 (round 1 ignored)
    assert bench.paired_ratio(res, "y", "x") == pytest.approx(1.5)


def test_wait_quiet_returns_at_once_when_quiet(threshold):
    threshold["max_load_per_core"] = 1e9
    assert bench.wait_quiet(30.0) < 1.0
