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

The export's patients are drawn by :mod:`lumbarjax.synthetic.outcomes` and imaged by
:mod:`lumbarjax.synthetic.studies`; :func:`make_pretraining_cohort` writes a second cohort with
reader-style stenosis grades (:func:`stenosis_grades`).

Images encode the latents: X-ray disc height ∝ (1 − 0.16·grade_LEVEL), osteophytes
(0, 0, 2.5, 4.5, 7 mm for grades 0–4) and endplate sclerosis (0.1·grade) per level; MRI T2 disc
nucleus signal falls with the level's grade; the CSF canal is narrowed at the stenotic level to
(1 − 0.85·s) of its width. Stenosis severity is visible **only** in the MRI, so an image model
can beat a clinical-only model (see :func:`lumbarjax.synthetic.ceilings.bayes_auc`,
``population_no_stenosis``).

Coordinates in ``ground_truth.csv``: ``disc_LEVEL_{x,y,z}_mm`` are DICOM patient coordinates
(LPS, mm) of the disc centre in the sagittal T2 series (x = the spine midline);
``xray_disc_LEVEL_{row,col}`` are 0-based pixel coordinates (row, column) in the lateral X-ray;
``xray_ep_ENDPLATE_{ant,post}_{row,col}`` the anterior and posterior corners of the 11 endplates
``L1_sup, L1_inf, …, L5_inf, S1_sup`` (the lateral order of BUU-LSPINE, see
:mod:`lumbarjax.data.public.buu_lspine`) in the same pixel grid; the film faces left (anterior =
smaller column, posterior = larger).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lumbarjax import atomic
from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.synthetic.anatomy import STENOSIS_NARROWING, XRAY_ENDPLATES, make_anatomy
from lumbarjax.synthetic.ceilings import bayes_auc
from lumbarjax.synthetic.dicom_writer import hexname, make_phi, write_dicomdir
from lumbarjax.synthetic.outcomes import (EDGE_CASES_PER_160, GRADE_DROP_PROBS, Q_BACK, Q_LEG, READER_ERROR_RATE,
                                          SECONDARY_STENOSIS_RATE, STENOSIS_LEVEL_PROBS, STENOSIS_LEVELS,
                                          outcome_effects, sample_patients)
from lumbarjax.synthetic.streams import stream
from lumbarjax.synthetic.studies import write_patient_studies
from lumbarjax.workers import process_map

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

_README = """Demo export written by lumbarjax.synthetic (synthetic, no real patient).
Folders and file names are meaningless on purpose, like a hospital PACS export.
"""


def _write_thumbnail(rng, path: str):
    """A small JPEG thumbnail (or JPEG-like bytes when Pillow is missing)."""
    img = (rng.random((32, 24)) * 255).astype(np.uint8)
    try:
        from PIL import Image
        Image.fromarray(img).save(path, format="JPEG", quality=70)
    except ImportError:  # pragma: no cover
        with open(path, "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0" + img.tobytes() + b"\xff\xd9")



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
        pre-operative scores are the demo regime's, byte for byte.
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
    meta_rng = stream(seed, 2**31 - 3)
    with open(os.path.join(export, "README.txt"), "w") as fh:
        fh.write(_README)
    write_dicomdir(os.path.join(export, "DICOMDIR"), seed)
    empty_done = False
    jobs, folders = [], []   # per imaged patient: the studies' arguments; (row, its folder rng, folder)
    for i, tr in enumerate(truths):
        for c in GROUND_TRUTH_COLUMNS:
            tr.setdefault(c, "" if c.endswith("make_uid") else float("nan"))
        if not tr["has_xray"] and not tr["has_mri"]:
            continue
        pid = tr["patient_id"]
        an = make_anatomy(stream(seed, i, 1), tr)
        phi = make_phi(stream(seed, i, 4), pid, tr)
        prng = stream(seed, i, 5)
        pdir = os.path.join(export, hexname(prng), hexname(prng, 6))
        jobs.append((seed, i, an, tr, phi, pdir, xray_size, mri_size))
        folders.append((tr, prng, pdir))
    written_by = process_map(write_patient_studies, jobs, num_workers, min_jobs=MIN_PATIENTS_FOR_WORKERS,
                             chunksize=4)
    for (tr, prng, pdir), (updates, written) in zip(folders, written_by):
        tr.update(updates)
        files.extend(written)
        if meta_rng.random() < 0.15:
            _write_thumbnail(meta_rng, os.path.join(pdir, f"thumb_{hexname(prng, 4)}.jpg"))
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
             "grade_drop_probs": GRADE_DROP_PROBS, "xray_size": xray_size, "mri_size": mri_size}
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
    rng = stream(seed, 2**31 - 5)
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
