"""Defaults shared by every lumbarjax experiment; the other config files start from here.

Units: MRI spacing in mm as (slice, row, col) = (left-right, superior-inferior,
anterior-posterior) for a sagittal series; shapes in voxels; VAS 0-100 mm.
"""

import ml_collections

from lumbarjax.data.clinical import default_outcome_config
from lumbarjax.models.fusion import default_grader_model_config, default_outcome_model_config

CLINICAL_NUMERIC = ("age", "bmi", "smoker", "symptom_months", "back_pain_pre", "leg_pain_pre",
                    "zcq_symptom_pre", "zcq_function_pre")
CLINICAL_CATEGORICAL = ("sex",)


def task_config(kind: str) -> ml_collections.ConfigDict:
    """Model, optimiser, training and augmentation settings of one task ('grader' | 'outcome')."""
    t = ml_collections.ConfigDict()
    t.model = default_grader_model_config() if kind == "grader" else default_outcome_model_config()
    t.optim = ml_collections.ConfigDict(dict(lr=2e-3, weight_decay=1e-4, warmup_steps=20,
                                             clip_norm=1.0, end_lr_ratio=0.02, frozen=()))
    t.train = ml_collections.ConfigDict(dict(
        batch_size=16, num_steps=400, log_every=25, eval_every=50, checkpoint_every=100,
        best_metric="qwk" if kind == "grader" else "auc_zcq_success", best_metric_mode="max",
        early_stopping_patience=0, progress_bar=True, compute_dtype=None,
        async_checkpointing=False))
    t.augment = ml_collections.ConfigDict(dict(flip_lr=0.5, intensity=0.1, shift_px=4,
                                               noise_std=0.02))
    # Patient-level stratified k-fold; an inner validation split of the training folds picks the
    # best checkpoint, so the outer fold's out-of-fold predictions never inform training.
    t.cv = ml_collections.ConfigDict(dict(
        num_folds=5, stratify_on="xray_grade" if kind == "grader" else "zcq_success",
        inner_val_fraction=0.2))
    if kind == "outcome":
        t.features = ml_collections.ConfigDict(dict(numeric=CLINICAL_NUMERIC,
                                                    categorical=CLINICAL_CATEGORICAL))
        t.clinical_only = True  # also cross-validate the same network without images (baseline)
    return t


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mode = "crossval"            # index | crossval | evaluate | report | predict | demo
    c.tasks = ("grader", "outcome")

    c.data = ml_collections.ConfigDict(dict(
        cohort_dir="",             # folder with clinical.csv/.xlsx and DICOM below it
        clinical_file="",          # default: <cohort_dir>/clinical.csv or clinical.xlsx
        manifest="",               # default: <workdir>/manifest.csv (edit it and re-run)
        cache_dir="",              # default: <workdir>/cache
        make_demo=False,           # write the synthetic demo cohort when cohort_dir is empty
        demo_patients=160,
    ))
    c.clinical = default_outcome_config()
    c.mri = ml_collections.ConfigDict(dict(spacing=(4.0, 2.0, 2.0), shape=(16, 128, 128)))
    c.xray = ml_collections.ConfigDict(dict(shape=(256, 256)))

    c.grader = task_config("grader")
    c.outcome = task_config("outcome")

    # Transfer learning for the outcome model's MRI encoder (lumbarjax.train.pretrain): pretrain it
    # on a separate cohort with radiologist stenosis grades (e.g. RSNA 2024 lumbar spine), then
    # start the outcome model from it with the encoder frozen (outcome.optim.frozen).
    c.pretrain = ml_collections.ConfigDict(dict(
        enabled=False,
        cohort_dir="",             # cohort folder (DICOM/NIfTI below it); must not share patients
        format="lumbarjax",        # cohort_dir layout: "lumbarjax" (indexable folder + labels) |
                                   # "rsna2024" | "spider" (public sets as downloaded, data.public)
        encoder_file="",           # a pretrained encoder file (weights + model card): load, don't pretrain
        labels="",                 # format lumbarjax: CSV/Excel with patient_id + label_column; default <cohort_dir>/stenosis_labels.csv
        label_column="stenosis_grade", num_grades=3,
        make_demo=False,           # write the synthetic pretraining cohort when no labels table exists
        demo_patients=240,
        train=dict(batch_size=16, num_steps=600, log_every=50, eval_every=100, checkpoint_every=200,
                   best_metric="qwk", best_metric_mode="max", early_stopping_patience=0,
                   progress_bar=True, compute_dtype=None, async_checkpointing=False),
        optim=dict(lr=2e-3, weight_decay=1e-4, warmup_steps=20, clip_norm=1.0, end_lr_ratio=0.02),
    ))

    c.explain = ml_collections.ConfigDict(dict(
        head="zcq_success", steps=32, method="gausslegendre", chunk_size=8,
        chunk_loop="python",       # "python": a host loop over jitted chunks (fastest on CPU); "scan"
        baseline="blurred",        # "blurred" (MRI) | "zeros"; clinical features: training mean
        blur_sigma_vox=(1.0, 4.0, 4.0),  # (slices, rows, cols)
        max_patients=40, gallery=8))
    c.eval = ml_collections.ConfigDict(dict(n_boot=1000, threshold=0.5))
    return c
