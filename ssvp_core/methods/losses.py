"""Losses shared by the methods (focal and dice on probability maps, as in AnomalyCLIP / Bayes-PFL)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_focal(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """SSVP Eq. 20: -mean[y (1-p)^g log p + (1-y) p^g log(1-p)] for a probability map p."""
    p = prob.clamp(eps, 1 - eps)
    y = target.to(p.dtype)
    loss = -(y * (1 - p) ** gamma * torch.log(p) + (1 - y) * p ** gamma * torch.log(1 - p))
    return loss.mean()


def multiclass_focal(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on class probabilities (B, C, H, W) against integer labels (B, H, W), mean over pixels
    (the AnomalyCLIP / Loss_ToolBox form with label smoothing `smooth`)."""
    C = probs.shape[1]
    one_hot = F.one_hot(target.long(), C).permute(0, 3, 1, 2).to(probs.dtype)
    one_hot = one_hot.clamp(smooth / (C - 1) if C > 1 else 0.0, 1.0 - smooth)
    pt = (one_hot * probs).sum(1) + smooth
    return (-(1 - pt) ** gamma * torch.log(pt)).mean()


def dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(p g) + 1) / (sum p + sum g + 1), per sample, mean over the batch."""
    p = prob.flatten(1)
    g = target.flatten(1).to(p.dtype)
    return (1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean()
