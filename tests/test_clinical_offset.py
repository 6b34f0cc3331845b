"""selection.clinical_offset: an outcome network that starts as the clinical regression."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from lumbarjax.errors import ConfigError
from lumbarjax.models.fusion import OutcomeModel, vas_link
from lumbarjax.selection import clinical_offset


def _data(n=80, f=5, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, f)).astype(np.float32)
    logit = x @ np.array([1.0, -0.5, 0.0, 0.3, 0.8]) - 0.4
    y = (r.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    vas = np.clip(50 + 15 * x[:, 0] + r.normal(0, 10, n), 0, 100)
    y[:3] = np.nan  # missing labels are left out of the fit
    vas[5:8] = np.nan
    return x, {"zcq_success": y, "back_pain_post": vas}


def _model():
    return OutcomeModel(mri=None, xray=None, clinical_skip=True, binary_heads=("zcq_success",),
                        regression_heads=("back_pain_post",))


def test_network_at_step_0_is_the_weighted_logistic_and_ridge_regression():
    x, labels = _data()
    offsets = clinical_offset.fit_offsets(x, labels, ("zcq_success",), ("back_pain_post",),
                                          {"zcq_success": 1.7})
    model = _model()
    params = model.init(jax.random.key(0), {"clinical": x[:2]})["params"]
    params = clinical_offset.with_offsets(offsets)(jax.device_get(params))
    out = model.apply({"params": params}, {"clinical": x})

    keep = np.isfinite(labels["zcq_success"])
    ref = LogisticRegression(C=1.0, class_weight={0: 1.0, 1: 1.7}, max_iter=2000).fit(
        x[keep], labels["zcq_success"][keep].astype(int))
    np.testing.assert_allclose(np.asarray(out["zcq_success"]), ref.decision_function(x), atol=1e-4)
    keep = np.isfinite(labels["back_pain_post"])
    ridge = Ridge(alpha=1.0).fit(x[keep], labels["back_pain_post"][keep] / 100.0)
    # through the bounded VAS link (the identity inside the scale, models.fusion.vas_link)
    np.testing.assert_allclose(np.asarray(out["back_pain_post"]), 100.0 * np.asarray(vas_link(ridge.predict(x))),
                               atol=1e-3)
    inside = (ridge.predict(x) > 0.1) & (ridge.predict(x) < 0.9)
    np.testing.assert_allclose(np.asarray(out["back_pain_post"])[inside], 100.0 * ridge.predict(x)[inside], atol=0.4)
    # the offsets are kept fixed by naming them in optim.frozen
    assert clinical_offset.frozen_names(("zcq_success",), ("back_pain_post",)) == (
        "skip_zcq_success", "skip_back_pain_post")


def test_a_head_with_one_class_gets_a_zero_offset():
    x, labels = _data()
    labels["zcq_success"] = np.where(np.isfinite(labels["zcq_success"]), 1.0, np.nan)
    offsets = clinical_offset.fit_offsets(x, labels, ("zcq_success",), (), {})
    coef, intercept = offsets["zcq_success"]
    assert intercept == 0.0 and not np.any(coef)


def test_offsets_that_do_not_fit_the_model_are_clear_errors():
    x, labels = _data()
    offsets = clinical_offset.fit_offsets(x, labels, ("zcq_success",), (), {})
    no_skip = OutcomeModel(mri=None, xray=None, binary_heads=("zcq_success",), regression_heads=())
    params = jax.device_get(no_skip.init(jax.random.key(0), {"clinical": x[:2]})["params"])
    with pytest.raises(ConfigError, match="has no 'skip_zcq_success'"):
        clinical_offset.with_offsets(offsets)(params)
    params = jax.device_get(_model().init(jax.random.key(0), {"clinical": x[:2, :4]})["params"])
    with pytest.raises(ConfigError, match="5 clinical features but the model's skip path takes 4"):
        clinical_offset.with_offsets(offsets)(params)
    with pytest.raises(ConfigError, match="clinical_offset: expected one of"):
        clinical_offset.kind_of({"clinical_offset": "gam"})
