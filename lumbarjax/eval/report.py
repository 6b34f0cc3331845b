"""One self-contained HTML report (plus ``metrics.json``) for a cross-validated lumbarjax run.

The HTML has no external resources: CSS is inline, every figure is a PNG drawn with matplotlib's
Agg backend (``eval.report_figures``) and embedded as a ``data:image/png;base64`` URI, there is no
JavaScript. Patients are named only by ``patient_id``; dictionaries whose keys look like PHI
(names, birth dates, …) are refused.

``metrics.json`` holds every number shown (and more: bootstrap settings, calibration bins,
decision curves, per-patient localisation results), strict JSON (``NaN`` → ``null``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lumbarjax import atomic
from lumbarjax.errors import LumbarjaxError
from lumbarjax.eval import metrics as M
from lumbarjax.eval import report_figures as F
from lumbarjax.eval.report_figures import fmt_value  # report.fmt_value still resolves
from lumbarjax.schema import BINARY_HEADS, LEVELS, REGRESSION_HEADS

_PHI_KEY = re.compile(r"(patient_?name|birth|\bdob\b|address|phone|ssn|social_?security"
                      r"|patientsname|othernames|mothers)", re.I)


# ----------------------------------------------------------------------------- helpers
def _check_no_phi(obj, where: str) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if _PHI_KEY.search(str(k)):
                raise LumbarjaxError(f"write_report: {where} has a key {k!r} that looks like "
                                     "protected health information; reports name patients only "
                                     "by patient_id")
            _check_no_phi(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_no_phi(v, f"{where}[{i}]")


def data_uri(png: bytes) -> str:
    """A PNG or JPEG image (its bytes) as a ``data:image/...;base64,`` URI to embed in the HTML
    report; any other content raises :class:`~lumbarjax.errors.LumbarjaxError`."""
    mime = "image/png"
    if png[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif png[:4] != b"\x89PNG":
        raise LumbarjaxError("write_report: heat-map image is neither PNG nor JPEG")
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{data_uri(png)}" alt="{html.escape(alt)}">'


def _e(x) -> str:
    return html.escape(str(x))


def _fmt_ci(d: Mapping | None, digits: int = 3) -> str:
    """``0.781 (0.702–0.850)`` from a ``{point, lo, hi}`` dict."""
    if not d:
        return "–"
    point = d.get("point", d.get("diff"))
    s = fmt_value(point, digits)
    if d.get("lo") is not None and d.get("hi") is not None:
        s += f' <span class="ci">({fmt_value(d["lo"], digits)} to {fmt_value(d["hi"], digits)})</span>'
    return s


def _fmt_p(d: Mapping) -> str:
    """Bootstrap p-value; 0 is shown as ``< 1/n`` (n valid resamples)."""
    p = d.get("p_value")
    if p is None:
        return "–"
    n_valid = max(1, int(d.get("n_boot", 1)) - int(d.get("n_skipped", 0)))
    return f"&lt; {1 / n_valid:.2g}" if p == 0 else fmt_value(p)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """Cells are already-escaped HTML strings."""
    th = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _generic(obj, depth: int = 0) -> str:
    """Render a JSON-like dict/list as nested tables (keys and values escaped)."""
    if isinstance(obj, Mapping):
        if not obj:
            return '<span class="muted">none</span>'
        vals = list(obj.values())
        if all(isinstance(v, Mapping) for v in vals) and all(
                not isinstance(x, (Mapping, list)) for v in vals for x in v.values()):
            cols = []
            for v in vals:
                cols += [k for k in v if k not in cols]
            rows = [[_e(k)] + [_e(fmt_value(v.get(c))) for c in cols] for k, v in obj.items()]
            return html_table([""] + [_e(c) for c in cols], rows, "kv")
        rows = [[_e(k), _generic(v, depth + 1)] for k, v in obj.items()]
        return html_table(["item", "value"], rows, "kv")
    if isinstance(obj, (list, tuple)):
        if obj and all(isinstance(v, Mapping) for v in obj):
            cols = []
            for v in obj:
                cols += [k for k in v if k not in cols]
            rows = [[_e(fmt_value(v.get(c))) for c in cols] for v in obj]
            return html_table([_e(c) for c in cols], rows, "kv")
        return _e(", ".join(fmt_value(v) for v in obj))
    return _e(fmt_value(obj))


def _label_pred(df: pd.DataFrame, head: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    for c in (f"label_{head}", f"pred_{head}"):
        if c not in df.columns:
            raise LumbarjaxError(f"write_report: {where} has no column '{c}'")
    return (pd.to_numeric(df[f"label_{head}"], errors="coerce").to_numpy(float),
            pd.to_numeric(df[f"pred_{head}"], errors="coerce").to_numpy(float))


def _is_binary(head: str, y: np.ndarray) -> bool:
    if head in BINARY_HEADS:
        return True
    if head in REGRESSION_HEADS:
        return False
    v = y[np.isfinite(y)]
    return v.size > 0 and bool(np.all((v == 0) | (v == 1)))


def _num_grades(df: pd.DataFrame) -> int:
    probs = [c for c in df.columns if re.fullmatch(r"prob_grade_\d+", str(c))]
    if probs:
        return len(probs)
    vals = pd.concat([df["label_grade"], df["pred_grade"]]).dropna()
    return int(max(vals.max() + 1, 2)) if len(vals) else 2


# ----------------------------------------------------------------------------- sections
def _comparators(outcome_oof, head, baseline_oof, clinical_only_oof, binary, other_models=None):
    """{name: pred array aligned with outcome_oof rows} for the available comparators."""
    out = {}
    for name, df in dict(other_models or {}).items():
        if df is not None and f"pred_{head}" in df.columns:
            o = df.assign(patient_id=df["patient_id"].astype(str)).drop_duplicates("patient_id")
            out[name] = pd.to_numeric(o.set_index("patient_id")[f"pred_{head}"].reindex(
                outcome_oof["patient_id"].astype(str)), errors="coerce").to_numpy(float)
    pid = outcome_oof["patient_id"].astype(str)
    if baseline_oof and head in baseline_oof and baseline_oof[head] is not None:
        b = baseline_oof[head].copy()
        for c in ("patient_id", "pred_logreg", "pred_gbm"):
            if c not in b.columns:
                raise LumbarjaxError(f"write_report: baseline_oof['{head}'] has no column '{c}'")
        b = b.assign(patient_id=b["patient_id"].astype(str)).drop_duplicates("patient_id")
        b = b.set_index("patient_id").reindex(pid)
        out["clinical logreg" if binary else "clinical ridge"] = b["pred_logreg"].to_numpy(float)
        out["clinical GBM"] = b["pred_gbm"].to_numpy(float)
    if clinical_only_oof is not None and f"pred_{head}" in clinical_only_oof.columns:
        c = clinical_only_oof.assign(patient_id=clinical_only_oof["patient_id"].astype(str))
        c = c.drop_duplicates("patient_id").set_index("patient_id").reindex(pid)
        out["clinical-only network"] = pd.to_numeric(c[f"pred_{head}"],
                                                     errors="coerce").to_numpy(float)
    return out


def _outcomes(outcome_oof, baseline_oof, clinical_only_oof, kw, threshold, other_models=None):
    """Per-head metrics (+ comparators and paired differences) and the figure inputs."""
    heads = [c[len("label_"):] for c in outcome_oof.columns
             if str(c).startswith("label_") and f"pred_{c[len('label_'):]}" in outcome_oof.columns]
    res, roc, cal, dcs, scatter = {}, {}, {}, {}, {}
    for head in heads:
        y, p = _label_pred(outcome_oof, head, "outcome_oof")
        binary = _is_binary(head, y)
        where = f"outcome_oof head '{head}'"
        try:
            rep = (M.binary_report(y, p, threshold=threshold, **kw) if binary
                   else M.regression_report(y, p, **kw))
        except LumbarjaxError as e:
            raise LumbarjaxError(f"write_report: {where}: {e}") from e
        entry = {"task": "binary" if binary else "regression", "model": rep, "comparators": {},
                 "paired_difference": {}}
        metric_fn, metric_name = (M.auc, "auc") if binary else (M.mae, "mae")
        comps = _comparators(outcome_oof, head, baseline_oof, clinical_only_oof, binary, other_models)
        lab = np.isfinite(y)
        for name, q in comps.items():
            both = lab & np.isfinite(q) & np.isfinite(p)
            entry["comparators"][name] = (
                M.binary_report(y[both], q[both], threshold=threshold, **kw) if binary
                else M.regression_report(y[both], q[both], **kw))
            d = M.paired_bootstrap_diff(metric_fn, y[both], p[both], q[both], **kw).as_dict()
            d.update(metric=metric_name, definition=f"{metric_name}(model) − "
                     f"{metric_name}({name}) on {int(both.sum())} patients with both")
            entry["paired_difference"][name] = d
        res[head] = entry
        if binary and lab.any():
            roc[head] = {"model": (y[lab], p[lab], rep["auc"]["point"])}
            cal[head] = {"model": rep["calibration"]}
            dcs[head] = {"model": rep["decision_curve"]}
            for name, q in comps.items():
                both = lab & np.isfinite(q)
                if not both.any():
                    continue
                roc[head][name] = (y[both], q[both], entry["comparators"][name]["auc"]["point"])
                dcs[head][name] = entry["comparators"][name]["decision_curve"]
                if name.startswith("clinical logreg"):
                    cal[head][name] = entry["comparators"][name]["calibration"]
        elif not binary:
            scatter[head] = (y, p)
    return res, roc, cal, dcs, scatter


def _bayes_value(bayes, head, metric: str = "auc"):
    """The Bayes-optimal ``metric`` of ``head`` from ``bayes`` (head -> a number, read as the
    AUC, or a dict with ``auc`` / ``mae`` / ``r2``); None when unknown."""
    if not bayes or head not in bayes:
        return None
    v = bayes[head]
    if isinstance(v, Mapping):
        return v.get(metric)
    return v if metric == "auc" else None


CLINICAL_BASELINE = {"auc": "clinical logreg", "mae": "clinical ridge"}
NO_IMAGE_GAIN = "the images add nothing measurable for this outcome at this cohort size"


def _learnable_ceiling(ablation: Mapping | None, head: str) -> dict | None:
    """The ablation's perfect-stage-1 row of ``head`` (``schema.PERFECT_STAGE1``):
    ``{"value": CI dict, "r2": CI dict or None}``; None without one."""
    from lumbarjax.schema import PERFECT_STAGE1
    for r in (ablation or {}).get("heads", []):
        if r["head"] == head:
            for row in r["rows"]:
                if row["features"] == PERFECT_STAGE1:
                    return {"value": row["value"], "r2": row.get("r2")}
    return None


def summary_rows(outcomes: Mapping, ablation: Mapping | None, bayes: Mapping | None) -> list[dict]:
    """The summary a clinician reads, one dict per outcome head: the reported model's headline
    metric (AUC; MAE in VAS mm, with R², for the VAS heads), the best comparator (which one),
    the clinical baseline (logistic regression / ridge) with the paired difference to it, the
    learnable ceiling (the same linear family with the true latents, synthetic cohorts) and the
    Bayes-optimal value, and ``sentence`` when the model is not measurably better than the
    clinical baseline (the paired 95 % CI of the difference includes 0 or favours the baseline)."""
    out = []
    for head, entry in outcomes.items():
        binary = entry["task"] == "binary"
        metric = "auc" if binary else "mae"
        best = None
        for name, r in entry["comparators"].items():
            pt = r[metric]["point"]
            if pt is not None and (best is None or (pt > best[1] if binary else pt < best[1])):
                best = (name, pt)
        base = CLINICAL_BASELINE[metric]
        diff = entry["paired_difference"].get(base)
        row = {"head": head, "metric": metric, "reported": entry["model"][metric],
               "reported_r2": None if binary else entry["model"]["r2"],
               "best_comparator": ({"name": best[0], "value": entry["comparators"][best[0]][metric]}
                                   if best else None),
               "clinical_baseline": ({"name": base, "value": entry["comparators"][base][metric], "diff": diff}
                                     if base in entry["comparators"] else None),
               "learnable_ceiling": _learnable_ceiling(ablation, head),
               "bayes": {"value": _bayes_value(bayes, head, metric),
                         "r2": None if binary else _bayes_value(bayes, head, "r2")},
               "sentence": None}
        if diff is not None and diff.get("lo") is not None:
            better = diff["lo"] > 0 if binary else diff["hi"] < 0
            if not better:
                row["sentence"] = (f"{head}: {NO_IMAGE_GAIN} (reported model − {base}: "
                                   f"{fmt_value(diff['diff'], 3 if binary else 1)}, {100 * (1 - diff.get('alpha', 0.05)):.0f} % CI "
                                   f"{fmt_value(diff['lo'], 3 if binary else 1)} to {fmt_value(diff['hi'], 3 if binary else 1)} "
                                   f"{'AUC' if binary else 'VAS mm'}).")
        out.append(row)
    return out


def _weights_html(selection: Mapping | None) -> str:
    """What the reported model is: the stacking rule and its mean weights per head
    (``extra["outcome_model_selection"]``, from ``selection.select``)."""
    if not selection or not selection.get("mean_weights"):
        return ""
    rows = [[_e(h)] + [fmt_value(w.get(c), 2) for c in next(iter(selection["mean_weights"].values()))]
            for h, w in selection["mean_weights"].items()]
    cands = list(next(iter(selection["mean_weights"].values())))
    return (f'<p>The reported model: {_e(selection.get("rule", ""))}. Mean weights over the '
            f'{_e(selection.get("folds", ""))} folds (each fold\'s weights: <code>outcome/selection.json</code>):</p>'
            + html_table(["head"] + [_e(c) for c in cands], rows, "metrics"))


def _summary_html(rows: Sequence[Mapping], grader_rows: Sequence[Sequence[str]], level: str) -> str:
    """The summary table (:func:`summary_rows`; the grader's rows first) and its sentences."""
    def with_r2(ci, r2, digits):
        s = _fmt_ci(ci, digits)
        return s + (f" · R² {fmt_value((r2 or {}).get('point'), 2)}" if r2 else "")

    def value(v, digits):
        if not v:
            return "–"
        if isinstance(v, Mapping) and "point" in v:
            return fmt_value(v["point"], digits)
        return fmt_value(v, digits)

    table = list(grader_rows)
    for r in rows:
        d = 3 if r["metric"] == "auc" else 1
        best, base, ceil, bay = r["best_comparator"], r["clinical_baseline"], r["learnable_ceiling"], r["bayes"]
        ceil_txt = "–" if not ceil else value(ceil["value"], d) + (
            f" · R² {value(ceil.get('r2'), 2)}" if r["metric"] == "mae" and ceil.get("r2") else "")
        bay_txt = value(bay.get("value"), d) + (f" · R² {value(bay.get('r2'), 2)}"
                                                 if r["metric"] == "mae" and bay.get("r2") is not None else "")
        table.append([f"{_e(r['head'])} {r['metric'].upper()}",
                      with_r2(r["reported"], r["reported_r2"], d),
                      (f"{_fmt_ci(best['value'], d)} <span class='muted'>{_e(best['name'])}</span>" if best else "–"),
                      (f"{_fmt_ci(base['value'], d)} <span class='muted'>{_e(base['name'])}</span>" if base else "–"),
                      ceil_txt, bay_txt if bay.get("value") is not None else "–"])
    sentences = "".join(f"<li>{_e(r['sentence'])}</li>" for r in rows if r["sentence"])
    return ('<p class="muted">AUC: higher is better; MAE (VAS mm, 0–100): lower is better. Learnable '
            "ceiling: the same linear models given the true latent grade and stenosis severity instead "
            "of the image scores (synthetic cohorts only); Bayes: the true outcome model.</p>"
            + html_table(["head", f"reported model ({level} CI)", "best comparator (which)",
                          "clinical baseline", "learnable ceiling", "Bayes-optimal"], table, "metrics")
            + (f'<ul class="sentences">{sentences}</ul>' if sentences else ""))


def _ablation_html(ablation: Mapping, level: str) -> str:
    """One table: per head the clinical logistic regression, then each column set with its
    paired difference to it (R² beside the MAE of the VAS heads; the Bayes-optimal value where
    known); the notes below."""
    rows = []
    for r in ablation["heads"]:
        bin_ = r["metric"] == "auc"
        d = 3 if bin_ else 1
        ref = "clinical logistic regression" if bin_ else "clinical ridge"
        bayes = r.get("bayes") or {}
        b = "–" if bayes.get(r["metric"]) is None else fmt_value(bayes[r["metric"]], d) + (
            "" if bin_ or bayes.get("r2") is None else f" · R² {fmt_value(bayes['r2'], 2)}")

        def value(ci, r2):
            return _fmt_ci(ci, d) + ("" if not r2 else f" · R² {fmt_value(r2.get('point'), 2)}")
        rows.append([_e(r["head"]), _e(ref), _e(r["metric"].upper()),
                     value(r["clinical_logreg"], r.get("clinical_logreg_r2")), "–", "–", b])
        for row in r["rows"]:
            rows.append([_e(r["head"]), _e(f"{row['features']} ({row['n_columns']} columns)"),
                         _e(r["metric"].upper()), value(row["value"], row.get("r2")),
                         _fmt_ci(row["diff_vs_clinical_logreg"], d), _fmt_p(row["diff_vs_clinical_logreg"]), b])
    notes = "".join(f"<li>{_e(n)}</li>" for n in ablation.get("notes", []))
    quality = ablation.get("stage1_vs_truth") or {}
    qrows = [[_e(v.get("definition", k)), _fmt_ci(v), _e(v.get("n"))] for k, v in quality.items()]
    return (f'<p class="note">{_e(ablation.get("definition", ""))}. For AUC a positive difference is '
            "better, for MAE (VAS mm) a negative one.</p>"
            + html_table(["head", "features", "metric", f"value ({level} CI)",
                          f"− clinical reference ({level} CI)", "bootstrap p", "Bayes-optimal"],
                         rows, "metrics")
            + ("<h3>Stage 1 against the synthetic truth</h3>"
               + html_table(["measure", f"value ({level} CI)", "patients"], qrows, "metrics") if qrows else "")
            + (f"<ul class='muted'>{notes}</ul>" if notes else ""))


def _levels_html(grader_oof: pd.DataFrame, summary: Mapping | None, n_patients: int = 20) -> str:
    """The X-ray scale level by level (``pipelines.xray_levels`` columns of the grader's table):
    per level the grade counts, the median disc height index (DHI) per grade and, on a synthetic
    cohort, the QWK against the true level grade; the patient-level agreement; then the first
    ``n_patients`` patients' level grades, DHI and |listhesis|."""
    summary = dict(summary or {})
    rows = []
    for lv in LEVELS:
        g = pd.to_numeric(grader_oof.get(f"pred_grade_{lv}"), errors="coerce")
        dhi = pd.to_numeric(grader_oof.get(f"dhi_{lv}"), errors="coerce")
        by_grade = ", ".join(f"{int(k)}: {fmt_value(v)}" for k, v in dhi.groupby(g).median().items())
        counts = ", ".join(f"{int(k)}: {int(v)}" for k, v in g.value_counts().sort_index().items())
        q = summary.get(f"qwk_{lv}_vs_truth")
        rows.append([_e(lv), _e(counts), _e(by_grade), fmt_value(q) if q is not None else "–"])
    body = ("<p>Grades per level from the measured disc height index (disc height over the adjacent "
            "vertebral body depth; landmarks from the film), cut points fitted on each training "
            f"fold; patient grade and scale by the rule {_e(summary.get('rule', '?'))!s}.</p>"
            + html_table(["level", "grade counts", "median DHI per grade", "QWK vs true level grade"],
                         rows, "metrics"))
    agree = [(k, label) for k, label in (
        ("qwk_patient_vs_reader", "patient grade vs the reader's grade"),
        ("qwk_patient_vs_truth", "patient grade vs the true grade"),
        ("qwk_reader_vs_truth", "the reader vs the true grade (reader-noise ceiling)"),
        ("landmark_corner_error_mm", "endplate corner error (mm)"),
        ("landmark_centre_error_mm", "disc centre error (mm)")) if summary.get(k) is not None]
    if agree:
        body += html_table(["measure", "value"], [[_e(label), fmt_value(summary[k])] for k, label in agree])
    cols = [c for c in ("patient_id", "label_grade", "level_pred_grade", "scale") if c in grader_oof.columns]
    head = grader_oof.head(int(n_patients))

    def per_level(row, prefix, digits):
        vals = [row.get(f"{prefix}_{lv}") for lv in LEVELS]
        return " / ".join("–" if v is None or not np.isfinite(float(v)) else
                          (f"{float(v):.{digits}f}" if digits else str(int(round(float(v))))) for v in vals)
    prows = [[_e(r[c]) if c == "patient_id" else fmt_value(r[c]) for c in cols]
             + [_e(per_level(r, "pred_grade", 0)), _e(per_level(r, "dhi", 2)),
                _e(per_level(r, "listhesis_mm", 1))] for _, r in head.iterrows()]
    body += (f"<h3>First {len(head)} patients ({' / '.join(LEVELS)})</h3>"
             + html_table(cols + ["level grades", "DHI", "listhesis (mm)"], prows, "metrics"))
    return body


def _pointing_html(loc: Mapping, level: str) -> str:
    """The pointing game of ``eval.localisation.localisation_summary``: hit rate, positive-mass
    fraction, chance, counts, and level by level."""
    rows = [["pointing-game hit rate", _fmt_ci(loc.get("hit_rate"))],
            ["positive-mass fraction in true level", _fmt_ci(loc.get("mean_fraction"))],
            ["chance level (fraction of volume in true level)", fmt_value(loc.get("chance_hit_rate"))],
            ["patients", fmt_value(loc.get("n"))],
            ["excluded", fmt_value(loc.get("n_excluded"))]]
    body = html_table(["measure", f"value ({level} CI)"], rows)
    if loc.get("by_level"):
        lrows = [[_e(lv), fmt_value(v["mean_mass_fraction"]), _e(v["n_true"]),
                  fmt_value(v["hit_rate_true"]) if v["hit_rate_true"] is not None else "–"]
                 for lv, v in loc["by_level"].items()]
        body += ("<h3>Level by level</h3>"
                 + html_table(["level", "mean share of positive attribution", "patients stenotic here",
                               "pointing-game hit rate among them"], lrows, "metrics"))
    return body


def _mri_levels_html(summary: Mapping, level: str) -> str:
    """The by-level MRI grader on this cohort (``mri_stages.stage_mri_levels``): the localiser's
    error (held out in pretraining; on this cohort against a synthetic truth), per level the
    predicted grade counts and the QWK against the true grade."""
    pre = summary.get("pretraining") or {}
    graded = summary.get("graded_by_level", True)
    if graded:
        body = ("<p>Every disc level is found by the localiser and graded on a crop of "
                f"{_e(pre.get('crop_mm'))} mm around it by the pretrained encoder (one shared grader, "
                "a bias per level). The pretraining cohort never includes a patient of this one.</p>")
    else:
        body = (f"<p>The encoder file's localiser placed the disc levels of {_e(summary.get('patients'))} "
                "patients (the grader reads the whole volume; the MRI score's heat maps are summarised "
                "at these levels). The pretraining cohort never includes a patient of this one.</p>")
    err_rows = []
    for name, e in (("pretraining, held-out patients", pre.get("localiser_val")),
                    ("pretraining, mean-position baseline", pre.get("localiser_baseline_mean_position")),
                    ("this cohort vs the ground truth", summary.get("localiser_error_mm"))):
        if e:
            per = e.get("per_level", {})
            err_rows.append([_e(name), fmt_value(e.get("mean_mm")), fmt_value(e.get("within_10mm"))]
                            + [fmt_value(per.get(lv, {}).get("mean_mm")) for lv in LEVELS])
    if err_rows:
        body += ("<h3>Localiser error (mm)</h3>"
                 + html_table(["where", "mean", "within 10 mm"] + list(LEVELS), err_rows, "metrics"))
    if not graded:
        return body
    vs = summary.get("vs_truth") or {}
    counts = summary.get("pred_grade_counts") or {}
    grows = [[_e(lv), _e(", ".join(str(c) for c in counts.get(lv, []))),
              _e(", ".join(str(c) for c in vs.get("per_level", {}).get(lv, {}).get("true_grade_counts", []))),
              fmt_value(vs.get("per_level", {}).get(lv, {}).get("qwk"))] for lv in LEVELS]
    body += ("<h3>Grades per level</h3>"
             + html_table(["level", "predicted grade counts (0, 1, 2, …)", "true grade counts", "QWK vs truth"],
                          grows, "metrics"))
    if vs:
        body += html_table(["measure", "value"], [
            ["QWK over all levels vs truth", fmt_value(vs.get("qwk_all_levels"))],
            ["QWK of the worst level vs truth", fmt_value(vs.get("qwk_worst_level"))],
            ["pretraining validation QWK (all levels)", fmt_value(pre.get("val_qwk_all_levels"))]])
    return body


def _mri_score_heatmaps_html(hm: Mapping, level: str) -> str:
    """The heat maps of the stage-1 MRI score (``mri_stages.stage_mri_heatmaps``): what they
    attribute, their completeness and, on a synthetic cohort, the pointing game."""
    body = (f"<p>{_e(hm.get('definition', ''))}. Completeness |Δ| median "
            f"{fmt_value(hm.get('completeness_abs_median'))}, max {fmt_value(hm.get('completeness_abs_max'))} "
            "grades. The outcome's linear models read this score; the maps above explain the fusion "
            "network.</p>")
    if hm.get("hit_rate"):
        body += _pointing_html(hm, level)
    placed = hm.get("at_placed_levels")
    if placed and placed.get("n"):
        vs = (placed.get("vs_truth") or {}).get("by_level") or {}
        prow = [[_e(lv), fmt_value(placed["points_at"].get(lv)), fmt_value(placed["mean_mass_fraction"].get(lv)),
                 fmt_value(vs.get(lv, {}).get("hit_rate_true")) if vs.get(lv, {}).get("hit_rate_true") is not None
                 else "–"] for lv in LEVELS]
        body += (f"<h3>At the levels the localiser placed ({_e(placed['n'])} patients)</h3>"
                 f"<p>{_e(placed.get('definition', ''))}; no ground truth needed, so this table exists for a "
                 f"real cohort too. Maps pointing outside every level: {fmt_value(placed['points_at'].get('none'))}.")
        if placed.get("vs_truth"):
            body += (" Pointing game at the true stenotic level with the placed regions: "
                     f"{_fmt_ci(placed['vs_truth'].get('hit_rate'))}.")
        body += "</p>" + html_table(["level", "share of maps pointing here", "mean share of positive attribution",
                                     "pointing-game hit rate among the patients stenotic here"], prow, "metrics")
    return body


def _heatmap_gallery(heatmaps) -> tuple[str, list]:
    items = {"correct": [], "wrong": []}
    meta = []
    for i, h in enumerate(heatmaps):
        for k in ("patient_id", "png"):
            if k not in h:
                raise LumbarjaxError(f"write_report: heatmaps[{i}] has no '{k}'")
        png = h["png"]
        if isinstance(png, (str, os.PathLike)):
            try:
                png = Path(png).read_bytes()
            except OSError as e:
                raise LumbarjaxError(f"write_report: heat map {h['png']} for patient "
                                     f"{h['patient_id']}: {e}") from e
        correct = bool(h.get("correct", False))
        caption = str(h.get("caption", ""))
        img = _img(bytes(png), f"heat map, patient {h['patient_id']}", "heat")
        items["correct" if correct else "wrong"].append(
            f'<figure class="heat">{img}'
            f'<figcaption><b>{_e(h["patient_id"])}</b> — {_e(caption)}</figcaption></figure>')
        meta.append({"patient_id": str(h["patient_id"]), "caption": caption, "correct": correct})
    out = ""
    for key, label in (("correct", "Correct predictions"), ("wrong", "Wrong predictions")):
        body = "".join(items[key]) or '<p class="muted">none</p>'
        out += f'<h3>{label} ({len(items[key])})</h3><div class="gallery">{body}</div>'
    return out, meta


CSS = """
:root { --fg:#1d2430; --muted:#6b7480; --line:#dfe3e8; --accent:#1f5fa8; --bg:#f7f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff;
       min-height: 100vh; box-shadow: 0 0 12px rgba(0,0,0,.05); }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.05em; margin: 20px 0 8px; }
.sub, .muted { color: var(--muted); }
nav { margin: 12px 0 8px; font-size: .92em; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: .9em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { background: #eef2f7; font-weight: 600; }
td table { margin: 0; }
.ci { color: var(--muted); font-size: .92em; }
img.plot { max-width: 100%; height: auto; display: block; margin: 6px 0 16px; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
figure.heat { margin: 0; width: 260px; border: 1px solid var(--line); padding: 6px;
              border-radius: 4px; }
img.heat { width: 100%; height: auto; display: block; }
figcaption { font-size: .82em; color: var(--muted); margin-top: 4px; }
.note { background: #f3f6fa; border-left: 3px solid var(--accent); padding: 6px 12px;
        font-size: .9em; }
"""


# ----------------------------------------------------------------------------- main entry
def write_report(out_dir, *, title: str, cohort_summary: dict, grader_oof: pd.DataFrame = None,
                 outcome_oof: pd.DataFrame = None, baseline_oof: dict = None,
                 clinical_only_oof: pd.DataFrame = None, other_models: dict = None, bayes: dict = None,
                 heatmaps: list = None, completeness=None, localisation: dict = None,
                 ablation: dict = None, extra: dict = None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 threshold: float = 0.5) -> tuple[str, str]:
    """Write ``report.html`` and ``metrics.json`` into ``out_dir``.

    Args:
      title: report title.
      cohort_summary: counts (e.g. ``data.cohort.cohort_summary``), incl. exclusions by reason.
      grader_oof: OOF grader predictions ``patient_id, fold, label_grade, pred_grade,
        prob_grade_0..K-1``.
      outcome_oof: OOF outcome predictions ``patient_id, fold, label_<head>, pred_<head>``
        (binary heads: probabilities; VAS heads: 0–100).
      baseline_oof: head → :func:`lumbarjax.eval.baselines.clinical_baselines` output.
      clinical_only_oof: OOF predictions of the network trained on clinical features only
        (same columns as ``outcome_oof``).
      other_models: further comparators, name → OOF table with ``patient_id, pred_<head>``
        (e.g. the fusion network when ``outcome_oof`` is the selected model).
      bayes: synthetic cohorts only — head → its Bayes-optimal value: a number (an AUC) or a dict
        with ``auc`` (binary heads) or ``mae`` and ``r2`` (VAS heads), e.g.
        ``workflow.bayes_ceilings`` (the true outcome model of ``ground_truth.csv``).
      The summary (``metrics["summary"]``, :func:`summary_rows`) puts per head the model beside
        its best comparator, the clinical baseline, the learnable ceiling (the ablation's
        perfect-stage-1 row) and the Bayes-optimal value.
      heatmaps: list of ``dict(patient_id, png (bytes or path), caption, correct)``.
      completeness: ``(N,)`` IG completeness errors ``|Σ attr − (F(x) − F(x'))|``.
      localisation: output of :func:`lumbarjax.eval.localisation.localisation_summary`.
      ablation: the source ablation (``workflow.stage_ablation``: ``feature_sets, notes,
        definition, heads`` = a list of :func:`lumbarjax.selection.ablation.ablation` results),
        stored as ``metrics["ablation"]`` and shown as a table.
      extra: any further JSON-like numbers (shown as a table and stored in metrics.json).
      n_boot, seed, alpha: patient bootstrap settings for every CI; threshold: the
        probability cut-off for sensitivity / specificity.

    Returns ``(html_path, metrics_json_path)`` as strings.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("cohort_summary", cohort_summary), ("bayes", bayes), ("extra", extra),
                      ("localisation", localisation), ("ablation", ablation)):
        _check_no_phi(obj, name)
    kw = dict(n_boot=n_boot, seed=seed, alpha=alpha)
    level = f"{100 * (1 - alpha):.0f}%"
    metrics: dict = {
        "title": title,
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "alpha": alpha,
                      "method": "percentile bootstrap over patients"},
        "cohort": cohort_summary,
    }
    sections: list[tuple[str, str, str]] = []   # (id, heading, html)
    grader_rows: list[list[str]] = []

    # -- cohort
    sections.append(("cohort", "Cohort", _generic(cohort_summary or {})))

    # -- grader
    if grader_oof is not None:
        for c in ("label_grade", "pred_grade"):
            if c not in grader_oof.columns:
                raise LumbarjaxError(f"write_report: grader_oof has no column '{c}'")
        K = _num_grades(grader_oof)
        y = pd.to_numeric(grader_oof["label_grade"], errors="coerce").to_numpy(float)
        yh = pd.to_numeric(grader_oof["pred_grade"], errors="coerce").to_numpy(float)
        try:
            g = M.grader_report(y, yh, K, **kw)
        except LumbarjaxError as e:
            raise LumbarjaxError(f"write_report: grader_oof: {e}") from e
        metrics["grader"] = g
        rows = [[_e(m), _fmt_ci(g[m])] for m in ("qwk", "accuracy", "within_one", "mae")]
        body = (f'<p>{g["n"]} patients with a grade ({g["n_missing_label"]} missing), '
                f'{K} grades. Headline: quadratic weighted kappa.</p>'
                + html_table(["metric", f"value ({level} CI)"], rows)
                + _img(F.fig_confusion(np.asarray(g["confusion"])), "grader confusion matrix"))
        sections.append(("grader", "Grader (X-ray degeneration grade)", body))
        grader_rows.append(["grader QWK, whole film", _fmt_ci(g["qwk"]), "–", "–", "–", "–"])
        if "level_pred_grade" in grader_oof.columns:
            lv = pd.to_numeric(grader_oof["level_pred_grade"], errors="coerce").to_numpy(float)
            ok = np.isfinite(lv)
            if ok.any():
                metrics["grader_levels"] = M.grader_report(y[ok], lv[ok], K, **kw)
                grader_rows.append(["grader QWK, level by level (patient grade)",
                                    _fmt_ci(metrics["grader_levels"]["qwk"]), "–", "–", "–", "–"])
        if "pred_grade_L1L2" in grader_oof.columns and "dhi_L1L2" in grader_oof.columns:
            sections.append(("xray_levels", "The X-ray scale level by level",
                             _levels_html(grader_oof, (extra or {}).get("xray_levels"))))

    # -- outcomes
    if outcome_oof is not None:
        if "patient_id" not in outcome_oof.columns:
            raise LumbarjaxError("write_report: outcome_oof has no column 'patient_id'")
        res, roc, cal, dcs, scatter = _outcomes(outcome_oof, baseline_oof, clinical_only_oof,
                                                kw, threshold, other_models)
        metrics["outcomes"] = res
        body = ""
        for head, entry in res.items():
            bin_ = entry["task"] == "binary"
            names = ["model"] + list(entry["comparators"])
            reps = [entry["model"]] + list(entry["comparators"].values())
            mets = (["auc", "brier", "sensitivity", "specificity", "calibration_slope",
                     "calibration_intercept"] if bin_ else ["mae", "rmse", "r2", "bias"])
            digits = 3 if bin_ else 1
            rows = [[_e(m)] + [_fmt_ci(r[m], 2 if m == "r2" else digits) for r in reps]
                    for m in mets]
            rows.append(["n"] + [_e(r["n"]) for r in reps])
            for m in (("auc",) if bin_ else ("mae", "r2")):
                bv = _bayes_value(bayes, head, m)
                if bv is not None:
                    rows.append([f"Bayes-optimal {m.upper() if m != 'r2' else 'R²'} (synthetic truth)",
                                 fmt_value(bv, 2 if m == "r2" else digits)] + ["" for _ in reps[1:]])
            body += f'<h3 id="head-{_e(head)}">{_e(head)}</h3>'
            extra_note = (f'prevalence {fmt_value(entry["model"]["prevalence"])}, '
                          if bin_ else "VAS 0–100, ")
            body += (f'<p class="muted">{entry["model"]["n"]} patients with a label '
                     f'({entry["model"]["n_missing_label"]} missing), {extra_note}'
                     f'{level} bootstrap CIs.</p>')
            body += html_table(["metric"] + [_e(n) for n in names], rows, "metrics")
            if entry["paired_difference"]:
                prow = [[_e(n), _e(d["metric"]), _fmt_ci(d, digits), _fmt_p(d)]
                        for n, d in entry["paired_difference"].items()]
                better = ("AUC(model) − AUC(comparator): positive = model better" if bin_ else
                          "MAE(model) − MAE(comparator), VAS mm: negative = model better")
                body += ("<p>Paired bootstrap difference on the same resampled patients, "
                         f"{better}:</p>"
                         + html_table(["comparator", "metric", f"difference ({level} CI)",
                                   "bootstrap p"], prow, "metrics"))
        sections.append(("outcomes", "Outcome model vs clinical baselines", body))
        if roc:
            sections.append(("roc", "ROC curves", _img(F.fig_roc(roc), "ROC curves")))
            sections.append(("calibration", "Calibration",
                             '<p class="note">Slope: logistic recalibration '
                             "logit P(y) = a + b·logit(p), b = slope (1 ideal, &lt; 1 "
                             "overconfident). Intercept: calibration-in-the-large (slope fixed "
                             "at 1).</p>" + _img(F.fig_calibration(cal), "calibration plots")))
            sections.append(("decision", "Decision curves",
                             _img(F.fig_decision(dcs), "decision curves")))
        if scatter:
            sections.append(("regression", "Post-operative pain (VAS)",
                             _img(F.fig_scatter(scatter), "predicted vs observed VAS")))

    # -- source ablation
    if ablation:
        metrics["ablation"] = ablation
        if ablation.get("stage1_vs_truth"):
            metrics["stage1_vs_truth"] = ablation["stage1_vs_truth"]
        sections.append(("ablation", "Source ablation (clinical / + X-ray / + MRI / all)",
                         _ablation_html(ablation, level)))

    # -- bayes
    if bayes:
        metrics["bayes_optimal"] = bayes
        sections.append(("bayes", "Bayes-optimal performance (synthetic cohort)",
                         '<p class="muted">Computed from the true outcome model of the synthetic '
                         "cohort (AUC of the true probabilities; for VAS the MAE of the conditional "
                         "median and the R² of the conditional mean given the pre-operative VAS and "
                         "the true success probability): the best any model could do.</p>"
                         + _generic(bayes)))

    # -- heat maps
    if heatmaps:
        gallery, meta = _heatmap_gallery(heatmaps)
        metrics["heatmaps"] = meta
        sections.append(("heatmaps", "Heat maps (integrated gradients)", gallery))

    # -- completeness
    if completeness is not None:
        c = np.asarray(completeness, dtype=np.float64).reshape(-1)
        c = c[np.isfinite(c)]
        a = np.abs(c)
        summ = {"n": int(c.size),
                "mean_abs": float(a.mean()) if c.size else None,
                "median_abs": float(np.median(a)) if c.size else None,
                "p95_abs": float(np.percentile(a, 95)) if c.size else None,
                "max_abs": float(a.max()) if c.size else None}
        metrics["completeness"] = {"summary": summ, "values": c.tolist()}
        body = ('<p>Completeness error |Σ attributions − (F(input) − F(baseline))| per '
                "explained prediction.</p>"
                + html_table(["n", "mean |error|", "median", "95th pct", "max"],
                         [[fmt_value(summ[k], 5) for k in summ]]))
        if c.size:
            body += _img(F.fig_hist(a, "|completeness error|", "IG completeness error"),
                         "completeness error histogram")
        sections.append(("completeness", "Integrated-gradients completeness", body))

    # -- localisation
    if localisation:
        metrics["localisation"] = localisation
        body = _pointing_html(localisation, level)
        if localisation.get("exclusions"):
            body += "<h3>Exclusions</h3>" + _generic(localisation["exclusions"])
        if localisation.get("per_patient"):
            body += "<h3>Per patient</h3>" + _generic(localisation["per_patient"])
        sections.append(("localisation", "Does the heat map point at the stenotic level?", body))

    mri_hm = (extra or {}).get("mri_score_heatmaps")
    if mri_hm:
        sections.append(("mri_score_heatmaps", "Does the MRI score's heat map point at the stenotic level?",
                         _mri_score_heatmaps_html(mri_hm, level)))
    mri_levels = (extra or {}).get("mri_levels")
    if mri_levels:
        sections.append(("mri_levels", "The MRI level by level", _mri_levels_html(mri_levels, level)))

    # -- extra
    if extra:
        metrics["extra"] = extra
        sections.append(("extra", "Further results", _generic(extra)))

    # -- assemble
    metrics["summary"] = summary = summary_rows(metrics.get("outcomes", {}), ablation, bayes)
    metrics = M.to_jsonable(metrics)
    json_path = out / "metrics.json"
    atomic.write_text(json_path, json.dumps(metrics, indent=2, allow_nan=False))

    head_html = ""
    if summary or grader_rows:
        head_html = ('<section id="summary"><h2>Summary</h2>'
                     + _summary_html(summary, grader_rows, level)
                     + _weights_html((extra or {}).get("outcome_model_selection")) + "</section>")
    nav = "".join(f'<a href="#{sid}">{_e(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_e(h)}</h2>{b}</section>' for sid, h, b in sections)
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
           f"<h1>{_e(title)}</h1><p class=\"sub\">lumbarjax report · generated "
           f"{_e(metrics['generated'])} · {n_boot} bootstrap resamples of patients, "
           f"seed {seed}. Every number is in <code>metrics.json</code>.</p>"
           f"<nav>{nav}</nav>{head_html}{body}</main></body></html>")
    html_path = out / "report.html"
    atomic.write_text(html_path, doc)
    return str(html_path), str(json_path)
