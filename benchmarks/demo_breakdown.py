"""The demo end to end, with where its wall time goes, stage by stage.

    python benchmarks/demo_breakdown.py --runs=2                 # cold compilation cache, then warm
    python benchmarks/demo_breakdown.py --ref=b24306b --runs=1   # the code at another commit
    python benchmarks/demo_breakdown.py --tabulate=benchmarks/results/<file>.json

Each run is ``launch.py --config=configs/demo.py`` in a fresh process and a fresh workdir (the
synthetic cohorts are written again, everything is trained again) with two XLA CPU devices, as
``scripts/demo.sh`` runs it. The first run starts from an empty compilation cache folder, later
runs reuse it (``--config.compilation_cache``). Per run the JSON holds the wall time and peak
RSS (``/usr/bin/time``), the load average before it, and the run's ``timing.json`` (lumbarjax.
timing: per stage wall, XLA compile seconds and count, compiles per function, cache hits, input
and device waits). ``--ref`` runs the code of a git commit (a temporary worktree) instead of
the working tree; code older than the timing module gives wall time and RSS only. Also
compares the out-of-fold tables of the runs byte for byte.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = ("outcome/oof.csv", "grader/oof.csv", "mri_scores.csv")


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _sha(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def run_demo(code_dir: str, workdir: str, cache_dir: str | None, extra: list[str]) -> dict:
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = code_dir
    flags = [f"--config.compilation_cache={cache_dir}"] if cache_dir else []
    load = os.getloadavg()
    tfile = workdir + ".time"
    cmd = ["/usr/bin/time", "-o", tfile, "-f", "%e %M", sys.executable,
           os.path.join(code_dir, "launch.py"), f"--config={code_dir}/configs/demo.py",
           f"--workdir={workdir}", *flags, *extra]
    proc = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall, rss_kb = open(tfile).read().split()[-2:]
    timing_json = os.path.join(workdir, "timing.json")
    return {
        "wall_s": float(wall), "peak_rss_gb": round(int(rss_kb) / 2**20, 2),
        "load_before": [round(v, 2) for v in load],
        "stages": json.load(open(timing_json)) if os.path.exists(timing_json) else None,
        "tables": {t: _sha(os.path.join(workdir, t)) for t in TABLES},
    }


def tabulate(result: dict) -> str:
    """Markdown: one row per stage of the first run with a breakdown, wall time of each run."""
    runs = result["runs"]
    lines = [f"Host: {result['cpu']}, {result['date']}, commit {result['commit']}; "
             + "; ".join(f"run {i + 1} ({r['label']}): {r['wall_s']:.0f} s, peak RSS "
                         f"{r['peak_rss_gb']} GB, load before {r['load_before'][0]}"
                         for i, r in enumerate(runs)), ""]
    with_stages = [r for r in runs if r["stages"]]
    if not with_stages:
        return "\n".join(lines)
    head = "| stage | " + " | ".join(
        f"{r['label']} wall s | compile s (n) | input s | device s | other s" for r in with_stages)
    lines += [head, "|" + "---|" * (1 + 5 * len(with_stages))]
    names = [n for n in with_stages[0]["stages"] if n.count("/") <= 1]
    for name in names:
        cells = []
        for r in with_stages:
            s = r["stages"].get(name)
            cells += (["-"] * 5 if s is None else
                      [f"{s['wall_s']:.1f}", f"{s['compile_s']:.1f} ({s['n_compiles']})",
                       f"{s['input_s']:.1f}", f"{s['device_s']:.1f}", f"{s['other_s']:.1f}"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    recompiled = {n: s["recompiled"] for n, s in with_stages[0]["stages"].items()
                  if s["recompiled"] and n.count("/") == 1}
    if recompiled:
        lines += ["", "Functions compiled more than once in a stage (first run): "
                  + "; ".join(f"{n}: {', '.join(f)}" for n, f in recompiled.items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="demo runs (1st cold cache, then warm)")
    ap.add_argument("--ref", default="", help="git commit to run instead of the working tree")
    ap.add_argument("--scratch", default="", help="folder for workdirs and the cache (temp)")
    ap.add_argument("--cache", default="", help="compilation cache folder to use (default: a "
                                                "new one under --scratch); a full one = warm")
    ap.add_argument("--out", default="", help="JSON to write (default benchmarks/results/"
                                              "<date>-demo-breakdown[-<ref>].json)")
    ap.add_argument("--tabulate", default="", help="print the table of a result JSON and exit")
    args, extra = ap.parse_known_args()
    if args.tabulate:
        print(tabulate(json.load(open(args.tabulate))))
        return
    scratch = args.scratch or tempfile.mkdtemp(prefix="lj_demo_breakdown_")
    os.makedirs(scratch, exist_ok=True)
    code_dir = REPO
    if args.ref:
        code_dir = os.path.join(scratch, "code")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", code_dir, args.ref],
                       check=True, capture_output=True)
    commit = subprocess.run(["git", "-C", code_dir, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", code_dir, "status", "--porcelain", "--", "lumbarjax",
                                 "configs", "launch.py"], capture_output=True, text=True).stdout)
    cache = None if args.ref else (args.cache or os.path.join(scratch, "jax_cache"))
    warm_at_start = bool(cache and os.path.isdir(cache) and os.listdir(cache))
    date = datetime.date.today().isoformat()
    result = {"date": date, "cpu": _cpu(), "cores": os.cpu_count(),
              "commit": commit + ("+uncommitted" if dirty else ""), "ref": args.ref or None,
              "command": " ".join(sys.argv), "runs": []}
    try:
        for i in range(args.runs):
            label = ("no cache" if cache is None else
                     "cold cache" if i == 0 and not warm_at_start else "warm cache")
            print(f"run {i + 1}/{args.runs} ({label}) ...", flush=True)
            r = run_demo(code_dir, os.path.join(scratch, f"run{i}"), cache, extra)
            r["label"] = label
            result["runs"].append(r)
            print(f"  {r['wall_s']:.0f} s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    finally:
        if args.ref:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", code_dir],
                           capture_output=True)
    result["tables_identical_across_runs"] = len({json.dumps(r["tables"], sort_keys=True)
                                                  for r in result["runs"]}) == 1
    out = args.out or os.path.join(REPO, "benchmarks", "results", f"{date}-demo-breakdown"
                                   + (f"-{args.ref}" if args.ref else "") + ".json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(tabulate(result))
    print(f"wrote {out}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
