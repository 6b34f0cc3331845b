"""The cohort stages of a job: the cohort folder (writing the synthetic demo cohort when asked),
the index of its images -> ``manifest.csv``, and the join of manifest, clinical table and image
cache -> :class:`Cohort` (+ ``exclusions.csv``, ``cohort_summary.json``). Used by the workflow
and by the MRI encoder's pretraining on its own graded cohort."""

from __future__ import annotations

import dataclasses
import json
import os

import pandas as pd
from absl import logging

from lumbarjax import atomic, synthetic
from lumbarjax.data import clinical as clinical_lib
from lumbarjax.data import cohort as cohort_lib
from lumbarjax.data import index as index_lib
from lumbarjax.data import preprocess as preprocess_lib
from lumbarjax.errors import ConfigError


def dump_json(obj, path):
    """``obj`` as JSON at ``path`` (numpy values made plain), written atomically."""
    from lumbarjax.eval.metrics import to_jsonable
    atomic.write_json(path, to_jsonable(obj))


def cohort_dir(config, workdir: str) -> str:
    """The cohort folder; writes the synthetic demo cohort there first when asked and absent, or
    again when an earlier write was interrupted (no completion marker: a table alone proves
    nothing, the rest of the folder may be missing)."""
    root = config.data.cohort_dir or os.path.join(workdir, "demo_cohort")
    has_table = bool(config.data.clinical_file and os.path.exists(config.data.clinical_file)) or any(
        os.path.exists(os.path.join(root, f)) for f in ("clinical.csv", "clinical.xlsx"))
    if not has_table or synthetic.is_synthetic_incomplete(root):
        if not config.data.make_demo:
            raise ConfigError(f"config.data.cohort_dir={root!r} holds no clinical.csv / "
                              "clinical.xlsx (set data.make_demo=True for the synthetic demo)"
                              if not has_table else f"{root}: the synthetic cohort there was not "
                              "written to the end (no completion marker); set data.make_demo=True "
                              "to write it again")
        logging.info("writing the synthetic demo cohort (%d patients, outcome regime %s) to %s",
                     config.data.demo_patients, config.data.demo_regime, root)
        synthetic.make_cohort(root, n_patients=int(config.data.demo_patients), seed=int(config.seed),
                              overwrite=True, regime=str(config.data.demo_regime),
                              num_workers=int(config.data.num_workers))
    return root


def clinical_path(config, root: str) -> str:
    """The clinical table to read: ``config.data.clinical_file`` when set, else
    ``clinical.csv`` or (next) ``clinical.xlsx`` in the cohort folder ``root``; a
    :class:`~lumbarjax.errors.ConfigError` when there is neither."""
    if config.data.clinical_file:
        return config.data.clinical_file
    for f in ("clinical.csv", "clinical.xlsx"):
        if os.path.exists(os.path.join(root, f)):
            return os.path.join(root, f)
    raise ConfigError(f"no clinical.csv or clinical.xlsx in {root}")


def stage_index(config, workdir: str) -> pd.DataFrame:
    """Manifest of the chosen series per patient. An existing ``manifest.csv`` (perhaps edited
    by hand) is used as it is; delete it to index again."""
    root = cohort_dir(config, workdir)
    path = config.data.manifest or os.path.join(workdir, "manifest.csv")
    report = os.path.join(workdir, "index_report.json")
    if os.path.exists(path):
        logging.info("using the existing manifest %s (delete it to re-index)", path)
        manifest = index_lib.read_manifest(path, root=root)
        if os.path.exists(report):  # patients the indexer excluded (conflicting identities)
            with open(report) as f:
                manifest.attrs["excluded"] = json.load(f).get("excluded_patients", [])
    else:
        manifest = index_lib.index_cohort(root, num_workers=int(config.data.num_workers))
        # the report first, the manifest (whose presence means "indexed") last
        dump_json({"skipped_files": manifest.attrs.get("skipped", {}),
               "missing_series": manifest.attrs.get("missing", []),
               "excluded_patients": manifest.attrs.get("excluded", [])}, report)
        index_lib.write_manifest(manifest, path)
    manifest.attrs["root"] = root
    return manifest


@dataclasses.dataclass
class Cohort:
    """The joined cohort :func:`join_cohort` returns: the included patients, their preprocess
    cache table (row for row), the excluded patients with the reason, and the summary counts
    (``cohort.cohort_summary`` plus ``validation_problems`` and ``images_decoded_this_run``)."""

    records: pd.DataFrame        # included patients (cohort.build_cohort)
    cache: pd.DataFrame          # preprocess cache table aligned with records
    exclusions: pd.DataFrame     # patient_id, reason, detail
    summary: dict


def join_cohort(config, workdir: str, manifest: pd.DataFrame) -> Cohort:
    """Join the manifest with the clinical table and decode/resample all images (cached under
    the cache folder); writes nothing else, so it can re-read a finished run's cohort."""
    root = manifest.attrs.get("root") or cohort_dir(config, workdir)
    table = clinical_lib.read_clinical(clinical_path(config, root),
                                       column_map=dict(config.clinical.column_map) or None)
    records, exclusions = cohort_lib.build_cohort(manifest, table, config.clinical, root=root)
    cohort_lib.check_not_empty(records, exclusions, table, manifest)
    problems = pd.DataFrame(records.attrs.get("validation_problems", []))
    cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
    cache = preprocess_lib.preprocess_cohort(records, config, cache_dir,
                                             num_workers=int(config.data.num_workers))
    extra_excl = cache.attrs.get("exclusions")
    if extra_excl is not None and len(extra_excl):
        exclusions = pd.concat([exclusions, extra_excl], ignore_index=True)
    summary = cohort_lib.cohort_summary(records, exclusions)
    summary["validation_problems"] = int(len(problems))
    summary["images_decoded_this_run"] = int(cache.attrs.get("n_decoded", 0))
    return Cohort(records, cache, exclusions, summary)


def stage_cohort(config, workdir: str, manifest: pd.DataFrame) -> Cohort:
    """:func:`join_cohort`, then its validation problems, exclusions and summary written to
    ``workdir``."""
    cohort = join_cohort(config, workdir, manifest)
    problems = pd.DataFrame(cohort.records.attrs.get("validation_problems", []))
    if len(problems):
        atomic.write_csv(problems, os.path.join(workdir, "validation_problems.csv"))
    atomic.write_csv(cohort.exclusions, os.path.join(workdir, "exclusions.csv"))
    dump_json(cohort.summary, os.path.join(workdir, "cohort_summary.json"))
    return cohort
