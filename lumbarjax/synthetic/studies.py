"""One patient's imaging studies of the synthetic cohort: render the X-ray and MRI series and
write them as DICOM; return the ground-truth coordinates of the rendered anatomy.

:func:`write_xray_study` writes a lateral (sometimes also an AP) radiograph, :func:`write_mri_study`
sagittal T2 (sometimes T1), axial T2 and a 3-plane localizer; :func:`write_patient_studies`
runs both for one patient (a worker job of :func:`lumbarjax.synthetic.cohort.make_cohort`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lumbarjax.schema import LEVELS
from lumbarjax.synthetic.anatomy import XRAY_ENDPLATES, Canvas, endplate_corners
from lumbarjax.synthetic.dicom_writer import (base_dataset, ds_string, element, hexname, pixel_elements, SeriesWriter,
                                              text_value, make_uid, window_of)
from lumbarjax.synthetic.render import (T1, T2, composite, expose, mr_noise, mri_classes, mri_geometry,
                                        MriPlacement, render_xray_ap, render_xray_lateral, smooth_field,
                                        XrayGeom)
from lumbarjax.synthetic.streams import stream


def write_xray_study(seed, i, an, truth, phi, pdir, xray_size, files) -> dict:
    """Lateral (and maybe AP) X-ray study; returns ground-truth updates."""
    rng = stream(seed, i, 2)
    rows, cols = xray_size
    fov = rng.uniform(235.0, 265.0)
    sp = fov / rows
    geom = XrayGeom(rows, cols, sp, np.deg2rad(rng.uniform(-8, 8)),
                     np.array([rng.uniform(-8, 8), rng.uniform(-10, 10)]))
    modality = "DX" if rng.random() < 0.5 else "CR"
    mono1 = bool(rng.random() < 0.35)
    spacing_mode = ["pixel", "imager", "both"][int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
    slope = [1.0, 1.0, 0.5, 2.0][int(rng.integers(4))]
    intercept = [0.0, 0.0, -512.0][int(rng.integers(3))]
    study_uid = make_uid(seed, i, "xray-study")
    sdir = os.path.join(pdir, f"ST{int(rng.integers(10**5, 10**6))}")
    out = {}
    views = [("LL", "L-SPINE LAT")]
    if rng.random() < 0.3:
        views.append(("AP", "L-SPINE AP"))
    for sn, (view, desc) in enumerate(views, start=1):
        if view == "LL":
            A = render_xray_lateral(rng, an, geom)
        else:
            A = render_xray_ap(rng, an, rows, cols, sp)
        px = expose(rng, A, mono1)
        series_uid = make_uid(seed, i, "xray-series", view)
        ds = base_dataset(phi, modality, study_uid, series_uid, sn, desc, "XR LUMBAR SPINE 2 VIEWS")
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
        wc, ww = window_of(px[rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4].astype(float) * slope + intercept)
        ds.WindowCenter, ds.WindowWidth = wc, ww
        sedir = os.path.join(sdir, f"SE{sn:06d}")
        os.makedirs(sedir, exist_ok=True)
        path = os.path.join(sedir, "IM00001")
        SeriesWriter(ds).write(path, make_uid(seed, i, "xray-sop", view), pixel_elements(px, 12))
        files.append(path)
        if view == "LL":
            out["xray_series_uid"] = series_uid
    out["xray_spacing_mm"] = round(sp, 6)
    for j, lv in enumerate(LEVELS, start=1):
        r, c = geom.uv_to_rc(*an.disc_c[j])
        out[f"xray_disc_{lv}_row"], out[f"xray_disc_{lv}_col"] = round(float(r), 3), round(float(c), 3)
    for name, (ant, post) in zip(XRAY_ENDPLATES, endplate_corners(an)):
        for corner, uv in (("ant", ant), ("post", post)):
            r, c = geom.uv_to_rc(*uv)
            out[f"xray_ep_{name}_{corner}_row"] = round(float(r), 3)
            out[f"xray_ep_{name}_{corner}_col"] = round(float(c), 3)
    return out


def write_mri_study(seed, i, an, truth, phi, pdir, mri_size, files) -> dict:
    """MRI study of patient ``i`` below ``pdir``; returns ground-truth updates.

    Series: sagittal T2 (12–16 slices), sometimes a sagittal T1, axial T2 through L3L4..L5S1
    and a 3-plane localizer, each in its own ``SE<number>`` folder of one ``ST<number>``
    study folder. ``mri_size``: (H, W) of the sagittal images; ``files`` gets each path
    written, in order. Returns ``t2_series_uid``, the LPS mm centre of each disc
    (``disc_<LEVEL>_{x,y,z}_mm``) and of the canal at the stenosis (``stenosis_{x,y,z}_mm``).
    """
    rng = stream(seed, i, 3)
    H, W = mri_size
    fov = rng.uniform(230.0, 250.0)
    sp = fov / H
    place = MriPlacement(x_mid=rng.uniform(-6, 6), y_ref=rng.uniform(-20, 20), z_ref=rng.uniform(-60, 60))
    # FOV: anatomy origin near the image centre (rows), spine 15 mm anterior of centre (cols)
    u_top = -(H - 1) / 2 * sp + rng.uniform(-10, 10)
    v_left = -(W - 1) / 2 * sp + 15.0 + rng.uniform(-10, 10)
    y0, z0 = place.y_ref + v_left, place.z_ref - u_top  # LPS of pixel (0, 0)
    study_uid = make_uid(seed, i, "mri-study")
    frame_uid = make_uid(seed, i, "mri-frame")
    sdir = os.path.join(pdir, f"ST{int(rng.integers(10**5, 10**6))}")
    gain = rng.uniform(0.8, 1.5)
    signed = bool(rng.random() < 0.4)
    dtype = np.int16 if signed else np.uint16
    series_numbers = list(rng.permutation(np.arange(1, 9)))
    out: dict[str, Any] = {}

    def write_series(tag, desc, image_type, vols, iops, ipps, spacing, thick, spacing_between, reverse):
        sn = int(series_numbers.pop())
        series_uid = make_uid(seed, i, "mri-series", tag)
        ds = base_dataset(phi, "MR", study_uid, series_uid, sn, desc, "MRI LUMBAR SPINE W/O CONTRAST")
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
        writer = SeriesWriter(ds)
        n = len(vols)
        names = set()
        imgs = np.clip(np.rint(np.asarray(vols) * gain), 0, 4095).astype(dtype)
        for k in range(n):
            img = imgs[k]
            normal = np.cross(iops[k][:3], iops[k][3:])
            wc, ww = window_of(img)
            dyn = {
                0x00200013: element(0x00200013, "IS", text_value(str((n - k) if reverse else (k + 1)))),
                0x00200032: element(0x00200032, "DS", text_value(ds_string(np.round(ipps[k], 4)))),
                0x00200037: element(0x00200037, "DS", text_value(ds_string(iops[k]))),
                0x00201041: element(0x00201041, "DS", text_value(ds_string(np.dot(normal, ipps[k])))),
                0x00280030: element(0x00280030, "DS", text_value(ds_string([spacing[k], spacing[k]]))),
                0x00281050: element(0x00281050, "DS", text_value(ds_string(wc))),
                0x00281051: element(0x00281051, "DS", text_value(ds_string(ww))),
                **pixel_elements(img, 16 if signed else 12),
            }
            name = hexname(rng)
            while name in names:
                name = hexname(rng)
            names.add(name)
            path = os.path.join(sedir, name)
            writer.write(path, make_uid(seed, i, "mri-sop", tag, k), dyn)
            files.append(path)
        return series_uid

    # --- sagittal T2 (and T1): shared in-plane canvas
    rr, cc = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32), indexing="ij")
    U, V = u_top + rr * sp, v_left + cc * sp
    cv = Canvas(U, V, lambda u, v: ((u - u_top) / sp, (v - v_left) / sp), edge=sp)
    n_sl = int(rng.integers(12, 17))
    gap = [4.0, 4.4][int(rng.integers(2))]
    x_c = place.x_mid + rng.uniform(-3, 3)
    xs = x_c + (np.arange(n_sl) - (n_sl - 1) / 2) * gap
    bias = 1.0 + 0.1 * smooth_field(rng, (H, W), 4)
    geo = mri_geometry(rng, an, cv)
    vol = composite(mri_classes(an, geo, T2), xs - place.x_mid, 4.0) * bias
    vol = mr_noise(rng, vol, 22.0)
    iop_sag = np.array([0, 1, 0, 0, 0, -1], float)
    ipps = [np.array([x, y0, z0]) for x in xs]
    desc = ["T2 SAG", "t2_tse_sag", "Sag T2 FSE", "T2W_TSE_SAG"][int(rng.integers(4))]
    out["t2_series_uid"] = write_series("t2sag", desc, ["ORIGINAL", "PRIMARY", "M", "ND"], vol,
                                        [iop_sag] * n_sl, ipps, [sp] * n_sl, 4.0, gap, bool(rng.random() < 0.5))
    if rng.random() < 0.4:
        n1 = 12
        xs1 = place.x_mid + rng.uniform(-2, 2) + (np.arange(n1) - (n1 - 1) / 2) * 4.4
        v1 = composite(mri_classes(an, geo, T1), xs1 - place.x_mid, 4.0) * bias
        v1 = mr_noise(rng, v1, 22.0)
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
    cva = Canvas(place.z_ref - Zg, Yg - place.y_ref, edge=spa)
    ax = composite(mri_classes(an, mri_geometry(rng, an, cva), T2), lat_a, spa).transpose(1, 2, 0)  # (z, rows=y, cols=x)
    ax = mr_noise(rng, ax, 22.0)
    iop_ax = np.array([1, 0, 0, 0, 1, 0], float)
    write_series("t2ax", ["T2 AX", "t2_tse_tra"][int(rng.integers(2))], ["ORIGINAL", "PRIMARY", "M", "ND"],
                 ax, [iop_ax] * n_ax, [np.array([xa0, ya0, z]) for z in zs], [spa] * n_ax, 4.0, 4.0, False)
    # --- 3-plane localizer: sagittal, coronal, axial, 10 mm thick, coarse
    Hl = max(32, H // 2)
    spl = 300.0 / Hl
    a0 = -(Hl - 1) / 2 * spl
    g1 = a0 + np.arange(Hl) * spl
    Ug, Vg = np.meshgrid(g1, g1, indexing="ij")
    cvl = Canvas(Ug, Vg, lambda u, v: ((u - a0) / spl, (v - a0) / spl), edge=spl)
    sag = composite(mri_classes(an, mri_geometry(rng, an, cvl), T2), np.array([0.0]), 10.0)[0]
    yc = place.y_ref  # coronal through the vertebral bodies
    cor = composite(mri_classes(an, mri_geometry(rng, an, Canvas(g1, np.zeros(Hl), edge=spl)), T2), g1, spl).T
    axl = composite(mri_classes(an, mri_geometry(rng, an, Canvas(np.zeros(Hl), g1, edge=spl)), T2), g1, spl).T
    loc = mr_noise(rng, np.stack([sag, cor, axl]), 22.0)
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


def write_patient_studies(job) -> tuple[dict, list[str]]:
    """One patient's X-ray and MRI studies (``job`` as :func:`make_cohort` builds it): the
    ground-truth updates and the files written, in writing order. Depends on nothing but
    ``job`` (each study draws from its own ``stream(seed, i, …)``), so patients can be written
    in any process."""
    seed, i, an, tr, phi, pdir, xray_size, mri_size = job
    tr, updates, files = dict(tr), {}, []
    if tr["has_xray"]:
        updates.update(write_xray_study(seed, i, an, tr, phi, pdir, xray_size, files))
        tr.update(updates)
    if tr["has_mri"]:
        updates.update(write_mri_study(seed, i, an, tr, phi, pdir, mri_size, files))
    return updates, files
