"""Config of the kill-and-relaunch test (tests/test_kill_relaunch.py): the tiny test config with
the demo cohort and the pretraining cohort written by the job itself (so that cohort writing is
a stage that can be killed too).

    python launch.py --config=tests/kill_config.py --workdir=/tmp/lj_kill
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (_HERE, os.path.dirname(_HERE)):  # tests/ (conftest) and the repository (configs/)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from conftest import tiny_config  # noqa: E402


def get_config():
    c = tiny_config("")
    c.data.make_demo = True
    c.data.demo_patients = 16
    c.pretrain.enabled = True
    c.pretrain.make_demo = True
    c.pretrain.demo_patients = 12
    return c
