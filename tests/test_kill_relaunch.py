"""Crash safety: the whole job, SIGKILLed at random moments in every stage and relaunched with
the same --workdir each time, ends with the outputs of an uninterrupted run.

    bash scripts/test.sh -m slow -k kill      # or: python -m pytest -m slow tests/test_kill_relaunch.py -s

The stage a run is in is read from the work directory (the first artefact of STAGES still
missing); the uninterrupted reference run measures each stage's duration, and each kill lands
at a uniformly random moment within one stage's duration after the relaunched process reached it
(every stage is targeted at least once, in turn). Prints "kills survived N, max |delta| D".
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "kill_config.py")

# (stage, artefact whose appearance ends it), in the order the job writes them.
STAGES = [
    ("cohort writing", "demo_cohort/.complete.json"),
    ("indexing", "manifest.csv"),
    ("preprocessing", "cohort_summary.json"),
    ("grader CV", "grader/oof.csv"),
    ("pretraining cohort writing", "pretrain_cohort/.complete.json"),
    ("pretraining", "pretrain/mri_encoder.msgpack"),
    ("outcome CV + heat maps", "outcome/oof.csv"),
    ("clinical-only CV", "outcome_clinical_only/oof.csv"),
    ("baselines", "baseline_leg_pain_post.csv"),
    ("report", "metrics.json"),
]
# metrics.json values that describe the run rather than its results
RUN_DEPENDENT = ("timing_s", "images_decoded_this_run", "seconds")
MAX_CAMPAIGNS = 4


def stage_of(workdir: str) -> str:
    for name, artefact in STAGES:
        if not os.path.exists(os.path.join(workdir, artefact)):
            return name
    return "done"


def launch(workdir: str, log, jax_cache: str) -> subprocess.Popen:
    # The persistent compilation cache spares each relaunch the compiles (same executables:
    # same numbers); it lives outside the work directory the kills are about.
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=jax_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.Popen([sys.executable, "launch.py", f"--config={CONFIG}", f"--workdir={workdir}"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def watch(proc, workdir, *, poll=0.05):
    """Run to the end; returns {stage: seconds spent in it} and the time to the first stage."""
    t0 = time.monotonic()
    times, current, since = {}, None, None
    while proc.poll() is None:
        s = stage_of(workdir)
        if s != current:
            now = time.monotonic()
            if current is not None:
                times[current] = now - since
            current, since = s, now
        time.sleep(poll)
    times[current] = time.monotonic() - since
    return times, t0


def numbers(obj, prefix=""):
    """{dotted key: float} of every number in a JSON tree, run-dependent keys left out."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in RUN_DEPENDENT:
                continue
            out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = float(obj)
    return out


def outputs(workdir):
    """Out-of-fold / baseline tables and metrics.json numbers of a finished run."""
    tables = {os.path.relpath(p, workdir): pd.read_csv(p, dtype={"patient_id": str})
              for p in sorted(glob.glob(os.path.join(workdir, "*", "oof.csv"))
                              + glob.glob(os.path.join(workdir, "baseline_*.csv")))}
    with open(os.path.join(workdir, "metrics.json")) as f:
        return tables, numbers(json.load(f))


def max_delta(ref, got) -> float:
    ref_t, ref_m = ref
    got_t, got_m = got
    assert sorted(got_t) == sorted(ref_t)
    assert sorted(got_m) == sorted(ref_m)
    worst = 0.0
    for name, a in ref_t.items():
        b = got_t[name]
        assert list(a.columns) == list(b.columns) and list(a["patient_id"]) == list(b["patient_id"]), name
        num = a.select_dtypes("number").columns
        d = np.abs(a[num].to_numpy(float) - b[num].to_numpy(float))
        assert np.array_equal(np.isnan(a[num].to_numpy(float)), np.isnan(b[num].to_numpy(float))), name
        worst = max(worst, float(np.nanmax(d, initial=0.0)))
    for k, v in ref_m.items():
        w = got_m[k]
        assert np.isnan(v) == np.isnan(w), k
        if not np.isnan(v):
            worst = max(worst, abs(v - w))
    return worst


@pytest.mark.slow
def test_sigkill_anywhere_then_relaunch_gives_the_uninterrupted_outputs(tmp_path):
    rng = random.Random(20261201)
    ref_dir = str(tmp_path / "reference")
    cache = str(tmp_path / "jax_cache")
    with open(tmp_path / "reference.log", "w") as log:
        proc = launch(ref_dir, log, cache)
        durations, _ = watch(proc, ref_dir)
    assert proc.returncode == 0, open(tmp_path / "reference.log").read()[-3000:]
    reference = outputs(ref_dir)
    print("\nreference run, seconds per stage:", {k: round(v, 1) for k, v in durations.items()})
    stages = [s for s, _ in STAGES]
    assert set(stages) <= set(durations), durations

    # Campaigns: each kills one fresh work directory stage by stage until it is done, then lets
    # the last relaunch finish and compares its outputs with the reference. A relaunch reuses the
    # compilation cache and can outrun the reference's stage timings, so one campaign may land
    # fewer kills than there are stages: campaigns repeat until >= 10 kills have covered every
    # stage but at most one (at most MAX_CAMPAIGNS).
    kills, deltas, log_path = [], [], tmp_path / "killed.log"
    for campaign in range(MAX_CAMPAIGNS):
        dir_ = str(tmp_path / f"killed{campaign}")
        for target in stages + rng.sample(stages, 2):  # every stage once, two at random again
            if stage_of(dir_) == "done":
                break
            if stages.index(target) < stages.index(stage_of(dir_)):
                continue  # already past it
            with open(log_path, "a") as log:
                proc = launch(dir_, log, cache)
                while proc.poll() is None and stage_of(dir_) != target:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, max(durations[target], 0.2)))
                if proc.poll() is None:
                    where = stage_of(dir_)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills.append((campaign, target, where))
                else:  # it ended on its own: it must have finished cleanly
                    assert proc.returncode == 0, open(log_path).read()[-3000:]
        with open(log_path, "a") as log:  # the last relaunch runs to the end
            proc = launch(dir_, log, cache)
            proc.wait()
        assert proc.returncode == 0, open(log_path).read()[-3000:]
        deltas.append(max_delta(reference, outputs(dir_)))
        killed_in = sorted({w for _, _, w in kills})
        if len(kills) >= 10 and len(killed_in) >= len(stages) - 1:
            break
    print(f"\nkills survived {len(kills)} in {len(deltas)} campaign(s), max |delta| {max(deltas):g}; "
          f"stages killed in: {killed_in}")
    assert len(kills) >= 10, kills
    assert len(killed_in) >= len(stages) - 1, kills
    assert max(deltas) == 0.0
