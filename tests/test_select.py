"""train.select: the network or the penalised linear family per fold and head, chosen on the
inner validation patients only; the test fold never enters a choice."""

import json
import os

import numpy as np
import pandas as pd

from lumbarjax.data.cohort import make_folds
from lumbarjax.models import linear
from lumbarjax.train import select

# two candidates per head keep the test quick; the choice among them is models.linear's
GRIDS = {"zcq_success": [linear.Candidate("logreg_l2", 1.0), linear.Candidate("logreg_l2", 0.1)],
         "back_pain_post": [linear.Candidate("ridge", 1.0), linear.Candidate("ridge", 10.0)]}


def _run(tmp_path, n=160, seed=0):
    """A cohort whose zcq_success follows `age` (linear signal) and whose VAS follows `score`,
    with the outer folds and inner splits written as train.crossval writes them."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    score = rng.normal(0, 1, n)
    p = 1 / (1 + np.exp(-(age - 60) / 4))
    rec = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "age": age, "score": score,
                        "zcq_success": (rng.random(n) < p).astype(float),
                        "back_pain_post": 50 + 15 * score + rng.normal(0, 5, n)})
    folds = make_folds(rec, k=4, seed=seed, stratify_on="zcq_success")
    run = tmp_path / "outcome"
    for f in range(4):
        tr = np.flatnonzero(folds != f)
        val, itr = tr[::5], np.setdiff1d(tr, tr[::5])
        d = run / f"fold_{f}"
        d.mkdir(parents=True)
        ids = rec["patient_id"].to_numpy()
        (d / "split.json").write_text(json.dumps({"test": ids[folds == f].tolist(),
                                                  "inner_train": ids[itr].tolist(),
                                                  "inner_val": ids[val].tolist()}))
    return rec, folds, str(run)


def _network_files(rec, folds, run, pred_zcq, pred_vas):
    for f in range(4):
        d = os.path.join(run, f"fold_{f}")
        val = json.load(open(os.path.join(d, "split.json")))["inner_val"]
        rows = rec.set_index("patient_id").index.get_indexer(val)
        pd.DataFrame({"patient_id": val, "pred_zcq_success": pred_zcq[rows],
                      "pred_back_pain_post": pred_vas[rows]}).to_csv(os.path.join(d, "inner_val.csv"), index=False)
    return pd.DataFrame({"patient_id": rec["patient_id"], "fold": folds, "pred_zcq_success": pred_zcq,
                         "pred_back_pain_post": pred_vas})


def test_a_network_no_better_than_chance_gives_way_to_the_refitted_linear_model(tmp_path):
    rec, folds, run = _run(tmp_path)
    rng = np.random.default_rng(1)
    net = _network_files(rec, folds, run, rng.random(len(rec)), np.full(len(rec), 50.0))
    oof, summary = select.select_models(rec, folds, ["zcq_success", "back_pain_post"], ["zcq_success"],
                                        ["age", "score"], net, run, seed=0, grid_for=GRIDS.get, rule="clear")
    assert summary["network_chosen"] == {"zcq_success": 0, "back_pain_post": 0}
    assert set(oof["model_zcq_success"]) <= {c.name for c in GRIDS["zcq_success"]}
    # fold 2's predictions are the linear family refitted on all of fold 2's training patients
    split = json.load(open(os.path.join(run, "fold_2", "split.json")))
    train = rec.index[rec["patient_id"].isin(split["inner_train"] + split["inner_val"])].to_numpy()
    refit = linear.fit_penalised(rec, "zcq_success", train, ["age", "score"], task="binary", seed=2,
                                 grid=GRIDS["zcq_success"])
    test = folds == 2
    np.testing.assert_allclose(oof.loc[test, "pred_zcq_success"], refit.predict(rec.loc[test]), rtol=1e-12)
    assert oof.loc[test, "model_zcq_success"].eq(refit.candidate.name).all()
    assert pd.read_csv(os.path.join(run, "selected_oof.csv"))["pred_zcq_success"].notna().all()
    saved = json.load(open(os.path.join(run, "selection.json")))
    assert len(saved["choices"]) == 8 and all(c["choice"] == "linear" for c in saved["choices"])


def test_a_clearly_better_network_keeps_its_own_out_of_fold_predictions(tmp_path):
    rec, folds, run = _run(tmp_path)
    # the linear model sees `score` only: no ZCQ signal, VAS up to noise of 5 mm
    truth_z = rec["zcq_success"].to_numpy() * 0.8 + 0.1     # separates the classes perfectly
    truth_v = rec["back_pain_post"].to_numpy()               # exact VAS
    net = _network_files(rec, folds, run, truth_z, truth_v)
    oof, summary = select.select_models(rec, folds, ["zcq_success", "back_pain_post"], ["zcq_success"],
                                        ["score"], net, run, seed=0, grid_for=GRIDS.get)
    assert summary["network_chosen"] == {"zcq_success": 4, "back_pain_post": 4}
    np.testing.assert_array_equal(oof["pred_zcq_success"], truth_z)
    assert (oof["model_back_pain_post"] == "network").all()
    c = summary["choices"][0]
    assert c["metric"] == "auc" and c["network"] == 1.0 and c["linear"] < 1.0


def test_clearly_better_needs_more_than_a_higher_score():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 25).astype(float)
    base = y + rng.normal(0, 1.5, 25)
    slightly = base + 0.05 * y            # a hair better in AUC: not clearly
    assert not select.clearly_better(y, slightly, base, "binary")
    assert select.clearly_better(y, y + rng.normal(0, 0.1, 25), base, "binary")
    assert not select.clearly_better(y, base, base, "binary")


def test_the_higher_rule_follows_the_inner_validation_score(tmp_path):
    """rule "higher": the network wherever its inner-validation AUC beats the linear model's
    (each fold's entry records both), the linear model elsewhere; an unknown rule is an error."""
    import pytest
    from lumbarjax.errors import ConfigError
    rec, folds, run = _run(tmp_path)
    rng = np.random.default_rng(3)
    noisy = rec["zcq_success"].to_numpy() + rng.normal(0, 0.9, len(rec))   # some folds win, some lose
    net = _network_files(rec, folds, run, noisy, np.full(len(rec), 50.0))
    oof, summary = select.select_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age"], net, run,
                                        seed=0, grid_for=GRIDS.get, rule="higher")
    for c in summary["choices"]:
        assert c["choice"] == ("network" if c["network"] > c["linear"] else "linear"), c
    assert "ties go to the linear model" in summary["rule"]
    with pytest.raises(ConfigError, match="select_rule='best'"):
        select.select_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age"], net, run, rule="best")


def test_guarded_keeps_the_clinical_reference_unless_a_challenger_is_clearly_better(tmp_path):
    """rule "guarded": with a chance-level network and no extra signal in the other
    columns, every fold keeps the clinical reference model, refitted on all of the fold's
    training patients: the selected predictions are that logistic regression's."""
    rec, folds, run = _run(tmp_path)
    rng = np.random.default_rng(5)
    rec["noise"] = rng.normal(size=len(rec))
    net = _network_files(rec, folds, run, rng.random(len(rec)), np.full(len(rec), 50.0))
    oof, summary = select.select_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age", "noise"], net, run,
                                        seed=0, grid_for=GRIDS.get, rule="guarded", reference_features=["age"])
    assert [c["choice"] for c in summary["choices"]] == ["reference"] * 4, summary["choices"]
    for f in range(4):
        split = json.load(open(os.path.join(run, f"fold_{f}", "split.json")))
        train = rec.index[rec["patient_id"].isin(split["inner_train"] + split["inner_val"])].to_numpy()
        ref = linear.fit_penalised(rec, "zcq_success", train, ["age"], task="binary", seed=f,
                                   grid=[linear.REFERENCE["binary"]])
        test = folds == f
        np.testing.assert_allclose(oof.loc[test, "pred_zcq_success"], ref.predict(rec.loc[test]), rtol=1e-12)
    assert oof["model_zcq_success"].str.startswith("reference").all()
    assert "clinical reference model" in summary["rule"]


def _with_stage1_score(rec, effect, seed=7):
    """``rec`` with a stage-1 ``score`` column and zcq_success redrawn from age + effect·score."""
    rng = np.random.default_rng(seed)
    rec = rec.copy()
    rec["score"] = rng.normal(size=len(rec))
    logit = (rec["age"].to_numpy() - 60) / 8 + effect * rec["score"].to_numpy()
    rec["zcq_success"] = (rng.random(len(rec)) < 1 / (1 + np.exp(-logit))).astype(float)
    return rec


def _guarded_cv_run(tmp_path, effect):
    """Rule "guarded_cv" with a chance-level network on a cohort whose stage-1 ``score`` has
    ``effect`` on the outcome: ``(records, folds, run dir, selected oof, summary)``."""
    rec, folds, run = _run(tmp_path)
    rec = _with_stage1_score(rec, effect=effect)
    rng = np.random.default_rng(5)
    net = _network_files(rec, folds, run, rng.random(len(rec)), np.full(len(rec), 50.0))
    oof, summary = select.select_models(rec, folds, ["zcq_success"], ["zcq_success"], ["age", "score"], net, run,
                                        seed=0, grid_for=GRIDS.get, rule="guarded_cv", reference_features=["age"])
    return rec, folds, run, oof, summary


def test_guarded_cv_weighs_linear_against_reference_on_all_training_patients(tmp_path):
    """rule "guarded_cv": the family on all columns vs the clinical reference is decided on the
    inner k-fold split of every training patient of the fold (not on its 24 inner validation
    patients), and the chosen model is that fit: its predictions of the test fold are the
    family's fitted on all the fold's training patients."""
    rec, folds, run, oof, summary = _guarded_cv_run(tmp_path, effect=1.5)
    for c in summary["choices"]:
        f = c["fold"]
        assert c["n_inner_cv"] == int((folds != f).sum())      # all 120 training patients, not 24
        assert c["linear_cv"] > c["reference_cv"] + 0.05, c
        assert c["base"] == "linear" and c["choice"] == "linear", c
        split = json.load(open(os.path.join(run, f"fold_{f}", "split.json")))
        rows = rec.set_index("patient_id").index.get_indexer(split["inner_train"] + split["inner_val"])
        fit = select.refit_choice(rec, "zcq_success", "binary", rows, "linear", ["age", "score"], ["age"],
                                  GRIDS["zcq_success"], f)
        test = folds == f
        np.testing.assert_allclose(oof.loc[test, "pred_zcq_success"], fit.predict(rec.loc[test]), rtol=1e-12)
    assert "inner k-fold split of all the fold's training patients" in summary["rule"]


def test_guarded_cv_keeps_the_reference_when_the_extra_column_is_noise(tmp_path):
    _, _, _, oof, summary = _guarded_cv_run(tmp_path, effect=0.0)
    assert [c["choice"] for c in summary["choices"]] == ["reference"] * 4, summary["choices"]
    assert oof["model_zcq_success"].str.startswith("reference").all()


def test_a_network_picked_on_the_validation_patients_must_win_by_more():
    """The network's inner score is the best of its scored checkpoints (fold metrics.jsonl): its
    clear-win bar over the reference is Šidák-adjusted for that many looks."""
    assert linear.best_of_z(1) == linear.CLEAR_Z == 1.0
    assert abs(linear.best_of_z(5) - 1.825) < 0.005
    assert linear.best_of_z(5) < linear.best_of_z(10)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 25).astype(float)
    base = y + rng.normal(0, 1.5, 25)
    # a small win is clear after one look but not as the best of five
    small = base + 0.1 * y
    assert linear.clearly_better(y, small, base, "binary", z=linear.best_of_z(1))
    assert not linear.clearly_better(y, small, base, "binary", z=linear.best_of_z(5))
    passes = [linear.clearly_better(y, base + 0.2 * y, base, "binary", z=k / 10) for k in range(40)]
    assert passes[0] and not passes[-1] and passes == sorted(passes, reverse=True)


def test_network_looks_are_the_fold_runs_eval_records(tmp_path):
    d = tmp_path / "fold_0"
    d.mkdir()
    assert select.network_looks(str(d)) == 1            # no log: one look
    (d / "metrics.jsonl").write_text("".join(json.dumps({"split": s, "step": i}) + "\n"
                                             for i, s in enumerate(["eval", "train", "eval", "eval"])))
    assert select.network_looks(str(d)) == 3


def test_heads_chosen_in_worker_processes_give_the_same_selection(tmp_path):
    rec, folds, run = _run(tmp_path)
    rec = _with_stage1_score(rec, effect=1.0)
    rng = np.random.default_rng(5)
    net = _network_files(rec, folds, run, rng.random(len(rec)), np.full(len(rec), 50.0))
    args = (rec, folds, ["zcq_success", "back_pain_post"], ["zcq_success"], ["age", "score"], net, run)
    kw = dict(seed=0, grid_for=GRIDS.get, reference_features=["age"])
    serial, s_summary = select.select_models(*args, **kw)
    workers, w_summary = select.select_models(*args, **kw, num_workers=2)
    pd.testing.assert_frame_equal(serial, workers)
    assert s_summary == w_summary and len(w_summary["choices"]) == 8
