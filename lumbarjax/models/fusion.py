"""Outcome model: MRI encoder + optional X-ray branch + clinical MLP, fused, multi-head.

Also the clinical feature encoder (plain numpy/pandas, fitted on the training fold only), the
masked multi-head outcome loss, and the config -> model builders for the grader and outcome model.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
from flax.core import FrozenDict
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from lumbarjax.errors import ClinicalError, ConfigError
from lumbarjax.models.encoder3d import MRIEncoder
from lumbarjax.models.ordinal import bce_with_logits
from lumbarjax.models.resnet2d import Grader, ResNet2D
from lumbarjax.schema import BINARY_HEADS, REGRESSION_HEADS, VAS_RANGE  # fusion.BINARY_HEADS etc. still resolve

Dtype = Any
VAS_SCALE = VAS_RANGE[1]  # regression heads work in VAS/100 internally
VAS_LINK_SHARPNESS = 25.0  # b of the soft clip vas_link: within 0.4 mm of the identity from 10 to 90 mm


def vas_link(raw: jax.Array, sharpness: float = VAS_LINK_SHARPNESS) -> jax.Array:
    """The regression heads' bounded output link, VAS/100 units: a soft clip of ``raw`` to (0, 1),
    ``softplus(b·raw)/b − softplus(b·(raw − 1))/b`` with b = ``sharpness``. It is the identity
    inside the scale (|link(x) − x| < 0.004, i.e. 0.4 mm, for x in [0.1, 0.9]; link(0.5) = 0.5
    exactly), between 0 and 1 everywhere, smooth and monotone, so every VAS prediction
    of the network lies on the 0–100 scale while a prediction near the middle trains as before
    (the clinical ridge offset of ``selection.clinical_offset`` still starts the head where the ridge
    predicts)."""
    b = float(sharpness)

    def lower(x):   # exact in float32 for x <= 0.5: softplus(b·(x − 1)) is tiny there
        return (jax.nn.softplus(b * x) - jax.nn.softplus(b * (x - 1.0))) / b
    # link(x) = 1 − link(1 − x): the upper half from the lower one, free of cancellation
    return jnp.where(raw <= 0.5, lower(raw), 1.0 - lower(1.0 - raw))


# ----------------------------------------------------------------------------- clinical features
def _cat_str(v) -> str:
    """Canonical category string: 1.0 -> "1", " M " -> "M"."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    return str(v).strip()


class ClinicalEncoder:
    """Clinical table -> (N, F) float32 features, statistics from the training fold only.

    Numeric column c -> two features: ``c`` = (x - mean) / std with NaN -> 0, and ``c_missing``
    (1 where NaN) — always present so F does not depend on the fold. Means/stds ignore NaN; a
    constant or all-missing column uses std 1 (and mean 0 when all-missing).
    Categorical column c -> one-hot ``c=<level>`` per level seen in fit (sorted), plus
    ``c=<missing>`` (NaN) and ``c=<other>`` (a level not seen in fit): unknown values are all-zero
    over the known levels with the indicator set.
    """

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str], means: Mapping[str, float],
                 stds: Mapping[str, float], levels: Mapping[str, Sequence[str]]):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.means = {k: float(v) for k, v in means.items()}
        self.stds = {k: float(v) for k, v in stds.items()}
        self.levels = {k: [str(x) for x in v] for k, v in levels.items()}

    # -- fitting
    @staticmethod
    def _numeric_column(df: pd.DataFrame, col: str) -> np.ndarray:
        if col not in df.columns:
            raise ClinicalError(f"clinical table: numeric feature column {col!r} is missing "
                                f"(have {list(df.columns)})")
        raw = df[col]
        vals = pd.to_numeric(raw, errors="coerce")
        bad = vals.isna() & raw.notna()
        if bad.any():
            examples = raw[bad].astype(str).unique()[:3].tolist()
            pids = df.loc[bad, "patient_id"].astype(str).tolist()[:3] if "patient_id" in df.columns else []
            raise ClinicalError(f"clinical column {col!r}: non-numeric values {examples}"
                                + (f" (patient_id {pids})" if pids else ""))
        return vals.to_numpy(dtype=np.float64)

    @staticmethod
    def _categorical_column(df: pd.DataFrame, col: str) -> list:
        if col not in df.columns:
            raise ClinicalError(f"clinical table: categorical feature column {col!r} is missing "
                                f"(have {list(df.columns)})")
        return [None if pd.isna(v) else _cat_str(v) for v in df[col].tolist()]

    @classmethod
    def fit(cls, df: pd.DataFrame, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> "ClinicalEncoder":
        """Fit on the TRAINING fold: per-column NaN-ignoring mean/std and category levels."""
        overlap = set(numeric) & set(categorical)
        if overlap:
            raise ConfigError(f"ClinicalEncoder: columns {sorted(overlap)} are both numeric and categorical")
        means, stds, levels = {}, {}, {}
        for col in numeric:
            x = cls._numeric_column(df, col)
            ok = x[~np.isnan(x)]
            mean = float(ok.mean()) if ok.size else 0.0
            std = float(ok.std()) if ok.size > 1 else 0.0
            means[col] = mean
            stds[col] = std if std > 1e-8 else 1.0
        for col in categorical:
            vals = cls._categorical_column(df, col)
            levels[col] = sorted({v for v in vals if v is not None})
        return cls(numeric, categorical, means, stds, levels)

    # -- applying
    @property
    def feature_names(self) -> list[str]:
        names = []
        for col in self.numeric:
            names += [col, f"{col}_missing"]
        for col in self.categorical:
            names += [f"{col}={lv}" for lv in self.levels[col]] + [f"{col}=<missing>", f"{col}=<other>"]
        return names

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """(N rows) -> (N, F) float32 using only the fitted statistics."""
        n = len(df)
        blocks = []
        for col in self.numeric:
            x = self._numeric_column(df, col)
            miss = np.isnan(x)
            z = np.where(miss, 0.0, (x - self.means[col]) / self.stds[col])
            blocks += [z[:, None], miss[:, None].astype(np.float64)]
        for col in self.categorical:
            vals = self._categorical_column(df, col)
            lv = self.levels[col]
            index = {v: i for i, v in enumerate(lv)}
            onehot = np.zeros((n, len(lv) + 2))
            for r, v in enumerate(vals):
                if v is None:
                    onehot[r, len(lv)] = 1.0
                elif v in index:
                    onehot[r, index[v]] = 1.0
                else:
                    onehot[r, len(lv) + 1] = 1.0
            blocks.append(onehot)
        if not blocks:
            return np.zeros((n, 0), np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    # -- serialisation
    def to_dict(self) -> dict:
        """JSON-serialisable state (for checkpoints)."""
        return {"numeric": self.numeric, "categorical": self.categorical, "means": self.means,
                "stds": self.stds, "levels": self.levels}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ClinicalEncoder":
        try:
            return cls(d["numeric"], d["categorical"], d["means"], d["stds"], d["levels"])
        except KeyError as e:
            raise ConfigError(f"ClinicalEncoder.from_dict: missing key {e}") from e


# ----------------------------------------------------------------------------- outcome model
class MLP(nn.Module):
    """(B, F) -> (B, hidden[-1]): one Dense + ReLU + dropout (rng "dropout", active only when
    ``train``) per entry of ``hidden``; the input unchanged when ``hidden`` is empty."""

    hidden: Sequence[int]
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, dtype=self.dtype, name=f"dense{i}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class OutcomeModel(nn.Module):
    """Fused outcome model: batch dict -> {head: (B,) float32}.

    mri: kwargs for MRIEncoder (reads batch["mri"] (B,D,H,W,1), batch["mri_present"] (B,)) or None.
    xray: kwargs for ResNet2D (reads batch["xray"] (B,H,W,1), batch["xray_present"] (B,)) or None.
    Clinical features batch["clinical"] (B, F) go through an MLP (clinical_hidden); F may be 0.
    Each image branch: features -> LayerNorm -> x presence flag (a missing modality contributes
    zeros), and the flag itself is a fusion input. In training each present modality is dropped
    with probability modality_dropout (rng "dropout"). mri=None and xray=None -> the
    clinical-only baseline, trained the same way.
    clinical_skip: also a linear path from the clinical features straight to every head
    (``skip_<head>``, zero-initialised, added to the head's output), so that the network contains
    the logistic / linear regression on the clinical columns (issue 13).
    Outputs: logits for binary_heads; VAS 0–100 predictions for regression_heads (the network
    predicts VAS/100 through the bounded link :func:`vas_link`, scaled by 100 at the output, so
    every prediction lies in (0, 100)). Heads are computed in float32.
    """

    mri: Mapping | None = None
    xray: Mapping | None = None
    clinical_hidden: Sequence[int] = (32,)
    fusion_hidden: Sequence[int] = (64,)
    dropout: float = 0.1
    modality_dropout: float = 0.25
    freeze_mri: bool = False
    clinical_skip: bool = False
    binary_heads: Sequence[str] = BINARY_HEADS
    regression_heads: Sequence[str] = REGRESSION_HEADS
    dtype: Dtype = jnp.float32

    def _branch(self, encoder: nn.Module, image: jax.Array, present: jax.Array, train: bool, name: str,
                frozen: bool = False):
        feats = encoder(image, train)
        if frozen and train:  # a fixed encoder: skip its backward pass (eval/IG keep the gradient)
            feats = jax.lax.stop_gradient(feats)
        feats = nn.LayerNorm(dtype=jnp.float32, name=f"{name}_ln")(feats.astype(jnp.float32))
        present = jnp.asarray(present, jnp.float32).reshape(-1)
        if train and self.modality_dropout > 0:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.modality_dropout, present.shape)
            present = present * keep.astype(jnp.float32)
        return [feats * present[:, None], present[:, None]]

    @nn.compact
    def __call__(self, batch: Mapping, train: bool = False) -> dict:
        parts = []
        if self.mri is not None:
            enc = MRIEncoder(**dict(self.mri), dtype=self.dtype, name="mri_encoder")
            parts += self._branch(enc, batch["mri"], batch["mri_present"], train, "mri", self.freeze_mri)
        if self.xray is not None:
            enc = ResNet2D(**dict(self.xray), dtype=self.dtype, name="xray_encoder")
            parts += self._branch(enc, batch["xray"], batch["xray_present"], train, "xray")
        clinical = jnp.asarray(batch["clinical"], jnp.float32)
        b = clinical.shape[0]
        if clinical.shape[-1] > 0:
            parts.append(MLP(tuple(self.clinical_hidden), self.dropout, jnp.float32, name="clinical_mlp")(
                clinical, train))
        if not parts:
            raise ConfigError("OutcomeModel: no inputs (mri=None, xray=None and 0 clinical features)")
        h = jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1)
        h = MLP(tuple(self.fusion_hidden), self.dropout, jnp.float32, name="fusion_mlp")(h, train)
        def skip(head):
            if not self.clinical_skip or clinical.shape[-1] == 0:
                return 0.0
            return nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros, dtype=jnp.float32,
                            name=f"skip_{head}")(clinical).reshape(b)

        out = {}
        for head in self.binary_heads:
            out[head] = nn.Dense(1, dtype=jnp.float32, name=f"head_{head}")(h).reshape(b) + skip(head)
        for head in self.regression_heads:
            raw = nn.Dense(1, dtype=jnp.float32, bias_init=nn.initializers.constant(0.5),
                           name=f"head_{head}")(h).reshape(b) + skip(head)
            out[head] = vas_link(raw) * VAS_SCALE
        return out


def _huber(err, delta):
    a = jnp.abs(err)
    return jnp.where(a <= delta, 0.5 * err ** 2, delta * (a - 0.5 * delta))


def outcome_loss(outputs: Mapping, batch: Mapping, class_weights: Mapping | None = None,
                 regression_weight: float = 1.0, regression_loss: str = "huber", huber_delta: float = 0.2,
                 regression_heads: Sequence[str] | None = None):
    """Masked multi-head outcome loss.

    For each head in ``outputs`` with a label in ``batch["labels"]``: mask =
    ``batch["label_mask"][head] * batch["valid"]``; the head's loss is the masked mean over its
    valid entries (0, not NaN, when a head has no labels in the batch). Binary heads: BCE with
    logits, optional positive-class weight ``class_weights[head]`` (e.g. n_neg / n_pos of the
    training fold). Regression heads (VAS 0–100
    outputs/labels): Huber (delta in VAS/100 units) or MSE on VAS/100, times regression_weight.
    Total = sum of the per-head losses. Labels at masked positions may be NaN.

    Returns (loss, aux) with aux["<head>/loss"], aux["<head>/count"] and aux["loss"].
    """
    regression_heads = tuple(REGRESSION_HEADS if regression_heads is None else regression_heads)
    class_weights = dict(class_weights or {})
    labels, label_mask = batch["labels"], batch["label_mask"]
    first = next(iter(outputs.values()))
    valid = jnp.asarray(batch.get("valid", jnp.ones(first.shape[0])), jnp.float32)
    total = jnp.zeros((), jnp.float32)
    aux = {}
    for head, pred in outputs.items():
        if head not in labels:
            continue
        mask = jnp.asarray(label_mask[head], jnp.float32) * valid
        pred = jnp.where(mask > 0, jnp.asarray(pred, jnp.float32), 0.0)  # NaN-safe masked gradients
        y = jnp.where(mask > 0, jnp.nan_to_num(jnp.asarray(labels[head], jnp.float32)), 0.0)
        if head in regression_heads:
            err = (pred - y) / VAS_SCALE
            if regression_loss == "huber":
                per = _huber(err, huber_delta)
            elif regression_loss == "mse":
                per = err ** 2
            else:
                raise ConfigError(f"outcome_loss: unknown regression_loss {regression_loss!r} ('huber' | 'mse')")
            weight = regression_weight
        else:
            per = bce_with_logits(pred, y, float(class_weights.get(head, 1.0)))
            weight = 1.0
        per = jnp.where(mask > 0, per, 0.0)  # exact zeros (and zero grads) at masked entries
        count = mask.sum()
        head_loss = jnp.sum(per * mask) / jnp.maximum(count, 1.0)
        total = total + weight * head_loss
        aux[f"{head}/loss"] = head_loss
        aux[f"{head}/count"] = count
    aux["loss"] = total
    return total, aux


# ----------------------------------------------------------------------------- builders
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name) -> Any:
    if not isinstance(name, str):
        return name
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype: unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _plain(v):
    """Config values -> hashable module fields (lists and tuples -> tuples)."""
    return tuple(v) if isinstance(v, (list, tuple)) else v


def module_kwargs(cls, cfg, what: str, extra: Sequence[str] = ()) -> dict:
    """``cfg`` (ConfigDict / dict) as keyword arguments of the flax module ``cls``: every key
    must be one of its dataclass fields (or ``extra``); an unknown key is a ConfigError naming
    it and ``what`` (e.g. "config.grader.model"). Absent keys keep the module's defaults."""
    given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg or {})
    fields = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name")] + list(extra)
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; {cls.__name__} takes {sorted(fields)}")
    return {k: _plain(v) for k, v in given.items()}


def build_grader(model_config) -> Grader:
    """``Grader(**config.grader.model)`` (configs/default.py lists the fields)."""
    kw = module_kwargs(Grader, model_config, "config.grader.model")
    if "dtype" in kw:
        kw["dtype"] = _dtype(kw["dtype"])
    return Grader(**kw)


def _branch(cfg, cls, what: str) -> FrozenDict | None:
    """An image branch's config (``enabled`` + the encoder's fields) -> its kwargs (a FrozenDict:
    module fields must hash, as static arguments of the jitted steps), or None."""
    if cfg is None:
        return None
    kw = module_kwargs(cls, cfg, what, extra=("enabled",))
    if not kw.pop("enabled", True):
        return None
    kw.pop("dtype", None)  # the outcome model's dtype applies to its branches
    if kw.get("stage_sizes") == ():
        kw["stage_sizes"] = None  # () -> the arch's default
    if cls is MRIEncoder:
        for k in ("patch", "depth_patch"):
            if k in kw and not kw[k]:
                kw[k] = None  # 0 -> the arch's default
    return FrozenDict(kw)


def build_outcome_model(model_config) -> OutcomeModel:
    """``OutcomeModel(**config.outcome.model)``: the ``mri`` / ``xray`` branches are MRIEncoder /
    ResNet2D fields plus ``enabled`` (configs/default.py lists them); a branch absent from a
    partial config keeps the module's default (no branch), like every other absent field."""
    kw = module_kwargs(OutcomeModel, model_config, "config.outcome.model")
    for key, cls in (("mri", MRIEncoder), ("xray", ResNet2D)):
        if key in kw:
            kw[key] = _branch(kw[key], cls, f"config.outcome.model.{key}")
    if "dtype" in kw:
        kw["dtype"] = _dtype(kw["dtype"])
    return OutcomeModel(**kw)


def positive_class_weights(labels: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                           heads: Sequence[str] = BINARY_HEADS) -> dict:
    """Training-fold positive-class weights n_neg / n_pos per binary head (1.0 when undefined)."""
    out = {}
    for h in heads:
        if h not in labels:
            continue
        m = np.asarray(masks[h]) > 0
        y = np.asarray(labels[h])[m]
        pos, neg = float(np.sum(y > 0.5)), float(np.sum(y <= 0.5))
        out[h] = neg / pos if pos > 0 and neg > 0 else 1.0
        if not math.isfinite(out[h]):
            out[h] = 1.0
    return out
