"""The job's stages, each a function of ``(config, workdir)``:

    index -> cohort -> preprocess -> cross-validate (grader, outcome, clinical-only twin)
          -> baselines -> heat maps -> report

``launch.py`` picks the stages from ``--mode``. Everything written under ``workdir`` is keyed by
the pseudonymous ``patient_id``; no DICOM PHI leaves the readers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic, timing
from lumbarjax.data import clinical as clinical_lib
from lumbarjax.data import cohort as cohort_lib
from lumbarjax.data import index as index_lib
from lumbarjax.data import preprocess as preprocess_lib
from lumbarjax import synthetic
from lumbarjax.pipelines.public_inputs import pretraining_inputs
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.schema import LEVELS
from lumbarjax.pipelines import crossval, xray_levels, xray_pretrain
from lumbarjax.pipelines.pretrain import load_pretrained, localises, pretrain_encoder
from lumbarjax.pipelines.tasks import get_task
from lumbarjax.workers import process_map


def _dump(obj, path):
    from lumbarjax.eval.metrics import to_jsonable
    atomic.write_json(path, to_jsonable(obj))


# -- cohort -------------------------------------------------------------------------------

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
        _dump({"skipped_files": manifest.attrs.get("skipped", {}),
               "missing_series": manifest.attrs.get("missing", []),
               "excluded_patients": manifest.attrs.get("excluded", [])}, report)
        index_lib.write_manifest(manifest, path)
    manifest.attrs["root"] = root
    return manifest


@dataclasses.dataclass
class Cohort:
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
    _dump(cohort.summary, os.path.join(workdir, "cohort_summary.json"))
    return cohort


def sweep_temporary(config, workdir: str) -> int:
    """Remove the temporary files a killed run left in ``workdir`` (and the cache folders when
    they lie elsewhere); returns how many. Logged, since it means an earlier run was interrupted."""
    folders = [workdir] + [d for d in (config.data.cache_dir,) if d and not
                           os.path.abspath(d).startswith(os.path.abspath(workdir) + os.sep)]
    removed = [p for d in folders for p in atomic.sweep_temporary(d)]
    if removed:
        logging.warning("removed %d temporary file(s) of an interrupted run, e.g. %s",
                        len(removed), removed[0])
    return len(removed)


# -- the whole job ------------------------------------------------------------------------

def stage_pretrain(config, workdir: str, outcome_ids=()):
    """Pretrain the outcome model's MRI encoder on ``config.pretrain``'s labelled cohort.

    Returns ``(encoder_params, summary)``, or None when ``pretrain.enabled`` is False. With
    ``pretrain.encoder_file`` the encoder is loaded from that file (its model card must fit the
    config) instead. Otherwise the cohort is ``pretrain.cohort_dir`` read as
    ``pretrain.format``: "lumbarjax" (any indexable folder + the labels table ``pretrain.labels``,
    default ``<cohort_dir>/stenosis_labels.csv``), "rsna2024" or "spider" (the public sets as
    downloaded, ``lumbarjax.data.public``). With ``pretrain.make_demo`` and no data there, the
    synthetic pretraining cohort is written first (in the RSNA layout for "rsna2024").
    Everything goes to ``<workdir>/pretrain``. A patient id present in both cohorts is an error:
    the outcome cohort's images must not teach the encoder.
    """
    pc = config.pretrain
    if not pc.enabled:
        return None
    if pc.encoder_file:
        return load_pretrained(config, pc.encoder_file)
    pdir = os.path.join(workdir, "pretrain")
    os.makedirs(pdir, exist_ok=True)
    fmt = pc.format or "lumbarjax"
    root = pc.cohort_dir or os.path.join(workdir, "pretrain_cohort" if fmt == "lumbarjax" else f"pretrain_{fmt}")
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.data.manifest, sub.data.cache_dir, sub.data.make_demo = "", "", False
    sub.clinical.mri_label_columns = (pc.label_column,)
    public = pretraining_inputs(pc, root, pdir, seed=int(config.seed) + 1,
                                num_workers=int(config.data.num_workers))
    if public is not None:
        manifest, labels, training_data, centres = public
        sub.data.cohort_dir, sub.data.clinical_file = root, labels
    else:
        training_data = {"format": "lumbarjax", "folder": os.path.basename(os.path.normpath(root))}
        labels = pc.labels or os.path.join(root, "stenosis_labels.csv")
        if not os.path.exists(labels) or (not pc.labels and synthetic.is_synthetic_incomplete(root)):
            if not pc.make_demo:
                raise ConfigError(f"config.pretrain: no labels table {labels!r} (set pretrain.labels, or "
                                  "pretrain.make_demo=True for the synthetic pretraining cohort)")
            logging.info("writing the synthetic pretraining cohort (%d patients) to %s", pc.demo_patients, root)
            synthetic.make_pretraining_cohort(root, n_patients=int(pc.demo_patients), seed=int(config.seed) + 1,
                                              num_workers=int(config.data.num_workers))
        sub.data.cohort_dir, sub.data.clinical_file = root, labels
        manifest = stage_index(sub, pdir)
        centres = None  # a lumbarjax-layout cohort has level centres only with a synthetic ground truth
        gt_csv = os.path.join(root, "ground_truth.csv")
        if localises(pc) and os.path.exists(gt_csv):
            from lumbarjax.pipelines.localise import centres_from_truth
            centres = centres_from_truth(pd.read_csv(gt_csv, dtype={"patient_id": str}))
    cohort = stage_cohort(sub, pdir, manifest)
    shared = sorted(set(cohort.records["patient_id"]) & set(outcome_ids))
    if shared:
        raise CohortError(f"pretraining and outcome cohorts share {len(shared)} patient id(s), e.g. "
                          f"{shared[:5]}: pretrain on other patients")
    return pretrain_encoder(config, pdir, cohort.records, cohort.cache, training_data=training_data,
                            centres_mm=centres)


def stage_mri_scores(config, workdir: str, cohort: Cohort):
    """Stage-1 MRI scores of the outcome cohort: the pretrained stenosis grader's (encoder +
    grading head) expected grade and class probabilities per patient (``stage1.mri_scores``),
    written to ``<workdir>/mri_scores.csv``. Out of sample for every patient: the pretraining
    cohort shares no patient with this one (``stage_pretrain`` checks). A file with a
    localiser places the levels (:func:`stage_mri_levels`); a by-level file also grades every
    level. Heat maps of the score:
    :func:`stage_mri_heatmaps`. Returns ``(scores, {"mri_levels": summary or None,
    "mri_score_heatmaps": summary or None})``; ``(None, {})`` when the encoder file has no
    grading head."""
    from lumbarjax.models import encoder_file, stage1
    from lumbarjax.pipelines.pretrain import encoder_path, file_grader, grader_probs
    path = encoder_path(config, workdir)
    if encoder_file.load_grading_head(path) is None:
        logging.warning("%s has no grading head: no MRI stage-1 scores", path)
        return None, {}
    grader = file_grader(config, path)
    probs, centres = grader_probs(config, grader, cohort.cache)
    levels = stage_mri_levels(config, workdir, cohort, grader.card, probs, centres) if centres is not None else None
    present = np.isfinite(probs).reshape(len(probs), -1).all(axis=1)
    scores = stage1.mri_scores(cohort.records["patient_id"].to_numpy(), np.nan_to_num(probs), present,
                               detail=str(config.outcome.stage1_mri))
    atomic.write_csv(scores, os.path.join(workdir, "mri_scores.csv"))
    return scores, {"mri_levels": levels, "mri_score_heatmaps": stage_mri_heatmaps(config, workdir, cohort, grader, centres)}


MRI_HEATMAPS_JSON = os.path.join("mri_score_heatmaps", "summary.json")
TIMING_JSON = "timing.json"  # lumbarjax.timing.breakdown() of the run


def stage_mri_heatmaps(config, workdir: str, cohort: Cohort, grader, centres: np.ndarray | None = None):
    """Integrated-gradients heat maps of the stage-1 MRI score — the expected grade of an
    encoder file's grader (``train.pretrain.file_grader``; summed over the levels of a by-level
    grader, placed at ``centres``), the
    MRI column the outcome's linear models read — for the first ``config.explain.max_patients``
    patients with an MRI (the grader never saw any of them). With the localiser's ``centres``
    ((N, L, 2) px of the cache rows) the maps are summarised level by level at the placed
    levels (``at_placed_levels``: where each map points; no ground truth needed); where a
    synthetic ground truth exists they are scored by the pointing game at the true stenotic
    level, at the true disc centres and (``at_placed_levels.vs_truth``) at the placed ones.
    Writes the maps to ``<workdir>/mri_score_heatmaps/`` and returns (and writes) their
    summary; None when ``explain.max_patients`` is 0."""
    from lumbarjax.data.pipeline import CachedExamples
    from lumbarjax.eval.localisation import attribution_by_level, centres_px_to_mm, localisation_summary
    from lumbarjax.explain import heatmaps as heatmaps_lib
    from lumbarjax.pipelines import mri_levels
    from lumbarjax.pipelines.pretrain import with_mri
    n = int(config.explain.max_patients)
    if not n:
        return None
    cache = cohort.cache
    if grader.by_level:
        source = mri_levels.level_source(config, cache, centres)
        rows = np.flatnonzero(np.isfinite(centres).all(axis=(1, 2)))[:n]
        what = "the level grader's expected grades summed over the levels"
    else:
        source = CachedExamples(cache, {}, mri_shape=tuple(config.mri.shape), xray_shape=tuple(config.xray.shape))
        rows = np.flatnonzero(with_mri(cache))[:n]
        what = "the pretrained stenosis grader's expected grade (the stage-1 MRI score)"
    if not len(rows):
        return None
    out_dir = os.path.join(workdir, os.path.dirname(MRI_HEATMAPS_JSON))
    items = heatmaps_lib.mri_grade_heatmaps(config, grader.model, grader.variables, source, rows, cache, out_dir)
    delta = np.abs([it["delta"] for it in items])
    hm = {"n": len(items), "completeness_abs_median": float(np.median(delta)),
          "completeness_abs_max": float(delta.max()),
          "definition": f"integrated gradients of {what} over the sagittal volume (baseline: "
                        f"config.explain.baseline={config.explain.baseline!r}), the first {len(items)} "
                        "patients with an MRI; pointing game: the largest positive attribution lies in "
                        "the true stenotic level"}
    placed = None
    if centres is not None:
        row_of = {pid: i for i, pid in enumerate(cache["patient_id"].astype(str))}
        placed = [centres_px_to_mm(it["affine"], it["attr"].shape, centres[row_of[it["patient_id"]]])
                  for it in items]
        hm["at_placed_levels"] = attribution_by_level([it["attr"] for it in items], [it["affine"] for it in items],
                                                      placed, patient_ids=[it["patient_id"] for it in items])
        hm["at_placed_levels"]["definition"] = ("level regions between the disc centres the encoder file's "
                                                "localiser placed on each scan")
    gt_csv = os.path.join(cohort_dir(config, workdir), "ground_truth.csv")
    if os.path.exists(gt_csv):
        t = pd.read_csv(gt_csv, dtype={"patient_id": str}).set_index("patient_id")
        keep = [j for j, it in enumerate(items) if it["patient_id"] in t.index]
        truth = t.loc[[items[j]["patient_id"] for j in keep]].reset_index()
        attrs, affines = [items[j]["attr"] for j in keep], [items[j]["affine"] for j in keep]
        kw = dict(n_boot=int(config.eval.n_boot), seed=int(config.seed))
        loc = localisation_summary(attrs, affines, truth, **kw)
        hm.update({k: loc[k] for k in ("n", "n_excluded", "hit_rate", "mean_fraction", "chance_hit_rate",
                                       "by_level", "n_no_positive_attribution")})
        if placed is not None:
            # the same pointing game with the regions drawn from the placed centres instead of the truth's
            moved = truth.assign(**{f"disc_{lv}_{ax}_mm": [placed[j].get(lv, (np.nan,) * 3)[a] for j in keep]
                                    for lv in LEVELS for a, ax in enumerate("xyz")})
            at = localisation_summary(attrs, affines, moved, **kw)
            hm["at_placed_levels"]["vs_truth"] = {k: at[k] for k in ("n", "n_excluded", "hit_rate", "by_level")}
    atomic.write_json(os.path.join(workdir, MRI_HEATMAPS_JSON), hm)
    return hm


MRI_LEVELS_JSON = os.path.join("mri_levels", "mri_levels.json")


def stage_mri_levels(config, workdir: str, cohort: Cohort, card: dict, probs: np.ndarray,
                     centres: np.ndarray) -> dict:
    """The encoder file's localiser (and, by level, its level grader) on the outcome cohort:
    ``<workdir>/mri_levels/levels.csv`` (per patient the localised centres, px, and by level
    each level's expected grade), the summary ``mri_levels.json``
    (``train.mri_levels.outcome_cohort_summary``: with a synthetic ground truth the localiser
    error in mm and, by level, the per-level QWK; the pretraining's held-out localiser error and
    QWK, from the encoder file's ``card``); its heat maps: :func:`stage_mri_heatmaps`.
    ``probs``: (N, L, K) by level, (N, K) for a whole-volume grader."""
    from lumbarjax.pipelines import mri_levels
    out_dir = os.path.join(workdir, "mri_levels")
    os.makedirs(out_dir, exist_ok=True)
    k = int(card["labels"]["num_grades"])
    gt_csv = os.path.join(cohort_dir(config, workdir), "ground_truth.csv")
    truth = pd.read_csv(gt_csv, dtype={"patient_id": str}) if os.path.exists(gt_csv) else None
    cache = cohort.cache
    by_level = np.ndim(probs) == 3
    summary = mri_levels.outcome_cohort_summary(probs if by_level else None, centres, cache, truth, num_grades=k)
    pre = card["levels"]
    summary["pretraining"] = {"crop_mm": pre.get("crop_mm"), "crop_rows": pre.get("crop_rows"),
                              "val_qwk_all_levels" if by_level else "val_qwk": card.get("validation", {}).get("qwk"),
                              "localiser_val": pre.get("localiser", {}).get("val"),
                              "localiser_baseline_mean_position": pre.get("localiser", {}).get("baseline_mean_position")}
    tab = pd.DataFrame({"patient_id": cache["patient_id"].astype(str).to_numpy()})
    for j, lv in enumerate(LEVELS):
        tab[f"row_px_{lv}"], tab[f"col_px_{lv}"] = centres[:, j, 0], centres[:, j, 1]
        if by_level:
            tab[f"expected_grade_{lv}"] = np.asarray(probs)[:, j] @ np.arange(k, dtype=float)
    atomic.write_csv(tab.round(4), os.path.join(out_dir, "levels.csv"))
    atomic.write_json(os.path.join(workdir, MRI_LEVELS_JSON), summary)
    return summary


def stage_crossval(config, workdir: str, cohort: Cohort) -> dict:
    """Cross-validate every task in ``config.tasks``; returns OOF tables and heat-map items."""
    results: dict[str, Any] = {}
    for kind in config.tasks:
        task = get_task(kind)
        td = crossval.prepare_task(kind, config, cohort.records, cohort.cache)
        results[f"{kind}_task"] = td
        hook = task.heatmaps(config, workdir) if task.explains(config) else None
        encoder = None
        if task.uses_pretrained_encoder(config) and kind == "grader":
            with timing.stage("xray_pretrain"):
                encoder, results["xray_pretrain"] = xray_pretrain.stage_xray_pretrain(config, workdir)
        elif task.uses_pretrained_encoder(config):
            with timing.stage("pretrain"):
                encoder, results["pretrain"] = stage_pretrain(config, workdir,
                                                              cohort.records["patient_id"])
            with timing.stage("mri_scores"):
                results["mri_scores"], mri_extra = stage_mri_scores(config, workdir, cohort)
            results.update(mri_extra)
        for key, sub, clinical_only in task.variants(config[kind]):
            with timing.stage(key):
                results[key] = crossval.run_crossval(
                    td, config, os.path.join(workdir, sub), clinical_only=clinical_only,
                    after_fold=None if clinical_only else hook,
                    encoder_params=None if clinical_only else encoder)
        results[f"{kind}_heatmaps"] = hook
        with timing.stage(f"{kind}_after_crossval"):
            results[kind], extra = task.after_crossval(config, workdir, td, results[kind],
                                                       cohort_dir(config, workdir))
        results.update(extra)
    return results


def stage_baselines(config, workdir: str, td: crossval.TaskData) -> dict:
    """scikit-learn clinical-only baselines on the outcome task's own folds."""
    from lumbarjax.eval.baselines import clinical_baselines
    feats = list(config.outcome.features.numeric) + list(config.outcome.features.categorical)
    out = {}
    for head in td.heads:
        df = clinical_baselines(td.records, td.folds, head, features=feats, seed=int(config.seed))
        atomic.write_csv(df, os.path.join(workdir, f"baseline_{head}.csv"))
        out[head] = df
    return out


def stage1_records(config, workdir: str, td: crossval.TaskData, grader_oof: pd.DataFrame | None,
                   mri_scores: pd.DataFrame | None) -> tuple[pd.DataFrame, dict, list]:
    """The outcome task's records with the stage-1 score columns joined (``models.stage1``):
    the grader's out-of-fold X-ray grades (checked fold-honest against
    ``<workdir>/grader/fold_*/split.json``) and the pretrained grader's MRI stenosis scores.
    Returns ``(records, {"clinical": cols, "xray": cols, "mri": cols}, notes)``."""
    from lumbarjax.models import stage1
    feats = list(config.outcome.features.numeric) + list(config.outcome.features.categorical)
    cols = {"clinical": [c for c in feats if c in td.records.columns], "xray": [], "mri": []}
    records, notes = td.records, []
    if grader_oof is not None and len(grader_oof):
        n = stage1.check_fold_honest(grader_oof, run_dir=os.path.join(workdir, "grader"),
                                     what="X-ray grades")
        records, cols["xray"] = stage1.attach(records, stage1.xray_scores(
            grader_oof, detail=str(config.outcome.stage1_xray)))
        n_scored = int(np.isfinite(records[cols["xray"][0]].to_numpy(float)).sum())
        notes.append(f"X-ray: the grader's out-of-fold grades ({', '.join(cols['xray'])}); {n} grader "
                     f"predictions checked fold-honest, {n_scored} of {len(records)} outcome patients "
                     "scored (the rest: missing, imputed with an indicator)")
    else:
        notes.append("X-ray scores left out: the grader did not run (config.tasks)")
    if mri_scores is not None and len(mri_scores):
        records, cols["mri"] = stage1.attach(records, mri_scores)
        n_scored = int(np.isfinite(records[cols["mri"][0]].to_numpy(float)).sum())
        notes.append(f"MRI: the pretrained stenosis grader's scores ({', '.join(cols['mri'])}); it never "
                     f"saw an outcome patient, {n_scored} of {len(records)} outcome patients scored")
    else:
        notes.append("MRI scores left out: no pretrained encoder with a grading head")
    return records, cols, notes


def linear_grids(config, td: crossval.TaskData, notes: list) -> dict:
    """``{head: None (the full linear grid) | [reference candidate]}``: a head with fewer than 8
    labelled training patients in some fold gets no inner penalty choice."""
    from lumbarjax.selection import linear
    grids = {}
    for h in td.heads:
        y = pd.to_numeric(td.records[h], errors="coerce").to_numpy(float)
        fewest = min(int((np.isfinite(y) & (td.folds != f)).sum()) for f in np.unique(td.folds))
        grids[h] = None
        if fewest < 8:  # linear.fit_penalised's inner split needs >= 2 folds of >= 4 patients
            task = "binary" if h in config.outcome.model.binary_heads else "regression"
            grids[h] = [linear.REFERENCE[task]]
            notes.append(f"{h}: {fewest} labelled training patients in a fold are too few for an "
                         f"inner penalty choice; the linear family is the reference model "
                         f"{grids[h][0].name} only")
    return grids


def stage_ablation(config, workdir: str, td: crossval.TaskData, stage1: tuple, root: str,
                   grader_oof: pd.DataFrame | None = None) -> dict:
    """Source ablation of every outcome head on the outcome task's folds (lumbarjax.selection.ablation):
    clinical / + X-ray / + MRI / all three (``stage1`` = :func:`stage1_records`'s result), each
    with the penalised linear family, vs clinical logistic regression (ridge for VAS), with the
    Bayes-optimal values of a synthetic cohort, its learnable ceiling (the perfect-stage-1 row)
    and ``stage1_vs_truth`` (``eval.ablation.stage1_vs_truth``: the MRI score's r with the true
    severity, the X-ray grades' QWK with the true grade). Sets without their source's scores are
    left out and named in ``notes``. Writes and returns ``<workdir>/ablation.json``."""
    from lumbarjax.selection import ablation as ablation_lib
    records, cols, notes = stage1[0], stage1[1], list(stage1[2])
    sets = ablation_lib.feature_sets(cols["clinical"], cols["xray"], cols["mri"])
    grids = linear_grids(config, td, notes)
    bayes = bayes_ceilings(root) or {}
    truth_csv = os.path.join(root, "ground_truth.csv")
    quality = None
    if bayes and os.path.exists(truth_csv):   # a synthetic cohort: the perfect-stage-1 row
        truth = pd.read_csv(truth_csv, dtype={"patient_id": str})
        quality = ablation_lib.stage1_vs_truth(records, cols, truth, grader_oof, n_boot=int(config.eval.n_boot),
                                               seed=int(config.seed), num_grades=int(config.clinical.num_grades))
        records, true_cols = ablation_lib.with_true_latents(records, cols, truth)
        if true_cols:
            sets[ablation_lib.PERFECT_STAGE1] = [*cols["clinical"], *true_cols]
            notes.append(f"'{ablation_lib.PERFECT_STAGE1}': the clinical columns + the generator's "
                         f"true {', '.join(true_cols)} in place of the image scores (ground truth, "
                         "evaluation only): the ceiling a perfect stage 1 reaches at this cohort size")
    jobs = [(records, td.folds, h, sets, dict(n_boot=int(config.eval.n_boot), seed=int(config.seed),
                                              bayes=bayes.get(h), grid=grids[h])) for h in td.heads]
    heads = []
    for h, result in zip(td.heads, process_map(ablation_lib.ablation_or_error, jobs, int(config.data.num_workers))):
        if isinstance(result, str):  # e.g. a fold's training rows with one class
            logging.warning("ablation of %s not computed: %s", h, result)
            notes.append(f"{h}: not computed ({result})")
        else:
            heads.append(result)
    out = {"feature_sets": {k: list(v) for k, v in sets.items()}, "notes": notes, "heads": heads,
           "stage1_vs_truth": quality,
           "definition": "out-of-fold AUC (binary) or MAE in VAS mm (regression) of the penalised "
                         "linear family (lumbarjax.selection.linear; penalty chosen in the training "
                         "folds) on each column set; difference = set − clinical logistic "
                         "regression (ridge for VAS) on the same patients and folds"}
    _dump(out, os.path.join(workdir, "ablation.json"))
    return out


def stage_selection(config, workdir: str, td: crossval.TaskData, results: dict, stage1: tuple):
    """The outcome model the report leads with (``train.select``): per outer fold and head, the
    convex combination of ``config.outcome.stack.candidates`` (the penalised linear family on
    [clinical + X-ray + MRI scores], the fusion network, its clinical-only twin, …) whose
    weights are fitted on the inner validation patients (``stage1`` = :func:`stage1_records`'s
    result; ``results`` holds the networks' out-of-fold tables). Writes
    ``<workdir>/outcome/selected_oof.csv`` and ``selection.json``; returns ``(oof, summary)``."""
    from lumbarjax.selection.select import NETWORK_DIRS, stack_models
    records, cols, notes = stage1[0], stage1[1], list(stage1[2])
    grids = linear_grids(config, td, notes)
    found = {name: (results[key], os.path.join(workdir, NETWORK_DIRS[name]))
             for name, key in (("network", "outcome"), ("clinical network", "clinical_only"))
             if results.get(key) is not None}
    sc = config.outcome.stack
    oof, summary = stack_models(records, td.folds, td.heads, tuple(config.outcome.model.binary_heads),
                                cols["clinical"] + cols["xray"] + cols["mri"],
                                {k: v[0] for k, v in found.items()}, {k: v[1] for k, v in found.items()},
                                os.path.join(workdir, "outcome"), candidates=tuple(sc.candidates),
                                clinical_candidates=tuple(sc.clinical_candidates), image_gate=bool(sc.image_gate),
                                primary_head=str(sc.primary_head), shrink=float(sc.shrink),
                                weight_step=float(sc.weight_step), seed=int(config.seed),
                                grid_for=grids.get, reference_features=cols["clinical"],
                                num_workers=int(config.data.num_workers))
    summary["notes"] = notes + summary["notes"]
    return oof, summary


def bayes_ceilings(root: str) -> dict | None:
    """The Bayes-optimal value of every outcome head of a synthetic cohort, None for any other
    cohort: ``{binary head: {"auc"}}`` (``ground_truth_summary.json``: the population AUC of the
    true outcome probabilities) and ``{VAS head: {"mae", "r2", "mae_empirical", "r2_empirical",
    "n"}}`` (``synthetic.bayes_vas`` from ``clinical.csv`` and ``ground_truth.csv``: the best
    prediction knows the pre-operative VAS and the true success probability)."""
    gt_path = os.path.join(root, "ground_truth_summary.json")
    if not os.path.exists(gt_path):
        return None
    with open(gt_path) as f:
        summary = json.load(f)
    b = summary["bayes_auc"]
    names = {"zcq_success": "zcq_success", "back_pain_improved50": "back_improved50",
             "leg_pain_improved50": "leg_improved50"}
    out = {head: {"auc": b[src]["population"]} for head, src in names.items() if src in b}
    clinical_csv, truth_csv = os.path.join(root, "clinical.csv"), os.path.join(root, "ground_truth.csv")
    if os.path.exists(clinical_csv) and os.path.exists(truth_csv):
        vas = synthetic.bayes_vas(pd.read_csv(clinical_csv, dtype={"patient_id": str}),
                                  pd.read_csv(truth_csv, dtype={"patient_id": str}),
                                  regime=summary.get("generative_model", {}).get("beta", "demo"),
                                  seed=int(summary.get("seed", 0)))
        out.update({h: v for h, v in vas.items() if h in synthetic.VAS_HEADS})
    return out


def xray_heatmap_summary(config, items: list, root: str) -> dict:
    """The grader's heat maps in numbers: IG completeness |Δ| (expected-grade units) and, on a
    synthetic cohort (``ground_truth.csv``), the level-by-level pointing game against the film's
    worst degenerated level (``eval.localisation.film_level_summary``)."""
    delta = np.abs([it["delta"] for it in items])
    out = {"n_films": len(items), "n": len(items), "completeness_abs_median": float(np.median(delta)),
           "completeness_abs_max": float(delta.max()),
           "definition": "integrated gradients of the grader's expected grade over the film (baseline: "
                         f"config.explain.baseline={config.explain.baseline!r}); pointing game: the "
                         "largest positive attribution lies in the region of a level with the film's "
                         "worst true grade (n: films scored, n_excluded: films with every level at "
                         "grade 0)"}
    gt_csv = os.path.join(root, "ground_truth.csv")
    if os.path.exists(gt_csv):
        from lumbarjax.eval.localisation import film_level_summary
        gt = pd.read_csv(gt_csv, dtype={"patient_id": str}).set_index("patient_id")
        items = [it for it in items if it["patient_id"] in gt.index and it["transform"]]
        if items:
            s = film_level_summary([it["attr"] for it in items], [it["transform"] for it in items],
                                   gt.loc[[it["patient_id"] for it in items]].reset_index(),
                                   n_boot=int(config.eval.n_boot), seed=int(config.seed))
            out.update({k: s[k] for k in ("n", "n_excluded", "hit_rate", "mean_fraction", "chance_hit_rate",
                                          "by_level", "true_level_definition")})
    return out


def stage_report(config, workdir: str, cohort: Cohort | dict, results: dict,
                 root: str) -> tuple[str, str]:
    """report.html + metrics.json from the results of ``stage_crossval`` (+ ``baselines``).
    ``cohort``: this run's Cohort, or only its summary dict (``predict.report_from_workdir``
    re-draws a finished run's report from its saved artefacts)."""
    from lumbarjax.eval.report import write_report
    summary = cohort.summary if isinstance(cohort, Cohort) else dict(cohort)
    localisation, heatmaps, completeness = None, None, None
    bayes = bayes_ceilings(root)
    hm = results.get("outcome_heatmaps")
    if hm is not None and hm.items:
        completeness = np.array([it["delta"] for it in hm.items])
        heatmaps = hm.gallery(int(config.explain.gallery))
        gt_csv = os.path.join(root, "ground_truth.csv")
        if os.path.exists(gt_csv):
            from lumbarjax.eval.localisation import localisation_summary
            gt = pd.read_csv(gt_csv, dtype={"patient_id": str}).set_index("patient_id")
            items = [it for it in hm.items if it["patient_id"] in gt.index]
            rows = gt.loc[[it["patient_id"] for it in items]].reset_index()
            localisation = localisation_summary([it["attr"] for it in items],
                                                [it["affine"] for it in items], rows,
                                                n_boot=int(config.eval.n_boot), seed=int(config.seed))
    extra = {"timing_s": results.get("timing_s", {})}
    xhm = results.get("grader_heatmaps")
    if xhm is not None and xhm.items:
        extra["xray_heatmaps"] = xray_heatmap_summary(config, xhm.items, root)
    if results.get("levels"):
        extra["xray_levels"] = xray_levels.report_summary(results["levels"])
    if results.get("mri_levels"):
        extra["mri_levels"] = results["mri_levels"]
    if results.get("mri_score_heatmaps"):
        extra["mri_score_heatmaps"] = results["mri_score_heatmaps"]
    if results.get("xray_pretrain"):
        extra["pretrained_xray_backbone"] = {k: v for k, v in results["xray_pretrain"].items()
                                             if k != "signature"}
    if results.get("pretrain"):
        extra["pretrained_mri_encoder"] = {k: v for k, v in results["pretrain"].items() if k != "signature"}
    outcome_oof, others = results.get("outcome"), {}
    if results.get("selected") is not None:  # the selected model leads; the network is a comparator
        outcome_oof, others = results["selected"], {"fusion network": results.get("outcome")}
        sel = results["selection"]
        extra["outcome_model_selection"] = {"rule": sel["rule"], "folds": sel["folds"],
                                            "mean_weights": sel["mean_weights"]}
    return write_report(
        workdir, title="lumbarjax cross-validated report", cohort_summary=summary,
        grader_oof=results.get("grader"), outcome_oof=outcome_oof, other_models=others,
        baseline_oof=results.get("baselines"), clinical_only_oof=results.get("clinical_only"),
        bayes=bayes, heatmaps=heatmaps, completeness=completeness, localisation=localisation,
        ablation=results.get("ablation"), extra=extra, n_boot=int(config.eval.n_boot), seed=int(config.seed),
        threshold=float(config.eval.threshold))


def run(config, workdir: str, mode: str) -> dict:
    """Run ``mode``: ``index`` | ``crossval`` (= the whole job incl. report) | ``demo``."""
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    timing.reset()
    with timing.stage("run"):
        sweep_temporary(config, workdir)
        with timing.stage("index"):
            manifest = stage_index(config, workdir)
        if mode == "index":
            return {"manifest": manifest}
        # The config of the models in this workdir: predict / report check against it.
        atomic.write_text(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2, sort_keys=True))
        with timing.stage("cohort"):
            cohort = stage_cohort(config, workdir, manifest)
        results = stage_crossval(config, workdir, cohort)
        if "outcome" in config.tasks:
            with timing.stage("baselines"):
                results["baselines"] = stage_baselines(config, workdir, results["outcome_task"])
            with timing.stage("ablation"):
                stage1 = stage1_records(config, workdir, results["outcome_task"],
                                        results.get("grader"), results.get("mri_scores"))
                results["ablation"] = stage_ablation(
                    config, workdir, results["outcome_task"], stage1, manifest.attrs["root"],
                    grader_oof=results.get("grader"))
            if config.outcome.select_model:
                with timing.stage("selection"):
                    results["selected"], results["selection"] = stage_selection(
                        config, workdir, results["outcome_task"], results, stage1)
        results["timing_s"] = {name.split("/", 1)[1]: row["wall_s"]
                               for name, row in timing.breakdown().items() if "/" in name}
        results["timing_s"]["total_before_report"] = time.perf_counter() - t0
        with timing.stage("report"):
            html, metrics = stage_report(config, workdir, cohort, results, manifest.attrs["root"])
    results["report"] = html
    results["metrics"] = metrics
    atomic.write_json(os.path.join(workdir, TIMING_JSON), timing.breakdown())
    logging.info("report: %s (%.0f s in all; where it went: %s)", html,
                 time.perf_counter() - t0, os.path.join(workdir, TIMING_JSON))
    return results
