"""Localiser error in mm on the demo's synthetic pretraining cohort read in the RSNA 2024 layout.

    python benchmarks/studies/localiser/bench_localiser.py --patients 200 --steps 400 --dir /tmp/loc_bench

Writes the cohort (``write_synthetic_pretraining``), reads it with ``read_rsna2024``,
preprocesses the sagittal T2 at the demo's MRI grid (configs/demo.py: 8 x 96 x 64 at
4 x 2.5 x 2.5 mm), trains ``LevelLocaliser`` on 80 % and prints the held-out error (mm, per
level) beside the mean-position baseline, as one JSON line. Targets: the RSNA canal
coordinates the writer placed at the synthetic disc centres.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--dir", default="/tmp/loc_bench")
    a = ap.parse_args()
    import pandas as pd

    from configs import demo
    from lumbarjax.data.index import resolve_paths
    from lumbarjax.data.preprocess import preprocess_cohort
    from lumbarjax.data.public import rsna2024
    from lumbarjax.synthetic.rsna_layout import write_synthetic_pretraining
    from lumbarjax.pipelines import localise

    t0 = time.perf_counter()
    root = os.path.join(a.dir, f"rsna_demo_{a.patients}")
    write_synthetic_pretraining(root, n_patients=a.patients, seed=1)
    t_write = time.perf_counter() - t0
    data = rsna2024.read_rsna2024(root)
    m = data.manifest
    rec = pd.DataFrame({"patient_id": m["patient_id"], "xray_paths": "", "xray_source": "",
                        "mri_paths": [";".join(resolve_paths(r, root)) for _, r in m.iterrows()],
                        "mri_source": "dicom"})
    cfg = demo.get_config()
    cache = preprocess_cohort(rec, cfg, os.path.join(a.dir, "cache"))
    imgs, tg, mask, spacing, ids = localise.localiser_data(cache, localise.centres_from_rsna(data.coordinates))
    t1 = time.perf_counter()
    _, rep = localise.train_localiser(imgs, tg, mask, spacing, steps=a.steps, width=a.width, seed=0)
    rep.update(patients=len(ids), grid=list(cfg.mri.shape), spacing_mm=list(cfg.mri.spacing),
               write_s=round(t_write, 1), train_s=round(time.perf_counter() - t1, 1), load=os.getloadavg())
    print(json.dumps(rep))


if __name__ == "__main__":
    main()
