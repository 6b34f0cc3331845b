"""Data-path throughput on the synthetic demo cohort: index, preprocess (cold / cached), loader.

    python benchmarks/bench_data.py --patients 160 --workdir /tmp/bench_data --out data.json

Scale mode (issue 10): index + cold preprocessing of N generated patients with W worker
processes, in a fresh interpreter per N, reporting seconds and peak RSS per patient:

    nice -n 10 python benchmarks/bench_data.py --scale 160,1000 --num-workers 2 \
        --workdir /tmp/lj_scale --cohort-mri-size 96,96 --cohort-xray-size 192,160

Stages (wall clock, one run each on whatever machine runs it):
  index        lumbarjax.data.index.index_cohort(root)           -> files/s (all files walked)
  preprocess   preprocess_cohort, empty cache (decode + resample) -> examples/s (patients/s)
  cached       preprocess_cohort again, same inputs (hash + stat)  -> examples/s
  pipeline     make_loader(batch 8, shuffle, augmentation) over the cache -> batches/s, examples/s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time

import numpy as np
import pandas as pd

from lumbarjax.data.preprocess import preprocess_cohort

AUGMENT = {"flip_lr": 0.5, "intensity": 0.1, "shift_px": 4, "noise_std": 0.02}


def records_from_manifest(manifest: pd.DataFrame, root: str) -> pd.DataFrame:
    """Minimal ``build_cohort``-style records (paths only) straight from the manifest."""
    from lumbarjax.data.index import resolve_paths

    recs: dict[str, dict] = {}
    roles = {"xray": "xray", "mri_t2_sag": "mri"}
    for _, row in manifest.iterrows():
        key = roles.get(row["role"])
        if key is None:
            continue
        r = recs.setdefault(str(row["patient_id"]), {
            "patient_id": str(row["patient_id"]), "xray_paths": "", "xray_source": "",
            "mri_paths": "", "mri_source": ""})
        r[f"{key}_paths"] = ";".join(os.path.abspath(p) for p in resolve_paths(row, root))
        r[f"{key}_source"] = row.get("source", "dicom")
    return pd.DataFrame(list(recs.values()))


def preprocess_config(args):
    """configs/default.py's config with this run's geometry (``--mri-spacing``, ``--mri-shape``,
    ``--xray-shape``): the library reads every setting it needs and has no fallback defaults."""
    from lumbarjax.defaults import get_config

    cfg = get_config()
    cfg.mri.spacing = tuple(float(v) for v in args.mri_spacing)
    cfg.mri.shape = tuple(int(v) for v in args.mri_shape)
    cfg.xray.shape = tuple(int(v) for v in args.xray_shape)
    return cfg


def _count_files(root: str) -> int:
    return sum(len(fs) for _, _, fs in os.walk(root))


def run(args) -> dict:
    from lumbarjax.data.index import index_cohort
    from lumbarjax.synthetic import make_cohort

    root = os.path.join(args.workdir, "cohort")
    cache = os.path.join(args.workdir, "cache")
    if not os.path.exists(os.path.join(root, "clinical.csv")):
        t = time.perf_counter()
        make_cohort(root, args.patients, seed=args.seed)
        print(f"wrote demo cohort ({args.patients} patients) in {time.perf_counter() - t:.1f} s")
    shutil.rmtree(cache, ignore_errors=True)
    config = preprocess_config(args)
    results: dict = {"patients": args.patients, "augment": AUGMENT,
                     "config": {"mri": {"spacing": args.mri_spacing, "shape": args.mri_shape},
                                "xray": {"shape": args.xray_shape}},
                     "batch_size": args.batch_size, "machine": platform.node(),
                     "cpus": os.cpu_count(), "num_workers": args.num_workers}

    n_files = _count_files(root)
    t = time.perf_counter()
    manifest = index_cohort(root)
    dt = time.perf_counter() - t
    results["index"] = {"seconds": dt, "files": n_files, "files_per_s": n_files / dt,
                        "rows": len(manifest)}

    records = records_from_manifest(manifest, root)
    n = len(records)
    t = time.perf_counter()
    table = preprocess_cohort(records, config, cache, num_workers=args.num_workers)
    dt = time.perf_counter() - t
    results["preprocess_cold"] = {"seconds": dt, "examples": n, "examples_per_s": n / dt,
                                  "images_decoded": table.attrs["n_decoded"],
                                  "excluded": int(table["excluded"].sum())}
    t = time.perf_counter()
    table2 = preprocess_cohort(records, config, cache)
    dt = time.perf_counter() - t
    results["preprocess_cached"] = {"seconds": dt, "examples": n, "examples_per_s": n / dt,
                                    "images_decoded": table2.attrs["n_decoded"]}

    from lumbarjax.data.pipeline import CachedExamples, make_loader  # grain: slow to import

    extras = {"labels": {"y": np.zeros(n, np.float32)}}
    source = CachedExamples(table, extras)
    it = make_loader(source, batch_size=args.batch_size, shuffle=True, seed=0, augment=AUGMENT,
                     num_threads=args.threads, prefetch_buffer_size=max(args.threads * 2, 0))
    next(it)  # warm-up (first file opens)
    t = time.perf_counter()
    for _ in range(args.batches):
        b = next(it)
    dt = time.perf_counter() - t
    results["pipeline"] = {"seconds": dt, "batches": args.batches,
                           "batches_per_s": args.batches / dt,
                           "examples_per_s": args.batches * args.batch_size / dt,
                           "threads": args.threads,
                           "batch_mb": sum(v.nbytes for v in b.values()
                                           if isinstance(v, np.ndarray)) / 2**20}
    return results


def _peak_rss_mb() -> dict:
    """Peak resident memory (MiB) of this process."""
    import resource
    return {"self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}  # KiB on Linux


class ChildMemory:
    """Samples the resident memory of this process's children (the worker processes) from
    /proc every ``period`` s: ``peak_mb`` is the largest VmHWM seen. (getrusage's
    RUSAGE_CHILDREN is no use here: a spawned child inherits the parent's RSS at fork.)"""

    def __init__(self, period: float = 0.2):
        import threading
        self.period, self.peak_mb, self.n_children = period, 0.0, 0
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        me = str(os.getpid())
        while not self._stop.wait(self.period):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/status") as f:
                        fields = dict(line.split(":", 1) for line in f if ":" in line)
                except OSError:
                    continue
                if fields.get("PPid", "").strip() != me or "VmHWM" not in fields:
                    continue
                self._seen.add(int(pid))
                self.n_children = len(self._seen)
                self.peak_mb = max(self.peak_mb, int(fields["VmHWM"].split()[0]) / 1024.0)


def scale_one(args) -> dict:
    """Index + cold preprocessing of ``args.patients`` generated patients (cohort written first,
    outside the timing). Run it in a fresh interpreter: the peak RSS is the process's own."""
    from lumbarjax.data.index import index_cohort
    from lumbarjax.synthetic import make_cohort

    root = os.path.join(args.workdir, f"cohort_{args.patients}")
    cache = os.path.join(args.workdir, f"cache_{args.patients}")
    if not os.path.exists(os.path.join(root, ".complete.json")):
        t = time.perf_counter()
        make_cohort(root, args.patients, seed=args.seed, overwrite=True, n_mc=2000,
                    mri_size=args.cohort_mri_size, xray_size=args.cohort_xray_size)
        print(f"wrote cohort ({args.patients} patients) in {time.perf_counter() - t:.0f} s",
              flush=True)
    rss_before = _peak_rss_mb()["self_mb"]
    shutil.rmtree(cache, ignore_errors=True)
    config = preprocess_config(args)
    with ChildMemory() as children:
        t = time.perf_counter()
        manifest = index_cohort(root, num_workers=args.num_workers)
        t_index = time.perf_counter() - t
        records = records_from_manifest(manifest, root)
        t = time.perf_counter()
        table = preprocess_cohort(records, config, cache, num_workers=args.num_workers)
        t_pre = time.perf_counter() - t
    n = len(records)
    rss = {"self_mb": _peak_rss_mb()["self_mb"], "max_child_mb": children.peak_mb,
           "children": children.n_children}
    return {"patients": args.patients, "patients_indexed": n, "files": _count_files(root),
            "num_workers": args.num_workers, "index_s": t_index, "preprocess_s": t_pre,
            "s_per_patient": (t_index + t_pre) / n, "excluded": int(table["excluded"].sum()),
            "peak_rss_mb": rss, "rss_before_mb": rss_before,
            "peak_rss_kb_per_patient": 1024.0 * max(rss["self_mb"], rss["max_child_mb"]) / n,
            "cohort_mri_size": args.cohort_mri_size, "cohort_xray_size": args.cohort_xray_size,
            "load_avg": os.getloadavg()}


def scale(args) -> list[dict]:
    """``scale_one`` for each N of ``--scale`` in its own subprocess."""
    import subprocess
    import sys
    out = []
    for n in args.scale:
        cmd = [sys.executable, os.path.abspath(__file__), "--scale-one", "--patients", str(n),
               "--num-workers", str(args.num_workers), "--workdir", args.workdir,
               "--cohort-mri-size", ",".join(map(str, args.cohort_mri_size)),
               "--cohort-xray-size", ",".join(map(str, args.cohort_xray_size)),
               "--mri-shape", ",".join(map(str, args.mri_shape)),
               "--mri-spacing", ",".join(map(str, args.mri_spacing)),
               "--xray-shape", ",".join(map(str, args.xray_shape))]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = out[-1]
        print(f"{n:5d} patients, {r['files']} files, {r['num_workers']} workers: index "
              f"{r['index_s']:.1f} s + preprocess {r['preprocess_s']:.1f} s = "
              f"{r['s_per_patient'] * 1e3:.0f} ms/patient; peak RSS {r['peak_rss_mb']['self_mb']:.0f} "
              f"MiB (largest of {r['peak_rss_mb']['children']} workers "
              f"{r['peak_rss_mb']['max_child_mb']:.0f} MiB) = "
              f"{r['peak_rss_kb_per_patient']:.0f} KiB/patient; load {r['load_avg'][0]:.1f}",
              flush=True)
    return out


def print_table(r: dict) -> None:
    rows = [
        ("index", f"{r['index']['files']} files", f"{r['index']['seconds']:.2f}",
         f"{r['index']['files_per_s']:.1f} files/s"),
        ("preprocess cold", f"{r['preprocess_cold']['examples']} patients",
         f"{r['preprocess_cold']['seconds']:.2f}",
         f"{r['preprocess_cold']['examples_per_s']:.2f} examples/s"),
        ("preprocess cached", f"{r['preprocess_cached']['examples']} patients",
         f"{r['preprocess_cached']['seconds']:.3f}",
         f"{r['preprocess_cached']['examples_per_s']:.1f} examples/s"),
        ("pipeline (B=%d, aug)" % r["batch_size"], f"{r['pipeline']['batches']} batches",
         f"{r['pipeline']['seconds']:.2f}",
         f"{r['pipeline']['batches_per_s']:.2f} batches/s = "
         f"{r['pipeline']['examples_per_s']:.1f} examples/s"),
    ]
    w = [max(len(x[i]) for x in rows + [("stage", "work", "seconds", "throughput")])
         for i in range(4)]
    for row in [("stage", "work", "seconds", "throughput")] + rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(row)))


def _ints(s):
    return [int(v) for v in s.split(",")]


def _floats(s):
    return [float(v) for v in s.split(",")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--patients", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/lumbarjax_bench_data")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--mri-spacing", type=_floats, default=[4.0, 2.0, 2.0])
    p.add_argument("--mri-shape", type=_ints, default=[16, 128, 128])
    p.add_argument("--xray-shape", type=_ints, default=[256, 256])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--threads", type=int, default=0, help="grain reader threads")
    p.add_argument("--num-workers", type=int, default=0,
                   help="worker processes for indexing and preprocessing (0 = serial)")
    p.add_argument("--scale", type=_ints, default=None,
                   help="scale mode: comma-separated patient counts, each in a fresh process")
    p.add_argument("--scale-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cohort-mri-size", type=_ints, default=[176, 176],
                   help="scale mode: rows,cols of the generated MR slices")
    p.add_argument("--cohort-xray-size", type=_ints, default=[384, 320],
                   help="scale mode: rows,cols of the generated X-rays")
    args = p.parse_args(argv)
    if args.scale_one:
        print(json.dumps(scale_one(args)))
        return None
    if args.scale:
        results = scale(args)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
        return results
    results = run(args)
    print_table(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
