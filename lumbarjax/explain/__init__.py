"""lumbarjax.explain: integrated gradients and overlays."""
