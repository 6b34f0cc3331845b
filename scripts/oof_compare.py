"""Max |delta| of every prediction column between two oof_run.py work directories."""
import sys, pandas as pd, numpy as np
a, b = sys.argv[1:3]
for sub in ("grader", "outcome", "outcome_clinical_only"):
    x = pd.read_csv(f"{a}/{sub}/oof.csv", dtype={"patient_id": str}); y = pd.read_csv(f"{b}/{sub}/oof.csv", dtype={"patient_id": str})
    assert list(x.columns) == list(y.columns), (sub, list(x.columns), list(y.columns))
    assert (x.patient_id.values == y.patient_id.values).all()
    cols = [c for c in x.columns if c.startswith(("pred_", "prob_")) or c in ("best_step", "fold")]
    print(sub, len(x), {c: float(np.nanmax(np.abs(x[c].to_numpy(float) - y[c].to_numpy(float)))) for c in cols})
