import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lumbarjax.errors import LumbarjaxError
from lumbarjax.eval.report import write_report

N = 60
FAKE_NAME = "Doe^Jane"


def _png(color) -> bytes:
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.random.default_rng(0).random((16, 16)), cmap=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _inputs(tmp):
    rng = np.random.default_rng(0)
    pid = [f"P{i:03d}" for i in range(N)]
    folds = np.arange(N) % 5
    oof = pd.DataFrame({"patient_id": pid, "fold": folds, "PatientName": FAKE_NAME})
    baselines = {}
    for k, head in enumerate(["zcq_success", "back_pain_improved50", "leg_pain_improved50"]):
        lp = rng.normal(0, 1.5, N)
        y = (rng.random(N) < 1 / (1 + np.exp(-lp))).astype(float)
        y[k] = np.nan
        oof[f"label_{head}"] = y
        oof[f"pred_{head}"] = 1 / (1 + np.exp(-lp))
        baselines[head] = pd.DataFrame({
            "patient_id": pid, "fold": folds, "label": y,
            "pred_logreg": 1 / (1 + np.exp(-(0.5 * lp + rng.normal(0, 1, N)))),
            "pred_gbm": rng.random(N)})
    for head in ["back_pain_post", "leg_pain_post"]:
        y = rng.uniform(0, 100, N)
        oof[f"label_{head}"] = y
        oof[f"pred_{head}"] = np.clip(y + rng.normal(0, 10, N), 0, 100)
        baselines[head] = pd.DataFrame({
            "patient_id": pid, "fold": folds, "label": y,
            "pred_logreg": np.clip(y + rng.normal(0, 20, N), 0, 100),
            "pred_gbm": np.full(N, 50.0)})
    clinical_only = oof[["patient_id", "fold"]].copy()
    for head in ["zcq_success", "back_pain_improved50", "leg_pain_improved50"]:
        clinical_only[f"pred_{head}"] = rng.random(N)
    g = rng.integers(0, 5, N)
    gh = np.clip(g + rng.integers(-1, 2, N), 0, 4)
    probs = rng.dirichlet(np.ones(5), N)
    grader = pd.DataFrame({"patient_id": pid, "fold": folds, "label_grade": g.astype(float),
                           "pred_grade": gh})
    grader.loc[0, "label_grade"] = np.nan
    for j in range(5):
        grader[f"prob_grade_{j}"] = probs[:, j]
    png_path = tmp / "hm_P001.png"
    png_path.write_bytes(_png("magma"))
    heatmaps = [
        {"patient_id": "P001", "png": str(png_path), "caption": "L4/L5 stenosis, p=0.81",
         "correct": True},
        {"patient_id": "P002", "png": _png("viridis"), "caption": "no stenosis <b>x</b>",
         "correct": False},
        {"patient_id": "P003", "png": _png("gray"), "caption": "L3/L4", "correct": True},
    ]
    cohort = {"n_included": N, "n_excluded": 4,
              "n_excluded_by_reason": {"no MRI series": 3, "duplicate patient_id": 1},
              "modalities": {"xray_and_mri": 55, "xray_only": 5, "mri_only": 0, "neither": 0},
              "class_balance": {"zcq_success": {"0": 25, "1": 34, "missing": 1}}}
    localisation = {"n": 10, "n_excluded": 0, "exclusions": [],
                    "hit_rate": {"point": 0.7, "lo": 0.4, "hi": 0.9},
                    "mean_fraction": {"point": 0.55, "lo": 0.41, "hi": 0.68},
                    "chance_hit_rate": 0.18, "per_patient": []}
    return dict(title="Demo cross-validation", cohort_summary=cohort, grader_oof=grader,
                outcome_oof=oof, baseline_oof=baselines, clinical_only_oof=clinical_only,
                bayes={"zcq_success": 0.842, "back_pain_improved50": {"auc": 0.777}},
                heatmaps=heatmaps, completeness=np.abs(rng.normal(0, 1e-3, 40)),
                localisation=localisation, extra={"train_seconds": 12.5})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    html_path, json_path = write_report(tmp / "out", n_boot=100, **_inputs(tmp))
    return tmp, html_path, json_path


N_PLOTS = 6  # confusion, ROC, calibration, decision curves, VAS scatter, completeness
N_HEATMAPS = 3


def test_report_files_sections_and_numbers(report):
    _, html_path, json_path = report
    assert os.path.getsize(html_path) > 10_000
    doc = open(html_path, encoding="utf-8").read()
    metrics = json.loads(open(json_path).read())  # strict JSON
    for sid in ["summary", "cohort", "grader", "outcomes", "roc", "calibration", "decision",
                "regression", "bayes", "heatmaps", "completeness", "localisation", "extra"]:
        assert f'<section id="{sid}">' in doc, sid
    # numbers shown == numbers stored
    qwk = metrics["grader"]["qwk"]
    assert f"{qwk['point']:.3f}" in doc and f"{qwk['lo']:.3f}" in doc
    assert metrics["grader"]["n_missing_label"] == 1
    z = metrics["outcomes"]["zcq_success"]
    assert f"{z['model']['auc']['point']:.3f}" in doc
    assert f"{z['comparators']['clinical logreg']['auc']['point']:.3f}" in doc
    d = z["paired_difference"]["clinical GBM"]
    assert f"{d['diff']:.3f}" in doc and d["lo"] <= d["diff"] <= d["hi"]
    assert set(z["comparators"]) == {"clinical logreg", "clinical GBM", "clinical-only network"}
    assert z["model"]["n_missing_label"] == 1
    vas = metrics["outcomes"]["back_pain_post"]
    assert vas["task"] == "regression" and "clinical ridge" in vas["comparators"]
    assert f"{vas['model']['mae']['point']:.1f}" in doc
    assert "0.842" in doc and "0.777" in doc           # Bayes-optimal AUCs
    assert "no MRI series" in doc and "duplicate patient_id" in doc  # exclusion reasons
    assert "0.700" in doc and "0.180" in doc            # localisation hit rate, chance
    assert metrics["completeness"]["summary"]["n"] == 40
    assert metrics["extra"]["train_seconds"] == 12.5
    assert "Correct predictions (2)" in doc and "Wrong predictions (1)" in doc
    assert "no stenosis &lt;b&gt;x&lt;/b&gt;" in doc     # captions escaped


def test_report_is_self_contained_and_phi_free(report):
    _, html_path, json_path = report
    doc = open(html_path, encoding="utf-8").read()
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", doc)
    assert len(re.findall(r"<img\b", doc)) == len(srcs) == N_PLOTS + N_HEATMAPS
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=\"(https?:|//)", doc)
    assert "<link" not in doc and "<script" not in doc and "@import" not in doc
    assert "url(" not in doc
    for text in (doc, open(json_path).read()):
        assert FAKE_NAME not in text and "PatientName" not in text


def test_report_refuses_phi_keys(tmp_path):
    with pytest.raises(LumbarjaxError, match="PatientBirthDate"):
        write_report(tmp_path, title="x", cohort_summary={"PatientBirthDate": "19500101"})


def test_report_minimal_inputs(tmp_path):
    html_path, json_path = write_report(tmp_path, title="Only cohort",
                                        cohort_summary={"n_included": 3})
    doc = open(html_path, encoding="utf-8").read()
    assert "<h1>Only cohort</h1>" in doc and "<img" not in doc
    assert json.load(open(json_path))["cohort"] == {"n_included": 3}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: the report must be checked in a real browser. "
                "Install it with `apt-get update && apt-get install -y chromium` "
                "(Debian package; CI installs it).")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                "--virtual-time-budget=10000"]

COUNT_SCRIPT = """<script>window.addEventListener("load", function () {
  var im = document.images, ok = 0;
  for (var i = 0; i < im.length; i++) if (im[i].complete && im[i].naturalWidth > 0) ok++;
  document.body.setAttribute("data-images-loaded", ok);
  document.body.setAttribute("data-images-total", im.length);
});</script>"""


def test_report_renders_in_headless_chromium(report, tmp_path):
    chrome = _chromium()
    _, html_path, _ = report
    doc = open(html_path, encoding="utf-8").read()
    n_img = len(re.findall(r"<img\b", doc))
    page = tmp_path / "check.html"       # the test's own copy, with the counting script
    page.write_text(doc.replace("</body>", COUNT_SCRIPT + "</body>"), encoding="utf-8")
    base = [chrome, *CHROME_FLAGS]
    res = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom",
                                 page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', res.stdout)
    total = re.search(r'data-images-total="(\d+)"', res.stdout)
    assert loaded and total, "the load handler did not run: " + res.stdout[:500]
    assert int(total.group(1)) == n_img == N_PLOTS + N_HEATMAPS
    assert int(loaded.group(1)) == n_img

    shot = tmp_path / "report.png"
    res = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile2'}",
                                 f"--screenshot={shot}", "--window-size=1280,1600",
                                 f"file://{html_path}"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert len(data) > 10_000 and data[:4] == b"\x89PNG"
    import matplotlib.image as mpimg
    pixels = mpimg.imread(str(shot))
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels[..., :3].std() > 0.02     # not a blank page


def test_report_shows_the_xray_scale_level_by_level(tmp_path):
    """Level grades, disc height index and listhesis per patient, the median index per grade
    and the agreement with the truth from ``extra["xray_levels"]``."""
    levels = ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")
    rows = []
    for i in range(6):
        g = [(i + j) % 3 for j in range(5)]
        rows.append({"patient_id": f"LJ{i:04d}", "fold": i % 2, "label_grade": max(g), "pred_grade": max(g),
                     "level_pred_grade": max(g), "scale": sum(g),
                     **{f"pred_grade_{lv}": g[j] for j, lv in enumerate(levels)},
                     **{f"dhi_{lv}": 0.30 - 0.05 * g[j] for j, lv in enumerate(levels)},
                     **{f"listhesis_mm_{lv}": 0.5 * j for j, lv in enumerate(levels)}})
    oof = pd.DataFrame(rows)
    extra = {"xray_levels": {"rule": "max", "qwk_L4L5_vs_truth": 0.988, "qwk_reader_vs_truth": 0.921}}
    html_path, _ = write_report(tmp_path, title="levels", cohort_summary={"n": 6}, grader_oof=oof,
                                extra=extra, n_boot=20)
    text = re.sub(r"<[^>]+>", " ", open(html_path).read())
    text = re.sub(r"\s+", " ", text)
    assert "The X-ray scale level by level" in text and "by the rule max" in text
    assert "L4L5 0: 2, 1: 2, 2: 2 0: 0.300, 1: 0.250, 2: 0.200 0.988" in text   # counts, median DHI, QWK
    assert "L1L2 0: 2, 1: 2, 2: 2 0: 0.300, 1: 0.250, 2: 0.200 –" in text       # no truth for L1L2
    assert "reader-noise ceiling) 0.921" in text
    assert "LJ0001" in text and "1 / 2 / 0 / 1 / 2 0.25 / 0.20 / 0.30 / 0.25 / 0.20 0.0 / 0.5 / 1.0 / 1.5 / 2.0" in text


def _ablation_for(heads_metric):
    """A source ablation with the perfect-stage-1 row (the learnable ceiling) for each head."""
    def ci(v):
        return {"point": v, "lo": v - 0.05, "hi": v + 0.05, "n_boot": 100, "n_skipped": 0}
    heads = []
    for head, (metric, ceil, r2) in heads_metric.items():
        heads.append({"head": head, "metric": metric, "bayes": None, "clinical_logreg": ci(0.6),
                      "clinical_logreg_r2": None,
                      "rows": [{"features": "clinical + true latents", "n_columns": 9, "models": ["x"],
                                "value": ci(ceil), "r2": ci(r2) if r2 is not None else None,
                                "diff_vs_clinical_logreg": {"diff": 0.0, "lo": -0.1, "hi": 0.1, "p_value": 1.0,
                                                            "n_boot": 100, "n_skipped": 0}}]})
    return {"heads": heads, "notes": [], "definition": "test", "feature_sets": {}}


def test_summary_in_a_browser_names_comparator_baseline_ceiling_and_bayes_per_head(tmp_path):
    """The summary a clinician reads, as Chromium renders it: per head the reported model, the
    best comparator and which it is, the clinical baseline, the learnable ceiling and the Bayes
    value (MAE with R² for VAS); a plain sentence for a head where the model is not measurably
    better than the clinical baseline; the grader's level-by-level patient grade beside the
    whole-film grade."""
    inputs = _inputs(tmp_path)
    oof, base = inputs["outcome_oof"], inputs["baseline_oof"]
    y = oof["label_zcq_success"].to_numpy()
    oof["pred_zcq_success"] = np.where(np.isnan(y), 0.5, 0.15 + 0.7 * np.nan_to_num(y))   # clearly better
    oof["pred_leg_pain_improved50"] = base["leg_pain_improved50"]["pred_logreg"]            # no gain at all
    grader = inputs["grader_oof"]
    grader["level_pred_grade"] = grader["label_grade"].fillna(0).astype(int)                # perfect levels
    inputs.update(ablation=_ablation_for({"zcq_success": ("auc", 0.811, None), "back_pain_improved50": ("auc", 0.7, None),
                                          "leg_pain_improved50": ("auc", 0.65, None),
                                          "back_pain_post": ("mae", 9.87, 0.61), "leg_pain_post": ("mae", 12.3, 0.4)}),
                  bayes={"zcq_success": {"auc": 0.842}, "back_pain_improved50": {"auc": 0.777},
                         "back_pain_post": {"mae": 7.65, "r2": 0.72}},
                  heatmaps=None, localisation=None, completeness=None,
                  extra={"outcome_model_selection": {"rule": "stacking (test)", "folds": 5, "mean_weights": {
                      "zcq_success": {"linear": 0.25, "network": 0.6, "clinical network": 0.15}}}})
    html_path, json_path = write_report(tmp_path / "out", n_boot=100, **inputs)
    res = subprocess.run([_chromium(), *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          f"file://{html_path}"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    whole = re.search(r'<section id="summary">(.*?)</section>', res.stdout, re.S).group(1)
    section = whole[:whole.index("</table>")] + whole[whole.index("</table>"):].split("<table")[0]
    weights = re.sub(r"<[^>]+>", " ", whole[whole.index("The reported model"):])
    assert "stacking (test)" in weights and re.search(r"zcq_success\s+0.25\s+0.60\s+0.15", weights), weights
    header = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", section)]
    assert header == ["head", "reported model (95% CI)", "best comparator (which)", "clinical baseline",
                      "learnable ceiling", "Bayes-optimal"]
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        cells = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        if cells:
            rows[cells[0]] = cells
    m = json.load(open(json_path))
    assert set(rows) == {"grader QWK, whole film", "grader QWK, level by level (patient grade)", "zcq_success AUC",
                         "back_pain_improved50 AUC", "leg_pain_improved50 AUC", "back_pain_post MAE", "leg_pain_post MAE"}
    assert rows["grader QWK, level by level (patient grade)"][1].startswith("1.000")
    z = rows["zcq_success AUC"]
    assert z[1].startswith(f"{m['outcomes']['zcq_success']['model']['auc']['point']:.3f}")
    best = max(m["outcomes"]["zcq_success"]["comparators"].items(), key=lambda kv: kv[1]["auc"]["point"])
    assert z[2].startswith(f"{best[1]['auc']['point']:.3f}") and z[2].endswith(best[0])
    assert z[3].endswith("clinical logreg") and z[4] == "0.811" and z[5] == "0.842"
    v = rows["back_pain_post MAE"]
    assert " · R² " in v[1] and v[3].endswith("clinical ridge") and v[4] == "9.9 · R² 0.61" and v[5] == "7.7 · R² 0.72"
    assert rows["leg_pain_post MAE"][5] == "–"
    sentences = re.findall(r"<li>(.*?)</li>", section)
    assert any(s.startswith("leg_pain_improved50: the images add nothing measurable") for s in sentences), sentences
    assert not any(s.startswith("zcq_success:") for s in sentences)
    assert [r["head"] for r in m["summary"]] == ["zcq_success", "back_pain_improved50", "leg_pain_improved50",
                                                 "back_pain_post", "leg_pain_post"]


def test_paired_difference_captions_say_which_sign_favours_the_model(report):
    _, html_path, _ = report
    doc = open(html_path, encoding="utf-8").read()
    assert "AUC(model) − AUC(comparator): positive = model better" in doc
    assert "MAE(model) − MAE(comparator), VAS mm: negative = model better" in doc
