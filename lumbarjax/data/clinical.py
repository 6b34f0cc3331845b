"""Clinical table: reading and validation (outcome derivation: :mod:`lumbarjax.data.outcomes`).

The clinical table holds one row per patient (default column names below; docs/CONTRACTS.md, "data.clinical"):

* ``patient_id`` (string; leading zeros kept), ``age`` (years), ``sex`` ("M" / "F"),
  ``bmi`` (kg/m²), ``smoker`` (0/1), ``symptom_months`` (months of symptoms before surgery);
* pain: ``back_pain_pre, back_pain_post, leg_pain_pre, leg_pain_post`` on a visual analogue
  scale **VAS 0–100 mm** (a 0–10 NRS is accepted when declared in the config and converted
  ×10 to VAS mm by :func:`validate_clinical`);
* Zurich Claudication Questionnaire (ZCQ; Stucki et al., Spine 1996;21:796–803) items:
  ``zcq_sym_pre_1..7`` / ``zcq_sym_post_1..7`` (symptom severity, 1–5),
  ``zcq_fun_pre_1..5`` / ``zcq_fun_post_1..5`` (physical function, 1–4),
  ``zcq_sat_post_1..6`` (satisfaction, 1–4, post-operative only); higher is worse.
  A table may instead give a precomputed ``zcq_success`` (0/1);
* the radiologist's X-ray degeneration grade ``xray_grade`` and/or one grade per level
  ``xray_grade_L1L2 … xray_grade_L5S1`` (integers ``0 .. num_grades-1``).

Three steps, each a small pure function (the third in :mod:`lumbarjax.data.outcomes`):

1. :func:`read_clinical` — CSV (``,`` or ``;``, decimal comma for ``;`` files, UTF-8 with or
   without BOM) or Excel; hospital headers renamed with a column map.
2. :func:`validate_clinical` — schema and ranges; every bad value becomes NaN **and** one row
   in a ``problems`` table (``patient_id, column, value, problem``). Nothing is dropped
   silently and nothing is guessed.
3. :func:`lumbarjax.data.outcomes.derive_outcomes` — ZCQ subscale scores, ZCQ success and
   ≥50 % pain improvement, vectorised, NaN where undefined (NaN = label missing = masked downstream).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from absl import logging

from lumbarjax.defaults import clinical_config
from lumbarjax.errors import ClinicalError, ConfigError

# ----------------------------------------------------------------------------- schema

ZCQ_SUBSCALES: dict[str, tuple[int, float, float]] = {
    # prefix: (number of items, lowest item score, highest item score)
    "zcq_sym": (7, 1.0, 5.0),
    "zcq_fun": (5, 1.0, 4.0),
    "zcq_sat": (6, 1.0, 4.0),
}
PAIN_COLUMNS = ("back_pain_pre", "back_pain_post", "leg_pain_pre", "leg_pain_post")
DEFAULT_GRADE_COLUMNS = tuple(clinical_config().grade_columns)  # configs/default.py's
# Continuous clinical columns: (lowest, highest) accepted value, units in the comments.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (18.0, 100.0),  # years
    "bmi": (12.0, 70.0),  # kg/m²
    "symptom_months": (0.0, np.inf),  # months
}
PROBLEM_COLUMNS = ["patient_id", "column", "value", "problem"]
_NUMBER_WITH_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")


def zcq_item_columns(prefix: str, when: str) -> list[str]:
    """Item column names, e.g. ``zcq_item_columns("zcq_sym", "pre") -> [zcq_sym_pre_1, …7]``."""
    n = ZCQ_SUBSCALES[prefix][0]
    return [f"{prefix}_{when}_{i}" for i in range(1, n + 1)]


def _all_item_columns() -> dict[str, tuple[float, float]]:
    out = {}
    for prefix, (_, lo, hi) in ZCQ_SUBSCALES.items():
        for when in ("post",) if prefix == "zcq_sat" else ("pre", "post"):
            for col in zcq_item_columns(prefix, when):
                out[col] = (lo, hi)
    return out


ZCQ_ITEM_RANGES = _all_item_columns()


def default_outcome_config() -> ml_collections.ConfigDict:
    """The clinical settings' defaults: ``config.clinical`` of configs/default.py
    (``lumbarjax.defaults.clinical_config``, whose docstring explains each key)."""
    return clinical_config()


def resolve_config(config: Any = None) -> ml_collections.ConfigDict:
    """Defaults updated with ``config`` (ConfigDict, dict or None); checks the choices.

    A config that nests these keys under ``clinical`` (an application config) is accepted too.
    A key this module does not know is a ConfigError naming it.
    """
    cfg = default_outcome_config()
    if config is None:
        return cfg
    if not isinstance(config, Mapping) and not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"clinical config must be a ConfigDict or dict, got {type(config)}")
    if "clinical" in config and "zcq_rule" not in config:
        config = config["clinical"]
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    unknown = sorted(set(given) - set(cfg))
    if unknown:
        raise ConfigError(f"config.clinical: unknown key(s) {unknown}; known keys: {sorted(cfg)}")
    for key, value in given.items():
        if isinstance(cfg[key], ml_collections.ConfigDict):
            cfg[key] = ml_collections.ConfigDict(dict(value or {}), allow_dotted_keys=True)
        elif isinstance(cfg[key], tuple):
            cfg[key] = (value,) if isinstance(value, str) else tuple(value)
        else:
            cfg[key] = type(cfg[key])(value)
    if cfg.zcq_rule not in ("all", "2of3"):
        raise ConfigError(f"zcq_rule must be 'all' or '2of3', got {cfg.zcq_rule!r}")
    for col, scale in [("pain_scale", cfg.pain_scale), *cfg.pain_scale_columns.items()]:
        if scale not in ("vas100", "nrs10"):
            raise ConfigError(f"pain scale for {col} must be 'vas100' or 'nrs10', got {scale!r}")
    if cfg.num_grades < 2:
        raise ConfigError(f"num_grades must be >= 2, got {cfg.num_grades}")
    if cfg.max_missing_items_per_subscale < 0:
        raise ConfigError("max_missing_items_per_subscale must be >= 0")
    return cfg


# ----------------------------------------------------------------------------- reading


def _close_matches(name: str, candidates: Sequence[str]) -> list[str]:
    """Headers that look like ``name`` (case- and punctuation-insensitive)."""
    norm = {re.sub(r"[^a-z0-9]", "", str(c).lower()): str(c) for c in candidates}
    hits = difflib.get_close_matches(re.sub(r"[^a-z0-9]", "", name.lower()), list(norm), n=5, cutoff=0.6)
    return [norm[h] for h in hits]


def check_required_columns(df: pd.DataFrame, required: Sequence[str], source: str) -> None:
    """Raise ClinicalError naming each missing column and the file's closest headers."""
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    parts = []
    for col in missing:
        close = _close_matches(col, [str(c) for c in df.columns])
        hint = f" (close matches: {', '.join(repr(c) for c in close)})" if close else ""
        parts.append(f"{col!r}{hint}")
    raise ClinicalError(
        f"{source}: required column(s) missing: {'; '.join(parts)}. "
        f"Headers present: {[str(c) for c in df.columns]}. "
        "Rename them with column_map (hospital header -> our name)."
    )


def id_to_str(value: Any) -> Any:
    """Patient id as a stripped string; integral floats (Excel numbers) lose the '.0'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    return text if text else np.nan


def _infer_numeric(series: pd.Series) -> pd.Series:
    """Float column when every non-missing value parses as a number, else unchanged."""
    text = series.map(lambda v: v.strip() if isinstance(v, str) else v)
    missing = text.isna() | (text == "")
    num = pd.to_numeric(text.where(~missing), errors="coerce")
    if (num.notna() | missing).all() and (~missing).any():
        return num.astype(float)
    if missing.all():
        return pd.Series(np.nan, index=series.index, dtype=float)
    return text.where(~missing, np.nan)


def _sniff_delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        try:
            return csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
        except csv.Error:
            return ","
    return best


def _duplicated(names: Sequence) -> list[str]:
    names = [str(c).strip() for c in names]
    return sorted({c for c in names if names.count(c) > 1})


def check_field_counts(text: str, sep: str, source: str) -> int:
    """ClinicalError when a row has more fields than the header, or the header repeats a name.

    More fields than headers is what unquoted decimal commas in a comma-separated file look
    like ("61,5" read as two fields): pandas would shift every column by one (or take the first
    column as an index) and ``patient_id`` would hold ages. Trailing empty fields are allowed
    (spreadsheets pad rows with separators). Row numbers are the file's line numbers (header = 1).
    Returns the number of header fields.
    """
    reader = csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True)
    header = next(reader, [])
    n = len(header)
    dupes = _duplicated(header)
    if dupes:
        raise ClinicalError(f"{source}: column header(s) {dupes} appear more than once; the "
                            "table must name each column once")
    bad: list[int] = []
    widest = n
    for row in reader:
        if not row:
            continue
        width = len(row)
        while width > n and not row[width - 1].strip():
            width -= 1
        if width > n:
            bad.append(reader.line_num)
            widest = max(widest, width)
    if bad:
        shown = ", ".join(str(b) for b in bad[:10]) + (f" … ({len(bad)} rows)" if len(bad) > 10 else "")
        raise ClinicalError(
            f"{source}: row(s) {shown} have more fields (up to {widest}) than the header ({n}, "
            f"delimiter {sep!r}); the columns would shift. Decimal commas? Save as "
            "semicolon-separated or quote the numbers")
    return n


def _read_csv(path: str) -> tuple[pd.DataFrame, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ClinicalError(f"{path}: cannot read clinical table: {e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ClinicalError(
            f"{path}: clinical table is not UTF-8 (byte {e.start}); re-save it as UTF-8 CSV"
        ) from e
    if not text.strip():
        raise ClinicalError(f"{path}: clinical table is empty")
    sep = _sniff_delimiter(text)
    n_fields = check_field_counts(text, sep, path)
    try:
        df = pd.read_csv(  # index_col=False + usecols: never an implicit index, never a shift
            io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""],
            skipinitialspace=True, index_col=False, usecols=range(n_fields),
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise ClinicalError(f"{path}: cannot parse clinical CSV (delimiter {sep!r}): {e}") from e
    return df, sep


def _read_excel(path: str) -> pd.DataFrame:
    engine = "openpyxl" if path.lower().endswith((".xlsx", ".xlsm")) else None
    try:
        header = pd.read_excel(path, header=None, nrows=1, dtype=object, engine=engine)
        dupes = _duplicated(v for v in header.iloc[0].tolist() if pd.notna(v)) if len(header) else []
        if dupes:
            raise ClinicalError(f"{path}: column header(s) {dupes} appear more than once; the "
                                "table must name each column once")
        return pd.read_excel(path, dtype=object, keep_default_na=False, na_values=[""], engine=engine)
    except ClinicalError:
        raise
    except ImportError as e:
        raise ClinicalError(
            f"{path}: reading this Excel format needs an extra package ({e}); "
            "save the sheet as .xlsx or CSV"
        ) from e
    except Exception as e:  # openpyxl/xlrd raise many types for corrupt files
        raise ClinicalError(f"{path}: cannot read Excel clinical table: {e}") from e


def read_clinical(
    path: str | os.PathLike,
    column_map: Mapping[str, str] | None = None,
    *,
    id_column: str = "patient_id",
    required: Sequence[str] = ("patient_id",),
) -> pd.DataFrame:
    """Read a clinical table (CSV or Excel) into a DataFrame with our column names.

    Args:
      path: ``.csv`` / ``.txt`` (delimiter ``,``, ``;`` or tab sniffed from the header; UTF-8
        with or without BOM; in ``;``-separated files a decimal comma ``12,5`` is read as 12.5)
        or ``.xlsx`` / ``.xlsm`` (openpyxl) / ``.xls`` (needs xlrd).
      column_map: hospital header → our name (e.g. ``{"Pat.-Nr.": "patient_id"}``); headers
        are whitespace-stripped before mapping. A ConfigDict is accepted.
      id_column: the patient identifier column (after renaming). Read as a stripped string:
        leading zeros are kept ("007" stays "007").
      required: columns that must exist after renaming.

    Returns:
      DataFrame, one row per table row, in file order. Columns whose every non-empty value is
      a number are float; others keep their text (so "n/a" or "unknown" reach
      :func:`validate_clinical`, which reports them) — missing cells are NaN. Duplicate patient
      ids are not dropped here: they are logged and listed in ``df.attrs["duplicate_ids"]``;
      :func:`validate_clinical` decides what to do with them.

    Raises:
      ClinicalError: file missing / unreadable / not UTF-8 / unparsable; a required column
        missing (the message lists close matches among the file's headers); two headers mapped
        to the same name.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ClinicalError(f"{path}: clinical table not found")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".xlsx", ".xlsm", ".xls"):
        df = _read_excel(path)
        sep = None
    else:
        df, sep = _read_csv(path)
    df.columns = [str(c).strip() for c in df.columns]
    mapping = dict(column_map.items()) if column_map is not None else {}
    mapping = {str(k).strip(): str(v) for k, v in mapping.items()}
    df = df.rename(columns=mapping)
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise ClinicalError(f"{path}: column(s) {dupes} appear more than once after column_map")
    check_required_columns(df, list(required), path)
    df = df.dropna(how="all").reset_index(drop=True)  # blank spreadsheet rows

    for col in df.columns:
        if col == id_column:
            df[col] = df[col].map(id_to_str).astype(object)
            continue
        series = df[col]
        if sep == ";":
            series = series.map(
                lambda v: v.replace(",", ".") if isinstance(v, str) and _NUMBER_WITH_DECIMAL_COMMA.match(v) else v
            )
        df[col] = _infer_numeric(series.astype(object))

    if id_column in df.columns:
        ids = df[id_column]
        dup = sorted(ids[ids.duplicated(keep=False) & ids.notna()].unique().tolist())
        if dup:
            logging.warning("%s: duplicate patient_id(s): %s", path, dup)
        df.attrs["duplicate_ids"] = dup
    df.attrs["source"] = path
    return df


# ----------------------------------------------------------------------------- validation


def _problems_frame(rows: list[pd.DataFrame]) -> pd.DataFrame:
    rows = [r for r in rows if len(r)]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PROBLEM_COLUMNS})
    return pd.concat(rows, ignore_index=True)[PROBLEM_COLUMNS]


def _value_text(v: Any) -> str:
    """The offending value as text; integral floats without '.0' (250.0 → "250")."""
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _flag(ids: pd.Series, raw: pd.Series, mask: pd.Series, column: str, problem: str) -> pd.DataFrame:
    if not mask.any():
        return pd.DataFrame(columns=PROBLEM_COLUMNS)
    return pd.DataFrame(
        {
            "patient_id": ids[mask].astype(object).to_numpy(),
            "column": column,
            "value": raw[mask].map(_value_text).to_numpy(),
            "problem": problem,
        }
    )


def _numeric_with_problems(
    raw: pd.Series, ids: pd.Series, column: str, lo: float, hi: float, *, integer: bool,
    allowed: str | None = None,
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Parse ``raw`` as numbers; non-numeric / non-integer / out-of-range → NaN + problem."""
    text = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
    missing = text.isna() | (text == "")
    num = pd.to_numeric(text.where(~missing), errors="coerce").astype(float)
    not_number = ~missing & (num.isna() | ~np.isfinite(num.fillna(0.0)))
    num = num.where(~not_number)
    bad_int = num.notna() & (num != np.round(num)) if integer else pd.Series(False, index=num.index)
    out = num.notna() & ~bad_int & ((num < lo) | (num > hi))
    rng = allowed or (f"{lo:g}–{hi:g}" if np.isfinite(hi) else f">= {lo:g}")
    probs = [
        _flag(ids, raw, not_number, column, "not a number"),
        _flag(ids, raw, bad_int, column, f"not an integer (allowed {rng})"),
        _flag(ids, raw, out, column, f"out of range (allowed {rng})"),
    ]
    return num.where(~bad_int & ~out), probs


def _coded_with_problems(
    raw: pd.Series, ids: pd.Series, column: str, codes: Mapping[str, Any], allowed: str
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Map text codes (case-insensitive) through ``codes``; unknown codes → NaN + problem."""
    def key(v):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        return str(v).strip().lower()

    missing = raw.isna() | (raw.map(lambda v: isinstance(v, str) and not v.strip()))
    keys = raw.where(~missing).map(lambda v: key(v) if pd.notna(v) else v)
    mapped = keys.map(lambda k: codes.get(k, np.nan) if isinstance(k, str) else np.nan)
    bad = ~missing & mapped.isna()
    return mapped.where(~bad), [_flag(ids, raw, bad, column, f"unknown code (allowed {allowed})")]


def validate_clinical(df: pd.DataFrame, config: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check schema and value ranges; return a cleaned copy and a table of every problem.

    Checks (only for columns present; others are left untouched):
      * ``age`` 18–100 years, ``bmi`` 12–70 kg/m², ``symptom_months`` ≥ 0;
      * ``sex``: "M"/"F", "m"/"f", "male"/"female" (case-insensitive) → "M"/"F". Numeric codes
        are refused unless declared in ``config.sex_map`` (no guessing of 1 = male);
      * ``smoker``: 0/1 (also "yes"/"no", "y"/"n", "true"/"false") → 0.0/1.0;
      * pain VAS 0–100 mm; a column declared "nrs10" must be 0–10 and is converted ×10 to mm;
      * ZCQ items: integers, symptom 1–5, function 1–4, satisfaction 1–4;
      * grades: integers 0..num_grades−1; precomputed ``zcq_success``: 0 or 1.

    Every non-numeric ("n/a", "unknown", "12,5" in a comma-separated file), non-integer or
    out-of-range value becomes NaN in ``df_clean`` and one row in ``problems``.

    Rows without a patient id are dropped (one problem row each, ``patient_id`` = "" and the
    ``value`` naming the row number). Duplicate patient ids (decision, documented here):
      * all rows of the id identical (an exported twice row) → one row kept, one problem row
        ("duplicate patient_id: N identical rows, one kept");
      * rows that differ → **none kept** (we cannot know which is right; never a guess), one
        problem row ("duplicate patient_id: N conflicting rows, all dropped"). Such ids are also
        listed in ``df_clean.attrs["conflicting_duplicate_ids"]`` so that ``build_cohort``
        reports them as exclusions ("duplicate clinical rows").

    Args:
      df: table as returned by :func:`read_clinical` (already renamed to our column names).
      config: see :func:`default_outcome_config`.

    Returns:
      (df_clean, problems): df_clean has the same columns (numeric ones as float, ``sex`` as
      "M"/"F"/NaN, pain in VAS mm), one row per kept patient, original order. problems has
      columns ``patient_id, column, value, problem`` (value as text). Calling
      validate_clinical on its own output yields no new problems.

    Raises:
      ClinicalError: a required column is missing (close matches listed).
    """
    cfg = resolve_config(config)
    idc = cfg.id_column
    source = df.attrs.get("source", "clinical table")
    check_required_columns(df, list(cfg.required_columns) + [idc], source)
    df = df.copy()
    problems: list[pd.DataFrame] = []
    prior_conflicts = list(df.attrs.get("conflicting_duplicate_ids", []))

    ids = df[idc].map(id_to_str)
    df[idc] = ids.astype(object)
    no_id = ids.isna()
    if no_id.any():
        problems.append(
            pd.DataFrame(
                {
                    "patient_id": "",
                    "column": idc,
                    "value": [f"row {i + 2} of the table" for i in np.flatnonzero(no_id)],
                    "problem": "missing patient_id, row dropped",
                }
            )
        )
        logging.warning("%s: %d row(s) without patient_id dropped", source, int(no_id.sum()))
        df = df[~no_id]

    # Duplicates, decided on the raw values (before any conversion).
    dup_mask = df[idc].duplicated(keep=False)
    conflicts: list[str] = []
    if dup_mask.any():
        sub = df[dup_mask]
        as_text = sub.astype(str)
        n_rows = sub.groupby(idc, sort=True).size()
        n_distinct = as_text.drop_duplicates().groupby(idc, sort=True).size()
        identical = n_distinct[n_distinct == 1].index.tolist()
        conflicts = n_distinct[n_distinct > 1].index.tolist()
        def dup_problem(pid: str, what: str) -> pd.DataFrame:
            return pd.DataFrame([{"patient_id": pid, "column": idc, "value": pid,
                                  "problem": f"duplicate patient_id: {n_rows[pid]} {what}"}])

        problems.extend(dup_problem(pid, "identical rows, one kept") for pid in identical)
        problems.extend(dup_problem(pid, "conflicting rows, all dropped") for pid in conflicts)
        for pid in conflicts:
            logging.warning("duplicate clinical rows for patient_id %s: all dropped", pid)
        df = df[~df[idc].isin(conflicts)]
        df = df[~df[idc].duplicated(keep="first")]
    ids = df[idc]

    def numeric(col, lo, hi, integer=False, allowed=None):
        clean, probs = _numeric_with_problems(df[col], ids, col, lo, hi, integer=integer, allowed=allowed)
        df[col] = clean
        problems.extend(probs)

    for col, (lo, hi) in NUMERIC_RANGES.items():
        if col in df.columns:
            numeric(col, lo, hi)
    if "sex" in df.columns:
        codes = {"m": "M", "male": "M", "f": "F", "female": "F"}
        codes.update({str(k).strip().lower(): v for k, v in cfg.sex_map.items()})
        bad_targets = {v for v in codes.values() if v not in ("M", "F")}
        if bad_targets:
            raise ConfigError(f"sex_map values must be 'M' or 'F', got {sorted(bad_targets)}")
        clean, probs = _coded_with_problems(df["sex"], ids, "sex", codes, "/".join(sorted(codes)))
        df["sex"] = clean.astype(object)
        problems.extend(probs)
    if "smoker" in df.columns:
        codes = {"0": 0.0, "1": 1.0, "no": 0.0, "yes": 1.0, "n": 0.0, "y": 1.0,
                 "false": 0.0, "true": 1.0}
        clean, probs = _coded_with_problems(df["smoker"], ids, "smoker", codes, "0/1, yes/no")
        df["smoker"] = clean.astype(float)
        problems.extend(probs)
    already_vas = set(df.attrs.get("pain_converted_to_vas", []))
    converted = []
    for col in PAIN_COLUMNS:
        if col in df.columns:
            scale = cfg.pain_scale_columns.get(col, cfg.pain_scale)
            if scale == "nrs10" and col not in already_vas:
                numeric(col, 0.0, 10.0, allowed="NRS 0–10")
                df[col] = df[col] * 10.0  # NRS points → VAS mm
                converted.append(col)
            else:
                numeric(col, 0.0, 100.0, allowed="VAS 0–100 mm")
    for col, (lo, hi) in ZCQ_ITEM_RANGES.items():
        if col in df.columns:
            numeric(col, lo, hi, integer=True)
    for col in cfg.grade_columns:
        if col in df.columns:
            numeric(col, 0.0, float(cfg.num_grades - 1), integer=True)
    if "zcq_success" in df.columns:
        numeric("zcq_success", 0.0, 1.0, integer=True, allowed="0 or 1")

    df = df.reset_index(drop=True)
    df.attrs = {k: v for k, v in df.attrs.items() if k != "duplicate_ids"}
    df.attrs["conflicting_duplicate_ids"] = sorted(set(prior_conflicts) | set(conflicts))
    # Columns already converted NRS → VAS mm: a second validate_clinical does not convert again.
    df.attrs["pain_converted_to_vas"] = sorted(already_vas | set(converted))
    return df, _problems_frame(problems)
