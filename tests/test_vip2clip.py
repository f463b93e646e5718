"""ViP2-CLIP (ViP2-CLIP.md): image-conditioned prompts, FGP, UTPA scores and maps, losses."""
import torch
import torch.nn.functional as F

from tiny import SIZE, random_batch, tiny_backbone
from ssvp_core.config import TrainConfig
from ssvp_core.methods.vip2clip import FGP, ViP2CLIP, ViP2CLIPOptions


def make(**o):
    torch.manual_seed(0)
    return ViP2CLIP(ViP2CLIPOptions(**o), tiny_backbone(), SIZE)


def batch(n=3):
    return random_batch(n, seed=1, classes=("a",), defect="x", box=(20, 40, 20, 50))


def test_prompts_are_image_conditioned_and_class_name_free():
    m = make()
    assert all("X" in t and "a" not in t.split() for t in m.templates)
    assert m.templates[0].split().count("X") == 7 + 3 and " good " in m.templates[0] and " damaged " in m.templates[1]
    f = F.normalize(torch.randn(2, m.clip.embed_dim), dim=-1)
    text = m.text_features(f)
    assert text.shape == (2, 2, m.clip.embed_dim) and torch.allclose(text.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    assert not torch.allclose(text[0], text[1])  # different images, different prompts (Meta-Net)


def test_released_code_bug_variant_uses_damaged_twice():
    assert make(normal_word="damaged").templates[0].split().count("damaged") == 1
    assert "good" not in make(normal_word="damaged").templates[0]


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


def test_utpa_score_and_map():
    m = make(top_k=5).eval()
    with torch.no_grad():
        out = m(batch())
    maps = out.aux["layer_maps"]
    assert len(maps) == 4 and maps[0].shape == (3, 2, SIZE, SIZE)
    assert torch.allclose(maps[0].sum(1), torch.ones(3, SIZE, SIZE), atol=1e-5)  # softmax before upsampling
    assert torch.allclose(out.anomaly_map, torch.stack([mm[:, 1] for mm in maps]).mean(0), atol=1e-6)
    assert torch.allclose(out.score, (out.aux["logits"]).softmax(-1)[:, 1])
    assert out.anomaly_map.shape == (3, SIZE, SIZE)


def test_loss_and_learning_rate_groups():
    m = make().train()
    b = batch()
    parts = m.loss(m(b), b)
    assert set(parts) == {"pixel", "image", "total"} and torch.isfinite(parts["total"])
    parts["total"].backward()
    assert m.ctx_pos.grad.abs().sum() > 0 and m.fgp.q.weight.grad.abs().sum() > 0 and m.meta_net.mlps[0][0].weight.grad is not None
    groups = {g["name"]: g for g in m.param_groups(TrainConfig(lr_prompt=1e-3, lr_head=1e-5))}
    assert groups["prompts"]["lr"] == 1e-3 and groups["heads"]["lr"] == 1e-5
    fgp_ids = {id(p) for p in m.fgp.parameters()}
    assert fgp_ids == {id(p) for p in groups["heads"]["params"]}  # FGP trains 100x slower, as the released code
