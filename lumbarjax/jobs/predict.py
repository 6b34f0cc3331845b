"""Use a finished cross-validation: predict one new patient, or regenerate the run's report.

* :func:`load_fold_models` rebuilds the k fold models of one task from the run's config and
  restores each fold's best checkpoint (the one its out-of-fold predictions came from).
* :func:`predict_patient` reads ONE new patient folder (a DICOM export, optionally with a
  one-row ``clinical.csv``), preprocesses it exactly as the run did and runs every fold model:
  per head the fold-ensemble mean with its spread across the k fold models (SD, min–max: the
  model's cross-validation uncertainty, not a confidence interval for this patient), the
  grader's grade probabilities likewise, integrated-gradients heat maps of the ensemble (the
  mean of the fold models' attributions) and a self-contained ``prediction.html`` +
  ``prediction.json``.
* :func:`report_from_workdir` re-draws ``report.html`` / ``metrics.json`` of a finished run
  from its saved artefacts (OOF tables, baselines, saved IG maps) without training.

Only the pseudonymous ``patient_id`` (DICOM PatientID, optionally translated by
``config.clinical.id_map`` / ``id_map_column``) is written; no other DICOM header value.
"""

from __future__ import annotations

import datetime as _dt
import glob
import html
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.atomic import atomic_path
from lumbarjax.data.preprocess import load_affine
from lumbarjax.errors import CohortError, ConfigError, DicomError
from lumbarjax.explain import heatmaps

__all__ = ["FoldModel", "TASKS", "saved_config", "check_run_config", "load_fold_models",
           "predict_patient", "report_from_workdir", "feature_frame"]



class FoldModel(NamedTuple):
    """One restored fold model. ``state.step`` is the optimiser step of the checkpoint."""
    model: Any                    # flax module (eval mode: ``model.apply(state.variables, b)``)
    state: Any                    # TrainState restored from the fold's best checkpoint
    encoder: Any                  # ClinicalEncoder of the fold (outcome tasks) or None
    fold: int


# -- the run's config -----------------------------------------------------------------------

def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config a run saved as ``<workdir>/config.json`` (``workflow.run`` writes it), or
    None when absent. JSON lists stand where the original had tuples."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run config: {e}") from e


def _plain(x):
    """ConfigDict / tuples -> JSON-comparable plain values."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    return json.loads(json.dumps(x, default=str))


# Sections that must equal the run's for its checkpoints and preprocessing to apply.
_MUST_MATCH = ("seed", "mri", "xray", "grader.model", "grader.optim", "grader.train.num_steps",
               "outcome.model", "outcome.features", "outcome.optim", "outcome.train.num_steps",
               "clinical")


def _section(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return _plain(node)


def check_run_config(config, workdir: str) -> list[str]:
    """Compare ``config`` with the run's saved ``config.json`` on everything the checkpoints
    and the preprocessing depend on. Returns notes (empty = identical or nothing saved).

    Raises:
      ConfigError: a model / preprocessing / feature section differs (names the sections).
    """
    saved = saved_config(workdir)
    if saved is None:
        return [f"{workdir} has no config.json: the given config is assumed to be the run's"]
    diff = [s for s in _MUST_MATCH if _section(config, s) != _section(saved, s)]
    if diff:
        raise ConfigError(f"the config differs from the run's {os.path.join(workdir, 'config.json')} "
                          f"in {diff}: the checkpoints and preprocessing of that run need the "
                          "same settings (pass the run's config file and overrides)")
    return []


# -- fold models --------------------------------------------------------------------------

_MEMO: dict = {}


def _memo(key, make):
    """One object per key for this process: equal configs give the very same model, jitted
    forward and IG head function, so a second prediction compiles nothing."""
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


def _sample_batch(config, num_features: int) -> dict:
    """A one-example batch of the run's input shapes (for model init / abstract state)."""
    d, h, w = (int(v) for v in config.mri.shape)
    xh, xw = (int(v) for v in config.xray.shape)
    return {"mri": np.zeros((1, d, h, w, 1), np.float32), "mri_present": np.ones((1,), np.float32),
            "xray": np.zeros((1, xh, xw, 1), np.float32), "xray_present": np.ones((1,), np.float32),
            "clinical": np.zeros((1, num_features), np.float32),
            "index": np.zeros((1,), np.int32), "valid": np.ones((1,), np.float32)}


def _abstract_state(config, model, num_features: int, run_cfg, num_steps: int):
    """The train state's structure, shapes and (replicated) shardings, without running or
    compiling the init: ``jax.eval_shape`` of ``create_train_state``."""
    from lumbarjax.train.state import create_train_state
    from lumbarjax.train.mesh import make_mesh, replicated_sharding
    batch = _sample_batch(config, num_features)
    shapes = jax.eval_shape(lambda: create_train_state(jax.random.PRNGKey(int(config.seed)), model,
                                                       batch, run_cfg, num_steps=num_steps))
    repl = replicated_sharding(make_mesh())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), shapes)


def _choose_step(mngr, fold_dir: str) -> tuple[int, str]:
    """The step whose weights made the fold's OOF predictions: the loop's recorded best step,
    else orbax's best step, else the latest."""
    import orbax.checkpoint as ocp
    latest = mngr.latest_step()
    if latest is None:
        raise CohortError(f"{fold_dir}/checkpoints: no checkpoint (is the cross-validation finished?)")
    steps = set(mngr.all_steps())
    try:
        loop = mngr.restore(latest, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"]
        best = loop.get("best_step")
    except Exception as e:  # noqa: BLE001 - older checkpoints: fall back to orbax's view
        logging.warning("%s: cannot read the loop bookkeeping (%s); using orbax's best step",
                        fold_dir, e)
        best = None
    if best is not None and int(best) in steps:
        return int(best), "best"
    best = mngr.best_step()
    if best is not None:
        return int(best), "best (orbax)"
    return int(latest), "latest"


def load_fold_models(config, workdir: str, task: str) -> list[FoldModel]:
    """Rebuild and restore every fold model of a finished cross-validation.

    Args:
      config: the run's config (see :func:`check_run_config`).
      workdir: the run's folder; fold ``k`` lives in ``<workdir>/<task>/fold_<k>/`` with
        ``checkpoints/`` (orbax), ``split.json`` and, for outcome tasks,
        ``clinical_encoder.json``.
      task: ``"grader"``, ``"outcome"`` or ``"outcome_clinical_only"``.

    Returns:
      ``[FoldModel(model, state, encoder, fold), …]`` for folds 0..k-1, each state restored
      from the fold's best checkpoint (the loop's recorded best step; orbax's best or the
      latest step as fall-backs; with ``cv.refit`` the refitted model in ``fold_<k>/refit/``) into a state built by ``create_train_state`` with inputs of
      ``config.mri.shape`` / ``config.xray.shape`` and F = the fold encoder's features.

    Raises:
      ConfigError: unknown task. CohortError: the task's folders or checkpoints are missing.
    """
    from lumbarjax.models.fusion import ClinicalEncoder
    from lumbarjax.pipelines import crossval
    from lumbarjax.train.loop import restore_checkpoint, make_checkpoint_manager, train_config
    from lumbarjax.pipelines.tasks import find_variant

    task_obj, clinical_only = find_variant(task)
    kind = task_obj.name
    task_cfg = config[kind]
    task_dir = os.path.join(workdir, task)
    k = int(task_cfg.cv.num_folds)
    missing = [f for f in range(k) if not os.path.isdir(os.path.join(task_dir, f"fold_{f}", "checkpoints"))]
    if missing:
        raise CohortError(f"{task_dir}: no checkpoints for fold(s) {missing} of {k}: not a finished "
                          f"{task} cross-validation (run --mode=crossval first)")
    key = ("model", kind, clinical_only, json.dumps(_plain(task_cfg.model), sort_keys=True))
    model = _memo(key, lambda: task_obj.build_model(task_cfg, clinical_only))
    run_cfg = crossval.run_config(config, task_cfg)
    tc = train_config(run_cfg)
    out = []
    for f in range(k):
        fold_dir = os.path.join(task_dir, f"fold_{f}")
        enc = None
        if task_obj.has_features:
            path = os.path.join(fold_dir, "clinical_encoder.json")
            try:
                with open(path) as fh:
                    enc = ClinicalEncoder.from_dict(json.load(fh))
            except (OSError, ValueError) as e:
                raise CohortError(f"{path}: cannot read the fold's clinical encoder: {e}") from e
        n_feat = enc.num_features if enc is not None else 0
        like = _abstract_state(config, model, n_feat, run_cfg, tc["num_steps"])
        # with cv.refit the test fold was predicted by the model retrained on all its training
        # patients (fold_<k>/refit/, stopped at the chosen step): that one is the fold model
        ckpt_dir = os.path.join(fold_dir, "refit" if task_cfg.cv.get("refit", False) else "", "checkpoints")
        if not os.path.isdir(ckpt_dir):
            raise CohortError(f"{ckpt_dir}: missing (config.{kind}.cv.refit is on): not a finished "
                              f"{task} cross-validation")
        mngr = make_checkpoint_manager(ckpt_dir,
                                       best_metric=tc["best_metric"], best_mode=tc["best_metric_mode"],
                                       max_to_keep=tc["max_to_keep"], keep_best=tc["keep_best"],
                                       async_checkpointing=False)
        try:
            step, how = _choose_step(mngr, fold_dir)
            try:
                state, _ = restore_checkpoint(mngr, step, like, items=("state",))
            except Exception as e:  # noqa: BLE001 - orbax errors say little about why
                raise CohortError(f"{fold_dir}/checkpoints/{step}: cannot restore into the model "
                                  f"built from config.{kind}.model ({type(e).__name__}: {e}); was "
                                  "the run made with another config?") from e
        finally:
            mngr.close()
        logging.info("%s fold %d: restored step %d (%s)", task, f, step, how)
        out.append(FoldModel(model, state, enc, f))
    return out


# -- one new patient -------------------------------------------------------------------------

def _spread(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n_folds": int(v.size)}


def _find_clinical(patient_dir: str, clinical: str | None) -> str | None:
    if clinical:
        if not os.path.exists(clinical):
            raise CohortError(f"clinical table {clinical} not found")
        return clinical
    for name in ("clinical.csv", "clinical.xlsx"):
        p = os.path.join(patient_dir, name)
        if os.path.exists(p):
            return p
    return None


def _patient_records(config, patient_dir: str, clinical: str | None) -> tuple[pd.DataFrame, dict, list]:
    """Index one patient folder and join its clinical row: (records (1 row), inputs, notes)."""
    from lumbarjax.data import clinical as clinical_lib
    from lumbarjax.data import cohort as cohort_lib
    from lumbarjax.data import index as index_lib

    if not os.path.isdir(patient_dir):
        raise CohortError(f"patient folder {patient_dir} does not exist")
    manifest = index_lib.index_cohort(patient_dir)
    found = sorted(set(manifest["patient_id"].astype(str)))
    if not found:
        why = "; ".join([f"{m['role']}: {m['reason']}" for m in manifest.attrs.get("missing", [])]
                        + [f"{e['reason']}: {e['detail']}" for e in manifest.attrs.get("excluded", [])])
        raise CohortError(f"{patient_dir}: no lateral X-ray and no sagittal T2 series found"
                          + (f" ({why})" if why else ""))
    if len(found) > 1:
        raise CohortError(f"{patient_dir}: images of {len(found)} patients ({found}); "
                          "--mode=predict takes one patient's folder")
    notes = [f"{m['role']}: {m['reason']}" for m in manifest.attrs.get("missing", [])]
    ccfg = clinical_lib.resolve_config(config.clinical)
    idc = ccfg.id_column
    table_path = _find_clinical(patient_dir, clinical)
    row = pd.DataFrame({idc: [found[0]]})
    pid = found[0]
    clinical_found = False
    if table_path is not None:
        table = clinical_lib.read_clinical(table_path, column_map=dict(config.clinical.column_map) or None)
        clin, _problems = clinical_lib.validate_clinical(table, ccfg)
        pid = str(cohort_lib.translate_ids(pd.Series([found[0]]), clin, ccfg).iloc[0])
        derived = clinical_lib.derive_outcomes(clin, ccfg)
        match = derived[derived[idc].astype(str) == pid]
        if len(match) == 1:
            row, clinical_found = match.reset_index(drop=True), True
        elif len(match) > 1:
            raise CohortError(f"{table_path}: {len(match)} rows for patient_id {pid}")
    if not clinical_found:
        row = pd.DataFrame({idc: [pid]})
        notes.append("no clinical row for this patient: every clinical feature is missing "
                     "(encoded as missing, not imputed)")
    row = row.rename(columns={idc: "patient_id"}) if idc != "patient_id" else row
    row["patient_id"] = pid
    for role, prefix in cohort_lib.ROLES.items():
        m = manifest[manifest["role"] == role]
        paths = ";".join(index_lib.resolve_paths(m.iloc[0], patient_dir)) if len(m) else ""
        row[f"{prefix}_paths"] = paths
        row[f"{prefix}_source"] = str(m.iloc[0]["source"]) if len(m) else ""
        row[f"has_{prefix}"] = bool(paths)
    inputs = {"mri_series": None, "xray_image": None, "clinical_row_found": clinical_found}
    for role, key in (("mri_t2_sag", "mri_series"), ("xray", "xray_image")):
        m = manifest[manifest["role"] == role]
        if len(m):
            inputs[key] = {"series_description": str(m.iloc[0]["series_description"]),
                           "n_files": int(m.iloc[0]["n_files"]), "reason": str(m.iloc[0]["reason"])}
    return row, inputs, notes


def feature_frame(config, records: pd.DataFrame, enc) -> np.ndarray:
    """(N, F) features of the fold's encoder for ``records``; absent columns count as missing
    values."""
    df = records.copy()
    for c in list(enc.numeric) + list(enc.categorical):
        if c not in df.columns:
            df[c] = np.nan
    return enc.transform(df)


def _example(config, cache: pd.DataFrame, clinical: np.ndarray | None) -> dict:
    from lumbarjax.data.pipeline import CachedExamples
    extras = {"clinical": clinical} if clinical is not None else {}
    src = CachedExamples(cache, extras, mri_shape=tuple(config.mri.shape),
                         xray_shape=tuple(config.xray.shape))
    ex = src[0]
    return {k: np.asarray(v)[None] for k, v in ex.items() if k not in ("labels", "label_mask")}


def _ig(fn, inputs, static, config, baseline=None):
    """``heatmaps.attribute`` for one example: (attributions, delta, value, baseline value)."""
    r = heatmaps.attribute(fn, inputs, static, config.explain, baseline)
    return (jax.tree.map(lambda a: np.asarray(a)[0], r["attrs"]), float(r["delta"][0]),
            float(r["value"][0]), float(r["base"][0]))


def _predict_outcome(config, workdir, records, cache, ex_mri_present, out_dir, pid, task="outcome"):
    from lumbarjax.explain import overlays
    from lumbarjax.pipelines.tasks import TASKS
    folds = load_fold_models(config, workdir, task)
    mc = config.outcome.model
    binary = tuple(mc.binary_heads)
    heads = binary + tuple(mc.regression_heads)
    model = folds[0].model
    fwd = _memo(("fwd", id(model)), lambda: jax.jit(lambda v, b: model.apply(v, b, train=False)))
    per_fold, ig_parts = [], []
    ig_head = str(config.explain.head)
    do_ig = task == "outcome" and ig_head in heads
    head_fn = _memo(("head_fn", id(model), ig_head), lambda: heatmaps.HeadFn(model, ig_head)) if do_ig else None
    batch0 = None
    for fm in folds:
        batch = _example(config, cache, feature_frame(config, records, fm.encoder))
        batch0 = batch
        cols = TASKS["outcome"].decode(jax.device_get(fwd(fm.state.variables, batch)), config.outcome)
        vals = {h: float(cols[f"pred_{h}"][0]) for h in heads}
        per_fold.append({"fold": fm.fold, "step": int(jax.device_get(fm.state.step)), **vals})
        if do_ig:
            inputs = {"mri": jnp.asarray(batch["mri"]), "clinical": jnp.asarray(batch["clinical"])}
            static = {"variables": fm.state.variables, "mri_present": jnp.asarray(batch["mri_present"]),
                      "xray": jnp.asarray(batch["xray"]), "xray_present": jnp.asarray(batch["xray_present"])}
            attrs, delta, value, base = _ig(head_fn, inputs, static, config)
            ig_parts.append(dict(attrs=attrs, delta=delta, value=value, base=base,
                                 names=fm.encoder.feature_names, fold=fm.fold))
    result = {"heads": {}, "folds": per_fold}
    for h in heads:
        entry = _spread([p[h] for p in per_fold])
        entry["kind"] = "probability" if h in binary else "VAS 0-100 mm"
        result["heads"][h] = entry
    if not do_ig:
        return result, []
    # ensemble attribution: mean over folds; clinical features aligned by name (a feature a
    # fold's encoder lacks contributes 0 there), so the sums still add up to the mean change.
    k = len(ig_parts)
    mri_attr = sum(p["attrs"]["mri"][..., 0] for p in ig_parts) / k
    names = sorted({n for p in ig_parts for n in p["names"]},
                   key=lambda n: min(p["names"].index(n) if n in p["names"] else 1e9 for p in ig_parts))
    clin_attr = np.zeros(len(names))
    for p in ig_parts:
        for j, n in enumerate(p["names"]):
            clin_attr[names.index(n)] += float(p["attrs"]["clinical"][j]) / k
    value = float(np.mean([p["value"] for p in ig_parts]))
    base = float(np.mean([p["base"] for p in ig_parts]))
    delta = float(np.mean([p["delta"] for p in ig_parts]))
    result["heatmap"] = {
        "head": ig_head, "output": "logit (fold-ensemble mean)", "method": str(config.explain.method),
        "steps": int(config.explain.steps), "baseline": str(config.explain.baseline),
        "ensemble_logit": value, "baseline_logit": base,
        "completeness_delta": delta, "relative_delta": abs(delta) / max(abs(value - base), 1e-6),
        "mri_attribution_sum": float(mri_attr.sum()),
        "clinical_attribution": {n: float(v) for n, v in zip(names, clin_attr)},
    }
    # each fold model's own map (the held-out fold's equals the CV report's map of the patient)
    result["heatmap"]["fold_completeness_delta"] = {p["fold"]: p["delta"] for p in ig_parts}
    with atomic_path(os.path.join(out_dir, "mri_ig_folds.npz")) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{f"fold_{p['fold']}": p["attrs"]["mri"][..., 0] for p in ig_parts})
    result["heatmap"]["fold_maps"] = "mri_ig_folds.npz"
    figs = []
    mri_present = float(ex_mri_present) > 0
    if mri_present and mc.mri.enabled:
        affine = load_affine(cache.iloc[0])
        mri = np.asarray(batch0["mri"])[0, ..., 0]
        png = overlays.save_mri_overlay_png(
            mri, mri_attr, os.path.join(out_dir, "mri_ig.png"),
            spacing=np.linalg.norm(affine[:3, :3], axis=0), title=f"{pid}: IG of {ig_head}")
        nii = overlays.save_attribution_nifti(mri_attr, affine, os.path.join(out_dir, "mri_ig.nii.gz"))
        from lumbarjax.data.nifti import write_nifti
        mri_nii = write_nifti(mri, affine, os.path.join(out_dir, "mri_preprocessed.nii.gz"),
                              description="lumbarjax preprocessed MRI")
        result["heatmap"]["files"] = {"mri_png": os.path.basename(png), "mri_nifti": os.path.basename(nii),
                                      "mri_preprocessed_nifti": os.path.basename(mri_nii)}
        figs.append((png, f"Sagittal T2: integrated gradients of {ig_head} (red raises, blue lowers "
                          "the predicted logit; mean of the fold models)"))
    else:
        result["heatmap"]["files"] = {}
    if len(names):
        bar = overlays.save_clinical_bar_png(clin_attr, names, os.path.join(out_dir, "clinical_ig.png"),
                                             top_k=10, title=f"{pid}: clinical features")
        result["heatmap"]["files"]["clinical_png"] = os.path.basename(bar)
        figs.append((bar, f"Clinical-feature attributions to {ig_head} (top 10)"))
    return result, figs


def _predict_grader(config, workdir, cache, out_dir, pid):
    from lumbarjax.explain import overlays
    from lumbarjax.models import ordinal
    folds = load_fold_models(config, workdir, "grader")
    head = str(config.grader.model.head)
    _, probs_fn, predict_fn = ordinal.ordinal_fns(head)
    model = folds[0].model
    fwd = _memo(("fwd_grade", id(model)),
                lambda: jax.jit(lambda v, b: model.apply(v, b, train=False)["grade"]))
    batch = _example(config, cache, None)
    fn = _memo(("grade_fn", id(model), head), lambda: heatmaps.ExpectedGradeFn(model, head))
    probs, per_fold, attrs, deltas, vals, bases = [], [], [], [], [], []
    for fm in folds:
        logits = fwd(fm.state.variables, batch)
        p = np.asarray(probs_fn(logits), np.float64)[0]           # (L, K)
        pred = np.asarray(predict_fn(logits))[0]                    # (L,)
        probs.append(p)
        per_fold.append({"fold": fm.fold, "step": int(jax.device_get(fm.state.step)),
                         "pred_grade": int(pred.max()),
                         "probs": p[0].tolist() if p.shape[0] == 1 else p.tolist(),
                         "expected_grade": float(np.mean(p @ np.arange(p.shape[-1])))})
        a, d, v, b = _ig(fn, {"xray": jnp.asarray(batch["xray"])}, {"variables": fm.state.variables},
                         config)
        attrs.append(a["xray"][..., 0])
        deltas.append(d), vals.append(v), bases.append(b)
    probs = np.stack(probs)                                          # (k, L, K)
    mean = probs.mean(axis=0)
    K = mean.shape[-1]
    cum = 1.0 - np.cumsum(mean, axis=-1)[..., :-1]                   # P(grade > j), (L, K-1)
    grade = (cum > 0.5).sum(axis=-1)                                 # the CORN rule on the mean
    sd = probs.std(axis=0, ddof=1) if len(folds) > 1 else np.zeros_like(mean)
    res = {"num_grades": int(K), "head": head,
           "grade": int(grade.max()),
           "prob_mean": mean[0].tolist() if mean.shape[0] == 1 else mean.tolist(),
           "prob_sd": sd[0].tolist() if sd.shape[0] == 1 else sd.tolist(),
           "prob_min": probs.min(axis=0)[0].tolist() if mean.shape[0] == 1 else probs.min(axis=0).tolist(),
           "prob_max": probs.max(axis=0)[0].tolist() if mean.shape[0] == 1 else probs.max(axis=0).tolist(),
           "expected_grade": _spread([f["expected_grade"] for f in per_fold]),
           "folds": per_fold}
    if mean.shape[0] > 1:
        from lumbarjax.pipelines.crossval import LEVELS
        res["grade_per_level"] = {lv: int(g) for lv, g in zip(LEVELS, grade)}
    attr = np.mean(attrs, axis=0)
    tr = json.loads(cache["xray_transform"].iloc[0]) if cache["xray_transform"].iloc[0] else {}
    png = overlays.save_xray_overlay_png(np.asarray(batch["xray"])[0, ..., 0], attr,
                                         os.path.join(out_dir, "xray_ig.png"),
                                         spacing=tr.get("spacing_mm"),
                                         title=f"{pid}: IG of the expected grade")
    value, base, delta = float(np.mean(vals)), float(np.mean(bases)), float(np.mean(deltas))
    res["heatmap"] = {"output": "expected grade (fold-ensemble mean)", "method": str(config.explain.method),
                      "steps": int(config.explain.steps), "baseline": "zeros",
                      "ensemble_expected_grade": value, "baseline_expected_grade": base,
                      "completeness_delta": delta,
                      "relative_delta": abs(delta) / max(abs(value - base), 1e-6),
                      "files": {"xray_png": os.path.basename(png)}}
    return res, [(png, "Lateral X-ray: integrated gradients of the expected degeneration grade "
                       "(mean of the fold graders)")]


def predict_patient(config, workdir: str, patient_dir: str, *, out_dir: str | None = None,
                    clinical: str | None = None) -> dict:
    """Predict one new patient with every fold model of a finished run.

    Args:
      config: the run's config (checked against ``<workdir>/config.json``).
      workdir: the finished run (``--mode=crossval``).
      patient_dir: one patient's DICOM export (any nesting; the lateral X-ray and the sagittal
        T2 are chosen as in ``index``), optionally with ``clinical.csv`` / ``clinical.xlsx``
        holding the patient's row (pre-operative columns suffice). A missing X-ray / MRI is
        masked; a missing clinical row makes every clinical feature missing.
      out_dir: default ``<workdir>/predictions/<patient_id>/``; the preprocessing cache goes
        to ``<out_dir>/cache``.
      clinical: a clinical table to take the patient's row from instead (e.g. the hospital's
        whole table).

    Returns:
      the content of ``prediction.json`` (see the module docstring) plus ``html`` and ``json``
      (the paths written). Per outcome head: ``mean, sd (ddof=1), min, max, n_folds`` across
      the k fold models (probabilities for binary heads, VAS 0–100 mm otherwise) and each
      fold's value; grader: mean / SD / min / max grade probabilities and the grade by the CORN
      rule (#{j: P(grade > j) > 0.5}) on the mean probabilities.
    """
    from lumbarjax.data import preprocess as preprocess_lib

    notes = check_run_config(config, workdir)
    records, inputs, more = _patient_records(config, patient_dir, clinical)
    notes += more
    pid = str(records["patient_id"].iloc[0])
    out_dir = out_dir or os.path.join(workdir, "predictions", pid)
    os.makedirs(out_dir, exist_ok=True)
    cache = preprocess_lib.preprocess_cohort(records, config, os.path.join(out_dir, "cache"))
    if cache["errors"].iloc[0]:
        notes.append(f"image decoding failed, modality masked: {cache['errors'].iloc[0]}")
    mri_present = bool(cache["mri_file"].iloc[0])
    xray_present = bool(cache["xray_file"].iloc[0])
    inputs.update(mri_present=mri_present, xray_present=xray_present)
    pred: dict[str, Any] = {
        "patient_id": pid,
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "run": os.path.abspath(workdir),
        "inputs": inputs,
        "uncertainty": ("spread of the k cross-validation fold models' predictions "
                        "(SD with ddof=1, min–max): the model's CV uncertainty, not a "
                        "confidence interval for this patient's outcome"),
        "notes": notes,
    }
    figs = []
    if "outcome" in config.tasks:
        if not (mri_present or config.outcome.model.xray.enabled and xray_present) \
                and config.outcome.model.mri.enabled:
            notes.append("outcome: no MRI; the outcome model runs with the MRI masked")
        pred["outcome"], f = _predict_outcome(config, workdir, records, cache, float(mri_present),
                                              out_dir, pid)
        figs += f
    if "grader" in config.tasks:
        if xray_present:
            pred["grader"], f = _predict_grader(config, workdir, cache, out_dir, pid)
            figs += f
            if config.levels.enabled:  # the level-by-level scale of the run (train.xray_levels)
                from lumbarjax.pipelines.xray_levels import predict_levels
                try:
                    pred["grader"]["levels"] = predict_levels(config.levels, os.path.join(workdir, "levels"),
                                                              records["xray_paths"].iloc[0])
                except (CohortError, DicomError) as e:
                    notes.append(f"grader levels: not predicted ({e})")
        else:
            notes.append("grader: no X-ray, no grade predicted")
    json_path = os.path.join(out_dir, "prediction.json")
    from lumbarjax.eval.metrics import to_jsonable
    atomic.write_json(json_path, to_jsonable(pred))
    html_path = os.path.join(out_dir, "prediction.html")
    atomic.write_text(html_path, _prediction_html(pred, figs))
    logging.info("prediction for %s: %s", pid, html_path)
    return {**pred, "html": html_path, "json": json_path}


def _prediction_html(pred: dict, figs: list) -> str:
    """Self-contained page (CSS inline, PNGs as data: URIs) in the style of the report."""
    from lumbarjax.eval import report as report_lib
    e = html.escape
    f3 = report_lib.fmt_value
    parts = [f"<h1>lumbarjax prediction — patient {e(pred['patient_id'])}</h1>",
             f"<p class='sub'>generated {e(pred['generated'])}; models of the run "
             f"{e(os.path.basename(pred['run'].rstrip(os.sep)))}</p>",
             f"<p class='note'>{e(pred['uncertainty'])}.</p>"]
    inp = pred["inputs"]
    rows = [["MRI (sagittal T2)", "present" if inp.get("mri_present") else "<b>missing (masked)</b>"],
            ["X-ray (lateral)", "present" if inp.get("xray_present") else "<b>missing (masked)</b>"],
            ["clinical row", "found" if inp.get("clinical_row_found") else "<b>missing (all features missing)</b>"]]
    parts += ["<h2>Inputs</h2>", report_lib.html_table(["input", "status"], rows)]
    if pred.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in pred["notes"]) + "</ul>")
    if "outcome" in pred:
        o = pred["outcome"]
        rows = []
        for h, v in o["heads"].items():
            d = 3 if v["kind"] == "probability" else 1
            rows.append([e(h), e(v["kind"]), f3(v["mean"], d), f3(v["sd"], d),
                         f"{f3(v['min'], d)} – {f3(v['max'], d)}",
                         " ".join(f3(fd[h], d) for fd in o["folds"])])
        parts += ["<h2>Outcome</h2>",
                  report_lib.html_table(["head", "unit", "mean of folds", "SD", "min – max",
                                     "per fold"], rows, "metrics")]
        hm = o.get("heatmap")
        if hm:
            parts.append(f"<p class='muted'>Heat maps: {e(hm['method'])} IG, {hm['steps']} steps, "
                         f"zero baseline, head {e(hm['head'])}; completeness error "
                         f"{hm['completeness_delta']:+.2e} (relative {hm['relative_delta']:.1e}).</p>")
    if "grader" in pred:
        g = pred["grader"]
        pm = np.atleast_2d(g["prob_mean"])[0]
        ps = np.atleast_2d(g["prob_sd"])[0]
        rows = [[str(k), f3(pm[k]), f3(ps[k])] for k in range(len(pm))]
        eg = g["expected_grade"]
        parts += ["<h2>X-ray degeneration grade</h2>",
                  f"<p>Predicted grade <b>{g['grade']}</b>; expected grade {f3(eg['mean'], 2)} "
                  f"(SD {f3(eg['sd'], 2)}, range {f3(eg['min'], 2)} – {f3(eg['max'], 2)} across "
                  f"{eg['n_folds']} folds).</p>",
                  report_lib.html_table(["grade", "probability (mean of folds)", "SD"], rows, "metrics")]
        lv = g.get("levels")
        if lv:
            ind = lv["indices"]
            lrows = [[e(name), str(lv["grade_per_level"][name]), f3(ind[f"dhi_{name}"]),
                      f3(ind[f"disc_height_mm_{name}"], 1), f3(ind[f"listhesis_mm_{name}"], 1)]
                     for name in lv["grade_per_level"]]
            parts += [f"<h3>Level by level (rule {e(lv['rule'])})</h3>",
                      f"<p>Patient grade <b>{lv['grade']}</b>; scale (sum over L1–S1) "
                      f"{f3(lv['scale']['mean'], 1)} (SD {f3(lv['scale']['sd'], 1)} across "
                      f"{len(lv['folds'])} fold graders).</p>",
                      report_lib.html_table(["level", "grade (median of folds)", "disc height index",
                                             "disc height (mm)", "listhesis (mm)"], lrows, "metrics")]
    if figs:
        parts.append("<h2>Heat maps</h2><div class='gallery'>")
        for path, caption in figs:
            with open(path, "rb") as fh:
                png = fh.read()
            parts.append(f"<figure class='heat' style='width:420px'>"
                         f"<img class='heat' src='{report_lib.data_uri(png)}' alt='{e(caption)}'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>lumbarjax prediction {e(pred['patient_id'])}</title>"
            f"<style>{report_lib.CSS}</style></head><body><main>{body}</main></body></html>")


# -- report of a finished run -----------------------------------------------------------------

def _read_oof(path: str) -> pd.DataFrame | None:
    if not os.path.exists(path):
        return None
    return pd.read_csv(path, dtype={"patient_id": str})


def report_from_workdir(config, workdir: str) -> tuple[str, str]:
    """Re-draw ``report.html`` and ``metrics.json`` of a finished run from its artefacts.

    Reads ``cohort_summary.json``, ``exclusions.csv``, ``<task>/oof.csv``,
    ``outcome_clinical_only/oof.csv``, ``outcome/selected_oof.csv`` + ``selection.json``,
    ``baseline_<head>.csv``, ``ablation.json``, ``levels/levels_metrics.json``,
    ``xray_pretrain/xray_pretrain_summary.json``, ``mri_levels/mri_levels.json``,
    ``mri_score_heatmaps/summary.json`` and the saved IG maps
    (``heatmaps/*_ig.npz``) and calls :func:`lumbarjax.jobs.workflow.stage_report` — the very code of
    the run — so the numbers (same bootstrap seed) equal the run's. The timings of the run are
    carried over from its old ``metrics.json``. Overwrites both files in ``workdir``.

    Raises:
      CohortError: ``cohort_summary.json`` or every OOF table is missing (not a finished run).
    """
    from lumbarjax.jobs import workflow

    check_run_config(config, workdir)
    path = os.path.join(workdir, "cohort_summary.json")
    if not os.path.exists(path):
        raise CohortError(f"{path} not found: {workdir} is not a finished run (--mode=crossval)")
    with open(path) as f:
        summary = json.load(f)
    results: dict[str, Any] = {}
    for key, sub in (("grader", "grader"), ("outcome", "outcome"),
                     ("clinical_only", "outcome_clinical_only")):
        if key == "clinical_only" or key in config.tasks:
            df = _read_oof(os.path.join(workdir, sub, "oof.csv"))
            if df is not None:
                results[key] = df
    if "grader" not in results and "outcome" not in results:
        raise CohortError(f"{workdir}: no grader/oof.csv or outcome/oof.csv: nothing to report")
    baselines = {}
    for p in sorted(glob.glob(os.path.join(workdir, "baseline_*.csv"))):
        head = os.path.basename(p)[len("baseline_"):-len(".csv")]
        baselines[head] = pd.read_csv(p, dtype={"patient_id": str})
    if baselines:
        results["baselines"] = baselines
    hm_dir = os.path.join(workdir, "heatmaps")
    if os.path.isdir(hm_dir):
        hm = heatmaps.HeatmapCollector.load(config, hm_dir)
        hm.items.sort(key=lambda it: (it["fold"], it["row"]))   # the run's order (bootstrap CIs)
        results["outcome_heatmaps"] = hm
    xhm_dir = os.path.join(workdir, "grader", "heatmaps")
    if os.path.isdir(xhm_dir):
        results["grader_heatmaps"] = heatmaps.XrayHeatmapCollector.load(config, xhm_dir)
    old = os.path.join(workdir, "metrics.json")
    if os.path.exists(old):
        try:
            with open(old) as f:
                results["timing_s"] = (json.load(f).get("extra") or {}).get("timing_s", {})
        except ValueError:
            pass
    sel_oof = _read_oof(os.path.join(workdir, "outcome", "selected_oof.csv"))
    sel_json = os.path.join(workdir, "outcome", "selection.json")
    if "outcome" in results and sel_oof is not None and os.path.exists(sel_json):
        with open(sel_json) as f:
            results["selected"], results["selection"] = sel_oof, json.load(f)
    abl = os.path.join(workdir, "ablation.json")
    if os.path.exists(abl):
        with open(abl) as f:
            results["ablation"] = json.load(f)
    lv_metrics = os.path.join(workdir, "levels", "levels_metrics.json")
    if config.levels.enabled and os.path.exists(lv_metrics):
        with open(lv_metrics) as f:
            results["levels"] = json.load(f)
    xp_summary = os.path.join(workdir, "xray_pretrain", "xray_pretrain_summary.json")
    if os.path.exists(xp_summary) and not config.xray_pretrain.backbone_file:
        with open(xp_summary) as f:
            results["xray_pretrain"] = json.load(f)
    for key, rel in (("mri_levels", workflow.MRI_LEVELS_JSON), ("mri_score_heatmaps", workflow.MRI_HEATMAPS_JSON)):
        if config.pretrain.enabled and os.path.exists(os.path.join(workdir, rel)):
            with open(os.path.join(workdir, rel)) as f:
                results[key] = json.load(f)
    pre_summary = os.path.join(workdir, "pretrain", "pretrain_summary.json")
    if config.pretrain.enabled and os.path.exists(pre_summary):
        with open(pre_summary) as f:
            results["pretrain"] = json.load(f)
    excl_path = os.path.join(workdir, "exclusions.csv")
    excl = pd.read_csv(excl_path, dtype={"patient_id": str}) if os.path.exists(excl_path) \
        else pd.DataFrame(columns=["patient_id", "reason", "detail"])
    cohort = workflow.Cohort(records=pd.DataFrame(), cache=pd.DataFrame(), exclusions=excl,
                             summary=summary)
    root = config.data.cohort_dir or os.path.join(workdir, "demo_cohort")
    return workflow.stage_report(config, workdir, cohort, results, root)
