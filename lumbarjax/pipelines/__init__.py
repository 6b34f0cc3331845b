"""lumbarjax.pipelines: Task pipelines on top of the training engine: the task registry, cross-validation, pretraining, X-ray and MRI level models."""
