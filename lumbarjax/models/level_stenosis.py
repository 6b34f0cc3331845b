"""Canal stenosis graded level by level on the sagittal MRI: crop every disc level around its
centre and grade each crop with one shared encoder.

This is how the field's best systems read a lumbar MRI (SpineNet; the RSNA 2024 lumbar-spine
challenge's top entries): find the levels first, then grade each level on a crop around it.
The centres come from the RSNA coordinates / SPIDER masks / synthetic ground truth while
pretraining, and from the disc-level localiser (``models.localiser``) on a new cohort.

Shapes:
  batch["mri"]          (B, D, H, W, 1) float: the preprocessed volume (h superior -> inferior).
  batch["mri_centres"]  (B, L, 2) float: each level's centre, (row, col) pixels of that volume.
  crops                 (B, L, D, rows, W, 1): ``rows`` rows centred on the level's row, the
                        whole anterior-posterior width, zero outside the volume.
  output                {"grade": (B, L, K-1)} CORN logits, one ordinal grade per level.

The encoder is ``MRIEncoder`` named ``mri_encoder`` exactly as in ``OutcomeModel``: it is fully
convolutional with a global pool, so the weights learnt on level crops also read the whole
volume in the outcome model.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumbarjax.models.encoder3d import MRIEncoder
from lumbarjax.schema import LEVELS


def crop_rows(x: jax.Array, centre_rows: jax.Array, rows: int) -> jax.Array:
    """(B, D, H, W, C) volumes, (B, L) centre rows (pixels) -> (B, L, D, rows, W, C) crops.

    Row ``r`` of crop ``l`` is row ``round(centre) - rows // 2 + r`` of the volume, or zeros
    where that row lies outside it (the volume is zero-padded by ``rows`` on both ends, and a
    centre further out than that is clipped there: its crop is all zeros)."""
    b, d, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (0, 0), (rows, rows), (0, 0), (0, 0)))
    start = jnp.round(centre_rows).astype(jnp.int32) - rows // 2 + rows
    start = jnp.clip(start, 0, h + rows)

    def one(vol, s):  # vol (D, H + 2 rows, W, C)
        return jax.lax.dynamic_slice_in_dim(vol, s, rows, axis=1)

    return jax.vmap(lambda vol, ss: jax.vmap(lambda s: one(vol, s))(ss))(xp, start)


class LevelStenosisGrader(nn.Module):
    """``{"mri", "mri_centres"} -> {"grade": (B, L, K-1)}``: the shared ``mri_encoder`` on each
    level's crop, LayerNorm ``ln``, a shared Dense ``head`` and a per-level bias ``level_bias``
    (L, K-1) (stenosis is far more common at L4/L5 than at L1/L2)."""

    mri: Mapping
    num_grades: int = 3
    num_levels: int = len(LEVELS)
    crop_rows: int = 24

    @nn.compact
    def __call__(self, batch: Mapping, train: bool = False) -> dict:
        x = batch["mri"]
        centres = batch["mri_centres"]
        b = x.shape[0]
        crops = crop_rows(x, centres[..., 0], int(self.crop_rows))
        crops = crops.reshape((b * self.num_levels,) + crops.shape[2:])
        feats = MRIEncoder(**dict(self.mri), name="mri_encoder")(crops, train)
        feats = nn.LayerNorm(dtype=jnp.float32, name="ln")(feats.astype(jnp.float32))
        logits = nn.Dense(self.num_grades - 1, dtype=jnp.float32, name="head")(feats)
        bias = self.param("level_bias", nn.initializers.zeros, (self.num_levels, self.num_grades - 1))
        return {"grade": logits.reshape(b, self.num_levels, -1) + bias[None]}


def crop_rows_for(spacing_mm: float, crop_mm: float, multiple: int = 8) -> int:
    """The crop height in rows: ``crop_mm`` at ``spacing_mm`` per row, rounded to a multiple of
    ``multiple`` (the encoder's total stride, 8 for lesion2d: patch 2 and two stride-2 convs)."""
    return max(multiple, int(round(float(crop_mm) / float(spacing_mm) / multiple)) * multiple)


__all__ = ["LevelStenosisGrader", "crop_rows", "crop_rows_for"]
