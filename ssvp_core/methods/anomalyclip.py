"""AnomalyCLIP (Zhou et al., ICLR 2024): object-agnostic prompt learning (peers-and-datasets.md §1), as released in
zqhang/AnomalyCLIP @45ed4dd (`AnomalyCLIP_lib/AnomalyCLIP.py`, `prompt_ensemble.py`, `train.py`, `test.py`).

    prompts   "[X]x12 object." and "[X]x12 damaged object." with 12 learnable context vectors each, plus deep
              text prompts: before text blocks 1..8, 4 learnable tokens replace positions 1..4 (depth 9). The release's
              text block casts them with `.half()` before inserting them into the float32 stream, which rounds them, and
              in backward their gradients, through fp16 per prompt (`prompt_rounding=fp16`, default; `none` keeps them
              fp32; prompts.round_as_released).
    DPAM      from block `dpam_start` on (the released DPAM_layer=20 on 24 blocks = blocks 6-24), a side stream
              collects V-V self-attention (q = k = v from the block's own weights and output projection, no FFN)
              computed on ln_1 of the ORIGINAL stream's block input: side = h_in + sum_blocks VV(ln_1(h_in)). The
              original stream runs the unchanged blocks. Patch tokens come from the side stream (ln_post, proj);
              the global feature is the final original CLS @ proj, without ln_post.
    scores    map = softmax(patch . T / 0.07)[abnormal] on the grid, upsampled bilinearly (align_corners=False),
              summed over tapped layers (the engine applies Gaussian sigma 4 at test); image score =
              softmax(CLS . T / 0.07)[abnormal] (no map term).
    loss      CE on the image logits + 4 x sum over layers of [focal + dice(abnormal) + dice(normal, 1 - mask)].
    training  Adam(0.5, 0.999), lr 1e-3 constant, 15 epochs, batch 8, only the prompts train.
    backbone  the released model runs in fp32 (build_model never converts the weights to fp16) and resizes the
              position embedding bilinearly: MethodSpec.backbone_defaults.

Layers (§1.3): the published numbers come from layer 24 only (`layers=published`, default); `layers=nominal` taps
6/12/18/24, and `tap_bug=true` reproduces the pre-2025 in-place bug that made all four taps equal the last layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import PromptEncoder, PromptRounding, placeholder_template, round_as_released
from .base import ClipDetector, Output
from .common import layer_maps, segmentation_loss


@dataclass
class AnomalyCLIPOptions:
    n_ctx: int = 12
    text_depth: int = 9  # deep text prompts in blocks 1 .. depth-1
    text_tokens: int = 4
    dpam: bool = True
    dpam_start: int = 6  # first 1-based V-V block; released DPAM_layer = n_blocks - dpam_start + 2 (20 on 24)
    layers: Literal["published", "nominal"] = "published"  # published (last tapped layer only) | nominal (every tapped layer)
    tap_bug: bool = False  # nominal layers, but every tap equals the last layer (the bug fixed in 2025)
    temperature: float = 0.07
    lambda_local: float = 4.0
    prompt_rounding: PromptRounding = "fp16"  # fp16: deep prompts through float16 as released (.half()) | none: fp32


class AnomalyCLIP(ClipDetector):
    name = "anomalyclip"

    def __init__(self, options: AnomalyCLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        w = self.clip.text_width
        self.prompt_encoder = PromptEncoder(self.clip)
        self.ctx_normal = nn.Parameter(torch.randn(o.n_ctx, w) * 0.02)
        self.ctx_abnormal = nn.Parameter(torch.randn(o.n_ctx, w) * 0.02)
        depth = min(o.text_depth, len(self.clip.text_blocks))
        # block 0 keeps the template's own tokens; blocks 1..depth-1 get learnable replacements
        self.deep_text = nn.Parameter(torch.randn(max(depth - 1, 0), o.text_tokens, w) * 0.02)
        self.templates = [placeholder_template(o.n_ctx, "object."), placeholder_template(o.n_ctx, "damaged object.")]

    def prompt_parameters(self):
        return [self.ctx_normal, self.ctx_abnormal, self.deep_text]

    def _text_hook(self):
        tokens, rounding = self.deep_text, self.options.prompt_rounding

        def hook(j: int, x: torch.Tensor) -> torch.Tensor:
            if 1 <= j <= tokens.shape[0]:
                n = tokens.shape[1]
                # expanded first, then rounded: each prompt's gradient is rounded before the two are summed, as released
                inserted = round_as_released(tokens[j - 1].expand(x.shape[0], -1, -1), rounding).to(x.dtype)
                return torch.cat([x[:, :1], inserted, x[:, 1 + n:]], 1)
            return x

        return hook

    def text_features(self) -> torch.Tensor:
        slots = torch.stack([self.ctx_normal, self.ctx_abnormal])
        feats = self.prompt_encoder(self.templates, slots, hook=self._text_hook())
        return F.normalize(feats.float(), dim=-1)  # (2, D)

    def _vv_attention(self, blk, x: torch.Tensor) -> torch.Tensor:
        """V-V self-attention of ln_1(x) with the block's own value and output projections (DPAM); x is the block's
        input on the original stream (the released `x_res = self.attention(self.ln_1(x_ori))`)."""
        attn = blk.attn
        W = x.shape[-1]
        h = attn.num_heads
        bias = attn.in_proj_bias[2 * W:] if attn.in_proj_bias is not None else None
        v = F.linear(blk.ln_1(x), attn.in_proj_weight[2 * W:], bias)
        B, L, _ = v.shape
        v = v.view(B, L, h, W // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(v, v, v).transpose(1, 2).reshape(B, L, W)
        return attn.out_proj(out)

    def visual(self, x: torch.Tensor):
        o = self.options
        taps_idx = self.clip.tap_indices if o.layers == "nominal" else self.clip.tap_indices[-1:]
        h = self.clip.embed_image(x)
        side, taps = None, []
        for i, blk in enumerate(self.clip.blocks):
            if o.dpam and i + 1 >= o.dpam_start:
                side = (h if side is None else side) + self._vv_attention(blk, h)
            h = blk(h)
            if i in taps_idx:
                source = side if (o.dpam and side is not None) else h
                taps.append(source)
        if o.tap_bug:
            taps = [taps[-1]] * len(taps)
        return h, taps

    cacheable = True  # the vision path (with DPAM) is frozen: only the text prompts train

    def feature_spec(self) -> dict:
        o = self.options
        return {"dpam": o.dpam, "dpam_start": o.dpam_start, "layers": o.layers, "tap_bug": o.tap_bug}

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The normalised global feature (B, D) and patch features of the tapped layers (B, L, N, D)."""
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            final, taps = self.visual(x)
            cls = F.normalize(self.clip.project_no_ln(final[:, 0]).float(), dim=-1)  # released: no ln_post
            patches = torch.stack([F.normalize(self.clip.project(t[:, 1:]).float(), dim=-1) for t in taps], 1)
        return {"global": cls, "patches": patches}

    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        o = self.options
        cls, patches = features["global"], list(features["patches"].unbind(1))
        text = self.text_features()
        maps = layer_maps(patches, text, o.temperature, self.clip.grid, self.image_size, softmax_first=True,
                          align_corners=False)
        anomaly_map = torch.stack([m[:, 1] for m in maps]).sum(0)
        logits = cls @ text.T / o.temperature
        return Output(anomaly_map, logits.softmax(-1)[:, 1], {"layer_maps": maps, "logits": logits})

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        local = segmentation_loss(out.aux["layer_maps"], batch["mask"])
        image = F.cross_entropy(out.aux["logits"], batch["label"])
        return {"local": local, "image": image, "total": image + self.options.lambda_local * local}
