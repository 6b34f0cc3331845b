"""PyTorch twins of the lumbarjax models (eager mode), for the benchmark suite (benchmarks/run.py).

Each twin has the same layers, channels, kernels, strides, padding, GroupNorm groups, bias /
no-bias choices and therefore the same parameter count as its lumbarjax original:

* :class:`TorchResNet2D`  <- ``lumbarjax.models.resnet2d.ResNet2D`` (patchify stem written as a
  conv with kernel = stride = patch, which is the same maths as space-to-depth + Dense(no bias)).
* :class:`TorchGrader`    <- ``Grader`` (ResNet2D + CORN head) and :func:`corn_loss`.
* :class:`TorchSliceEncoder` <- ``MRIEncoder(arch="slice2d")``: the 2D trunk on every slice
  (slices folded into the batch), a Linear(C, 1) score softmaxed over slices at each (h, w),
  avg+max spatial pool.
* :class:`TorchOutcomeModel` <- ``OutcomeModel`` with the MRI branch and clinical MLP (the demo's
  outcome model): LayerNorm x presence flag, modality dropout, fusion MLP, 3 binary + 2 VAS
  heads, and :func:`outcome_loss` (masked BCE + Huber on VAS/100).

Layouts are PyTorch's: X-ray (B, 1, H, W), MRI (B, 1, D, H, W). Imports torch at module import:
import this module only after checking that torch is installed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BINARY_HEADS = ("zcq_success", "back_pain_improved50", "leg_pain_improved50")
REGRESSION_HEADS = ("back_pain_post", "leg_pain_post")


def group_norm(channels: int, zero_init: bool = False) -> nn.GroupNorm:
    """lumbarjax norm_layer("group"): gcd(C, 8) groups, affine; scale 0 for the last norm of a
    residual branch."""
    gn = nn.GroupNorm(math.gcd(channels, 8), channels, eps=1e-6)
    if zero_init:
        nn.init.zeros_(gn.weight)
    return gn


class BasicBlock(nn.Module):
    """Two 3x3 convs (no bias) + GroupNorms, strided 1x1 projection when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.norm1 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.norm2 = group_norm(cout, zero_init=True)
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), group_norm(cout))

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.proj is not None:
            x = self.proj(x)
        return F.relu(x + y)


class TorchResNet2D(nn.Module):
    """(B, 1, H, W) -> (B, C, h, w) feature map (``feature_map``) or (B, C) avg-pooled."""

    def __init__(self, stage_sizes=(1, 1, 1, 1), width: int = 16, patch: int = 4, in_ch: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, patch, patch, bias=False),
                                  group_norm(width), nn.ReLU())
        blocks, cin = [], width
        for i, n in enumerate(stage_sizes):
            for j in range(n):
                cout = width * 2 ** i
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.out_features = cin

    def feature_map(self, x):
        return self.stages(self.stem(x))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


class TorchGrader(nn.Module):
    """Grader twin: xray (B, 1, H, W) -> CORN logits (B, num_levels, K-1)."""

    def __init__(self, width: int = 16, num_grades: int = 5, num_levels: int = 1,
                 stage_sizes=(1, 1, 1, 1), patch: int = 4):
        super().__init__()
        self.backbone = TorchResNet2D(stage_sizes, width, patch)
        self.km1, self.levels = num_grades - 1, num_levels
        self.head = nn.Linear(self.backbone.out_features, num_levels * self.km1)

    def forward(self, x):
        return self.head(self.backbone(x)).reshape(x.shape[0], self.levels, self.km1)


def corn_loss(logits, labels):
    """CORN: BCE of task k over {y >= k}, summed, divided by the total subset size."""
    k = torch.arange(logits.shape[-1])
    y = labels.long()[..., None]
    targets, subset = (y > k).float(), (y >= k).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * subset).sum() / subset.sum().clamp_min(1.0)


class TorchSliceEncoder(nn.Module):
    """MRIEncoder(arch="slice2d") twin: (B, 1, D, H, W) -> (B, 2C) (avg+max pool)."""

    def __init__(self, width: int = 32, stage_sizes=(1, 1, 1), patch: int = 4):
        super().__init__()
        self.trunk = TorchResNet2D(stage_sizes, width, patch)
        c = self.trunk.out_features
        self.score = nn.Linear(c, 1)
        self.out_features = 2 * c

    def forward(self, x):
        b, c_in, d, h, w = x.shape
        s = x.permute(0, 2, 1, 3, 4).reshape(b * d, c_in, h, w)
        fmap = self.trunk.feature_map(s)                     # (B*D, C, h, w)
        fmap = fmap.reshape(b, d, *fmap.shape[1:])           # (B, D, C, h, w)
        score = self.score(fmap.transpose(2, -1)).transpose(2, -1)  # (B, D, 1, h, w)
        fmap = (torch.softmax(score, dim=1) * fmap).sum(1)    # (B, C, h, w)
        return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=-1)


class TorchLesionCNN(nn.Module):
    """MRIEncoder(arch="lesion2d") twin: per slice, 2x2 patchify (lumbarjax space_to_depth: the
    4 pixels of a patch become channels, row-major), then 3x3 convs (no bias) of channels
    (w, w, 2w, 2w), every second one stride 2, each + GroupNorm(groups of 4) + relu; max + mean
    over slices and positions -> (B, 2 * 2w)."""

    def __init__(self, width: int = 16, patch: int = 2):
        super().__init__()
        self.patch = patch
        chans, layers, cin = (width, width, 2 * width, 2 * width), [], patch * patch
        for i, c in enumerate(chans):
            # lumbarjax "SAME" with stride 2 pads (0, 1): pad explicitly, conv without padding
            layers.append(nn.Conv2d(cin, c, 3, 2 if i % 2 else 1, padding=0 if i % 2 else 1, bias=False))
            layers.append(nn.GroupNorm(c // 4 if c % 4 == 0 else math.gcd(c, 8), c, eps=1e-6))
            cin = c
        self.layers = nn.ModuleList(layers)
        self.out_features = 2 * chans[-1]

    def forward(self, x):
        b, c_in, d, h, w = x.shape
        p = self.patch
        y = x.permute(0, 2, 1, 3, 4).reshape(b * d, c_in, h, w)
        y = F.pixel_unshuffle(y, p) if p > 1 else y
        for i in range(0, len(self.layers), 2):
            conv, norm = self.layers[i], self.layers[i + 1]
            if conv.stride[0] == 2:
                y = F.pad(y, (0, 1, 0, 1))
            y = F.relu(norm(conv(y)))
        y = y.reshape(b, d, *y.shape[1:])                    # (B, D, C, h, w)
        return torch.cat([y.amax(dim=(1, 3, 4)), y.mean(dim=(1, 3, 4))], dim=-1)


class TorchOutcomeModel(nn.Module):
    """OutcomeModel twin (MRI branch + clinical MLP): -> {head: (B,)} (VAS heads in 0–100).
    ``arch``: "slice2d" (TorchSliceEncoder) or "lesion2d" (TorchLesionCNN)."""

    def __init__(self, width: int = 16, n_clinical: int = 20, clinical_hidden: int = 32,
                 fusion_hidden: int = 64, dropout: float = 0.1, modality_dropout: float = 0.25,
                 arch: str = "slice2d", freeze_mri: bool = False):
        super().__init__()
        self.mri_encoder = TorchSliceEncoder(width) if arch == "slice2d" else TorchLesionCNN(width)
        # frozen (pretrained) encoder as a PyTorch user writes it: no grads, forward in no_grad
        self.freeze_mri = freeze_mri
        for p in self.mri_encoder.parameters():
            p.requires_grad_(not freeze_mri)
        f = self.mri_encoder.out_features
        self.mri_ln = nn.LayerNorm(f, eps=1e-6)
        self.clinical = nn.Linear(n_clinical, clinical_hidden)
        self.fusion = nn.Linear(f + 1 + clinical_hidden, fusion_hidden)
        self.heads = nn.ModuleDict({h: nn.Linear(fusion_hidden, 1)
                                    for h in BINARY_HEADS + REGRESSION_HEADS})
        for h in REGRESSION_HEADS:
            nn.init.constant_(self.heads[h].bias, 0.5)
        self.dropout, self.modality_dropout = dropout, modality_dropout

    def forward(self, mri, clinical, mri_present):
        if self.freeze_mri:
            with torch.no_grad():
                enc = self.mri_encoder(mri)
        else:
            enc = self.mri_encoder(mri)
        feats = self.mri_ln(enc)
        present = mri_present.reshape(-1)
        if self.training and self.modality_dropout > 0:
            present = present * torch.bernoulli(torch.full_like(present, 1 - self.modality_dropout))
        parts = [feats * present[:, None], present[:, None]]
        c = F.dropout(F.relu(self.clinical(clinical)), self.dropout, self.training)
        h = torch.cat(parts + [c], dim=-1)
        h = F.dropout(F.relu(self.fusion(h)), self.dropout, self.training)
        out = {k: self.heads[k](h)[:, 0] for k in BINARY_HEADS}
        out.update({k: self.heads[k](h)[:, 0] * 100.0 for k in REGRESSION_HEADS})
        return out


def outcome_loss(out, labels, delta: float = 0.2):
    """Sum over heads of the mean BCE (binary) / Huber on VAS/100 (regression); all labelled."""
    total = 0.0
    for k in BINARY_HEADS:
        total = total + F.binary_cross_entropy_with_logits(out[k], labels[k])
    for k in REGRESSION_HEADS:
        total = total + F.huber_loss(out[k] / 100.0, labels[k] / 100.0, delta=delta)
    return total


class ZcqLogit(nn.Module):
    """Outcome twin in eval mode -> the zcq_success logit (B,) (for Captum IG)."""

    def __init__(self, model: TorchOutcomeModel):
        super().__init__()
        self.model = model

    def forward(self, mri, clinical, mri_present):
        return self.model(mri, clinical, mri_present)["zcq_success"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_train_step(model: nn.Module, loss_fn, lr: float = 1e-3, weight_decay: float = 1e-4,
                    clip_norm: float = 1.0):
    """Eager train step: zero_grad, forward, loss, backward, clip, AdamW (as lumbarjax's optax
    chain clip_by_global_norm + adamw). Returns ``step(*inputs, labels) -> loss float``."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    model.train()

    def step(inputs, labels):
        opt.zero_grad(set_to_none=True)
        out = model(*inputs)
        loss = loss_fn(out, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        return float(loss.detach())

    return step


# ------------------------------------------------------------------ MONAI at matched size
# MONAI's own classes configured to our widths and depths (the fair MONAI peer, beside the
# resnet18 defaults): the same stem stride, channels per stage, blocks per stage and GroupNorm;
# what MONAI cannot express is said per function. Parameter counts are printed by the suite.

def _monai_resnet(spatial_dims: int, inplanes, n_out: int | None, patch):
    from monai.networks.nets import ResNet
    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=list(inplanes),
                  spatial_dims=spatial_dims, n_input_channels=1, conv1_t_size=patch,
                  conv1_t_stride=patch, no_max_pool=True, shortcut_type="B",
                  bias_downsample=False, norm=("group", {"num_groups": 8}),
                  feed_forward=n_out is not None, num_classes=n_out or 1)


def monai_matched_grader(width: int = 16, num_classes: int = 4) -> nn.Module:
    """monai.networks.nets.ResNet, basic blocks [1,1,1,1], channels (w, 2w, 4w, 8w), 4x4/4 stem
    conv, no max-pool, GroupNorm(8) — the grader's backbone in MONAI's class (its stem conv pads
    by 2, ours does not; its fc gives the 4 CORN logits)."""
    return _monai_resnet(2, (width, 2 * width, 4 * width, 8 * width), num_classes, 4)


class MonaiSliceModel(nn.Module):
    """(B, 1, D, H, W) -> (B, n_out): a MONAI 2D model on every slice (slices folded into the
    batch), features averaged over slices, then Linear — the outcome model's shape with MONAI's
    classes for the per-slice trunk (no slice attention, no clinical branch)."""

    def __init__(self, trunk: nn.Module, features: int, n_out: int = 5):
        super().__init__()
        self.trunk, self.fc = trunk, nn.Linear(features, n_out)

    def forward(self, x):
        b, c, d, h, w = x.shape
        f = self.trunk(x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w))
        return self.fc(f.reshape(b, d, -1).mean(1))


def monai_matched_slice2d(width: int = 16, n_out: int = 5) -> nn.Module:
    """slice2d's trunk as monai.networks.nets.ResNet (2D, basic blocks, channels (w, 2w, 4w),
    4x4/4 stem, GroupNorm(8)); MONAI's ResNet always has 4 stages, so its 4th is replaced by an
    identity (3 stages, as ours)."""
    trunk = _monai_resnet(2, (width, 2 * width, 4 * width, 4 * width), None, 4)
    trunk.layer4 = nn.Identity()
    return MonaiSliceModel(trunk, 4 * width, n_out)


def monai_matched_lesion2d(width: int = 16, n_out: int = 5) -> nn.Module:
    """lesion2d's per-slice CNN from monai.networks.blocks.Convolution: 2x2 pixel-unshuffle,
    then 3x3 conv (no bias) + GroupNorm(groups of 4) + ReLU with channels (w, w, 2w, 2w), strides
    1/2/1/2; global mean pool per slice (ours: max + mean)."""
    from monai.networks.blocks import Convolution

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            chans, cin, layers = (width, width, 2 * width, 2 * width), 4, []
            for i, c in enumerate(chans):
                layers.append(Convolution(2, cin, c, strides=2 if i % 2 else 1, kernel_size=3,
                                          act="relu", norm=("group", {"num_groups": c // 4}),
                                          bias=False))
                cin = c
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(F.pixel_unshuffle(x, 2)).mean(dim=(2, 3))

    return MonaiSliceModel(Trunk(), 2 * width, n_out)
