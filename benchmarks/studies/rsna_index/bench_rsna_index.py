"""Index (and optionally preprocess) an N-study RSNA 2024-layout folder: time and peak memory.

    python benchmarks/studies/rsna_index/bench_rsna_index.py --studies 1000 --workers 1,2 --dir /tmp/rsna_bench

The folder is generated once (kept in ``--dir``; RSNA-like series sizes: sagittal T2 17 and T1
17 slices, axial T2 30; tiny 64x64 pixels, since indexing reads headers only and stops before
the pixel data) by re-writing one template series per role with new ids. Each timing runs in a
fresh subprocess so its peak RSS (``ru_maxrss`` of the parent and of its pool workers) is its
own. ``--preprocess K`` also decodes + resamples the first K studies' sagittal T2
(``preprocess_cohort``, threads = workers). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def generate(root: str, n: int) -> None:
    """Write the N-study folder: one template series per role written with pydicom
    (``rsna_layout.rsna_dataset``), then copied per study with the fixed-width ids replaced in
    the bytes (same length, so the files stay valid DICOM; occurrences are counted)."""
    import io

    import numpy as np
    import pydicom

    from lumbarjax.synthetic import rsna_layout
    from tests.dicom_factory import write_mr_series

    marker = os.path.join(root, f".bench_{n}")
    if os.path.exists(marker):
        return
    if n > 99_999:
        raise SystemExit("--studies must be < 1e5 (fixed-width ids)")
    tmpl = os.path.join(root, "..", "rsna_bench_template")
    roles = [("Sagittal T2/STIR", "sag", 17), ("Sagittal T1", "sag", 17), ("Axial T2", "ax", 30)]
    sid0 = 4_000_000  # no id below contains another as a substring
    templates = []
    for j, (desc, orient, depth) in enumerate(roles):
        se0 = 60_000_000 + 100_000 * (j + 1)
        vol = (np.arange(depth * 64 * 64).reshape(depth, 64, 64) % 1000).astype(np.uint16)
        files = []
        for p in write_mr_series(os.path.join(tmpl, str(j)), vol, orientation=orient, seed=j):
            ds = pydicom.dcmread(p)
            k = int(ds.InstanceNumber)
            buf = io.BytesIO()
            rsna_layout.rsna_dataset(ds, sid0, se0, k).save_as(buf, enforce_file_format=True)
            data = buf.getvalue()
            assert data.count(str(sid0).encode()) == 4 and data.count(str(se0).encode()) == 3
            files.append((k, data))
        templates.append((desc, se0, files))
    grades, coords, series = [], [], []
    for i in range(n):
        sid = sid0 + i
        grades.append({"study_id": sid, **{f"spinal_canal_stenosis_{lv}": i % 3
                                           for lv in ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")}})
        for j, (desc, se0, files) in enumerate(templates):
            se = se0 + i
            folder = os.path.join(root, "train_images", str(sid), str(se))
            os.makedirs(folder, exist_ok=True)
            for k, data in files:
                data = data.replace(str(sid0).encode(), str(sid).encode()).replace(
                    str(se0).encode(), str(se).encode())
                with open(os.path.join(folder, f"{k}.dcm"), "wb") as f:
                    f.write(data)
            series.append({"study_id": sid, "series_id": se, "series_description": desc})
            if j == 0:
                coords.append({"study_id": sid, "series_id": se, "instance_number": 9,
                               "condition": "spinal_canal_stenosis", "level": "L4L5", "x": 30, "y": 40})
    rsna_layout.write_tables(root, grades, coords, series)
    open(marker, "w").close()


def run_one(root: str, workers: int, preprocess: int) -> dict:
    from lumbarjax.data.index import resolve_paths
    from lumbarjax.data.public.rsna2024 import read_rsna2024

    t0 = time.perf_counter()
    data = read_rsna2024(root, workers=workers)
    t_index = time.perf_counter() - t0
    out = {"studies": int(len(data.manifest)), "workers": workers, "index_s": round(t_index, 2),
           "index_ms_per_study": round(1000 * t_index / max(1, len(data.manifest)), 2),
           "files_per_study": 17 + 17 + 30}
    if preprocess:
        import pandas as pd

        from lumbarjax.data.preprocess import preprocess_cohort
        from lumbarjax.defaults import get_config

        m = data.manifest.head(preprocess)
        rec = pd.DataFrame({"patient_id": m["patient_id"], "xray_paths": "", "xray_source": "",
                            "mri_paths": [";".join(resolve_paths(r, root)) for _, r in m.iterrows()],
                            "mri_source": "dicom"})
        cfg = get_config()  # every setting (no fallback defaults in the library); this geometry
        cfg.mri.spacing, cfg.mri.shape, cfg.xray.shape = (4.0, 2.0, 2.0), (16, 32, 32), (32, 32)
        cache = os.path.join(root, "..", f"rsna_bench_cache_{workers}_{time.time_ns()}")
        t0 = time.perf_counter()
        preprocess_cohort(rec, cfg, cache, num_workers=workers if workers > 1 else 0)
        t_pre = time.perf_counter() - t0
        out.update(preprocess_studies=int(len(m)), preprocess_s=round(t_pre, 2),
                   preprocess_ms_per_study=round(1000 * t_pre / max(1, len(m)), 1))
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.update(peak_rss_main_mb=round(self_mb, 1), peak_rss_worker_mb=round(child_mb, 1),
               load=os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--dir", default="/tmp/rsna_bench")
    ap.add_argument("--preprocess", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    root = os.path.join(a.dir, f"rsna_{a.studies}")
    if a.child:
        print(json.dumps(run_one(root, int(a.workers), a.preprocess)))
        return
    t0 = time.perf_counter()
    generate(root, a.studies)
    print(json.dumps({"generated": root, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    for w in a.workers.split(","):
        cmd = [sys.executable, __file__, "--child", "--studies", str(a.studies), "--workers", w,
               "--dir", a.dir, "--preprocess", str(a.preprocess)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
