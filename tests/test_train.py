"""lumbarjax.train on one CPU device with a toy flax model (see _multidevice_worker.py)."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _multidevice_worker import ToyModel, toy_config, toy_loss, toy_source
from lumbarjax.data.pipeline import make_loader
from lumbarjax.errors import ConfigError, NonFiniteError
from lumbarjax.train import (
    MetricsLogger,
    create_train_state,
    make_eval_step,
    make_mesh,
    make_optimizer,
    make_train_step,
    predict,
    read_metrics,
    shard_batch,
    train_and_evaluate,
    train_config,
)
from lumbarjax.train.steps import train_step


@pytest.fixture(scope="module")
def mesh():
    return make_mesh()


def _batch(n=8, f=4, seed=0):
    src = toy_source(n=n, f=f, seed=seed)
    return next(make_loader(src, batch_size=n, shuffle=False, seed=0, num_epochs=1))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_trees_equal(a, b, atol=0.0):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# -- optimiser / state ------------------------------------------------------------------

def test_lr_schedule_warmup_then_cosine():
    cfg = toy_config()
    cfg.optim.lr, cfg.optim.warmup_steps = 0.1, 4
    sched = make_optimizer(cfg, 20)[1]
    np.testing.assert_allclose(float(sched(0)), 0.0, atol=1e-8)
    np.testing.assert_allclose(float(sched(2)), 0.05, rtol=1e-6)
    np.testing.assert_allclose(float(sched(4)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(12)), 0.05, rtol=1e-5)  # half-way through cosine
    np.testing.assert_allclose(float(sched(20)), 0.0, atol=1e-8)
    with pytest.raises(ConfigError, match="warmup_steps"):
        make_optimizer(cfg, 3)


def test_optimizer_clips_and_decays_kernels_only():
    cfg = toy_config()
    cfg.optim.update(lr=1.0, warmup_steps=0, weight_decay=0.5, clip_norm=1.0)
    tx, _ = make_optimizer(cfg, 10)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    # zero gradient: only decoupled weight decay moves params, and only the kernel
    np.testing.assert_allclose(np.asarray(updates["kernel"]), -0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["bias"]), 0.0)


def test_create_train_state(mesh):
    model = ToyModel(use_bn=True)
    state = create_train_state(0, model, _batch(), toy_config(), mesh=mesh)
    assert int(state.step) == 0
    assert set(state.params) == {"Dense_0", "Dense_1", "BatchNorm_0"}
    assert set(state.batch_stats["BatchNorm_0"]) == {"mean", "var"}
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
    assert state.params["Dense_0"]["kernel"].sharding.is_fully_replicated
    with pytest.raises(ConfigError, match="num_steps"):
        cfg = toy_config()
        del cfg.train["num_steps"]
        create_train_state(0, model, _batch(), cfg, mesh=mesh)


# -- steps -------------------------------------------------------------------------------

def test_loss_falls_on_learnable_problem(mesh):
    model = ToyModel()
    src = toy_source(n=64)
    cfg = toy_config(num_steps=30)
    state = create_train_state(0, model, _batch(), cfg, mesh=mesh)
    step = make_train_step(model, toy_loss, mesh)
    it = make_loader(src, batch_size=16, shuffle=True, seed=0)
    losses, lrs = [], []
    for _ in range(30):
        state, m = step(state, shard_batch(next(it), mesh))
        losses.append(float(m["loss"]))
        lrs.append(float(m["lr"]))
        assert set(m) == {"loss", "acc", "grad_norm", "lr", "finite"}
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert int(state.step) == 30
    np.testing.assert_allclose(lrs[:3], [0.0, 0.025, 0.05], rtol=1e-6)


def test_masked_labels_contribute_no_gradient(mesh):
    model = ToyModel()
    batch = _batch()
    batch["label_mask"]["y"][:3] = 0.0
    low, high = jax.tree.map(np.copy, batch), jax.tree.map(np.copy, batch)
    low["labels"]["y"][:3] = 0.0
    high["labels"]["y"][:3] = 1e6
    state0 = create_train_state(0, model, batch, toy_config(), mesh=mesh)
    grad = jax.jit(jax.grad(
        lambda p, b: toy_loss(model.apply({"params": p}, b, train=False), b)[0]))
    _assert_trees_equal(grad(state0.params, low), grad(state0.params, high))
    step = make_train_step(model, toy_loss, mesh)
    s_low, m_low = step(create_train_state(0, model, batch, toy_config(), mesh=mesh),
                        shard_batch(low, mesh))
    s_high, m_high = step(create_train_state(0, model, batch, toy_config(), mesh=mesh),
                          shard_batch(high, mesh))
    assert float(m_low["loss"]) == float(m_high["loss"])
    assert float(m_low["grad_norm"]) == float(m_high["grad_norm"]) > 0
    _assert_trees_equal(s_low.params, s_high.params)


def test_invalid_examples_contribute_nothing(mesh):
    model = ToyModel(dropout=0.0)
    batch = _batch()
    batch["valid"][5:] = 0.0
    other = jax.tree.map(np.copy, batch)
    other["clinical"][5:] = 1e3
    other["labels"]["y"][5:] = 1.0 - other["labels"]["y"][5:]
    step = make_train_step(model, toy_loss, mesh)
    cfg = toy_config()
    s1, m1 = step(create_train_state(0, model, batch, cfg, mesh=mesh), shard_batch(batch, mesh))
    s2, m2 = step(create_train_state(0, model, batch, cfg, mesh=mesh), shard_batch(other, mesh))
    assert float(m1["loss"]) == float(m2["loss"])
    _assert_trees_equal(s1.params, s2.params)
    # and equals training on the 5 valid rows alone (averaged over valid rows)
    s3, m3 = step(create_train_state(0, model, batch, cfg, mesh=mesh),
                  shard_batch(jax.tree.map(lambda x: x[:5], batch), mesh))
    np.testing.assert_allclose(float(m1["loss"]), float(m3["loss"]), rtol=1e-6)
    _assert_trees_equal(s1.params, s3.params, atol=1e-6)


def test_state_is_donated(mesh):
    model = ToyModel(use_bn=True)
    state = create_train_state(0, model, _batch(), toy_config(), mesh=mesh)
    step = make_train_step(model, toy_loss, mesh)
    old_kernel = state.params["Dense_0"]["kernel"]
    new_state, _ = step(state, shard_batch(_batch(), mesh))
    assert old_kernel.is_deleted()
    assert not new_state.params["Dense_0"]["kernel"].is_deleted()


def test_bf16_compute_keeps_fp32_params(mesh):
    model = ToyModel(use_bn=True, dropout=0.1)
    state = create_train_state(0, model, _batch(), toy_config(), mesh=mesh)
    step = make_train_step(model, toy_loss, mesh, compute_dtype=jnp.bfloat16)
    for _ in range(3):
        state, m = step(state, shard_batch(_batch(), mesh))
    assert np.isfinite(float(m["loss"]))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.batch_stats))
    out = make_eval_step(model, mesh, compute_dtype=jnp.bfloat16)(state,
                                                                  shard_batch(_batch(), mesh))
    assert out["y"].dtype == jnp.float32 and out["y"].shape == (8,)


def test_predict_drops_padding_keeps_index(mesh):
    model = ToyModel()
    state = create_train_state(0, model, _batch(), toy_config(), mesh=mesh)
    src = toy_source(n=11, seed=3)
    out = predict(state, model, make_loader(src, batch_size=4, shuffle=False, seed=0,
                                            num_epochs=1), mesh)
    assert set(out) == {"y", "index"}
    assert out["y"].shape == (11,) and out["index"].tolist() == list(range(11))
    full = _batch(n=11, seed=3)
    direct = model.apply(state.variables, full, train=False)["y"]
    np.testing.assert_allclose(out["y"], np.asarray(direct), atol=1e-6)


def test_train_config_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        cfg = toy_config()
        cfg.train.batch_size = None
        train_config(cfg)
    with pytest.raises(ConfigError, match="best_metric_mode"):
        train_config(toy_config(best_metric_mode="up"))
    tc = train_config(toy_config(compute_dtype="bfloat16"))
    assert tc["compute_dtype"] == jnp.bfloat16


def test_metrics_logger_numbers_only(tmp_path):
    log = MetricsLogger(tmp_path)
    rec = log.write(3, "eval", {"auc": np.float32(0.75), "nested": {"a": 1}, "bad": float("nan")})
    assert rec == {"step": 3, "split": "eval", "auc": 0.75, "nested/a": 1.0, "bad": None}
    with pytest.raises(TypeError, match="patient"):
        log.write(4, "eval", {"patient": "SMITH^JOHN"})
    log.close()
    assert read_metrics(tmp_path) == [rec]


# -- the loop ----------------------------------------------------------------------------

def _run(workdir, cfg, **kw):
    kw.setdefault("model", ToyModel(use_bn=True, dropout=0.2))
    kw.setdefault("loss_fn", toy_loss)
    kw.setdefault("train_source", toy_source(n=40))
    return train_and_evaluate(cfg, workdir, **kw)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = toy_config(num_steps=10, eval_every=5, checkpoint_every=4, log_every=2)
    eval_src = toy_source(n=12, seed=5)
    straight = _run(tmp_path / "a", cfg, eval_source=eval_src)
    first = _run(tmp_path / "b", cfg, eval_source=eval_src, stop_at=6)
    assert first["last_step"] == 6
    assert int(first["last_state"].step) == 6
    resumed = _run(tmp_path / "b", cfg, eval_source=eval_src)
    assert resumed["last_step"] == 10
    a, b = straight["last_state"], resumed["last_state"]
    assert int(a.step) == int(b.step) == 10
    _assert_trees_equal(a.params, b.params, atol=1e-6)
    _assert_trees_equal(a.batch_stats, b.batch_stats, atol=1e-6)
    _assert_trees_equal(a.opt_state, b.opt_state, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a.rng), np.asarray(b.rng))
    # same evaluations, same best, and the log of the resumed run reads like the straight one
    assert [e["step"] for e in resumed["history"]["eval"]] == [5, 10]
    np.testing.assert_allclose([e["loss"] for e in straight["history"]["eval"]],
                               [e["loss"] for e in resumed["history"]["eval"]], atol=1e-6)
    assert straight["best"]["step"] == resumed["best"]["step"]
    for wd in ("a", "b"):
        recs = read_metrics(tmp_path / wd)
        assert [(r["step"], r["split"]) for r in recs] == [
            (2, "train"), (4, "train"), (5, "eval"), (6, "train"), (8, "train"),
            (10, "train"), (10, "eval")]
    np.testing.assert_allclose(
        [r["loss"] for r in read_metrics(tmp_path / "a", "train")],
        [r["loss"] for r in read_metrics(tmp_path / "b", "train")], atol=1e-6)
    # a finished run called again does no more steps
    again = _run(tmp_path / "a", cfg, eval_source=eval_src)
    assert again["last_step"] == 10 and again["history"]["eval"] == straight["history"]["eval"]


def test_best_checkpoint_restored_and_early_stopping(tmp_path):
    scores = {2: 0.5, 4: 0.9, 6: 0.6, 8: 0.7, 10: 0.99}
    seen = {}

    def eval_fn(state):
        s = int(state.step)
        seen[s] = jax.device_get(state.params)
        return {"auc": scores[s]}

    cfg = toy_config(num_steps=10, eval_every=2, checkpoint_every=100, log_every=2,
                     best_metric="auc", best_metric_mode="max", early_stopping_patience=2,
                     max_to_keep=1)
    out = _run(tmp_path, cfg, eval_fn=eval_fn)
    assert out["stopped_early"] is True
    assert out["last_step"] == 8 and sorted(seen) == [2, 4, 6, 8]
    assert out["best"] == {"step": 4, "metric": "auc", "mode": "max", "value": 0.9,
                           "metrics": {"auc": 0.9}}
    assert int(out["state"].step) == 4 and int(out["last_state"].step) == 8
    _assert_trees_equal(out["state"].params, seen[4])
    assert not np.allclose(_leaves(out["state"].params)[0], _leaves(seen[8])[0])
    # orbax keeps the latest (resume) and the best checkpoint only
    kept = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    assert kept == [4, 8]
    # calling again after early stopping does not train further
    again = _run(tmp_path, cfg, eval_fn=eval_fn)
    assert again["last_step"] == 8 and int(again["state"].step) == 4
    assert sorted(seen) == [2, 4, 6, 8]


def test_eval_at_start_can_keep_the_initial_parameters(tmp_path):
    # train.eval_at_start scores step 0 too (the clinical regression an outcome network starts
    # from): when nothing later beats it, the initial parameters are the result.
    seen = {}

    def eval_fn(state):
        s = int(state.step)
        seen[s] = jax.device_get(state.params)
        return {"auc": 0.8 if s == 0 else 0.6}

    cfg = toy_config(num_steps=6, eval_every=2, checkpoint_every=100, log_every=2,
                     best_metric="auc", best_metric_mode="max", eval_at_start=True)
    out = _run(tmp_path / "a", cfg, eval_fn=eval_fn)
    assert sorted(seen) == [0, 2, 4, 6]
    assert out["best"]["step"] == 0 and int(out["state"].step) == 0
    assert [e["step"] for e in out["history"]["eval"]] == [0, 2, 4, 6]
    _assert_trees_equal(out["state"].params, seen[0])
    assert not np.allclose(_leaves(out["state"].params)[0], _leaves(out["last_state"].params)[0])
    # a relaunch of the finished run does not score step 0 again
    again = _run(tmp_path / "a", cfg, eval_fn=eval_fn)
    assert again["best"]["step"] == 0 and len(again["history"]["eval"]) == 4
    # a refit stopped at step 0 trains nothing and returns the initial parameters
    refit = _run(tmp_path / "refit", cfg, eval_fn=None, stop_at=0)
    assert refit["last_step"] == 0 and int(refit["state"].step) == 0
    _assert_trees_equal(refit["state"].params, seen[0])
    # ... and checkpoints them, so --mode=predict / evaluate can restore that fold model
    assert sorted(int(p) for p in os.listdir(tmp_path / "refit" / "checkpoints") if p.isdigit()) == [0]


def test_tied_best_metric_keeps_the_earliest_best_checkpoint(tmp_path):
    # A metric stuck at one value (e.g. QWK 0 while a grader predicts one class): the loop calls
    # the first evaluation best, and orbax must keep exactly that checkpoint to restore it.
    seen = {}

    def eval_fn(state):
        seen[int(state.step)] = jax.device_get(state.params)
        return {"qwk": 0.0}

    cfg = toy_config(num_steps=8, eval_every=2, checkpoint_every=100, log_every=2,
                     best_metric="qwk", best_metric_mode="max", max_to_keep=1)
    out = _run(tmp_path, cfg, eval_fn=eval_fn)
    assert out["best"]["step"] == 2 and int(out["state"].step) == 2
    _assert_trees_equal(out["state"].params, seen[2])
    kept = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    assert kept == [2, 8]


def test_metrics_jsonl_and_tensorboard(tmp_path):
    cfg = toy_config(num_steps=10, eval_every=5, log_every=2, checkpoint_every=0)
    out = _run(tmp_path, cfg, eval_source=toy_source(n=10, seed=2),
               eval_fn=lambda state: {"auc": 0.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    train = [r for r in recs if r["split"] == "train"]
    evals = [r for r in recs if r["split"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10]
    assert [r["step"] for r in evals] == [5, 10]
    for r in train:
        assert {"step", "split", "loss", "acc", "grad_norm", "lr", "steps_per_sec"} <= set(r)
        assert all(isinstance(v, (int, float)) for k, v in r.items() if k != "split")
    for r in evals:
        assert set(r) == {"step", "split", "loss", "acc", "auc"}
    assert out["history"]["eval"][-1]["auc"] == 0.5
    events = os.listdir(tmp_path / "tb")
    assert any(e.startswith("events.out.tfevents") for e in events)


def test_loop_rejects_unknown_best_metric(tmp_path):
    cfg = toy_config(num_steps=10, eval_every=1, best_metric="auc")
    with pytest.raises(ConfigError, match="auc"):
        _run(tmp_path, cfg, eval_source=toy_source(n=8, seed=1))


def test_steps_compile_once_across_runs(mesh):
    """Equal model / loss / mesh / optimiser settings reuse one compiled step (CV folds): the
    module-level jit caches on its static arguments, no hand-written memo."""
    batch = _batch()

    def run(model, seed):
        step = make_train_step(model, toy_loss, mesh)
        step(create_train_state(seed, model, batch, toy_config(), mesh=mesh), shard_batch(batch, mesh))

    run(ToyModel(use_bn=True), 0)
    n = train_step._cache_size()
    run(ToyModel(use_bn=True), 1)            # an equal model (another fold): no new compile
    assert train_step._cache_size() == n
    run(ToyModel(use_bn=True, hidden=5), 0)  # another architecture: one more
    assert train_step._cache_size() == n + 1
    assert make_optimizer(toy_config(), 10)[0] is make_optimizer(toy_config(), 10)[0]
    assert make_optimizer(toy_config(), 10)[0] is not make_optimizer(toy_config(), 11)[0]


@dataclasses.dataclass(frozen=True)
class NaNOnRow:
    """toy_loss, but NaN whenever the batch holds example ``row`` (a corrupt patient)."""
    row: int

    def __call__(self, outputs, batch):
        loss, aux = toy_loss(outputs, batch)
        hit = jnp.any((batch["index"] == self.row) & (batch["valid"] > 0))
        return jnp.where(hit, jnp.nan, loss), aux


def _batches_of_rows(n, batch_size, steps, seed=0):
    """The rows of each training batch, as train_and_evaluate draws them."""
    it = make_loader(toy_source(n=n), batch_size=batch_size, shuffle=True, seed=seed, num_epochs=None)
    return [set(np.asarray(next(it)["index"]).tolist()) for _ in range(steps)]


def test_nonfinite_loss_stops_naming_step_patients_and_checkpoint(tmp_path):
    rows = _batches_of_rows(40, 8, 10)
    row = sorted(rows[2] - rows[1] - rows[0])[0]       # first seen in the third batch
    ids = [f"P{i:03d}" for i in range(40)]
    cfg = toy_config(num_steps=10, eval_every=0, checkpoint_every=1, log_every=5)
    with pytest.raises(NonFiniteError) as e:
        _run(tmp_path, cfg, loss_fn=NaNOnRow(row), row_ids=ids)
    msg = str(e.value)
    assert "at step 3 " in msg
    assert ids[row] in msg and all(ids[r] in msg for r in rows[2])
    assert os.path.join(str(tmp_path), "checkpoints", "2") in msg


def test_nonfinite_step_skipped_when_configured(tmp_path):
    rows = _batches_of_rows(40, 8, 10)
    row = sorted(rows[2] - rows[1] - rows[0])[0]
    cfg = toy_config(num_steps=10, eval_every=0, checkpoint_every=100, log_every=10,
                     on_nonfinite="skip")
    res = _run(tmp_path, cfg, loss_fn=NaNOnRow(row))
    assert int(res["last_state"].step) == 10
    assert all(np.isfinite(x).all() for x in _leaves(res["last_state"].params))
    assert all(np.isfinite(x).all() for x in _leaves(res["last_state"].opt_state))
    assert read_metrics(tmp_path, "train")[-1]["skipped_nonfinite"] == sum(row in r for r in rows)
    with pytest.raises(ConfigError, match="on_nonfinite"):
        train_config(toy_config(on_nonfinite="ignore"))


def test_init_params_and_frozen_subtree_stay_fixed(tmp_path):
    """init_params puts given weights in; optim.frozen keeps that subtree bit-identical through
    training (no gradient step, no weight decay) while the rest learns."""
    cfg = toy_config(num_steps=6, eval_every=0, checkpoint_every=100, log_every=3)
    fresh = _run(str(tmp_path / "fresh"), cfg, model=ToyModel())
    first = next(iter(fresh["state"].params))        # "Dense_0": the first layer
    given = jax.tree.map(lambda a: np.full(np.shape(a), 0.25, np.float32),
                         jax.device_get(fresh["state"].params[first]))

    cfg.optim.frozen = (first,)
    res = _run(str(tmp_path / "frozen"), cfg, model=ToyModel(),
               init_params=lambda p: {**p, first: given})
    _assert_trees_equal(res["last_state"].params[first], given)
    others = [k for k in res["last_state"].params if k != first]
    init = create_train_state(jax.random.PRNGKey(0), ToyModel(), _batch(), cfg, num_steps=6)
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for k in others
             for a, b in zip(jax.tree.leaves(jax.device_get(res["last_state"].params[k])),
                             jax.tree.leaves(jax.device_get(init.params[k])))]
    assert max(moved) > 1e-3

    with pytest.raises(ConfigError, match="tree structure"):
        _run(str(tmp_path / "bad"), cfg, model=ToyModel(), init_params=lambda p: {first: given})
