"""APRIL-GAN (Chen et al., arXiv 2305.17382; the VAND 2023 zero-shot winner).

One trainable Linear per tapped layer maps the raw residual-stream patch tokens into the joint space; the map of a
layer is the 2-way softmax of their cosines with the [normal, anomalous] text features of the compositional prompt
ensemble (logits upsampled before the softmax, as its code), summed over layers; the image score is the CLS
embedding against the same text. Trained on the auxiliary dataset with focal + dice per layer.
Settings of its release: 3 epochs, batch 8, Adam(0.5, 0.999), lr 1e-3, layers 6/12/18/24, 518 px.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import EnsembleTextCache
from .base import ClipDetector, Output
from .common import layer_maps
from .losses import dice, multiclass_focal


@dataclass
class APRILGANOptions:
    temperature: float = 0.01  # logits x 100, as its code
    image_loss: bool = False  # the release trains the pixel branch only


class APRILGAN(ClipDetector):
    name = "aprilgan"

    def __init__(self, options: APRILGANOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        self.text = EnsembleTextCache(self.clip)
        self.linear = nn.ModuleList(nn.Linear(self.clip.width, self.clip.embed_dim) for _ in backbone.clip.layers)

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        text = self.text(self.class_names(batch)).to(x.device)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x)
            taps = [t[:, 1:].float() for t in feats.taps]
            cls = F.normalize(self.clip.project(feats.final[:, 0]).float(), dim=-1)
        patches = [F.normalize(lin(t), dim=-1) for lin, t in zip(self.linear, taps)]
        maps = layer_maps(patches, text, o.temperature, self.clip.grid, self.image_size, softmax_first=False)
        anomaly_map = torch.stack([m[:, 1] for m in maps]).sum(0)
        logits = (cls[:, None] @ text.transpose(1, 2))[:, 0] / o.temperature
        return Output(anomaly_map, logits.softmax(-1)[:, 1], {"layer_maps": maps, "logits": logits})

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        pixel = sum(multiclass_focal(m, mask) + dice(m[:, 1], mask) for m in out.aux["layer_maps"])
        parts = {"pixel": pixel, "total": pixel}
        if self.options.image_loss:
            parts["image"] = F.cross_entropy(out.aux["logits"], batch["label"])
            parts["total"] = pixel + parts["image"]
        return parts
