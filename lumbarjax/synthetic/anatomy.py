"""Phantom anatomy of the synthetic cohort: a sagittal lumbar spine model and its shapes.

:class:`Anatomy` holds one patient's vertebral bodies, discs, sacrum and canal (mm, sagittal
plane); :func:`make_anatomy` draws it from the patient's per-level grades and stenoses. The
shape helpers turn it into signed-distance shapes that :class:`Canvas` rasterises into soft
masks for the X-ray and MRI renderers.

How the images encode the latents: disc height × (1 − DISC_HEIGHT_LOSS_PER_GRADE·grade),
osteophytes of OSTEOPHYTE_MM per grade and endplate sclerosis at each level; the canal narrowed
at a stenosis to (1 − STENOSIS_NARROWING·severity) of its depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lumbarjax.schema import LEVELS

OSTEOPHYTE_MM = (0.0, 0.0, 2.5, 4.5, 7.0)  # spur length per grade
DISC_HEIGHT_LOSS_PER_GRADE = 0.16  # disc height × (1 − 0.16·grade)
STENOSIS_NARROWING = 0.85  # canal width × (1 − 0.85·s)

# Endplates whose corners the ground truth gives (lateral film, cranial to caudal).
XRAY_ENDPLATES = tuple(f"L{k}_{s}" for k in range(1, 6) for s in ("sup", "inf")) + ("S1_sup",)


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


def make_anatomy(rng: np.random.Generator, truth: dict) -> Anatomy:
    """Draw one patient's :class:`Anatomy` (mm, centred between the L1 body and the L5S1 disc).

    ``truth``: the patient's latents — ``grade_<LEVEL>`` per level of ``schema.LEVELS`` (disc
    heights shrink by DISC_HEIGHT_LOSS_PER_GRADE per grade; T12L1 gets the L1L2 grade minus 1,
    at least 0), ``stenosis_level`` / ``stenosis_severity`` and the optional
    ``stenosis_level_2`` / ``stenosis_severity_2`` (empty level = none). ``rng`` draws the
    patient's size (x0.9–1.1), lordosis, sacral slope, canal size and soft-tissue depths.
    """
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


class Canvas:
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


def endplate_shapes(an: Anatomy, j: int):
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


def canal_shapes(an: Anatomy):
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


def post_element_shapes(an: Anatomy):
    """Posterior elements: one rounded-rectangle shape ``("r", centre, angle, half_h, half_w,
    radius)`` behind the canal of each body T12, L1..L5 (6 shapes, anatomy mm)."""
    out = []
    for k in range(6):
        t = an.body_t[k]
        c = an.body_c[k] + (an.body_hd[k] + an.canal_gap + an.canal_depth + 13) * an.n(t) + 0.3 * an.body_hh[k] * an.tvec(t)
        out.append(("r", c, t + 0.15, 0.7 * an.body_hh[k], 13.0, 4.0))
    return out


def endplate_corners(an: Anatomy) -> list[tuple[np.ndarray, np.ndarray]]:
    """(anterior, posterior) (u, v) corners of the endplates XRAY_ENDPLATES; +n(t) is posterior."""
    out = []
    for k in range(1, 6):  # bodies L1..L5
        tv, nv = an.tvec(an.body_t[k]), an.n(an.body_t[k])
        for sign in (-1.0, 1.0):  # upper, lower endplate
            mid = an.body_c[k] + sign * an.body_hh[k] * tv
            out.append((mid - an.body_hd[k] * nv, mid + an.body_hd[k] * nv))
    out.append((an.sacrum[0], an.sacrum[1]))  # S1 upper endplate: anterior, posterior corner
    return out
