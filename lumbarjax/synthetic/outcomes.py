"""The outcome model of the synthetic cohort: latents, outcomes and the clinical table.

:func:`sample_patients` draws the non-image part of a cohort (the clinical table and the
latent truth); OUTCOME_REGIMES holds the effect sizes of the outcome model.

Generative model (the "known model"; also in docs/DEMO_COHORT.md)
-----------------------------------------------------------------
Per patient, independently:

* ``age`` = clip(round(N(67, 9²)), 40, 90) years; ``sex`` F with probability 0.5;
  ``bmi`` = clip(N(28, 4.5²), 17, 45) kg/m² (1 decimal); ``smoker`` ~ Bernoulli(0.2);
  ``symptom_months`` = clip(round(LogNormal(log 18, 0.7²)), 3, 240).
  BMI, smoking and symptom duration have **no** effect on anything (noise features).
* degeneration grade ``g`` = clip(round(1.9 + 0.05·(age − 67) + N(0, 1)), 0, 4).
  Per-level grades: ``grade_LEVEL = max(g − drop_LEVEL, 0)`` with drops from level-specific
  distributions (upper levels drop more, see ``GRADE_DROP_PROBS``); if no level reaches ``g``,
  L4L5 (p = 0.6) or L5S1 is set to ``g``. Hence **g = max of the per-level grades**, exactly.
* stenosis level ∈ {L2L3, L3L4, L4L5, L5S1} with probabilities (0.10, 0.25, 0.50, 0.15);
  severity ``s`` ~ Uniform(0.3, 1.0), independent of everything else. With probability 0.25
  a milder secondary stenosis at an adjacent lumbar level with severity ``s`` · U(0.3, 0.6)
  (it is drawn in the MRI but has no effect on the outcome).
* true ZCQ success probability (the demo regime; OUTCOME_REGIMES holds the others, which add
  ``log_months·ln(symptom_months / 18)``)
  ``p = sigmoid(β0 + β_s·s + β_g·g + β_age·(age − 65)/10 + β_sex·[sex = F])``
  with ``BETA`` = (β0, β_s, β_g, β_age, β_sex) = (−2.6, 6.0, −0.4, −0.3, −0.3).
  ``zcq_success`` ~ Bernoulli(p) (the realised outcome).
* ZCQ items: pre-operative items are drawn independently of all latents (subscale item means
  U(2.6, 4.4) for symptoms 1–5, U(2.2, 3.6) for function 1–4, item noise N(0, 0.6²) / N(0, 0.5²),
  rounded and clipped). Post-operative items are drawn given the realised success: success →
  symptom and function means drop by U(0.7, 2.2) / U(0.7, 1.8), satisfaction mean U(1.0, 2.2);
  failure → each criterion fails with probability 0.55 (at least one), a failing criterion has a
  drop of U(−0.6, 0.3) or a satisfaction mean U(2.8, 3.8). Draws are repeated until data.clinical's ZCQ
  rule (subscale = mean of answered items; success = Δsym ≥ 0.5 AND Δfun ≥ 0.5 AND sat ≤ 2.5)
  applied to the written items gives exactly the realised success, with no subscale within 1e-6
  of a threshold. So the rule reproduces ``zcq_success`` for every patient whose subscales are
  computable (complete, or one item unanswered).
* VAS (0–100 mm integers): ``back_pain_pre`` = clip(round(N(55, 20²)), 5, 100),
  ``leg_pain_pre`` = clip(round(N(66, 17²)), 10, 100), independent of the latents.
  Realised ≥50 % improvement ~ Bernoulli(q_success) if the realised ZCQ success is 1 else
  Bernoulli(q_failure) with ``Q_BACK`` = (q_failure, q_success) = (0.20, 0.70) and
  ``Q_LEG`` = (0.25, 0.85). Improved → post = floor(pre·(1 − r)), r ~ U(0.52, 1.0);
  not improved → post = min(100, ceil(pre·(1 − r))), r ~ U(−0.25, 0.45). Hence the true
  probabilities given the latents are ``p_back_improved50 = 0.20 + 0.50·p`` and
  ``p_leg_improved50 = 0.25 + 0.60·p``.
* ``xray_grade`` (the radiologist) = g, moved by ±1 with probability 0.15 (towards the inside
  of 0..4 at the ends).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.synthetic.streams import stream

STENOSIS_LEVELS = ("L2L3", "L3L4", "L4L5", "L5S1")
STENOSIS_LEVEL_PROBS = (0.10, 0.25, 0.50, 0.15)
# Effect sizes of the known outcome model (see outcome_logit and docs/DEMO_COHORT.md): the logit
# of P(ZCQ success) = b0 + s·severity + g·grade + age·(age − 65)/10 + female·[F]
#                     + log_months·ln(symptom_months / 18).
# "demo" is the cohort the README shows; the others stress the outcome model in other ways.
OUTCOME_REGIMES = {
    # the stenosis (MRI only) dwarfs the clinical effects
    "demo": {"b0": -2.6, "s": 6.0, "g": -0.4, "age": -0.3, "female": -0.3, "log_months": 0.0},
    # age, sex, symptom duration and the degeneration grade carry most of the signal
    "clinical_dominant": {"b0": 0.5, "s": 1.5, "g": -0.5, "age": -0.45, "female": -0.45,
                          "log_months": -0.6},
    # the degeneration grade (seen in the X-ray, not a clinical column) carries real signal
    "xray_contributing": {"b0": 0.4, "s": 3.0, "g": -1.0, "age": -0.3, "female": -0.3,
                          "log_months": -0.3},
    # no image signal: only age, sex and symptom duration matter
    "null": {"b0": 0.4, "s": 0.0, "g": 0.0, "age": -0.5, "female": -0.5, "log_months": -0.7},
    # the images act non-linearly: the stenosis counts only above a severity of 0.55, and only
    # in patients with symptoms for at most 24 months (an interaction with a clinical column)
    "nonlinear": {"b0": -0.2, "s": 9.0, "g": -0.4, "age": -0.3, "female": -0.3, "log_months": 0.0,
                  "s_threshold": 0.55, "s_within_months": 24.0},
}
# Keys every regime may leave out (0 = off): the linear regimes' logit is then the one above.
OPTIONAL_EFFECTS = ("s_threshold", "s_within_months")
BETA = OUTCOME_REGIMES["demo"]
EFFECT_KEYS = tuple(BETA) + OPTIONAL_EFFECTS
Q_BACK = (0.20, 0.70)  # P(back VAS improved ≥50 % | ZCQ failure), P(… | ZCQ success)
Q_LEG = (0.25, 0.85)
READER_ERROR_RATE = 0.15
SECONDARY_STENOSIS_RATE = 0.25
# P(drop = 0, 1, 2, 3) of a level's grade below the patient grade g.
GRADE_DROP_PROBS = {
    "L1L2": (0.15, 0.30, 0.30, 0.25),
    "L2L3": (0.25, 0.35, 0.25, 0.15),
    "L3L4": (0.40, 0.35, 0.15, 0.10),
    "L4L5": (0.60, 0.30, 0.10, 0.00),
    "L5S1": (0.55, 0.30, 0.15, 0.00),
}

# Edge cases per 160 patients (scaled with n, at least 1 each); assigned to distinct patients.
EDGE_CASES_PER_160 = {
    "no_images": 2,  # clinical row only
    "no_clinical": 2,  # images only
    "no_mri": 4,  # X-ray only
    "missing_xray_grade": 3,
    "zcq_one_item_missing": 3,  # one unanswered item: subscale still computable
    "zcq_subscale_missing": 2,  # two unanswered items in one subscale: zcq_success undefined
    "missing_post_pain": 3,  # back_pain_post and leg_pain_post blank
    "back_pain_pre_zero": 1,  # ≥50 % back improvement undefined
}

ZCQ_GROUPS = {  # name: (n items, lo, hi)
    "sym_pre": (7, 1, 5),
    "fun_pre": (5, 1, 4),
    "sym_post": (7, 1, 5),
    "fun_post": (5, 1, 4),
    "sat_post": (6, 1, 4),
}

CLINICAL_COLUMNS = (
    ["patient_id", "age", "sex", "bmi", "smoker", "symptom_months",
     "back_pain_pre", "back_pain_post", "leg_pain_pre", "leg_pain_post"]
    + [f"zcq_sym_pre_{i}" for i in range(1, 8)]
    + [f"zcq_fun_pre_{i}" for i in range(1, 6)]
    + [f"zcq_sym_post_{i}" for i in range(1, 8)]
    + [f"zcq_fun_post_{i}" for i in range(1, 6)]
    + [f"zcq_sat_post_{i}" for i in range(1, 7)]
    + ["xray_grade"]
)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))`` elementwise, as float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))



def sample_latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Outcome-relevant latents, vectorised: age (years), female (bool), grade g, severity s, level."""
    age = np.clip(np.rint(rng.normal(67.0, 9.0, n)), 40, 90)
    female = rng.random(n) < 0.5
    grade = np.clip(np.rint(1.9 + 0.05 * (age - 67.0) + rng.normal(0.0, 1.0, n)), 0, 4).astype(int)
    sev = rng.uniform(0.3, 1.0, n)
    level = rng.choice(len(STENOSIS_LEVELS), size=n, p=STENOSIS_LEVEL_PROBS)
    return {"age": age, "female": female, "grade": grade, "severity": sev, "level": level}


def outcome_effects(regime: str | Mapping[str, float] = "demo") -> tuple[str, dict[str, float]]:
    """``(name, effects)`` of an outcome regime: a name of OUTCOME_REGIMES, or a dict of effect
    sizes over EFFECT_KEYS (missing keys are 0; its name is "custom")."""
    if isinstance(regime, str):
        if regime not in OUTCOME_REGIMES:
            raise ConfigError(f"outcome regime {regime!r} is unknown; choose one of {sorted(OUTCOME_REGIMES)} "
                              f"or pass a dict of effect sizes over {list(EFFECT_KEYS)}")
        return regime, dict(OUTCOME_REGIMES[regime])
    if not isinstance(regime, Mapping):
        raise ConfigError(f"outcome regime must be a name or a dict of effect sizes, got {type(regime).__name__}")
    unknown = sorted(set(regime) - set(EFFECT_KEYS))
    if unknown:
        raise ConfigError(f"outcome regime: unknown effect key(s) {unknown}; known: {list(EFFECT_KEYS)}")
    eff = {k: float(regime.get(k, 0.0)) for k in EFFECT_KEYS if k in regime or k not in OPTIONAL_EFFECTS}
    for k, v in eff.items():
        if not np.isfinite(v):
            raise ConfigError(f"outcome regime: effect {k!r} must be finite, got {v}")
    return "custom", eff


def outcome_logit(severity, grade, age, female, symptom_months=None, *, effects=None) -> np.ndarray:
    """b0 + s·S + g·g + age·(age − 65)/10 + female·[F] + log_months·ln(months / 18), where the
    stenosis term S is the severity itself, or, in a non-linear regime, max(severity −
    s_threshold, 0) (with ``s_threshold`` > 0) counted only where symptom_months ≤
    ``s_within_months`` (with ``s_within_months`` > 0).

    ``effects``: a dict over EFFECT_KEYS (default BETA, the demo regime, where symptom duration
    has no effect and ``symptom_months`` may be None)."""
    b = BETA if effects is None else effects
    sev = np.asarray(severity, float)
    if b.get("s_threshold", 0.0) > 0.0:
        sev = np.maximum(sev - b["s_threshold"], 0.0)
    needs_months = b.get("log_months", 0.0) != 0.0 or b.get("s_within_months", 0.0) > 0.0
    if needs_months and symptom_months is None:
        raise ConfigError("outcome_logit: this regime needs symptom_months")
    if b.get("s_within_months", 0.0) > 0.0:
        sev = sev * (np.asarray(symptom_months, float) <= b["s_within_months"])
    x = (b["b0"] + b["s"] * sev + b["g"] * np.asarray(grade, float)
         + b["age"] * (np.asarray(age, float) - 65.0) / 10.0 + b["female"] * np.asarray(female, float))
    if b.get("log_months", 0.0) != 0.0:  # demo: the expression above, bit for bit
        x = x + b["log_months"] * np.log(np.asarray(symptom_months, float) / 18.0)
    return x


def outcome_probabilities(severity, grade, age, female, symptom_months=None, *,
                          effects=None) -> dict[str, np.ndarray]:
    """True probabilities of the three binary outcomes given the latents."""
    p = sigmoid(outcome_logit(severity, grade, age, female, symptom_months, effects=effects))
    return {"zcq_success": p,
            "back_improved50": Q_BACK[0] + (Q_BACK[1] - Q_BACK[0]) * p,
            "leg_improved50": Q_LEG[0] + (Q_LEG[1] - Q_LEG[0]) * p}


def _subscale_mean(items: np.ndarray) -> float:
    """Mean of answered items (NaN = unanswered); NaN when more than one item is unanswered."""
    answered = ~np.isnan(items)
    if (~answered).sum() > 1:
        return float("nan")
    return float(items[answered].mean())


def zcq_rule(groups: dict[str, np.ndarray]) -> float:
    """ZCQ success by data.clinical's rule (1.0 / 0.0) from item arrays; NaN when a subscale is missing."""
    m = {k: _subscale_mean(np.asarray(v, float)) for k, v in groups.items()}
    if any(np.isnan(v) for v in m.values()):
        return float("nan")
    ok = (m["sym_pre"] - m["sym_post"] >= 0.5) and (m["fun_pre"] - m["fun_post"] >= 0.5) and m["sat_post"] <= 2.5
    return float(ok)


def _near_threshold(groups: dict[str, np.ndarray]) -> bool:
    m = {k: _subscale_mean(np.asarray(v, float)) for k, v in groups.items()}
    if any(np.isnan(v) for v in m.values()):
        return False
    return (abs(m["sym_pre"] - m["sym_post"] - 0.5) < 1e-6 or abs(m["fun_pre"] - m["fun_post"] - 0.5) < 1e-6
            or abs(m["sat_post"] - 2.5) < 1e-6)


def _items(rng, mean, name, sd):
    n, lo, hi = ZCQ_GROUPS[name]
    return np.clip(np.rint(mean + rng.normal(0.0, sd, n)), lo, hi).astype(float)


def _masked(groups: dict[str, np.ndarray], missing: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.where(missing[k], np.nan, v) for k, v in groups.items()}


def _draw_zcq_pre(rng: np.random.Generator, missing: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pre-operative ZCQ items (unmasked), independent of the latents, with room for a 0.5
    improvement."""
    while True:
        pre = {"sym_pre": _items(rng, rng.uniform(2.6, 4.4), "sym_pre", 0.6),
               "fun_pre": _items(rng, rng.uniform(2.2, 3.6), "fun_pre", 0.5)}
        means = [np.mean(v) for v in pre.values()]
        means += [np.nanmean(np.where(missing[k], np.nan, v)) for k, v in pre.items()]
        if min(means) >= 1.75:
            return pre


def _draw_zcq_post(rng: np.random.Generator, pre: dict[str, np.ndarray], success: int,
                   missing: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All ZCQ items (NaN = unanswered): ``pre`` and post-operative items consistent with the
    realised success (see module docstring)."""
    masked = functools.partial(_masked, missing=missing)
    m_sym, m_fun = pre["sym_pre"].mean(), pre["fun_pre"].mean()
    for _ in range(100000):
        fail = np.zeros(3, bool)
        if not success:
            fail = rng.random(3) < 0.55
            if not fail.any():
                fail[rng.integers(3)] = True
        d_sym = rng.uniform(-0.6, 0.3) if fail[0] else rng.uniform(0.7, 2.2)
        d_fun = rng.uniform(-0.5, 0.3) if fail[1] else rng.uniform(0.7, 1.8)
        sat = rng.uniform(2.8, 3.8) if fail[2] else rng.uniform(1.0, 2.2)
        groups = dict(pre)
        groups["sym_post"] = _items(rng, m_sym - d_sym, "sym_post", 0.45)
        groups["fun_post"] = _items(rng, m_fun - d_fun, "fun_post", 0.4)
        groups["sat_post"] = _items(rng, sat, "sat_post", 0.4)
        full, obs = zcq_rule(groups), zcq_rule(masked(groups))
        if full != success or (not np.isnan(obs) and obs != success):
            continue
        if _near_threshold(groups) or _near_threshold(masked(groups)):
            continue
        return masked(groups)
    raise RuntimeError("could not draw ZCQ items consistent with the outcome")  # pragma: no cover


def _draw_vas_post(rng, pre: int, improved: float) -> int:
    if pre == 0:
        return int(rng.integers(0, 31))
    if improved:
        return int(np.floor(pre * (1.0 - rng.uniform(0.52, 1.0))))
    return int(min(100, np.ceil(pre * (1.0 - rng.uniform(-0.25, 0.45)))))


def _edge_assignment(n: int, seed: int, edge_cases: bool) -> dict[int, str]:
    """Patient index → edge case name (distinct patients)."""
    if not edge_cases:
        return {}
    counts = {k: max(1, int(round(v * n / 160.0))) for k, v in EDGE_CASES_PER_160.items()}
    need = sum(counts.values())
    if n < need:
        raise ConfigError(f"make_cohort: n_patients={n} is too small for the edge cases "
                          f"(needs ≥ {need}); pass edge_cases=False")
    order = stream(seed, 2**31 - 1).permutation(n)
    out, k = {}, 0
    for name, c in counts.items():
        for _ in range(c):
            out[int(order[k])] = name
            k += 1
    return out


def _draw_patient(seed: int, i: int, edge: str, effects: Mapping[str, float] = BETA) -> tuple[dict, dict]:
    """Clinical row (dict, NaN = blank) and ground-truth row (latents, outcomes) of patient i."""
    rng = stream(seed, i, 0)
    lat = {k: v[0] for k, v in sample_latents(rng, 1).items()}
    age, female, g, s = int(lat["age"]), bool(lat["female"]), int(lat["grade"]), float(lat["severity"])
    level = STENOSIS_LEVELS[int(lat["level"])]
    bmi = round(float(np.clip(rng.normal(28.0, 4.5), 17.0, 45.0)), 1)
    smoker = int(rng.random() < 0.2)
    months = int(np.clip(np.rint(rng.lognormal(np.log(18.0), 0.7)), 3, 240))
    grades = {}
    for lv in LEVELS:
        grades[lv] = max(g - int(rng.choice(4, p=GRADE_DROP_PROBS[lv])), 0)
    force = "L4L5" if rng.random() < 0.6 else "L5S1"
    if max(grades.values()) < g:
        grades[force] = g
    lvl2, sev2 = "", 0.0
    if rng.random() < SECONDARY_STENOSIS_RATE:
        j = LEVELS.index(level)
        nb = [LEVELS[k] for k in (j - 1, j + 1) if 0 <= k < len(LEVELS)]
        lvl2 = nb[int(rng.integers(len(nb)))]
        sev2 = s * rng.uniform(0.3, 0.6)
    probs = outcome_probabilities(s, g, age, female, months, effects=effects)
    p = float(probs["zcq_success"])
    u = rng.random()
    success = int(u < p)
    # Every regime shares the demo regime's draws after the outcome (pre-operative scores, reader
    # grade): the main stream draws the demo's post-operative ZCQ items; where this regime's
    # outcome differs, its items come from a stream of their own.
    success_demo = int(u < float(outcome_probabilities(s, g, age, female, months)["zcq_success"]))
    # missing-item pattern (edge cases)
    missing = {k: np.zeros(v[0], bool) for k, v in ZCQ_GROUPS.items()}
    if edge in ("zcq_one_item_missing", "zcq_subscale_missing"):
        grp = list(ZCQ_GROUPS)[int(rng.integers(len(ZCQ_GROUPS)))]
        k = 1 if edge == "zcq_one_item_missing" else 2
        missing[grp][rng.choice(ZCQ_GROUPS[grp][0], size=k, replace=False)] = True
    pre = _draw_zcq_pre(rng, missing)
    zcq = _draw_zcq_post(rng, pre, success_demo, missing)
    if success != success_demo:
        zcq = _draw_zcq_post(stream(seed, i, 6), pre, success, missing)
    back_pre = 0 if edge == "back_pain_pre_zero" else int(np.clip(np.rint(rng.normal(55, 20)), 5, 100))
    leg_pre = int(np.clip(np.rint(rng.normal(66, 17)), 10, 100))
    q_b, q_l = Q_BACK[success], Q_LEG[success]
    back_imp = float(rng.random() < q_b) if back_pre > 0 else float("nan")
    leg_imp = float(rng.random() < q_l)
    back_post, leg_post = _draw_vas_post(rng, back_pre, back_imp), _draw_vas_post(rng, leg_pre, leg_imp)
    xg = g
    if rng.random() < READER_ERROR_RATE:
        step = 1 if rng.random() < 0.5 else -1
        xg = g + step if 0 <= g + step <= 4 else g - step
    pid = f"LJ{i + 1:04d}"
    row: dict[str, Any] = {
        "patient_id": pid, "age": age, "sex": "F" if female else "M", "bmi": bmi, "smoker": smoker,
        "symptom_months": months, "back_pain_pre": back_pre, "back_pain_post": back_post,
        "leg_pain_pre": leg_pre, "leg_pain_post": leg_post,
    }
    for grp, prefix in (("sym_pre", "zcq_sym_pre"), ("fun_pre", "zcq_fun_pre"), ("sym_post", "zcq_sym_post"),
                        ("fun_post", "zcq_fun_post"), ("sat_post", "zcq_sat_post")):
        for j, v in enumerate(zcq[grp], start=1):
            row[f"{prefix}_{j}"] = v
    row["xray_grade"] = float("nan") if edge == "missing_xray_grade" else xg
    if edge == "missing_post_pain":
        row["back_pain_post"] = row["leg_pain_post"] = float("nan")
    truth: dict[str, Any] = {
        "patient_id": pid, "grade": g, **{f"grade_{lv}": grades[lv] for lv in LEVELS},
        "stenosis_level": level, "stenosis_severity": round(s, 6),
        "stenosis_level_2": lvl2, "stenosis_severity_2": round(float(sev2), 6),
        "p_zcq_success": round(p, 6), "p_back_improved50": round(float(probs["back_improved50"]), 6),
        "p_leg_improved50": round(float(probs["leg_improved50"]), 6),
        "zcq_success": success, "back_improved50": back_imp, "leg_improved50": leg_imp,
        "has_xray": int(edge != "no_images"), "has_mri": int(edge not in ("no_images", "no_mri")),
        "in_clinical": int(edge != "no_clinical"), "edge_case": edge,
        "_age": age, "_female": female,
    }
    return row, truth


def sample_patients(n_patients: int, seed: int = 0, *, edge_cases: bool = True,
                    regime: str | Mapping[str, float] = "demo") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the non-image part of a cohort: ``(clinical, truth)``.

    ``clinical`` has CLINICAL_COLUMNS (nullable ints, blanks = NaN/<NA>), one row per patient
    that is in the clinical table; ``truth`` one row per patient (all ``n_patients``) with the
    latent columns of GROUND_TRUTH_COLUMNS except the image coordinates. Cheap (no images):
    used by :func:`make_cohort` and for large-n checks of :func:`bayes_auc`. ``regime``: the
    outcome model's effect sizes (:func:`outcome_effects`); everything else does not depend on it.
    """
    _, effects = outcome_effects(regime)
    if int(n_patients) < 1 or int(n_patients) > 9999:
        raise ConfigError(f"make_cohort: n_patients must be 1..9999, got {n_patients}")
    edges = _edge_assignment(int(n_patients), int(seed), edge_cases)
    rows, truths = [], []
    for i in range(int(n_patients)):
        row, truth = _draw_patient(int(seed), i, edges.get(i, ""), effects)
        truths.append(truth)
        if truth["in_clinical"]:
            rows.append(row)
    clinical = pd.DataFrame(rows, columns=CLINICAL_COLUMNS)
    for c in CLINICAL_COLUMNS:
        if c not in ("patient_id", "sex", "bmi"):
            clinical[c] = clinical[c].astype("Int64")
    truth = pd.DataFrame(truths)
    return clinical, truth
