"""ViP2-CLIP: visual-perception prompting with unified text-patch alignment (arXiv 2505.17692; ViP2-CLIP.md).

    ICA  (§3.2)  class-name-free prompts "[v_1..v_e] good [z_1..z_r]" / "[w_1..w_e] damaged [z_1..z_r]"; the r shared
                 class tokens are shifted by a Meta-Net of the global image embedding: z_j = o_j + MLP_j(f + b).
    FGP  (§3.3)  one shared 8-head cross-attention, text queries over each tapped layer's patch tokens, no 1/sqrt(d)
                 scaling and no residual (as the released code); G~_l = normalize(O).
    UTPA (§3.4)  per layer: 2-way softmax of patch-text cosines / 0.07 (pixel map, softmax before upsampling);
                 image logits = mean raw cosines of the top-K=50 most abnormal patches of every layer, / 0.07.
    loss (§6)    sum over layers of focal + dice(abnormal) + dice(normal) on the upsampled maps, + CE on the image logits.

Defaults are the released code (kim0806/ViP2-CLIP @4b5884f, which produced the published checkpoints); the paper's
reading is a switch where the two differ (ViP2-CLIP.md §12):
    normal_word     "damaged" (default): prompt_learner.py embeds both prompts from the abnormal sentence's token ids
                    (`token_embedding(neg_prompts_tokens)` for the normal prompt too); the "good" sentence's ids only
                    locate the end-of-text token, at the same position. "good" is the paper's prompt.
    global_feature  "no_ln_post" (default): the final CLS through proj without ln_post (VIP2CLIP.py); "ln_post" = clean.
    Meta-Net        f (joint width) -> hidden -> text width per class token; the released ICA fixes 768 -> 384 -> 768,
                    which is joint -> joint/2 -> text width for ViT-L/14 (`meta_hidden=0` derives it, so tiny models
                    work); FGP works at the joint width (768 in the released scripts).
Backbone as released (methods/__init__.py backbone_defaults): fp32 (the released model is loaded in fp32; bf16/fp16
autocast of the frozen vision tower is the `backbone.precision` switch, the trainable parts stay fp32), position
embedding resized bilinearly (VIP2CLIP.py interpolates 24x24 -> 37x37 with mode="bilinear", align_corners=False).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..errors import ConfigError
from ..prompts import PromptEncoder, placeholder_template
from .base import ClipDetector, Output
from .common import layer_maps, segmentation_loss


@dataclass
class ViP2CLIPOptions:
    n_ctx: int = 7  # §14 #2: the shipped scripts use 7 (argparse default 9)
    n_cls: int = 3  # r shared class tokens
    meta_hidden: int = 0  # Meta-Net hidden width; 0 = joint width / 2 (384 for ViT-L, the released constant)
    fgp_heads: int = 8
    top_k: int = 50  # patches per layer for the image score
    temperature: float = 0.07
    normal_word: Literal["good", "damaged"] = "damaged"  # §12 #1: "damaged" (released code: both prompts) | "good" (paper)
    global_feature: Literal["no_ln_post", "ln_post"] = "no_ln_post"  # §12 #2: no_ln_post (code, AnomalyCLIP convention) | ln_post (clean)


class MetaNet(nn.Module):
    """r independent MLPs Linear(D, h) -> ReLU -> Linear(h, W) on f + b (ICA)."""

    def __init__(self, d: int, width: int, hidden: int, r: int):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(1, d) * 0.02)
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, width)) for _ in range(r))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = f + self.bias
        return torch.stack([mlp(x) for mlp in self.mlps], dim=1)  # (B, r, W)


class FGP(nn.Module):
    """Fine-grained perception: multi-head cross-attention of the 2 text embeddings over one layer's patches."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ConfigError(f"vip2clip fgp_heads={heads} must divide the joint width {d}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        B, T, D = text.shape
        h = self.heads
        split = lambda x: x.view(B, x.shape[1], h, D // h).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(text)), split(self.k(patches)), split(self.v(patches))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # no 1/sqrt(d) scaling (released code)
        out = out.transpose(1, 2).reshape(B, T, D)
        return F.normalize(self.o(out), dim=-1)


def utpa_image_logits(sims: list[torch.Tensor], top_k: int, temperature: float) -> torch.Tensor:
    """UTPA image logits (test.py): per layer, the top-K patches by P(abnormal) = softmax(S / tau)[..., 1]; their RAW
    cosines S (both columns) are gathered; the mean over all layers x K patches, / tau. sims: per layer (B, N, 2)."""
    selected = []
    for sim in sims:
        k = min(top_k, sim.shape[1])
        idx = (sim / temperature).softmax(-1)[..., 1].topk(k, dim=1).indices
        selected.append(torch.gather(sim, 1, idx[..., None].expand(-1, -1, sim.shape[-1])))
    return torch.cat(selected, 1).mean(1) / temperature  # (B, 2)


class ViP2CLIP(ClipDetector):
    name = "vip2clip"

    def __init__(self, options: ViP2CLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        d, w = self.clip.embed_dim, self.clip.text_width
        self.prompt_encoder = PromptEncoder(self.clip)
        self.ctx_pos = nn.Parameter(torch.randn(o.n_ctx, w) * 0.02)
        self.ctx_neg = nn.Parameter(torch.randn(o.n_ctx, w) * 0.02)
        self.cls_ctx = nn.Parameter(torch.randn(o.n_cls, w) * 0.02)
        self.meta_net = MetaNet(d, w, o.meta_hidden or max(1, d // 2), o.n_cls)
        self.fgp = FGP(d, o.fgp_heads)
        self.templates = [placeholder_template(o.n_ctx, o.normal_word) + " " + placeholder_template(o.n_cls),
                          placeholder_template(o.n_ctx, "damaged") + " " + placeholder_template(o.n_cls)]

    def prompt_parameters(self):
        """ICA (context vectors, class tokens and the Meta-Net) trains at lr 1e-3; FGP at 1e-5 (the heads group)."""
        return [self.ctx_pos, self.ctx_neg, self.cls_ctx, *self.meta_net.parameters()]

    def text_features(self, f: torch.Tensor) -> torch.Tensor:
        """G_t (B, 2, D): [normal, abnormal] prompts conditioned on each image's global feature: slots [ctx, z] with
        z_j = o_j + MLP_j(f + b), through the causal text tower, pooled at the end-of-text token (ICA.forward,
        encode_text_learn)."""
        B = f.shape[0]
        f = f.float()
        z = self.cls_ctx[None] + self.meta_net(f)  # (B, r, W)
        pos = torch.cat([self.ctx_pos.expand(B, -1, -1), z], 1)
        neg = torch.cat([self.ctx_neg.expand(B, -1, -1), z], 1)
        slots = torch.stack([pos, neg], 1).flatten(0, 1)  # (2B, e + r, W)
        feats = self.prompt_encoder(self.templates * B, slots).float()
        return F.normalize(feats, dim=-1).view(B, 2, -1)

    cacheable = True  # the vision tower is frozen (no V-V attention in the release's test path)

    def feature_spec(self) -> dict:
        return {"global_feature": self.options.global_feature}

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """Normalised patch features of the tapped layers (B, L, N, D) and the normalised global feature (B, D)."""
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x)
            patches = torch.stack([F.normalize(self.clip.project(t).float(), dim=-1)[:, 1:] for t in feats.taps], 1)
            cls = feats.final[:, 0]
            g = self.clip.project(cls) if o.global_feature == "ln_post" else self.clip.project_no_ln(cls)
        return {"patches": patches, "global": F.normalize(g.float(), dim=-1)}

    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        o = self.options
        patches, g = list(features["patches"].unbind(1)), features["global"]
        text = self.text_features(g)
        grid = self.clip.grid
        maps, sims = [], []
        for p in patches:
            t_l = self.fgp(text, p)  # (B, 2, D)
            sims.append(p @ t_l.transpose(1, 2))  # (B, N, 2) raw cosines
            maps.extend(layer_maps([p], t_l, o.temperature, grid, self.image_size, softmax_first=True, align_corners=False))
        logits = utpa_image_logits(sims, o.top_k, o.temperature)
        score = logits.softmax(-1)[:, 1]
        anomaly_map = torch.stack([(m[:, 1] + 1 - m[:, 0]) / 2 for m in maps]).mean(0)
        return Output(anomaly_map, score, {"layer_maps": maps, "logits": logits})

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        pixel = segmentation_loss(out.aux["layer_maps"], batch["mask"])
        image = F.cross_entropy(out.aux["logits"], batch["label"])
        return {"pixel": pixel, "image": image, "total": pixel + image}
