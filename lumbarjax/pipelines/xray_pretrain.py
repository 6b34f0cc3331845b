"""Pretrain the X-ray grader's backbone on a public radiograph set, then fine-tune it on the cohort.

Why: the cohort has ~160 graded films; public sets have thousands with radiologists' findings.
VinDr-SpineXR (``data.public.vindr_spinexr``) marks per film, by box, the lesions that make up
radiographic degeneration — disc space narrowing, osteophytes, spondylolisthesis, foraminal
stenosis. The grader's ResNet2D backbone (``config.grader.model``, so the parameters drop in)
learns them as a multi-label task (one sigmoid per finding, ``FindingsNet``); the grader's
cross-validation then starts every fold from that backbone (``GraderTask.encoder_key``,
``"backbone"``) and fine-tunes all of it on the cohort's grades.

The films are read and preprocessed exactly as the cohort's (``preprocess.preprocess_cohort``:
the same decoder, percentile normalisation and resizing to ``config.xray.shape``, cached under
``<workdir>/xray_pretrain/cache``); a film that cannot be decoded is a counted, logged
exclusion. 20 % of the films (seeded, stratified on "any degenerative finding") pick the best
checkpoint by the mean AUC over the findings.

The result is a file (``xray_backbone.msgpack`` + ``.card.json``, ``models.encoder_file``):
backbone weights and a model card (backbone fields, input shape and normalisation, the finding
vocabulary, the training data's counts — never an image id — and the validation AUCs).
``--config.xray_pretrain.backbone_file=PATH`` starts the grader from such a file instead of
pretraining; a different backbone or input geometry is a ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pandas as pd
from absl import logging

from lumbarjax import atomic
from lumbarjax.data.cohort import make_folds
from lumbarjax.data.pipeline import CachedExamples, Subset, make_loader
from lumbarjax.data.preprocess import preprocess_cohort, preprocessing_config
from lumbarjax.data.public import vindr_spinexr
from lumbarjax.errors import CohortError, ConfigError
from lumbarjax.eval import metrics as metrics_lib
from lumbarjax.models import encoder_file
from lumbarjax.models.fusion import build_grader
from lumbarjax.models.resnet2d import ResNet2D
from lumbarjax.train.loop import predict, train_and_evaluate

BACKBONE_FILE = "xray_backbone.msgpack"
SUMMARY_FILE = "xray_pretrain_summary.json"
FORMATS = ("vindr_spinexr",)


def backbone_kwargs(config) -> dict:
    """The grader's ResNet2D fields (``config.grader.model`` as ``build_grader`` resolves them)."""
    g = build_grader(config.grader.model)
    return {"stage_sizes": list(g.stage_sizes), "width": int(g.width), "stem": str(g.stem),
            "patch": int(g.patch), "norm": str(g.norm), "pool": str(g.pool)}


class FindingsNet(nn.Module):
    """batch["xray"] (B, H, W, 1) -> {"findings": (B, F) logits}: the grader's backbone + Dense(F)."""

    num_findings: int
    stage_sizes: tuple = (1, 1, 1, 1)
    width: int = 16
    stem: str = "patchify"
    patch: int = 4
    norm: str = "group"
    pool: str = "avg"

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> dict:
        feats = ResNet2D(tuple(self.stage_sizes), self.width, self.stem, self.patch, self.norm,
                         self.pool, jnp.float32, name="backbone")(batch["xray"], train)
        return {"findings": nn.Dense(self.num_findings, name="head")(feats)}


@dataclasses.dataclass(frozen=True)
class FindingsLoss:
    """Mean sigmoid cross-entropy over the labelled (film, finding) entries; hashable by value."""

    def __call__(self, outputs, batch):
        logits = outputs["findings"]
        labels = jnp.asarray(batch["labels"]["findings"], jnp.float32)
        mask = jnp.asarray(batch["label_mask"]["findings"], jnp.float32)
        mask = mask * jnp.asarray(batch["valid"], jnp.float32)[:, None]
        n = jnp.maximum(mask.sum(), 1.0)
        loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * mask).sum() / n
        acc = (((logits > 0) == (labels > 0.5)) * mask).sum() / n
        return loss, {"loss": loss, "count": mask.sum(), "accuracy": acc}


def _signature(config) -> dict:
    """What the saved backbone depends on: a changed field means pretrain again."""
    p = config.xray_pretrain
    return {"backbone": backbone_kwargs(config), "xray": preprocessing_config(config)["xray"],
            "seed": int(config.seed), "root": os.path.abspath(p.root), "split": p.split, "rule": p.rule,
            "findings": list(p.findings), "train": p.train.to_dict(), "optim": p.optim.to_dict(),
            "augment": config.grader.augment.to_dict()}


def backbone_card(config, *, findings, training_data, validation) -> dict:
    """The model card of a pretrained X-ray backbone."""
    from lumbarjax.data.preprocess import CODE_VERSION
    import lumbarjax
    xray = preprocessing_config(config)["xray"]
    return json.loads(json.dumps({
        "format": encoder_file.XRAY_FORMAT,
        "lumbarjax_version": lumbarjax.__version__,
        "architecture": "resnet2d",
        "backbone_kwargs": backbone_kwargs(config),
        "input": {"shape": list(xray["shape"]), "channels": 1,
                  "keep_physical_aspect": bool(xray["keep_physical_aspect"]),
                  "orientation": "lateral film as stored (rows top->bottom)"},
        "intensity_normalisation": {"method": "per-film percentiles -> [0, 1], clipped",
                                    "percentiles": list(xray["norm_percentiles"]),
                                    "preprocess_code_version": CODE_VERSION},
        "labels": {"kind": "multi-label findings (sigmoid each)", "names": list(findings)},
        "training_data": dict(training_data),
        "validation": dict(validation),
    }))


def check_backbone(card, config, path: str) -> None:
    """ConfigError naming the first field where the file's card and ``config`` differ."""
    where = f"config.xray_pretrain.backbone_file={path!r}"
    want, have = backbone_kwargs(config), card.get("backbone_kwargs", {})
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            raise ConfigError(f"{where}: backbone field {k!r} differs: the file has {have.get(k)!r}, "
                              f"config.grader.model gives {want.get(k)!r}")
    xray, inp = preprocessing_config(config)["xray"], card.get("input", {})
    if list(inp.get("shape", [])) != list(xray["shape"]):
        raise ConfigError(f"{where}: input geometry differs: the file expects xray.shape="
                          f"{inp.get('shape')}, config.xray.shape is {xray['shape']}")
    if bool(inp.get("keep_physical_aspect", True)) != bool(xray["keep_physical_aspect"]):
        raise ConfigError(f"{where}: the file was trained with xray.keep_physical_aspect="
                          f"{inp.get('keep_physical_aspect')}, config has {xray['keep_physical_aspect']}")
    encoder_file.check_norm_percentiles(card, xray["norm_percentiles"], "xray.norm_percentiles", where)


def load_backbone(config, path: str):
    """``(backbone params, summary)`` from a backbone file, after :func:`check_backbone`."""
    params, card = encoder_file.load_encoder_file(path, fmt=encoder_file.XRAY_FORMAT,
                                                  what="config.xray_pretrain.backbone_file")
    check_backbone(card, config, path)
    logging.info("xray_pretrain: using the backbone file %s (trained on %s)", path,
                 card.get("training_data", {}).get("format", "?"))
    summary = {"backbone_file": os.path.abspath(path), "training_data": card.get("training_data", {}),
               "lumbarjax_version": card.get("lumbarjax_version")}
    summary.update({f"val_{k}": v for k, v in card.get("validation", {}).items()})
    return params, summary


def read_films(config, workdir: str):
    """The public set's films as ``(records, cache, labels (N, F), training_data)``.

    ``records`` has one row per usable film (``patient_id`` = the dataset's image id, used only
    inside this run); films that fail to decode are logged and counted in ``training_data``."""
    p = config.xray_pretrain
    if p.format not in FORMATS:
        raise ConfigError(f"config.xray_pretrain.format={p.format!r}: known formats {list(FORMATS)}")
    if not p.root:
        raise ConfigError("config.xray_pretrain.root: the downloaded VinDr-SpineXR folder is not set")
    unknown = sorted(set(p.findings) - set(vindr_spinexr.LESION_TYPES))
    if unknown or not p.findings:
        raise ConfigError(f"config.xray_pretrain.findings: unknown lesion type(s) {unknown} (or none "
                          f"given); known: {list(vindr_spinexr.LESION_TYPES)}")
    split = vindr_spinexr.read_split(p.root, p.split, rule=p.rule)
    table = split.findings.reset_index(drop=True)
    cols = [vindr_spinexr.finding_column(t) for t in p.findings]
    records = pd.DataFrame({"patient_id": table["image_id"].astype(str), "xray_paths": table["path"],
                            "xray_source": "dicom", "mri_paths": "", "mri_source": ""})
    cache = preprocess_cohort(records, config, os.path.join(workdir, "cache"),
                              num_workers=int(config.data.num_workers))
    ok = ~cache["excluded"].to_numpy(bool)
    labels = table[cols].to_numpy(np.float32)[ok]
    data = {"format": p.format, "split": p.split, "rule": p.rule, "films_listed": int(len(table)),
            "films_used": int(ok.sum()), "films_not_decoded": int((~ok).sum()),
            "films_excluded_by_reader": int(len(split.excluded)),
            "positives": {t: int(labels[:, j].sum()) for j, t in enumerate(p.findings)}}
    if (~ok).any():
        logging.warning("xray_pretrain: %d of %d films could not be preprocessed and are not used",
                        int((~ok).sum()), len(table))
    return (records.loc[ok].reset_index(drop=True), cache.loc[ok].reset_index(drop=True), labels, data)


def pretrain_backbone(config, workdir: str):
    """Train ``FindingsNet`` on the public set; save and return the backbone.

    Args:
      config: reads ``xray_pretrain.*``, ``grader.model`` (the backbone), ``grader.augment``,
        ``xray.*`` (preprocessing), ``data.num_workers``, ``seed``.
      workdir: ``<run>/xray_pretrain`` (cache, checkpoints, the backbone file, the summary).
        When the saved backbone was made with the same settings it is loaded, not retrained.

    Returns:
      ``(backbone params, summary)``; summary has the film counts and the validation AUCs.
    """
    p = config.xray_pretrain
    os.makedirs(workdir, exist_ok=True)
    sig = _signature(config)
    path, summary_path = os.path.join(workdir, BACKBONE_FILE), os.path.join(workdir, SUMMARY_FILE)
    if os.path.exists(summary_path) and os.path.exists(path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("signature") == json.loads(json.dumps(sig)):
            logging.info("xray_pretrain: using the saved backbone in %s", workdir)
            return encoder_file.load_encoder_file(path, fmt=encoder_file.XRAY_FORMAT)[0], summary
    records, cache, labels, data = read_films(config, workdir)
    if len(records) < 10:
        raise CohortError(f"xray_pretrain: only {len(records)} usable films under {p.root}; need >= 10")
    any_finding = (labels.max(axis=1) > 0.5).astype(int)
    folds = make_folds(records.assign(any_finding=any_finding), k=5, seed=int(config.seed),
                       stratify_on="any_finding")
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    kw = backbone_kwargs(config)
    model = FindingsNet(num_findings=len(p.findings), **{**kw, "stage_sizes": tuple(kw["stage_sizes"])})
    source = CachedExamples(cache, {"labels": {"findings": labels}}, mri_shape=(1, 1, 1),
                            xray_shape=tuple(config.xray.shape))
    run_cfg = ml_collections.ConfigDict(dict(seed=int(config.seed), train=p.train.to_dict(),
                                             optim=p.optim.to_dict(), augment=config.grader.augment.to_dict()))
    bs = int(p.train.batch_size)

    def val_aucs(state) -> dict:
        out = predict(state, model, make_loader(source, batch_size=bs, shuffle=False, seed=0,
                                                num_epochs=1, indices=val_idx))
        logits = np.asarray(out["findings"])[np.argsort(out["index"])]
        y = labels[val_idx]
        aucs = {t: (metrics_lib.auc(y[:, j], logits[:, j]) if 0 < y[:, j].sum() < len(y) else float("nan"))
                for j, t in enumerate(p.findings)}
        finite = [v for v in aucs.values() if np.isfinite(v)]
        return {"auc_mean": float(np.mean(finite)) if finite else float("nan"),
                **{f"auc_{vindr_spinexr.finding_column(t)[len('finding_'):]}": v for t, v in aucs.items()}}

    logging.info("xray_pretrain: %d train, %d validation films; positives %s", len(train_idx),
                 len(val_idx), data["positives"])
    result = train_and_evaluate(run_cfg, workdir, model=model, loss_fn=FindingsLoss(),
                                train_source=Subset(source, train_idx), eval_fn=val_aucs,
                                row_ids=records["patient_id"].to_numpy())
    params = jax.device_get(result["state"].params)["backbone"]
    best = result["best"]["metrics"] or {}
    # A finding without positives (or without negatives) among the validation films has no AUC: None.
    validation = {"films": int(len(val_idx)), "best_step": int(result["best"]["step"] or 0),
                  **{k: (float(v) if v is not None and np.isfinite(v) else None)
                     for k, v in best.items() if k.startswith("auc")}}
    data.update(films_train=int(len(train_idx)), films_val=int(len(val_idx)))
    card = backbone_card(config, findings=p.findings, training_data=data, validation=validation)
    encoder_file.save_encoder_file(path, params, card, fmt=encoder_file.XRAY_FORMAT)
    summary = {"training_data": data, **{f"val_{k}": v for k, v in validation.items()}, "signature": sig}
    atomic.write_json(summary_path, summary, indent=1, sort_keys=False)  # last: marks the backbone complete
    return params, summary


def stage_xray_pretrain(config, workdir: str):
    """The grader's starting backbone: ``xray_pretrain.backbone_file`` when set, else pretrained
    into ``<workdir>/xray_pretrain``. Returns ``(params, summary)``."""
    p = config.xray_pretrain
    if p.backbone_file:
        return load_backbone(config, p.backbone_file)
    return pretrain_backbone(config, os.path.join(workdir, "xray_pretrain"))


__all__ = ["BACKBONE_FILE", "FindingsLoss", "FindingsNet", "backbone_card", "backbone_kwargs",
           "check_backbone", "load_backbone", "pretrain_backbone", "read_films", "stage_xray_pretrain"]
