"""Random streams of the synthetic generator: one independent numpy Generator per (seed, key…).

Every random draw of a cohort comes from ``stream(seed, *key)``. Patient ``i`` draws from its
own keys, so its data does not depend on ``n_patients`` and patients can be written in any
order or process. The keys in use (changing one changes the cohort):

* ``(i, 0)`` patient i's latents, clinical row and outcomes (outcomes)
* ``(i, 1)`` its anatomy (anatomy.make_anatomy); ``(i, 2)`` its X-ray study and ``(i, 3)`` its
  MRI study (studies); ``(i, 4)`` its DICOM header PHI (dicom_writer.make_phi); ``(i, 5)`` its
  export folder and thumbnail names (cohort)
* ``(i, 6)`` its post-operative ZCQ items when the regime's outcome differs from the demo's
* ``(2**31 − 1)`` edge-case assignment, ``(2**31 − 2)`` bayes_auc's Monte Carlo patients,
  ``(2**31 − 3)`` the export's extra files, ``(2**31 − 5)`` reader stenosis grades,
  ``(2**31 − 6)`` Monte Carlo symptom months, ``(2**31 − 7)`` bayes_vas's Monte Carlo patients
"""

from __future__ import annotations

import numpy as np


def stream(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, key…): patient i's data does not depend on n_patients."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))
