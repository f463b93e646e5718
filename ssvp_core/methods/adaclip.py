"""AdaCLIP (Cao et al., ECCV 2024): hybrid static + dynamic learnable prompts in both encoders (peers §2.1).

    prompts   deep prompt tokens (length 5) in the first 4 blocks of the vision and text towers (branch `VL`);
              static tokens are free parameters, dynamic tokens are generated per image from its global feature
              (a first, prompt-free pass of the frozen tower); type `SD` adds both, `S` / `D` use one.
    text      "a photo of a normal <class>." / "a photo of a damaged <class>." through the prompted text tower.
    map       patch features of layers 6/12/18/24 (prompt tokens dropped; ln_post, proj) against the per-image text;
              layer logits averaged, soft-maxed, upsampled (align_corners=True); sigma 4 at test.
    HSF       hybrid semantic fusion for the image score: k-means (k = 20) on the 100 most anomalous patch
              features; the most anomalous centre is mixed into the global feature with weight 0.2.
    training  AdamW(0.5, 0.999), lr 0.01, 5 epochs (the release uses batch 1 and fp16); focal + dice + CE.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import PromptEncoder, deep_token_hook
from .base import ClipDetector, Output
from .common import segmentation_loss


@dataclass
class AdaCLIPOptions:
    depth: int = 4
    length: int = 5
    prompt_type: Literal["S", "D", "SD"] = "SD"  # S (static) | D (dynamic) | SD (both)
    branch: Literal["V", "L", "VL"] = "VL"  # V | L | VL: which towers get prompts
    temperature: float = 0.07
    hsf: bool = True
    hsf_top: int = 100
    hsf_clusters: int = 20
    hsf_alpha: float = 0.2
    kmeans_iters: int = 10


def kmeans(x: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd k-means on (n, d) from the first k points (deterministic): (centres (k, d), assignment (n,))."""
    centres = x[:k].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        onehot = F.one_hot(assign, k).to(x.dtype)
        counts = onehot.sum(0)
        centres = torch.where(counts[:, None] > 0, (onehot.T @ x) / counts.clamp_min(1)[:, None], centres)
    return centres, assign


class AdaCLIP(ClipDetector):
    name = "adaclip"

    def __init__(self, options: AdaCLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        d, w, vw = self.clip.embed_dim, self.clip.text_width, self.clip.width
        self.prompt_encoder = PromptEncoder(self.clip)
        vdepth, tdepth = min(o.depth, len(self.clip.blocks)), min(o.depth, len(self.clip.text_blocks))
        if "V" in o.branch:
            self.static_v = nn.Parameter(torch.randn(vdepth, o.length, vw) * 0.02)
            self.dynamic_v = nn.Linear(d, vdepth * o.length * 8)  # low-rank generator ...
            self.dynamic_v_up = nn.Linear(8, vw)  # ... to the token width
        if "L" in o.branch:
            self.static_t = nn.Parameter(torch.randn(tdepth, o.length, w) * 0.02)
            self.dynamic_t = nn.Linear(d, tdepth * o.length * 8)
            self.dynamic_t_up = nn.Linear(8, w)

    def prompt_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("static_")]

    def _tokens(self, g: torch.Tensor, static: torch.Tensor, gen: nn.Linear, up: nn.Linear) -> torch.Tensor:
        """(B, depth, length, W) prompt tokens: static, dynamic (from the global feature) or their sum."""
        B = g.shape[0]
        depth, length = static.shape[:2]
        tokens = torch.zeros(B, depth, length, static.shape[-1], device=g.device)
        if "S" in self.options.prompt_type:
            tokens = tokens + static
        if "D" in self.options.prompt_type:
            tokens = tokens + up(gen(g).view(B, depth, length, 8))
        return tokens

    def text_features(self, g: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """Per-image [normal, anomalous] text features (B, 2, D)."""
        B = g.shape[0]
        texts = [t for name in class_names for t in (f"a photo of a normal {name}.", f"a photo of a damaged {name}.")]
        if "L" not in self.options.branch:
            feats = self.prompt_encoder(texts)
        else:
            tokens = self._tokens(g, self.static_t, self.dynamic_t, self.dynamic_t_up).repeat_interleave(2, 0)
            feats = self.prompt_encoder(texts, hook=deep_token_hook(tokens, "replace"), eot_shift=self.options.length)
        return F.normalize(feats.float(), dim=-1).view(B, 2, -1)

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            plain = self.clip.image_features(x)  # prompt-free pass: the global feature that conditions the prompts
            g0 = F.normalize(self.clip.project(plain.final[:, 0]).float(), dim=-1)
        n = o.length
        if "V" in o.branch:
            tokens = self._tokens(g0, self.static_v, self.dynamic_v, self.dynamic_v_up)
            with autocast_context(x.device, self.backbone_cfg.precision):
                feats = self.clip.image_features(x, hook=deep_token_hook(tokens, "replace"))
            patches = [F.normalize(self.clip.project(t[:, 1 + n:]).float(), dim=-1) for t in feats.taps]
            g = F.normalize(self.clip.project(feats.final[:, 0]).float(), dim=-1)
        else:
            patches = [F.normalize(self.clip.project(t[:, 1:]).float(), dim=-1) for t in plain.taps]
            g = g0
        text = self.text_features(g0, self.class_names(batch))  # (B, 2, D)
        logits = torch.stack([p @ text.transpose(1, 2) for p in patches]).mean(0) / o.temperature  # (B, N, 2)
        prob = logits.softmax(-1).transpose(1, 2).reshape(x.shape[0], 2, *self.clip.grid)
        maps = F.interpolate(prob, size=(self.image_size,) * 2, mode="bilinear", align_corners=True)
        anomaly_map = (maps[:, 1] + 1 - maps[:, 0]) / 2
        if o.hsf:
            g = self._hybrid_semantic_fusion(g, patches[-1], logits.softmax(-1)[..., 1])
        image_logits = (g[:, None] @ text.transpose(1, 2))[:, 0] / o.temperature
        return Output(anomaly_map, image_logits.softmax(-1)[:, 1], {"maps": maps, "logits": image_logits})

    def _hybrid_semantic_fusion(self, g: torch.Tensor, patches: torch.Tensor, abnormal: torch.Tensor) -> torch.Tensor:
        o = self.options
        out = []
        for gi, pi, ai in zip(g, patches, abnormal):
            top = ai.topk(min(o.hsf_top, ai.numel())).indices
            k = min(o.hsf_clusters, len(top))
            centres, assign = kmeans(pi[top].detach(), k, o.kmeans_iters)
            scores = torch.stack([ai[top][assign == c].mean() if (assign == c).any() else ai.new_tensor(-1.0) for c in range(k)])
            best = scores.argmax()
            centre = pi[top][assign == best].mean(0)  # differentiable through the features
            out.append(F.normalize((1 - o.hsf_alpha) * gi + o.hsf_alpha * centre, dim=-1))
        return torch.stack(out)

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        local = segmentation_loss([out.aux["maps"]], batch["mask"])
        image = F.cross_entropy(out.aux["logits"], batch["label"])
        return {"local": local, "image": image, "total": local + image}
