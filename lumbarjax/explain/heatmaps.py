"""Integrated-gradients heat maps: the one IG path of cross-validation and ``--mode=predict``.

``HeadFn`` (one outcome head) and ``ExpectedGradeFn`` (the grader's expected grade) are the
functions attributed; ``ig_baseline`` and ``attribute`` apply ``config.explain`` (baseline,
quadrature rule, steps, chunking, chunk loop); ``HeatmapCollector`` is the outcome
cross-validation's ``after_fold`` hook that attributes test-fold patients, saves them
(``<patient_id>_ig.npz``) and draws the report's gallery; ``XrayHeatmapCollector`` is the
grader's (the expected grade over the lateral film, ``<patient_id>_xray_ig.npz``), summarised
level by level by ``eval.localisation.film_level_summary``; ``mri_grade_heatmaps`` attributes
the pretrained MRI grader's expected grade, the stage-1 MRI score (``MriGradeFn``,
``<patient_id>_mri_score_ig.npz``).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lumbarjax import atomic
from lumbarjax.data.preprocess import load_affine
from lumbarjax.errors import ConfigError
from lumbarjax.explain import ig_baselines
from lumbarjax.explain.integrated_gradients import integrated_gradients
from lumbarjax.models import ordinal

__all__ = ["HeadFn", "ExpectedGradeFn", "MriGradeFn", "ig_baseline", "attribute", "HeatmapCollector",
           "XrayHeatmapCollector", "mri_grade_heatmaps"]


@dataclasses.dataclass(frozen=True, eq=False)
class HeadFn:
    """``(inputs, static) -> (B,)``: one output head of a model in eval mode, for IG.

    ``inputs`` = {"mri", "clinical"} (attributed); ``static`` = {"variables", "mri_present",
    "xray", "xray_present"} (not attributed). Hashed by identity: keep one per model
    architecture so the compiled IG is reused across folds (the weights travel in ``static``)."""
    model: Any
    head: str

    def __call__(self, inputs, static):
        batch = {"mri": inputs["mri"], "clinical": inputs["clinical"],
                 "mri_present": static["mri_present"], "xray": static["xray"],
                 "xray_present": static["xray_present"]}
        return self.model.apply(static["variables"], batch, train=False)[self.head]


def ig_baseline(inputs: dict, cfg, baseline: str | None = None) -> dict:
    """IG baseline: the images blurred (``cfg.baseline="blurred"``: the MRI with sigma
    ``cfg.blur_sigma_vox``, the X-ray film with ``cfg.xray_blur_sigma_px``) or black
    (``"zeros"``); the clinical vector at zeros, i.e. the training-fold mean (features are
    standardised). A black image is a poor baseline for GroupNorm networks: they are nearly
    scale-invariant, so F jumps right next to alpha=0 and the completeness error is large
    (measured on the demo's grader, 8 films, 32 Gauss–Legendre nodes: median |Δ| 0.94 grades with
    a black film, 0.011 blurred at 8 px). ``baseline`` overrides ``cfg.baseline``."""
    baseline = cfg.baseline if baseline is None else baseline
    if baseline == "zeros":
        return ig_baselines.zeros_like(inputs)
    if baseline == "blurred":
        sigmas = {"mri": tuple(cfg.blur_sigma_vox), "xray": float(cfg.xray_blur_sigma_px)}
        return ig_baselines.blurred(inputs, sigmas, vector="zeros")
    raise ConfigError(f"config.explain.baseline={baseline!r}: expected 'blurred' or 'zeros'")


def attribute(fn, inputs: dict, static: dict, cfg, baseline: str | None = None) -> dict:
    """Integrated gradients of ``fn(inputs, static) -> (B,)`` with the settings of
    ``config.explain`` (``cfg``): the baseline of :func:`ig_baseline`, ``cfg.steps`` nodes of the
    ``cfg.method`` rule, ``cfg.chunk_size`` nodes at a time iterated by ``cfg.chunk_loop``. The
    one IG path of cross-validation heat maps and ``--mode=predict``.

    Returns ``{"attrs": pytree like inputs, "delta": (B,) completeness error, "value": (B,)
    fn at the inputs, "base": (B,) fn at the baseline}`` as numpy arrays.
    """
    base_inputs = ig_baseline(inputs, cfg, baseline)
    attrs, delta = integrated_gradients(fn, inputs, base_inputs, steps=int(cfg.steps),
                                        method=cfg.method, chunk_size=int(cfg.chunk_size) or None,
                                        static=static, chunk_loop=cfg.chunk_loop)
    return {"attrs": jax.tree.map(np.asarray, attrs), "delta": np.asarray(delta),
            "value": np.asarray(_value(fn, inputs, static)),
            "base": np.asarray(_value(fn, base_inputs, static))}


@functools.partial(jax.jit, static_argnums=0)
def _value(fn, inputs, static):
    """``fn(inputs, static)`` compiled once per ``fn`` (hashed by identity) and input shapes,
    instead of running the model op by op."""
    return fn(inputs, static)


class HeatmapCollector:
    """``after_fold`` hook of the outcome CV: integrated gradients for test-fold patients."""

    def __init__(self, config, out_dir: str):
        self.cfg = config.explain
        self.num_folds = int(config.outcome.cv.num_folds)
        self.out_dir = out_dir
        self.items: list[dict] = []
        self.fn: HeadFn | None = None
        os.makedirs(out_dir, exist_ok=True)

    def __call__(self, *, fold, state, model, source, test_idx, encoder, task):
        per_fold = int(np.ceil(int(self.cfg.max_patients) / self.num_folds))
        rows = [int(i) for i in test_idx if task.cache["mri_file"].iloc[int(i)]][:per_fold]
        if self.fn is None:  # every fold builds the same architecture from the same config
            self.fn = HeadFn(model, self.cfg.head)
        fn = self.fn
        for i in rows:
            ex = source[i]
            inputs = {"mri": jnp.asarray(ex["mri"])[None], "clinical": jnp.asarray(ex["clinical"])[None]}
            static = {"variables": state.variables, "mri_present": jnp.ones((1,), jnp.float32),
                      "xray": jnp.asarray(ex["xray"])[None],
                      "xray_present": jnp.asarray(ex["xray_present"])[None]}
            r = attribute(fn, inputs, static, self.cfg)
            attrs, delta = r["attrs"], r["delta"]
            logit, base = float(r["value"][0]), float(r["base"][0])
            label = float(task.labels[self.cfg.head][i])
            self.items.append(dict(
                patient_id=str(task.records["patient_id"].iloc[i]), fold=fold, row=i,
                mri=np.asarray(ex["mri"])[..., 0], attr=np.asarray(attrs["mri"])[0, ..., 0],
                clinical_attr=np.asarray(attrs["clinical"])[0], feature_names=encoder.feature_names,
                delta=float(delta[0]), relative_delta=float(abs(delta[0]) / max(abs(logit - base), 1e-6)),
                prob=float(1 / (1 + np.exp(-logit))), label=label,
                affine=load_affine(task.cache.iloc[i])))
            self.save(self.items[-1])

    def save(self, item: dict) -> None:
        """``<patient_id>_ig.npz``: arrays and scalars of one patient's attribution."""
        arrays = {k: np.asarray(v) for k, v in item.items()}
        with atomic.atomic_path(os.path.join(self.out_dir, f"{item['patient_id']}_ig.npz")) as tmp:
            np.savez_compressed(tmp, **arrays)

    @classmethod
    def load(cls, config, out_dir: str) -> "HeatmapCollector":
        """The collector of an earlier run, from its saved ``*_ig.npz`` files."""
        col = cls(config, out_dir)
        for path in sorted(glob.glob(os.path.join(out_dir, "*_ig.npz"))):
            with np.load(path, allow_pickle=False) as z:
                item = {k: z[k] for k in z.files}
            for k in ("patient_id",):
                item[k] = str(item[k])
            for k in ("fold", "row"):
                item[k] = int(item[k])
            for k in ("delta", "relative_delta", "prob", "label"):
                item[k] = float(item[k])
            item["feature_names"] = [str(x) for x in item["feature_names"]]
            col.items.append(item)
        col.items.sort(key=lambda it: (it["fold"], it["row"]))  # the run's order: same bootstrap CIs
        return col

    def gallery(self, n: int) -> list[dict]:
        """Overlay PNGs (+ attribution NIfTI) for up to ``n`` patients, right and wrong mixed."""
        from lumbarjax.explain import overlays  # matplotlib only when drawing
        labelled = [it for it in self.items if np.isfinite(it["label"])]
        right = [it for it in labelled if (it["prob"] > 0.5) == (it["label"] > 0.5)]
        wrong = [it for it in labelled if (it["prob"] > 0.5) != (it["label"] > 0.5)]
        chosen = right[: (n + 1) // 2] + wrong[: n // 2]
        out = []
        for it in chosen:
            pid = it["patient_id"]
            png = overlays.save_mri_overlay_png(
                it["mri"], it["attr"], os.path.join(self.out_dir, f"{pid}_mri_ig.png"),
                spacing=np.linalg.norm(it["affine"][:3, :3], axis=0), title=f"{pid}: IG of {self.cfg.head}")
            overlays.save_attribution_nifti(it["attr"], it["affine"],
                                            os.path.join(self.out_dir, f"{pid}_mri_ig.nii.gz"))
            bar = overlays.save_clinical_bar_png(it["clinical_attr"], it["feature_names"],
                                                 os.path.join(self.out_dir, f"{pid}_clinical_ig.png"),
                                                 top_k=10, title=f"{pid}: clinical features")
            correct = (it["prob"] > 0.5) == (it["label"] > 0.5)
            caption = (f"{pid}: P({self.cfg.head})={it['prob']:.2f}, observed {int(it['label'])} — "
                       f"{'right' if correct else 'wrong'}; completeness error {it['delta']:+.2e}")
            out.append(dict(patient_id=pid, png=png, caption=caption, correct=bool(correct)))
            out.append(dict(patient_id=pid, png=bar, caption=f"{pid}: clinical-feature attributions",
                            correct=bool(correct)))
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class ExpectedGradeFn:
    """``(inputs, static) -> (B,)``: the grader's expected grade Σ_k k·P(grade = k) (mean over
    levels), for IG of the X-ray. Hashed by identity (one per architecture, weights in static)."""
    model: Any
    head: str = "corn"

    def __call__(self, inputs, static):
        _, probs_fn, _ = ordinal.ordinal_fns(self.head)
        batch = {"xray": inputs["xray"]}
        probs = probs_fn(self.model.apply(static["variables"], batch, train=False)["grade"])
        k = jnp.arange(probs.shape[-1], dtype=jnp.float32)
        return jnp.mean(jnp.sum(probs * k, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class MriGradeFn:
    """``(inputs, static) -> (B,)``: the pretrained MRI stenosis grader's expected grade (CORN),
    summed over its levels, for IG of the volume ``inputs["mri"]`` — the stage-1 MRI score the
    outcome's linear models read. A by-level grader (``models.level_stenosis``) also takes the
    level centres ``static["mri_centres"]`` (B, L, 2); each level's grade reads only its crop,
    so the attribution in a level's crop is that level's share. ``static["variables"]`` is not
    attributed. Hashed by identity."""
    model: Any

    def __call__(self, inputs, static):
        batch = {"mri": inputs["mri"]}
        if "mri_centres" in static:
            batch["mri_centres"] = static["mri_centres"]
        probs = ordinal.corn_probs(self.model.apply(static["variables"], batch, train=False)["grade"])
        k = jnp.arange(probs.shape[-1], dtype=jnp.float32)
        return jnp.sum(jnp.sum(probs * k, axis=-1), axis=-1)


def mri_grade_heatmaps(config, model, variables, source, rows, cache, out_dir: str) -> list[dict]:
    """IG (``config.explain``) of :class:`MriGradeFn` for the examples ``rows`` of ``source`` (a
    ``CachedExamples``; its examples carry ``mri_centres`` for a by-level grader); each saved as
    ``<out_dir>/<patient_id>_mri_score_ig.npz`` (``attr`` (D, H, W), ``delta``, ``value``,
    ``base``) and returned as a dict with the cache row's ``affine``."""
    os.makedirs(out_dir, exist_ok=True)
    fn, items = MriGradeFn(model), []
    for i in rows:
        ex = source[int(i)]
        static = {"variables": variables}
        if "mri_centres" in ex:
            static["mri_centres"] = jnp.asarray(ex["mri_centres"])[None]
        r = attribute(fn, {"mri": jnp.asarray(ex["mri"])[None]}, static, config.explain)
        item = dict(patient_id=str(cache["patient_id"].iloc[int(i)]), attr=np.asarray(r["attrs"]["mri"])[0, ..., 0],
                    delta=float(r["delta"][0]), value=float(r["value"][0]), base=float(r["base"][0]),
                    affine=load_affine(cache.iloc[int(i)]))
        items.append(item)
        with atomic.atomic_path(os.path.join(out_dir, f"{item['patient_id']}_mri_score_ig.npz")) as tmp:
            np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in item.items()})
    return items


class XrayHeatmapCollector:
    """``after_fold`` hook of the grader CV: integrated gradients of the expected grade
    (:class:`ExpectedGradeFn`) over the preprocessed lateral film, for up to
    ``config.explain.xray_patients`` test-fold patients (spread over the folds; the baseline of
    :func:`ig_baseline`, by default the film blurred). Each is saved as ``<patient_id>_xray_ig.npz``:
    ``attr`` and ``xray`` (H, W), ``transform`` (the preprocessing's source -> film pixel map,
    JSON), the completeness error ``delta`` and the expected grade at the film (``value``) and at
    the baseline (``base``)."""

    def __init__(self, config, out_dir: str):
        self.cfg = config.explain
        self.head = str(config.grader.model.head)
        self.num_folds = int(config.grader.cv.num_folds)
        self.out_dir = out_dir
        self.items: list[dict] = []
        self.fn: ExpectedGradeFn | None = None
        os.makedirs(out_dir, exist_ok=True)

    def __call__(self, *, fold, state, model, source, test_idx, encoder, task):
        per_fold = int(np.ceil(int(self.cfg.xray_patients) / self.num_folds))
        rows = [int(i) for i in test_idx if task.cache["xray_file"].iloc[int(i)]][:per_fold]
        if self.fn is None:  # one function per architecture: the compiled IG is reused across folds
            self.fn = ExpectedGradeFn(model, self.head)
        for i in rows:
            ex = source[i]
            r = attribute(self.fn, {"xray": jnp.asarray(ex["xray"])[None]}, {"variables": state.variables},
                          self.cfg)
            transform = task.cache["xray_transform"].iloc[i] if "xray_transform" in task.cache else ""
            item = dict(patient_id=str(task.records["patient_id"].iloc[i]), fold=int(fold), row=i,
                        xray=np.asarray(ex["xray"])[..., 0], attr=np.asarray(r["attrs"]["xray"])[0, ..., 0],
                        transform=str(transform or ""), delta=float(r["delta"][0]),
                        value=float(r["value"][0]), base=float(r["base"][0]))
            self.items.append(item)
            with atomic.atomic_path(os.path.join(self.out_dir, f"{item['patient_id']}_xray_ig.npz")) as tmp:
                np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in item.items()})

    @classmethod
    def load(cls, config, out_dir: str) -> "XrayHeatmapCollector":
        """The collector of an earlier run, from its saved ``*_xray_ig.npz`` files."""
        col = cls(config, out_dir)
        for path in sorted(glob.glob(os.path.join(out_dir, "*_xray_ig.npz"))):
            with np.load(path, allow_pickle=False) as z:
                item = {k: z[k] for k in z.files}
            item.update(patient_id=str(item["patient_id"]), transform=str(item["transform"]),
                        fold=int(item["fold"]), row=int(item["row"]),
                        **{k: float(item[k]) for k in ("delta", "value", "base")})
            col.items.append(item)
        col.items.sort(key=lambda it: (it["fold"], it["row"]))
        return col
