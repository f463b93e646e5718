"""The shared map losses against their reference formulas written out pixel by pixel: `multiclass_focal` is
Loss_ToolBox's FocalLoss as AnomalyCLIP's loss.py uses it (alpha 1, gamma 2, smooth 1e-5: one-hot clamped to
[smooth / (C - 1), 1 - smooth], pt = sum_c onehot_c p_c + smooth, loss = -(1 - pt)^2 log pt, mean over pixels);
`dice` is AnomalyCLIP's BinaryDiceLoss (1 - (2 sum pg + 1) / (sum p + sum g + 1) per sample, mean over samples)."""
import math

import torch

from ssvp_core.methods.losses import dice, multiclass_focal


def focal_reference(probs, target, gamma=2.0, smooth=1e-5) -> float:
    B, C, H, W = probs.shape
    lo, hi = smooth / (C - 1), 1.0 - smooth
    total = 0.0
    for b in range(B):
        for y in range(H):
            for x in range(W):
                label = int(target[b, y, x])
                pt = sum(min(max(1.0 if c == label else 0.0, lo), hi) * float(probs[b, c, y, x]) for c in range(C)) + smooth
                total += -((1 - pt) ** gamma) * math.log(pt)
    return total / (B * H * W)


def dice_reference(prob, target) -> float:
    per_sample = []
    for p, g in zip(prob.tolist(), target.tolist()):
        p, g = sum(p, []), sum(g, [])
        inter = sum(a * b for a, b in zip(p, g))
        per_sample.append(1 - (2 * inter + 1) / (sum(p) + sum(g) + 1))
    return sum(per_sample) / len(per_sample)


def test_multiclass_focal_one_pixel_by_hand():
    probs = torch.tensor([0.2, 0.8], dtype=torch.float64).view(1, 2, 1, 1)
    pt = 1e-5 * 0.2 + (1 - 1e-5) * 0.8 + 1e-5  # label 1: clamped one-hot (1e-5, 1 - 1e-5)
    expected = -((1 - pt) ** 2) * math.log(pt)
    assert math.isclose(float(multiclass_focal(probs, torch.ones(1, 1, 1))), expected, rel_tol=1e-12)


def test_multiclass_focal_matches_loss_toolbox_on_small_maps():
    g = torch.Generator().manual_seed(0)
    for C in (2, 3):
        probs = torch.rand(2, C, 3, 4, generator=g, dtype=torch.float64).softmax(1)
        target = torch.randint(0, C, (2, 3, 4), generator=g).to(torch.float64)  # AnomalyCLIP passes a float mask
        assert math.isclose(float(multiclass_focal(probs, target)), focal_reference(probs, target), rel_tol=1e-10)


def test_dice_matches_binary_dice_loss_on_small_maps():
    prob = torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[0.2, 0.1], [0.3, 0.4]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    # by hand: sample 1: (2 * 1.5 + 1) / (2 + 2 + 1) = 0.8; sample 2: 1 / (1 + 0 + 1) = 0.5
    assert math.isclose(float(dice(prob, target)), ((1 - 0.8) + (1 - 0.5)) / 2, rel_tol=1e-12)
    g = torch.Generator().manual_seed(1)
    prob = torch.rand(3, 5, 4, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 5, 4, generator=g) > 0.6).to(torch.float64)
    assert math.isclose(float(dice(prob, target)), dice_reference(prob, target), rel_tol=1e-12)
