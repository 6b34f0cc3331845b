"""JAX's persistent compilation cache: compiled XLA executables kept on disk between runs.

A second demo, a relaunch after a crash, ``--mode=predict`` and the test suite load the
executables an earlier process compiled instead of compiling them again (the key is the
lowered program, its shapes, the devices and the jax / XLA versions, so a changed model or
batch shape compiles afresh). Every executable is kept, however quick its compile: lumbarjax's
steps are many small compiles.

``config.compilation_cache``: "auto" (default) is ``$XDG_CACHE_HOME/lumbarjax/jax`` (else
``~/.cache/lumbarjax/jax``); a path uses that folder; "" or "off" leaves the cache off. The
environment variable ``JAX_COMPILATION_CACHE_DIR``, when set, wins over "auto".
"""

from __future__ import annotations

import os

OFF = ("", "off", "none", "false")


def default_dir() -> str:
    """``$XDG_CACHE_HOME/lumbarjax/jax`` or ``~/.cache/lumbarjax/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lumbarjax", "jax")


def resolve(setting) -> str | None:
    """The cache folder for ``config.compilation_cache`` (None when off)."""
    value = "" if setting is None else str(setting).strip()
    if value.lower() in OFF:
        return None
    if value.lower() == "auto":
        return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
    return os.path.abspath(os.path.expanduser(value))


def enable(setting) -> str | None:
    """Turn the persistent cache on at the folder ``resolve(setting)`` names (created if
    absent) and cache every executable; returns the folder, or None (cache left as it was)."""
    path = resolve(setting)
    if path is None:
        return None
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


__all__ = ["default_dir", "enable", "resolve"]
