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


def balanced_focal(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """Class-balanced focal loss (Bayes-PFL loss.py:27-45): l = -(1 - p_t)^g log(p_t + eps) on class probabilities
    (B, C, H, W) against labels (B, H, W); mean over the foreground pixels of the batch + mean over the background."""
    one_hot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    pt = (probs * one_hot).sum(1)
    loss = -(1 - pt) ** gamma * torch.log(pt + eps)
    fg = (target > 0).to(loss.dtype)
    return (loss * fg).sum() / (fg.sum() + eps) + (loss * (1 - fg)).sum() / ((1 - fg).sum() + eps)


def batch_dice(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Dice loss pooled over the whole batch (Bayes-PFL loss.py:53-68): 1 - (2 sum(p g) + eps) / (sum p + sum g + eps)."""
    g = target.to(prob.dtype)
    return 1 - (2 * (prob * g).sum() + eps) / (prob.sum() + g.sum() + eps)


def orthogonality_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over (B, P, P) of the squared off-diagonal cosines of P embeddings per sample (Bayes-PFL loss.py:7-20)."""
    e = F.normalize(embeddings, dim=-1)
    cos2 = (e @ e.transpose(-1, -2)) ** 2
    eye = torch.eye(e.shape[-2], device=e.device, dtype=e.dtype)
    return (cos2 * (1 - eye)).mean()


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss on logits (Lin et al., ICCV 2017, Eq. 5; torchvision.ops.sigmoid_focal_loss with
    reduction="none"): alpha_t (1 - p_t)^gamma BCE(logit, y), p_t = p y + (1 - p)(1 - y), alpha_t = alpha y +
    (1 - alpha)(1 - y); alpha < 0 drops the weighting."""
    y = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss
