"""A public dataset folder -> the pretraining stage's inputs (manifest + labels table).

``config.pretrain.format`` says how ``config.pretrain.cohort_dir`` is laid out:

``"lumbarjax"``  any cohort folder lumbarjax can index + a labels table (the original path;
                 :func:`pretraining_inputs` returns None and the workflow indexes it).
``"rsna2024"``   the RSNA 2024 training folder (``rsna2024.read_rsna2024``); the label is the
                 patient-level canal stenosis grade ``stenosis_grade`` = the worst graded level
                 (0 normal/mild, 1 moderate, 2 severe); per-level grades are written too.
``"spider"``     the SPIDER folder (``spider.read_spider``); the label ``pfirrmann_grade`` is the
                 worst lumbar-level Pfirrmann grade minus 1 (0..4: set
                 ``pretrain.label_column="pfirrmann_grade"``, ``pretrain.num_grades=5``).

With ``pretrain.make_demo`` and an RSNA folder without train.csv, the demo's synthetic
pretraining cohort is written there in the RSNA layout first
(``rsna_layout.write_synthetic_pretraining``), so the demo reads it through the same reader a
user points at the Kaggle download.
"""

from __future__ import annotations

import os

import numpy as np

from lumbarjax import atomic
from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.settings import setting
from lumbarjax.pipelines.localise import centres_from_rsna, centres_from_spider

LABEL_NAMES = {"stenosis_grade": ("normal/mild", "moderate", "severe"),
               "pfirrmann_grade": ("Pfirrmann 1", "Pfirrmann 2", "Pfirrmann 3", "Pfirrmann 4",
                                   "Pfirrmann 5")}


# -- the public formats: name -> reader -----------------------------------------------------
# A reader ``(pc, root, *, seed, num_workers) -> (data, labels, label_column, centres)``: the
# reader's tables (``data.manifest``, ``data.counts``, ``data.write(folder)``), the labels table
# (``patient_id``, the label column and its per-level columns ``<label>_<LEVEL>``, grades
# 0..K-1), the label column it provides and the disc-level centres. A new public dataset is one
# new entry in ``READERS``.

def _read_rsna2024(pc, root: str, *, seed: int, num_workers: int):
    """The RSNA 2024 training folder; the label is the worst graded level's canal stenosis."""
    from lumbarjax.data.public import rsna2024

    if not os.path.exists(os.path.join(root, rsna2024.TRAIN_CSV)):
        if not pc.make_demo:
            raise ConfigError(f"config.pretrain.cohort_dir={root!r}: no {rsna2024.TRAIN_CSV} "
                              "(point it at the RSNA 2024 download, or set pretrain.make_demo=True)")
        from lumbarjax.synthetic.rsna_layout import write_synthetic_pretraining

        write_synthetic_pretraining(root, n_patients=int(pc.demo_patients), seed=seed,
                                    num_workers=num_workers)
    data = rsna2024.read_rsna2024(root)
    labels = rsna2024.level_grades(data.labels)
    label_col = "stenosis_grade"
    for lv in LEVELS:  # the per-level labels of pretrain.levels, under the label's own name
        labels[f"{label_col}_{lv}"] = labels[f"spinal_canal_stenosis_{lv}"]
    return data, labels, label_col, centres_from_rsna(data.coordinates)


def _read_spider(pc, root: str, *, seed: int, num_workers: int):
    """The SPIDER folder; the label is the worst lumbar level's Pfirrmann grade minus 1."""
    from lumbarjax.data.public import spider

    data = spider.read_spider(root)
    wide = spider.level_labels(data.gradings)       # pfirrmann_grade_<LEVEL>, Pfirrmann 1..5
    label_col = "pfirrmann_grade"
    level_cols = [f"{label_col}_{lv}" for lv in LEVELS]
    labels = wide.assign(**{c: wide[c] - 1 for c in level_cols})   # grades 0..4, as the label
    labels[label_col] = labels[level_cols].max(axis=1, skipna=True)
    return data, labels, label_col, centres_from_spider(data.centres)


READERS = {"rsna2024": _read_rsna2024, "spider": _read_spider}
FORMATS = ("lumbarjax",) + tuple(READERS)


def pretraining_inputs(pc, root: str, out_dir: str, *, seed: int, num_workers: int = 0):
    """For ``pc = config.pretrain``: None for ``format="lumbarjax"``, else
    ``(manifest, labels_csv, description, centres)`` — the manifest (``attrs["root"]`` =
    ``root``), the labels table written to ``out_dir`` (``patient_id``, the label column and its
    per-level columns ``<label>_<LEVEL>``, grades 0..K-1), a description of the training data
    for the model card (format, folder name, counts; no patient ids), and the disc-level
    centres (``patient_id`` -> (L, 3) LPS mm, NaN where unknown: RSNA canal coordinates, SPIDER
    disc-mask centres) for ``pretrain.levels``.

    The reader's tables (manifest, per-level labels, coordinates / centres, exclusions) are
    written to ``<out_dir>/<format>/`` for inspection.
    """
    fmt = str(setting(pc, "format") or "lumbarjax")
    if fmt not in FORMATS:
        raise ConfigError(f"config.pretrain.format={fmt!r}: expected one of {FORMATS}")
    if fmt not in READERS:   # "lumbarjax": the workflow indexes the folder itself
        return None
    os.makedirs(out_dir, exist_ok=True)
    data, labels, label_col, centres = READERS[fmt](pc, root, seed=seed, num_workers=num_workers)
    if pc.label_column != label_col:
        raise ConfigError(f"config.pretrain.label_column={pc.label_column!r}: the {fmt} reader "
                          f"provides {label_col!r}")
    data.write(os.path.join(out_dir, fmt))
    labels_csv = atomic.write_csv(labels, os.path.join(out_dir, f"{fmt}_labels.csv"))
    grades = labels[label_col].dropna().astype(int)
    description = {"format": fmt, "folder": os.path.basename(os.path.normpath(root)),
                   "patients_with_image": int(len(data.manifest)),
                   "patients_labelled": int(len(grades)),
                   "label": label_col,
                   "grade_counts": np.bincount(grades, minlength=int(pc.num_grades)).tolist(),
                   "reader_counts": data.counts}
    return data.manifest, labels_csv, description, centres


def label_names(label_column: str, num_grades: int) -> tuple[str, ...]:
    """Names of the grades 0..num_grades-1 for the model card."""
    names = LABEL_NAMES.get(label_column)
    if names is None or len(names) != num_grades:
        return tuple(f"grade {k}" for k in range(num_grades))
    return names


__all__ = ["FORMATS", "READERS", "label_names", "pretraining_inputs"]
