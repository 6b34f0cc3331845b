"""Synthetic demo cohort: DICOM X-rays and MRIs, a clinical table and the ground truth.

:func:`make_cohort` writes, deterministically from ``seed``, a cohort folder in the on-disk
contract of docs/CONTRACTS.md (data.index, data.clinical) so that every part of lumbarjax runs without patient data::

    out_dir/
      clinical.csv                 one row per patient (data.clinical columns, raw ZCQ items, VAS mm)
      ground_truth.csv             latent truth per patient (see GROUND_TRUTH_COLUMNS)
      ground_truth_summary.json    generative model, counts, edge cases, Bayes AUCs
      export/                      a hospital-like DICOM export (nested folders, meaningless
        README.txt, DICOMDIR         file names, several studies / series per patient) plus
        <hex>/<study>/<series>/IM…   non-image files that an indexer must skip

Generative model (the "known model"; also in docs/DEMO_COHORT.md)
-----------------------------------------------------------------
Per patient, independently:

* ``age`` = clip(round(N(67, 9²)), 40, 90) years; ``sex`` F with probability 0.5;
  ``bmi`` = clip(N(28, 4.5²), 17, 45) kg/m² (1 decimal); ``smoker`` ~ Bernoulli(0.2);
  ``symptom_months`` = clip(round(LogNormal(log 18, 0.7²)), 3, 240).
  BMI, smoking and symptom duration have **no** effect on anything (noise features).
* degeneration grade ``g`` = clip(round(1.9 + 0.05·(age − 67) + N(0, 1)), 0, 4).
  Per-level grades: ``grade_LEVEL = max(g − drop_LEVEL, 0)`` with drops from level-specific
  distributions (upper levels drop more, see ``_GRADE_DROP_PROBS``); if no level reaches ``g``,
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

Images encode the latents: X-ray disc height ∝ (1 − 0.16·grade_LEVEL), osteophytes
(0, 0, 2.5, 4.5, 7 mm for grades 0–4) and endplate sclerosis (0.1·grade) per level; MRI T2 disc
nucleus signal falls with the level's grade; the CSF canal is narrowed at the stenotic level to
(1 − 0.85·s) of its width. Stenosis severity is visible **only** in the MRI, so an image model
can beat a clinical-only model (see :func:`bayes_auc`, ``population_no_stenosis``).

Coordinates in ``ground_truth.csv``: ``disc_LEVEL_{x,y,z}_mm`` are DICOM patient coordinates
(LPS, mm) of the disc centre in the sagittal T2 series (x = the spine midline);
``xray_disc_LEVEL_{row,col}`` are 0-based pixel coordinates (row, column) in the lateral X-ray;
``xray_ep_ENDPLATE_{ant,post}_{row,col}`` the anterior and posterior corners of the 11 endplates
``L1_sup, L1_inf, …, L5_inf, S1_sup`` (the lateral order of BUU-LSPINE, see
:mod:`lumbarjax.data.public.buu_lspine`) in the same pixel grid; the film faces left (anterior =
smaller column, posterior = larger).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRLittleEndian

from lumbarjax import atomic
from lumbarjax.errors import ConfigError
from lumbarjax.workers import process_map
from lumbarjax.eval import metrics as metrics_lib

# ----------------------------------------------------------------------------- constants

LEVELS = ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")
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
_GRADE_DROP_PROBS = {
    "L1L2": (0.15, 0.30, 0.30, 0.25),
    "L2L3": (0.25, 0.35, 0.25, 0.15),
    "L3L4": (0.40, 0.35, 0.15, 0.10),
    "L4L5": (0.60, 0.30, 0.10, 0.00),
    "L5S1": (0.55, 0.30, 0.15, 0.00),
}
OSTEOPHYTE_MM = (0.0, 0.0, 2.5, 4.5, 7.0)  # spur length per grade
DISC_HEIGHT_LOSS_PER_GRADE = 0.16  # disc height × (1 − 0.16·grade)
STENOSIS_NARROWING = 0.85  # canal width × (1 − 0.85·s)

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

# Endplates whose corners the ground truth gives (lateral film, cranial to caudal).
XRAY_ENDPLATES = tuple(f"L{k}_{s}" for k in range(1, 6) for s in ("sup", "inf")) + ("S1_sup",)

GROUND_TRUTH_COLUMNS = (
    ["patient_id", "grade"] + [f"grade_{lv}" for lv in LEVELS]
    + ["stenosis_level", "stenosis_severity", "stenosis_level_2", "stenosis_severity_2",
       "stenosis_x_mm", "stenosis_y_mm", "stenosis_z_mm",
       "p_zcq_success", "p_back_improved50", "p_leg_improved50",
       "zcq_success", "back_improved50", "leg_improved50",
       "has_xray", "has_mri", "in_clinical", "edge_case",
       "xray_series_uid", "t2_series_uid", "xray_spacing_mm"]
    + [f"disc_{lv}_{a}_mm" for lv in LEVELS for a in ("x", "y", "z")]
    + [f"xray_disc_{lv}_{a}" for lv in LEVELS for a in ("row", "col")]
    + [f"xray_ep_{ep}_{corner}_{a}" for ep in XRAY_ENDPLATES for corner in ("ant", "post")
       for a in ("row", "col")]
)

_FIRST_F = ["JANE", "MARIA", "ANNA", "LINDA", "SUSAN", "KAREN", "HELEN", "EVA", "CLAIRE", "ROSA"]
_FIRST_M = ["JOHN", "PETER", "JAMES", "HANS", "PAUL", "MARK", "LUCA", "DAVID", "KARL", "TOM"]
_LAST = ["DOE", "SMITH", "MUSTER", "ROSSI", "MEIER", "JOHNSON", "MARTIN", "NOVAK", "SCHMID",
         "GARCIA", "BROWN", "KELLER", "WEBER", "MOREAU", "LEHMANN"]
_INSTITUTIONS = ["SPINE CENTRE DEMO", "ST. EXAMPLE HOSPITAL", "KANTONSSPITAL MUSTERSTADT"]
_STREETS = ["EXAMPLE STREET", "MUSTERGASSE", "VIA ESEMPIO", "SAMPLE ROAD"]
_TOWNS = ["MUSTERSTADT", "SAMPLETON", "EXAMPLEVILLE"]
_PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "KILDARE^JAMES", "QUINN^MICHAELA"]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, key…): patient i's data does not depend on n_patients."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


# ----------------------------------------------------------------------------- generative model


def _sample_latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
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
    order = _rng(seed, 2**31 - 1).permutation(n)
    out, k = {}, 0
    for name, c in counts.items():
        for _ in range(c):
            out[int(order[k])] = name
            k += 1
    return out


def _draw_patient(seed: int, i: int, edge: str, effects: Mapping[str, float] = BETA) -> tuple[dict, dict]:
    """Clinical row (dict, NaN = blank) and ground-truth row (latents, outcomes) of patient i."""
    rng = _rng(seed, i, 0)
    lat = {k: v[0] for k, v in _sample_latents(rng, 1).items()}
    age, female, g, s = int(lat["age"]), bool(lat["female"]), int(lat["grade"]), float(lat["severity"])
    level = STENOSIS_LEVELS[int(lat["level"])]
    bmi = round(float(np.clip(rng.normal(28.0, 4.5), 17.0, 45.0)), 1)
    smoker = int(rng.random() < 0.2)
    months = int(np.clip(np.rint(rng.lognormal(np.log(18.0), 0.7)), 3, 240))
    grades = {}
    for lv in LEVELS:
        grades[lv] = max(g - int(rng.choice(4, p=_GRADE_DROP_PROBS[lv])), 0)
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
        zcq = _draw_zcq_post(_rng(seed, i, 6), pre, success, missing)
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


# ----------------------------------------------------------------------------- Bayes AUC


def _months_mc(seed: int, n: int) -> np.ndarray:
    """Symptom duration (months) of Monte Carlo patients, from its own stream."""
    return np.clip(np.rint(_rng(seed, 2**31 - 6).lognormal(np.log(18.0), 0.7, n)), 3, 240)


def _grade_given_age(age: np.ndarray) -> np.ndarray:
    """(N, 5) P(g = 0..4 | age) of g = clip(round(1.9 + 0.05·(age − 67) + N(0, 1)), 0, 4)."""
    from scipy.stats import norm
    mu = 1.9 + 0.05 * (np.asarray(age, float)[:, None] - 67.0)
    edges = np.array([-np.inf, 0.5, 1.5, 2.5, 3.5, np.inf])
    return np.diff(norm.cdf(edges[None, :] - mu), axis=1)


def bayes_auc(ground_truth: pd.DataFrame | str | os.PathLike, *, n_mc: int = 200_000, seed: int = 0,
              regime: str | Mapping[str, float] = "demo") -> dict:
    """Bayes-optimal AUC of each binary outcome under the outcome ``regime`` of the cohort.

    ``empirical``: AUC of the true probability (``p_…`` column) against the realised outcome
    of the patients in ``ground_truth`` (DataFrame or path to ground_truth.csv).
    ``population``: the same from ``n_mc`` Monte Carlo draws of the generative model.
    ``population_no_stenosis``: population AUC of E[p | age, sex, true grade, symptom months]
    (stenosis severity integrated out) — an upper bound for any model without the MRI.
    ``population_clinical``: population AUC of E[p | age, sex, symptom months] (severity and
    grade integrated out) — the ceiling of the clinical columns alone (no images, no X-ray grade).
    """
    gt = pd.read_csv(ground_truth) if isinstance(ground_truth, (str, os.PathLike)) else ground_truth
    _, eff = outcome_effects(regime)
    rng = _rng(seed, 2**31 - 2)
    lat = _sample_latents(rng, int(n_mc))
    months = _months_mc(seed, int(n_mc))
    probs = outcome_probabilities(lat["severity"], lat["grade"], lat["age"], lat["female"], months, effects=eff)
    y = (rng.random(n_mc) < probs["zcq_success"]).astype(int)
    qb = np.where(y == 1, Q_BACK[1], Q_BACK[0])
    ql = np.where(y == 1, Q_LEG[1], Q_LEG[0])
    ys = {"zcq_success": y, "back_improved50": (rng.random(n_mc) < qb).astype(int),
          "leg_improved50": (rng.random(n_mc) < ql).astype(int)}
    s_grid = 0.3 + 0.7 * (np.arange(64) + 0.5) / 64  # midpoint rule over U(0.3, 1)
    p_ns = sigmoid(outcome_logit(s_grid[None, :], lat["grade"][:, None], lat["age"][:, None],
                                 lat["female"][:, None], months[:, None], effects=eff)).mean(axis=1)
    pg = _grade_given_age(lat["age"])  # (N, 5)
    p_clin = sum(pg[:, k] * sigmoid(outcome_logit(s_grid[None, :], k, lat["age"][:, None], lat["female"][:, None],
                                                  months[:, None], effects=eff)).mean(axis=1) for k in range(5))
    out: dict[str, Any] = {"n_mc": int(n_mc)}
    for name, pcol in (("zcq_success", "p_zcq_success"), ("back_improved50", "p_back_improved50"),
                       ("leg_improved50", "p_leg_improved50")):
        lab = pd.to_numeric(gt[name], errors="coerce").to_numpy(float)
        out[name] = {
            "empirical": round(metrics_lib.auc(lab, gt[pcol].to_numpy(float)), 4),
            "n": int((~np.isnan(lab)).sum()), "n_positive": int(np.nansum(lab)),
            "population": round(metrics_lib.auc(ys[name], probs[name]), 4),
            # back/leg probabilities are increasing in p: the same ranks, so p's marginals serve
            "population_no_stenosis": round(metrics_lib.auc(ys[name], p_ns), 4),
            "population_clinical": round(metrics_lib.auc(ys[name], p_clin), 4),
        }
    return out


VAS_HEADS = {"back_pain_post": ("back_pain_pre", Q_BACK), "leg_pain_post": ("leg_pain_pre", Q_LEG)}
_R_IMPROVED, _R_NOT_IMPROVED = (0.52, 1.0), (-0.25, 0.45)   # the fraction r of _draw_vas_post


def vas_post_distribution(pre, p_success, q: tuple[float, float], n_nodes: int = 256):
    """The generator's post-operative VAS given the pre-operative VAS ``pre`` (mm, (N,)) and the
    true ZCQ success probability ``p_success`` ((N,)): ``(values (N, 2·n_nodes), weights)``, a
    quadrature of _draw_vas_post's mixture (improved with probability q0 + (q1 − q0)·p, then
    floor(pre·(1 − r)), r ~ U(0.52, 1); otherwise min(100, ceil(pre·(1 − r))), r ~ U(−0.25, 0.45);
    pre = 0: U{0..30})."""
    pre = np.asarray(pre, float)[:, None]
    q_imp = (q[0] + (q[1] - q[0]) * np.asarray(p_success, float))[:, None]
    u = (np.arange(n_nodes) + 0.5) / n_nodes
    r_imp = _R_IMPROVED[0] + (_R_IMPROVED[1] - _R_IMPROVED[0]) * u
    r_not = _R_NOT_IMPROVED[0] + (_R_NOT_IMPROVED[1] - _R_NOT_IMPROVED[0]) * u
    values = np.concatenate([np.floor(pre * (1.0 - r_imp)), np.minimum(100.0, np.ceil(pre * (1.0 - r_not)))], axis=1)
    weights = np.concatenate([np.broadcast_to(q_imp / n_nodes, (len(pre), n_nodes)),
                              np.broadcast_to((1.0 - q_imp) / n_nodes, (len(pre), n_nodes))], axis=1)
    zero = pre[:, 0] == 0
    if zero.any():   # post ~ U{0..30}, whatever the outcome
        k = values.shape[1]
        values[zero] = np.floor(np.arange(k) * 31.0 / k)
        weights[zero] = 1.0 / k
    return values, weights


def _mean_median(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, axis=1)
    v = np.take_along_axis(values, order, axis=1)
    cum = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    median = v[np.arange(len(v)), np.argmax(cum >= 0.5 * cum[:, -1:], axis=1)]
    return (values * weights).sum(axis=1) / weights.sum(axis=1), median


def bayes_vas(clinical: pd.DataFrame, ground_truth: pd.DataFrame, *, n_mc: int = 20_000, seed: int = 0,
              regime: str | Mapping[str, float] = "demo") -> dict:
    """Bayes-optimal accuracy of the post-operative VAS heads (mm) under the outcome ``regime``.

    The best prediction of a patient's post-operative VAS knows the true ZCQ success probability
    and the pre-operative VAS: for the mean absolute error it is the median of
    :func:`vas_post_distribution`, for R² its mean. Per head ``back_pain_post`` /
    ``leg_pain_post``: ``mae`` and ``r2`` from ``n_mc`` Monte Carlo patients of the generative
    model (population), ``mae_empirical`` / ``r2_empirical`` and ``n`` on the cohort's patients
    with both VAS values (``clinical`` = clinical.csv, ``ground_truth`` = ground_truth.csv)."""
    _, eff = outcome_effects(regime)
    rng = _rng(seed, 2**31 - 7)
    lat = _sample_latents(rng, int(n_mc))
    months = _months_mc(seed, int(n_mc))
    p_mc = outcome_probabilities(lat["severity"], lat["grade"], lat["age"], lat["female"], months,
                                 effects=eff)["zcq_success"]
    pre_mc = {"back_pain_pre": np.clip(np.rint(rng.normal(55, 20, n_mc)), 5, 100),
              "leg_pain_pre": np.clip(np.rint(rng.normal(66, 17, n_mc)), 10, 100)}
    truth = ground_truth.assign(patient_id=ground_truth["patient_id"].astype(str)).set_index("patient_id")
    table = clinical.assign(patient_id=clinical["patient_id"].astype(str))
    p_cohort = pd.to_numeric(truth["p_zcq_success"], errors="coerce").reindex(table["patient_id"]).to_numpy(float)

    def scores(y, values, weights):
        mean, median = _mean_median(values, weights)
        ss = float(((y - y.mean()) ** 2).sum())
        return (round(float(np.abs(y - median).mean()), 3),
                round(1.0 - float(((y - mean) ** 2).sum()) / ss, 4) if ss > 0 else None)

    out: dict[str, Any] = {"n_mc": int(n_mc)}
    for head, (pre_col, q) in VAS_HEADS.items():
        values, weights = vas_post_distribution(pre_mc[pre_col], p_mc, q)
        draw = np.argmax(np.cumsum(weights, axis=1) >= rng.random(n_mc)[:, None], axis=1)
        mae, r2 = scores(values[np.arange(n_mc), draw], values, weights)
        pre = pd.to_numeric(table[pre_col], errors="coerce").to_numpy(float)
        post = pd.to_numeric(table[head], errors="coerce").to_numpy(float)
        ok = np.isfinite(pre) & np.isfinite(post) & np.isfinite(p_cohort)
        emp = scores(post[ok], *vas_post_distribution(pre[ok], p_cohort[ok], q)) if ok.sum() > 1 else (None, None)
        out[head] = {"mae": mae, "r2": r2, "mae_empirical": emp[0], "r2_empirical": emp[1], "n": int(ok.sum())}
    return out


# ----------------------------------------------------------------------------- geometry


@dataclass
class Anatomy:
    """Sagittal spine model in mm: u = inferior (+), v = posterior (+), x = lateral offset.

    Bodies T12, L1..L5 (index 0..5), discs T12L1, L1L2..L5S1 (index 0..5; LEVELS = 1..5).
    """
    body_c: np.ndarray  # (6, 2)
    body_t: np.ndarray  # (6,) axis angle rad (0 = vertical, + = going posterior downwards)
    body_hh: np.ndarray  # (6,) half height
    body_hd: np.ndarray  # (6,) half depth (AP)
    body_hw: np.ndarray  # (6,) half width (lateral)
    disc_c: np.ndarray  # (6, 2)
    disc_t: np.ndarray
    disc_hh: np.ndarray
    disc_hd: np.ndarray
    disc_grade: np.ndarray  # (6,) int
    sacrum: np.ndarray  # (4, 2) polygon
    sacrum_t: float
    canal_gap: float
    canal_depth: float
    canal_hw: float
    stenosis: list = field(default_factory=list)  # [(disc index, severity)]
    ant_skin: float = -140.0
    post_skin: float = 90.0
    fat: float = 15.0

    def n(self, t):
        return np.array([-np.sin(t), np.cos(t)])

    def tvec(self, t):
        return np.array([np.cos(t), np.sin(t)])

    def canal_centre(self, j: int) -> np.ndarray:
        """(u, v) of the canal centre behind disc j."""
        t = self.disc_t[j]
        return self.disc_c[j] + (self.disc_hd[j] + self.canal_gap + self.canal_depth / 2) * self.n(t)


def _make_anatomy(rng: np.random.Generator, truth: dict) -> Anatomy:
    f = rng.uniform(0.9, 1.1)  # patient size
    lord = rng.uniform(0.6, 1.3)
    hh = np.array([23, 24, 25, 26, 26, 25], float) * f / 2
    hd = np.array([30, 32, 34, 36, 37, 38], float) * f / 2
    hw = np.array([19, 20, 21, 22, 24, 25], float) * f
    ang = np.deg2rad(np.array([-16, -12, -7, -1, 6, 14], float) * lord + rng.normal(0, 1.5, 6))
    sac_t = np.deg2rad(38 * lord + rng.normal(0, 3))
    grades = np.array([0] + [truth[f"grade_{lv}"] for lv in LEVELS])
    grades[0] = max(0, grades[1] - 1)
    d_h = np.array([6, 8, 9, 10, 11, 10], float) * f * (1 - DISC_HEIGHT_LOSS_PER_GRADE * grades) / 2
    p = np.zeros(2)
    bc, dc, dt = np.zeros((6, 2)), np.zeros((6, 2)), np.zeros(6)
    for k in range(6):
        t = np.array([np.cos(ang[k]), np.sin(ang[k])])
        bc[k] = p + hh[k] * t
        p = p + 2 * hh[k] * t
        dt[k] = 0.5 * (ang[k] + (ang[k + 1] if k < 5 else sac_t))
        td = np.array([np.cos(dt[k]), np.sin(dt[k])])
        dc[k] = p + d_h[k] * td
        p = p + 2 * d_h[k] * td
    ts, ns = np.array([np.cos(sac_t), np.sin(sac_t)]), np.array([-np.sin(sac_t), np.cos(sac_t)])
    sd = 40 * f / 2
    sac = np.array([p - sd * ns, p + sd * ns, p + 60 * f * ts + 0.2 * sd * ns, p + 60 * f * ts - 0.6 * sd * ns])
    origin = 0.5 * (bc[1] + dc[5])
    d_hd = np.array([0.5 * (hd[k] + (hd[k + 1] if k < 5 else hd[5])) for k in range(6)])
    an = Anatomy(body_c=bc - origin, body_t=ang, body_hh=hh, body_hd=hd, body_hw=hw,
                 disc_c=dc - origin, disc_t=dt, disc_hh=d_h, disc_hd=d_hd, disc_grade=grades,
                 sacrum=sac - origin, sacrum_t=sac_t, canal_gap=1.5 * f,
                 canal_depth=rng.uniform(14, 18) * f, canal_hw=rng.uniform(7, 9) * f,
                 ant_skin=-rng.uniform(110, 150), post_skin=rng.uniform(75, 100), fat=rng.uniform(8, 25))
    an.stenosis.append((LEVELS.index(truth["stenosis_level"]) + 1, float(truth["stenosis_severity"])))
    if truth["stenosis_level_2"]:
        an.stenosis.append((LEVELS.index(truth["stenosis_level_2"]) + 1, float(truth["stenosis_severity_2"])))
    return an


# Shapes: ("r", centre(2), angle, half_h, half_w, radius) rounded rectangle along the axis
# (cos a, sin a); ("p", pts (k, 2)) convex polygon; ("e", centre, angle, half_h, half_w) ellipse.


def _sdf(shape, U, V):
    kind = shape[0]
    if kind == "r":
        _, c, t, h, w, r = shape
        r = min(r, h, w)
        du, dv = U - c[0], V - c[1]
        ct, st = np.cos(t), np.sin(t)
        a, b = du * ct + dv * st, -du * st + dv * ct
        qa, qb = np.abs(a) - (h - r), np.abs(b) - (w - r)
        return np.hypot(np.maximum(qa, 0), np.maximum(qb, 0)) + np.minimum(np.maximum(qa, qb), 0) - r
    if kind == "e":
        _, c, t, h, w = shape
        du, dv = U - c[0], V - c[1]
        ct, st = np.cos(t), np.sin(t)
        a, b = (du * ct + dv * st) / h, (-du * st + dv * ct) / w
        return (np.sqrt(a * a + b * b) - 1.0) * min(h, w)
    pts = np.asarray(shape[1], float)
    area = np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area < 0:
        pts = pts[::-1]
    d = None
    for i in range(len(pts)):
        p, q = pts[i], pts[(i + 1) % len(pts)]
        e = q - p
        nrm = np.array([e[1], -e[0]]) / np.hypot(*e)
        di = (U - p[0]) * nrm[0] + (V - p[1]) * nrm[1]
        d = di if d is None else np.maximum(d, di)
    return d


def _bound(shape) -> tuple[np.ndarray, float]:
    if shape[0] in ("r", "e"):
        return np.asarray(shape[1], float), float(np.hypot(shape[3], shape[4]))
    pts = np.asarray(shape[1], float)
    c = pts.mean(axis=0)
    return c, float(np.max(np.hypot(*(pts - c).T)))


class _Canvas:
    """Points (U, V) in anatomy mm: a 2D grid with a linear (u, v) → (row, col) map, or 1D."""

    def __init__(self, U, V, uv_to_rc=None, edge=1.0):
        self.U, self.V, self.uv_to_rc, self.edge = U.astype(np.float32), V.astype(np.float32), uv_to_rc, edge

    def mask(self, shape, edge=None, grow=0.0):
        """(block, soft mask in [0, 1]) of a shape; block indexes U/V. None if off-canvas."""
        e = self.edge if edge is None else edge
        if self.uv_to_rc is None or self.U.ndim == 1:
            blk = (slice(None),) * self.U.ndim
        else:
            c, r = _bound(shape)
            r += 2 * e + grow
            corners = np.array([[c[0] + a * r, c[1] + b * r] for a in (-1, 1) for b in (-1, 1)])
            rc = np.array([self.uv_to_rc(*p) for p in corners])
            r0, c0 = np.floor(rc.min(axis=0)).astype(int)
            r1, c1 = np.ceil(rc.max(axis=0)).astype(int) + 1
            H, W = self.U.shape
            r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, H), min(c1, W)
            if r0 >= r1 or c0 >= c1:
                return None, None
            blk = (slice(r0, r1), slice(c0, c1))
        d = _sdf(shape, self.U[blk], self.V[blk]) - grow
        return blk, np.clip(0.5 - d / e, 0.0, 1.0).astype(np.float32)


def _endplate_shapes(an: Anatomy, j: int):
    """Sclerosis bands and osteophyte triangles around disc j (1..5) for its grade."""
    g = int(an.disc_grade[j])
    shapes_scl, shapes_ost = [], []
    if g <= 0:
        return shapes_scl, shapes_ost
    bw = 1.5 + 0.7 * g
    k = j  # body above disc j is body j (T12=0 … L5=5); disc j sits below body j
    t = an.body_t[k]
    tv, nv = an.tvec(t), an.n(t)
    shapes_scl.append(("r", an.body_c[k] + (an.body_hh[k] - bw / 2) * tv, t, bw / 2, an.body_hd[k] - 1.0, 0.5))
    if k + 1 <= 5:
        t2 = an.body_t[k + 1]
        shapes_scl.append(("r", an.body_c[k + 1] - (an.body_hh[k + 1] - bw / 2) * an.tvec(t2), t2, bw / 2,
                           an.body_hd[k + 1] - 1.0, 0.5))
    L = OSTEOPHYTE_MM[g]
    if L > 0:
        corners = []  # (corner point, axis vec pointing into the disc, anterior/posterior normal, size)
        for side, size in ((-1, L), (1, 0.5 * L)):
            corners.append((an.body_c[k] + an.body_hh[k] * tv + side * an.body_hd[k] * nv, tv, side * nv, size))
            if k + 1 <= 5:
                t2 = an.body_t[k + 1]
                tv2, nv2 = an.tvec(t2), an.n(t2)
                corners.append((an.body_c[k + 1] - an.body_hh[k + 1] * tv2 + side * an.body_hd[k + 1] * nv2,
                                -tv2, side * nv2, size))
        for p, into, out, sz in corners:
            shapes_ost.append(("p", [p - sz * into - 0.8 * out, p - 0.8 * out, p + 0.7 * sz * out + 0.5 * sz * into]))
    return shapes_scl, shapes_ost


def _canal_shapes(an: Anatomy):
    """Canal segments (rectangles posterior to bodies and discs) and stenosis blocks."""
    canal, blocks = [], []
    cd = an.canal_depth
    for k in range(6):
        t = an.body_t[k]
        canal.append(("r", an.body_c[k] + (an.body_hd[k] + an.canal_gap + cd / 2) * an.n(t), t,
                      an.body_hh[k] + 1.5, cd / 2, 1.0))
        t = an.disc_t[k]
        canal.append(("r", an.canal_centre(k), t, an.disc_hh[k] + 2.5, cd / 2, 1.0))
    ts, ns = an.tvec(an.sacrum_t), an.n(an.sacrum_t)
    top_post = an.sacrum[1]
    canal.append(("r", top_post + 12 * ts + (an.canal_gap + 0.3 * cd) * ns, an.sacrum_t, 14.0, 0.3 * cd, 1.0))
    for j, s in an.stenosis:
        a = STENOSIS_NARROWING * s * cd / 2
        if a <= 0.05:
            continue
        t, nv = an.disc_t[j], an.n(an.disc_t[j])
        hh = an.disc_hh[j] + 3.0 + 3.0 * s
        base = an.disc_c[j] + (an.disc_hd[j] + an.canal_gap) * nv
        blocks.append(("r", base + (a / 2 - 0.5) * nv, t, hh, a / 2 + 0.5, a / 2 + 0.5))
        blocks.append(("r", base + (cd - a / 2 + 0.5) * nv, t, hh, a / 2 + 0.5, a / 2 + 0.5))
    return canal, blocks


def _post_element_shapes(an: Anatomy):
    out = []
    for k in range(6):
        t = an.body_t[k]
        c = an.body_c[k] + (an.body_hd[k] + an.canal_gap + an.canal_depth + 13) * an.n(t) + 0.3 * an.body_hh[k] * an.tvec(t)
        out.append(("r", c, t + 0.15, 0.7 * an.body_hh[k], 13.0, 4.0))
    return out


def _interp_matrix(n_out: int, n_ctrl: int) -> np.ndarray:
    """(n_out, n_ctrl) linear-interpolation weights from n_ctrl control points spanning n_out."""
    pos = np.linspace(0, n_ctrl - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_ctrl - 2)
    w = np.zeros((n_out, n_ctrl), np.float32)
    w[np.arange(n_out), lo] = 1 - (pos - lo)
    w[np.arange(n_out), lo + 1] = pos - lo
    return w


def _smooth_field(rng, shape, n_ctrl=5):
    """Smooth random field (bilinear from an n_ctrl grid of N(0, 1)) of shape (H, W) or (N,)."""
    shape = tuple(shape)
    if len(shape) == 1:
        return _interp_matrix(shape[0], n_ctrl) @ rng.normal(0.0, 1.0, n_ctrl).astype(np.float32)
    ctrl = rng.normal(0.0, 1.0, (n_ctrl, n_ctrl)).astype(np.float32)
    a = _interp_matrix(shape[0], n_ctrl) @ ctrl  # (H, n_ctrl)
    b = _interp_matrix(shape[1], n_ctrl)  # (W, n_ctrl)
    return sum(a[:, k, None] * b[None, :, k] for k in range(n_ctrl))  # no BLAS threads for tiny ranks


# ----------------------------------------------------------------------------- X-ray rendering


@dataclass
class _XrayGeom:
    rows: int
    cols: int
    spacing: float  # mm / pixel (anatomy scale)
    angle: float  # rad
    shift: np.ndarray  # (2,) mm, image-centre offset of the anatomy origin

    def rc_to_uv(self, r, c):
        py = (r - (self.rows - 1) / 2) * self.spacing - self.shift[0]
        px = (c - (self.cols - 1) / 2) * self.spacing - self.shift[1]
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return ca * py + sa * px, -sa * py + ca * px

    def uv_to_rc(self, u, v):
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        py, px = ca * u - sa * v + self.shift[0], sa * u + ca * v + self.shift[1]
        return py / self.spacing + (self.rows - 1) / 2, px / self.spacing + (self.cols - 1) / 2


def _render_xray_lateral(rng, an: Anatomy, geom: _XrayGeom) -> np.ndarray:
    """Attenuation map (rows, cols) float32 of a lateral projection (higher = more bone)."""
    R, C = np.meshgrid(np.arange(geom.rows, dtype=np.float32), np.arange(geom.cols, dtype=np.float32), indexing="ij")
    U, V = geom.rc_to_uv(R, C)
    cv = _Canvas(U, V, geom.uv_to_rc, edge=max(0.6, geom.spacing))
    A = np.zeros((geom.rows, geom.cols), np.float32)
    # soft tissue: torso between skins, thicker anteriorly, smooth texture
    torso = np.clip(0.5 - (an.ant_skin - V) / 3, 0, 1) * np.clip(0.5 - (V - an.post_skin) / 3, 0, 1)
    A += torso * (1.0 + 0.15 * _smooth_field(rng, A.shape) - 0.002 * V)

    def add(shape, val, edge=None, grow=0.0):
        blk, m = cv.mask(shape, edge, grow)
        if blk is not None:
            A[blk] += val * m

    for _ in range(int(rng.integers(2, 6))):
        c = np.array([rng.uniform(-90, 90), rng.uniform(an.ant_skin + 20, -30)])
        add(("e", c, rng.uniform(0, np.pi), rng.uniform(6, 18), rng.uniform(5, 12)), -0.25)
    il = np.array([an.disc_c[5][0] + rng.uniform(-5, 15), an.disc_c[5][1] + rng.uniform(15, 40)])
    add(("e", il, 0.3, 45.0, 35.0), 0.25, edge=8.0)  # iliac wings, blurry
    for k in range(6):
        add(("r", an.disc_c[k], an.disc_t[k], an.disc_hh[k] + 1.0, an.disc_hd[k] - 0.5, 2.0), 0.05)
    for k in range(6):
        body = ("r", an.body_c[k], an.body_t[k], an.body_hh[k], an.body_hd[k], 2.5)
        add(body, 0.85)
        add(body, 0.35)
        add(body, -0.35, grow=-1.6)  # cortical rim = body − eroded body
    add(("p", an.sacrum), 0.8)
    add(("p", an.sacrum), -0.25, grow=-1.6)
    for sh in _post_element_shapes(an):
        add(sh, 0.45, edge=1.5)
    for j in range(1, 6):
        scl, ost = _endplate_shapes(an, j)
        for sh in scl:
            add(sh, 0.1 * an.disc_grade[j])
        for sh in ost:
            add(sh, 0.9)
    return A


def _render_xray_ap(rng, an: Anatomy, rows: int, cols: int, spacing: float) -> np.ndarray:
    """Attenuation map of an AP projection (distractor): bodies as wide boxes, pedicle ovals."""
    geom = _XrayGeom(rows, cols, spacing, rng.uniform(-0.05, 0.05), rng.uniform(-8, 8, 2))
    R, C = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    U, V = geom.rc_to_uv(R, C)  # V = lateral here
    cv = _Canvas(U, V, geom.uv_to_rc, edge=max(0.6, spacing))
    A = np.clip(0.5 - (np.abs(V) - 150) / 3, 0, 1) * (1.0 + 0.15 * _smooth_field(rng, U.shape))
    for k in range(6):
        uc = an.body_c[k][0]
        for sh, val in ((("r", np.array([uc, 0.0]), 0.0, an.body_hh[k], an.body_hw[k], 4.0), 0.8),
                        (("e", np.array([uc - 3, -0.6 * an.body_hw[k]]), 0.0, 7.0, 4.5), 0.4),
                        (("e", np.array([uc - 3, 0.6 * an.body_hw[k]]), 0.0, 7.0, 4.5), 0.4)):
            blk, m = cv.mask(sh)
            if blk is not None:
                A[blk] += val * m
    return A.astype(np.float32)


def _expose(rng, A: np.ndarray, mono1: bool) -> np.ndarray:
    """Attenuation → stored 12-bit uint16 pixels (Poisson noise, log, detector gain)."""
    I0 = 3000.0 * rng.uniform(0.6, 1.6)
    heel = 1.0 + 0.1 * np.linspace(-1, 1, A.shape[0], dtype=np.float32)[:, None]
    lam = (I0 * heel * np.exp(-1.5 * A)).astype(np.float32)
    counts = np.maximum(lam + np.sqrt(lam) * rng.standard_normal(A.shape, dtype=np.float32), 0.0)  # ≈ Poisson
    L = -np.log((counts + 0.5) / 3000.0)
    stored = np.clip(np.rint(rng.uniform(-150, 150) + rng.uniform(550, 800) * L), 0, 4095)
    if mono1:
        stored = 4095 - stored
    return stored.astype(np.uint16)


# ----------------------------------------------------------------------------- MRI rendering

T2 = {"muscle": 260, "abdomen": 420, "fat": 700, "marrow": 430, "cortex": 140, "annulus": 300,
      "nucleus0": 1000, "nucleus_per_grade": -170, "csf": 1250, "post": 320, "lig": 180}
T1 = {"muscle": 380, "abdomen": 450, "fat": 900, "marrow": 680, "cortex": 160, "annulus": 330,
      "nucleus0": 380, "nucleus_per_grade": -25, "csf": 160, "post": 480, "lig": 300}


def _mri_geometry(rng, an: Anatomy, cv: _Canvas) -> dict:
    """Contrast-free tissue masks over the canvas (shared by T2 and T1 of the same geometry)."""
    shp = cv.U.shape

    def union(shapes, edge=None, grow=0.0):
        M = np.zeros(shp, np.float32)
        for sh in shapes:
            blk, m = cv.mask(sh, edge, grow)
            if blk is not None:
                M[blk] = np.maximum(M[blk], m)
        return M

    V = cv.V
    torso = np.clip(0.5 - (an.ant_skin - V) / cv.edge, 0, 1) * np.clip(0.5 - (V - an.post_skin) / cv.edge, 0, 1)
    geo = {"torso": torso, "anterior": V < 0, "tex": _smooth_field(rng, shp, 7),
           "fat": np.clip(0.5 - (an.post_skin - an.fat - V) / cv.edge, 0, 1) * torso,
           "post": union(_post_element_shapes(an), edge=max(cv.edge, 1.5))}
    # discs: annulus everywhere, nucleus inside; nucleus signal set by the level's grade
    dshapes = [("r", an.disc_c[k], an.disc_t[k], an.disc_hh[k] + 1.0, an.disc_hd[k] - 0.5, 2.0) for k in range(6)]
    geo["annulus"] = union(dshapes)
    nuc = np.zeros(shp, np.float32)
    ngrade = np.zeros(shp, np.float32)
    for k, sh in enumerate(dshapes):
        blk, m = cv.mask(("r", sh[1], sh[2], max(an.disc_hh[k] - 1.0, 0.6), sh[4] - 5.0, 1.0))
        if blk is not None:
            nuc[blk] = np.maximum(nuc[blk], m)
            ngrade[blk] = np.where(m > 0, an.disc_grade[k], ngrade[blk])
    geo["nucleus"], geo["nucleus_grade"] = nuc, ngrade
    bshapes = [("r", an.body_c[k], an.body_t[k], an.body_hh[k], an.body_hd[k], 2.5) for k in range(6)]
    bshapes.append(("p", an.sacrum))
    geo["cortex"] = union(bshapes)
    geo["marrow"] = union(bshapes, grow=-1.5)
    canal, blocks = _canal_shapes(an)
    geo["csf"] = union(canal)
    geo["lig"] = union(blocks) if blocks else None
    return geo


def _mri_classes(an: Anatomy, geo: dict, con: dict):
    """Tissue classes in painting order: (mask over canvas, lateral half-width mm, value)."""
    tex, bw = geo["tex"], float(np.mean(an.body_hw))
    soft = np.where(geo["anterior"], con["abdomen"] * (1 + 0.12 * tex), con["muscle"] * (1 + 0.05 * tex))
    classes = [(geo["torso"], 170.0, soft), (geo["fat"], 170.0, con["fat"]), (geo["post"], 12.0, con["post"]),
               (geo["annulus"], bw, con["annulus"]),
               (geo["nucleus"], bw - 5.0, con["nucleus0"] + con["nucleus_per_grade"] * geo["nucleus_grade"]),
               (geo["cortex"], bw, con["cortex"]), (geo["marrow"], bw - 1.5, con["marrow"] * (1 + 0.05 * tex)),
               (geo["csf"], an.canal_hw, con["csf"])]
    if geo["lig"] is not None:
        classes.append((geo["lig"], an.canal_hw + 1.0, con["lig"]))
    return classes


def _composite(classes, lat_x: np.ndarray, thick: float) -> np.ndarray:
    """Painter's composite of separable classes: value(x, p) over lateral positions × canvas points.

    lat_x: (A,) lateral offsets (mm) from the spine midline; thick: lateral partial-volume width
    (slice thickness for sagittal slices, pixel size in-plane). Returns (A, *canvas shape).
    """
    shp = classes[0][0].shape
    out = np.zeros((len(lat_x),) + shp, np.float32)
    ex = (slice(None),) + (None,) * len(shp)
    for mask, hw, val in classes:
        lat = np.clip((hw - np.abs(lat_x)) / thick + 0.5, 0, 1).astype(np.float32)
        a = mask[None] * lat[ex]
        out += a * (np.asarray(val, np.float32) - out)
    return out


def _mr_noise(rng, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude noise |img + n|, n ~ N(0, sigma²) (a cheap stand-in for Rician noise)."""
    return np.abs(img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma))


@dataclass
class _MriPlacement:
    x_mid: float  # LPS x of the spine midline
    y_ref: float  # LPS y of anatomy v = 0
    z_ref: float  # LPS z of anatomy u = 0

    def lps(self, u, v, lat=0.0):
        return np.array([self.x_mid + lat, self.y_ref + v, self.z_ref - u])


# ----------------------------------------------------------------------------- DICOM writing


def _uid(seed: int, *parts) -> str:
    """Deterministic UID "2.25.<128-bit int>" from (seed, parts) (generate_uid(prefix=None) is random)."""
    key = "\x1f".join(["lumbarjax-synthetic", str(seed)] + [str(p) for p in parts]).encode()
    return "2.25." + str(int.from_bytes(hashlib.sha256(key).digest()[:16], "big"))


_SOP = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1", "MR": "1.2.840.10008.5.1.4.1.1.4"}


def _dataset(phi: dict, modality: str, study_uid: str, series_uid: str, series_number: int,
             series_description: str, study_description: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = _SOP[modality]
    ds.StudyDate = phi["study_date"]
    ds.SeriesDate = phi["study_date"]
    ds.StudyTime = phi["study_time"]
    ds.AccessionNumber = phi["accession"]
    ds.Modality = modality
    ds.Manufacturer = "LUMBARJAX SYNTHETIC"
    ds.InstitutionName = phi["institution"]
    ds.ReferringPhysicianName = phi["referrer"]
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = phi["name"]
    ds.PatientID = phi["patient_id"]
    ds.PatientBirthDate = phi["birth_date"]
    ds.PatientSex = phi["sex"]
    ds.PatientAddress = phi["address"]
    ds.OtherPatientIDs = phi["mrn"]
    ds.PatientAge = f"{phi['age']:03d}Y"
    ds.BodyPartExamined = "LSPINE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = phi["accession"][-6:]
    ds.SeriesNumber = series_number
    ds.SamplesPerPixel = 1
    return ds


def _el(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian data element (value already padded to even length)."""
    if vr in ("OB", "OW", "OF", "SQ", "UT", "UN"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _txt(value, pad=b" ") -> bytes:
    b = (value if isinstance(value, str) else "\\".join(value)).encode("ascii")
    return b + pad if len(b) % 2 else b


def _ds_str(values) -> str:
    """DICOM DS strings (≤ 16 characters each)."""
    out = []
    for v in np.atleast_1d(values):
        t = f"{float(v):.6f}".rstrip("0").rstrip(".")
        if t in ("-0", ""):
            t = "0"
        out.append(t[:16])
    return "\\".join(out)


class _SeriesWriter:
    """Fast writer for the instances of one series.

    pydicom encodes the elements shared by all instances once; per instance only the varying
    elements (SOP instance UID, position, pixels, …) are encoded here with ``struct`` — ~20×
    faster than ``Dataset.save_as`` per file, with byte-identical standard Part 10 output
    (preamble, ``DICM``, file meta group, Explicit VR Little Endian dataset).
    """

    def __init__(self, static: Dataset):
        self.sop_class = str(static.SOPClassUID)
        self.static: dict[int, bytes] = {}
        for elem in static:
            buf = DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = True, False
            write_data_element(buf, elem)
            self.static[int(elem.tag)] = buf.getvalue()

    def _meta(self, sop_uid: str) -> bytes:
        body = (_el(0x00020001, "OB", b"\x00\x01") + _el(0x00020002, "UI", _txt(self.sop_class, b"\0"))
                + _el(0x00020003, "UI", _txt(sop_uid, b"\0"))
                + _el(0x00020010, "UI", _txt(str(ExplicitVRLittleEndian), b"\0"))
                + _el(0x00020012, "UI", _txt(str(pydicom.uid.PYDICOM_IMPLEMENTATION_UID), b"\0"))
                + _el(0x00020013, "SH", _txt("LUMBARJAX_SYN")))
        return b"\0" * 128 + b"DICM" + _el(0x00020000, "UL", struct.pack("<I", len(body))) + body

    def write(self, path: str, sop_uid: str, dynamic: dict[int, bytes]):
        """dynamic: tag → encoded element (see _el); overrides static elements of the same tag."""
        elems = dict(self.static)
        elems[0x00080018] = _el(0x00080018, "UI", _txt(sop_uid, b"\0"))
        elems.update(dynamic)
        with open(path, "wb") as fh:
            fh.write(self._meta(sop_uid))
            fh.write(b"".join(elems[t] for t in sorted(elems)))


def _pixel_elements(arr: np.ndarray, bits_stored: int) -> dict[int, bytes]:
    """Rows, Columns, Bits*, PixelRepresentation, PixelData (OW) of a (rows, cols) 16-bit array."""
    us = lambda t, v: _el(t, "US", struct.pack("<H", int(v)))  # noqa: E731
    data = np.ascontiguousarray(arr).astype("<" + arr.dtype.str[1:]).tobytes()
    return {0x00280010: us(0x00280010, arr.shape[0]), 0x00280011: us(0x00280011, arr.shape[1]),
            0x00280100: us(0x00280100, 16), 0x00280101: us(0x00280101, bits_stored),
            0x00280102: us(0x00280102, bits_stored - 1),
            0x00280103: us(0x00280103, 1 if arr.dtype == np.int16 else 0),
            0x7FE00010: _el(0x7FE00010, "OW", data)}


def _window(vals: np.ndarray) -> tuple[float, float]:
    """(WindowCenter, WindowWidth) from the 1st–99th percentiles (of every 3rd value)."""
    lo, hi = np.percentile(np.ravel(vals)[::3], [1, 99])
    return float(round((lo + hi) / 2, 1)), float(round(max(hi - lo, 1.0), 1))


def _phi(rng: np.random.Generator, pid: str, truth: dict) -> dict:
    female = truth["_female"]
    first = (_FIRST_F if female else _FIRST_M)[int(rng.integers(10))]
    study = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 5 * 365)))
    birth = study - _dt.timedelta(days=int(truth["_age"] * 365.25 + rng.integers(0, 360)))
    return {"patient_id": pid, "name": f"{_LAST[int(rng.integers(len(_LAST)))]}^{first}",
            "sex": "F" if female else "M", "age": int(truth["_age"]),
            "birth_date": birth.strftime("%Y%m%d"), "study_date": study.strftime("%Y%m%d"),
            "study_time": f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}00",
            "accession": f"A{int(rng.integers(10**8, 10**9))}",
            "institution": _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))],
            "referrer": _PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))],
            # the hospital's own record number (the export's PatientID is already pseudonymous)
            "mrn": f"MRN{int(rng.integers(10**7, 10**8))}",
            "address": f"{int(rng.integers(1, 200))} {_STREETS[int(rng.integers(len(_STREETS)))]}"
                       f"^{_TOWNS[int(rng.integers(len(_TOWNS)))]}"}


def _hexname(rng, n=8):
    return "".join("0123456789ABCDEF"[int(k)] for k in rng.integers(0, 16, n))


def _write_xray_study(seed, i, an, truth, phi, pdir, xray_size, files) -> dict:
    """Lateral (and maybe AP) X-ray study; returns ground-truth updates."""
    rng = _rng(seed, i, 2)
    rows, cols = xray_size
    fov = rng.uniform(235.0, 265.0)
    sp = fov / rows
    geom = _XrayGeom(rows, cols, sp, np.deg2rad(rng.uniform(-8, 8)),
                     np.array([rng.uniform(-8, 8), rng.uniform(-10, 10)]))
    modality = "DX" if rng.random() < 0.5 else "CR"
    mono1 = bool(rng.random() < 0.35)
    spacing_mode = ["pixel", "imager", "both"][int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
    slope = [1.0, 1.0, 0.5, 2.0][int(rng.integers(4))]
    intercept = [0.0, 0.0, -512.0][int(rng.integers(3))]
    study_uid = _uid(seed, i, "xray-study")
    sdir = os.path.join(pdir, f"ST{int(rng.integers(10**5, 10**6))}")
    out = {}
    views = [("LL", "L-SPINE LAT")]
    if rng.random() < 0.3:
        views.append(("AP", "L-SPINE AP"))
    for sn, (view, desc) in enumerate(views, start=1):
        if view == "LL":
            A = _render_xray_lateral(rng, an, geom)
        else:
            A = _render_xray_ap(rng, an, rows, cols, sp)
        px = _expose(rng, A, mono1)
        series_uid = _uid(seed, i, "xray-series", view)
        ds = _dataset(phi, modality, study_uid, series_uid, sn, desc, "XR LUMBAR SPINE 2 VIEWS")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ViewPosition = view
        ds.PatientOrientation = ["P", "F"] if view == "LL" else ["L", "F"]
        ds.InstanceNumber = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
        if modality == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
        if spacing_mode in ("pixel", "both"):
            ds.PixelSpacing = [round(sp, 6), round(sp, 6)]
        if spacing_mode in ("imager", "both"):
            isp = sp * 1.1 if spacing_mode == "both" else sp
            ds.ImagerPixelSpacing = [round(isp, 6), round(isp, 6)]
            if spacing_mode == "both":
                ds.EstimatedRadiographicMagnificationFactor = 1.1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
        wc, ww = _window(px[rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4].astype(float) * slope + intercept)
        ds.WindowCenter, ds.WindowWidth = wc, ww
        sedir = os.path.join(sdir, f"SE{sn:06d}")
        os.makedirs(sedir, exist_ok=True)
        path = os.path.join(sedir, "IM00001")
        _SeriesWriter(ds).write(path, _uid(seed, i, "xray-sop", view), _pixel_elements(px, 12))
        files.append(path)
        if view == "LL":
            out["xray_series_uid"] = series_uid
    out["xray_spacing_mm"] = round(sp, 6)
    for j, lv in enumerate(LEVELS, start=1):
        r, c = geom.uv_to_rc(*an.disc_c[j])
        out[f"xray_disc_{lv}_row"], out[f"xray_disc_{lv}_col"] = round(float(r), 3), round(float(c), 3)
    for name, (ant, post) in zip(XRAY_ENDPLATES, _endplate_corners(an)):
        for corner, uv in (("ant", ant), ("post", post)):
            r, c = geom.uv_to_rc(*uv)
            out[f"xray_ep_{name}_{corner}_row"] = round(float(r), 3)
            out[f"xray_ep_{name}_{corner}_col"] = round(float(c), 3)
    return out


def _endplate_corners(an: Anatomy) -> list[tuple[np.ndarray, np.ndarray]]:
    """(anterior, posterior) (u, v) corners of the endplates XRAY_ENDPLATES; +n(t) is posterior."""
    out = []
    for k in range(1, 6):  # bodies L1..L5
        tv, nv = an.tvec(an.body_t[k]), an.n(an.body_t[k])
        for sign in (-1.0, 1.0):  # upper, lower endplate
            mid = an.body_c[k] + sign * an.body_hh[k] * tv
            out.append((mid - an.body_hd[k] * nv, mid + an.body_hd[k] * nv))
    out.append((an.sacrum[0], an.sacrum[1]))  # S1 upper endplate: anterior, posterior corner
    return out


def _write_mri_study(seed, i, an, truth, phi, pdir, mri_size, files) -> dict:
    rng = _rng(seed, i, 3)
    H, W = mri_size
    fov = rng.uniform(230.0, 250.0)
    sp = fov / H
    place = _MriPlacement(x_mid=rng.uniform(-6, 6), y_ref=rng.uniform(-20, 20), z_ref=rng.uniform(-60, 60))
    # FOV: anatomy origin near the image centre (rows), spine 15 mm anterior of centre (cols)
    u_top = -(H - 1) / 2 * sp + rng.uniform(-10, 10)
    v_left = -(W - 1) / 2 * sp + 15.0 + rng.uniform(-10, 10)
    y0, z0 = place.y_ref + v_left, place.z_ref - u_top  # LPS of pixel (0, 0)
    study_uid = _uid(seed, i, "mri-study")
    frame_uid = _uid(seed, i, "mri-frame")
    sdir = os.path.join(pdir, f"ST{int(rng.integers(10**5, 10**6))}")
    gain = rng.uniform(0.8, 1.5)
    signed = bool(rng.random() < 0.4)
    dtype = np.int16 if signed else np.uint16
    series_numbers = list(rng.permutation(np.arange(1, 9)))
    out: dict[str, Any] = {}

    def write_series(tag, desc, image_type, vols, iops, ipps, spacing, thick, spacing_between, reverse):
        sn = int(series_numbers.pop())
        series_uid = _uid(seed, i, "mri-series", tag)
        ds = _dataset(phi, "MR", study_uid, series_uid, sn, desc, "MRI LUMBAR SPINE W/O CONTRAST")
        ds.FrameOfReferenceUID = frame_uid
        ds.ImageType = image_type
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = 1.5
        ds.RepetitionTime = 3500.0 if "T1" not in desc else 500.0
        ds.EchoTime = 100.0 if "T1" not in desc else 12.0
        ds.SliceThickness = thick
        if spacing_between:
            ds.SpacingBetweenSlices = spacing_between
        ds.PatientPosition = "HFS"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
        sedir = os.path.join(sdir, f"SE{sn:06d}")
        os.makedirs(sedir, exist_ok=True)
        writer = _SeriesWriter(ds)
        n = len(vols)
        names = set()
        imgs = np.clip(np.rint(np.asarray(vols) * gain), 0, 4095).astype(dtype)
        for k in range(n):
            img = imgs[k]
            normal = np.cross(iops[k][:3], iops[k][3:])
            wc, ww = _window(img)
            dyn = {
                0x00200013: _el(0x00200013, "IS", _txt(str((n - k) if reverse else (k + 1)))),
                0x00200032: _el(0x00200032, "DS", _txt(_ds_str(np.round(ipps[k], 4)))),
                0x00200037: _el(0x00200037, "DS", _txt(_ds_str(iops[k]))),
                0x00201041: _el(0x00201041, "DS", _txt(_ds_str(np.dot(normal, ipps[k])))),
                0x00280030: _el(0x00280030, "DS", _txt(_ds_str([spacing[k], spacing[k]]))),
                0x00281050: _el(0x00281050, "DS", _txt(_ds_str(wc))),
                0x00281051: _el(0x00281051, "DS", _txt(_ds_str(ww))),
                **_pixel_elements(img, 16 if signed else 12),
            }
            name = _hexname(rng)
            while name in names:
                name = _hexname(rng)
            names.add(name)
            path = os.path.join(sedir, name)
            writer.write(path, _uid(seed, i, "mri-sop", tag, k), dyn)
            files.append(path)
        return series_uid

    # --- sagittal T2 (and T1): shared in-plane canvas
    rr, cc = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32), indexing="ij")
    U, V = u_top + rr * sp, v_left + cc * sp
    cv = _Canvas(U, V, lambda u, v: ((u - u_top) / sp, (v - v_left) / sp), edge=sp)
    n_sl = int(rng.integers(12, 17))
    gap = [4.0, 4.4][int(rng.integers(2))]
    x_c = place.x_mid + rng.uniform(-3, 3)
    xs = x_c + (np.arange(n_sl) - (n_sl - 1) / 2) * gap
    bias = 1.0 + 0.1 * _smooth_field(rng, (H, W), 4)
    geo = _mri_geometry(rng, an, cv)
    vol = _composite(_mri_classes(an, geo, T2), xs - place.x_mid, 4.0) * bias
    vol = _mr_noise(rng, vol, 22.0)
    iop_sag = np.array([0, 1, 0, 0, 0, -1], float)
    ipps = [np.array([x, y0, z0]) for x in xs]
    desc = ["T2 SAG", "t2_tse_sag", "Sag T2 FSE", "T2W_TSE_SAG"][int(rng.integers(4))]
    out["t2_series_uid"] = write_series("t2sag", desc, ["ORIGINAL", "PRIMARY", "M", "ND"], vol,
                                        [iop_sag] * n_sl, ipps, [sp] * n_sl, 4.0, gap, bool(rng.random() < 0.5))
    if rng.random() < 0.4:
        n1 = 12
        xs1 = place.x_mid + rng.uniform(-2, 2) + (np.arange(n1) - (n1 - 1) / 2) * 4.4
        v1 = _composite(_mri_classes(an, geo, T1), xs1 - place.x_mid, 4.0) * bias
        v1 = _mr_noise(rng, v1, 22.0)
        write_series("t1sag", "T1 SAG", ["ORIGINAL", "PRIMARY", "M", "ND"], v1, [iop_sag] * n1,
                     [np.array([x, y0, z0]) for x in xs1], [sp] * n1, 4.0, 4.4, bool(rng.random() < 0.5))
    # --- axial T2 through L3L4..L5S1: rows → +y (posterior), cols → +x (left)
    Ha = max(32, (2 * H) // 3)
    spa = 200.0 / Ha
    n_ax = 10
    zc = place.lps(*an.disc_c[4])[2]
    zs = zc + (np.arange(n_ax) - (n_ax - 1) / 2) * 4.0 * (1 if rng.random() < 0.5 else -1)
    xa0 = place.x_mid - (Ha - 1) / 2 * spa
    ya0 = place.y_ref - 0.45 * Ha * spa
    ys = ya0 + np.arange(Ha) * spa
    lat_a = xa0 + np.arange(Ha) * spa - place.x_mid
    Zg, Yg = np.meshgrid(zs, ys, indexing="ij")  # (n_ax, Ha): every slice's column of y
    cva = _Canvas(place.z_ref - Zg, Yg - place.y_ref, edge=spa)
    ax = _composite(_mri_classes(an, _mri_geometry(rng, an, cva), T2), lat_a, spa).transpose(1, 2, 0)  # (z, rows=y, cols=x)
    ax = _mr_noise(rng, ax, 22.0)
    iop_ax = np.array([1, 0, 0, 0, 1, 0], float)
    write_series("t2ax", ["T2 AX", "t2_tse_tra"][int(rng.integers(2))], ["ORIGINAL", "PRIMARY", "M", "ND"],
                 ax, [iop_ax] * n_ax, [np.array([xa0, ya0, z]) for z in zs], [spa] * n_ax, 4.0, 4.0, False)
    # --- 3-plane localizer: sagittal, coronal, axial, 10 mm thick, coarse
    Hl = max(32, H // 2)
    spl = 300.0 / Hl
    a0 = -(Hl - 1) / 2 * spl
    g1 = a0 + np.arange(Hl) * spl
    Ug, Vg = np.meshgrid(g1, g1, indexing="ij")
    cvl = _Canvas(Ug, Vg, lambda u, v: ((u - a0) / spl, (v - a0) / spl), edge=spl)
    sag = _composite(_mri_classes(an, _mri_geometry(rng, an, cvl), T2), np.array([0.0]), 10.0)[0]
    yc = place.y_ref  # coronal through the vertebral bodies
    cor = _composite(_mri_classes(an, _mri_geometry(rng, an, _Canvas(g1, np.zeros(Hl), edge=spl)), T2), g1, spl).T
    axl = _composite(_mri_classes(an, _mri_geometry(rng, an, _Canvas(np.zeros(Hl), g1, edge=spl)), T2), g1, spl).T
    loc = _mr_noise(rng, np.stack([sag, cor, axl]), 22.0)
    iops = [iop_sag, np.array([1, 0, 0, 0, 0, -1], float), iop_ax]
    ipps = [np.array([place.x_mid, place.y_ref + a0, place.z_ref - a0]),
            np.array([place.x_mid + a0, yc, place.z_ref - a0]),
            np.array([place.x_mid + a0, place.y_ref + a0, place.z_ref])]
    write_series("loc", ["Localizer", "3-plane loc", "SURVEY"][int(rng.integers(3))],
                 ["ORIGINAL", "PRIMARY", "LOCALIZER"], loc, iops, ipps, [spl] * 3, 10.0, None, False)
    for j, lv in enumerate(LEVELS, start=1):
        x, y, z = place.lps(*an.disc_c[j])
        out[f"disc_{lv}_x_mm"], out[f"disc_{lv}_y_mm"], out[f"disc_{lv}_z_mm"] = (
            round(float(x), 3), round(float(y), 3), round(float(z), 3))
    j = LEVELS.index(truth["stenosis_level"]) + 1
    x, y, z = place.lps(*an.canal_centre(j))
    out["stenosis_x_mm"], out["stenosis_y_mm"], out["stenosis_z_mm"] = round(float(x), 3), round(float(y), 3), round(float(z), 3)
    return out


_README = """Demo export written by lumbarjax.synthetic (synthetic, no real patient).
Folders and file names are meaningless on purpose, like a hospital PACS export.
"""


def _write_dicomdir(path: str, seed: int):
    """A DICOMDIR-like DICOM file without pixel data (an indexer must skip it)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, "dicomdir")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.FileSetID = "LUMBARJAX"
    ds.save_as(path, enforce_file_format=True)


def _write_thumbnail(rng, path: str):
    """A small JPEG thumbnail (or JPEG-like bytes when Pillow is missing)."""
    img = (rng.random((32, 24)) * 255).astype(np.uint8)
    try:
        from PIL import Image
        Image.fromarray(img).save(path, format="JPEG", quality=70)
    except ImportError:  # pragma: no cover
        with open(path, "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0" + img.tobytes() + b"\xff\xd9")


# ----------------------------------------------------------------------------- main entry


def _dir_bytes(root: str) -> int:
    total = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            total += os.path.getsize(os.path.join(d, f))
    return total


SYNTHETIC_TAG = ".lumbarjax-synthetic.json"


def is_synthetic_incomplete(folder: str | os.PathLike) -> bool:
    """True for a folder that :func:`make_cohort` / :func:`make_pretraining_cohort` began to
    write but did not finish (tag present, completion marker absent): rewrite it. A folder
    without the tag (a hospital's export) is never called incomplete."""
    folder = os.fspath(folder)
    return os.path.exists(os.path.join(folder, SYNTHETIC_TAG)) and not atomic.is_complete(folder)


def _write_patient_studies(job) -> tuple[dict, list[str]]:
    """One patient's X-ray and MRI studies (``job`` as :func:`make_cohort` builds it): the
    ground-truth updates and the files written, in writing order. Depends on nothing but
    ``job`` (each study draws from its own ``_rng(seed, i, …)``), so patients can be written
    in any process."""
    seed, i, an, tr, phi, pdir, xray_size, mri_size = job
    tr, updates, files = dict(tr), {}, []
    if tr["has_xray"]:
        updates.update(_write_xray_study(seed, i, an, tr, phi, pdir, xray_size, files))
        tr.update(updates)
    if tr["has_mri"]:
        updates.update(_write_mri_study(seed, i, an, tr, phi, pdir, mri_size, files))
    return updates, files


MIN_PATIENTS_FOR_WORKERS = 24   # below this, starting worker processes costs more than it saves


def make_cohort(out_dir: str | os.PathLike, n_patients: int = 160, seed: int = 0, *,
                xray_size: Sequence[int] = (384, 320), mri_size: Sequence[int] = (176, 176),
                edge_cases: bool = True, overwrite: bool = False, n_mc: int = 200_000,
                id_prefix: str = "LJ", regime: str | Mapping[str, float] = "demo",
                mark_complete: bool = True, num_workers: int = 0) -> dict:
    """Write a complete synthetic cohort to ``out_dir`` (see module docstring); return a summary.

    Args:
      out_dir: cohort folder (created). Refuses to write into an existing ``export/`` unless
        ``overwrite`` (which deletes the previous export and tables).
      n_patients: number of simulated patients (≥ 8 with edge cases), ids ``LJ0001…``.
      seed: everything (pixels, tables, UIDs, dates, folder names) is a function of it.
      xray_size: (rows, cols) of the X-rays; field of view 235–265 mm along the rows.
      mri_size: (rows, cols) of the sagittal T2/T1 slices (FOV 230–250 mm); the axial T2 is
        2/3 and the localizer 1/2 of it (at least 32).
      edge_cases: include the EDGE_CASES_PER_160 patients.
      n_mc: Monte Carlo draws for the population Bayes AUC.
      id_prefix: two letters before the patient number (``LJ0001``); another prefix keeps a
        second cohort's ids (e.g. a pretraining cohort, ``PT0001``) apart from the demo's.
      regime: effect sizes of the outcome model, a name of OUTCOME_REGIMES or a dict over
        EFFECT_KEYS (:func:`outcome_effects`). Only the outcomes depend on it (ZCQ success, the
        post-operative ZCQ answers and VAS): the images, the reader's X-ray grade and the
        pre-operative scores are the demo regime's, which is the cohort of earlier versions,
        byte for byte.
      mark_complete: write the completion marker (``lumbarjax.atomic.MARKER``) last. Until it
        exists the folder is an interrupted write (:func:`is_synthetic_incomplete`): the
        first thing written is the tag file ``SYNTHETIC_TAG``, and every table goes through a
        temporary name, so a crash leaves no half-written CSV under its final name.
      num_workers: processes that write the patients' studies (0 = this process); the folder
        is byte-identical for any value.

    Returns a dict: paths (``out_dir, export_dir, clinical_csv, ground_truth_csv,
    summary_json``), counts, edge cases (name → patient ids), ``bayes_auc``, ``seconds``,
    ``bytes``. No PHI is returned or written outside the DICOM headers.
    """
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    xray_size = tuple(int(a) for a in xray_size)
    mri_size = tuple(int(a) for a in mri_size)
    if len(xray_size) != 2 or min(xray_size) < 64:
        raise ConfigError(f"make_cohort: xray_size must be (rows, cols) ≥ 64, got {xray_size}")
    if len(mri_size) != 2 or min(mri_size) < 48:
        raise ConfigError(f"make_cohort: mri_size must be (rows, cols) ≥ 48, got {mri_size}")
    export = os.path.join(out_dir, "export")
    if os.path.exists(export) and not overwrite:
        raise ConfigError(f"make_cohort: {export} already exists; pass overwrite=True to replace it")
    os.makedirs(out_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # from now on the folder is incomplete
        os.remove(os.path.join(out_dir, atomic.MARKER))
    atomic.write_json(os.path.join(out_dir, SYNTHETIC_TAG), {"writer": "lumbarjax.synthetic"})
    if os.path.exists(export):
        shutil.rmtree(export)
    os.makedirs(export, exist_ok=True)
    regime_name, effects = outcome_effects(regime)
    clinical, truth_df = sample_patients(n_patients, seed, edge_cases=edge_cases, regime=effects)
    if id_prefix != "LJ":
        if not (isinstance(id_prefix, str) and len(id_prefix) == 2 and id_prefix.isalpha()):
            raise ConfigError(f"make_cohort: id_prefix must be two letters, got {id_prefix!r}")
        for df in (clinical, truth_df):
            df["patient_id"] = id_prefix + df["patient_id"].str[2:]
    truths = truth_df.to_dict("records")
    files: list[str] = []
    non_dicom: dict[str, int] = {"README.txt": 1, "DICOMDIR": 1, "thumbnail_jpg": 0, "empty_file": 0}
    meta_rng = _rng(seed, 2**31 - 3)
    with open(os.path.join(export, "README.txt"), "w") as fh:
        fh.write(_README)
    _write_dicomdir(os.path.join(export, "DICOMDIR"), seed)
    empty_done = False
    jobs, folders = [], []   # per imaged patient: the studies' arguments; (row, its folder rng, folder)
    for i, tr in enumerate(truths):
        for c in GROUND_TRUTH_COLUMNS:
            tr.setdefault(c, "" if c.endswith("_uid") else float("nan"))
        if not tr["has_xray"] and not tr["has_mri"]:
            continue
        pid = tr["patient_id"]
        an = _make_anatomy(_rng(seed, i, 1), tr)
        phi = _phi(_rng(seed, i, 4), pid, tr)
        prng = _rng(seed, i, 5)
        pdir = os.path.join(export, _hexname(prng), _hexname(prng, 6))
        jobs.append((seed, i, an, tr, phi, pdir, xray_size, mri_size))
        folders.append((tr, prng, pdir))
    written_by = process_map(_write_patient_studies, jobs, num_workers, min_jobs=MIN_PATIENTS_FOR_WORKERS,
                             chunksize=4)
    for (tr, prng, pdir), (updates, written) in zip(folders, written_by):
        tr.update(updates)
        files.extend(written)
        if meta_rng.random() < 0.15:
            _write_thumbnail(meta_rng, os.path.join(pdir, f"thumb_{_hexname(prng, 4)}.jpg"))
            non_dicom["thumbnail_jpg"] += 1
        if not empty_done and tr["has_mri"]:  # an aborted transfer: zero-byte file in a series folder
            open(os.path.join(os.path.dirname(files[-1]), "IM_TMP0"), "wb").close()
            non_dicom["empty_file"] += 1
            empty_done = True
    truth = pd.DataFrame(truths)[GROUND_TRUTH_COLUMNS]
    clinical_csv = os.path.join(out_dir, "clinical.csv")
    gt_csv = os.path.join(out_dir, "ground_truth.csv")
    atomic.write_csv(clinical, clinical_csv)
    atomic.write_csv(truth, gt_csv)
    aucs = bayes_auc(truth, n_mc=n_mc, seed=seed, regime=effects)
    edges = {k: sorted(truth.loc[truth["edge_case"] == k, "patient_id"].tolist()) for k in EDGE_CASES_PER_160}
    counts = {
        "n_patients": int(n_patients), "n_clinical_rows": int(len(clinical)),
        "n_with_xray": int(truth["has_xray"].sum()), "n_with_mri": int(truth["has_mri"].sum()),
        "n_dicom_files": len(files), "non_dicom_files": non_dicom,
        "grade_counts": {str(k): int(v) for k, v in truth["grade"].value_counts().sort_index().items()},
        "stenosis_level_counts": {k: int(v) for k, v in truth["stenosis_level"].value_counts().sort_index().items()},
        "zcq_success_rate": round(float(truth["zcq_success"].mean()), 4),
    }
    summary_json = os.path.join(out_dir, "ground_truth_summary.json")
    model = {"regime": regime_name, "beta": effects, "q_back": Q_BACK, "q_leg": Q_LEG, "reader_error_rate": READER_ERROR_RATE,
             "stenosis_levels": dict(zip(STENOSIS_LEVELS, STENOSIS_LEVEL_PROBS)),
             "secondary_stenosis_rate": SECONDARY_STENOSIS_RATE,
             "grade_drop_probs": _GRADE_DROP_PROBS, "xray_size": xray_size, "mri_size": mri_size}
    atomic.write_json(summary_json, {"seed": int(seed), "regime": regime_name, "counts": counts,
                                     "edge_cases": edges, "bayes_auc": aucs, "generative_model": model})
    if mark_complete:
        atomic.mark_complete(out_dir, {"n_patients": int(n_patients), "seed": int(seed),
                                       "id_prefix": id_prefix, "regime": regime_name})
    return {"out_dir": out_dir, "export_dir": export, "clinical_csv": clinical_csv,
            "ground_truth_csv": gt_csv, "summary_json": summary_json, "files": files, **counts,
            "edge_cases": edges, "bayes_auc": aucs, "regime": regime_name, "effects": effects, "seconds": round(time.perf_counter() - t0, 2),
            "bytes": _dir_bytes(out_dir)}


# Radiologist-style canal stenosis grade of a pretraining cohort (RSNA 2024 lumbar spine style):
# the canal's narrowing 0.85 * s below 1/3 -> 0 (normal/mild), below 2/3 -> 1 (moderate), else 2
# (severe); the reader is off by one grade with this probability.
STENOSIS_GRADE_CUTS = (1.0 / 3.0, 2.0 / 3.0)
STENOSIS_READER_ERROR = 0.1


def stenosis_grade_of(severity) -> np.ndarray:
    """The noise-free canal grade (0 normal/mild, 1 moderate, 2 severe) of stenoses of the given
    severities: the narrowing ``STENOSIS_NARROWING * s`` cut at ``STENOSIS_GRADE_CUTS``."""
    return np.digitize(STENOSIS_NARROWING * np.asarray(severity, float), STENOSIS_GRADE_CUTS).astype(float)


def stenosis_grades(truth: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``patient_id, stenosis_grade`` (0/1/2, a reader's grade of the primary stenosis) and, when
    the truth names the levels, ``stenosis_grade_<LEVEL>``; patients without an MRI get no grade."""
    rng = _rng(seed, 2**31 - 5)
    grade = stenosis_grade_of(truth["stenosis_severity"].to_numpy(float))
    flip = rng.random(len(grade)) < STENOSIS_READER_ERROR
    step = np.where(rng.random(len(grade)) < 0.5, 1.0, -1.0)
    moved = grade + step
    moved = np.where((moved < 0) | (moved > 2), grade - step, moved)
    grade = np.where(flip, moved, grade)
    no_mri = ~truth["has_mri"].astype(bool).to_numpy()
    grade[no_mri] = np.nan
    out = pd.DataFrame({"patient_id": truth["patient_id"], "stenosis_grade": grade})
    # per level: the reader's grade at the primary stenosis, the noise-free grade of the milder
    # secondary one at its level but never above the primary's (so the worst level is exactly
    # the grade above), normal/mild elsewhere
    if "stenosis_level" not in truth:
        return out
    second = stenosis_grade_of(truth.get("stenosis_severity_2", pd.Series(0.0, index=truth.index)).to_numpy(float))
    lv1 = truth["stenosis_level"].astype(str).to_numpy()
    lv2 = truth.get("stenosis_level_2", pd.Series("", index=truth.index)).fillna("").astype(str).to_numpy()
    for lv in LEVELS:
        g = np.where(lv1 == lv, grade, np.where(lv2 == lv, np.minimum(second, grade), 0.0))
        g[no_mri] = np.nan
        out[f"stenosis_grade_{lv}"] = g
    return out


def make_pretraining_cohort(out_dir: str | os.PathLike, n_patients: int = 240, seed: int = 1, *,
                            mri_size: Sequence[int] = (176, 176), num_workers: int = 0) -> dict:
    """A second synthetic cohort, disjoint from the demo, with radiologist-style stenosis grades.

    It stands in for a public labelled set (such as RSNA 2024 lumbar spine degenerative
    classification) on which ``lumbarjax.pipelines.pretrain`` teaches the MRI encoder what a
    narrowed canal looks like. Same generative model as ``make_cohort`` (another seed, no edge
    cases, ids ``PT0001…``, small X-rays that nothing reads) plus ``stenosis_labels.csv``
    (``patient_id, stenosis_grade, stenosis_grade_<LEVEL>``; see STENOSIS_GRADE_CUTS and
    :func:`stenosis_grades`). Outcomes stay in
    ground_truth.csv only: the labels table carries the grade and nothing else.
    """
    summary = make_cohort(out_dir, n_patients=n_patients, seed=seed, xray_size=(64, 64), mri_size=mri_size,
                          edge_cases=False, overwrite=True, n_mc=1000, id_prefix="PT",
                          mark_complete=False, num_workers=num_workers)
    os.remove(summary["clinical_csv"])  # the pretraining table is the labels table
    truth = pd.read_csv(summary["ground_truth_csv"], dtype={"patient_id": str})
    labels_csv = os.path.join(os.fspath(out_dir), "stenosis_labels.csv")
    atomic.write_csv(stenosis_grades(truth, seed), labels_csv)
    atomic.mark_complete(out_dir, {"n_patients": int(n_patients), "seed": int(seed), "id_prefix": "PT"})
    return {**summary, "labels_csv": labels_csv, "clinical_csv": None}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lumbarjax.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="cohort folder to write")
    ap.add_argument("--n", type=int, default=160, help="number of patients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--xray-size", type=int, nargs=2, default=(384, 320), metavar=("ROWS", "COLS"))
    ap.add_argument("--mri-size", type=int, nargs=2, default=(176, 176), metavar=("ROWS", "COLS"))
    ap.add_argument("--regime", default="demo", choices=sorted(OUTCOME_REGIMES),
                    help="effect sizes of the outcome model (docs/DEMO_COHORT.md)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    s = make_cohort(args.out, args.n, args.seed, xray_size=args.xray_size, mri_size=args.mri_size,
                    overwrite=args.overwrite, regime=args.regime)
    s.pop("files")
    print(json.dumps(s, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
