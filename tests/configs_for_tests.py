"""Complete configs for tests that call the data layer directly.

The library reads every setting with ``settings.setting`` (a missing key is a ConfigError), so a
test hands ``preprocess_cohort`` / ``preprocessing_config`` a whole config: configs/default.py's
(``lumbarjax.defaults.get_config()``) with the few settings the test changes. A plain module, not
conftest, so that the processes tests start (tests/_preprocess_resume_child.py) import it too.
"""

from __future__ import annotations

import ml_collections

from lumbarjax.defaults import get_config


def preprocess_config(mri_spacing, mri_shape, xray_shape, **more) -> ml_collections.ConfigDict:
    """``get_config()`` with ``mri.spacing``, ``mri.shape``, ``xray.shape`` set, and any other
    ``mri.*`` / ``xray.*`` setting as ``<section>_<key>=value`` (``mri_norm_percentiles=(0, 100)``
    sets ``mri.norm_percentiles``); every other setting keeps configs/default.py's value."""
    cfg = get_config()
    cfg.mri.spacing = tuple(float(v) for v in mri_spacing)
    cfg.mri.shape = tuple(int(v) for v in mri_shape)
    cfg.xray.shape = tuple(int(v) for v in xray_shape)
    for name, value in more.items():
        section, _, key = name.partition("_")
        if section not in ("mri", "xray") or key not in cfg[section]:
            raise TypeError(f"preprocess_config: no setting {section}.{key} for {name}=")
        cfg[section][key] = value
    return cfg
