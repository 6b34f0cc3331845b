"""Surgical outcome model: 5-fold CV of MRI encoder + clinical MLP fusion (and the clinical-only twin)."""

from configs import default


def get_config():
    c = default.get_config()
    c.tasks = ("outcome",)
    return c
