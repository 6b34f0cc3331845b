"""Predict one new patient with a finished cross-validation's fold models.

:func:`predict_patient` reads ONE new patient folder (a DICOM export, optionally with a
one-row ``clinical.csv``), preprocesses it exactly as the run did and runs every fold model
(restored by :mod:`lumbarjax.jobs.restore`): per head the fold-ensemble mean with its spread
across the k fold models (SD, min–max: the model's cross-validation uncertainty, not a
confidence interval for this patient), the grader's grade probabilities likewise,
integrated-gradients heat maps of the ensemble (the mean of the fold models' attributions) and
a self-contained ``prediction.html`` + ``prediction.json``. What each task predicts is chosen
by its ``patient_prediction`` (``PREDICTORS``).

Only the pseudonymous ``patient_id`` (DICOM PatientID, optionally translated by
``config.clinical.id_map`` / ``id_map_column``) is written; no other DICOM header value.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.atomic import atomic_path
from lumbarjax.data.preprocess import load_affine
from lumbarjax.errors import CohortError, DicomError
from lumbarjax.explain import heatmaps
from lumbarjax.jobs.restore import check_run_config, feature_frame, load_fold_models, memo
from lumbarjax.pipelines.tasks import get_task

__all__ = ["PREDICTORS", "predict_patient"]


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
    from lumbarjax.data import clinical as clinical_lib, outcomes as outcomes_lib
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
        derived = outcomes_lib.derive_outcomes(clin, ccfg)
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


def _predict_outcome(config, workdir, task, records, cache, ex_mri_present, out_dir, pid):
    """The fold ensemble of ``task``'s heads (binary: probabilities, else VAS mm) + its IG maps."""
    from lumbarjax.explain import overlays
    task_cfg = config[task.name]
    folds = load_fold_models(config, workdir, task.name)
    mc = task_cfg.model
    binary = tuple(mc.binary_heads)
    heads = binary + tuple(mc.regression_heads)
    model = folds[0].model
    fwd = memo(("fwd", id(model)), lambda: jax.jit(lambda v, b: model.apply(v, b, train=False)))
    per_fold, ig_parts = [], []
    ig_head = str(config.explain.head)
    do_ig = ig_head in heads
    head_fn = memo(("head_fn", id(model), ig_head), lambda: heatmaps.HeadFn(model, ig_head)) if do_ig else None
    batch0 = None
    for fm in folds:
        batch = _example(config, cache, feature_frame(config, records, fm.encoder))
        batch0 = batch
        cols = task.decode(jax.device_get(fwd(fm.state.variables, batch)), task_cfg)
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


def _predict_grader(config, workdir, task, cache, out_dir, pid):
    """The fold ensemble of ``task``'s ordinal grade of the X-ray + its IG maps."""
    from lumbarjax.explain import overlays
    from lumbarjax.models import ordinal
    folds = load_fold_models(config, workdir, task.name)
    head = str(config[task.name].model.head)
    _, probs_fn, predict_fn = ordinal.ordinal_fns(head)
    model = folds[0].model
    fwd = memo(("fwd_grade", id(model)),
                lambda: jax.jit(lambda v, b: model.apply(v, b, train=False)["grade"]))
    batch = _example(config, cache, None)
    fn = memo(("grade_fn", id(model), head), lambda: heatmaps.ExpectedGradeFn(model, head))
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
    figs, sections = [], []
    tasks = [get_task(name) for name in config.tasks]
    for kind, predictor in PREDICTORS.items():   # the table's order: the page's and the JSON's
        for task in (t for t in tasks if t.patient_prediction == kind):
            result, f = predictor.predict(config, workdir, task, records, cache, out_dir, pid, notes,
                                          mri_present=mri_present, xray_present=xray_present)
            if result is not None:
                pred[task.name] = result
                sections.append((predictor, task.name))
            figs += f
    json_path = os.path.join(out_dir, "prediction.json")
    from lumbarjax.eval.metrics import to_jsonable
    atomic.write_json(json_path, to_jsonable(pred))
    html_path = os.path.join(out_dir, "prediction.html")
    atomic.write_text(html_path, _prediction_html(pred, figs, sections))
    logging.info("prediction for %s: %s", pid, html_path)
    return {**pred, "html": html_path, "json": json_path}


def _prediction_html(pred: dict, figs: list, sections: list) -> str:
    """Self-contained page (CSS inline, PNGs as data: URIs) in the style of the report;
    ``sections``: ``(predictor, key of its result in pred)`` in the page's order."""
    from lumbarjax.eval import report as report_lib
    e = html.escape
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
    for predictor, key in sections:
        parts += predictor.html(pred[key])
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


# -- what each task predicts for one patient: patient_prediction -> Predictor ----------------------

def _heads_entry(config, workdir, task, records, cache, out_dir, pid, notes, *, mri_present, xray_present):
    mc = config[task.name].model
    if not (mri_present or mc.xray.enabled and xray_present) and mc.mri.enabled:
        notes.append(f"{task.name}: no MRI; the outcome model runs with the MRI masked")
    return _predict_outcome(config, workdir, task, records, cache, float(mri_present), out_dir, pid)


def _grade_entry(config, workdir, task, records, cache, out_dir, pid, notes, *, mri_present, xray_present):
    if not xray_present:
        notes.append(f"{task.name}: no X-ray, no grade predicted")
        return None, []
    result, figs = _predict_grader(config, workdir, task, cache, out_dir, pid)
    if config.levels.enabled:  # the level-by-level scale of the run (pipelines.xray_levels)
        from lumbarjax.pipelines.xray_levels import predict_levels
        try:
            result["levels"] = predict_levels(config.levels, os.path.join(workdir, "levels"),
                                              records["xray_paths"].iloc[0])
        except (CohortError, DicomError) as e:
            notes.append(f"{task.name} levels: not predicted ({e})")
    return result, figs


def _heads_html(o: dict) -> list[str]:
    from lumbarjax.eval import report as report_lib
    e, f3 = html.escape, report_lib.fmt_value
    rows = []
    for h, v in o["heads"].items():
        d = 3 if v["kind"] == "probability" else 1
        rows.append([e(h), e(v["kind"]), f3(v["mean"], d), f3(v["sd"], d),
                     f"{f3(v['min'], d)} – {f3(v['max'], d)}",
                     " ".join(f3(fd[h], d) for fd in o["folds"])])
    parts = ["<h2>Outcome</h2>",
             report_lib.html_table(["head", "unit", "mean of folds", "SD", "min – max",
                                    "per fold"], rows, "metrics")]
    hm = o.get("heatmap")
    if hm:
        parts.append(f"<p class='muted'>Heat maps: {e(hm['method'])} IG, {hm['steps']} steps, "
                     f"zero baseline, head {e(hm['head'])}; completeness error "
                     f"{hm['completeness_delta']:+.2e} (relative {hm['relative_delta']:.1e}).</p>")
    return parts


def _grade_html(g: dict) -> list[str]:
    from lumbarjax.eval import report as report_lib
    e, f3 = html.escape, report_lib.fmt_value
    pm = np.atleast_2d(g["prob_mean"])[0]
    ps = np.atleast_2d(g["prob_sd"])[0]
    rows = [[str(k), f3(pm[k]), f3(ps[k])] for k in range(len(pm))]
    eg = g["expected_grade"]
    parts = ["<h2>X-ray degeneration grade</h2>",
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
    return parts


@dataclasses.dataclass(frozen=True)
class Predictor:
    """How one kind of task (``task.patient_prediction``) predicts one patient: ``predict(config,
    workdir, task, records, cache, out_dir, pid, notes, *, mri_present, xray_present)`` ->
    ``(result | None, [(png, caption)])`` (notes appended in place), and ``html(result)`` -> the
    page's parts."""
    predict: Callable
    html: Callable


# The order of this table is the order of prediction.json's and prediction.html's sections.
PREDICTORS = {"heads": Predictor(_heads_entry, _heads_html), "grade": Predictor(_grade_entry, _grade_html)}
