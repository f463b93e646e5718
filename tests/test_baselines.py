"""Table-1 baselines: WinCLIP's windows and harmonic aggregation, APRIL-GAN, AdaCLIP (static/dynamic prompts, HSF).
AnomalyCLIP: tests/test_anomalyclip.py; Bayes-PFL: tests/test_bayes_pfl.py."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import GRID, SIZE, random_batch, tiny_backbone
from ssvp_core.config import load_config
from ssvp_core.methods import method_spec
from ssvp_core.methods.adaclip import (AdaCLIP, AdaCLIPOptions, aggregated_map, appended_prompt_hook, ensemble_sentences,
                                       image_probabilities, overwrite_prompt_hook, upsampled_logits)
from ssvp_core.methods.base import Output
from ssvp_core.methods.aprilgan import APRILGAN, APRILGANOptions
from ssvp_core.methods.winclip import WinCLIP, WinCLIPOptions, harmonic_aggregation, window_indices


def batch(n=2, seed=0):
    return random_batch(n, seed, defect="x", box=(40, 60, 40, 70))


# ---- WinCLIP -------------------------------------------------------------------------------------------------

def test_window_indices_cover_the_grid():
    w = window_indices((4, 5), 2, 1)
    assert w.shape == (3 * 4, 4) and w[0].tolist() == [0, 1, 5, 6] and w[-1].tolist() == [13, 14, 18, 19]
    counts = torch.bincount(w.reshape(-1), minlength=20)
    assert counts[0] == 1 and counts[6] == 4  # corner in one window, inner patch in four


def test_harmonic_aggregation():
    windows = torch.tensor([[0, 1], [1, 2]])
    scores = torch.tensor([[0.5, 0.25]])
    agg = harmonic_aggregation(scores, windows, 3)
    assert torch.allclose(agg, torch.tensor([[0.5, 2 / (1 / 0.5 + 1 / 0.25), 0.25]]))


def test_winclip_score_responds_to_a_planted_defect_where_it_is():
    torch.manual_seed(0)
    det = WinCLIP(WinCLIPOptions(), tiny_backbone(), SIZE).eval()
    clean = batch(1)
    clean["image"][:] = 0.5 + 0.05 * torch.sin(torch.arange(SIZE) / 3.0)  # a plain striped surface
    defect = {**clean, "image": clean["image"].clone()}
    defect["image"][:, :, 8:16, 8:16] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red spot on patch (1, 1)
    with torch.no_grad():
        a, b = det(clean), det(defect)
    assert not torch.isclose(a.score, b.score)  # the image score reacts
    diff = (a.aux["scale_maps"][0] - b.aux["scale_maps"][0]).abs().view(GRID, GRID)
    changed = diff > 1e-6
    # only patches sharing a window with patch (1, 1) change at scale 2: rows/columns 0..2
    assert changed[:3, :3].any() and not changed[3:, :].any() and not changed[:, 3:].any()
    assert b.anomaly_map.shape == (1, SIZE, SIZE)


# ---- APRIL-GAN ------------------------------------------------------------------------------------------------

def test_aprilgan_trains_only_its_linear_layers():
    det = APRILGAN(APRILGANOptions(), tiny_backbone(), SIZE).train()
    b = batch()
    out = det(b)
    assert out.anomaly_map.shape == (2, SIZE, SIZE) and len(out.aux["layer_maps"]) == 4
    det.loss(out, b)["total"].backward()
    trainable = {n.split(".")[0] for n, p in det.named_parameters() if p.requires_grad}
    assert trainable == {"linear"} and det.linear[0].weight.grad.abs().sum() > 0


# ---- AdaCLIP --------------------------------------------------------------------------------------------------

def test_adaclip_paper_defaults_are_the_release():
    """train.py / trainer.py / model_configs of caoyunkang/AdaCLIP @e27ee32."""
    cfg = load_config("paper", "adaclip")
    assert cfg.backbone.clip.activation == "gelu" and cfg.backbone.precision == "fp16"
    t = cfg.train
    assert (t.optimizer, t.weight_decay, t.lr_prompt, t.lr_head, tuple(t.betas), t.schedule, t.epochs, t.batch_size) == \
        ("adamw", 0.01, 0.01, 0.01, (0.5, 0.999), "constant", 5, 1)
    n = 24  # ViT-L/14@336 blocks; the release taps n//4 multiples
    assert tuple(cfg.backbone.clip.layers) == (n // 4, n // 2, 3 * n // 4, n)
    o = method_spec("adaclip").options_from(cfg.options)
    assert (o.depth, o.length, o.prompt_type, o.branch, o.temperature, o.hsf, o.hsf_rule, o.hsf_top, o.hsf_clusters,
            o.hsf_alpha, o.dice, o.class_names, o.prompt_rounding) == \
        (4, 5, "SD", "VL", 0.01, True, "mean_of_centroids", 100, 20, 0.2, "rows", "released", "fp16")


def test_adaclip_text_ensemble_is_the_release_list():
    normal, anomalous = ensemble_sentences("bottle")
    assert len(normal) == 7 * 4 and len(anomalous) == 5 * 4
    assert normal[:5] == ["a bad photo of a bottle.", "a low resolution photo of the bottle.", "a bad photo of the bottle.",
                          "a cropped photo of the bottle.", "a bad photo of a flawless bottle."]
    assert anomalous[0] == "a bad photo of a damaged bottle." and anomalous[-1] == "a cropped photo of the bottle with damage."
    det = AdaCLIP(AdaCLIPOptions(), tiny_backbone(), SIZE)
    assert det.class_names({"cls": ["metal_nut", "pipe-fryum"]}) == ["metal_nut", "pipe fryum"]  # the release's names


def as_inserted(tokens: torch.Tensor, rounding: str) -> torch.Tensor:
    """The tokens the release inserts: rounded to the nearest float16 by NumPy (IEEE round-to-nearest-even, exact),
    or unchanged."""
    if rounding == "none":
        return tokens
    return torch.from_numpy(tokens.detach().numpy().astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("rounding", ["fp16", "none"])
def test_adaclip_text_prompts_overwrite_positions_1_to_n_from_block_1(rounding):
    P, L, W, n, depth = 2, 9, 3, 2, 3
    tokens = 100.3 + torch.arange(P * (depth - 1) * n * W, dtype=torch.float).view(P, depth - 1, n, W)  # not fp16-exact
    x = torch.randn(P, L, W)
    hook = overwrite_prompt_hook(tokens, rounding)
    assert torch.equal(hook(0, x), x)  # block 0 runs unprompted, nothing inserted
    for j in (1, 2):
        y = hook(j, x)
        assert y.shape == x.shape  # overwritten: the end-of-text position does not move
        assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 1 + n:], x[:, 1 + n:])
        assert torch.equal(y[:, 1:1 + n], as_inserted(tokens[:, j - 1], rounding))
    assert torch.equal(hook(depth, x), x)


@pytest.mark.parametrize("rounding", ["fp16", "none"])
def test_adaclip_visual_prompts_are_appended_at_the_end_and_stay_out_of_the_taps(rounding):
    B, N1, W, n, depth = 2, 5, 3, 2, 2
    tokens = 100.3 + torch.arange(B * depth * n * W, dtype=torch.float).view(B, depth, n, W)  # not fp16-exact
    x = torch.randn(B, N1, W)
    hook = appended_prompt_hook(tokens, rounding)
    y0 = hook(0, x)
    assert y0.shape == (B, N1 + n, W) and torch.equal(y0[:, :N1], x)
    assert torch.equal(y0[:, N1:], as_inserted(tokens[:, 0], rounding))
    y1 = hook(1, y0 + 1)
    assert torch.equal(y1[:, :N1], y0[:, :N1] + 1) and torch.equal(y1[:, N1:], as_inserted(tokens[:, 1], rounding))
    assert torch.equal(hook(depth, y1), y1)  # past the prompted depth the prompts ride along unchanged
    # in the tower: every tap still carries them after the patches; the CLS and patches come first
    det = AdaCLIP(AdaCLIPOptions(depth=2), tiny_backbone(), SIZE)
    images = batch()["image"]
    prompts = det.prompt_tokens(torch.randn(2, det.clip.embed_dim), "visual", 2)
    with torch.no_grad():
        feats = det.clip.image_features(images, hook=appended_prompt_hook(prompts, rounding))
        first = det.clip.blocks[0](torch.cat([det.clip.embed_image(images), as_inserted(prompts[:, 0], rounding)], 1))
    assert all(t.shape[1] == 1 + GRID * GRID + 5 for t in feats.taps)
    assert torch.allclose(feats.taps[0], first, atol=1e-6)


def _bilinear_2x2_to_3x3(v):
    """align_corners=True from 2x2 to 3x3: corners keep their values, edge midpoints average two, the centre four."""
    a, b, c, d = v[0, 0], v[0, 1], v[1, 0], v[1, 1]
    return torch.stack([torch.stack([a, (a + b) / 2, b]), torch.stack([(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2]),
                        torch.stack([c, (c + d) / 2, d])])


def test_adaclip_map_rule_upsamples_logits_averages_taps_then_softmaxes():
    g = torch.Generator().manual_seed(0)
    logits = [3 * torch.randn(1, 4, 2, generator=g) for _ in range(2)]  # two taps, a 2x2 grid (row-major patches)
    up = upsampled_logits(logits, (2, 2), 3)
    expected = [torch.stack([_bilinear_2x2_to_3x3(l[0, :, c].view(2, 2)) for c in range(2)]) for l in logits]
    assert all(torch.allclose(u[0], e, atol=1e-6) for u, e in zip(up, expected))
    mean = (expected[0] + expected[1]) / 2
    p_anomalous = 1 / (1 + torch.exp(mean[0] - mean[1]))
    assert torch.allclose(aggregated_map(up)[0], (p_anomalous + 1 - (1 - p_anomalous)) / 2, atol=1e-6)


def _hsf_inputs(seed=1, D=3, N=6):
    g = torch.Generator().manual_seed(seed)
    patches = [F.normalize(torch.randn(1, N, D, generator=g), dim=-1) for _ in range(2)]
    logits = [torch.randn(1, N, 2, generator=g) for _ in range(2)]
    cls = F.normalize(torch.randn(1, D, generator=g), dim=-1)
    return patches, logits, cls


@pytest.mark.parametrize("rule", ["mean_of_centroids", "most_anomalous"])
def test_adaclip_hsf_and_image_score_written_out(rule):
    patches, logits, cls = _hsf_inputs()
    det = AdaCLIP(AdaCLIPOptions(hsf_top=4, hsf_clusters=2, hsf_rule=rule), tiny_backbone(), SIZE)
    row_labels = [0, 1, 1, 0]  # the 4 most anomalous patches, in top-k order, in two clusters
    seen = []

    def seam(features, patch_index):
        seen.append((features.clone(), patch_index.tolist()))
        return torch.tensor(row_labels)

    det.cluster_labels = seam
    mixed = det.hybrid_semantic_fusion(cls, patches, logits)
    # written out
    mean_logits = (logits[0][0] + logits[1][0]) / 2
    prob = [float(1 / (1 + torch.exp(mean_logits[i, 0] - mean_logits[i, 1]))) for i in range(6)]
    order = sorted(range(6), key=lambda i: -prob[i])[:4]
    features, index = seen[0]
    assert index == order
    assert torch.equal(features, torch.cat([patches[0][0, order], patches[1][0, order]], 1))  # taps side by side
    members = {c: [order[r] for r in range(4) if row_labels[r] == c] for c in (0, 1)}
    centroid = {c: sum(patches[t][0, i] for t in (0, 1) for i in members[c]) / (2 * len(members[c])) for c in (0, 1)}
    if rule == "mean_of_centroids":
        centre = (centroid[0] + centroid[1]) / 2
    else:
        score = {c: sum(prob[i] for i in members[c]) / len(members[c]) for c in (0, 1)}
        centre = centroid[max(score, key=score.get)]
    centre = centre / centre.norm()
    expected = 0.2 * centre + 0.8 * cls[0]
    expected = expected / expected.norm()
    assert torch.allclose(mixed[0], expected, atol=1e-6)
    text = F.normalize(torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(2)), dim=-1)
    e = [float(torch.exp(expected @ text[0, c] / 0.01)) for c in (0, 1)]
    assert abs(float(image_probabilities(mixed, text, 0.01)[0, 1]) - e[1] / (e[0] + e[1])) < 1e-5


def test_adaclip_cluster_labels_are_sklearn_kmeans_plus_plus():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 4, generator=g) * 0.1 + c for c in (5.0, -5.0)])
    det = AdaCLIP(AdaCLIPOptions(hsf_clusters=2, hsf_seed=3), tiny_backbone(), SIZE)
    labels = det.cluster_labels(x, torch.arange(40))
    assert len(set(labels[:20].tolist())) == 1 and len(set(labels[20:].tolist())) == 1 and labels[0] != labels[20]
    assert np.array_equal(labels.numpy(), KMeans(n_clusters=2, n_init="auto", random_state=3).fit_predict(x.numpy()))


@pytest.mark.parametrize("unit", ["rows", "image"])
def test_adaclip_loss_written_out(unit):
    """Focal (Loss_ToolBox, smoothing 1e-5) on the image probabilities + per tap focal + Dice(anomalous) + Dice(normal);
    `rows`: the Dice of each image row, averaged (the release at batch 1)."""
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(1, 2, 4, 4, generator=g).softmax(1) for _ in range(2)]
    probs = torch.randn(1, 2, generator=g).softmax(1)
    mask = torch.zeros(1, 4, 4)
    mask[0, 1:3, 1:4] = 1
    out = Output(torch.zeros(1, 4, 4), probs[:, 1], {"layer_maps": maps, "image_probs": probs})
    det = AdaCLIP(AdaCLIPOptions(dice=unit), tiny_backbone(), SIZE)
    parts = det.loss(out, {"mask": mask, "label": torch.tensor([1])})
    s = 1e-5

    def focal(p_true):
        pt = (1 - s) * p_true + s * (1 - p_true) + s
        return float((-(1 - pt) ** 2 * torch.log(pt)).mean())

    def dice_of(p, y):
        rows = [(p[r], y[r]) for r in range(4)] if unit == "rows" else [(p.flatten(), y.flatten())]
        return sum(1 - (2 * float((a * b).sum()) + 1) / (float(a.sum() + b.sum()) + 1) for a, b in rows) / len(rows)

    local = sum(focal(torch.where(mask[0] > 0, m[0, 1], m[0, 0])) + dice_of(m[0, 1], mask[0]) + dice_of(m[0, 0], 1 - mask[0])
                for m in maps)
    assert abs(float(parts["local"]) - local) < 1e-5 and abs(float(parts["image"]) - focal(probs[0, 1])) < 1e-6
    assert abs(float(parts["total"]) - local - focal(probs[0, 1])) < 1e-5


def test_adaclip_bf16_forward_and_training_step():
    fp32 = tiny_backbone()
    bf16 = dataclasses.replace(fp32, precision="bf16")
    det32 = AdaCLIP(AdaCLIPOptions(hsf_seed=0), fp32, SIZE).eval()
    det16 = AdaCLIP(AdaCLIPOptions(hsf_seed=0), bf16, SIZE).eval()
    det16.load_state_dict(det32.state_dict())
    b = batch()
    with torch.no_grad():
        m32, m16 = det32(b).anomaly_map, det16(b).anomaly_map
    assert m16.dtype == torch.float32 and float((m16 - m32).abs().max()) < 2e-2
    det16.train()
    parts = det16.loss(det16(b), b)
    parts["total"].backward()
    assert torch.isfinite(parts["total"])
    grads = {n: p.grad for n, p in det16.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("prompt_type,branch", [("SD", "VL"), ("S", "V"), ("D", "L")])
def test_adaclip_variants(prompt_type, branch):
    det = AdaCLIP(AdaCLIPOptions(prompt_type=prompt_type, branch=branch, hsf_seed=0), tiny_backbone(), SIZE).train()
    b = batch()
    out = det(b)
    assert out.anomaly_map.shape == (2, SIZE, SIZE) and out.score.shape == (2,)
    det.loss(out, b)["total"].backward()
    grads = {n for n, p in det.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {n.split(".")[0] for n in grads} == ({"patch_projection", "cls_projection"}
                                                 | {f"{kind}_{tower}" for kind in ("static", "dynamic") if kind[0].upper() in prompt_type
                                                    for tower in ("visual", "text") if tower[0].upper() in branch.replace("L", "T")})


def test_adaclip_prompts_change_the_text_per_image():
    det = AdaCLIP(AdaCLIPOptions(prompt_type="D"), tiny_backbone(), SIZE).eval()
    g0 = torch.randn(2, det.clip.embed_dim)
    with torch.no_grad():
        text = det.text_features(g0, ["bottle", "bottle"])
    assert not torch.allclose(text[0], text[1]) and not torch.allclose(text[0, 0], text[0, 1])
