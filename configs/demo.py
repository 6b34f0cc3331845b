"""The demo: writes the synthetic 160-patient cohort (if absent) and runs the whole job on it —
index, grader CV, outcome CV (+ clinical-only twin), baselines, heat maps, report — in
well under 20 minutes on a 2-core CPU."""

from configs import default


def get_config():
    c = default.get_config()
    c.mode = "demo"
    c.data.make_demo = True
    c.data.demo_patients = 160
    c.mri.spacing = (4.0, 2.0, 2.0)
    c.mri.shape = (16, 128, 128)
    c.xray.shape = (256, 256)
    for t in (c.grader, c.outcome):
        t.train.num_steps = 300
        t.train.eval_every = 50
        t.train.batch_size = 16
    c.explain.max_patients = 40
    return c
