"""lumbarjax.jobs: The launcher's jobs: the cross-validation workflow, prediction, external evaluation."""
