"""lumbarjax.eval."""
