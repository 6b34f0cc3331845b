"""BUU-LSPINE (Klinwichit et al., Appl. Sci. 2023, 13(15):8646) as downloaded: JPEG films
with a CSV of vertebral endplate lines each.

Layout::

    root/
      AP/<name>.jpg  AP/<name>.csv      anteroposterior films: 10 lines, L1..L5 upper + lower
      LA/<name>.jpg  LA/<name>.csv      lateral films: 11 lines, L1..L5 upper + lower, S1 upper

``<name>`` is written like ``0001-F-037Y0`` (patient number, sex, age in years, view digit);
other names are accepted, the patient fields are then left blank.

Each CSV row is one endplate line ``x1, y1, x2, y2, label`` in pixels (x = column, y = row,
0-based) from cranial to caudal; (x1, y1) is the line's left end in the image. A header row
(``x1,y1,x2,y2,label``) may be present or not. The label column comes in two vocabularies
(the dataset's descriptions differ), both accepted:

* a spondylolisthesis class per line, integer 0..4 (0 normal, 1 left / 2 right
  laterolisthesis on AP, 3 antero- / 4 retrolisthesis on LA); lines are then taken in file
  order (cranial to caudal) -> ``slip_class``;
* an endplate name (``L1a`` / ``L1b``, ``L1-top`` / ``L1-bot``, ``L1_sup`` / ``L1_inf``,
  ``L1 upper`` / ``L1 lower``, ``S1a`` …; "a" = upper, "b" = lower): lines may then come in
  any order and are sorted; ``slip_class`` is NaN.

:func:`read_endplates` validates one CSV (row count, numbers, vocabulary, points inside the
image, each vertebra's upper line above its lower line) and raises :class:`CohortError`
naming the file and line. :func:`read_dataset` indexes both folders: a film without CSV, a
CSV without film, an unreadable film or an invalid CSV is a counted, logged exclusion
(``strict=True`` raises). JPEGs carry no pixel spacing: distances in mm need a spacing from
the user (``spacing_mm``).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pandas as pd
from absl import logging
from PIL import Image, UnidentifiedImageError

from lumbarjax.errors import CohortError

VIEWS = ("AP", "LA")
VERTEBRAE = ("L1", "L2", "L3", "L4", "L5")
ENDPLATES = {
    "AP": tuple(f"{v}_{s}" for v in VERTEBRAE for s in ("sup", "inf")),
    "LA": tuple(f"{v}_{s}" for v in VERTEBRAE for s in ("sup", "inf")) + ("S1_sup",),
}
SLIP_CLASSES = {0: "normal", 1: "left laterolisthesis", 2: "right laterolisthesis",
                3: "anterolisthesis", 4: "retrolisthesis"}
_SIDE = {"a": "sup", "top": "sup", "sup": "sup", "superior": "sup", "upper": "sup", "u": "sup",
         "b": "inf", "bot": "inf", "bottom": "inf", "inf": "inf", "inferior": "inf", "lower": "inf"}
_NAME = re.compile(r"^\s*(L[1-5]|S1)\s*[-_ ]?\s*([a-z]+)\s*$", re.IGNORECASE)
_FILE = re.compile(r"^(?P<pid>\d+)-(?P<sex>[FM])-(?P<age>\d+)Y(?P<view>\d)?$", re.IGNORECASE)
COORDS = ("x1", "y1", "x2", "y2")


def endplate_name(label: str) -> str | None:
    """'L3b' / 'L3-bot' / 'l3_inferior' -> 'L3_inf'; None if the label is no endplate name."""
    m = _NAME.match(str(label))
    if not m or m.group(2).lower() not in _SIDE:
        return None
    return f"{m.group(1).upper()}_{_SIDE[m.group(2).lower()]}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_endplates(csv_path, view: str, image_size: tuple[int, int] | None = None,
                   *, tolerance_px: float = 2.0) -> pd.DataFrame:
    """One film's endplate lines in cranial-to-caudal order.

    Args:
      csv_path: the film's CSV.
      view: "AP" (10 lines) or "LA" (11 lines).
      image_size: (rows, cols) of the film; points further than ``tolerance_px`` outside it
        are an error. None skips that check.
    Returns: DataFrame with ``endplate`` (``L1_sup`` … ``S1_sup``), ``x1, y1, x2, y2`` (px,
      float), ``slip_class`` (float 0..4 or NaN) and ``csv_line`` (1-based line in the file).
    """
    csv_path = os.fspath(csv_path)
    if view not in VIEWS:
        raise CohortError(f"BUU-LSPINE: view must be one of {VIEWS}, got {view!r}")
    try:
        raw = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False,
                          skip_blank_lines=True)
    except FileNotFoundError as e:
        raise CohortError(f"{csv_path}: endplate CSV not found") from e
    except Exception as e:
        raise CohortError(f"{csv_path}: unreadable CSV ({type(e).__name__}: {e})") from e
    if raw.shape[1] != 5:
        raise CohortError(f"{csv_path}: {raw.shape[1]} columns; expected 5 (x1, y1, x2, y2, label)")
    raw = raw.apply(lambda col: col.str.strip())
    lines = np.arange(len(raw)) + 1
    if len(raw) and not all(_is_number(v) for v in raw.iloc[0, :4]):
        header = [v.lower() for v in raw.iloc[0]]
        if header[:4] != list(COORDS):
            raise CohortError(f"{csv_path}: line 1: {list(raw.iloc[0])} is neither numbers nor the "
                              "header x1,y1,x2,y2,label")
        raw, lines = raw.iloc[1:], lines[1:]
    names = ENDPLATES[view]
    if len(raw) != len(names):
        raise CohortError(f"{csv_path}: {len(raw)} endplate lines; a {view} film has {len(names)} "
                          f"({', '.join(names)})")
    coords = np.zeros((len(raw), 4))
    for i, (line, row) in enumerate(zip(lines, raw.itertuples(index=False))):
        for j, c in enumerate(COORDS):
            if not _is_number(row[j]) or not np.isfinite(float(row[j])):
                raise CohortError(f"{csv_path}: line {line}: {c}={row[j]!r} is not a finite number")
            coords[i, j] = float(row[j])
    labels = list(raw.iloc[:, 4])
    as_names = [endplate_name(v) for v in labels]
    if all(n is not None for n in as_names):
        dup = sorted({n for n in as_names if as_names.count(n) > 1})
        missing = [n for n in names if n not in as_names]
        if dup or missing:
            raise CohortError(f"{csv_path}: endplate labels {labels}: duplicated {dup}, missing {missing}")
        order = [as_names.index(n) for n in names]
        slip = np.full(len(names), np.nan)
    elif all(re.fullmatch(r"[0-4](\.0)?", v) for v in labels):
        order = list(range(len(names)))
        slip = np.array([float(v) for v in labels])
    else:
        bad = next(i for i, v in enumerate(labels)
                   if endplate_name(v) is None and not re.fullmatch(r"[0-4](\.0)?", v))
        raise CohortError(f"{csv_path}: line {lines[bad]}: unknown label {labels[bad]!r} (expected a "
                          "slip class 0-4 or an endplate name such as L1a / L1-top / S1_sup, "
                          "the same vocabulary on every line)")
    out = pd.DataFrame(coords[order], columns=list(COORDS))
    out.insert(0, "endplate", names)
    out["slip_class"] = slip
    out["csv_line"] = lines[order]
    if image_size is not None:
        h, w = image_size
        xs, ys = out[["x1", "x2"]].to_numpy(), out[["y1", "y2"]].to_numpy()
        outside = ((xs < -tolerance_px) | (xs > w - 1 + tolerance_px)
                   | (ys < -tolerance_px) | (ys > h - 1 + tolerance_px)).any(axis=1)
        if outside.any():
            r = out.loc[outside].iloc[0]
            raise CohortError(f"{csv_path}: line {int(r['csv_line'])} ({r['endplate']}): point outside "
                              f"the {w}x{h} image ({r['x1']}, {r['y1']}, {r['x2']}, {r['y2']})")
    mid_y = 0.5 * (out["y1"] + out["y2"]).to_numpy()
    for k, v in enumerate(VERTEBRAE):
        if mid_y[2 * k] >= mid_y[2 * k + 1]:
            r = out.iloc[2 * k]
            raise CohortError(f"{csv_path}: line {int(r['csv_line'])}: {v}'s upper endplate is not "
                              f"above its lower endplate (mean y {mid_y[2 * k]:.1f} >= {mid_y[2 * k + 1]:.1f})")
    return out


def endplate_array(endplates: pd.DataFrame) -> np.ndarray:
    """(E, 2, 2) float: line e, end (0 = x1,y1; 1 = x2,y2), (row, col) in pixels."""
    xy = endplates[list(COORDS)].to_numpy(float).reshape(-1, 2, 2)  # (E, end, (x, y))
    return xy[..., ::-1].copy()


def read_image(path) -> np.ndarray:
    """(H, W) float32 grey values 0..255 of a JPEG film (colour films are converted)."""
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32)
    except FileNotFoundError as e:
        raise CohortError(f"{path}: film not found") from e
    except (UnidentifiedImageError, OSError) as e:
        raise CohortError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def _image_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError) as e:
        raise CohortError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
    return h, w


@dataclasses.dataclass
class BuuDataset:
    """images: one row per usable film — ``image_id`` (file stem), ``view``, ``patient_id``,
    ``sex``, ``age``, ``path``, ``csv``, ``rows``, ``cols``, ``any_slip`` (1 if a line carries a
    slip class > 0, NaN under the name vocabulary). endplates: the validated lines of every
    usable film (``image_id``, ``view`` + :func:`read_endplates` columns). excluded:
    ``image_id, view, reason`` of every film or CSV left out."""
    images: pd.DataFrame
    endplates: pd.DataFrame
    excluded: pd.DataFrame

    def lines(self, image_id: str, view: str) -> pd.DataFrame:
        sel = self.endplates[(self.endplates["image_id"] == image_id) & (self.endplates["view"] == view)]
        if sel.empty:
            raise CohortError(f"BUU-LSPINE: no usable {view} film {image_id!r}")
        return sel.reset_index(drop=True)


def read_dataset(root, views=VIEWS, *, strict: bool = False) -> BuuDataset:
    """Index ``root/AP`` and ``root/LA``; see the module docstring for the exclusions."""
    root = os.fspath(root)
    images, lines, excluded = [], [], []
    for view in views:
        if view not in VIEWS:
            raise CohortError(f"BUU-LSPINE: view must be one of {VIEWS}, got {view!r}")
        folder = os.path.join(root, view)
        if not os.path.isdir(folder):
            raise CohortError(f"{folder}: BUU-LSPINE {view} folder not found")
        entries = sorted(os.listdir(folder))
        films = {os.path.splitext(f)[0]: f for f in entries if f.lower().endswith((".jpg", ".jpeg"))}
        csvs = {os.path.splitext(f)[0]: f for f in entries if f.lower().endswith(".csv")}
        for stem in sorted(set(csvs) - set(films)):
            excluded.append((stem, view, f"{view}/{csvs[stem]} has no film"))
        for stem in sorted(films):
            path = os.path.join(folder, films[stem])
            if stem not in csvs:
                excluded.append((stem, view, f"{view}/{films[stem]} has no endplate CSV"))
                continue
            csv = os.path.join(folder, csvs[stem])
            try:
                h, w = _image_size(path)
                ep = read_endplates(csv, view, (h, w))
            except CohortError as e:
                excluded.append((stem, view, str(e)))
                continue
            m = _FILE.match(stem)
            slip = ep["slip_class"].to_numpy()
            images.append(dict(image_id=stem, view=view, patient_id=m.group("pid") if m else stem,
                               sex=m.group("sex").upper() if m else "",
                               age=float(m.group("age")) if m else np.nan, path=path, csv=csv,
                               rows=h, cols=w,
                               any_slip=float((slip > 0).any()) if np.isfinite(slip).all() else np.nan))
            lines.append(ep.assign(image_id=stem, view=view))
    excluded_df = pd.DataFrame(excluded, columns=["image_id", "view", "reason"])
    if len(excluded_df):
        first = excluded_df.iloc[0]
        if strict:
            raise CohortError(f"BUU-LSPINE: {len(excluded_df)} film(s) unusable, first: {first['reason']}")
        logging.warning("BUU-LSPINE: %d film(s) excluded (first: %s)", len(excluded_df), first["reason"])
    cols = ["image_id", "view", "patient_id", "sex", "age", "path", "csv", "rows", "cols", "any_slip"]
    img_df = pd.DataFrame(images, columns=cols)
    ep_df = (pd.concat(lines, ignore_index=True) if lines else
             pd.DataFrame(columns=["endplate", *COORDS, "slip_class", "csv_line", "image_id", "view"]))
    logging.info("BUU-LSPINE: %d films usable, %d excluded", len(img_df), len(excluded_df))
    return BuuDataset(img_df, ep_df, excluded_df)


__all__ = ["ENDPLATES", "SLIP_CLASSES", "VERTEBRAE", "VIEWS", "BuuDataset", "endplate_array",
           "endplate_name", "read_dataset", "read_endplates", "read_image"]
