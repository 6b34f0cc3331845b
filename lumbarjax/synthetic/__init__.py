"""Synthetic demo cohort: DICOM X-rays and MRIs, a clinical table and the ground truth.

A cohort folder in the on-disk contract of docs/CONTRACTS.md, generated deterministically from
a seed by a known model (docs/DEMO_COHORT.md), so that every part of lumbarjax runs without
patient data. Modules, one job each:

* :mod:`~lumbarjax.synthetic.outcomes` — the outcome model: latents, outcomes, the clinical
  table (:func:`sample_patients`, OUTCOME_REGIMES)
* :mod:`~lumbarjax.synthetic.ceilings` — Bayes-optimal ceilings (:func:`bayes_auc`, :func:`bayes_vas`)
* :mod:`~lumbarjax.synthetic.anatomy` — the phantom spine geometry
* :mod:`~lumbarjax.synthetic.render` — X-ray and MRI rendering
* :mod:`~lumbarjax.synthetic.dicom_writer` — DICOM headers, fake PHI, the Part 10 series writer
* :mod:`~lumbarjax.synthetic.studies` — one patient's X-ray and MRI studies
* :mod:`~lumbarjax.synthetic.cohort` — :func:`make_cohort`, :func:`make_pretraining_cohort`,
  reader stenosis grades
* :mod:`~lumbarjax.synthetic.streams` — the random streams (one per seed and key)
* ``python -m lumbarjax.synthetic`` — the command line (``__main__``)
* :mod:`~lumbarjax.synthetic.rsna_layout`, :mod:`~lumbarjax.synthetic.vindr_layout` — the
  pretraining cohort in public data sets' layouts
"""

from lumbarjax.synthetic.anatomy import DISC_HEIGHT_LOSS_PER_GRADE, OSTEOPHYTE_MM, STENOSIS_NARROWING, XRAY_ENDPLATES
from lumbarjax.synthetic.ceilings import VAS_HEADS, bayes_auc, bayes_vas, vas_post_distribution
from lumbarjax.synthetic.cohort import (GROUND_TRUTH_COLUMNS, MIN_PATIENTS_FOR_WORKERS, STENOSIS_GRADE_CUTS,
                                        STENOSIS_READER_ERROR, SYNTHETIC_TAG, is_synthetic_incomplete, make_cohort,
                                        make_pretraining_cohort, stenosis_grade_of, stenosis_grades)
from lumbarjax.synthetic.outcomes import (BETA, CLINICAL_COLUMNS, EDGE_CASES_PER_160, EFFECT_KEYS, OUTCOME_REGIMES,
                                          Q_BACK, Q_LEG, STENOSIS_LEVELS, outcome_effects, outcome_logit,
                                          outcome_probabilities, sample_patients, zcq_rule)

__all__ = [
    "BETA", "CLINICAL_COLUMNS", "DISC_HEIGHT_LOSS_PER_GRADE", "EDGE_CASES_PER_160", "EFFECT_KEYS",
    "GROUND_TRUTH_COLUMNS", "MIN_PATIENTS_FOR_WORKERS", "OSTEOPHYTE_MM", "OUTCOME_REGIMES", "Q_BACK", "Q_LEG",
    "STENOSIS_GRADE_CUTS", "STENOSIS_LEVELS", "STENOSIS_NARROWING", "STENOSIS_READER_ERROR", "SYNTHETIC_TAG",
    "VAS_HEADS", "XRAY_ENDPLATES", "bayes_auc", "bayes_vas", "is_synthetic_incomplete", "make_cohort",
    "make_pretraining_cohort", "outcome_effects", "outcome_logit", "outcome_probabilities", "sample_patients",
    "stenosis_grade_of", "stenosis_grades", "vas_post_distribution", "zcq_rule",
]
