"""lumbarjax.models: ordinal heads, 2D grader, 3D MRI encoders, fusion outcome model.

Every full model is a flax.linen Module called as
``model.apply(variables, batch, train=bool, rngs={"dropout": key},
mutable=["batch_stats"] if train else False)`` with the data.pipeline batch dict.
"""

from lumbarjax.models.encoder3d import ARCHS, ENCODERS, MRIEncoder
from lumbarjax.models.fusion import (
    ClinicalEncoder,
    OutcomeModel,
    build_grader,
    build_outcome_model,
    outcome_loss,
    positive_class_weights,
)
from lumbarjax.models.ordinal import (
    coral_loss,
    coral_predict,
    coral_probs,
    corn_loss,
    corn_predict,
    corn_probs,
)
from lumbarjax.models.resnet2d import Grader, ResNet2D, grader_loss

__all__ = [
    "ARCHS", "ENCODERS", "MRIEncoder", "ClinicalEncoder", "OutcomeModel", "build_grader", "build_outcome_model",
    "outcome_loss",
    "positive_class_weights", "coral_loss", "coral_predict", "coral_probs", "corn_loss",
    "corn_predict", "corn_probs", "Grader", "ResNet2D", "grader_loss",
]
