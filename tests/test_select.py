"""selection.select: the reported outcome model, per fold and head a convex combination of the
candidates whose weights are fitted on the inner validation patients only; the test fold never
enters a fit or a weight."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data.cohort import make_folds
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.eval import metrics as M
from lumbarjax.selection import linear, stack
from lumbarjax.selection import select

# two candidates per head keep the test quick; the choice among them is selection.linear's
GRIDS = {"zcq_success": [linear.Candidate("logreg_l2", 1.0), linear.Candidate("logreg_l2", 0.1)],
         "back_pain_post": [linear.Candidate("ridge", 1.0), linear.Candidate("ridge", 10.0)]}
HEADS = ["zcq_success", "back_pain_post"]


def _run(tmp_path, n=160, seed=0):
    """A cohort whose zcq_success follows `age` and whose VAS follows `score`, with the outer
    folds and inner splits written as pipelines.crossval writes them (one run folder per network)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    score = rng.normal(0, 1, n)
    p = 1 / (1 + np.exp(-(age - 60) / 4))
    rec = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "age": age, "score": score,
                        "zcq_success": (rng.random(n) < p).astype(float),
                        "back_pain_post": np.clip(50 + 15 * score + rng.normal(0, 5, n), 0, 100)})
    folds = make_folds(rec, k=4, seed=seed, stratify_on="zcq_success")
    runs = {}
    for name in select.NETWORK_DIRS:
        run = tmp_path / select.NETWORK_DIRS[name]
        for f in range(4):
            tr = np.flatnonzero(folds != f)
            val, itr = tr[::5], np.setdiff1d(tr, tr[::5])
            d = run / f"fold_{f}"
            d.mkdir(parents=True)
            ids = rec["patient_id"].to_numpy()
            (d / "split.json").write_text(json.dumps({"test": ids[folds == f].tolist(),
                                                      "inner_train": ids[itr].tolist(),
                                                      "inner_val": ids[val].tolist()}))
        runs[name] = str(run)
    return rec, folds, runs


def _network(rec, folds, run, pred_zcq, pred_vas):
    """A network's files: inner_val.csv per fold (its held-out predictions) and its oof table."""
    for f in range(4):
        d = os.path.join(run, f"fold_{f}")
        val = json.load(open(os.path.join(d, "split.json")))["inner_val"]
        rows = rec.set_index("patient_id").index.get_indexer(val)
        pd.DataFrame({"patient_id": val, "pred_zcq_success": pred_zcq[rows],
                      "pred_back_pain_post": pred_vas[rows]}).to_csv(os.path.join(d, "inner_val.csv"), index=False)
    return pd.DataFrame({"patient_id": rec["patient_id"], "fold": folds, "pred_zcq_success": pred_zcq,
                         "pred_back_pain_post": pred_vas})


def _stack(tmp_path, net_z, net_v, cnet_z=None, cnet_v=None, features=("age", "score"), **kw):
    rec, folds, runs = _run(tmp_path)
    n = len(rec)
    oofs = {"network": _network(rec, folds, runs["network"], net_z, net_v)}
    oofs["clinical network"] = _network(rec, folds, runs["clinical network"],
                                        np.full(n, 0.5) if cnet_z is None else cnet_z,
                                        np.full(n, 50.0) if cnet_v is None else cnet_v)
    kw.setdefault("image_gate", False)
    kw.setdefault("candidates", ("linear", "network", "clinical network"))
    kw.setdefault("shrink", 0.5)
    out, summary = select.stack_models(rec, folds, HEADS, ["zcq_success"], list(features), oofs, runs,
                                       str(tmp_path), seed=0, grid_for=GRIDS.get, **kw)
    return rec, folds, runs, oofs, out, summary


def test_each_fold_predicts_its_test_patients_with_its_weights_times_the_refitted_candidates(tmp_path):
    rng = np.random.default_rng(1)
    n = 160
    rec, folds, runs, oofs, out, summary = _stack(tmp_path, rng.random(n), np.full(n, 50.0))
    assert len(summary["folds_detail"]) == 8 and summary["candidates"] == ["linear", "network", "clinical network"]
    for e in summary["folds_detail"]:
        f, h = e["fold"], e["head"]
        assert abs(sum(e["weights"].values()) - 1) < 1e-9 and set(e["weights"]) == set(summary["candidates"])
        split = json.load(open(os.path.join(runs["network"], f"fold_{f}", "split.json")))
        rows = rec.set_index("patient_id").index.get_indexer(split["inner_train"] + split["inner_val"])
        task = "binary" if h == "zcq_success" else "regression"
        lin = select.fit_linear(rec, h, task, rows, "linear", ["age", "score"], ["age", "score"], GRIDS[h], f)
        test = folds == f
        want = (e["weights"]["linear"] * lin.predict(rec.loc[test])
                + e["weights"]["network"] * oofs["network"].loc[test, f"pred_{h}"].to_numpy()
                + e["weights"]["clinical network"] * oofs["clinical network"].loc[test, f"pred_{h}"].to_numpy())
        np.testing.assert_allclose(out.loc[test, f"pred_{h}"], want, rtol=1e-12)
        assert out.loc[test, f"model_{h}"].eq(stack.describe(e["weights"], {"linear": lin.candidate.name})).all()
        assert e["models"]["linear"] == lin.candidate.name and e["n_inner_val"] == len(split["inner_val"])
    saved = json.load(open(tmp_path / "selection.json"))
    assert saved["folds_detail"][0]["weights"] == summary["folds_detail"][0]["weights"]
    assert pd.read_csv(tmp_path / "selected_oof.csv")["pred_zcq_success"].notna().all()
    assert out["pred_back_pain_post"].between(0, 100).all()


def test_a_network_that_predicts_the_held_out_patients_gets_the_largest_weight(tmp_path):
    rng = np.random.default_rng(2)
    rec, folds, _ = _run(tmp_path / "probe")
    y = rec["zcq_success"].to_numpy()
    truth_z = np.clip(0.5 + 0.4 * (2 * y - 1) + rng.normal(0, 0.05, len(y)), 0, 1)   # near perfect
    _, _, _, _, out, summary = _stack(tmp_path, truth_z, rec["back_pain_post"].to_numpy(), features=("score",),
                                      shrink=0.0)
    for e in summary["folds_detail"]:
        assert max(e["weights"], key=e["weights"].get) == "network", e
        sign = 1 if e["metric"] == "auc" else -1     # AUC up, MAE down
        assert sign * e["inner_val"]["network"] > sign * e["inner_val"]["linear"]
    assert summary["mean_weights"]["zcq_success"]["network"] > 0.8
    assert M.auc(y, out["pred_zcq_success"].to_numpy()) > 0.95


def test_a_chance_level_network_cannot_drag_the_combination_below_the_linear_model(tmp_path):
    """With the default shrinkage a useless network keeps at most a third-ish of the weight, and
    the combination is not significantly worse than the linear family alone."""
    rng = np.random.default_rng(3)
    n = 160
    rec, folds, runs, oofs, out, summary = _stack(tmp_path, rng.random(n), rng.uniform(0, 100, n))
    for e in summary["folds_detail"]:
        assert e["weights"]["network"] <= 0.5 / 3 + 0.5 * 0.5 + 1e-9, e   # shrink 0.5 of a fitted weight ≤ 1/2
    lin = linear.crossval_penalised(rec, folds, "zcq_success", ["age", "score"], task="binary",
                                    grid=GRIDS["zcq_success"])
    y = rec["zcq_success"].to_numpy()
    d = M.paired_bootstrap_diff(M.auc, y, out["pred_zcq_success"].to_numpy(), lin["pred"].to_numpy(), n_boot=500)
    assert d.as_dict()["hi"] > 0, d.as_dict()   # the combination is not significantly worse


def test_shrink_one_is_the_plain_average(tmp_path):
    rng = np.random.default_rng(4)
    n = 160
    *_, summary = _stack(tmp_path, rng.random(n), np.full(n, 40.0), shrink=1.0)
    for e in summary["folds_detail"]:
        assert all(w == pytest.approx(1 / 3) for w in e["weights"].values())


def test_candidates_are_checked_and_splits_must_agree(tmp_path):
    rng = np.random.default_rng(5)
    n = 160
    with pytest.raises(ConfigError, match="stack.candidates"):
        _stack(tmp_path / "a", rng.random(n), np.full(n, 40.0), candidates=("linear", "forest"))
    rec, folds, runs = _run(tmp_path / "b")
    oofs = {c: _network(rec, folds, runs[c], rng.random(n), np.full(n, 40.0)) for c in runs}
    split = json.load(open(os.path.join(runs["clinical network"], "fold_1", "split.json")))
    split["inner_val"], split["inner_train"] = split["inner_val"][1:], split["inner_train"] + split["inner_val"][:1]
    open(os.path.join(runs["clinical network"], "fold_1", "split.json"), "w").write(json.dumps(split))
    with pytest.raises(CohortError, match="differs from the other network's split"):
        select.stack_models(rec, folds, HEADS, ["zcq_success"], ["age"], oofs, runs, str(tmp_path / "b"),
                            image_gate=False, candidates=("linear", "network", "clinical network"))
    # a run without the clinical-only twin: that candidate is left out and said so
    out, summary = select.stack_models(rec, folds, HEADS, ["zcq_success"], ["age"], {"network": oofs["network"]},
                                       {"network": runs["network"]}, str(tmp_path / "b"), grid_for=GRIDS.get,
                                       image_gate=False, candidates=("linear", "network", "clinical network"))
    assert summary["candidates"] == ["linear", "network"] and "clinical network" in summary["notes"][0]


def test_heads_combined_in_worker_processes_give_the_same_table(tmp_path):
    rng = np.random.default_rng(6)
    rec, folds, runs = _run(tmp_path)
    n = len(rec)
    oofs = {c: _network(rec, folds, runs[c], rng.random(n), rng.uniform(0, 100, n)) for c in runs}
    args = (rec, folds, HEADS, ["zcq_success"], ["age", "score"], oofs, runs, str(tmp_path))
    kw = dict(seed=0, grid_for=GRIDS.get, reference_features=["age"],
              candidates=("linear", "reference", "network", "clinical network"), image_gate=False)
    serial, s_summary = select.stack_models(*args, **kw)
    workers, w_summary = select.stack_models(*args, **kw, num_workers=2)
    pd.testing.assert_frame_equal(serial, workers)
    assert s_summary == w_summary and len(w_summary["folds_detail"]) == 8
    assert set(w_summary["folds_detail"][0]["weights"]) == {"linear", "reference", "network", "clinical network"}


def _with_score(rec, effect, seed=7):
    """``rec`` with a stage-1 image ``score`` column; zcq_success redrawn from age + effect·score."""
    rng = np.random.default_rng(seed)
    rec = rec.copy()
    rec["score"] = rng.normal(size=len(rec))
    logit = (rec["age"].to_numpy() - 60) / 8 + effect * rec["score"].to_numpy()
    rec["zcq_success"] = (rng.random(len(rec)) < 1 / (1 + np.exp(-logit))).astype(float)
    return rec


@pytest.mark.parametrize("effect, opened", [(0.0, False), (1.5, True)])
def test_the_image_gate_opens_only_where_the_image_scores_clearly_help(tmp_path, effect, opened):
    """With image_gate, a fold combines the image candidates only where the linear family with
    the image score is clearly better than the clinical reference on all the fold's training
    patients, for the primary head (which opens the gate for every head) or the head itself;
    elsewhere the clinical candidates (reference + clinical network) alone."""
    rec, folds, runs = _run(tmp_path)
    rec = _with_score(rec, effect)
    rng = np.random.default_rng(8)
    oofs = {c: _network(rec, folds, runs[c], rng.random(len(rec)), np.full(len(rec), 50.0)) for c in runs}
    out, summary = select.stack_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age", "score"], oofs, runs,
                                       str(tmp_path), grid_for=GRIDS.get, reference_features=["age"])
    for e in summary["folds_detail"]:
        ev = e["images"]["primary_head"]
        assert e["images"]["used"] is opened and ev["clear"] is opened, e["images"]
        assert ev["n"] == int((folds != e["fold"]).sum())           # every training patient of the fold
        want = {"linear", "network"} if opened else {"reference", "clinical network"}
        assert set(e["weights"]) == want
        if opened:
            assert ev["linear"] > ev["reference"] + 0.05
    assert summary["images_used_in_folds"] == {"zcq_success": 4 if opened else 0}
    assert "do not clearly help" in summary["rule"]
    if not opened:   # the clinical models alone: reference refitted on all training patients + twin
        e = summary["folds_detail"][0]
        split = json.load(open(os.path.join(runs["network"], "fold_0", "split.json")))
        rows = rec.set_index("patient_id").index.get_indexer(split["inner_train"] + split["inner_val"])
        ref = select.fit_linear(rec, "zcq_success", "binary", rows, "reference", ["age", "score"], ["age"], None, 0)
        test = folds == 0
        want = (e["weights"]["reference"] * ref.predict(rec.loc[test])
                + e["weights"]["clinical network"] * oofs["clinical network"].loc[test, "pred_zcq_success"].to_numpy())
        np.testing.assert_allclose(out.loc[test, "pred_zcq_success"], want, rtol=1e-12)
    with pytest.raises(ConfigError, match=r"clinical_candidates: \['network'\] read the images"):
        select.stack_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age"], oofs, runs, str(tmp_path),
                            clinical_candidates=("reference", "network"))
