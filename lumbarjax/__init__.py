"""lumbarjax: lumbar spine degeneration grading and stenosis-surgery outcome prediction in JAX/Flax."""

__version__ = "0.1.0"
