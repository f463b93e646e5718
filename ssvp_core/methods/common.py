"""Pieces several methods share: per-layer softmax maps of patch-text similarities, the segmentation loss and the
class names of hand-written prompts."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.registry import prompt_name
from .losses import dice, multiclass_focal


def layer_maps(patches: list[torch.Tensor], text: torch.Tensor, temperature: float, grid: tuple[int, int], size: int,
               softmax_first: bool = True, align_corners: bool = True) -> list[torch.Tensor]:
    """For each layer's normalised patch features (B, N, D) against text features (B, C, D) or (C, D):
    class probabilities (B, C, size, size). `softmax_first`: soft-max on the grid then upsample (AnomalyCLIP,
    ViP2-CLIP) or upsample the logits then soft-max (APRIL-GAN)."""
    out = []
    for p in patches:
        logits = (p @ (text.transpose(-1, -2))) / temperature  # (B, N, C)
        logits = logits.transpose(1, 2).reshape(p.shape[0], -1, *grid)
        if softmax_first:
            m = F.interpolate(logits.softmax(1), size=(size, size), mode="bilinear", align_corners=align_corners)
        else:
            m = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=align_corners).softmax(1)
        out.append(m)
    return out


def segmentation_loss(maps: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Sum over layers of focal + dice(abnormal channel, mask) + dice(normal channel, 1 - mask) (AnomalyCLIP's form)."""
    total = 0
    for m in maps:
        total = total + multiclass_focal(m, mask) + dice(m[:, 1], mask) + dice(m[:, 0], 1 - mask)
    return total


def prompt_class_names(batch: dict, mode: str, run_wide: str = "") -> list[str]:
    """Class names for hand-written prompts: one run-wide name when given (RunConfig.prompt_class_name), else the
    dataset's class folder names as they are (`raw`: APRIL-GAN's meta.json names, anomalib's category) or the kit's
    mapped names (`mapped`: data.registry.prompt_name, Bayes-PFL's mapping)."""
    if run_wide:
        return [run_wide] * len(batch["cls"])
    if mode == "raw":
        return [str(c) for c in batch["cls"]]
    if mode == "mapped":
        return [prompt_name(c) for c in batch["cls"]]
    raise ValueError(f"prompt_names={mode!r}: choose raw or mapped")
