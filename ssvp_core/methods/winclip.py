"""WinCLIP (Jeong et al., CVPR 2023): training-free zero-shot detection and segmentation.

    prompts    compositional prompt ensemble (state words x templates), averaged per state (prompts.py).
    windows    multi-scale window embeddings: for every s x s window of patch tokens (stride 1) the window's tokens
               and the CLS token alone go through the frozen vision tower, whose CLS output (ln_post, proj) is the
               window embedding; scales (2, 3) as in anomalib's implementation.
    map        window score = softmax(cos / 0.07)[anomalous]; each patch takes the harmonic mean of the scores of the
               windows covering it; scale maps are averaged and upsampled.
    score      zero-shot image score from the CLS embedding against the two text features.

WinCLIP's own backbone is ViT-B/16+ at 240 px; here it runs on the kit's CLIP (ViT-L/14-336 at 518 in the paper
profile, as SSVP's Table 1 compares methods on one backbone); `backbone.clip.*` selects another.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..prompts import EnsembleTextCache
from .base import ClipDetector, Output, upsample


@dataclass
class WinCLIPOptions:
    scales: tuple[int, ...] = (2, 3)  # window sides in patches
    stride: int = 1
    temperature: float = 0.07
    window_batch: int = 4096  # windows per pass through the tower (memory knob, no effect on results)


def window_indices(grid: tuple[int, int], size: int, stride: int) -> torch.Tensor:
    """(W, size*size) patch indices of every size x size window on the grid, row-major."""
    h, w = grid
    idx = torch.arange(h * w).view(h, w)
    wins = idx.unfold(0, size, stride).unfold(1, size, stride)  # (nh, nw, size, size)
    return wins.reshape(-1, size * size)


def harmonic_aggregation(scores: torch.Tensor, windows: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Per patch, the harmonic mean of the scores (B, W) of the windows (W, k) that contain it."""
    B = scores.shape[0]
    inv = torch.zeros(B, n_patches, device=scores.device, dtype=scores.dtype)
    count = torch.zeros(n_patches, device=scores.device, dtype=scores.dtype)
    flat = windows.reshape(-1).to(scores.device)
    inv.index_add_(1, flat, (1.0 / scores.clamp_min(1e-12)).repeat_interleave(windows.shape[1], dim=1))
    count.index_add_(0, flat, torch.ones_like(flat, dtype=scores.dtype))
    return count / inv.clamp_min(1e-12)


class WinCLIP(ClipDetector):
    name = "winclip"
    trainable = False

    def __init__(self, options: WinCLIPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        self.text = EnsembleTextCache(self.clip)
        self.windows = {s: window_indices(self.clip.grid, s, options.stride) for s in options.scales}

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
        text = self.text(self.class_names(batch)).to(x.device)  # (B, 2, D)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            tokens = self.clip.embed_image(x)
            final, _ = self.clip.run_blocks(tokens, taps=[])
            cls = F.normalize(self.clip.project(final[:, 0]).float(), dim=-1)
            n = self.clip.grid[0] * self.clip.grid[1]
            scale_maps = []
            for s, windows in self.windows.items():
                emb = self.window_embeddings(tokens, windows)
                prob = (emb @ text.transpose(1, 2) / o.temperature).softmax(-1)[..., 1]  # (B, W)
                scale_maps.append(harmonic_aggregation(prob, windows, n))
        patch_map = torch.stack(scale_maps).mean(0).view(-1, *self.clip.grid)
        score = (cls[:, None] @ text.transpose(1, 2))[:, 0] / o.temperature
        return Output(upsample(patch_map, self.image_size), score.softmax(-1)[:, 1], {"scale_maps": scale_maps})
