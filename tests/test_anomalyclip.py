"""AnomalyCLIP on the tiny CLIP: the released DPAM dual path, the map and image-score rules written out, the layer
switch and tap bug, what trains, and bf16. Parity with the authors' code: tests/parity/test_parity_anomalyclip.py."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import SIZE, random_batch, tiny_backbone
from ssvp_core.methods.anomalyclip import AnomalyCLIP, AnomalyCLIPOptions


def batch(n=2, seed=0):
    return random_batch(n, seed, defect="x", box=(40, 60, 40, 70))


def released_vv_attention(blk, x: torch.Tensor) -> torch.Tensor:
    """AnomalyCLIP_lib/AnomalyCLIP.py `Attention` with q and k replaced by v: per head
    softmax(v v^T * head_dim^-0.5) v, then the block's out_proj; v = ln_1(x) W_v + b_v from the block's in_proj."""
    B, L, W = x.shape
    heads = blk.attn.num_heads
    d = W // heads
    v = blk.ln_1(x) @ blk.attn.in_proj_weight[2 * W:].T + blk.attn.in_proj_bias[2 * W:]
    v = v.view(B, L, heads, d).transpose(1, 2)
    out = ((v @ v.transpose(-1, -2)) * d ** -0.5).softmax(-1) @ v
    return out.transpose(1, 2).reshape(B, L, W) @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias


def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """1-D bilinear resampling with align_corners=False as a matrix: source coordinate
    max(0, (i + 0.5) * n_in / n_out - 0.5), the two nearest inputs (the upper one clamped) weighted linearly."""
    A = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        i0 = int(src)
        frac = src - i0
        A[i, min(i0, n_in - 1)] += 1 - frac
        A[i, min(i0 + 1, n_in - 1)] += frac
    return A


def test_bilinear_matrix_written_out_for_a_2x2_grid():
    A = bilinear_matrix(2, 4)
    assert torch.allclose(A, torch.tensor([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], dtype=torch.float64))


def test_anomalyclip_dpam_side_stream_follows_the_released_dual_path():
    """DPAM on blocks 2-4 (three V-V blocks): the side stream starts as the input of block 2 and, in every DPAM
    block, adds V-V attention of ln_1 of the ORIGINAL stream's block input (`x_res = attention(ln_1(x_ori))`,
    `x += x_res`, no FFN); the original stream runs the unchanged blocks."""
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2, layers="nominal"), tiny_backbone(), SIZE).eval()
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    blocks = det.clip.blocks
    with torch.no_grad():
        final, taps = det.visual(x)
        h = blocks[0](det.clip.embed_image(x))
        expected, wrong = [h], [h]
        side = side_wrong = h
        for blk in blocks[1:]:
            side = side + released_vv_attention(blk, h)
            side_wrong = side_wrong + released_vv_attention(blk, side_wrong)  # the rule audit #1 found (its own stream)
            h = blk(h)
            expected.append(side)
            wrong.append(side_wrong)
    assert len(taps) == 4
    for got, want in zip(taps, expected):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(final, h, atol=1e-6)  # the original stream is untouched
    assert (expected[-1] - wrong[-1]).abs().max() > 1e-2  # two or more DPAM blocks tell the rules apart


def test_anomalyclip_without_dpam_taps_the_original_stream():
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam=False, layers="nominal"), tiny_backbone(), SIZE).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        final, taps = det.visual(x)
        h = det.clip.embed_image(x)
        for blk, tap in zip(det.clip.blocks, taps):
            h = blk(h)
            assert torch.allclose(tap, h, atol=1e-6)


def test_anomalyclip_map_and_image_score_rules_written_out():
    """map = sum over tapped layers of bilinear(align_corners=False)(softmax(<p, t> / 0.07))[abnormal], p the
    normalised ln_post(token) @ proj of the side stream; score = softmax(<g, t> / 0.07)[abnormal], g the normalised
    final original CLS @ proj WITHOUT ln_post (test.py, AnomalyCLIP.py `x_ori[0, :, :] @ self.proj`)."""
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2, layers="nominal"), tiny_backbone(), SIZE).eval()
    with torch.no_grad():
        det.ctx_abnormal.normal_(0, 0.5)  # make normal and abnormal text differ clearly
        b = batch()
        out = det(b)
        final, taps = det.visual(b["image"])
        text = det.text_features().double()
        visual = det.clip.model.visual
        n = det.clip.grid[0]
        A = bilinear_matrix(n, SIZE)
        expected = torch.zeros(2, SIZE, SIZE, dtype=torch.float64)
        for t in taps:
            p = visual.ln_post(t[:, 1:]).double() @ visual.proj.double()
            p = p / p.norm(dim=-1, keepdim=True)
            prob = ((p @ text.T) / 0.07).softmax(-1)[..., 1].reshape(2, n, n)
            expected += A @ prob @ A.T
        g = final[:, 0].double() @ visual.proj.double()
        g = g / g.norm(dim=-1, keepdim=True)
        score = ((g @ text.T) / 0.07).softmax(-1)[:, 1]
        with_ln = visual.ln_post(final[:, 0]).double() @ visual.proj.double()
        score_ln = ((F.normalize(with_ln, dim=-1) @ text.T) / 0.07).softmax(-1)[:, 1]
    assert torch.allclose(out.anomaly_map.double(), expected, atol=1e-5)
    assert torch.allclose(out.score.double(), score, atol=1e-6)
    # The tiny tower's ln_post is close to a plain normalisation, so the rule it tells apart is measured against
    # the tolerance above: with ln_post the score would fail that assertion by at least 10x.
    assert (score - score_ln).abs().max() > 1e-5


def test_anomalyclip_loss_is_ce_plus_four_times_focal_and_two_dice_per_layer():
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2, layers="nominal"), tiny_backbone(), SIZE).train()
    b = batch()
    out = det(b)
    parts = det.loss(out, b)
    g = b["mask"]
    local = 0
    for m in out.aux["layer_maps"]:  # train.py: FocalLoss + BinaryDice(abnormal, gt) + BinaryDice(normal, 1 - gt)
        pt = torch.where(g > 0.5, m[:, 1] * (1 - 1e-5) + m[:, 0] * 1e-5, m[:, 0] * (1 - 1e-5) + m[:, 1] * 1e-5) + 1e-5
        local = local + (-(1 - pt) ** 2 * pt.log()).mean()
        for p, y in ((m[:, 1], g), (m[:, 0], 1 - g)):
            local = local + (1 - (2 * (p * y).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + y.flatten(1).sum(1) + 1)).mean()
    image = -out.aux["logits"].log_softmax(-1)[torch.arange(2), b["label"]].mean()
    assert torch.allclose(parts["local"], local, rtol=1e-5)
    assert torch.allclose(parts["image"], image, rtol=1e-5)
    assert torch.allclose(parts["total"], image + 4 * local, rtol=1e-5)


def test_anomalyclip_layers_switch_and_tap_bug():
    b = batch()
    published = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2), tiny_backbone(), SIZE).eval()
    nominal = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2, layers="nominal"), tiny_backbone(), SIZE).eval()
    buggy = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2, layers="nominal", tap_bug=True), tiny_backbone(), SIZE).eval()
    with torch.no_grad():
        _, taps_p = published.visual(b["image"])
        _, taps_n = nominal.visual(b["image"])
        _, taps_b = buggy.visual(b["image"])
    assert len(taps_p) == 1 and len(taps_n) == 4
    assert not torch.allclose(taps_n[0], taps_n[-1]) and all(torch.equal(t, taps_b[-1]) for t in taps_b)
    assert torch.equal(taps_p[0], taps_n[-1])


@pytest.mark.parametrize("rounding", ["fp16", "none"])
def test_anomalyclip_deep_text_prompts_replace_positions_one_to_four(rounding):
    """Before text block j >= 1 the 4 tokens after SOT are overwritten by deep_text[j - 1], rounded to the nearest
    float16 as the release's `.half()` rounds them (NumPy's IEEE conversion as reference) or unrounded; block 0 is
    untouched."""
    det = AnomalyCLIP(AnomalyCLIPOptions(prompt_rounding=rounding), tiny_backbone(), SIZE)
    hook = det._text_hook()
    x = torch.randn(2, 77, det.clip.text_width)
    assert torch.equal(hook(0, x), x)
    y = hook(1, x)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 5:], x[:, 5:])
    expected = det.deep_text[0].detach().numpy()
    if rounding == "fp16":
        expected = expected.astype(np.float16).astype(np.float32)
    assert torch.equal(y[:, 1:5], torch.from_numpy(expected).expand(2, -1, -1))
    assert (rounding == "fp16") == (not torch.equal(y[:, 1:5], det.deep_text[0].detach().expand(2, -1, -1)))
    assert det.deep_text.shape[0] == len(det.clip.text_blocks) - 1  # depth 9 truncated to the tower


def test_anomalyclip_trains_prompts_only():
    det = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2), tiny_backbone(), SIZE).train()
    b = batch()
    det.loss(det(b), b)["total"].backward()
    assert {n for n, p in det.named_parameters() if p.requires_grad} == {"ctx_normal", "ctx_abnormal", "deep_text"}
    assert all(p.grad.abs().sum() > 0 for p in (det.ctx_normal, det.ctx_abnormal, det.deep_text))


def test_anomalyclip_bf16_forward_and_training_step():
    fp32 = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2), tiny_backbone(), SIZE)  # published: the last layer
    backbone = dataclasses.replace(tiny_backbone(), precision="bf16")
    bf16 = AnomalyCLIP(AnomalyCLIPOptions(dpam_start=2), backbone, SIZE)
    bf16.load_state_dict(fp32.state_dict())
    b = batch()
    with torch.no_grad():
        ref = fp32.eval()(b)
    out = bf16.train()(b)
    assert (out.anomaly_map - ref.anomaly_map).abs().max() <= 2e-2
    assert (out.score - ref.score).abs().max() <= 2e-2
    parts = bf16.loss(out, b)
    assert torch.isfinite(parts["total"])
    optimizer = torch.optim.Adam(bf16.prompt_parameters(), lr=1e-3, betas=(0.5, 0.999))
    parts["total"].backward()
    before = bf16.ctx_abnormal.detach().clone()
    optimizer.step()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in bf16.prompt_parameters())
    assert not torch.equal(before, bf16.ctx_abnormal)
