"""The outcome network's linear clinical skip path (issue 13) and the demo-regime config key."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from lumbarjax.data import synthetic
from lumbarjax.models.fusion import OutcomeModel, build_outcome_model


def test_clinical_skip_path_is_a_zero_initialised_linear_term_per_head():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)), jnp.float32)
    batch = {"clinical": x}
    m = OutcomeModel(mri=None, xray=None, clinical_skip=True)
    params = m.init(jax.random.PRNGKey(0), batch)["params"]
    assert params["skip_zcq_success"]["kernel"].shape == (5, 1)
    assert "bias" not in params["skip_zcq_success"]
    plain = OutcomeModel(mri=None, xray=None).apply(
        {"params": {k: v for k, v in params.items() if not k.startswith("skip_")}}, batch)
    out0 = m.apply({"params": params}, batch)
    np.testing.assert_allclose(out0["zcq_success"], plain["zcq_success"], atol=1e-6)  # zero init
    w = jnp.arange(5, dtype=jnp.float32)[:, None] / 10
    params = {**params, "skip_zcq_success": {"kernel": w}, "skip_back_pain_post": {"kernel": w}}
    out1 = m.apply({"params": params}, batch)
    np.testing.assert_allclose(out1["zcq_success"] - out0["zcq_success"], (x @ w)[:, 0], atol=1e-5)
    # a regression head predicts VAS/100 internally: the skip term is in those units too
    np.testing.assert_allclose(out1["back_pain_post"] - out0["back_pain_post"], 100 * (x @ w)[:, 0], rtol=1e-4)
    np.testing.assert_allclose(out1["leg_pain_post"], out0["leg_pain_post"], atol=1e-5)


def test_configs_name_the_skip_path_and_the_demo_regime():
    cfg = default.get_config()
    assert cfg.outcome.model.clinical_skip is False
    cfg.outcome.model.mri.enabled = False
    cfg.outcome.model.clinical_skip = True
    assert build_outcome_model(cfg.outcome.model).clinical_skip is True
    assert cfg.data.demo_regime == "demo" and cfg.data.demo_regime in synthetic.OUTCOME_REGIMES
