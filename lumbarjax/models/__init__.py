"""lumbarjax.models."""
