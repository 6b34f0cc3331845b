"""The outcome network's linear clinical skip path (issue 13) and the demo-regime config key."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from lumbarjax import synthetic
from lumbarjax.models.fusion import OutcomeModel, build_outcome_model, vas_link


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
    head = params["head_back_pain_post"]
    params = {**params, "skip_zcq_success": {"kernel": w}, "skip_back_pain_post": {"kernel": w},
              "head_back_pain_post": {"kernel": jnp.zeros_like(head["kernel"]), "bias": head["bias"]}}
    out1 = m.apply({"params": params}, batch)
    np.testing.assert_allclose(out1["zcq_success"] - out0["zcq_success"], (x @ w)[:, 0], atol=1e-5)
    # a regression head predicts VAS/100 internally (bias 0.5 here), through the bounded link:
    # the skip term is in those units too
    np.testing.assert_allclose(out1["back_pain_post"], 100 * vas_link(0.5 + x @ w)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(out1["leg_pain_post"], out0["leg_pain_post"], atol=1e-5)


def test_every_vas_prediction_of_the_network_lies_on_the_0_to_100_scale():
    """The regression heads' output link bounds them (not a clip at report time): even with a
    skip path that puts the raw output far outside the scale, the VAS stays within 0-100 mm, and
    inside the scale the link is the identity to 0.4 mm."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 5)) * 10, jnp.float32)
    m = OutcomeModel(mri=None, xray=None, clinical_skip=True)
    params = m.init(jax.random.PRNGKey(0), {"clinical": x})["params"]
    params = {**params, **{f"skip_{h}": {"kernel": jnp.full((5, 1), 3.0)} for h in ("back_pain_post", "leg_pain_post")}}
    out = m.apply({"params": params}, {"clinical": x})
    for h in ("back_pain_post", "leg_pain_post"):
        v = np.asarray(out[h])
        assert v.min() >= 0.0 and v.max() <= 100.0
        assert (v < 1).sum() > 10 and (v > 99).sum() > 10     # the raw outputs left the scale both ways
    inside = jnp.linspace(0.1, 0.9, 801)
    assert float(jnp.abs(vas_link(inside) - inside).max()) < 0.004
    assert float(vas_link(jnp.asarray(0.5))) == 0.5
    assert bool(jnp.all(jnp.diff(vas_link(jnp.linspace(-3, 4, 2001))) >= 0))   # monotone


def test_configs_name_the_skip_path_and_the_demo_regime():
    cfg = default.get_config()
    assert cfg.outcome.model.clinical_skip is False
    cfg.outcome.model.mri.enabled = False
    cfg.outcome.model.clinical_skip = True
    assert build_outcome_model(cfg.outcome.model).clinical_skip is True
    assert cfg.data.demo_regime == "demo" and cfg.data.demo_regime in synthetic.OUTCOME_REGIMES
