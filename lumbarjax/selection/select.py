"""The outcome model the report leads with: per outer fold and head, a convex combination
(stacking) of candidate models, its weights fitted on the fold's inner validation patients.

Candidates (``config.outcome.stack.candidates``): ``"linear"`` — the penalised linear family
(``selection.linear``) on the clinical columns plus the stage-1 image scores; ``"reference"`` —
the clinical reference model of ``eval.baselines`` (logistic regression C = 1 / ridge alpha = 1);
``"network"`` — the fusion network (``outcome/``); ``"clinical network"`` — its clinical-only twin
(``outcome_clinical_only/``).

Per outer fold ``k``: the linear candidates are fitted on the fold's inner training patients (the
networks were trained there by ``pipelines.crossval``: ``fold_k/split.json``,
``fold_k/inner_val.csv``); ``selection.stack.fit_weights`` picks the simplex weights that minimise
the head's loss on the inner validation patients (log loss; mean absolute error for VAS) and
shrinks them towards equal weights (``stack.shrink``). With ``image_gate`` the image candidates
are used in a fold only where the image scores clearly help the linear family on the fold's
training patients (:func:`image_evidence`), else the clinical candidates. The fold's test
patients get the same combination of the candidates refitted on all its training patients.
Why this rule, and how it compares: docs/OUTCOME_MODELS.md.

Inputs: the run's records (clinical columns, labels, stage-1 scores), the outer folds and the
networks' fold folders. Outputs: ``<run_dir>/selected_oof.csv`` (``patient_id, fold,
label_<head>, pred_<head>, model_<head>`` = the fold's combination, e.g. ``linear 0.45
(logreg_l2(C=1)) + network 0.30 + clinical network 0.25``) and ``<run_dir>/selection.json`` (per
fold and head the weights, each candidate's inner-validation AUC / MAE and loss, the linear
model chosen, the gate's evidence; per head the mean weights). ``--mode=evaluate`` applies the
same combinations to a new cohort (``jobs.external.selected_predictions``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lumbarjax import atomic
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.selection import linear, stack
from lumbarjax.workers import process_map

NETWORK, CLINICAL_NETWORK, LINEAR, REFERENCE = "network", "clinical network", "linear", "reference"
CANDIDATES = (LINEAR, REFERENCE, NETWORK, CLINICAL_NETWORK)
NETWORK_DIRS = {NETWORK: "outcome", CLINICAL_NETWORK: "outcome_clinical_only"}


def check_candidates(candidates: Sequence[str]) -> tuple:
    """``candidates`` as a tuple, each one of :data:`CANDIDATES` (else a ConfigError)."""
    bad = [c for c in candidates if c not in CANDIDATES]
    if bad or not candidates:
        raise ConfigError(f"config.outcome.stack.candidates={list(candidates)}: expected a non-empty "
                          f"selection of {list(CANDIDATES)}")
    return tuple(candidates)


def fit_linear(records: pd.DataFrame, head: str, task: str, rows: np.ndarray, candidate: str,
               features: Sequence[str], reference_features: Sequence[str], grid, seed: int):
    """The linear ``candidate`` fitted on ``rows``: ``"linear"`` — the penalised family on
    ``features`` (``grid``; None = the full grid), ``"reference"`` — the clinical reference model
    on ``reference_features``. Deterministic: ``--mode=evaluate`` refits a run's linear
    candidates with it instead of storing them."""
    if candidate == REFERENCE:
        return linear.fit_penalised(records, head, rows, list(reference_features), task=task, seed=seed,
                                    grid=[linear.REFERENCE[task]])
    if candidate == LINEAR:
        return linear.fit_penalised(records, head, rows, list(features), task=task, seed=seed, grid=grid)
    raise ConfigError(f"stacking: {candidate!r} is not a linear candidate")


def _rows(ids: pd.Series, wanted: Sequence[str], what: str) -> np.ndarray:
    pos = pd.Series(np.arange(len(ids)), index=ids.astype(str).to_numpy())
    missing = [p for p in map(str, wanted) if p not in pos.index]
    if missing:
        raise CohortError(f"stacking: {what} names patient(s) {missing[:3]} not in the task's records")
    return pos.loc[list(map(str, wanted))].to_numpy(int)


def image_evidence(records: pd.DataFrame, head: str, task: str, rows: np.ndarray, features: Sequence[str],
                   reference_features: Sequence[str], grid, seed: int, fits: dict | None = None) -> dict:
    """Whether the image scores help ``head`` on the training ``rows``: the penalised linear
    family on all ``features`` against the clinical reference model on ``reference_features``,
    both scored on the same inner k-fold split of ``rows`` (every training patient of the fold,
    ~125 in the demo, not only the ~25 inner validation ones). ``clear``: the family is clearly
    better (``selection.linear.clearly_better``: about one standard error). ``fits`` caches the two
    fits (candidate -> PenalisedFit) for the caller."""
    fits = {} if fits is None else fits
    try:
        for c in (LINEAR, REFERENCE):
            if c not in fits:
                fits[c] = fit_linear(records, head, task, rows, c, features, reference_features, grid, seed)
    except CohortError as e:
        return {"clear": False, "why": str(e)}
    lin, ref = fits[LINEAR], fits[REFERENCE]
    if lin.inner_pred is None or ref.inner_pred is None or not np.array_equal(lin.inner_rows, ref.inner_rows):
        return {"clear": False, "why": "no inner split to compare on"}
    y = pd.to_numeric(records[head], errors="coerce").to_numpy(float)[lin.inner_rows]
    metric = metrics_lib.auc if task == "binary" else metrics_lib.mae
    return {"clear": bool(linear.clearly_better(y, lin.inner_pred, ref.inner_pred, task, seed=seed)),
            "n": int(len(y)), "metric": "auc" if task == "binary" else "mae",
            LINEAR: float(metric(y, lin.inner_pred)), REFERENCE: float(metric(y, ref.inner_pred))}


def _stack_head(job):
    """One head over the folds (:func:`stack_models`; module level so that heads run in worker
    processes). Returns ``(labels, combined predictions, model descriptions, fold entries)``,
    each over the task's rows."""
    (records, ids, networks, fold_rows, h, task, candidate_sets, features, ref_features, grid, settings,
     primary, seed) = job
    y = pd.to_numeric(records[h], errors="coerce").to_numpy(float)
    pred = np.full(len(ids), np.nan)
    model = np.full(len(ids), "", dtype=object)
    metric = metrics_lib.auc if task == "binary" else metrics_lib.mae
    entries = []
    for f, (inner_train, inner_val, test) in fold_rows.items():
        entry = {"fold": int(f), "head": h, "metric": "auc" if task == "binary" else "mae"}
        rows = np.concatenate([inner_train, inner_val])
        full = {}   # linear candidate -> fitted on all the fold's training patients
        candidates = candidate_sets["images"]
        if settings["image_gate"]:
            own = image_evidence(records, h, task, rows, features, ref_features, grid, seed + int(f), full)
            uses = bool(primary.get(f, {}).get("clear") or own["clear"])
            entry["images"] = {"used": uses, "primary_head": primary.get(f), "this_head": own}
            candidates = candidate_sets["images"] if uses else candidate_sets["clinical"]
        val, tst, names = {}, {}, {}
        for c in candidates:
            if c in networks:
                oof, val_tables = networks[c]
                val[c] = val_tables[f][f"pred_{h}"].reindex(ids.iloc[inner_val]).to_numpy(float)
                tst[c] = oof[f"pred_{h}"].reindex(ids.iloc[test]).to_numpy(float)
                continue
            try:
                inner = fit_linear(records, h, task, inner_train, c, features, ref_features, grid, seed + int(f))
                if c not in full:
                    full[c] = fit_linear(records, h, task, rows, c, features, ref_features, grid, seed + int(f))
            except CohortError as e:   # e.g. a single class among the training patients
                entry.setdefault("left_out", {})[c] = str(e)
                continue
            val[c], tst[c] = inner.predict(records.iloc[inner_val]), full[c].predict(records.iloc[test])
            names[c] = full[c].candidate.name
        if not val:
            raise CohortError(f"stacking: no candidate of {list(candidates)} could be fitted for {h} in fold {f}")
        yv = y[inner_val]
        lab = np.isfinite(yv) & np.all([np.isfinite(v) for v in val.values()], axis=0)
        scorable = lab.sum() > 1 and (task != "binary" or len(np.unique(yv[lab])) == 2)
        weights = stack.fit_weights(yv, val, task, shrink=float(settings["shrink"]),
                                    step=float(settings["weight_step"]))
        entry.update(n_inner_val=int(lab.sum()), models=names, weights=weights,
                     inner_val={c: float(metric(yv[lab], v[lab])) if scorable else None for c, v in val.items()},
                     inner_val_loss={c: float(stack.loss(yv[lab], v[lab], task)) if lab.any() else None
                                     for c, v in val.items()},
                     combined_inner_val=(float(metric(yv[lab], stack.combine(val, weights)[lab]))
                                         if scorable else None))
        pred[test] = stack.combine(tst, weights)
        model[test] = stack.describe(weights, names)
        entries.append(entry)
    return y, pred, model, entries


def stack_models(records: pd.DataFrame, folds: np.ndarray, heads: Sequence[str], binary_heads: Sequence[str],
                 features: Sequence[str], network_oof: Mapping[str, pd.DataFrame], run_dirs: Mapping[str, str],
                 out_dir: str, *, candidates: Sequence[str] = (LINEAR, NETWORK),
                 clinical_candidates: Sequence[str] = (REFERENCE, CLINICAL_NETWORK), image_gate: bool = True,
                 primary_head: str | None = None, shrink: float = 0.7, weight_step: float = 0.05, seed: int = 0,
                 grid_for=None, reference_features: Sequence[str] | None = None,
                 num_workers: int = 0) -> tuple[pd.DataFrame, dict]:
    """The reported outcome model of every head (module docstring).

    Args:
      records: the outcome task's records (row i = patient i) with the label columns ``heads``
        and the ``features`` (clinical columns + stage-1 score columns).
      folds: (N,) outer fold per row, as the networks' cross-validation used.
      heads / binary_heads: the outcome heads, and which of them are binary.
      network_oof: network candidate -> its ``oof.csv`` (``patient_id, fold, pred_<head>``).
      run_dirs: network candidate -> its cross-validation folder (``fold_k/split.json``,
        ``fold_k/inner_val.csv``); every network's splits must be the same.
      out_dir: where ``selected_oof.csv`` and ``selection.json`` are written.
      candidates: the combination's candidates (a selection of :data:`CANDIDATES`) when the
        images are used; a network candidate without a run is left out (named in ``notes``).
      clinical_candidates: the candidates when they are not (``image_gate``): models of the
        clinical columns only.
      image_gate: use ``candidates`` in a fold only where the image scores clearly help the
        linear family for ``primary_head`` or for the head itself (:func:`image_evidence`, on
        every training patient of the fold), else ``clinical_candidates``. False: always
        ``candidates``.
      primary_head: the outcome whose evidence opens the gate for every head (default the first
        binary head).
      shrink / weight_step: ``selection.stack.fit_weights``' settings.
      grid_for: optional ``head -> linear candidates`` (default ``linear.candidates``).
      reference_features: the clinical columns of the reference model (default ``features``).
      num_workers: processes that combine the heads side by side (``workers.process_map``; the
        result does not depend on it).

    Returns ``(combined out-of-fold table, summary)``.
    """
    sets = {"images": check_candidates(candidates), "clinical": check_candidates(clinical_candidates)}
    image_only = sorted({c for c in sets["clinical"] if c in (LINEAR, NETWORK)})
    if image_only:
        raise ConfigError(f"config.outcome.stack.clinical_candidates: {image_only} read the images")
    notes = [f"{c}: no cross-validation of it in this run, left out" for c in dict.fromkeys(sets["images"] + sets["clinical"])
             if c in NETWORK_DIRS and c not in network_oof]
    sets = {k: tuple(c for c in v if c not in NETWORK_DIRS or c in network_oof) for k, v in sets.items()}
    if not sets["images"] or (image_gate and not sets["clinical"]):
        raise ConfigError("stacking: none of the configured candidates is available in this run")
    candidates = tuple(dict.fromkeys(sets["images"] + (sets["clinical"] if image_gate else ())))
    primary_head = primary_head or next(iter(binary_heads), heads[0])
    ids = records["patient_id"].astype(str)
    ref_features = list(reference_features if reference_features is not None else features)
    networks = {c: (network_oof[c].assign(patient_id=network_oof[c]["patient_id"].astype(str)).set_index("patient_id"),
                    {}) for c in candidates if c in network_oof}
    if not networks:
        raise ConfigError("stacking: the inner splits come from the networks' runs, and no network ran")
    splits = {}   # fold -> split.json (the same in every network's run)
    for c, (_, val_tables) in networks.items():
        for f in sorted(np.unique(folds)):
            fold_dir = os.path.join(run_dirs[c], f"fold_{int(f)}")
            with open(os.path.join(fold_dir, "split.json")) as fh:
                split = json.load(fh)
            if set(ids[np.asarray(folds) == f]) != set(map(str, split["test"])):
                raise CohortError(f"stacking: {fold_dir}/split.json's test patients are not fold {f}")
            if splits.setdefault(f, split) != split:
                raise CohortError(f"stacking: {fold_dir}/split.json differs from the other network's split")
            val_tables[f] = pd.read_csv(os.path.join(fold_dir, "inner_val.csv"),
                                        dtype={"patient_id": str}).set_index("patient_id")
    fold_rows = {f: (_rows(ids, sp["inner_train"], f"fold {f}'s split.json"),
                     _rows(ids, sp["inner_val"], f"fold {f}'s split.json"), np.flatnonzero(np.asarray(folds) == f))
                 for f, sp in splits.items()}
    settings = {"shrink": shrink, "weight_step": weight_step, "image_gate": bool(image_gate)}
    primary = {}   # fold -> the primary head's image evidence (it opens the gate for every head)
    if image_gate and primary_head in heads:
        task = "binary" if primary_head in binary_heads else "regression"
        grid = grid_for(primary_head) if grid_for is not None else None
        primary = {f: image_evidence(records, primary_head, task, np.concatenate(r[:2]), features, ref_features,
                                     grid, seed + int(f)) for f, r in fold_rows.items()}
    jobs = [(records, ids, networks, fold_rows, h, "binary" if h in binary_heads else "regression", sets,
             list(features), ref_features, grid_for(h) if grid_for is not None else None, settings, primary, seed)
            for h in heads]
    out = pd.DataFrame({"patient_id": ids.to_numpy(), "fold": np.asarray(folds, int)})
    entries = []
    for h, (y, pred, model, fold_entries) in zip(heads, process_map(_stack_head, jobs, num_workers)):
        out[f"label_{h}"], out[f"pred_{h}"], out[f"model_{h}"] = y, pred, model
        entries.extend(fold_entries)
    mean_weights = {h: {c: float(np.mean([e["weights"].get(c, 0.0) for e in entries if e["head"] == h]))
                        for c in candidates} for h in heads}
    gate = (f"; {', '.join(sets['clinical'])} instead where the image scores do not clearly help the linear "
            f"family for {primary_head} or the head itself on the fold's training patients" if image_gate else "")
    summary = {"rule": f"stacking: per fold and head the weights of {', '.join(sets['images'])}{gate}, fitted to "
                       f"minimise the head's loss (log loss; MAE for VAS) on the inner validation patients and shrunk "
                       f"{shrink:g} of the way to equal weights",
               "candidates": list(candidates), "image_candidates": list(sets["images"]),
               "clinical_candidates": list(sets["clinical"]) if image_gate else [], "image_gate": bool(image_gate),
               "primary_head": primary_head, "shrink": shrink, "weight_step": weight_step,
               "images_used_in_folds": {h: int(sum(bool(e.get("images", {"used": True})["used"])
                                                   for e in entries if e["head"] == h)) for h in heads},
               "features": list(features), "reference_features": ref_features, "folds": int(len(fold_rows)),
               "mean_weights": mean_weights, "folds_detail": entries, "notes": notes}
    atomic.write_csv(out, os.path.join(out_dir, "selected_oof.csv"))
    atomic.write_json(os.path.join(out_dir, "selection.json"), metrics_lib.to_jsonable(summary), indent=1,
                      sort_keys=False)
    return out, summary
