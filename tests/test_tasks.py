"""The task objects (lumbarjax.pipelines.tasks) and cross-validation built on them."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from lumbarjax.jobs import workflow
from lumbarjax.data.pipeline import make_loader
from lumbarjax.errors import ConfigError
from lumbarjax.models import ordinal
from lumbarjax.pipelines import crossval
from lumbarjax.train.loop import predict
from lumbarjax.train.metrics_log import read_metrics
from lumbarjax.pipelines.tasks import TASKS, OrdinalLoss, find_variant, get_task


def test_tasks_are_a_plain_dict_with_one_interface():
    assert sorted(TASKS) == ["grader", "outcome", "pretrain"]
    for name, task in TASKS.items():
        assert task.name == name
        for method in ("labels", "build_model", "loss", "decode", "selection_metric"):
            assert callable(getattr(task, method)), (name, method)
    with pytest.raises(ConfigError, match="unknown task 'segmenter'"):
        get_task("segmenter")
    assert find_variant("outcome_clinical_only") == (TASKS["outcome"], True)
    with pytest.raises(ConfigError, match="unknown task folder"):
        find_variant("baselines")


def test_grader_loss_and_decoder_follow_the_head():
    cfg = tiny_config("")
    logits = jnp.array([[[2.0, -0.5, 1.0, -3.0]]])       # (1, 1, K-1), non-monotone
    labels = {"grade": jnp.array([2.0])}
    batch = {"labels": labels, "label_mask": {"grade": jnp.ones((1,))}, "valid": jnp.ones((1,))}
    for head, (loss_fn, probs_fn, predict_fn) in ordinal.ORDINAL_FNS.items():
        cfg.grader.model.head = head
        loss = TASKS["grader"].loss(cfg.grader)
        assert loss == OrdinalLoss(head) and hash(loss) == hash(OrdinalLoss(head))
        want = loss_fn(logits, jnp.array([[2]]), jnp.ones((1, 1)))
        assert float(loss({"grade": logits}, batch)[0]) == pytest.approx(float(want), rel=1e-6)
        cols = TASKS["grader"].decode({"grade": logits}, cfg.grader)
        assert cols["pred_grade"][0] == int(predict_fn(logits)[0, 0])
        np.testing.assert_allclose([cols[f"prob_grade_{k}"][0] for k in range(5)],
                                   np.asarray(probs_fn(logits))[0, 0], rtol=1e-6)
    # the two rules disagree on these logits, so the test above tells them apart
    assert int(ordinal.coral_predict(logits)[0, 0]) != int(ordinal.corn_predict(logits)[0, 0])


@pytest.fixture(scope="module")
def cohort(tiny_cohort, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tasks_run"))
    config = tiny_config(tiny_cohort)
    manifest = workflow.stage_index(config, workdir)
    return config, workdir, workflow.stage_cohort(config, workdir, manifest)


def test_coral_head_trains_and_decodes_coral_through_crossval(cohort):
    """grader.model.head="coral": the CORAL loss falls and the out-of-fold grades and
    probabilities are the CORAL rule applied to the fold model's logits."""
    config, workdir, c = cohort
    config.grader.model.head = "coral"
    config.grader.train.update(num_steps=30, log_every=10, eval_every=30, checkpoint_every=30)
    td = crossval.prepare_task("grader", config, c.records, c.cache)
    logits_by_row = {}

    def hook(*, fold, state, model, source, test_idx, encoder, task):
        out = predict(state, model, make_loader(source, batch_size=4, shuffle=False, seed=0,
                                                num_epochs=1, indices=test_idx))
        for r, lg in zip(out["index"], np.asarray(out["grade"])):
            logits_by_row[int(r)] = lg

    out_dir = os.path.join(workdir, "grader_coral")
    oof = crossval.run_crossval(td, config, out_dir, after_fold=hook)
    for f in range(int(config.grader.cv.num_folds)):
        losses = [r["loss"] for r in read_metrics(os.path.join(out_dir, f"fold_{f}"), "train")]
        assert len(losses) == 3 and losses[-1] < losses[0], (f, losses)
    rows = [int(td.records.index[td.records["patient_id"] == pid][0]) for pid in oof["patient_id"]]
    logits = np.stack([logits_by_row[r] for r in rows])      # (N, 1, K-1)
    np.testing.assert_array_equal(oof["pred_grade"], np.asarray(ordinal.coral_predict(logits))[:, 0])
    probs = np.asarray(ordinal.coral_probs(logits))[:, 0]
    np.testing.assert_allclose(oof[[f"prob_grade_{k}" for k in range(5)]].to_numpy(), probs, atol=1e-6)


def test_grader_follow_up_is_the_level_pipeline_only_when_levels_are_on():
    cfg = tiny_config("")
    cfg.levels.enabled = False
    oof = pd.DataFrame({"patient_id": ["A", "B"], "pred_grade": [1, 2]})
    for name in ("grader", "outcome"):
        out, extra = TASKS[name].after_crossval(cfg, "/nonexistent", None, oof, "/nonexistent")
        assert out is oof and extra == {}


def test_outcome_networks_start_as_the_clinical_regression_of_their_own_training_patients(cohort):
    """outcome.clinical_offset="glm": each fold's (refitted) network carries, fixed in its skip
    path, the weighted logistic regression fitted on that fold's training patients; where the
    inner split keeps step 0 its test predictions are exactly that regression's."""
    from sklearn.linear_model import LogisticRegression
    config, workdir, c = cohort
    config.outcome.clinical_offset = "glm"
    config.outcome.model.mri.enabled = False
    config.outcome.train.update(num_steps=20, log_every=10, eval_every=10, checkpoint_every=20)
    td = crossval.prepare_task("outcome", config, c.records, c.cache)
    seen = {}

    def hook(*, fold, state, model, source, test_idx, encoder, task):
        seen[fold] = (jax.device_get(state.params), encoder, int(state.step))

    run_dir = os.path.join(workdir, "glm_run")
    oof = crossval.run_crossval(td, config, os.path.join(run_dir, "outcome_clinical_only"),
                                clinical_only=True, after_fold=hook)
    y = td.labels["zcq_success"]
    for f, (params, enc, step) in seen.items():
        train = np.flatnonzero((td.folds != f) & np.isfinite(y))
        x = enc.transform(td.records)
        inner = np.asarray(oof.loc[oof["fold"] == f, "best_step"])[0]
        assert step == inner  # the refit stops where the inner split chose
        # the loss weights come from the inner-train patients, the refit's fit from all training ones
        w = dict(TASKS["outcome"].loss(config.outcome, *_inner_train_labels(td, config, f)).class_weights)
        ref = LogisticRegression(C=1.0, class_weight={0: 1.0, 1: w["zcq_success"]}, max_iter=2000)
        ref.fit(x[train], (y[train] > 0.5).astype(int))
        np.testing.assert_allclose(np.asarray(params["skip_zcq_success"]["kernel"])[:, 0], ref.coef_[0],
                                   atol=1e-5)
        if step == 0:
            rows = oof["fold"] == f
            test = np.flatnonzero(td.folds == f)
            np.testing.assert_allclose(oof.loc[rows, "pred_zcq_success"].to_numpy(),
                                       ref.predict_proba(x[test])[:, 1], atol=1e-5)
    assert set(seen) == set(range(int(config.outcome.cv.num_folds)))
    kept = [s for _, _, s in seen.values()]
    assert 0 in kept, kept  # at least one fold kept the regression alone (checked above)
    # --mode=predict / evaluate restore the same fold models, the step-0 refits included
    from lumbarjax.jobs import restore
    for fm in restore.load_fold_models(config, run_dir, "outcome_clinical_only"):
        _assert_same_params(fm.state.params, seen[fm.fold][0])


def _assert_same_params(a, b):
    la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _inner_train_labels(td, config, fold):
    train_idx = np.flatnonzero(td.folds != fold)
    inner_train, _ = crossval.inner_split(td.records, train_idx, float(config.outcome.cv.inner_val_fraction),
                                          int(config.seed) + fold, config.outcome.cv.stratify_on)
    labels = {k: np.asarray(v)[inner_train] for k, v in td.labels.items()}
    return labels, {k: np.isfinite(v).astype(np.float32) for k, v in labels.items()}


def test_the_clinical_offset_is_skipped_without_clinical_columns(cohort):
    """outcome.clinical_offset="glm" with no clinical feature columns: there is no regression to
    start from, and the fold trains as the images-only network it is (no skip path, no error)."""
    config, workdir, c = cohort
    config.outcome.clinical_offset = "glm"
    config.outcome.model.mri.enabled = True
    config.outcome.features.numeric, config.outcome.features.categorical = (), ()
    config.outcome.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    td = crossval.prepare_task("outcome", config, c.records, c.cache)
    oof = crossval.run_fold(td, 0, config, os.path.join(workdir, "no_clinical"))
    assert len(oof) == int((td.folds == 0).sum()) and np.isfinite(oof["pred_zcq_success"]).all()
