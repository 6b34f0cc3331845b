"""The demo: writes the synthetic 160-patient cohort (if absent) and runs the whole job on it —
index, grader CV, outcome CV (+ clinical-only twin), baselines, heat maps, report — sized to
finish in minutes on a 2-core CPU (README)."""

from configs import default


def get_config():
    c = default.get_config()
    c.mode = "demo"
    c.data.make_demo = True
    c.data.demo_patients = 160
    # Sized for a 2-core CPU (benchmarks/studies/encoder_designs): the 8 mid-sagittal slices (32 mm
    # around the canal) at 2.5 mm in-plane, 240 mm superior-inferior x 160 mm anterior-posterior;
    # the lateral X-ray at 160 x 160.
    c.mri.spacing = (4.0, 2.5, 2.5)
    c.mri.shape = (8, 96, 64)
    c.xray.shape = (160, 160)
    c.grader.model.width = 16
    c.outcome.model.mri.width = 16
    for t in (c.grader, c.outcome):
        t.train.eval_every = 50
        t.train.batch_size = 16
    # Why these values: README (the demo section).
    c.grader.train.num_steps = 800
    c.grader.train.eval_every = 100
    c.grader.optim.lr = 3e-3
    c.grader.augment.intensity = 0.0
    c.grader.augment.noise_std = 0.0
    # The outcome model's MRI branch: the small full-resolution "lesion2d" encoder, pretrained on
    # a separate synthetic cohort with radiologist-style stenosis grades (standing in for a public
    # labelled set such as RSNA 2024) and frozen (benchmarks/studies/encoder_designs says why).
    c.outcome.model.mri.arch = "lesion2d"
    c.outcome.augment.shift_px = 12
    c.outcome.model.freeze_mri = True
    c.outcome.train.num_steps = 200
    c.pretrain.enabled = True
    c.pretrain.make_demo = True
    c.pretrain.format = "rsna2024"   # the synthetic pretraining cohort in the RSNA 2024 layout, read as a user's download
    c.pretrain.demo_patients = 600
    # 1600 steps: the encoder leaves its initial plateau at a seed-dependent step and is still
    # improving at 800 steps (benchmarks/studies/pretrain_convergence).
    c.pretrain.train.num_steps = 1600
    c.pretrain.train.eval_every = 200
    # Level by level (pretrain.levels: the canal grade of every disc level on a crop around it
    # and the localiser that finds the levels) stays off in the demo: the whole-volume encoder
    # file serves the outcome model better and the run is shorter (benchmarks/studies/mri_levels,
    # README).
    c.pretrain.levels.enabled = False
    # The localiser is still trained on the pretraining cohort's RSNA coordinates and carried in
    # the encoder file: it places the outcome cohort's levels (its error in mm against the truth
    # is in the report) and the MRI score's heat maps are summarised at those levels.
    c.pretrain.levels.localise = True
    c.explain.max_patients = 40
    # The scale level by level beside the whole-film grader (README, "The X-ray scale level by
    # level"); landmark models from a separate 200-patient synthetic landmark cohort.
    c.levels.enabled = True
    c.levels.make_demo = True
    return c
