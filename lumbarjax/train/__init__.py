"""lumbarjax.train."""
