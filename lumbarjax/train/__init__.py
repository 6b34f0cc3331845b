"""lumbarjax.train: train state, sharded jit steps, the training loop, metrics logging.

Cross-validation (``crossval.run_crossval``) lives in its own module.
"""

from lumbarjax.train.loop import (
    TRAIN_DEFAULTS,
    evaluate_loss,
    make_checkpoint_manager,
    maybe_initialize_distributed,
    predict,
    train_and_evaluate,
    train_config,
)
from lumbarjax.train.metrics_log import MetricsLogger, read_metrics, scalar_metrics
from lumbarjax.train.state import (
    OPTIM_DEFAULTS,
    TrainState,
    cfg_get,
    create_train_state,
    make_lr_schedule,
    make_optimizer,
)
from lumbarjax.train.steps import (
    batch_sharding,
    make_eval_step,
    make_mesh,
    make_predict_step,
    make_train_step,
    replicated_sharding,
    shard_batch,
)

__all__ = [
    "OPTIM_DEFAULTS",
    "TRAIN_DEFAULTS",
    "MetricsLogger",
    "TrainState",
    "batch_sharding",
    "cfg_get",
    "create_train_state",
    "evaluate_loss",
    "make_checkpoint_manager",
    "make_eval_step",
    "make_lr_schedule",
    "make_mesh",
    "make_optimizer",
    "make_predict_step",
    "make_train_step",
    "maybe_initialize_distributed",
    "predict",
    "read_metrics",
    "replicated_sharding",
    "scalar_metrics",
    "shard_batch",
    "train_and_evaluate",
    "train_config",
]
