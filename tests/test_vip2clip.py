"""ViP2-CLIP (ViP2-CLIP.md): ICA prompts, FGP, UTPA scores and maps, losses, each against a formula written out here
(the end-to-end comparison with the authors' code is tests/parity/test_parity_vip2clip.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import SIZE, random_batch, tiny_backbone
from ssvp_core.config import TrainConfig, load_config
from ssvp_core.methods.common import layer_maps
from ssvp_core.methods.losses import dice, multiclass_focal
from ssvp_core.methods.vip2clip import FGP, ViP2CLIP, ViP2CLIPOptions, utpa_image_logits


def make(**o):
    torch.manual_seed(0)
    return ViP2CLIP(ViP2CLIPOptions(**o), tiny_backbone(), SIZE)


def batch(n=3):
    return random_batch(n, seed=1, classes=("a",), defect="x", box=(20, 40, 20, 50))


def reference_text_features(m, f, normal_word="damaged"):
    """ICA + text tower written out: "[SOT] v_1..v_7 <word> z_1..z_3 [EOT]" with z_j = o_j + MLP_j(f + b), causal
    mask, ln_final at the end-of-text position (12), text projection, L2 norm. Rows: [normal, abnormal] per image."""
    clip = m.clip
    ids = clip.tokenize([" ".join(["X"] * 7 + [normal_word] + ["X"] * 3), " ".join(["X"] * 7 + ["damaged"] + ["X"] * 3)])
    assert ids.argmax(-1).tolist() == [12, 12]  # EOT after SOT + 7 + word + 3
    emb = clip.model.token_embedding(ids)
    x_in = f + m.meta_net.bias
    a = torch.stack([mlp[2](torch.relu(x_in @ mlp[0].weight.T + mlp[0].bias)) for mlp in m.meta_net.mlps], 1)
    z = m.cls_ctx[None] + a  # (B, 3, W)
    out = []
    for i in range(f.shape[0]):
        seqs = emb.clone()
        seqs[0, 1:8], seqs[1, 1:8] = m.ctx_pos, m.ctx_neg  # slot order: context, then the word, then z
        seqs[:, 9:12] = z[i]
        x = seqs + clip.model.positional_embedding
        causal = torch.full((77, 77), float("-inf")).triu(1)
        for blk in clip.text_blocks:
            x = blk(x, attn_mask=causal)
        pooled = clip.model.ln_final(x)[:, 12]
        out.append(F.normalize(pooled @ clip.model.text_projection, dim=-1))
    return torch.stack(out)


def test_ica_prompts_slot_order_causal_mask_and_eot():
    m = make()
    assert m.templates[0] == m.templates[1] == "X X X X X X X damaged X X X"  # released default: "damaged" twice
    assert m.meta_net.mlps[0][0].out_features == m.clip.embed_dim // 2  # 768 -> 384 -> 768 for ViT-L
    f = F.normalize(torch.randn(2, m.clip.embed_dim), dim=-1)
    with torch.no_grad():
        ours, ref = m.text_features(f), reference_text_features(m, f)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)  # different images, different prompts (Meta-Net)
    assert not torch.allclose(ours[:, 0], ours[:, 1], atol=1e-3)  # same words, different context vectors


def test_paper_variant_uses_good_for_the_normal_prompt():
    m = make(normal_word="good")
    assert m.templates == ["X X X X X X X good X X X", "X X X X X X X damaged X X X"]
    f = F.normalize(torch.randn(1, m.clip.embed_dim), dim=-1)
    with torch.no_grad():
        assert torch.allclose(m.text_features(f), reference_text_features(m, f, "good"), atol=1e-5)


def test_released_defaults_in_the_paper_profile():
    cfg = load_config("paper", "vip2clip")
    assert cfg.backbone.precision == "fp32" and cfg.backbone.clip.pos_embed_interpolation == "bilinear"
    assert ViP2CLIPOptions().normal_word == "damaged" and ViP2CLIPOptions().top_k == 50
    assert load_config("paper", "vip2clip", ["backbone.precision=bf16"]).backbone.precision == "bf16"  # the switch


def test_fgp_is_unscaled_multihead_attention_without_residual():
    torch.manual_seed(3)
    fgp = FGP(8, 2)
    text, patches = torch.randn(1, 2, 8), torch.randn(1, 5, 8)
    q, k, v = fgp.q(text), fgp.k(patches), fgp.v(patches)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        heads.append((q[..., sl] @ k[..., sl].transpose(1, 2)).softmax(-1) @ v[..., sl])  # no / sqrt(4)
    expected = F.normalize(fgp.o(torch.cat(heads, -1)), dim=-1)
    assert torch.allclose(fgp(text, patches), expected, atol=1e-6)


def test_utpa_image_logits_gather_raw_cosines_of_the_top_k_most_abnormal_patches():
    rng = np.random.default_rng(0)
    B, N, K, tau = 2, 30, 4, 0.07
    sims = [rng.uniform(-0.3, 0.3, (B, N, 2)) for _ in range(3)]
    expected = np.zeros((B, 2))
    for b in range(B):
        chosen = []
        for s in sims:
            p_abnormal = np.exp(s[b, :, 1] / tau) / np.exp(s[b] / tau).sum(-1)
            chosen.append(s[b, np.argsort(-p_abnormal)[:K]])  # raw cosines of both columns, not probabilities
        expected[b] = np.concatenate(chosen).mean(0) / tau
    ours = utpa_image_logits([torch.tensor(s) for s in sims], K, tau)
    assert np.allclose(ours.numpy(), expected, atol=1e-9)
    # ranking by P(abnormal) differs from ranking by the abnormal cosine alone: pin the first
    by_cosine = np.stack([np.concatenate([s[b, np.argsort(-s[b, :, 1])[:K]] for s in sims]).mean(0) / tau for b in range(B)])
    assert not np.allclose(expected, by_cosine)


def test_utpa_map_softmax_on_the_grid_then_bilinear_upsampling():
    torch.manual_seed(1)
    p = F.normalize(torch.randn(1, 16, 8), dim=-1)
    t = F.normalize(torch.randn(1, 2, 8), dim=-1)
    (ours,) = layer_maps([p], t, 0.07, (4, 4), 12, softmax_first=True, align_corners=False)
    grid = ((p @ t.transpose(1, 2)) / 0.07).softmax(-1).transpose(1, 2).reshape(1, 2, 4, 4)
    expected = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, expected, atol=1e-6)
    other = F.interpolate(((p @ t.transpose(1, 2)) / 0.07).transpose(1, 2).reshape(1, 2, 4, 4), size=(12, 12),
                          mode="bilinear", align_corners=False).softmax(1)
    assert (ours - other).abs().max() > 1e-3  # the order matters, and ours is the released one


def test_forward_map_and_score_follow_utpa():
    m = make(top_k=5).eval()
    with torch.no_grad():
        out = m(batch())
    maps = out.aux["layer_maps"]
    assert len(maps) == 4 and maps[0].shape == (3, 2, SIZE, SIZE)
    expected_map = torch.stack([(mm[:, 1] + 1 - mm[:, 0]) / 2 for mm in maps]).mean(0)
    assert torch.allclose(out.anomaly_map, expected_map, atol=1e-6)
    assert torch.allclose(out.score, torch.softmax(out.aux["logits"], -1)[:, 1])


def toolbox_focal(probs, target, gamma=2.0, smooth=1e-5):
    """Loss_ToolBox FocalLoss (AnomalyCLIP/ViP2-CLIP loss.py) written out: alpha 1, label clamp, mean over pixels."""
    C = probs.shape[1]
    p = probs.detach().permute(0, 2, 3, 1).reshape(-1, C).double()
    one_hot = torch.zeros_like(p).scatter_(1, target.reshape(-1, 1).long(), 1).clamp(smooth / (C - 1), 1 - smooth)
    pt = (one_hot * p).sum(1) + smooth
    return float((-(1 - pt) ** gamma * pt.log()).mean())


def binary_dice(p, g):
    p, g = p.detach().reshape(p.shape[0], -1).double(), g.reshape(g.shape[0], -1).double()
    return float((1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean())


@pytest.mark.parametrize("C", [2, 5])
def test_focal_and_dice_match_the_loss_toolbox_formulas(C):
    g = torch.Generator().manual_seed(C)
    probs = torch.rand(2, C, 6, 7, generator=g).softmax(1)
    target = torch.randint(0, C, (2, 6, 7), generator=g)
    assert abs(float(multiclass_focal(probs, target)) - toolbox_focal(probs, target)) < 1e-6
    mask = (target > 0).float()
    assert abs(float(dice(probs[:, 1], mask)) - binary_dice(probs[:, 1], mask)) < 1e-6


def test_loss_is_focal_plus_two_dice_per_layer_plus_image_ce():
    m = make().train()
    b = batch()
    out = m(b)
    parts = m.loss(out, b)
    pixel = sum(toolbox_focal(mm, b["mask"]) + binary_dice(mm[:, 1], b["mask"]) + binary_dice(mm[:, 0], 1 - b["mask"])
                for mm in out.aux["layer_maps"])
    logits = out.aux["logits"].detach().double()
    image = float(-(logits.log_softmax(-1)[torch.arange(3), b["label"]]).mean())
    assert abs(float(parts["pixel"].detach()) - pixel) < 1e-5 and abs(float(parts["image"].detach()) - image) < 1e-5
    assert torch.allclose(parts["total"], parts["pixel"] + parts["image"])


def test_learning_rate_groups():
    m = make().train()
    b = batch()
    m.loss(m(b), b)["total"].backward()
    assert m.ctx_pos.grad.abs().sum() > 0 and m.fgp.q.weight.grad.abs().sum() > 0 and m.meta_net.mlps[0][0].weight.grad is not None
    groups = {g["name"]: g for g in m.param_groups(TrainConfig(lr_prompt=1e-3, lr_head=1e-5))}
    assert groups["prompts"]["lr"] == 1e-3 and groups["heads"]["lr"] == 1e-5
    fgp_ids = {id(p) for p in m.fgp.parameters()}
    assert fgp_ids == {id(p) for p in groups["heads"]["params"]}  # FGP trains 100x slower, as the released code
