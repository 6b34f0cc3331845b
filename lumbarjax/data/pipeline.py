"""Input pipeline: a random-access example source and a grain loader over it.

Example dict (one patient, no batch dimension)::

    mri          (D, H, W, 1) float32   zeros when absent
    mri_present  ()           float32   1 = a real MRI, 0 = missing / decode failed
    xray         (H, W, 1)    float32   zeros when absent
    xray_present ()           float32
    clinical     (F,)         float32   (0,) when no clinical features are given
    labels       {name: () or (L,) float32}  0 where masked (never NaN)
    label_mask   {name: same shape float32}  1 = label observed
    index        ()           int32     row of the records / cache table; -1 for padding
    valid        ()           float32   1 = real example, 0 = padding

A batch has the same keys with a leading ``B``.

Determinism: the loader is a single-process grain pipeline
(source -> [shuffle] -> repeat -> [random_map augment] -> batch). grain derives the
shuffle order from ``seed + epoch`` and each augmentation RNG from the seed and the
element's global position, so the stream is a pure function of ``seed`` and position;
reader threads (``num_threads``) only prefetch and do not change results. Multi-process
workers (``worker_count > 0``, grain ``mp_prefetch``) are optional and off by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from lumbarjax.errors import CohortError, ConfigError

__all__ = ["CachedExamples", "Subset", "make_loader", "augment_example", "AUGMENT_KEYS"]

_IMAGE_KEYS = ("mri", "xray")
_KNOWN_EXTRAS = {
    "mri", "mri_present", "xray", "xray_present", "clinical", "labels", "label_mask",
}
AUGMENT_KEYS = ("flip_lr", "intensity", "shift_px", "noise_std")


def _n_rows(value: Any) -> int:
    if isinstance(value, Mapping):
        lens = {_n_rows(v) for v in value.values()}
        if len(lens) > 1:
            raise CohortError(f"extras: nested arrays have different lengths {sorted(lens)}")
        return lens.pop() if lens else -1
    return len(value)


def _take(value: Any, i: int) -> Any:
    if isinstance(value, Mapping):
        return {k: _take(v, i) for k, v in value.items()}
    return np.asarray(value[i])


class CachedExamples:
    """Random-access source of example dicts (see module docstring).

    Args:
      cache_table: DataFrame from ``preprocess.preprocess_cohort`` (columns ``mri_file``,
        ``xray_file``: paths of cached ``.npy`` arrays, ``""`` when the modality is missing),
        row ``i`` = patient ``i``; or ``None`` when the images live in ``extras``.
      extras: per-patient arrays with leading ``N``: ``clinical`` (N, F), ``labels`` and
        ``label_mask`` (dicts name -> (N,) or (N, L)); with ``cache_table=None`` also ``mri``
        (N, D, H, W[, 1]), ``xray`` (N, H, W[, 1]) and optional ``mri_present`` /
        ``xray_present`` (N,). Other keys are passed through per example. Non-finite labels
        become 0 with mask 0 (a missing label is masked, never imputed).
      mri_shape, xray_shape: shape of the zeros for a missing modality, (D, H, W) / (H, W).
        Default: the shape of the first available cached / in-memory image, else (1, 1, 1) /
        (1, 1).
      modalities: the images the model reads (default both); another modality is never read
        from disk: its example entry is a (1, 1, 1, 1) / (1, 1, 1) zero with ``*_present`` 0.
    """

    def __init__(
        self,
        cache_table=None,
        extras: Mapping[str, Any] | None = None,
        *,
        mri_shape: Sequence[int] | None = None,
        xray_shape: Sequence[int] | None = None,
        modalities: Sequence[str] = ("mri", "xray"),
    ):
        unknown = sorted(set(modalities) - set(_IMAGE_KEYS))
        if unknown:
            raise CohortError(f"CachedExamples: unknown modalities {unknown} (expected a subset "
                              f"of {_IMAGE_KEYS})")
        self._modalities = tuple(modalities)
        extras = dict(extras or {})
        self._extras = extras
        sizes = {k: _n_rows(v) for k, v in extras.items()}
        sizes = {k: n for k, n in sizes.items() if n >= 0}
        if cache_table is not None:
            for col in ("mri_file", "xray_file"):
                if col not in cache_table.columns:
                    raise CohortError(f"cache_table: missing column {col!r} "
                                      f"(have {list(cache_table.columns)})")
            self._files = {
                "mri": [("" if _isna(p) else str(p)) for p in cache_table["mri_file"]],
                "xray": [("" if _isna(p) else str(p)) for p in cache_table["xray_file"]],
            }
            sizes["cache_table"] = len(cache_table)
        else:
            self._files = None
        if not sizes:
            raise CohortError("CachedExamples: no cache_table and empty extras: no examples")
        if len(set(sizes.values())) != 1:
            raise CohortError(f"CachedExamples: per-patient inputs disagree on N: {sizes}")
        self._n = next(iter(sizes.values()))

        labels = {k: np.asarray(v, np.float32) for k, v in dict(extras.get("labels", {})).items()}
        given_mask = dict(extras.get("label_mask", {}))
        unknown = set(given_mask) - set(labels)
        if unknown:
            raise CohortError(f"extras['label_mask'] has no matching label for {sorted(unknown)}")
        self._labels, self._label_mask = {}, {}
        for name, lab in labels.items():
            finite = np.isfinite(lab)
            mask = finite.astype(np.float32)
            if name in given_mask:
                m = np.asarray(given_mask[name], np.float32)
                if m.shape != lab.shape:
                    raise CohortError(f"label_mask[{name!r}] shape {m.shape} != labels shape "
                                      f"{lab.shape}")
                mask = mask * m
            self._labels[name] = np.where(finite, lab, 0.0).astype(np.float32)
            self._label_mask[name] = mask.astype(np.float32)

        clin = extras.get("clinical")
        self._clinical = (np.zeros((self._n, 0), np.float32) if clin is None
                          else np.asarray(clin, np.float32))
        if self._clinical.ndim != 2:
            raise CohortError(f"extras['clinical'] must be (N, F), got {self._clinical.shape}")
        if not np.all(np.isfinite(self._clinical)):
            raise CohortError("extras['clinical'] contains NaN/inf: encode missing values "
                              "explicitly (e.g. ClinicalEncoder) before the pipeline")
        self._passthrough = {k: v for k, v in extras.items() if k not in _KNOWN_EXTRAS}

        self._shapes = {
            "mri": tuple(mri_shape) if mri_shape is not None else self._infer_shape("mri", 3),
            "xray": tuple(xray_shape) if xray_shape is not None else self._infer_shape("xray", 2),
        }
        for key, ndim in (("mri", 3), ("xray", 2)):
            if key not in self._modalities:
                self._shapes[key] = (1,) * ndim

    # -- helpers ---------------------------------------------------------------------
    def _infer_shape(self, key: str, ndim: int) -> tuple[int, ...]:
        if self._files is not None:
            for p in self._files[key]:
                if p:
                    return tuple(np.load(p, mmap_mode="r").shape[:ndim])
        if key in self._extras:
            return tuple(np.shape(self._extras[key])[1:1 + ndim])
        return (1,) * ndim

    def _image(self, key: str, i: int) -> tuple[np.ndarray, np.float32]:
        shape = self._shapes[key]
        arr = None
        if key not in self._modalities:
            return np.zeros(shape + (1,), np.float32), np.float32(0.0)
        if self._files is not None:
            path = self._files[key][i]
            if path:
                try:
                    arr = np.array(np.load(path, mmap_mode="r"), dtype=np.float32)
                except (OSError, ValueError) as e:
                    raise CohortError(f"cache file {path} (row {i}, {key}): cannot load: {e}") from e
        elif key in self._extras:
            present = self._extras.get(f"{key}_present")
            if present is None or float(np.asarray(present[i])) > 0:
                arr = np.array(self._extras[key][i], dtype=np.float32)
        if arr is None:
            return np.zeros(shape + (1,), np.float32), np.float32(0.0)
        if arr.ndim == len(shape) + 1 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.shape != shape:
            raise CohortError(f"{key} of row {i}: shape {arr.shape}, expected {shape} "
                              "(rebuild the cache with one preprocessing config)")
        return arr[..., None], np.float32(1.0)

    # -- random access ---------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"CachedExamples index {i} out of range for {self._n} examples")
        i %= self._n
        mri, mri_present = self._image("mri", i)
        xray, xray_present = self._image("xray", i)
        ex = {
            "mri": mri,
            "mri_present": mri_present,
            "xray": xray,
            "xray_present": xray_present,
            "clinical": self._clinical[i].copy(),
            "labels": {k: v[i].copy() for k, v in self._labels.items()},
            "label_mask": {k: v[i].copy() for k, v in self._label_mask.items()},
            "index": np.int32(i),
            "valid": np.float32(1.0),
        }
        for k, v in self._passthrough.items():
            ex[k] = _take(v, i)
        return ex


def _isna(x) -> bool:
    """Missing cache path: None / NaN / pd.NA / empty."""
    return not isinstance(x, str)


class Subset:
    """A fold: ``source`` restricted to ``indices`` (example ``index`` keys unchanged)."""

    def __init__(self, source, indices):
        self._source = source
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(source),):
                raise ConfigError(f"indices: boolean mask of shape {idx.shape}, "
                                  f"source has {len(source)} examples")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(source)):
            raise ConfigError(f"indices out of range [0, {len(source)}): "
                              f"min {idx.min()}, max {idx.max()}")
        self._idx = idx

    def __len__(self):
        return len(self._idx)

    def __getitem__(self, i):
        return self._source[int(self._idx[int(i)])]


# -- augmentation ------------------------------------------------------------------------

def _cfg_dict(augment) -> dict:
    """Every augmentation in ``AUGMENT_KEYS`` with its setting: the ones ``augment`` names (the
    training loop passes the whole ``config.<task>.augment`` section, configs/default.py), the
    others off (0: a direct call may name only the augmentations it wants, ``None`` = none)."""
    d = {} if augment is None else augment.to_dict() if hasattr(augment, "to_dict") else dict(augment)
    unknown = set(d) - set(AUGMENT_KEYS)
    if unknown:
        raise ConfigError(f"augment: unknown keys {sorted(unknown)}; known {list(AUGMENT_KEYS)}")
    return {**dict.fromkeys(AUGMENT_KEYS, 0), **d}


def _shift(x: np.ndarray, dy: int, dx: int, axes: tuple[int, int]) -> np.ndarray:
    """Translate ``x`` by (dy, dx) pixels along ``axes`` with zero fill."""
    out = np.zeros_like(x)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    for ax, s in zip(axes, (dy, dx)):
        n = x.shape[ax]
        if abs(s) >= n:
            return out
        if s >= 0:
            src[ax], dst[ax] = slice(0, n - s), slice(s, n)
        else:
            src[ax], dst[ax] = slice(-s, n), slice(0, n + s)
    out[tuple(dst)] = x[tuple(src)]
    return out


def augment_example(ex: dict, rng: np.random.Generator, augment) -> dict:
    """Random augmentation of one example (no batch dim), applied only to present modalities.

    ``augment`` keys (all optional; 0 / False = off):
      flip_lr:   probability (True = 0.5) of flipping the MRI across slices (axis d, the
                 left-right axis of a sagittal series). The lateral X-ray is never flipped
                 (its anterior/posterior direction is anatomy, not a nuisance).
      intensity: fraction f: x * (1 + U(-f, f)) + U(-f, f), per modality.
      shift_px:  max translation in pixels along (h, w), zero fill; same for both modalities
                 in pixels of their own grid, drawn independently.
      noise_std: std of additive zero-mean noise (uniform, cheaper than Gaussian; units of
                 the normalised intensity ~[0, 1]).
    An example's ``mri_centres`` ((L, 2) row, col pixels: the level centres of a by-level
    grader) shift with its MRI.
    The random draws are made in a fixed order regardless of presence, so the stream of
    draws for an example depends only on grain's seed and position.
    """
    cfg = _cfg_dict(augment)
    ex = dict(ex)
    flip = cfg["flip_lr"]
    p_flip = 0.5 if flip is True else float(flip or 0.0)
    f = float(cfg["intensity"] or 0.0)
    s = int(cfg["shift_px"] or 0)
    sd = float(cfg["noise_std"] or 0.0)
    for key in _IMAGE_KEYS:
        x = ex[key]
        present = float(ex[f"{key}_present"]) > 0
        do_flip = rng.random() < p_flip
        scale, offset = rng.uniform(-f, f, size=2) if f > 0 else (0.0, 0.0)
        dy, dx = rng.integers(-s, s + 1, size=2) if s > 0 else (0, 0)
        if not present:
            continue
        if key == "mri" and do_flip:
            x = x[::-1]
        if f > 0:
            x = x * np.float32(1.0 + scale) + np.float32(offset)
        if s > 0 and (dy or dx):
            x = _shift(x, int(dy), int(dx), axes=(x.ndim - 3, x.ndim - 2))
            if key == "mri" and "mri_centres" in ex:  # level centres (L, 2) move with the volume
                ex["mri_centres"] = np.asarray(ex["mri_centres"], np.float32) + np.float32([dy, dx])
        x = np.array(x, dtype=np.float32)  # own, contiguous copy; in place from here
        if sd > 0:
            # zero-mean uniform noise with std ``sd``: 4x cheaper than Gaussian draws
            noise = rng.random(x.shape, dtype=np.float32)
            noise -= np.float32(0.5)
            noise *= np.float32(sd * np.sqrt(12.0))
            x += noise
        ex[key] = x
    return ex


class _Augment(grain.transforms.RandomMap):
    def __init__(self, augment):
        self._augment = _cfg_dict(augment)

    def random_map(self, element, rng: np.random.Generator):
        return augment_example(element, rng, self._augment)


# -- batching ----------------------------------------------------------------------------

def _stack(elements: Sequence[Any]) -> Any:
    first = elements[0]
    if isinstance(first, Mapping):
        return {k: _stack([e[k] for e in elements]) for k in first}
    return np.stack([np.asarray(e) for e in elements])


def _padding_like(ex: Any) -> Any:
    if isinstance(ex, Mapping):
        out = {k: _padding_like(v) for k, v in ex.items()}
        if "valid" in out:
            out["valid"] = np.float32(0.0)
            out["index"] = np.int32(-1)
        return out
    return np.zeros_like(np.asarray(ex))


class _PadBatch:
    """batch_fn: stack, padding a short (final) batch to ``batch_size`` with valid=0."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, elements):
        elements = list(elements)
        if len(elements) < self.batch_size:
            pad = _padding_like(elements[0])
            elements += [pad] * (self.batch_size - len(elements))
        return _stack(elements)


def _seed32(seed: int, salt: int) -> int:
    return int(np.random.SeedSequence([int(seed) % 2**32, salt]).generate_state(1)[0])


def make_loader(
    source,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_epochs: int | None = None,
    augment=None,
    indices=None,
    shard: tuple[int, int] | None = None,
    num_threads: int = 0,
    prefetch_buffer_size: int = 0,
    worker_count: int = 0,
) -> grain.DatasetIterator:
    """Batched, seeded grain iterator over ``source`` (any ``__len__``/``__getitem__``).

    Args:
      source: random-access source of example dicts, e.g. ``CachedExamples``.
      batch_size: examples per batch ``B``.
      shuffle: reshuffle each epoch (order = f(seed, epoch)).
      seed: seeds the shuffle and the augmentation.
      num_epochs: ``None`` = repeat forever (training): batches always full, they run across
        epoch boundaries. An int (evaluation: ``shuffle=False, num_epochs=1``): the final
        short batch is padded to ``batch_size`` with zero examples with ``valid = 0``,
        ``index = -1``.
      augment: dict / ConfigDict with ``flip_lr, intensity, shift_px, noise_std``
        (see ``augment_example``); ``None`` = no augmentation.
      indices: optional int indices or boolean mask selecting a subset (a fold) of
        ``source``; ``index`` in the examples stays the row of the full source.
      shard: ``(p, P)``: of the stream of batches one process would read, yield only batches
        p, p+P, p+2P, … (training with P processes: ``batch_size`` is the per-process batch,
        and the P processes' batches together are the global batches of one process with
        ``P * batch_size`` rows; grain reads lazily, so only this shard's rows are read).
      num_threads, prefetch_buffer_size: grain ``ReadOptions`` (0 = read in the calling
        thread). Threads prefetch ahead; results are identical.
      worker_count: >0 uses grain ``mp_prefetch`` with that many processes (off by default:
        single process, simplest to debug; results stay deterministic).

    Returns:
      ``grain.DatasetIterator`` of batch dicts (numpy, leading ``B``) with
      ``get_state()`` / ``set_state(state)``.
    """
    if batch_size < 1:
        raise ConfigError(f"make_loader: batch_size must be >= 1, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ConfigError(f"make_loader: num_epochs must be None or >= 1, got {num_epochs}")
    if indices is not None:
        source = Subset(source, indices)
    if len(source) == 0:
        raise ConfigError("make_loader: the source (or the selected indices) is empty")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=_seed32(seed, 1))
    ds = ds.repeat(num_epochs)
    if augment is not None and _cfg_dict(augment) and list(augment.keys()):  # names one at least
        ds = ds.random_map(_Augment(augment), seed=_seed32(seed, 2))
    if num_epochs is None:
        ds = ds.batch(batch_size, drop_remainder=True, batch_fn=_stack)
    else:
        ds = ds.batch(batch_size, drop_remainder=False, batch_fn=_PadBatch(batch_size))
    if shard is not None and int(shard[1]) > 1:
        ds = ds[int(shard[0])::int(shard[1])]
    read_options = grain.ReadOptions(num_threads=num_threads,
                                     prefetch_buffer_size=prefetch_buffer_size)
    it_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it_ds)
