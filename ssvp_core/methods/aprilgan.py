"""APRIL-GAN (Chen et al., arXiv 2305.17382; the VAND 2023 zero-shot winner), as its release builds it
(ByChelsea/VAND-APRIL-GAN @f13b8a6; parity: tests/parity/test_parity_aprilgan.py).

    text     APRIL-GAN's compositional ensemble (prompts.APRILGAN_ENSEMBLE: 7 normal / 5 anomalous states x 35
             templates); every sentence feature normalised, averaged per state side, normalised again
             (prompt_ensemble.py). The class name is the dataset's folder name as is (their meta.json `cls_name`).
    taps     the raw residual stream after blocks 6/12/18/24, CLS dropped; one trainable Linear(width -> joint) per
             tap (model.py `LinearLayer`), outputs normalised.
    map      per tap: logits 100 * cos(patch, [normal, anomalous]) upsampled bilinearly (align_corners=True) to the
             image size, then the 2-way softmax; the anomalous channel summed over taps (test.py:172-183).
             No Gaussian smoothing (test.py applies none; MethodSpec eval sigma 0).
    score    softmax(100 * cos(CLS embedding, text))[anomalous], the CLS through ln_post and proj (test.py:168).
    loss     sum over taps of focal(map, mask) + dice(anomalous channel, mask) (train.py:135-137).

Backbone as their loader builds it at 518 px against the 336-px config: exact GELU (not QuickGELU) in both towers,
and the forward under fp16 autocast (`torch.cuda.amp.autocast()` around images and text); both are the method's
backbone defaults (methods/__init__.py). The Linear heads run in fp32 here: their code trains them under fp16
autocast without a gradient scaler, whose only effect is rounding (and possible underflow of small gradients).
Training (train.sh): Adam(0.5, 0.999), lr 1e-3, batch 8; 15 epochs on VisA (the model evaluated on MVTec), 3 epochs
with the 2x2 mosaic at rate 0.2 on MVTec (the model evaluated on every other dataset).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import APRILGAN_ENSEMBLE, EnsembleTextCache
from .base import ClipDetector, Output
from .common import layer_maps, prompt_class_names
from .losses import dice, multiclass_focal


@dataclass
class APRILGANOptions:
    temperature: float = 0.01  # logits x 100, as its code
    image_loss: bool = False  # the release trains the pixel branch only
    # class names in the prompts: "raw" = the dataset's class folder name as is (its code), "mapped" = the kit's
    # Bayes-PFL-style names (data.registry.prompt_name: "pcb1" -> "printed circuit board")
    prompt_names: Literal["raw", "mapped"] = "raw"


class APRILGAN(ClipDetector):
    name = "aprilgan"

    def __init__(self, options: APRILGANOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        self.text = EnsembleTextCache(self.clip, APRILGAN_ENSEMBLE, backbone.precision)
        self.linear = nn.ModuleList(nn.Linear(self.clip.width, self.clip.embed_dim) for _ in backbone.clip.layers)

    def class_names(self, batch: dict) -> list[str]:
        return prompt_class_names(batch, self.options.prompt_names, self.prompt_class_name)

    cacheable = True  # the CLIP is frozen; only the Linear heads on its taps train (mosaics turn the cache off)

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The raw taps without CLS (B, L, N, W) and the normalised CLS embedding (B, D)."""
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x)
            return {"taps": torch.stack([t[:, 1:] for t in feats.taps], 1).float(),
                    "global": F.normalize(self.clip.project(feats.final[:, 0]).float(), dim=-1)}

    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        o = self.options
        taps, cls = list(features["taps"].unbind(1)), features["global"]
        text = self.text(self.class_names(batch)).to(cls.device)
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
