"""A pretrained MRI encoder as one file: the weights plus a model card.

A group that pretrains once (on RSNA 2024, SPIDER, or its own graded cohort; on a GPU) hands
``mri_encoder.msgpack`` to others, who start their outcome model from it with
``--config.pretrain.encoder_file=PATH`` instead of pretraining.

File format: a msgpack map ``{"format": FORMAT, "card": <JSON text>, "params": <pytree>}``
(flax.serialization), written atomically; the card is also written beside it as
``<name>.card.json`` for people to read (the loader uses the copy inside the file). The card
says what the weights expect and what they learnt:

- ``architecture`` and ``encoder_kwargs`` (``MRIEncoder(**encoder_kwargs)`` rebuilds it),
- ``input``: voxel spacing (mm) and shape (D, H, W) after resampling, orientation, channels,
- ``intensity_normalisation``: per-volume percentile scaling (``preprocess.normalize_intensity``)
  and the preprocessing code version,
- ``labels``: the label column, number of grades and their names,
- ``training_data``: a description (dataset format, counts, grade counts; never a patient id),
- ``validation``: the metrics on the held-out pretraining patients,
- ``lumbarjax_version``.

:func:`check_compatible` compares a card with the configuration that wants to use it and raises
:class:`~lumbarjax.errors.ConfigError` naming the first field that differs (architecture or any
encoder kwarg, input spacing / shape, intensity normalisation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import flax.serialization
import numpy as np

import lumbarjax
from lumbarjax import atomic
from lumbarjax.errors import ConfigError

FORMAT = "lumbarjax-mri-encoder/1"
# The X-ray grader's pretrained backbone (pipelines.xray_pretrain) uses the same file layout.
XRAY_FORMAT = "lumbarjax-xray-backbone/1"
ORIENTATION = "sagittal: d left-right (slices), h superior->inferior, w anterior->posterior"


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else list(o)))


def model_card(*, encoder_kwargs: Mapping, preprocessing: Mapping, label_column: str,
               label_names, training_data: Mapping, validation: Mapping) -> dict:
    """The card of an encoder. ``preprocessing`` is ``preprocessing_config(config)`` (its
    ``"mri"`` part and ``code_version`` are used)."""
    from lumbarjax.data.preprocess import CODE_VERSION

    mri = preprocessing["mri"]
    return _jsonable({
        "format": FORMAT,
        "lumbarjax_version": lumbarjax.__version__,
        "architecture": encoder_kwargs.get("arch", ""),
        "encoder_kwargs": dict(encoder_kwargs),
        "input": {"spacing_mm": list(mri["spacing"]), "shape": list(mri["shape"]), "channels": 1,
                  "orientation": ORIENTATION, "resampling": "centre crop/pad on the LPS grid"},
        "intensity_normalisation": {"method": "per-volume percentiles -> [0, 1], clipped",
                                    "percentiles": list(mri["norm_percentiles"]),
                                    "preprocess_code_version": CODE_VERSION},
        "labels": {"column": label_column, "num_grades": len(label_names),
                   "names": list(label_names)},
        "training_data": dict(training_data),
        "validation": dict(validation),
    })


def save_encoder_file(path: str, params, card: Mapping, head=None, *, fmt: str = FORMAT,
                      localiser=None) -> tuple[str, str]:
    """Write the encoder file and its readable card copy; returns (path, card_path).

    ``head``: the pretraining model's grading head (``StenosisGrader``'s ``ln`` and ``head``
    parameters; ``LevelStenosisGrader``'s also ``level_bias``), stored beside the encoder so
    that the file can also grade stenosis — the outcome model's MRI stage-1 scores
    (:func:`load_grading_head`). The card then says so. ``localiser``: the disc-level
    localiser's parameters (a by-level file's, or one trained beside a whole-volume grader;
    ``pipelines.mri_levels``, :func:`load_localiser`; its settings are the card's ``levels.localiser``)."""
    path = os.fspath(path)
    card = dict(card)
    if head is not None:
        card["grading_head"] = {"layers": "LayerNorm 'ln' + Dense 'head' -> CORN logits (K-1)"
                                          + (" + 'level_bias' per level" if "level_bias" in head else ""),
                                "num_grades": card.get("labels", {}).get("num_grades")}
    blob = {"format": fmt, "card": json.dumps(_jsonable(card), sort_keys=True), "params": params}
    if head is not None:
        blob["head"] = head
    if localiser is not None:
        blob["localiser"] = localiser
    atomic.write_bytes(path, flax.serialization.msgpack_serialize(blob))
    card_path = card_path_for(path)
    atomic.write_json(card_path, _jsonable(card))
    return path, card_path


def card_path_for(path: str) -> str:
    """The model-card JSON written beside an encoder file: ``<stem>.card.json`` for
    ``<stem>.msgpack`` (``path + ".card.json"`` for any other name)."""
    stem = path[:-len(".msgpack")] if path.endswith(".msgpack") else path
    return stem + ".card.json"


def load_encoder_file(path: str, *, fmt: str = FORMAT, what: str = "config.pretrain.encoder_file"):
    """(params as numpy pytree, card dict); ConfigError naming the file (as the setting ``what``
    that gave it) when it is not a file of format ``fmt``."""
    blob = _load_blob(path, fmt, what)
    return blob["params"], json.loads(blob["card"])


def load_parts(path: str) -> dict:
    """One read of an MRI encoder file: ``{"params", "card", "head", "localiser"}`` (head and
    localiser None when the file has none)."""
    blob = _load_blob(path)
    return {"params": blob["params"], "card": json.loads(blob["card"]), "head": blob.get("head"),
            "localiser": blob.get("localiser")}


def load_grading_head(path: str):
    """The grading head's parameters (``{"ln": …, "head": …}``) stored with the encoder, or None
    for a file written without one (an older file, or a head that was not saved)."""
    return _load_blob(path).get("head")


def load_localiser(path: str):
    """The disc-level localiser's parameters stored with the encoder, or None."""
    return _load_blob(path).get("localiser")


def _load_blob(path: str, fmt: str = FORMAT, what: str = "config.pretrain.encoder_file") -> dict:
    path = os.fspath(path)
    kind = "X-ray backbone" if fmt == XRAY_FORMAT else "encoder"
    if not os.path.isfile(path):
        raise ConfigError(f"{what}={path!r}: file not found")
    try:
        with open(path, "rb") as f:
            blob = flax.serialization.msgpack_restore(f.read())
    except Exception as e:
        raise ConfigError(f"{what}={path!r}: not a lumbarjax {kind} file "
                          f"({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != fmt or "params" not in blob:
        raise ConfigError(f"{what}={path!r}: not a lumbarjax {kind} file "
                          f"(format {blob.get('format') if isinstance(blob, dict) else None!r}, "
                          f"expected {fmt!r})")
    return blob


def check_compatible(card: Mapping, *, encoder_kwargs: Mapping, preprocessing: Mapping,
                     path: str = "") -> None:
    """ConfigError naming the first field where ``card`` and the configuration differ."""
    where = f"config.pretrain.encoder_file={path!r}" if path else "pretrained encoder"
    want = _jsonable(dict(encoder_kwargs))
    have = card.get("encoder_kwargs", {})
    if card.get("architecture") != want.get("arch"):
        raise ConfigError(f"{where}: architecture differs: the file has {card.get('architecture')!r}, "
                          f"config.outcome.model.mri.arch is {want.get('arch')!r}")
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            raise ConfigError(f"{where}: encoder field {k!r} differs: the file has {have.get(k)!r}, "
                              f"config.outcome.model.mri gives {want.get(k)!r}")
    mri = _jsonable(dict(preprocessing["mri"]))
    inp = card.get("input", {})
    for field, a, b in (("mri.spacing", inp.get("spacing_mm"), mri["spacing"]),
                        ("mri.shape", inp.get("shape"), mri["shape"])):
        if not (a is not None and len(a) == len(b) and np.allclose(a, b)):
            raise ConfigError(f"{where}: input geometry differs: the file expects {field}={a}, "
                              f"config.{field} is {b}")
    check_norm_percentiles(card, mri["norm_percentiles"], "mri.norm_percentiles", where)


def check_norm_percentiles(card: Mapping, want, key: str, where: str) -> None:
    """ConfigError when the percentiles of the card's intensity normalisation differ from
    ``want`` (the config's ``key``, e.g. ``mri.norm_percentiles``); a card without them passes."""
    pct = card.get("intensity_normalisation", {}).get("percentiles")
    if pct is not None and not np.allclose(pct, want):
        raise ConfigError(f"{where}: intensity normalisation differs: the file expects "
                          f"{key}={pct}, config has {want}")


__all__ = ["FORMAT", "XRAY_FORMAT", "card_path_for", "check_compatible", "check_norm_percentiles", "load_encoder_file", "load_grading_head",
           "load_localiser", "load_parts", "model_card",
           "save_encoder_file"]
