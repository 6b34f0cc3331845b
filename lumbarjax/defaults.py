"""Every lumbarjax setting and its default: the one source of defaults.

``configs/default.py`` re-exports this module and the other config files start from it; the
library reads its defaults from here too (the clinical schema of a call made without a config,
the plausible spacing of a reader called without limits). Plain ml_collections as flax
examples/imagenet's configs/default.py; its only library import is the vocabulary module
``lumbarjax.schema``. The library reads each key it needs with ``lumbarjax.settings.setting``;
a missing or unknown key is a ConfigError.
tests/test_config_keys.py checks that every key the library reads is here and every key here
is read.

Units: MRI spacing in mm as (slice, row, col) = (left-right, superior-inferior,
anterior-posterior) for a sagittal series; shapes in voxels; VAS 0-100 mm.
"""

import ml_collections

from lumbarjax.schema import BINARY_HEADS, LEVELS, REGRESSION_HEADS

CLINICAL_NUMERIC = ("age", "bmi", "smoker", "symptom_months", "back_pain_pre", "leg_pain_pre",
                    "zcq_symptom_pre", "zcq_function_pre")
CLINICAL_CATEGORICAL = ("sex",)


def optim_config(**overrides) -> ml_collections.ConfigDict:
    """AdamW (lumbarjax.train.state.make_optimizer): linear warmup 0 -> lr over warmup_steps,
    cosine decay to lr * end_lr_ratio at train.num_steps; decoupled weight decay on the
    parameters ``decay_on`` names ("kernels": ndim > 1, not biases or norm scales | "all");
    global-norm clipping (clip_norm None/0 = off); frozen: top-level parameter names kept fixed."""
    o = ml_collections.ConfigDict(dict(lr=2e-3, weight_decay=1e-4, warmup_steps=20, clip_norm=1.0,
                                       end_lr_ratio=0.02, frozen=(), b1=0.9, b2=0.999, eps=1e-8,
                                       decay_on="kernels"))
    o.update(overrides)
    return o


def train_config(**overrides) -> ml_collections.ConfigDict:
    """The training loop (lumbarjax.train.loop.train_and_evaluate)."""
    t = ml_collections.ConfigDict(dict(
        batch_size=16,             # global batch (all devices / hosts)
        num_steps=400,             # optimiser steps
        log_every=25,              # train metrics (averaged over the interval) every N steps
        eval_every=50,             # 0 = evaluate once, at the end
        checkpoint_every=100,      # periodic checkpoints (also at every eval and at the end)
        max_to_keep=2,             # most recent checkpoints kept (for resuming)
        keep_best=1,               # best-metric checkpoints kept in addition
        best_metric="loss",        # a key of the eval metrics (each task sets its own)
        best_metric_mode="min",    # "min" | "max"
        early_stopping_patience=0,  # evaluations without improvement before stopping; 0 = off
        eval_at_start=False,       # also evaluate (and checkpoint) the initial parameters, step 0
        progress_bar=True,         # tqdm bar (only on a TTY, only process 0)
        compute_dtype=None,        # None | "float32" | "bfloat16"
        async_checkpointing=False,
        distributed=False,         # call jax.distributed.initialize()
        on_nonfinite="stop",       # NaN/Inf loss or gradient: "stop" (NonFiniteError) | "skip" the step
    ))
    t.update(overrides)
    return t


def grader_model_config() -> ml_collections.ConfigDict:
    """lumbarjax.models.resnet2d.Grader fields: num_grades K, num_levels (grades per X-ray, 1 or
    5 for L1/L2..L5/S1), head "corn" | "coral", ResNet2D backbone (stage_sizes, width = first-stage
    channels, stem "patchify" | "conv7", patch, norm "group" | "batch" | "layer", pool "avg" |
    "max" | "avgmax"), dropout on pooled features, dtype (compute; params stay float32)."""
    return ml_collections.ConfigDict(dict(
        num_grades=5, num_levels=1, head="corn", stage_sizes=(1, 1, 1, 1), width=16, stem="patchify",
        patch=4, norm="group", pool="avg", dropout=0.0, dtype="float32"))


def mri_encoder_config() -> ml_collections.ConfigDict:
    """lumbarjax.models.encoder3d.MRIEncoder fields (+ enabled): arch "slice2d" | "patch3d" |
    "vit" | "resnet3d_naive" | "lesion2d"; stage_sizes () / patch 0 / depth_patch 0 = the arch's
    default."""
    return ml_collections.ConfigDict(dict(
        enabled=True, arch="slice2d", width=32, stage_sizes=(), patch=0, depth_patch=0,
        norm="group", pool="avgmax", vit_dim=128, vit_depth=4, vit_heads=4))


def outcome_model_config() -> ml_collections.ConfigDict:
    """lumbarjax.models.fusion.OutcomeModel fields: the MRI branch (mri_encoder_config), the
    X-ray branch (ResNet2D fields + enabled), the clinical and fusion MLPs, modality dropout,
    freeze_mri (a pretrained MRI encoder kept fixed: no gradient into it, and "mri_encoder" is
    added to optim.frozen), the head names. Clinical-only twin: mri.enabled = xray.enabled = False."""
    return ml_collections.ConfigDict(dict(
        mri=mri_encoder_config(),
        xray=dict(enabled=False, stage_sizes=(1, 1, 1, 1), width=16, stem="patchify", patch=4,
                  norm="group", pool="avg"),
        clinical_hidden=(32,), fusion_hidden=(64,), dropout=0.1, modality_dropout=0.25,
        freeze_mri=False, clinical_skip=False, binary_heads=BINARY_HEADS,
        regression_heads=REGRESSION_HEADS,
        dtype="float32"))


def clinical_config() -> ml_collections.ConfigDict:
    """Validation, outcome derivation and the cohort join (lumbarjax.data.clinical,
    lumbarjax.data.outcomes, lumbarjax.data.cohort); data.clinical.default_outcome_config is
    this section.

    Keys:
      zcq_rule: "all" — success = symptom improved by ≥ ``mcid_symptom`` AND function improved
        by ≥ ``mcid_function`` AND satisfaction ≤ ``satisfaction_max`` (Stucki 1996);
        "2of3" — at least two of these three criteria.
      mcid_symptom, mcid_function: minimal clinically important difference in subscale points
        (pre − post; higher scores are worse).
      satisfaction_max: satisfaction subscale at or below which the patient is satisfied.
      max_missing_items_per_subscale: a subscale with more unanswered items is missing.
      pain_improvement_fraction: (pre − post) / pre at or above which pain "improved".
      pain_scale: "vas100" (VAS 0–100 mm) or "nrs10" (NRS 0–10, converted ×10 to mm).
      pain_scale_columns: per-column override of ``pain_scale``, e.g. {"leg_pain_pre": "nrs10"}.
      column_map: hospital header → our column name (dots allowed in the keys).
      id_column: the patient identifier column after renaming.
      required_columns: columns that must exist (error lists close matches otherwise).
      grade_columns: X-ray grade columns validated when present; num_grades: K (grades 0..K−1).
      mri_label_columns: other label columns read on the MRI (e.g. a pretraining cohort's
        "stenosis_grade"): a patient with an MRI and one of them is usable.
      sex_map: accepted spellings of sex (lower-cased) → "M" / "F". Numeric codes (1/2, 0/1)
        are not accepted because conventions differ between hospitals; declare them here
        (e.g. {"1": "M", "2": "F"} for ISO 5218) if your table uses them.
      id_map: DICOM PatientID → patient_id, applied to the manifest by ``build_cohort``.
      id_map_column: optional clinical column holding each patient's DICOM PatientID.
    """
    c = ml_collections.ConfigDict()
    c.zcq_rule = "all"             # "all" | "2of3" criteria of Stucki 1996
    c.mcid_symptom = 0.5
    c.mcid_function = 0.5
    c.satisfaction_max = 2.5
    c.max_missing_items_per_subscale = 1
    c.pain_improvement_fraction = 0.5
    c.pain_scale = "vas100"        # "vas100" | "nrs10"
    c.pain_scale_columns = ml_collections.ConfigDict({}, allow_dotted_keys=True)
    c.column_map = ml_collections.ConfigDict({}, allow_dotted_keys=True)
    c.id_column = "patient_id"
    c.required_columns = ("patient_id",)
    c.grade_columns = ("xray_grade",) + tuple(f"xray_grade_{lv}" for lv in LEVELS)
    c.num_grades = 5
    c.mri_label_columns = ()
    c.sex_map = ml_collections.ConfigDict({"m": "M", "male": "M", "f": "F", "female": "F"},
                                          allow_dotted_keys=True)
    c.id_map = ml_collections.ConfigDict({}, allow_dotted_keys=True)
    c.id_map_column = ""
    return c


def _trained(model: ml_collections.ConfigDict | None, best_metric: str) -> ml_collections.ConfigDict:
    """The settings every trained task has: its model (if any), optimiser, loop and augmentation."""
    t = ml_collections.ConfigDict()
    if model is not None:
        t.model = model
    t.optim = optim_config()
    t.train = train_config(best_metric=best_metric, best_metric_mode="max")
    t.augment = ml_collections.ConfigDict(dict(flip_lr=0.5, intensity=0.1, shift_px=4,
                                               noise_std=0.02))
    return t


def _cv(stratify_on: str, refit: bool) -> ml_collections.ConfigDict:
    """Patient-level stratified k-fold; an inner validation split of the training folds picks the
    best checkpoint, so the outer fold's out-of-fold predictions never inform training.
    refit: retrain on all the fold's training patients, stopped at the step the inner split
    chose, before predicting the test fold (costs up to a second training per fold)."""
    return ml_collections.ConfigDict(dict(num_folds=5, stratify_on=stratify_on,
                                          inner_val_fraction=0.2, refit=refit))


def pretrain_task_config() -> ml_collections.ConfigDict:
    """A pretraining task (the MRI encoder's, the X-ray backbone's): no model section (the model
    is the outcome's / grader's encoder), no cross-validation."""
    return _trained(None, "qwk")


def grader_config() -> ml_collections.ConfigDict:
    """The X-ray grader task: model, optimiser, loop, augmentation, cross-validation."""
    t = _trained(grader_model_config(), "qwk")
    t.cv = _cv("xray_grade", refit=False)
    return t


def outcome_config() -> ml_collections.ConfigDict:
    """The outcome task: the fusion model's settings, cross-validation, its clinical features and
    the reported model's selection."""
    t = _trained(outcome_model_config(), "auc_zcq_success")
    t.cv = _cv("zcq_success", refit=True)
    t.features = ml_collections.ConfigDict(dict(numeric=CLINICAL_NUMERIC,
                                                categorical=CLINICAL_CATEGORICAL))
    t.clinical_only = True  # also cross-validate the same network without images (baseline)
    # The report's outcome model (lumbarjax.selection.select): per fold and head, a convex
    # combination of the candidates, its weights fitted on the inner validation split and
    # shrunk towards equal weights. False: the fusion network alone.
    t.select_model = True
    t.stack = ml_collections.ConfigDict(dict(
        # "linear" (penalised family on clinical + stage-1 scores) | "reference" (clinical
        # logistic / ridge regression) | "network" (fusion) | "clinical network" (its twin)
        candidates=("linear", "network"),
        # image_gate: a fold combines `candidates` only where the stage-1 image scores clearly
        # help the linear family (inner k-fold split of all the fold's training patients) for
        # primary_head or for the head itself; elsewhere `clinical_candidates`
        image_gate=True,
        clinical_candidates=("reference", "clinical network"),
        primary_head="zcq_success",
        shrink=0.7,            # 0 = the fitted weights, 1 = the plain average
        weight_step=0.05,      # grid of the weights on the simplex
    ))
    # Which of the grader's out-of-fold X-ray scores the linear models see (models.stage1):
    # "summary" (expected grade, level grade, scale) or "full" (+ class probabilities,
    # per-level grades, disc height indices and listhesis).
    t.stage1_xray = "summary"
    # Which MRI scores, when the pretrained encoder grades level by level
    # (pretrain.levels): "summary" (the worst level's expected grade and class
    # probabilities) or "full" (+ the expected grade of every level).
    t.stage1_mri = "summary"
    # "glm": every outcome network (fusion and clinical-only, each fold and refit) starts as
    # the clinical logistic / ridge regression fitted on its own training patients, kept as
    # a fixed offset in the skip path; step 0 competes in the inner validation
    # (lumbarjax.selection.clinical_offset). "none": heads and skip path start at 0.
    t.clinical_offset = "glm"
    return t


def levels_config() -> ml_collections.ConfigDict:
    """The X-ray scale level by level (lumbarjax.pipelines.xray_levels): disc finder on the whole film,
    endplate refiner on per-disc crops, measured disc height index, per-level grades fitted from
    the patient grades, patient grade / scale by ``rule``."""
    return ml_collections.ConfigDict(dict(
        enabled=False,             # run it beside the grader (its columns join grader/oof.csv)
        view_shape=(160, 160),     # whole film for the disc finder (physical aspect kept)
        crop_shape=(64, 64),       # per-disc crop for the endplate refiner (48 x 48 mm at 0.75)
        crop_mm_per_px=0.75,
        finder=dict(widths=(16, 24, 32, 48), stem_stride=2, out_stride=4),
        refiner=dict(widths=(16, 24, 32, 48), stem_stride=1, out_stride=2),
        # 60 steps each are enough for the corners once the edge refinement has run (README);
        # the refiner's batch is 2 x batch_size crops
        finder_steps=60, refiner_steps=60, batch_size=16, shift_px=4,
        # finder and refiner (lumbarjax.pipelines.landmarks.fit): warmup at most a tenth of the
        # run, weight decay on every parameter
        optim=optim_config(lr=2e-3, weight_decay=1e-4, warmup_steps=20, end_lr_ratio=0.02,
                           clip_norm=1.0, decay_on="all"),
        centre_jitter_mm=4.0,      # refiner training crops are centred up to this far off
        refine_passes=2,           # refiner passes; each re-centres the crops on its corners
        edge_refine=True,          # move the corners onto the film's endplate edges
        edge_search_mm=3.0,
        rule="max",                # patient grade from the level grades: "max" | "sum"
        ref_quantile=0.9,          # a level's normal disc height index: this quantile (train folds)
        tau=0.03,                  # width of the soft cut points (expected_grade)
        model_dir="",              # saved landmark models to use (default <workdir>/levels)
        # Landmark training data, the first that is set: BUU-LSPINE lateral films (JPEGs: give
        # their pixel spacing), a synthetic-style cohort (ground_truth.csv + export/), or a
        # synthetic landmark cohort written for the purpose (never the graded cohort).
        buu_root="", buu_spacing_mm=0.0, landmark_cohort_dir="", make_demo=False,
        landmark_patients=200,
    ))


def get_config() -> ml_collections.ConfigDict:
    """The full default configuration: a new ConfigDict on each call.

    Top-level keys: seed, mode, tasks, compilation_cache and the sections data, clinical, mri,
    xray, grader, outcome, pretrain, xray_pretrain, levels, explain and eval. The files under
    ``configs/`` start from it and override keys.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mode = "crossval"            # index | crossval | report | predict | demo | evaluate (external
                                   # validation of a finished run on --cohort_dir; launch.py)
    c.tasks = ("grader", "outcome")
    # Compiled XLA executables kept on disk and reused by later runs (lumbarjax.compile_cache):
    # "auto" = $XDG_CACHE_HOME/lumbarjax/jax or ~/.cache/lumbarjax/jax; a folder; "" = off.
    c.compilation_cache = "auto"

    c.data = ml_collections.ConfigDict(dict(
        cohort_dir="",             # folder with clinical.csv/.xlsx and DICOM below it
        clinical_file="",          # default: <cohort_dir>/clinical.csv or clinical.xlsx
        manifest="",               # default: <workdir>/manifest.csv (edit it and re-run)
        cache_dir="",              # default: <workdir>/cache
        make_demo=False,           # write the synthetic demo cohort when cohort_dir is empty
        demo_patients=160,
        num_workers=2,             # worker processes for indexing / preprocessing (0 = serial)
        demo_regime="demo",        # outcome effect sizes of the demo cohort: demo | clinical_dominant
                                   # | xray_contributing | null (docs/DEMO_COHORT.md)
    ))
    c.clinical = clinical_config()
    # Preprocessing (lumbarjax.data.preprocess; the cache key): resampled to spacing (mm) and
    # cropped / padded to shape (voxels); intensities scaled so that these percentiles of the
    # image map to 0 and 1. keep_physical_aspect: the film is resampled with its pixel spacing
    # (False: stretched to xray.shape).
    c.mri = ml_collections.ConfigDict(dict(spacing=(4.0, 2.0, 2.0), shape=(16, 128, 128),
                                           norm_percentiles=(1.0, 99.0)))
    c.xray = ml_collections.ConfigDict(dict(shape=(256, 256), norm_percentiles=(1.0, 99.0),
                                            keep_physical_aspect=True))
    # Inputs outside these spacings (mm) are refused as "implausible spacing" (data.sanity).
    c.mri.plausible_spacing_mm = ml_collections.ConfigDict(dict(in_plane=(0.05, 10.0),
                                                                between_slices=(0.5, 20.0)))
    c.xray.plausible_spacing_mm = (0.02, 10.0)

    c.grader = grader_config()
    c.outcome = outcome_config()

    # Transfer learning for the outcome model's MRI encoder (lumbarjax.pipelines.pretrain): pretrain it
    # on a separate cohort with radiologist stenosis grades (e.g. RSNA 2024 lumbar spine), then
    # start the outcome model from it with the encoder frozen (outcome.model.freeze_mri). The
    # encoder is config.outcome.model.mri; the augmentation is config.outcome.augment.
    c.pretrain = pretrain_task_config()
    del c.pretrain["augment"]
    c.pretrain.train.update(num_steps=600, log_every=50, eval_every=100, checkpoint_every=200)
    c.pretrain.update(dict(
        enabled=False,
        cohort_dir="",             # cohort folder (DICOM/NIfTI below it); must not share patients
        format="lumbarjax",        # cohort_dir layout: "lumbarjax" (indexable folder + labels) |
                                   # "rsna2024" | "spider" (public sets as downloaded, data.public)
        encoder_file="",           # a pretrained encoder file (weights + model card): load, don't pretrain
        labels="",                 # format lumbarjax: CSV/Excel with patient_id + label_column; default <cohort_dir>/stenosis_labels.csv
        label_column="stenosis_grade", num_grades=3,
        make_demo=False,           # write the synthetic pretraining cohort when no labels table exists
        demo_patients=240,
    ))
    # Level by level (lumbarjax.pipelines.mri_levels): grade every disc level on a crop around its
    # centre (labels <label_column>_<LEVEL>, centres from the RSNA coordinates / SPIDER masks /
    # synthetic truth), and train the disc-level localiser that finds the centres on new scans.
    # The encoder file then carries the per-level head and the localiser.
    c.pretrain.levels = ml_collections.ConfigDict(dict(
        enabled=False,
        localise=True,             # with enabled=False: still train the localiser when the cohort has
                                   # level centres (RSNA coordinates, SPIDER masks, synthetic truth); the
                                   # encoder file carries it, the outcome cohort's levels are placed and
                                   # the MRI score's heat maps summarised at them (mri_stages.stage_mri_levels)
        crop_mm=60.0,              # crop height along the spine (mm); the whole AP width
        # lumbarjax.pipelines.localise.train_localiser: warmup at most a tenth of the run, no
        # clipping, weight decay on every parameter
        localiser=dict(steps=400, batch_size=16, width=16, slices=3,
                       optim=optim_config(lr=2e-3, weight_decay=1e-4, warmup_steps=20,
                                          end_lr_ratio=0.05, clip_norm=0.0, decay_on="all")),
    ))

    # Transfer learning for the X-ray grader (lumbarjax.pipelines.xray_pretrain): pretrain its ResNet2D
    # backbone (config.grader.model) on a public radiograph set with radiologists' findings
    # (VinDr-SpineXR as downloaded: root/annotations/<split>.csv + <split>_images/*.dicom), one
    # sigmoid per finding, then fine-tune the whole grader on the cohort's grades in every fold.
    # The augmentation is config.grader.augment.
    c.xray_pretrain = pretrain_task_config()
    del c.xray_pretrain["augment"]
    c.xray_pretrain.train.update(num_steps=1000, log_every=50, eval_every=100, checkpoint_every=200,
                                 best_metric="auc_mean", best_metric_mode="max")
    c.xray_pretrain.update(dict(
        enabled=False,
        format="vindr_spinexr",
        root="",                   # the downloaded VinDr-SpineXR folder
        split="train",             # "train" | "test"
        rule="any",                # a finding is positive when "any" reader marked it, or the "majority"
        findings=("Osteophytes", "Disc space narrowing", "Spondylolysthesis", "Foraminal stenosis"),
        backbone_file="",          # a pretrained backbone file (weights + model card): load, don't pretrain
    ))

    c.levels = levels_config()

    c.explain = ml_collections.ConfigDict(dict(
        head="zcq_success", steps=32, method="gausslegendre", chunk_size=8,
        chunk_loop="auto",         # "auto": all chunks in one compiled program (benchmarks/RESULTS.md);
                                   # "python": a host loop over jitted chunks; "scan"; "unroll"
        baseline="blurred",        # "blurred" (MRI) | "zeros"; clinical features: training mean
        blur_sigma_vox=(1.0, 4.0, 4.0),  # (slices, rows, cols)
        xray_blur_sigma_px=8.0,    # the film's blurred baseline (pixels of the preprocessed film)
        max_patients=40, gallery=8,
        xray_patients=40))         # grader CV: IG of the expected grade over the film, summarised per level
    c.eval = ml_collections.ConfigDict(dict(n_boot=1000, threshold=0.5))
    return c
