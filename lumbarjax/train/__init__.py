"""lumbarjax.train: device mesh, train state, jitted steps, the training loop, metrics logging.

Cross-validation (``crossval.run_crossval``) and encoder pretraining (``pretrain``) live in their
own modules; the tasks they run are in ``tasks``.
"""

from lumbarjax.train.loop import (
    TRAIN_FIELDS,
    evaluate_loss,
    make_checkpoint_manager,
    predict,
    train_and_evaluate,
    train_config,
)
from lumbarjax.train.mesh import (
    batch_sharding,
    make_mesh,
    maybe_initialize_distributed,
    replicated_sharding,
    shard_batch,
)
from lumbarjax.train.metrics_log import MetricsLogger, read_metrics, scalar_metrics
from lumbarjax.train.state import TrainState, create_train_state, make_optimizer
from lumbarjax.train.steps import (
    eval_step,
    loss_eval_step,
    make_eval_step,
    make_predict_step,
    make_train_step,
    predict_step,
    train_step,
)

__all__ = [
    "TRAIN_FIELDS",
    "MetricsLogger",
    "TrainState",
    "batch_sharding",
    "create_train_state",
    "eval_step",
    "evaluate_loss",
    "loss_eval_step",
    "make_checkpoint_manager",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_predict_step",
    "make_train_step",
    "maybe_initialize_distributed",
    "predict",
    "predict_step",
    "read_metrics",
    "replicated_sharding",
    "scalar_metrics",
    "shard_batch",
    "train_and_evaluate",
    "train_config",
    "train_step",
]
