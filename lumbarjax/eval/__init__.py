"""lumbarjax.eval — metrics with patient-bootstrap CIs, clinical baselines, heat-map
localisation scores and the self-contained HTML report.

Submodules are imported lazily by the caller (``from lumbarjax.eval import metrics``) so that
importing the package does not pull in matplotlib or scikit-learn.
"""

__all__ = ["metrics", "baselines", "localisation", "report"]
