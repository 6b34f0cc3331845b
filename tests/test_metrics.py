import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, cohen_kappa_score, roc_auc_score

from lumbarjax.errors import LumbarjaxError
from lumbarjax.eval import metrics as M


def test_auc_small_hand_example():
    # positives 0.8, 0.4 ; negatives 0.5, 0.1 -> pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.5, 0.4, 0.1])
    assert M.auc(y, p) == pytest.approx(0.75)
    # ties count half: positive 0.5 vs negative 0.5
    assert M.auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


def test_auc_matches_sklearn_with_ties_and_drops_nan():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60).astype(float)
    p = np.round(rng.random(60), 1)  # many ties
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p))
    y_nan = y.copy()
    y_nan[:5] = np.nan
    assert M.auc(y_nan, p) == pytest.approx(roc_auc_score(y[5:], p[5:]))
    assert np.isnan(M.auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_bad_inputs_raise_with_context():
    with pytest.raises(LumbarjaxError, match="binary labels must be 0/1"):
        M.auc([0, 2], [0.1, 0.2])
    with pytest.raises(LumbarjaxError, match="NaN/inf prediction"):
        M.brier([0, 1], [0.1, np.nan])
    with pytest.raises(LumbarjaxError, match="does not match"):
        M.brier([0, 1, 1], [0.1, 0.2])
    with pytest.raises(LumbarjaxError, match=r"grades must be integers in \[0, 3\)"):
        M.qwk([0, 1, 3], [0, 1, 2], 3)


def test_sens_spec_and_brier():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    sens, spec = M.sens_spec(y, p, threshold=0.5)
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(1 / 2)
    # hand: (0.01 + 0.16 + 0.64 + 0.49 + 0.01) / 5 = 0.262
    assert M.brier(y, p) == pytest.approx(0.262)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_qwk_hand_example_and_sklearn():
    y = [0, 1, 2, 2]
    yhat = [0, 2, 2, 1]
    # O = [[1,0,0],[0,0,1],[0,1,1]]; W = [[0,.25,1],[.25,0,.25],[1,.25,0]]
    # sum W*O = 0.25 + 0.25 = 0.5 ; row marg (1,1,2), col marg (1,1,2), E = outer / 4
    # sum W*E = (2*.25*1*1 + 2*1*1*2 + 2*.25*1*2)/4 = (0.5 + 4 + 1)/4 = 1.375
    assert M.qwk(y, yhat, 3) == pytest.approx(1 - 0.5 / 1.375)
    assert M.qwk(y, yhat, 3) == pytest.approx(cohen_kappa_score(y, yhat, weights="quadratic"))
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.integers(0, 5, 40)
        b = np.clip(a + rng.integers(-1, 2, 40), 0, 4)
        assert M.qwk(a, b, 5) == pytest.approx(
            cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))))
    assert M.qwk([0, 1, 2], [0, 1, 2], 3) == pytest.approx(1.0)


def test_confusion_rows_are_truth():
    m = M.confusion([0, 0, 1, 2, np.nan], [0, 1, 1, 0, 2], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_mae_rmse():
    y = [10, 20, 30, np.nan]
    yhat = [12, 16, 30, 99]
    assert M.mae(y, yhat) == pytest.approx(2.0)
    assert M.rmse(y, yhat) == pytest.approx(np.sqrt((4 + 16) / 3))


def test_net_benefit_hand_example():
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.7, 0.2, 0.1, 0.3, 0.25, 0.05, 0.5, 0.15])
    # pt = 0.5: treat p>=0.5 -> {0.9(TP),0.6(TP),0.7(FP),0.5(FP)}: 2/10 - 2/10 * 1 = 0
    # pt = 0.2: treat {0.9,0.6,0.7,0.2,0.3,0.25,0.5}: TP=3, FP=4 -> 0.3 - 0.4*0.25 = 0.2
    nb = M.net_benefit(y, p, [0.5, 0.2])
    assert nb == pytest.approx([0.0, 0.2])
    # treat all at 0.2: prevalence 0.3 - 0.7 * 0.25 = 0.125
    assert M.net_benefit_treat_all(y, [0.2]) == pytest.approx([0.125])
    dc = M.decision_curve(y, p, [0.2, 0.5])
    assert dc["treat_none"] == [0.0, 0.0]
    assert dc["model"] == pytest.approx([0.2, 0.0])
    with pytest.raises(LumbarjaxError, match=r"thresholds must lie in \(0, 1\)"):
        M.net_benefit(y, p, [0.0])


def _simulate(n, rng, scale=1.0):
    lp = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(float)
    p = 1 / (1 + np.exp(-scale * lp))
    return y, p


def test_calibration_well_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    y, p = _simulate(20000, rng)
    cal = M.calibration(y, p)
    assert cal["slope"] == pytest.approx(1.0, abs=0.06)
    assert cal["intercept"] == pytest.approx(0.0, abs=0.06)
    assert sum(cal["bins"]["count"]) == 20000
    assert "slope fixed at 1" in cal["intercept_definition"]
    for mp, ob in zip(cal["bins"]["mean_pred"], cal["bins"]["observed"]):
        assert abs(mp - ob) < 0.05
    # overconfident: logits doubled -> slope ~ 0.5
    y2, p2 = _simulate(20000, np.random.default_rng(1), scale=2.0)
    cal2 = M.calibration(y2, p2)
    assert cal2["slope"] < 0.6
    assert cal2["slope"] == pytest.approx(0.5, abs=0.06)
    # under-prediction of the event rate -> positive calibration-in-the-large
    y3, p3 = _simulate(20000, np.random.default_rng(2))
    p3 = 1 / (1 + np.exp(-(np.log(p3 / (1 - p3)) - 1.0)))
    assert M.calibration(y3, p3)["intercept"] == pytest.approx(1.0, abs=0.08)
    # undefined with one class
    assert np.isnan(M.calibration([1, 1, 1], [0.2, 0.5, 0.7])["slope"])


def test_bootstrap_ci_contains_point_narrows_and_is_deterministic():
    rng = np.random.default_rng(0)
    y_s, p_s = _simulate(80, rng)
    y_l, p_l = _simulate(2000, rng)
    small = M.bootstrap_ci(M.auc, y_s, p_s, n_boot=300, seed=3)
    large = M.bootstrap_ci(M.auc, y_l, p_l, n_boot=300, seed=3)
    for point, lo, hi in (small, large):
        assert lo <= point <= hi
    assert (large[2] - large[1]) < (small[2] - small[1]) / 2
    again = M.bootstrap_ci(M.auc, y_s, p_s, n_boot=300, seed=3)
    assert tuple(again) == tuple(small)
    other = M.bootstrap_ci(M.auc, y_s, p_s, n_boot=300, seed=4)
    assert tuple(other) != tuple(small)
    assert small.n_skipped == 0 and small.n_valid == 300


def test_bootstrap_counts_undefined_resamples():
    # one positive among 10: ~35% of resamples miss it -> AUC undefined, skipped and counted
    y = np.array([1] + [0] * 9, dtype=float)
    p = np.linspace(0.9, 0.0, 10)
    ci = M.bootstrap_ci(M.auc, y, p, n_boot=400, seed=0)
    assert ci[0] == pytest.approx(1.0)
    assert 80 < ci.n_skipped < 220
    assert ci.n_valid + ci.n_skipped == 400
    assert ci.as_dict()["n_skipped"] == ci.n_skipped


def test_paired_diff_identical_models_is_zero():
    rng = np.random.default_rng(0)
    y, p = _simulate(100, rng)
    d = M.paired_bootstrap_diff(M.auc, y, p, p.copy(), n_boot=200, seed=0)
    assert tuple(d[:3]) == (0.0, 0.0, 0.0)
    assert d[3] == pytest.approx(1.0)


def test_paired_diff_detects_better_model():
    rng = np.random.default_rng(0)
    y, p_good = _simulate(300, rng)
    p_noise = rng.random(300)
    d = M.paired_bootstrap_diff(M.auc, y, p_good, p_noise, n_boot=300, seed=0)
    assert d[0] > 0.2 and d[1] > 0 and d[3] < 0.01


def test_reports_are_json_serialisable_and_count_missing():
    rng = np.random.default_rng(0)
    y, p = _simulate(60, rng)
    y[:4] = np.nan
    rep = M.binary_report(y, p, n_boot=50)
    assert rep["n"] == 56 and rep["n_missing_label"] == 4
    assert rep["auc"]["lo"] <= rep["auc"]["point"] <= rep["auc"]["hi"]
    assert set(rep) >= {"brier", "sensitivity", "specificity", "calibration_slope",
                        "calibration_intercept", "calibration", "decision_curve"}
    json.dumps(rep, allow_nan=False)

    yr = rng.uniform(0, 100, 40)
    yr[0] = np.nan
    rr = M.regression_report(yr, np.nan_to_num(yr, nan=50.0) + 5, n_boot=50)
    assert rr["mae"]["point"] == pytest.approx(5.0)
    assert rr["bias"]["point"] == pytest.approx(5.0)
    assert rr["n_missing_label"] == 1
    json.dumps(rr, allow_nan=False)

    g = rng.integers(0, 5, 50).astype(float)
    gh = np.clip(g + rng.integers(-1, 2, 50), 0, 4)
    g[3] = np.nan
    gr = M.grader_report(g, gh, 5, n_boot=50)
    assert gr["qwk"]["point"] == pytest.approx(M.qwk(g, gh, 5))
    assert np.sum(gr["confusion"]) == 49
    assert gr["within_one"]["point"] == pytest.approx(1.0)
    json.dumps(gr, allow_nan=False)


@pytest.mark.parametrize("n", [12, 150])
def test_batched_bootstrap_equals_the_per_resample_loop(n):
    """bootstrap_ci / paired_bootstrap_diff of the metrics with a rows version give what the
    1,000 single calls give (a lambda wrapper forces the loop); n = 12 has one-class and
    separable resamples, whose NaNs must be skipped alike."""
    rng = np.random.default_rng(3)
    y = (rng.random(n) < 0.4).astype(float)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    q = np.clip(rng.random(n), 0.01, 0.99)
    v = rng.normal(50, 20, n)
    cases = [(M.auc, y, p), (M.brier, y, p), (M.calibration_slope, y, p),
             (M.calibration_in_the_large, y, p), (M.mae, v, v + rng.normal(0, 5, n)),
             (M.rmse, v, v + 3), (M.bias, v, v + rng.normal(1, 5, n))]
    for fn, a, b in cases:
        fast = M.bootstrap_ci(fn, a, b, n_boot=300, seed=1)
        slow = M.bootstrap_ci(lambda s, t, fn=fn: fn(s, t), a, b, n_boot=300, seed=1)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, err_msg=fn.__name__)
        assert fast.n_skipped == slow.n_skipped, fn.__name__
    y5, p5 = np.array([1.0, 0, 0, 0, 0]), np.array([0.9, 0.2, 0.4, 0.1, 0.3])   # a third of resamples: one class
    for fn in (M.auc, M.calibration_slope, M.calibration_in_the_large):
        fast = M.bootstrap_ci(fn, y5, p5, n_boot=300, seed=1)
        slow = M.bootstrap_ci(lambda s, t, fn=fn: fn(s, t), y5, p5, n_boot=300, seed=1)
        assert fast.n_skipped == slow.n_skipped > 50, fn.__name__
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, err_msg=fn.__name__)
    for k, fn in enumerate((M.sensitivity, M.specificity)):
        fast = M.bootstrap_ci(fn, y, p, n_boot=300, seed=1, rows=lambda a, b, k=k: M._sens_spec_rows(a, b, 0.5)[k])
        slow = M.bootstrap_ci(lambda s, t, fn=fn: fn(s, t), y, p, n_boot=300, seed=1)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, err_msg=fn.__name__)
    for fn in (M.auc, M.calibration_slope):
        fast = M.paired_bootstrap_diff(fn, y, p, q, n_boot=300, seed=2)
        slow = M.paired_bootstrap_diff(lambda s, t, fn=fn: fn(s, t), y, p, q, n_boot=300, seed=2)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, err_msg=fn.__name__)
    # a NaN label takes the loop (labels are dropped per resample), with the same answer as before
    y_nan = y.copy()
    y_nan[0] = np.nan
    np.testing.assert_allclose(M.bootstrap_ci(M.auc, y_nan, p, n_boot=100, seed=0),
                               M.bootstrap_ci(lambda s, t: M.auc(s, t), y_nan, p, n_boot=100, seed=0))
