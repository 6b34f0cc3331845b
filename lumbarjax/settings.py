"""The one accessor through which the library reads its settings.

Every setting and its default is in ``configs/default.py`` (``lumbarjax/defaults.py``, which
it re-exports, so the library can read it too); library code reads a setting with
:func:`setting` and never restates a default, so a key missing from the config is an error that
names it instead of a silent fallback (tests/test_config_keys.py checks both directions).
"""

from __future__ import annotations

import functools
from typing import Any

import ml_collections

from lumbarjax.errors import ConfigError

__all__ = ["setting", "defaults"]


def setting(config: Any, dotted: str):
    """``config.a.b`` for ``dotted="a.b"`` (ConfigDict or plain dict).

    Raises:
        ConfigError: a key on the path is missing; the message names ``config.<dotted>``.
    """
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"config.{dotted} is missing (configs/default.py lists every "
                              "setting with its default)") from None
    return node


@functools.lru_cache(maxsize=1)
def defaults() -> ml_collections.FrozenConfigDict:
    """``lumbarjax.defaults.get_config()`` (= ``configs/default.py``), built once, read-only."""
    from lumbarjax.defaults import get_config
    return ml_collections.FrozenConfigDict(get_config())

