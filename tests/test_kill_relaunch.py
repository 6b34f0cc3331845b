"""Crash safety: the whole job, SIGKILLed at random moments in every stage and relaunched with
the same --workdir each time, ends with the outputs of an uninterrupted run.

    bash scripts/test.sh -m slow -k kill      # or: python -m pytest -m slow tests/test_kill_relaunch.py -s

The stage a run is in is read from the work directory (the first artefact of STAGES still
missing). A campaign runs one fresh work directory to the end, killing it once in each stage it
targets: when the relaunched process reaches that stage, the kill waits a uniformly random time
up to ``scale`` × the stage's duration in the uninterrupted reference run, and lands only if the
process is still in that stage. A relaunch reuses the compilation cache and can run a stage much
faster than the reference, so a stage that was missed has its ``scale`` cut and is targeted
again by the next campaign, until every stage has been killed in. The killed runs' final
outputs must equal the reference's, and no temporary file of a killed writer may be left.
Prints "kills survived N, max |delta| D" and the stages killed in.
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
    ("ablation + model selection", "outcome/selected_oof.csv"),
    ("report", "metrics.json"),
]
# metrics.json values that describe the run rather than its results
RUN_DEPENDENT = ("timing_s", "images_decoded_this_run", "seconds")
MAX_CAMPAIGNS = 5


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
                              + glob.glob(os.path.join(workdir, "*", "selected_oof.csv"))
                              + glob.glob(os.path.join(workdir, "mri_scores.csv"))
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
        text = [c for c in a.columns if c not in num]
        assert a[text].fillna("").equals(b[text].fillna("")), name
        d = np.abs(a[num].to_numpy(float) - b[num].to_numpy(float))
        assert np.array_equal(np.isnan(a[num].to_numpy(float)), np.isnan(b[num].to_numpy(float))), name
        worst = max(worst, float(np.nanmax(d, initial=0.0)))
    for k, v in ref_m.items():
        w = got_m[k]
        assert np.isnan(v) == np.isnan(w), k
        if not np.isnan(v):
            worst = max(worst, abs(v - w))
    return worst


def temporary_files(workdir):
    from lumbarjax.atomic import is_temporary
    return [os.path.join(d, f) for d, _, fs in os.walk(workdir) for f in fs if is_temporary(f)]


def campaign(dir_, targets, durations, scale, rng, log_path, cache):
    """One fresh work directory, killed once in each stage of ``targets`` it can catch, then run
    to the end. Returns [(target, stage at the kill)] and the targets it missed."""
    stages = [s for s, _ in STAGES]
    hits, missed, proc = [], [], None
    for target in targets:
        with open(log_path, "a") as log:
            if proc is None:
                proc = launch(dir_, log, cache)
            while proc.poll() is None and stages.index(target) > _index(stage_of(dir_)):
                time.sleep(0.02)
            if proc.poll() is not None or stage_of(dir_) != target:
                missed.append(target)  # ended, or ran through the stage between two polls
                continue
            deadline = time.monotonic() + rng.uniform(0.0, scale[target] * durations[target])
            while proc.poll() is None and stage_of(dir_) == target and time.monotonic() < deadline:
                time.sleep(0.01)
            where = stage_of(dir_)
            if proc.poll() is None and where == target:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                hits.append((target, where))
                proc = None
            else:
                missed.append(target)
    with open(log_path, "a") as log:  # the last relaunch (or the one still running) ends the job
        if proc is None:
            proc = launch(dir_, log, cache)
        proc.wait()
    assert proc.returncode == 0, open(log_path).read()[-3000:]
    return hits, missed


def _index(stage):
    stages = [s for s, _ in STAGES]
    return len(stages) if stage == "done" else stages.index(stage)


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

    kills, deltas, log_path = [], [], tmp_path / "killed.log"
    scale = {s: 1.0 for s in stages}
    for c in range(MAX_CAMPAIGNS):
        killed_in = {w for _, w in kills}
        todo = [s for s in stages if s not in killed_in]
        if not todo and len(kills) >= 10:
            break
        # every stage not yet killed in, and more at random until the campaigns reach 10 kills
        extra = rng.sample([s for s in stages if s not in todo], max(0, min(10 - len(kills) - len(todo),
                                                                          len(stages) - len(todo))))
        targets = [s for s in stages if s in todo or s in extra]
        dir_ = str(tmp_path / f"killed{c}")
        hits, missed = campaign(dir_, targets, durations, scale, rng, log_path, cache)
        for s in missed:
            scale[s] /= 4.0
        kills += hits
        deltas.append(max_delta(reference, outputs(dir_)))
        assert temporary_files(dir_) == [], temporary_files(dir_)
        print(f"campaign {c}: killed in {[w for _, w in hits]}, missed {missed}, max |delta| {deltas[-1]:g}")
    killed_in = sorted({w for _, w in kills}, key=stages.index)
    print(f"\nkills survived {len(kills)} in {len(deltas)} campaign(s), max |delta| {max(deltas):g}; "
          f"stages killed in: {killed_in}")
    assert len(kills) >= 10, kills
    assert killed_in == stages, kills
    assert max(deltas) == 0.0
