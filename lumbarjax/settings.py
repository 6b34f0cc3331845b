"""The one accessor through which the library reads its settings.

Every setting and its default is in ``configs/default.py``; library code reads a setting with
:func:`setting` and never restates a default, so a key missing from the config is an error that
names it instead of a silent fallback.
"""

from __future__ import annotations

from typing import Any

from lumbarjax.errors import ConfigError

__all__ = ["setting"]


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
