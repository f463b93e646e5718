"""`reference`: a training-free pixel-statistics scorer with no backbone (not a method of any paper).

It flags pixels whose colour departs from their neighbourhood after removing slow lighting changes:
map = || x - blur(x, large) || smoothed; score = mean of the top 1% of the map. It is a floor for the smoke
reports and a sanity check that the synthetic defects are not trivially visible to low-level statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Detector, Output


@dataclass
class ReferenceOptions:
    background_sigma: float = 0.08  # as a fraction of the image size
    top_fraction: float = 0.01


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect") if pad == radius else F.pad(x, (radius,) * 4, mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


class ReferenceScorer(Detector):
    name = "reference"
    trainable = False

    def forward(self, batch: dict) -> Output:
        x = batch["image"]
        sigma = self.options.background_sigma * x.shape[-1]
        residual = x - gaussian_blur(x, sigma)
        amap = gaussian_blur(residual.norm(dim=1, keepdim=True), 1.0)[:, 0]
        k = max(1, int(self.options.top_fraction * amap[0].numel()))
        score = amap.flatten(1).topk(k, dim=1).values.mean(1)
        return Output(amap, score)
