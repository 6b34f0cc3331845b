"""lumbarjax.explain: integrated gradients, baselines and overlays.

``integrated_gradients(fn, inputs, baselines=None, *, steps=64, method="gausslegendre",
chunk_size=None, static=None) -> (attributions, delta)``; see
:mod:`lumbarjax.explain.integrated_gradients`. Overlays (matplotlib, Agg backend) live in
:mod:`lumbarjax.explain.overlays` and are imported lazily so that importing this package does not
import matplotlib.
"""
from lumbarjax.explain.integrated_gradients import (METHODS, clear_cache, integrated_gradients,
                                                    quadrature)
from lumbarjax.explain.ig_baselines import (blurred, expected_gradients, noisy_baselines,
                                         training_mean, zeros_like)

__all__ = [
    "METHODS", "clear_cache", "integrated_gradients", "quadrature",
    "blurred", "expected_gradients", "noisy_baselines", "training_mean", "zeros_like",
]
