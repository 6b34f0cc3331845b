"""lumbarjax.data."""
