"""Image rendering of the synthetic cohort: X-ray projections and MRI slices of an Anatomy.

X-rays: an attenuation map of a lateral (or AP) projection (:func:`render_xray_lateral`,
:func:`render_xray_ap`, pixel grid given by :class:`XrayGeom`), exposed to 12-bit stored
pixels by :func:`expose`. MRI: contrast-free tissue masks over a canvas
(:func:`mri_geometry`), tissue classes with T2 or T1 values (:func:`mri_classes`), a
painter's composite over lateral positions (:func:`composite`) and magnitude noise
(:func:`mr_noise`); :class:`MriPlacement` maps anatomy mm to DICOM patient coordinates (LPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbarjax.synthetic.anatomy import (Anatomy, canal_shapes, Canvas, endplate_shapes,
                                         post_element_shapes)


def _interp_matrix(n_out: int, n_ctrl: int) -> np.ndarray:
    """(n_out, n_ctrl) linear-interpolation weights from n_ctrl control points spanning n_out."""
    pos = np.linspace(0, n_ctrl - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_ctrl - 2)
    w = np.zeros((n_out, n_ctrl), np.float32)
    w[np.arange(n_out), lo] = 1 - (pos - lo)
    w[np.arange(n_out), lo + 1] = pos - lo
    return w


def smooth_field(rng, shape, n_ctrl=5):
    """Smooth random field (bilinear from an n_ctrl grid of N(0, 1)) of shape (H, W) or (N,)."""
    shape = tuple(shape)
    if len(shape) == 1:
        return _interp_matrix(shape[0], n_ctrl) @ rng.normal(0.0, 1.0, n_ctrl).astype(np.float32)
    ctrl = rng.normal(0.0, 1.0, (n_ctrl, n_ctrl)).astype(np.float32)
    a = _interp_matrix(shape[0], n_ctrl) @ ctrl  # (H, n_ctrl)
    b = _interp_matrix(shape[1], n_ctrl)  # (W, n_ctrl)
    return sum(a[:, k, None] * b[None, :, k] for k in range(n_ctrl))  # no BLAS threads for tiny ranks


# ----------------------------------------------------------------------------- X-ray


@dataclass
class XrayGeom:
    """Geometry of a lateral film: ``rows`` x ``cols`` pixels of ``spacing`` mm (anatomy scale),
    the anatomy rotated by ``angle`` (rad) in the image plane and its origin offset by ``shift``
    (2,) mm (row, col) from the image centre.

    :meth:`rc_to_uv` maps pixel (row, col) to anatomy (u, v) mm (:class:`Anatomy`);
    :meth:`uv_to_rc` is its inverse. Both take scalars or arrays of the same shape.
    """

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


def render_xray_lateral(rng, an: Anatomy, geom: XrayGeom) -> np.ndarray:
    """Attenuation map (rows, cols) float32 of a lateral projection (higher = more bone)."""
    R, C = np.meshgrid(np.arange(geom.rows, dtype=np.float32), np.arange(geom.cols, dtype=np.float32), indexing="ij")
    U, V = geom.rc_to_uv(R, C)
    cv = Canvas(U, V, geom.uv_to_rc, edge=max(0.6, geom.spacing))
    A = np.zeros((geom.rows, geom.cols), np.float32)
    # soft tissue: torso between skins, thicker anteriorly, smooth texture
    torso = np.clip(0.5 - (an.ant_skin - V) / 3, 0, 1) * np.clip(0.5 - (V - an.post_skin) / 3, 0, 1)
    A += torso * (1.0 + 0.15 * smooth_field(rng, A.shape) - 0.002 * V)

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
    for sh in post_element_shapes(an):
        add(sh, 0.45, edge=1.5)
    for j in range(1, 6):
        scl, ost = endplate_shapes(an, j)
        for sh in scl:
            add(sh, 0.1 * an.disc_grade[j])
        for sh in ost:
            add(sh, 0.9)
    return A


def render_xray_ap(rng, an: Anatomy, rows: int, cols: int, spacing: float) -> np.ndarray:
    """Attenuation map of an AP projection (distractor): bodies as wide boxes, pedicle ovals."""
    geom = XrayGeom(rows, cols, spacing, rng.uniform(-0.05, 0.05), rng.uniform(-8, 8, 2))
    R, C = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    U, V = geom.rc_to_uv(R, C)  # V = lateral here
    cv = Canvas(U, V, geom.uv_to_rc, edge=max(0.6, spacing))
    A = np.clip(0.5 - (np.abs(V) - 150) / 3, 0, 1) * (1.0 + 0.15 * smooth_field(rng, U.shape))
    for k in range(6):
        uc = an.body_c[k][0]
        for sh, val in ((("r", np.array([uc, 0.0]), 0.0, an.body_hh[k], an.body_hw[k], 4.0), 0.8),
                        (("e", np.array([uc - 3, -0.6 * an.body_hw[k]]), 0.0, 7.0, 4.5), 0.4),
                        (("e", np.array([uc - 3, 0.6 * an.body_hw[k]]), 0.0, 7.0, 4.5), 0.4)):
            blk, m = cv.mask(sh)
            if blk is not None:
                A[blk] += val * m
    return A.astype(np.float32)


def expose(rng, A: np.ndarray, mono1: bool) -> np.ndarray:
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


# ----------------------------------------------------------------------------- MRI

T2 = {"muscle": 260, "abdomen": 420, "fat": 700, "marrow": 430, "cortex": 140, "annulus": 300,
      "nucleus0": 1000, "nucleus_per_grade": -170, "csf": 1250, "post": 320, "lig": 180}
T1 = {"muscle": 380, "abdomen": 450, "fat": 900, "marrow": 680, "cortex": 160, "annulus": 330,
      "nucleus0": 380, "nucleus_per_grade": -25, "csf": 160, "post": 480, "lig": 300}


def mri_geometry(rng, an: Anatomy, cv: Canvas) -> dict:
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
    geo = {"torso": torso, "anterior": V < 0, "tex": smooth_field(rng, shp, 7),
           "fat": np.clip(0.5 - (an.post_skin - an.fat - V) / cv.edge, 0, 1) * torso,
           "post": union(post_element_shapes(an), edge=max(cv.edge, 1.5))}
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
    canal, blocks = canal_shapes(an)
    geo["csf"] = union(canal)
    geo["lig"] = union(blocks) if blocks else None
    return geo


def mri_classes(an: Anatomy, geo: dict, con: dict):
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


def composite(classes, lat_x: np.ndarray, thick: float) -> np.ndarray:
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


def mr_noise(rng, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude noise |img + n|, n ~ N(0, sigma²) (a cheap stand-in for Rician noise)."""
    return np.abs(img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma))


@dataclass
class MriPlacement:
    """Where the anatomy sits in the MRI's patient coordinates (LPS, mm).

    :meth:`lps` maps anatomy (u, v) mm and a lateral offset ``lat`` mm to the (3,) LPS point
    ``(x_mid + lat, y_ref + v, z_ref - u)``: v (posterior) runs along +y, u (inferior) along -z.
    """

    x_mid: float  # LPS x of the spine midline
    y_ref: float  # LPS y of anatomy v = 0
    z_ref: float  # LPS z of anatomy u = 0

    def lps(self, u, v, lat=0.0):
        return np.array([self.x_mid + lat, self.y_ref + v, self.z_ref - u])
