"""Every lumbarjax setting and its default: ``lumbarjax/defaults.py``, re-exported here so that
``--config=configs/default.py`` and the other config files (``from configs import default``)
start from the one source the library itself reads its defaults from.

Units: MRI spacing in mm as (slice, row, col) = (left-right, superior-inferior,
anterior-posterior) for a sagittal series; shapes in voxels; VAS 0-100 mm.
"""

from lumbarjax.defaults import (  # noqa: F401  (re-exported)
    CLINICAL_CATEGORICAL,
    CLINICAL_NUMERIC,
    clinical_config,
    get_config,
    grader_config,
    grader_model_config,
    levels_config,
    mri_encoder_config,
    optim_config,
    outcome_config,
    outcome_model_config,
    pretrain_task_config,
    train_config,
)
