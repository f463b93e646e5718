"""DAPO: defect-aware hybrid prompt optimisation with progressive tuning (arXiv 2512.09446; DAPO.md).

    prompts (§3.2)  normal "[V_1..V_5] flawless object" and, for each defect-type anchor D_k,
                    "[W_1..W_5] <D_k> anomaly object" (W shared by every anchor); E = 10 ensembles per state, averaged.
    progressive     deep layer tokens in both encoders (§3.3): 4 tokens inserted after the first token before block 0,
    tuning          and before every later block the slots are reset to 0.01 * (previous output) + 0.99 * (new token).
    adapters (§3.4) one Linear(width -> joint) per tapped layer on the raw residual stream (no CLS, no ln_post).
    scoring (§3.5)  image: softmax([z_x.z_N, z_x.mean(z_D)] / 0.07); pixels: (1+K)-way softmax per layer,
                    binary map = sum over layers of (1 - P(normal)), no smoothing; multi-type maps per anchor.
    loss (§6)       CE(image) + 4 * sum_l [multi-class focal + dice(normal) + dice(sum of defect channels)].

The vision tower is frozen but gradients pass through it to the visual tokens: set train.grad_checkpointing=true to
recompute block activations in the backward pass (needed for batch 8 at 518 px on a 24 GB GPU).
Code quirks (DAPO.md §12) are options: `text_path=faithful` (default) runs the prompt path without a causal mask and
pools at the template's EOT position (not shifted by the 4 inserted tokens), as the released code does;
`text_path=clean` uses a causal mask and the shifted EOT. `normal_anchor` is "flawless" (code) or "normal" (paper).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.defects import DefectVocabulary, vocabulary
from ..data.loader import batch_view
from ..errors import ConfigError
from ..prompts import PromptEncoder, deep_token_hook, placeholder_template
from .base import ClipDetector, Output
from .losses import dice, multiclass_focal


@dataclass
class DAPOOptions:
    ensembles: int = 10  # E
    ctx_len: int = 5  # l learnable tokens before the anchor words
    text_depth: int = 12  # blocks with deep text tokens (capped at the text tower's depth)
    vision_depth: int = 24  # blocks with deep visual tokens (capped at the vision tower's depth)
    n_tokens: int = 4  # tokens per layer in both encoders
    blend: float = 0.01  # alpha of the progressive update
    temperature: float = 0.07
    normal_anchor: Literal["flawless", "normal"] = "flawless"  # §14 #2: flawless (code) | normal (paper)
    abnormal_template: str = "{defect} anomaly object"  # §14 #3 (code wording)
    text_path: Literal["faithful", "clean"] = "faithful"  # §14 #4: faithful (no causal mask, unshifted EOT) | clean
    lambda_local: float = 4.0
    lambda_image: float = 1.0
    anchors: dict = field(default_factory=dict)  # dataset -> [anchor words] for datasets without a built-in list


class DAPO(ClipDetector):
    name = "dapo"
    eval_aux_keys = ("type_logits",)

    def __init__(self, options: DAPOOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        w, vw, d = self.clip.text_width, self.clip.width, self.clip.embed_dim
        self.prompt_encoder = PromptEncoder(self.clip)
        mean, std = self.clip.model.token_embedding.weight.mean(0), self.clip.model.token_embedding.weight.std(0)
        self.ctx_normal = nn.Parameter(torch.randn(o.ensembles, o.ctx_len, w) * std + mean)
        self.ctx_abnormal = nn.Parameter(torch.randn(o.ensembles, o.ctx_len, w) * std + mean)
        self.text_tokens = nn.Parameter(torch.randn(min(o.text_depth, len(self.clip.text_blocks)), o.n_tokens, w) * std + mean)
        patch = self.clip.model.visual.conv1.kernel_size[0]
        bound = math.sqrt(6.0 / (3 * patch * patch + vw))  # VPT initialisation
        self.visual_tokens = nn.Parameter(torch.empty(min(o.vision_depth, len(self.clip.blocks)), o.n_tokens, vw).uniform_(-bound, bound))
        self.adapters = nn.ModuleList(nn.Linear(vw, d) for _ in backbone.clip.layers)
        self._text_cache: dict = {}

    def prompt_parameters(self):
        return [self.ctx_normal, self.ctx_abnormal, self.text_tokens, self.visual_tokens]

    def train(self, mode: bool = True):
        self._text_cache.clear()  # text features depend on trained tokens
        return super().train(mode)

    # ---- vocabulary -----------------------------------------------------------------------------------------
    def vocabulary(self, dataset: str) -> DefectVocabulary:
        if dataset in self.options.anchors:
            return DefectVocabulary(tuple(self.options.anchors[dataset]))
        return vocabulary(dataset, training=self.training)

    # ---- text ---------------------------------------------------------------------------------------------
    def text_features(self, dataset: str) -> torch.Tensor:
        """[z_N; z_D1..z_DK] (1 + K, D), L2-normalised, for the anchors of `dataset`."""
        key = (dataset, self.training)
        if not self.training and key in self._text_cache:
            return self._text_cache[key]
        o = self.options
        anchors = self.vocabulary(dataset).anchors
        states = [f"{o.normal_anchor} object"] + [o.abnormal_template.format(defect=a) for a in anchors]
        E = o.ensembles
        texts = [placeholder_template(o.ctx_len, s) for s in states for _ in range(E)]
        slots = torch.cat([self.ctx_normal, self.ctx_abnormal.repeat(len(anchors), 1, 1)])  # ((1+K)E, l, W)
        emb, eot = self.prompt_encoder.embed(texts, slots)
        clean = o.text_path == "clean"
        feats = self.clip.encode_text_embeddings(emb, eot + (o.n_tokens if clean else 0), causal=clean,
                                                 hook=deep_token_hook(self.text_tokens, "blend", o.blend))
        feats = F.normalize(feats.float().view(len(states), E, -1).mean(1), dim=-1)
        if not self.training:
            self._text_cache[key] = feats
        return feats

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        datasets = set(batch.get("dataset") or ["?"])
        if len(datasets) != 1:
            raise ConfigError(f"dapo needs one dataset per batch (its anchors differ per dataset), got {sorted(datasets)}")
        text = self.text_features(datasets.pop())  # (1 + K, D)
        with autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x, hook=deep_token_hook(self.visual_tokens, "blend", o.blend),
                                             checkpointing=getattr(self, "grad_checkpointing", False) and self.training)
        n = o.n_tokens
        z_x = F.normalize(self.clip.project(feats.final[:, 0]).float(), dim=-1)
        z_defect = F.normalize(text[1:].mean(0), dim=-1)
        image_logits = torch.stack([z_x @ text[0], z_x @ z_defect], -1) / o.temperature
        grid = self.clip.grid
        layer_probs, layer_logits = [], []
        for adapter, tap in zip(self.adapters, feats.taps):
            z = F.normalize(adapter(tap[:, 1 + n:].float()), dim=-1)  # prompt tokens and CLS dropped
            logits = z @ text.T / o.temperature  # (B, N, 1 + K)
            layer_logits.append(logits)
            prob = logits.softmax(-1).transpose(1, 2).reshape(x.shape[0], -1, *grid)
            layer_probs.append(F.interpolate(prob, size=(self.image_size,) * 2, mode="bilinear", align_corners=True))
        anomaly_map = torch.stack([1 - p[:, 0] for p in layer_probs]).sum(0)  # range 0..L
        score = image_logits.softmax(-1)[:, 1]
        aux = {"image_logits": image_logits, "layer_probs": layer_probs, "type_logits": torch.stack(layer_logits, 1)}
        return Output(anomaly_map, score, aux)

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        o = self.options
        mask = batch["mask"]
        vocab = self.vocabulary(batch["dataset"][0])
        ids = torch.tensor([vocab.index(d) for d in batch["defect"]], device=mask.device)
        target = (mask > 0.5).long() * ids[:, None, None]  # multi-class pixel target: the image's defect type
        local = 0
        for p in out.aux["layer_probs"]:
            local = local + multiclass_focal(p, target) + dice(p[:, 0], 1 - mask) + dice(p[:, 1:].sum(1), mask)
        image = F.cross_entropy(out.aux["image_logits"], batch["label"])
        return {"local": local, "image": image, "total": o.lambda_local * local + o.lambda_image * image}
