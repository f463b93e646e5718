"""WinCLIP (Jeong et al., CVPR 2023), zero-shot: training-free detection and segmentation, as anomalib's
re-implementation builds it (openvinotoolkit/anomalib @161bb3695, src/anomalib/models/image/winclip; the authors
released no code; parity: tests/parity/test_parity_winclip.py). WinCLIP+ (few-shot, normal reference images) is
out of scope.

    backbone   its own CLIP: open_clip ViT-B-16-plus-240 with laion400m_e31 weights at 240 px (a 15x15 grid), fp32
               (torch_model.py:47-48; the method's backbone defaults in methods/__init__.py). The kit's ViT-L/14@336 at
               518 px is a switch: WINCLIP_ON_KIT_BACKBONE lists the overrides.
    prompts    WinCLIP's compositional ensemble (prompts.WINCLIP_ENSEMBLE: 7 normal / 4 anomalous states x 21
               templates), the mean of the raw sentence features per side (torch_model.py `_collect_text_embeddings`);
               class name = the dataset's category name as is.
    windows    every s x s window of patch tokens (stride 1) with the CLS token, taken from the token sequence after
               the position embeddings, goes through ln_pre, the frozen transformer, ln_post and proj; its CLS output
               is the window embedding (`_get_window_embeddings`; ln_pre is per token, so selecting after it is the
               same). Scales (2, 3) on the 15x15 grid: 32 and 48 px of 240.
    scale rule on another grid the window sides keep their size relative to the image: s' = round(s * grid / 15)
               (5 and 7 on the kit's 37x37 grid); `scale_rule=absolute` keeps s patches on any grid.
    map        window score = softmax(cos(window, text) / 0.07)[anomalous]; each patch takes the harmonic mean of the
               scores of the windows covering it (utils.py `harmonic_aggregation`); the scales are fused with the
               image score broadcast over the grid by a harmonic mean over {image, scale 1, scale 2}
               (`_compute_zero_shot_scores`); upsampled bilinearly with align_corners=False; no smoothing.
    score      softmax(cos(CLS embedding, text) / 0.07)[anomalous] (`class_scores`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import WINCLIP_ENSEMBLE, EnsembleTextCache
from .base import ClipDetector, Output, upsample
from .common import prompt_class_names

# its own backbone is the method's default; these overrides run it on the kit's shared CLIP instead
WINCLIP_BACKBONE = {"model": "ViT-B-16-plus-240", "pretrained": "laion400m_e31", "image_size": 240, "layers": [12]}
WINCLIP_ON_KIT_BACKBONE = ("backbone.clip.model=ViT-L-14-336-quickgelu", "backbone.clip.pretrained=openai",
                           "backbone.clip.image_size=518")


@dataclass
class WinCLIPOptions:
    scales: tuple[int, ...] = (2, 3)  # window sides in patches of WinCLIP's own grid (reference_grid)
    # relative: on another grid a side becomes round(s * grid / reference_grid) patches (same share of the image);
    # absolute: s patches on any grid
    scale_rule: Literal["relative", "absolute"] = "relative"
    reference_grid: int = 15  # ViT-B/16+ at 240 px
    stride: int = 1
    temperature: float = 0.07
    prompt_names: Literal["raw", "mapped"] = "raw"  # raw: the dataset's category name, as anomalib; mapped: the kit's
    window_batch: int = 4096  # windows per pass through the tower (memory knob, no effect on results)


def grid_scales(scales: tuple[int, ...], grid: tuple[int, int], rule: str, reference_grid: int) -> tuple[int, ...]:
    """Window sides in patches on `grid`: as given (`absolute`) or rescaled to keep their share of the image."""
    if rule == "absolute":
        return tuple(int(s) for s in scales)
    if rule != "relative":
        raise ValueError(f"scale_rule={rule!r}: choose relative or absolute")
    side = min(grid)
    return tuple(max(1, min(side, math.floor(s * side / reference_grid + 0.5))) for s in scales)


def window_indices(grid: tuple[int, int], size: int, stride: int) -> torch.Tensor:
    """(W, size*size) patch indices of every size x size window on the grid, row-major."""
    h, w = grid
    idx = torch.arange(h * w).view(h, w)
    wins = idx.unfold(0, size, stride).unfold(1, size, stride)  # (nh, nw, size, size)
    return wins.reshape(-1, size * size)


def harmonic_aggregation(scores: torch.Tensor, windows: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Per patch, the harmonic mean of the scores (B, W) of the windows (W, k) that contain it (0 where none does)."""
    B = scores.shape[0]
    inv = torch.zeros(B, n_patches, device=scores.device, dtype=scores.dtype)
    count = torch.zeros(n_patches, device=scores.device, dtype=scores.dtype)
    flat = windows.reshape(-1).to(scores.device)
    inv.index_add_(1, flat, (1.0 / scores.clamp_min(1e-12)).repeat_interleave(windows.shape[1], dim=1))
    count.index_add_(0, flat, torch.ones_like(flat, dtype=scores.dtype))
    return count / inv.clamp_min(1e-12)


def harmonic_fusion(image_score: torch.Tensor, scale_maps: list[torch.Tensor]) -> torch.Tensor:
    """Cross-scale fusion: per patch, the harmonic mean of the image score (B,) and each scale's map (B, N)."""
    terms = torch.stack([image_score[:, None].expand_as(scale_maps[0]), *scale_maps])
    return len(terms) / terms.reciprocal().sum(0)


class WinCLIP(ClipDetector):
    name = "winclip"
    trainable = False

    def __init__(self, options: WinCLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        self.text = EnsembleTextCache(self.clip, WINCLIP_ENSEMBLE, backbone.precision)
        self.scales = grid_scales(options.scales, self.clip.grid, options.scale_rule, options.reference_grid)
        self.windows = [window_indices(self.clip.grid, s, options.stride) for s in self.scales]

    def class_names(self, batch: dict) -> list[str]:
        return prompt_class_names(batch, self.options.prompt_names, self.prompt_class_name)

    def window_embeddings(self, tokens: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """tokens: the sequence entering block 0 (B, 1 + N, W) -> window embeddings (B, n_windows, D), normalised."""
        B = tokens.shape[0]
        out = []
        for chunk in windows.split(max(1, self.options.window_batch // B)):
            idx = chunk.to(tokens.device) + 1  # skip CLS
            seq = torch.cat([tokens[:, :1].unsqueeze(1).expand(-1, len(chunk), -1, -1), tokens[:, idx]], 2)
            seq = seq.flatten(0, 1)  # (B * w, 1 + k, W)
            final, _ = self.clip.run_blocks(seq, taps=[])
            out.append(self.clip.project(final[:, 0]).view(B, len(chunk), -1))
        return F.normalize(torch.cat(out, 1).float(), dim=-1)

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        text = self.text(self.class_names(batch)).to(x.device)  # (B, 2, D), normalised
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            tokens = self.clip.embed_image(x)
            final, _ = self.clip.run_blocks(tokens, taps=[])
            cls = F.normalize(self.clip.project(final[:, 0]).float(), dim=-1)
            n = self.clip.grid[0] * self.clip.grid[1]
            scale_maps = []
            for windows in self.windows:
                emb = self.window_embeddings(tokens, windows)
                prob = (emb @ text.transpose(1, 2) / o.temperature).softmax(-1)[..., 1]  # (B, W)
                scale_maps.append(harmonic_aggregation(prob, windows, n))
        score = ((cls[:, None] @ text.transpose(1, 2))[:, 0] / o.temperature).softmax(-1)[:, 1]
        patch_map = harmonic_fusion(score, scale_maps).view(-1, *self.clip.grid)
        anomaly_map = upsample(patch_map, self.image_size, align_corners=False)
        return Output(anomaly_map, score, {"scale_maps": scale_maps})
