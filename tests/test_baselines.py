"""Table-1 baselines: WinCLIP's windows and harmonic aggregation, APRIL-GAN, AdaCLIP (static/dynamic prompts, HSF), Bayes-PFL (planar flows, score rule, per-class min-max)."""
import numpy as np
import pytest
import torch

from tiny import GRID, SIZE, random_batch, smoke_config, tiny_backbone
from ssvp_core.methods.adaclip import AdaCLIP, AdaCLIPOptions, kmeans
from ssvp_core.methods.aprilgan import APRILGAN, APRILGANOptions
from ssvp_core.methods.bayes_pfl import BayesPFL, BayesPFLOptions, PlanarFlow
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

def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 2, generator=g) * 0.1 + c for c in (torch.tensor([5.0, 0]), torch.tensor([-5.0, 0]))])
    x = x[torch.randperm(40, generator=g)]
    centres, assign = kmeans(x, 2, 10)
    assert sorted(round(c) for c in centres[:, 0].tolist()) == [-5, 5] and len(set(assign.tolist())) == 2


@pytest.mark.parametrize("prompt_type,branch", [("SD", "VL"), ("S", "V"), ("D", "L")])
def test_adaclip_variants(prompt_type, branch):
    det = AdaCLIP(AdaCLIPOptions(prompt_type=prompt_type, branch=branch), tiny_backbone(), SIZE).train()
    b = batch()
    out = det(b)
    assert out.anomaly_map.shape == (2, SIZE, SIZE) and out.score.shape == (2,)
    det.loss(out, b)["total"].backward()
    grads = {n for n, p in det.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("static_") for n in grads) == ("S" in prompt_type)
    assert any(n.startswith("dynamic_") for n in grads) == ("D" in prompt_type)


def test_adaclip_prompts_change_the_text_per_image():
    det = AdaCLIP(AdaCLIPOptions(prompt_type="D"), tiny_backbone(), SIZE).eval()
    g = torch.nn.functional.normalize(torch.randn(2, det.clip.embed_dim), dim=-1)
    text = det.text_features(g, ["bottle", "bottle"])
    assert not torch.allclose(text[0], text[1]) and not torch.allclose(text[0, 0], text[0, 1])


# ---- Bayes-PFL ------------------------------------------------------------------------------------------------

def test_planar_flow_log_determinant():
    torch.manual_seed(0)
    flow = PlanarFlow(3)
    with torch.no_grad():
        flow.u.copy_(torch.tensor([0.5, -0.2, 0.1]))
        flow.w.copy_(torch.tensor([1.0, 0.3, -0.4]))
    z = torch.randn(3)
    f, logdet = flow(z)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v)[0], z)
    assert torch.allclose(logdet, torch.log(torch.det(jac).abs()), atol=1e-5)


def test_bayes_pfl_scores_and_class_minmax():
    det = BayesPFL(BayesPFLOptions(mc_test=3), tiny_backbone(), SIZE).eval()
    b = batch()
    with torch.no_grad():
        out = det(b)
    assert torch.allclose(out.score, 0.5 * out.aux["s_global"] + 0.5 * out.aux["s_local"])
    assert det.class_scores({"s_global": np.array([0.1, 0.2]), "s_local": np.array([0.5, 0.4])}) is None
    det.options.score_normalization = "class_minmax"
    mixed = det.class_scores({"s_global": np.array([0.1, 0.3, 0.2]), "s_local": np.array([0.5, 0.4, 0.45])})
    assert np.allclose(mixed, 0.5 * np.array([0.0, 1.0, 0.5]) + 0.5 * np.array([1.0, 0.0, 0.5]))
    det.train()
    parts = det.loss(det(b), b)
    assert set(parts) == {"local", "image", "kl", "total"} and torch.isfinite(parts["total"])
    parts["total"].backward()
    assert det.flows["image_specific"].flows[0].u.grad is not None and det.context.grad.abs().sum() > 0


def test_class_minmax_reaches_the_evaluation(synth_root, tmp_path):
    from ssvp_core.engine.infer import evaluate

    cfg = smoke_config("bayes_pfl", f"out_dir={tmp_path}", "options.score_normalization=class_minmax", root=synth_root)
    det = BayesPFL(BayesPFLOptions(score_normalization="class_minmax", mc_test=2), cfg.backbone, cfg.image_size)
    result = evaluate(det, cfg.eval.datasets[0], cfg, progress=False)
    for _, group in result.samples.groupby("cls"):
        assert group.score.min() >= 0 and group.score.max() <= 1 and group.score.max() > 0.5  # rescaled per class
