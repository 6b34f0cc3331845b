"""The MRI stages of the job (``workflow.run`` calls them through :func:`stage_mri_encoder` when a
task starts from the pretrained MRI encoder, ``task.pretrained_encoder == "mri"``):

    stage_pretrain      the MRI encoder pretrained on a separate graded cohort (or loaded from
                        ``pretrain.encoder_file``) -> ``<workdir>/pretrain``
    stage_mri_scores    the stage-1 MRI scores of the outcome cohort -> ``mri_scores.csv``
    stage_mri_levels    the encoder file's localiser (and level grader) on the outcome cohort
    stage_mri_heatmaps  integrated-gradients heat maps of the stage-1 MRI score
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax import atomic, synthetic, timing
from lumbarjax.jobs import cohort_stages
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.pipelines.pretrain import load_pretrained, localises, pretrain_encoder
from lumbarjax.pipelines.public_inputs import pretraining_inputs
from lumbarjax.schema import LEVELS
from lumbarjax.settings import setting

__all__ = ["MRI_HEATMAPS_JSON", "MRI_LEVELS_JSON", "stage_mri_encoder", "stage_pretrain", "stage_mri_scores",
           "stage_mri_heatmaps", "stage_mri_levels"]


def stage_mri_encoder(config, workdir: str, cohort, results):
    """The pretrained MRI encoder of a task that starts from it: :func:`stage_pretrain`, then the
    outcome cohort's stage-1 MRI scores (:func:`stage_mri_scores`); the summaries go to
    ``results`` (``workflow.RunResults``). Returns the encoder's params."""
    with timing.stage("pretrain"):
        encoder, results.pretrain = stage_pretrain(config, workdir, cohort.records["patient_id"])
    with timing.stage("mri_scores"):
        results.mri_scores, extra = stage_mri_scores(config, workdir, cohort)
    results.add(extra)
    return encoder


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
    fmt = setting(config, "pretrain.format") or "lumbarjax"
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
        manifest = cohort_stages.stage_index(sub, pdir)
        centres = None  # a lumbarjax-layout cohort has level centres only with a synthetic ground truth
        gt_csv = os.path.join(root, "ground_truth.csv")
        if localises(pc) and os.path.exists(gt_csv):
            from lumbarjax.pipelines.localise import centres_from_truth
            centres = centres_from_truth(pd.read_csv(gt_csv, dtype={"patient_id": str}))
    cohort = cohort_stages.stage_cohort(sub, pdir, manifest)
    shared = sorted(set(cohort.records["patient_id"]) & set(outcome_ids))
    if shared:
        raise CohortError(f"pretraining and outcome cohorts share {len(shared)} patient id(s), e.g. "
                          f"{shared[:5]}: pretrain on other patients")
    return pretrain_encoder(config, pdir, cohort.records, cohort.cache, training_data=training_data,
                            centres_mm=centres)


def stage_mri_scores(config, workdir: str, cohort):
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


def stage_mri_heatmaps(config, workdir: str, cohort, grader, centres: np.ndarray | None = None):
    """Integrated-gradients heat maps of the stage-1 MRI score — the expected grade of an
    encoder file's grader (``pipelines.pretrain.file_grader``; summed over the levels of a by-level
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
    gt_csv = os.path.join(cohort_stages.cohort_dir(config, workdir), "ground_truth.csv")
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


def stage_mri_levels(config, workdir: str, cohort, card: dict, probs: np.ndarray,
                     centres: np.ndarray) -> dict:
    """The encoder file's localiser (and, by level, its level grader) on the outcome cohort:
    ``<workdir>/mri_levels/levels.csv`` (per patient the localised centres, px, and by level
    each level's expected grade), the summary ``mri_levels.json``
    (``pipelines.mri_levels.outcome_cohort_summary``: with a synthetic ground truth the localiser
    error in mm and, by level, the per-level QWK; the pretraining's held-out localiser error and
    QWK, from the encoder file's ``card``); its heat maps: :func:`stage_mri_heatmaps`.
    ``probs``: (N, L, K) by level, (N, K) for a whole-volume grader."""
    from lumbarjax.pipelines import mri_levels
    out_dir = os.path.join(workdir, "mri_levels")
    os.makedirs(out_dir, exist_ok=True)
    k = int(card["labels"]["num_grades"])
    gt_csv = os.path.join(cohort_stages.cohort_dir(config, workdir), "ground_truth.csv")
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
