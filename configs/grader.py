"""X-ray degeneration grader: 5-fold CV of the 2D ResNet with a CORN ordinal head."""

from configs import default


def get_config():
    c = default.get_config()
    c.tasks = ("grader",)
    return c
