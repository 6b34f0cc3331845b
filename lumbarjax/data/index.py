"""Index a cohort folder: find each patient's lateral X-ray and sagittal T2 MRI series.

``index_cohort(root)`` walks every file below ``root`` (file names and extensions mean nothing:
hospitals export ``IM00001``, ``1.2.840…``, DICOMDIR, readme.txt, JPEG thumbnails …), reads DICOM
headers only, groups PatientID -> StudyInstanceUID -> SeriesInstanceUID and picks per patient:

``xray``  one CR/DX image (an X-ray series may hold AP and lateral views, so the choice is per
          image). Lateral = ViewPosition in {LL, RL, LAT, LATERAL, LLD, RLD, …} (best) or "lat"
          as a word in SeriesDescription / ProtocolName / AcquisitionDeviceProcessingDescription /
          ViewCodeSequence. AP/PA views are always rejected; an image whose view cannot be told is
          used only when no lateral exists (the reason says "view unknown"). Flexion/extension
          views rank below neutral ones. Ties: larger image, then higher SeriesNumber /
          InstanceNumber, then path.
``mri_t2_sag``  one MR series: sagittal (|slice normal x| > 0.8), T2 by SeriesDescription /
          ProtocolName / SequenceName (STIR/TIRM and T2* rank below plain T2; without any text,
          EchoTime >= 60 ms and RepetitionTime >= 1500 ms count as T2), >= 5 slices, consistent
          geometry (sorted along the normal, no duplicate positions, uniform spacing). Rejected:
          localizers (ImageType LOCALIZER, "loc/scout/survey/3-plane" descriptions, several
          orientations in one series, < 5 slices), axial / coronal / oblique, T1. Ties: ORIGINAL
          before DERIVED, more slices, higher SeriesNumber (a repeat is usually the better one),
          then UID. The frames of an Enhanced / Legacy Converted Enhanced MR file are the
          slices of its series (:mod:`lumbarjax.data.multiframe`); several stacks or temporal
          positions, or frames without functional groups, are rejected with that reason.

Every manifest row has a ``reason``; patients without an eligible series for a role get no row
for it and are listed in ``df.attrs["missing"]`` (and logged). Skipped files are counted in
``df.attrs["skipped"]``: "not DICOM", "no pixel data / non-image SOP", "unreadable",
"no PatientID". No PHI is read into the manifest: patients are named by PatientID only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lumbarjax import atomic
from lumbarjax.data import multiframe
from lumbarjax.data.dicom import (
    SeriesGeometry,
    SliceGeometry,
    header_problem,
    read_header,
    series_geometry,
    slice_geometry,
)
from lumbarjax.errors import CohortError, DicomError
from lumbarjax.schema import ROLES, XRAY_MODALITIES  # index.ROLES etc. still resolve
from lumbarjax.workers import spawn_pool

log = logging.getLogger(__name__)

SOURCES = ("dicom", "nifti", "mha")  # mha: MetaImage (SPIDER), read with SimpleITK
COLUMNS = [
    "patient_id", "role", "source", "paths", "study_uid", "series_uid", "modality",
    "series_description", "n_files", "spacing_mm", "shape", "reason",
]
REQUIRED_COLUMNS = ["patient_id", "role", "source", "paths"]
SKIP_NOT_DICOM = "not DICOM"
SKIP_NON_IMAGE = "no pixel data / non-image SOP"
SKIP_UNREADABLE = "unreadable"
SKIP_NO_PATIENT = "no PatientID"

LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LLO", "RLO"}
FRONTAL_VIEWS = {"AP", "PA", "APL", "PAL"}
MIN_MRI_SLICES = 5
SAGITTAL_MIN = 0.8

_LAT_RE = re.compile(r"(?<![a-z])lat(?![a-z])|lateral", re.I)
_FRONTAL_RE = re.compile(r"(?<![a-z])(ap|pa|a\.p\.|p\.a\.)(?![a-z])|frontal", re.I)
_FLEXEXT_RE = re.compile(r"flex|(?<![a-z])ext(ension)?(?![a-z])|bending", re.I)
_LOCALIZER_RE = re.compile(r"loc(aliser|alizer)?(?![a-z])|scout|survey|3[\s_-]*pl(ane)?|"
                           r"tri[\s_-]*pilot|(?<![a-z])pilot", re.I)
_T2STAR_RE = re.compile(r"t2\s*\*|t2star|t2_?ffe|medic|merge|hemo", re.I)
_STIR_RE = re.compile(r"stir|tirm", re.I)
_T2_RE = re.compile(r"t2", re.I)
_T1_RE = re.compile(r"t1", re.I)


# --------------------------------------------------------------------------- header facts


@dataclass(slots=True)
class FileInfo:
    """Header facts of one image file, or of one frame of an Enhanced (multi-frame) file (path
    relative to the cohort root). Slotted: the indexer keeps one per file of the cohort (~32,000
    for 1,000 patients), so each byte counts.

    ``frame`` is 0 for a single-frame file, else the 1-based frame number whose geometry, echo /
    repetition time, ``stack`` (StackID) and ``temporal`` (TemporalPositionIndex) come from the
    functional groups; ``frames`` is the file's NumberOfFrames.
    """

    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    series_number: int
    instance_number: int
    series_description: str
    text: str  # description-like fields joined, for view / contrast matching
    view_position: str
    image_type: tuple[str, ...]
    rows: int
    cols: int
    frames: int
    samples: int
    spacing_2d: tuple[float, float] | None
    geometry: SliceGeometry | None
    echo_time: float | None
    repetition_time: float | None
    study_date: str
    identity: tuple[str, str, str] = ("", "", "")  # hashes of PatientName, BirthDate, Sex
    frame: int = 0
    stack: str = ""
    temporal: int = 0


def _num(value, cast=float):
    try:
        return cast(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


IDENTITY_FIELDS = ("PatientName", "PatientBirthDate", "PatientSex")
REASON_CONFLICTING_IDENTITIES = "conflicting identities"


def _identity(ds) -> tuple[str, str, str]:
    """Salted hashes of the normalised PatientName / PatientBirthDate / PatientSex ("" when
    empty): enough to tell two people apart under one PatientID, never the values themselves."""
    out = []
    for key in IDENTITY_FIELDS:
        v = ds.get(key, "")
        text = re.sub(r"[\s^]+", " ", "" if v is None else str(v)).strip().upper()
        out.append(hashlib.sha256(f"lumbarjax-identity\x1f{key}\x1f{text}".encode()).hexdigest()[:16]
                   if text else "")
    return tuple(out)


def identity_conflict(files: list[FileInfo]) -> list[str]:
    """The identity fields on which one patient's files disagree (empty values ignored)."""
    return [key for i, key in enumerate(IDENTITY_FIELDS)
            if len({f.identity[i] for f in files if f.identity[i]}) > 1]


def _file_infos(ds, relpath: str) -> list[FileInfo]:
    """One FileInfo for a single-frame file; one per frame of an Enhanced / Legacy Converted
    file (geometry and MR timing from its functional groups)."""
    info = _file_info(ds, relpath)
    if not multiframe.has_functional_groups(ds):
        return [info]
    infos = []
    for k in range(info.frames):
        try:
            geometry = slice_geometry(multiframe.frame_plane(ds, k), f"{relpath} frame {k + 1}")
        except DicomError:
            geometry = None
        echo, repetition = multiframe.frame_timing(ds, k)
        stack, temporal = multiframe.frame_dimensions(ds, k)
        infos.append(dataclasses.replace(
            info, geometry=geometry, echo_time=echo, repetition_time=repetition,
            spacing_2d=info.spacing_2d or (tuple(geometry.pixel_spacing) if geometry else None),
            frame=k + 1, stack=stack, temporal=temporal))
    return infos


def _file_info(ds, relpath: str) -> FileInfo:
    def s(key):
        v = ds.get(key, "")
        return "" if v is None else str(v).strip()

    texts = [s("SeriesDescription"), s("ProtocolName"), s("SequenceName"),
             s("AcquisitionDeviceProcessingDescription"), s("PulseSequenceName"),
             s("AcquisitionContrast")]
    for item in ds.get("ViewCodeSequence", None) or []:
        texts.append(str(item.get("CodeMeaning", "")))
    image_type = tuple(str(v).upper() for v in (ds.get("ImageType", None) or []))
    spacing_2d = None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key, None)
        if v:
            try:
                spacing_2d = (float(v[0]), float(v[1]))
                break
            except (TypeError, ValueError, IndexError):
                pass
    geometry = None
    if all(k in ds for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")):
        try:
            geometry = slice_geometry(ds, relpath)
        except DicomError:
            geometry = None
    return FileInfo(
        path=relpath,
        patient_id=s("PatientID"),
        study_uid=s("StudyInstanceUID"),
        series_uid=s("SeriesInstanceUID"),
        modality=s("Modality").upper(),
        series_number=_num(ds.get("SeriesNumber"), int) or 0,
        instance_number=_num(ds.get("InstanceNumber"), int) or 0,
        series_description=s("SeriesDescription"),
        text=" | ".join(t for t in texts if t),
        view_position=s("ViewPosition").upper(),
        image_type=image_type,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        frames=_num(ds.get("NumberOfFrames"), int) or 1,
        samples=_num(ds.get("SamplesPerPixel"), int) or 1,
        spacing_2d=spacing_2d,
        geometry=geometry,
        echo_time=_num(ds.get("EchoTime")),
        repetition_time=_num(ds.get("RepetitionTime")),
        study_date=s("StudyDate"),
        identity=_identity(ds),
    )


def _scan_one(path: str, root: str, skipped: Counter) -> list[FileInfo]:
    """Header facts of one file (one per frame of an Enhanced file), or [] (and ``skipped``
    counts why)."""
    rel = os.path.relpath(path, root)
    try:
        ds = read_header(path)
    except DicomError as e:
        log.warning("skipping %s", e)
        skipped[SKIP_UNREADABLE] += 1
        return []
    if ds is None:
        skipped[SKIP_NOT_DICOM] += 1
        return []
    problem = header_problem(ds)
    if problem == "truncated":
        log.warning("skipping %s: image SOP class without Rows/Columns (truncated?)", rel)
        skipped[SKIP_UNREADABLE] += 1
        return []
    if problem is not None:
        skipped[SKIP_NON_IMAGE] += 1
        return []
    try:
        with warnings.catch_warnings():  # pydicom warns on malformed values; they are checked
            warnings.simplefilter("ignore")
            infos = _file_infos(ds, rel)
    except Exception as e:  # malformed values in an otherwise parsable header
        log.warning("skipping %s: unreadable header values (%s: %s)", rel, type(e).__name__, e)
        skipped[SKIP_UNREADABLE] += 1
        return []
    if not infos[0].patient_id:
        skipped[SKIP_NO_PATIENT] += 1
        return []
    return infos


def _scan_chunk(paths: list[str], root: str) -> tuple[list[FileInfo], Counter]:
    skipped: Counter = Counter()
    infos = [info for p in paths for info in _scan_one(p, root, skipped)]
    return infos, skipped


# Below this many files a serial scan beats starting worker processes (~2-10 s of imports).
MIN_FILES_FOR_WORKERS = 2000


def scan_files(root, *, progress: bool = False, num_workers: int = 0,
               chunk_size: int = 256) -> tuple[list[FileInfo], Counter]:
    """Header facts of every image file below ``root`` and counts of skipped files by reason.

    ``num_workers`` > 0 reads the headers in that many worker processes, ``chunk_size`` files
    at a time, when there are at least ``MIN_FILES_FOR_WORKERS`` files; the result (file order
    included) is the same as a serial scan.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise CohortError(f"{root}: cohort folder not found")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    chunks = [files[i:i + chunk_size] for i in range(0, len(files), chunk_size)]
    skipped = Counter({SKIP_NOT_DICOM: 0, SKIP_NON_IMAGE: 0, SKIP_UNREADABLE: 0})
    infos: list[FileInfo] = []
    if num_workers > 0 and len(chunks) > 1 and len(files) >= MIN_FILES_FOR_WORKERS:
        # spawn, not fork: the parent may hold JAX's threads; the workers exit when this
        # process is killed (workers.spawn_pool)
        with spawn_pool(min(num_workers, len(chunks))) as pool:
            parts = pool.map(_scan_chunk, chunks, [root] * len(chunks))
            parts = _progress(parts, len(chunks), progress, "chunk")
            for part_infos, part_skipped in parts:
                infos.extend(part_infos)
                skipped.update(part_skipped)
    else:
        for path in _progress(files, len(files), progress, "file"):
            infos.extend(_scan_one(path, root, skipped))
    return infos, skipped


def _progress(it, total: int, enabled: bool, unit: str):
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, total=total, desc="index", unit=unit)


# --------------------------------------------------------------------------- X-ray choice


def _xray_view(f: FileInfo) -> tuple[int, str]:
    """(rank, label): 3 lateral by ViewPosition, 2 lateral by text, 1 unknown, 0 AP/PA."""
    vp = f.view_position
    if vp in LATERAL_VIEWS:
        return 3, f"ViewPosition={vp}"
    if vp in FRONTAL_VIEWS:
        return 0, f"ViewPosition={vp}"
    if _LAT_RE.search(f.text):
        return 2, f"description '{f.text}'"
    if _FRONTAL_RE.search(f.text):
        return 0, f"description '{f.text}'"
    return 1, "view unknown (no ViewPosition, no lat/AP in the descriptions)"


def _plural(n: int, word: str = "file") -> str:
    return f"{n} {word}{'' if n == 1 or word.endswith('series') else 's'}"


def _rejections(labels: list[tuple[str, int]]) -> str:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for label, n in labels:
        counts[label][0] += 1
        counts[label][1] += n
    return ", ".join(f"{label} ({_plural(n)})" for label, (_, n) in counts.items())


def choose_xray(files: list[FileInfo]) -> tuple[FileInfo | None, str]:
    """Pick the lateral X-ray among one patient's CR/DX images; (choice or None, reason)."""
    candidates, rejected = [], []
    for f in files:
        if f.frames > 1:
            rejected.append(("multi-frame", 1))
        elif f.samples != 1:
            rejected.append(("colour image", 1))
        elif f.spacing_2d is None:
            rejected.append(("no pixel spacing", 1))
        else:
            rank, label = _xray_view(f)
            if rank == 0:
                rejected.append(("AP/PA view", 1))
            else:
                candidates.append((rank, label, f))
    n_total = len(files)
    if not files:
        return None, "no CR/DX image"
    if not candidates:
        return None, f"{_plural(n_total, 'CR/DX image')}; rejected: {_rejections(rejected)}"
    if any(rank >= 2 for rank, _, _ in candidates):
        unknown = [c for c in candidates if c[0] < 2]
        rejected += [("view unknown while a lateral exists", 1)] * len(unknown)
        candidates = [c for c in candidates if c[0] >= 2]

    def key(c):
        rank, _, f = c
        neutral = 0 if _FLEXEXT_RE.search(f.text) else 1
        return (rank, neutral, f.rows * f.cols, f.series_number, f.instance_number, f.path)

    candidates.sort(key=key, reverse=True)
    rank, label, best = candidates[0]
    reason = f"{best.modality}, {label}; {_plural(n_total, 'CR/DX image')}"
    if len(candidates) > 1:
        reason += (f"; {len(candidates) - 1} other eligible not chosen (tie-break: neutral over "
                   "flexion/extension, larger image, higher SeriesNumber/InstanceNumber)")
    if rejected:
        reason += f"; rejected: {_rejections(rejected)}"
    return best, reason


# --------------------------------------------------------------------------- MRI choice


@dataclass
class SeriesInfo:
    """One MR series (all files, or frames of Enhanced files, sharing Study/SeriesInstanceUID)
    and its verdict. ``files`` holds one FileInfo per slice; ``sorted_paths`` each file once, in
    slice order."""

    study_uid: str
    series_uid: str
    files: list[FileInfo]
    label: str = ""
    eligible: bool = False
    rank: tuple = ()
    geometry: SeriesGeometry | None = None
    sorted_paths: list[str] = field(default_factory=list)

    @property
    def first(self) -> FileInfo:
        return self.files[0]

    @property
    def n_files(self) -> int:
        return len({f.path for f in self.files})

    def frames_text(self) -> str:
        """"frames 1-15 of a/IM1" for each multi-frame file of the series ("" when none)."""
        by_file: dict[str, list[int]] = defaultdict(list)
        for f in self.files:
            if f.frame:
                by_file[f.path].append(f.frame)
        return "; ".join(f"frames {multiframe.frame_ranges(v)} of {p}" for p, v in by_file.items())


def _orientation(iop: np.ndarray) -> tuple[str, float]:
    normal = np.cross(iop[:3], iop[3:])
    normal = normal / np.linalg.norm(normal)
    ax = np.abs(normal)
    if ax[0] > SAGITTAL_MIN:
        return "sagittal", float(ax[0])
    if ax[2] > SAGITTAL_MIN:
        return "axial", float(ax[0])
    if ax[1] > SAGITTAL_MIN:
        return "coronal", float(ax[0])
    return "oblique", float(ax[0])


def _contrast(series: SeriesInfo) -> tuple[float, str]:
    """(rank, label): 3 T2, 2 STIR / T2 by TE-TR, 1.5 T2*, 1 unknown, 0 T1 (rejected)."""
    text = series.first.text
    has_t2, has_t1 = bool(_T2_RE.search(text)), bool(_T1_RE.search(text))
    if has_t2 and _T2STAR_RE.search(text):
        return 1.5, "T2*"
    if _STIR_RE.search(text):
        return 2, "STIR"
    if has_t2 and not has_t1:
        return 3, "T2"
    if has_t1 and not has_t2:
        return 0, "T1"
    te, tr = series.first.echo_time, series.first.repetition_time
    if te is not None and tr is not None:
        if te >= 60 and tr >= 1500:
            return 2, f"T2 by TE={te:g} ms/TR={tr:g} ms"
        if te < 40 and tr < 1000:
            return 0, f"T1 by TE={te:g} ms/TR={tr:g} ms"
    return 1, "contrast unknown"


def classify_mr_series(series: SeriesInfo) -> SeriesInfo:
    """Fill ``label``, ``eligible``, ``rank``, ``geometry``, ``sorted_paths`` for one series."""
    files = series.files
    f0 = series.first
    n = len(files)
    desc = f0.series_description
    iops = {tuple(np.round(f.geometry.iop, 3)) for f in files if f.geometry is not None}
    if "LOCALIZER" in f0.image_type or _LOCALIZER_RE.search(desc) or len(iops) > 1:
        series.label = "localizer"
        return series
    if any(f.frames > 1 and not f.frame for f in files):
        series.label = "multi-frame image without functional groups"
        return series
    problem = multiframe.dimension_problem([(f.stack, f.temporal) for f in files if f.frame])
    if problem:
        series.label = problem
        return series
    if n < MIN_MRI_SLICES:
        series.label = f"too few slices (< {MIN_MRI_SLICES})"
        return series
    if any(f.geometry is None for f in files):
        series.label = "no geometry (ImageOrientationPatient/ImagePositionPatient/PixelSpacing)"
        return series
    plane, nx = _orientation(files[0].geometry.iop)
    crank, clabel = _contrast(series)
    if plane != "sagittal":
        series.label = f"{plane} {clabel}"
        return series
    if crank == 0:
        series.label = f"sagittal {clabel}"
        return series
    try:
        geom = series_geometry([f.geometry for f in files], f"series {series.series_uid}")
    except DicomError as e:
        msg = str(e).split(": ", 1)[-1]
        series.label = "inconsistent geometry (" + msg.split(" (")[0].split(":")[0] + ")"
        log.info("series %s rejected: %s", series.series_uid, e)
        return series
    original = 0 if (f0.image_type[:1] == ("DERIVED",)) else 1
    series.label = f"sagittal {clabel} ('{desc}')" if desc else f"sagittal {clabel}"
    series.eligible = True
    series.rank = (crank, original, n, f0.series_number, series.series_uid)
    series.geometry = geom
    series.sorted_paths = list(dict.fromkeys(files[i].path for i in geom.order))
    series.label += f", {n} slices, |normal x|={nx:.2f}"
    frames = series.frames_text()
    if frames:
        series.label += f" ({frames})"
    return series


def choose_mri(series_list: list[SeriesInfo]) -> tuple[SeriesInfo | None, str]:
    """Pick the sagittal T2 among one patient's MR series; (choice or None, reason)."""
    for s in series_list:
        classify_mr_series(s)
    eligible = sorted((s for s in series_list if s.eligible), key=lambda s: s.rank, reverse=True)
    rejected = [(s.label, s.n_files) for s in series_list if not s.eligible]
    head = _plural(len(series_list), "MR series")
    if not series_list:
        return None, "no MR series"
    if not eligible:
        return None, f"{head}; rejected: {_rejections(rejected)}"
    best = eligible[0]
    reason = f"MR {best.label}; {head}"
    others = [(s.label.split(", ")[0], s.n_files) for s in eligible[1:]]
    if others:
        reason += f"; not chosen: {_rejections(others)}"
    studies = {s.study_uid for s in eligible}
    if len(studies) > 1:
        reason += f"; eligible series in {len(studies)} studies"
    if rejected:
        reason += f"; rejected: {_rejections(rejected)}"
    return best, reason


# --------------------------------------------------------------------------- manifest


def _fmt(values) -> str:
    return ";".join(f"{float(v):.6g}" for v in values)


def index_cohort(root, *, progress: bool = False, num_workers: int = 0) -> pd.DataFrame:
    """The manifest of a cohort folder (see module docstring and docs/CONTRACTS.md).

    Returns a DataFrame with :data:`COLUMNS`, one row per (patient_id, role) found, sorted by
    patient_id then role; ``attrs["skipped"]`` (reason -> count), ``attrs["missing"]`` (list of
    {patient_id, role, reason}), ``attrs["excluded"]`` (list of {patient_id, reason, detail}:
    patients whose headers disagree on PatientName / PatientBirthDate / PatientSex get no rows,
    reason "conflicting identities"; the values are compared as hashes and never written),
    ``attrs["n_files"]`` (files walked).
    """
    root = os.fspath(root)
    infos, skipped = scan_files(root, progress=progress, num_workers=num_workers)
    by_patient: dict[str, list[FileInfo]] = defaultdict(list)
    for f in infos:
        by_patient[f.patient_id].append(f)
    rows, missing, excluded = [], [], []
    for pid in sorted(by_patient):
        files = by_patient[pid]
        fields = identity_conflict(files)
        if fields:
            n_studies = len({f.study_uid for f in files})
            excluded.append({"patient_id": pid, "reason": REASON_CONFLICTING_IDENTITIES,
                             "detail": f"DICOM headers under this PatientID disagree on "
                                       f"{', '.join(fields)} ({len(files)} files, {n_studies} "
                                       "studies): two people? No series used"})
            log.warning("patient %s excluded: DICOM headers disagree on %s", pid, ", ".join(fields))
            continue
        xrays = [f for f in files if f.modality in XRAY_MODALITIES]
        best, reason = choose_xray(xrays)
        if best is None:
            missing.append({"patient_id": pid, "role": "xray", "reason": reason})
        else:
            rows.append({
                "patient_id": pid, "role": "xray", "source": "dicom", "paths": best.path,
                "study_uid": best.study_uid, "series_uid": best.series_uid,
                "modality": best.modality, "series_description": best.series_description,
                "n_files": 1, "spacing_mm": _fmt(best.spacing_2d),
                "shape": f"{best.rows};{best.cols}", "reason": reason,
            })
        groups: dict[tuple[str, str], list[FileInfo]] = defaultdict(list)
        for f in files:
            if f.modality == "MR":
                groups[(f.study_uid, f.series_uid)].append(f)
        series_list = [SeriesInfo(st, se, sorted(fs, key=lambda f: f.path))
                       for (st, se), fs in groups.items()]
        series_list.sort(key=lambda s: (s.first.series_number, s.study_uid, s.series_uid))
        best_s, reason = choose_mri(series_list)
        if best_s is None:
            missing.append({"patient_id": pid, "role": "mri_t2_sag", "reason": reason})
        else:
            g = best_s.geometry
            rows.append({
                "patient_id": pid, "role": "mri_t2_sag", "source": "dicom",
                "paths": ";".join(best_s.sorted_paths), "study_uid": best_s.study_uid,
                "series_uid": best_s.series_uid, "modality": "MR",
                "series_description": best_s.first.series_description,
                "n_files": best_s.n_files, "spacing_mm": _fmt(g.spacing),
                "shape": ";".join(str(v) for v in g.shape), "reason": reason,
            })
    for m in missing:
        log.warning("patient %s: no %s: %s", m["patient_id"], m["role"], m["reason"])
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.sort_values(["patient_id", "role"], kind="stable").reset_index(drop=True)
    df["n_files"] = df["n_files"].astype("int64")
    df.attrs["skipped"] = dict(skipped)
    df.attrs["missing"] = missing
    df.attrs["excluded"] = excluded
    df.attrs["n_files"] = len({f.path for f in infos}) + sum(skipped.values())
    log.info("indexed %s: %d files, %d manifest rows, skipped %s", root, df.attrs["n_files"],
             len(df), dict(skipped))
    return df


def write_manifest(df: pd.DataFrame, path) -> str:
    """Write the manifest as CSV (UTF-8, one header line, no index). Returns the path."""
    path = os.fspath(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CohortError(f"{path}: manifest to write lacks columns {missing}")
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    atomic.write_csv(df[cols], path)  # temp + rename: a crash never leaves half a manifest
    return path


def _row_name(path: str, i: int, row: Mapping) -> str:
    return (f"{path}: line {i + 2} (patient_id={row.get('patient_id', '')!s}, "
            f"role={row.get('role', '')!s})")


def read_manifest(path, root=None) -> pd.DataFrame:
    """Read and validate a (possibly hand-edited) manifest CSV.

    Checks required columns, role in {"xray", "mri_t2_sag"}, source in {"dicom", "nifti", "mha"},
    non-empty patient_id/paths, one row per (patient_id, role), a NIfTI row points at one
    .nii/.nii.gz file; with ``root`` also that every file exists. CohortError names the file,
    line, patient and role. All columns are strings except ``n_files`` (integer).
    """
    path = os.fspath(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as e:
        raise CohortError(f"{path}: manifest not found") from e
    except Exception as e:
        raise CohortError(f"{path}: unreadable manifest CSV ({type(e).__name__}: {e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CohortError(f"{path}: manifest lacks required column(s) {missing}; "
                          f"has {list(df.columns)}")
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]].copy()
    for c in df.columns:
        df[c] = df[c].str.strip()
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(df.to_dict("records")):
        where = _row_name(path, i, row)
        if not row["patient_id"]:
            raise CohortError(f"{where}: empty patient_id")
        if row["role"] not in ROLES:
            raise CohortError(f"{where}: unknown role {row['role']!r} (expected one of {ROLES})")
        if row["source"] not in SOURCES:
            raise CohortError(f"{where}: unknown source {row['source']!r} "
                              f"(expected one of {SOURCES})")
        parts = [p for p in row["paths"].split(";") if p.strip()]
        if not parts:
            raise CohortError(f"{where}: empty paths")
        if row["source"] == "nifti" and (
                len(parts) != 1 or not parts[0].lower().endswith((".nii", ".nii.gz"))):
            raise CohortError(f"{where}: a nifti row needs exactly one .nii/.nii.gz path, "
                              f"got {row['paths']!r}")
        if row["source"] == "mha" and (len(parts) != 1 or not parts[0].lower().endswith((".mha", ".mhd"))):
            raise CohortError(f"{where}: an mha row needs exactly one .mha/.mhd path, got {row['paths']!r}")
        key = (row["patient_id"], row["role"])
        if key in seen:
            raise CohortError(f"{where}: duplicate of line {seen[key] + 2} (one row per "
                              "patient and role)")
        seen[key] = i
        if row["n_files"] and not row["n_files"].isdigit():
            raise CohortError(f"{where}: n_files {row['n_files']!r} is not an integer")
        if root is not None:
            for p in resolve_paths(row, root):
                if not os.path.isfile(p):
                    raise CohortError(f"{where}: file not found: {p}")
    n = pd.to_numeric(df["n_files"].replace("", None))
    df["n_files"] = n.astype("int64") if n.notna().all() else n.astype("Int64")
    return df


def resolve_paths(row, root) -> list[str]:
    """Absolute paths of a manifest row (``paths`` ";"-joined, relative to ``root`` or absolute)."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    value = row["paths"] if isinstance(row, (Mapping, pd.Series)) else row
    parts = [p.strip() for p in str(value).split(";") if p.strip()]
    if not parts:
        pid = row.get("patient_id", "?") if isinstance(row, (Mapping, pd.Series)) else "?"
        raise CohortError(f"manifest row for patient {pid}: empty paths")
    return [os.path.normpath(os.path.join(root, os.path.expanduser(p))) for p in parts]


__all__ = [
    "COLUMNS",
    "ROLES",
    "choose_mri",
    "choose_xray",
    "index_cohort",
    "read_manifest",
    "resolve_paths",
    "scan_files",
    "write_manifest",
]
