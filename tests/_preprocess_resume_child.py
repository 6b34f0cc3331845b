"""The first, killed run of tests/test_preprocess_resume.py, in its own process:

    LJ_RESUME_STALL=PATH python tests/_preprocess_resume_child.py RECORDS.csv CACHE NUM_WORKERS

``preprocess_cohort`` over the records, except that the patient whose MRI includes the file
``PATH`` never finishes decoding (it sleeps), so the run stalls there with the patients before it
cached, until the test kills it. The stall is installed at import, outside the ``__main__``
guard, so that it is in force in the spawned workers too (multiprocessing's spawn start method
imports the parent's main script in each worker).
"""

import os
import sys
import time

import pandas as pd

from lumbarjax.data import preprocess as pp
from tests.configs_for_tests import preprocess_config

STALL = os.environ["LJ_RESUME_STALL"]
_decode = pp._PROCESSORS["mri"]


def _stalling(paths, source, sub):
    if STALL in paths:
        while True:
            time.sleep(1)
    return _decode(paths, source, sub)


pp._PROCESSORS["mri"] = _stalling

if __name__ == "__main__":
    records = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
    pp.MIN_PATIENTS_FOR_WORKERS = 0
    config = preprocess_config((4.0, 2.0, 2.0), (4, 16, 16), (16, 16))
    pp.preprocess_cohort(records, config, sys.argv[2], num_workers=int(sys.argv[3]))
