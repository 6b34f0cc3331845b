"""CSV in and out for the public-dataset readers: strict reading, atomic writing."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from lumbarjax import atomic
from lumbarjax.errors import CohortError


def read_table(path: str, required: list[str], expected: str) -> pd.DataFrame:
    """A CSV as strings (blank cells ""; names and values stripped). CohortError naming the file
    when it is missing (``expected`` says what a complete download holds), unreadable, or lacks
    a ``required`` column."""
    if not os.path.isfile(path):
        raise CohortError(f"{path}: not found (incomplete download? expected {expected})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise CohortError(f"{path}: unreadable CSV ({type(e).__name__}: {e})") from e
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CohortError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    return df.apply(lambda s: s.str.strip())


def write_tables(out_dir: str, manifest: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> dict:
    """manifest.csv (``index.write_manifest``) + ``<name>.csv`` per table, each written atomically."""
    from lumbarjax.data.index import write_manifest

    os.makedirs(out_dir, exist_ok=True)
    paths = {"manifest": os.path.join(out_dir, "manifest.csv")}
    with atomic.atomic_path(paths["manifest"]) as tmp:
        write_manifest(manifest, tmp)
    for name, df in tables.items():
        paths[name] = atomic.write_csv(df, os.path.join(out_dir, f"{name}.csv"))
    return paths


__all__ = ["read_table", "write_tables"]
