"""Model selection for the outcome task on n ≈ 160: the neural fusion or the penalised linear
family, per outer fold and head, chosen on the inner validation split only.

For outer fold ``k`` (its patients never seen) the fusion network was trained on the fold's inner
training patients and its checkpoint picked on the inner validation patients
(``train.crossval``; ``fold_k/split.json``, ``fold_k/inner_val.csv``). Here the penalised linear
family (``models.linear.fit_penalised``: L2 / elastic-net logistic regression, ridge / elastic
net for VAS, penalty chosen by an inner split of its own training rows) is fitted on the same
inner training patients, on the clinical columns plus the stage-1 image scores (the grader's
out-of-fold X-ray grades, the pretrained MRI stenosis grader's scores), and both are scored on
the inner validation patients: AUC for binary heads, mean absolute error (VAS mm) for
regression heads.

Rule ``"higher"`` (the default): the better inner-validation score wins, a tie goes to the
linear model. Rule ``"clear"``: the network only when it is *clearly* better (its AUC beats the
linear model's in more than 84 % of 200 paired bootstrap resamples, about one standard error; for
MAE the paired mean difference exceeds one standard error — the rule ``models.linear.choose``
uses for penalties). Measured on the demo (2026-12-02): on ~25 validation patients "clear" kept
the network in 1 of 5 folds although the network was the better model out of fold (ZCQ AUC
0.743 vs 0.678 for the linear family), so the selected model lost 0.06–0.1 AUC; "higher" kept it
in 2 of 5 (selected 0.696). Either way the choice is noisy at this size, and the network's
inner-validation score is slightly optimistic (its checkpoint was picked on those patients).
When the linear family is chosen it is
refitted on all the fold's training patients (inner train + inner validation) and predicts the
fold's test patients; otherwise the network's out-of-fold predictions are kept.

Output: ``<run_dir>/selected_oof.csv`` (``patient_id, fold, label_<head>, pred_<head>,
model_<head>``: ``network`` or the linear candidate's name) and ``<run_dir>/selection.json``
(per fold and head: both inner-validation scores and the choice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lumbarjax import atomic
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.models import linear

NETWORK = "network"
CLEAR_WIN = 0.84   # fraction of paired bootstrap resamples (as models.linear.choose)
RULES = {"higher": "the better inner-validation AUC (MAE for VAS) wins; ties go to the linear model",
         "clear": f"network only if clearly better on the inner validation patients (paired "
                  f"bootstrap > {CLEAR_WIN:.0%} for AUC; one standard error for MAE)"}


def better(y: np.ndarray, p_net: np.ndarray, p_lin: np.ndarray, task: str) -> bool:
    """Whether ``p_net`` scores strictly better than ``p_lin`` on labels ``y`` (AUC, or MAE for
    regression); a tie goes to the linear model."""
    y, p_net, p_lin = (np.asarray(a, float) for a in (y, p_net, p_lin))
    if task == "binary":
        return len(set(y.tolist())) == 2 and metrics_lib.auc(y, p_net) > metrics_lib.auc(y, p_lin)
    return float(np.abs(y - p_net).mean()) < float(np.abs(y - p_lin).mean())


def clearly_better(y: np.ndarray, p_net: np.ndarray, p_lin: np.ndarray, task: str, *,
                   seed: int = 0) -> bool:
    """Whether ``p_net`` beats ``p_lin`` on labels ``y`` by about one standard error (module
    docstring). Rows must be labelled and finite."""
    y, p_net, p_lin = (np.asarray(a, float) for a in (y, p_net, p_lin))
    if task == "binary":
        if len(set(y.tolist())) < 2 or metrics_lib.auc(y, p_net) <= metrics_lib.auc(y, p_lin):
            return False
        d = linear.paired_auc_diff(y, p_net, p_lin, seed=seed)
        d = d[np.isfinite(d)]
        return len(d) > 0 and float(np.mean(d > 0)) > CLEAR_WIN
    d = np.abs(y - p_lin) - np.abs(y - p_net)
    return len(d) > 1 and float(d.mean() - d.std(ddof=1) / np.sqrt(len(d))) > 0


def _rows(ids: pd.Series, wanted: Sequence[str], what: str) -> np.ndarray:
    pos = pd.Series(np.arange(len(ids)), index=ids.astype(str).to_numpy())
    missing = [p for p in map(str, wanted) if p not in pos.index]
    if missing:
        raise CohortError(f"model selection: {what} names patient(s) {missing[:3]} not in the task's records")
    return pos.loc[list(map(str, wanted))].to_numpy(int)


def select_models(records: pd.DataFrame, folds: np.ndarray, heads: Sequence[str], binary_heads: Sequence[str],
                  features: Sequence[str], network_oof: pd.DataFrame, run_dir: str, *,
                  seed: int = 0, grid_for=None, rule: str = "higher") -> tuple[pd.DataFrame, dict]:
    """Choose the network or the linear family per fold and head (module docstring).

    Args:
      records: the outcome task's records (row i = patient i) with the label columns ``heads``
        and the ``features`` (clinical columns + stage-1 score columns).
      folds: (N,) outer fold per row, as the network's cross-validation used.
      heads / binary_heads: the outcome heads, and which of them are binary.
      network_oof: the network's ``oof.csv`` (``patient_id, fold, pred_<head>``).
      run_dir: the network's cross-validation folder (``fold_k/split.json``, ``fold_k/inner_val.csv``);
        ``selected_oof.csv`` and ``selection.json`` are written there.
      grid_for: optional ``head -> linear candidates`` (default ``linear.candidates``).
      rule: ``"higher"`` (the better inner-validation score wins, ties to the linear model) or
        ``"clear"`` (the network only when clearly better; see the module docstring).

    Returns ``(selected out-of-fold table, selection summary)``.
    """
    if rule not in RULES:
        raise ConfigError(f"config.outcome.select_rule={rule!r}: expected one of {sorted(RULES)}")
    ids = records["patient_id"].astype(str)
    net = network_oof.assign(patient_id=network_oof["patient_id"].astype(str)).set_index("patient_id")
    out = pd.DataFrame({"patient_id": ids.to_numpy(), "fold": np.asarray(folds, int)})
    choices = []
    for h in heads:
        task = "binary" if h in binary_heads else "regression"
        y = pd.to_numeric(records[h], errors="coerce").to_numpy(float)
        out[f"label_{h}"] = y
        pred = net[f"pred_{h}"].reindex(ids).to_numpy(float).copy()
        model = np.full(len(ids), NETWORK, dtype=object)
        for f in sorted(np.unique(folds)):
            fold_dir = os.path.join(run_dir, f"fold_{int(f)}")
            with open(os.path.join(fold_dir, "split.json")) as fh:
                split = json.load(fh)
            inner_train = _rows(ids, split["inner_train"], f"{fold_dir}/split.json")
            inner_val = _rows(ids, split["inner_val"], f"{fold_dir}/split.json")
            test = np.flatnonzero(np.asarray(folds) == f)
            if set(ids.iloc[test]) != set(map(str, split["test"])):
                raise CohortError(f"model selection: {fold_dir}/split.json's test patients are not fold {f}")
            val_net = pd.read_csv(os.path.join(fold_dir, "inner_val.csv"), dtype={"patient_id": str})
            p_net = val_net.set_index("patient_id")[f"pred_{h}"].reindex(ids.iloc[inner_val]).to_numpy(float)
            grid = grid_for(h) if grid_for is not None else None
            entry = {"fold": int(f), "head": h}
            try:
                fit = linear.fit_penalised(records, h, inner_train, features, task=task, seed=seed + int(f),
                                           grid=grid)
            except CohortError as e:  # e.g. a single class among the inner training patients
                entry.update(choice=NETWORK, why=f"linear family not fitted: {e}")
                choices.append(entry)
                continue
            p_lin = fit.predict(records.iloc[inner_val])
            lab = np.isfinite(y[inner_val]) & np.isfinite(p_net)
            metric = metrics_lib.auc if task == "binary" else metrics_lib.mae
            ok = lab.sum() > 1 and (task != "binary" or len(set(y[inner_val][lab].tolist())) == 2)
            entry.update({"n_inner_val": int(lab.sum()), "linear_model": fit.candidate.name,
                          "metric": "auc" if task == "binary" else "mae",
                          NETWORK: float(metric(y[inner_val][lab], p_net[lab])) if ok else None,
                          "linear": float(metric(y[inner_val][lab], p_lin[lab])) if ok else None})
            args = (y[inner_val][lab], p_net[lab], p_lin[lab], task)
            net_wins = ok and (clearly_better(*args, seed=seed + int(f)) if rule == "clear" else better(*args))
            entry["choice"] = NETWORK if net_wins else "linear"
            if not net_wins:
                refit = linear.fit_penalised(records, h, np.concatenate([inner_train, inner_val]), features,
                                             task=task, seed=seed + int(f), grid=grid)
                pred[test] = refit.predict(records.iloc[test])
                model[test] = refit.candidate.name
                entry["linear_model_refit"] = refit.candidate.name
            choices.append(entry)
        out[f"pred_{h}"] = pred
        out[f"model_{h}"] = model
    summary = {"features": list(features), "rule": RULES[rule],
               "choices": choices,
               "network_chosen": {h: int(sum(c["choice"] == NETWORK for c in choices if c["head"] == h))
                                  for h in heads},
               "folds": int(len(np.unique(folds)))}
    atomic.write_csv(out, os.path.join(run_dir, "selected_oof.csv"))
    atomic.write_json(os.path.join(run_dir, "selection.json"), summary, indent=1, sort_keys=False)
    return out, summary
