"""Behaviour check (issue 9): a small real cross-validation (both tasks + encoder pretraining,
tiny config from tests/conftest.py, 24 synthetic patients) that writes oof.csv files; run it on
two trees and compare them with scripts/oof_compare.py. ~2-3 min of CPU.

usage: PYTHONPATH=<tree> python oof_run.py <tree> <workdir> <cohort_dir> <pretrain_cohort_dir>"""
import os, sys
tree, workdir, croot, proot = sys.argv[1:5]
sys.path.insert(0, os.path.join(tree, "tests"))
from conftest import tiny_config
from lumbarjax.synthetic import make_cohort, make_pretraining_cohort
if not os.path.exists(os.path.join(croot, "clinical.csv")):
    make_cohort(croot, n_patients=24, seed=5, xray_size=(96, 80), mri_size=(48, 48), n_mc=2000)
if not os.path.exists(os.path.join(proot, "stenosis_labels.csv")):
    make_pretraining_cohort(proot, n_patients=12, seed=4, mri_size=(48, 48))
from lumbarjax.jobs import workflow
c = tiny_config(croot)
for t in (c.grader, c.outcome):
    t.train.num_steps = 12
    t.train.eval_every = 6
c.pretrain.enabled = True
c.pretrain.cohort_dir = proot
workflow.run(c, workdir, "crossval")
