"""Per-level X-ray grades from the measured disc height index, and the patient grade / scale
derived from them by a configurable rule.

Per level ``lv`` a relative disc height loss ``z = 1 − dhi / ref_lv`` (``ref_lv``: the level's
normal index, the ``ref_quantile`` quantile of that level's index among the training
patients — most discs of a cohort are not degenerate at every level), and one shared set of
increasing cut points ``c_1 < … < c_{K−1}``: ``grade_lv = #{k : z > c_k}`` (0 … K−1).

Aggregation (``rule``), as clinicians build composite radiographic scores from level scores:

* ``"max"`` — patient grade = the worst level (the demo's generative rule: g = max of the
  level grades);
* ``"sum"`` — the scale = sum of the level grades over L1L2…L5S1 (0 … 5·(K−1)); the patient
  grade = #{k : scale > d_k} with its own cut points ``d``.

The scale (sum over levels) is reported with either rule. Only patient-level grades are needed
to fit: the cut points minimise the squared error between the aggregated prediction and the
training patients' grades (coordinate descent over the observed values), so a cohort read
once per film is enough to train a per-level grader. Soft versions (``expected_grade``) use a
logistic of width ``tau`` around each cut point.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS

RULES = ("max", "sum")


@dataclasses.dataclass
class LevelGrader:
    """A fitted per-level grader (module docstring; :func:`fit_level_grader` fits one).

    ``ref``: (L,) normal disc height index per level; ``cuts``: (K-1,) increasing cut points on
    the height loss z; ``rule``: "max" or "sum"; ``sum_cuts``: (K-1,) cut points on the scale
    (rule "sum" only); ``tau``: width of the logistic cut points of :meth:`expected_grade`.
    The methods take ``dhi`` (N, L) disc height indices, NaN where unmeasured: :meth:`scale`
    is the (N,) sum of the level grades, :meth:`patient_grade` the (N,) int patient grade.
    """

    ref: np.ndarray          # (L,) normal dhi per level
    cuts: np.ndarray         # (K-1,) on z
    rule: str = "max"
    sum_cuts: np.ndarray | None = None   # (K-1,) on the scale, rule "sum"
    tau: float = 0.03

    @property
    def num_grades(self) -> int:
        return len(self.cuts) + 1

    def loss(self, dhi) -> np.ndarray:
        """(N, L) relative disc height loss z."""
        return 1.0 - np.asarray(dhi, float) / self.ref

    def level_grades(self, dhi) -> np.ndarray:
        """(N, L) int grades; NaN dhi -> grade 0 of that level (and counted by the caller)."""
        z = np.nan_to_num(self.loss(dhi), nan=-np.inf)
        return (z[..., None] > self.cuts).sum(axis=-1)

    def scale(self, dhi) -> np.ndarray:
        return self.level_grades(dhi).sum(axis=1)

    def patient_grade(self, dhi) -> np.ndarray:
        lg = self.level_grades(dhi)
        if self.rule == "max":
            return lg.max(axis=1)
        return (lg.sum(axis=1)[:, None] > self.sum_cuts).sum(axis=1)

    def expected_grade(self, dhi) -> np.ndarray:
        """(N,) sum over k of P(patient grade ≥ k) with logistic cut points (rule "max": a patient
        reaches k when any level does; "sum": the expected scale mapped through ``sum_cuts``)."""
        z = np.nan_to_num(self.loss(dhi), nan=-10.0)
        p = 1.0 / (1.0 + np.exp(-(z[..., None] - self.cuts) / self.tau))   # (N, L, K-1)
        if self.rule == "max":
            return (1.0 - np.prod(1.0 - p, axis=1)).sum(axis=1)
        s = p.sum(axis=(1, 2))
        return (1.0 / (1.0 + np.exp(-(s[:, None] - self.sum_cuts) / 0.5))).sum(axis=1)

    @classmethod
    def from_dict(cls, d: dict) -> "LevelGrader":
        """The inverse of :meth:`to_dict`."""
        return cls(ref=np.asarray(d["ref"], float), cuts=np.asarray(d["cuts"], float), rule=d["rule"],
                   sum_cuts=None if d.get("sum_cuts") is None else np.asarray(d["sum_cuts"], float),
                   tau=float(d["tau"]))

    def to_dict(self) -> dict:
        return {"ref": self.ref.tolist(), "cuts": self.cuts.tolist(), "rule": self.rule,
                "sum_cuts": None if self.sum_cuts is None else self.sum_cuts.tolist(), "tau": self.tau,
                "levels": list(LEVELS)}


def _fit_cuts(score_fn, candidates: np.ndarray, y: np.ndarray, k: int, sweeps: int = 4) -> np.ndarray:
    """Increasing cut points (k-1,) minimising sum (score_fn(cuts) − y)², by coordinate descent."""
    cands = np.unique(candidates[np.isfinite(candidates)])
    if len(cands) < k:
        raise ConfigError("level grader: too few distinct values to place the cut points")
    cuts = np.quantile(cands, np.linspace(0.5, 0.95, k - 1))
    for _ in range(sweeps):
        for j in range(k - 1):
            lo = cuts[j - 1] if j > 0 else -np.inf
            hi = cuts[j + 1] if j < k - 2 else np.inf
            best, best_err = cuts[j], None
            for c in cands[(cands > lo) & (cands < hi)]:
                trial = cuts.copy()
                trial[j] = c
                err = float(np.sum((score_fn(trial) - y) ** 2))
                if best_err is None or err < best_err - 1e-12:
                    best, best_err = c, err
            cuts[j] = best
    return cuts


def fit_level_grader(dhi, grades, *, num_grades: int = 5, rule: str = "max",
                     ref_quantile: float = 0.9, tau: float = 0.03) -> LevelGrader:
    """Fit a :class:`LevelGrader` on training patients: dhi (N, L) and patient grades (N,)."""
    if rule not in RULES:
        raise ConfigError(f"level grader: rule must be one of {RULES}, got {rule!r}")
    dhi = np.asarray(dhi, float)
    y = np.asarray(grades, float)
    ok = np.isfinite(y) & np.isfinite(dhi).all(axis=1)
    if ok.sum() < 10:
        raise ConfigError(f"level grader: only {int(ok.sum())} training patients with a grade and "
                          "five measured levels; need >= 10")
    dhi, y = dhi[ok], y[ok]
    ref = np.quantile(dhi, ref_quantile, axis=0)
    z = 1.0 - dhi / ref
    k = int(num_grades)

    def max_pred(cuts):
        return (z[..., None] > cuts).sum(axis=-1).max(axis=1)

    # edges between consecutive observed z values are all a cut can distinguish
    zs = np.unique(z)
    cands = 0.5 * (zs[1:] + zs[:-1])
    if len(cands) > 400:
        cands = np.quantile(cands, np.linspace(0, 1, 400))
    cuts = _fit_cuts(max_pred, cands, y, k)
    grader = LevelGrader(ref=ref, cuts=cuts, rule=rule, tau=tau)
    if rule == "sum":
        scale = (z[..., None] > cuts).sum(axis=-1).sum(axis=1).astype(float)
        s_cands = np.arange(0, len(LEVELS) * (k - 1)) + 0.5
        grader.sum_cuts = _fit_cuts(lambda d: (scale[:, None] > d).sum(axis=1), s_cands, y, k)
    return grader


__all__ = ["LevelGrader", "RULES", "fit_level_grader"]
