"""Tests for lumbarjax.models (tiny shapes: B=2, 8x32x32 volumes, 32x32 X-rays)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from lumbarjax.errors import ClinicalError, ConfigError
from lumbarjax.models import encoder3d, fusion, ordinal, resnet2d

KEY = jax.random.PRNGKey(0)


def count_params(tree):
    return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def param_dtypes(variables):
    return {x.dtype for x in jax.tree_util.tree_leaves(variables["params"])}


def make_batch(b=2, d=8, hw=32, n_clin=5, seed=0):
    rng = np.random.default_rng(seed)
    heads = fusion.BINARY_HEADS + fusion.REGRESSION_HEADS
    labels = {h: jnp.asarray(rng.integers(0, 2, b), jnp.float32) for h in fusion.BINARY_HEADS}
    labels.update({h: jnp.asarray(rng.uniform(0, 100, b), jnp.float32) for h in fusion.REGRESSION_HEADS})
    return {
        "mri": jnp.asarray(rng.normal(size=(b, d, hw, hw, 1)), jnp.float32),
        "mri_present": jnp.ones((b,), jnp.float32),
        "xray": jnp.asarray(rng.normal(size=(b, hw, hw, 1)), jnp.float32),
        "xray_present": jnp.ones((b,), jnp.float32),
        "clinical": jnp.asarray(rng.normal(size=(b, n_clin)), jnp.float32),
        "labels": labels,
        "label_mask": {h: jnp.ones((b,), jnp.float32) for h in heads},
        "valid": jnp.ones((b,), jnp.float32),
        "index": jnp.arange(b, dtype=jnp.int32),
    }


# ----------------------------------------------------------------------------- ordinal
def test_corn_probs_sum_to_one_and_nonnegative():
    logits = jax.random.normal(KEY, (3, 2, 4)) * 3
    p = ordinal.corn_probs(logits)
    assert p.shape == (3, 2, 5)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, atol=1e-6)
    assert float(p.min()) >= 0.0


def test_corn_predict_hand_examples():
    big = 10.0
    logits = jnp.array([
        [big, big, -big, -big],   # P(y>0), P(y>1) high, then stops -> 2
        [-big, big, big, big],    # first conditional low -> everything after ~0 -> 0
        [big, big, big, big],     # -> 4
        [big, -big, big, big],    # chain broken at k=1 -> 1
    ])
    np.testing.assert_array_equal(np.asarray(ordinal.corn_predict(logits)), [2, 0, 4, 1])
    assert ordinal.corn_predict(logits).dtype == jnp.int32
    # argmax of the class probabilities agrees for confident logits
    np.testing.assert_array_equal(np.asarray(ordinal.corn_probs(logits).argmax(-1)), [2, 0, 4, 1])


def test_corn_loss_matches_conditional_subsets_by_hand():
    logits = jnp.array([[0.3, -0.2, 1.0], [0.5, 0.1, -0.7]])  # K = 4
    labels = jnp.array([0, 2])
    sp = jax.nn.softplus
    # label 0: only task 0 (y>=0), target 0 -> softplus(z0)
    # label 2: tasks 0,1,2 (y>=k), targets 1,1,0 -> softplus(-z0)+softplus(-z1)+softplus(z2)
    expected = (sp(0.3) + sp(-0.5) + sp(-0.1) + sp(-0.7)) / 4.0
    np.testing.assert_allclose(float(ordinal.corn_loss(logits, labels)), float(expected), rtol=1e-6)


def test_corn_loss_masked_entries_have_exactly_zero_gradient():
    logits = jax.random.normal(KEY, (4, 3, 4))
    labels = jnp.array([[0, 1, 4], [2, 3, 0], [4, 4, 1], [1, 0, 2]])
    mask = jnp.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]], jnp.float32)
    loss, grad = jax.value_and_grad(ordinal.corn_loss)(logits, labels, mask)
    assert np.isfinite(float(loss))
    g = np.asarray(grad)
    assert np.all(g[np.asarray(mask) == 0] == 0.0)
    assert np.any(g[np.asarray(mask) == 1] != 0.0)
    # garbage labels at masked positions change nothing
    labels2 = labels.at[3].set(99)
    np.testing.assert_allclose(float(ordinal.corn_loss(logits, labels2, mask)), float(loss))


def test_corn_and_coral_all_masked_is_zero_not_nan():
    logits = jnp.full((2, 4), jnp.nan)
    for fn in (ordinal.corn_loss, ordinal.coral_loss):
        loss, grad = jax.value_and_grad(fn)(logits, jnp.zeros(2, jnp.int32), jnp.zeros(2))
        assert float(loss) == 0.0
        assert np.all(np.asarray(grad) == 0.0)


def test_coral_probs_and_predict():
    logits = jnp.array([[3.0, 1.0, -1.0, -3.0], [-3.0, -4.0, -5.0, -6.0]])
    p = ordinal.coral_probs(logits)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, atol=1e-6)
    assert float(p.min()) >= 0.0
    np.testing.assert_array_equal(np.asarray(ordinal.coral_predict(logits)), [2, 0])
    with pytest.raises(ConfigError, match="unknown ordinal head"):
        ordinal.ordinal_fns("softmax")


# ----------------------------------------------------------------------------- 2D
@pytest.mark.parametrize("stem", ["patchify", "conv7"])
def test_resnet2d_shapes(stem):
    m = resnet2d.ResNet2D(stage_sizes=(1, 1), width=8, stem=stem)
    x = jnp.ones((2, 32, 32, 1))
    v = m.init(KEY, x)
    y = m.apply(v, x)
    assert y.shape == (2, 16) and y.dtype == jnp.float32


def test_space_to_depth_pads_and_folds():
    x = jnp.arange(2 * 3 * 5 * 1, dtype=jnp.float32).reshape(2, 3, 5, 1)
    y = resnet2d.space_to_depth(x, (2, 2))
    assert y.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(np.asarray(y[0, 0, 0]), [0, 1, 5, 6])


@pytest.mark.parametrize("head", ["corn", "coral"])
def test_grader_outputs_and_loss(head):
    batch = make_batch()
    batch["labels"]["grade"] = jnp.array([[0, 3, 4], [2, 1, 0]], jnp.float32)
    batch["label_mask"]["grade"] = jnp.array([[1, 1, 0], [1, 0, 1]], jnp.float32)
    g = resnet2d.Grader(num_grades=5, num_levels=3, head=head, stage_sizes=(1, 1), width=8, dropout=0.1)
    v = g.init(KEY, batch)
    out = g.apply(v, batch, train=True, rngs={"dropout": KEY}, mutable=["batch_stats"])[0]
    assert out["grade"].shape == (2, 3, 4) and out["grade"].dtype == jnp.float32
    loss, aux = resnet2d.grader_loss(out, batch, head=head)
    assert np.isfinite(float(loss)) and float(aux["count"]) == 4.0
    with pytest.raises(ConfigError, match="levels"):
        resnet2d.grader_loss({"grade": out["grade"][:, :1]}, batch, head=head)


def _bars_dataset(n, rng):
    """32x32 images with `grade` bright horizontal bars (0..4) at random rows, noisy."""
    x = rng.normal(0, 0.2, size=(n, 32, 32, 1)).astype(np.float32)
    y = rng.integers(0, 5, n)
    for i in range(n):
        rows = rng.choice(8, size=y[i], replace=False)
        for r in rows:
            x[i, 4 * r: 4 * r + 2, 4:28, 0] += 1.0
    return x, y


def test_grader_loss_falls_on_toy_problem():
    rng = np.random.default_rng(0)
    g = resnet2d.Grader(num_grades=5, stage_sizes=(1, 1), width=8)
    x, y = _bars_dataset(32, rng)

    def batch_of(xb, yb):
        b = len(yb)
        return {"xray": jnp.asarray(xb), "labels": {"grade": jnp.asarray(yb, jnp.float32)},
                "label_mask": {"grade": jnp.ones(b)}, "valid": jnp.ones(b)}

    full = batch_of(x, y)
    params = g.init(KEY, full)["params"]
    tx = optax.adam(5e-3)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, b):
        def lf(p):
            out = g.apply({"params": p}, b, train=True, rngs={"dropout": KEY})
            return resnet2d.grader_loss(out, b)[0]
        loss, grads = jax.value_and_grad(lf)(p)
        u, o = tx.update(grads, o, p)
        return optax.apply_updates(p, u), o, loss

    losses = []
    for _ in range(30):
        params, opt, loss = step(params, opt, full)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses


# ----------------------------------------------------------------------------- 3D
TINY_ARCH = {
    "slice2d": dict(width=8, stage_sizes=(1, 1)),
    "patch3d": dict(width=8, stage_sizes=(1, 1, 1)),
    "vit": dict(vit_dim=24, vit_depth=1, vit_heads=2, patch=8, depth_patch=2),
    "resnet3d_naive": dict(width=8, stage_sizes=(1, 1)),
    "lesion2d": dict(width=4),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("arch", encoder3d.ARCHS)
def test_mri_encoder_shapes_and_dtypes(arch, dtype):
    m = encoder3d.MRIEncoder(arch=arch, dtype=dtype, **TINY_ARCH[arch])
    x = jax.random.normal(KEY, (2, 8, 32, 32, 1))
    v = m.init(KEY, x)
    assert param_dtypes(v) == {jnp.dtype(jnp.float32)}
    y = m.apply(v, x, train=True)
    assert y.ndim == 2 and y.shape[0] == 2 and y.dtype == jnp.float32
    assert np.isfinite(np.asarray(y)).all()
    if dtype == jnp.float32 and arch != "resnet3d_naive":  # (naive: slow 7^3 retrace)
        # examples are independent (no norm mixes the batch): example 0 alone gives the same features
        y0 = m.apply(v, x[:1], train=True)
        np.testing.assert_allclose(np.asarray(y0[0]), np.asarray(y[0]), rtol=1e-4, atol=1e-5)


def test_lesion2d_shape_and_translation_along_the_canal():
    """lesion2d: (B, 2 * 2w) features; its max-pooled half does not care where along H a local
    finding sits (shift by a multiple of the total stride 2 * 2 * 2 = 8 rows)."""
    m = encoder3d.MRIEncoder(arch="lesion2d", width=4)
    x = np.zeros((1, 4, 160, 32, 1), np.float32)   # far from the borders (receptive field ~ 40 rows)
    x[0, 1:3, 50:54, 12:16] = 1.0
    v = m.init(KEY, jnp.asarray(x))
    y = np.asarray(m.apply(v, jnp.asarray(x)))
    assert y.shape == (1, 16)
    y_shift = np.asarray(m.apply(v, jnp.asarray(np.roll(x, 56, axis=2))))
    np.testing.assert_allclose(y_shift[0, :8], y[0, :8], rtol=1e-4, atol=1e-5)  # the max half


def test_mri_encoder_unknown_arch_and_rank():
    with pytest.raises(ConfigError, match="unknown architecture"):
        encoder3d.MRIEncoder(arch="unet").init(KEY, jnp.ones((1, 4, 16, 16, 1)))
    with pytest.raises(ConfigError, match="expected"):
        encoder3d.MRIEncoder().init(KEY, jnp.ones((1, 16, 16, 1)))


# ----------------------------------------------------------------------------- outcome model
TINY_MRI = dict(arch="slice2d", width=8, stage_sizes=(1, 1))
TINY_XRAY = dict(stage_sizes=(1, 1), width=8)


def test_outcome_model_outputs_and_missing_modality_invariance():
    batch = make_batch()
    model = fusion.OutcomeModel(mri=TINY_MRI, xray=TINY_XRAY)
    v = model.init(KEY, batch)
    out = model.apply(v, batch, train=False)
    assert set(out) == set(fusion.BINARY_HEADS + fusion.REGRESSION_HEADS)
    assert all(o.shape == (2,) and o.dtype == jnp.float32 for o in out.values())
    # example 1 has no MRI and no X-ray: its images must not matter (eval mode)
    b1 = dict(batch, mri_present=jnp.array([1.0, 0.0]), xray_present=jnp.array([1.0, 0.0]))
    b2 = dict(b1, mri=b1["mri"].at[1].set(5.0 * jax.random.normal(KEY, b1["mri"].shape[1:])),
              xray=b1["xray"].at[1].set(-3.0))
    o1, o2 = model.apply(v, b1), model.apply(v, b2)
    for h in o1:
        assert float(o1[h][1]) == float(o2[h][1])
        assert float(o1[h][0]) == float(o2[h][0])  # example 0 untouched as well
    # ... while a present MRI does matter
    b3 = dict(batch, mri=batch["mri"].at[1].set(5.0))
    assert any(float(model.apply(v, b3)[h][1]) != float(out[h][1]) for h in out)
    # train mode with dropout / modality dropout runs and differs between rng keys
    t1 = model.apply(v, batch, train=True, rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"])[0]
    t2 = model.apply(v, batch, train=True, rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"])[0]
    assert any(not np.allclose(np.asarray(t1[h]), np.asarray(t2[h])) for h in t1)


def test_clinical_only_and_batchnorm_and_bf16():
    batch = make_batch()
    base = fusion.OutcomeModel(mri=None, xray=None)
    v = base.init(KEY, batch)
    assert "mri_encoder" not in v["params"] and count_params(v) < 5000
    out = base.apply(v, batch)
    assert out["back_pain_post"].shape == (2,)
    # BatchNorm variant: batch_stats collection is updated in train mode
    bn = fusion.OutcomeModel(mri=dict(TINY_MRI, norm="batch"))
    vb = bn.init(KEY, batch)
    assert "batch_stats" in vb
    _, mut = bn.apply(vb, batch, train=True, rngs={"dropout": KEY}, mutable=["batch_stats"])
    assert "batch_stats" in mut
    # bf16 compute, float32 params and outputs
    mb = fusion.OutcomeModel(mri=TINY_MRI, xray=TINY_XRAY, dtype=jnp.bfloat16)
    vb16 = mb.init(KEY, batch)
    assert param_dtypes(vb16) == {jnp.dtype(jnp.float32)}
    o = mb.apply(vb16, batch)
    assert all(x.dtype == jnp.float32 and np.isfinite(np.asarray(x)).all() for x in o.values())


def test_outcome_loss_masks_and_empty_heads():
    b = 4
    rng = np.random.default_rng(1)
    outputs = {h: jnp.asarray(rng.normal(size=b), jnp.float32) for h in fusion.BINARY_HEADS}
    outputs.update({h: jnp.asarray(rng.uniform(0, 100, b), jnp.float32) for h in fusion.REGRESSION_HEADS})
    labels = {h: jnp.array([1.0, 0.0, jnp.nan, 1.0]) for h in fusion.BINARY_HEADS}
    labels.update({h: jnp.array([30.0, jnp.nan, 80.0, 10.0]) for h in fusion.REGRESSION_HEADS})
    mask = {h: jnp.array([1.0, 1.0, 0.0, 1.0]) for h in fusion.BINARY_HEADS}
    mask.update({h: jnp.array([1.0, 0.0, 1.0, 1.0]) for h in fusion.REGRESSION_HEADS})
    mask["leg_pain_improved50"] = jnp.zeros(b)  # head with no labels at all
    labels["leg_pain_improved50"] = jnp.full(b, jnp.nan)
    valid = jnp.array([1.0, 1.0, 1.0, 0.0])  # example 3 is padding
    batch = {"labels": labels, "label_mask": mask, "valid": valid}

    (loss, aux), grads = jax.value_and_grad(
        lambda o: fusion.outcome_loss(o, batch, class_weights={"zcq_success": 2.0}), has_aux=True)(outputs)
    assert np.isfinite(float(loss))
    assert float(aux["leg_pain_improved50/loss"]) == 0.0 and float(aux["leg_pain_improved50/count"]) == 0.0
    assert np.all(np.asarray(grads["leg_pain_improved50"]) == 0.0)
    for h in outputs:
        g = np.asarray(grads[h])
        m = np.asarray(mask[h]) * np.asarray(valid)
        assert np.all(g[m == 0] == 0.0), h
        assert np.all(np.isfinite(g)), h
    assert float(aux["zcq_success/count"]) == 2.0 and float(aux["back_pain_post/count"]) == 2.0
    # hand value: BCE with pos weight 2 over the 2 valid labelled examples
    z = np.asarray(outputs["zcq_success"])
    sp = lambda t: np.log1p(np.exp(t))  # noqa: E731
    np.testing.assert_allclose(float(aux["zcq_success/loss"]), (2.0 * sp(-z[0]) + sp(z[1])) / 2, rtol=1e-5)
    # regression on VAS/100 (Huber delta 0.2 in those units)
    e = (np.asarray(outputs["back_pain_post"])[[0, 2]] - np.array([30.0, 80.0])) / 100
    hub = np.where(np.abs(e) <= 0.2, 0.5 * e ** 2, 0.2 * (np.abs(e) - 0.1))
    np.testing.assert_allclose(float(aux["back_pain_post/loss"]), hub.mean(), rtol=1e-5)
    # total = sum of per-head losses
    total = sum(float(aux[f"{h}/loss"]) for h in outputs)
    np.testing.assert_allclose(float(loss), total, rtol=1e-5)


# ----------------------------------------------------------------------------- clinical encoder
def _clinical_frames():
    train = pd.DataFrame({
        "patient_id": ["p1", "p2", "p3", "p4"],
        "age": [50.0, 60.0, np.nan, 70.0],
        "bmi": [20.0, 30.0, 25.0, 25.0],
        "sex": ["F", "M", "M", None],
        "smoker": [0, 1, 0, 1],
    })
    test = pd.DataFrame({
        "patient_id": ["q1", "q2"],
        "age": [1000.0, np.nan],
        "bmi": [25.0, 35.0],
        "sex": ["X", "F"],
        "smoker": [1.0, np.nan],
    })
    return train, test


def test_clinical_encoder_uses_training_statistics_only():
    train, test = _clinical_frames()
    enc = fusion.ClinicalEncoder.fit(train, numeric=["age", "bmi"], categorical=["sex", "smoker"])
    assert enc.feature_names == ["age", "age_missing", "bmi", "bmi_missing", "sex=F", "sex=M",
                                 "sex=<missing>", "sex=<other>", "smoker=0", "smoker=1",
                                 "smoker=<missing>", "smoker=<other>"]
    xt = enc.transform(test)
    assert xt.shape == (2, 12) and xt.dtype == np.float32
    age_mean, age_std = 60.0, np.std([50.0, 60.0, 70.0])
    np.testing.assert_allclose(xt[:, 0], [(1000 - age_mean) / age_std, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(xt[:, 1], [0.0, 1.0])
    np.testing.assert_allclose(xt[:, 2], (np.array([25.0, 35.0]) - 25.0) / np.std([20, 30, 25, 25]), rtol=1e-6)
    np.testing.assert_array_equal(xt[0, 4:8], [0, 0, 0, 1])   # unknown sex "X" -> <other>
    np.testing.assert_array_equal(xt[1, 4:8], [1, 0, 0, 0])
    np.testing.assert_array_equal(xt[0, 8:12], [0, 1, 0, 0])   # 1.0 == level "1"
    np.testing.assert_array_equal(xt[1, 8:12], [0, 0, 1, 0])   # NaN -> <missing>
    # refitting on a different fold changes the statistics: the test fold never leaks in
    enc2 = fusion.ClinicalEncoder.fit(pd.concat([train, test]), numeric=["age", "bmi"], categorical=["sex"])
    assert enc2.means["age"] != enc.means["age"] and "X" in enc2.levels["sex"]
    xtr = enc.transform(train)
    np.testing.assert_allclose(xtr[[0, 1, 3], 0].mean(), 0.0, atol=1e-6)
    assert np.isfinite(xtr).all()


def test_clinical_encoder_roundtrip_and_errors():
    train, test = _clinical_frames()
    enc = fusion.ClinicalEncoder.fit(train, numeric=["age"], categorical=["sex"])
    enc2 = fusion.ClinicalEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(enc.transform(test), enc2.transform(test))
    assert enc2.feature_names == enc.feature_names
    with pytest.raises(ClinicalError, match="'weight'"):
        fusion.ClinicalEncoder.fit(train, numeric=["weight"])
    bad = train.assign(age=["50", "sixty", None, "70"])
    with pytest.raises(ClinicalError, match=r"'age'.*sixty.*p2"):
        enc.transform(bad)


# ----------------------------------------------------------------------------- builders
def test_builders_from_config():
    from configs import default
    gcfg = default.grader_model_config()
    gcfg.width, gcfg.stage_sizes, gcfg.num_levels = 8, (1, 1), 5
    g = fusion.build_grader(gcfg)
    assert isinstance(g, resnet2d.Grader) and g.num_levels == 5 and g.dtype == jnp.float32
    assert g == resnet2d.Grader(**{**gcfg.to_dict(), "dtype": jnp.float32})
    cfg = default.outcome_model_config()
    m = fusion.build_outcome_model(cfg)
    assert m.mri["arch"] == "slice2d" and m.mri["patch"] is None and m.xray is None
    cfg.mri.enabled = False
    cfg.dtype = "bfloat16"
    base = fusion.build_outcome_model(cfg)
    assert base.mri is None and base.xray is None and base.dtype == jnp.bfloat16


def test_unknown_model_keys_are_errors_naming_them():
    with pytest.raises(ConfigError, match=r"config.grader.model: unknown key\(s\) \['widht'\]"):
        fusion.build_grader({"widht": 3})
    with pytest.raises(ConfigError, match=r"config.outcome.model.mri: unknown key\(s\) \['arhc'\]"):
        fusion.build_outcome_model({"mri": {"arhc": "vit"}})
    with pytest.raises(ConfigError, match=r"config.outcome.model: unknown key\(s\) \['fusion_hiden'\]"):
        fusion.build_outcome_model({"fusion_hiden": (8,)})
