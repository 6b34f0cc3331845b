"""Crash-safe writes: a file appears complete under its final name or not at all.

Every artefact that a later stage trusts (cohorts, manifest, cache entries, encoder files,
CSV/JSON outputs) is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX). A folder written in several steps (a generated cohort)
gets a completion marker last: no marker, the folder is incomplete and is rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

MARKER = ".complete.json"


def _default_mode() -> int:
    """0o666 minus the process umask: what ``open(path, "w")`` would give (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``; renamed onto ``path`` if the block succeeds,
    removed if it raises. Suffixes are kept (``x.tmp-…​.csv``) so writers that look at the
    extension still work."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    base = os.path.basename(path)
    stem, ext = base, ""
    for e in (".nii.gz", ".tar.gz"):
        if base.endswith(e):
            stem, ext = base[: -len(e)], e
            break
    else:
        stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{stem}.tmp-", suffix=ext)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder (see
    :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def write_text(path: str, text: str) -> str:
    """Write ``text`` UTF-8 encoded to ``path`` atomically (:func:`write_bytes`); returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, **kwargs) -> str:
    """Write ``obj`` as JSON to ``path`` atomically; ``kwargs`` go to ``json.dumps``
    (``indent=2`` and ``sort_keys=True`` unless given). Returns ``path``."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    return write_text(path, json.dumps(obj, **kwargs))


def write_csv(df, path: str, **kwargs) -> str:
    """``DataFrame.to_csv`` through a temporary file (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return path


def is_temporary(name: str) -> bool:
    """True for the name of an ``atomic_path`` temporary file (``.<stem>.tmp-<random><ext>``)."""
    return name.startswith(".") and ".tmp-" in name


def sweep_temporary(folder: str) -> list[str]:
    """Remove the temporary files that killed writers left under ``folder`` (recursively) and
    return their paths relative to ``folder``. Call it before a job starts writing there: a
    temporary file is never trusted, but thousands of them would fill the disk over many
    interrupted runs. Only one job may write into a folder at a time."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if is_temporary(name):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(os.path.relpath(path, folder))
    return sorted(removed)


def mark_complete(folder: str, info: Mapping | None = None) -> str:
    """Write the completion marker of a folder written in several steps (call it last)."""
    return write_json(os.path.join(folder, MARKER), dict(info or {}))


def is_complete(folder: str, info: Mapping | None = None) -> bool:
    """True when ``folder`` has its completion marker (and, if ``info`` is given, the marker
    records the same settings: a cohort written with other settings counts as incomplete)."""
    path = os.path.join(folder, MARKER)
    if not os.path.isfile(path):
        return False
    if info is None:
        return True
    try:
        with open(path) as f:
            return json.load(f) == json.loads(json.dumps(dict(info)))
    except (OSError, ValueError):
        return False


def clear_incomplete(folder: str) -> None:
    """Remove a folder that lacks its completion marker, so it can be written afresh."""
    if os.path.isdir(folder) and not is_complete(folder):
        shutil.rmtree(folder)
