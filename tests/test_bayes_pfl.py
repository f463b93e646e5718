"""Bayes-PFL's parts against formulas written out here (the whole method against the authors' code:
tests/parity/test_parity_bayes_pfl.py): planar flows and their KL, the amortised image flow, RCA, the losses, the
score rule (per-pair softmax mean, top-k, per-class min-max), the two-stage schedule and lr groups, the image-agnostic
samples kept for a whole evaluation, the released prompt names, bf16."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import SIZE, random_batch, smoke_config, tiny_backbone
from ssvp_core.config import TrainConfig
from ssvp_core.errors import ConfigError
from ssvp_core.methods.bayes_pfl import (RCA, BayesPFL, BayesPFLOptions, GaussianEncoder, ImageFlow, log_density_ratio, planar_step)
from ssvp_core.methods.losses import balanced_focal, batch_dice, orthogonality_loss


def make(**options) -> BayesPFL:
    torch.manual_seed(0)
    return BayesPFL(BayesPFLOptions(**{"mc_test": 2, **options}), tiny_backbone(), SIZE)


def batch(n=2):
    return random_batch(n, seed=0, classes=("bottle", "screw"), defect="x", box=(40, 60, 40, 70))


# ---- flows ----------------------------------------------------------------------------------------------------

def test_planar_step_formula_and_jacobian():
    torch.manual_seed(0)
    z, u, w = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    b = torch.tensor([0.3], dtype=torch.float64)
    f, logdet = planar_step(z, u, w, b)
    lin = float(w @ z + b)
    assert torch.allclose(f, z + u * math.tanh(lin))
    assert math.isclose(float(logdet), math.log(abs(1 + (1 - math.tanh(lin) ** 2) * float(w @ u)) + 1e-5), rel_tol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda v: planar_step(v, u, w, b)[0], z)
    assert abs(float(logdet) - math.log(abs(float(torch.det(jac))))) < 1e-4  # the code's +1e-5 inside the log


def test_log_density_ratio_formula():
    z0, zk = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.1]])
    mu, var = torch.tensor([[0.1, 0.2]]), torch.tensor([[0.5, 2.0]])
    log_q = -0.5 * (math.log(0.5) + 0.4 ** 2 / 0.5) - 0.5 * (math.log(2.0) + 1.2 ** 2 / 2.0)
    log_p = -0.5 * (2.0 ** 2 + 0.1 ** 2)
    assert torch.allclose(log_density_ratio(z0, zk, mu, var), torch.tensor([log_q - log_p]))


def test_image_flow_is_amortised_and_uses_the_codes_variance():
    torch.manual_seed(0)
    flow = ImageFlow(dim=3, hidden=4, n_flows=2)
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.3)
    g = torch.randn(2, 3)
    eps = torch.randn(2, 1, 3)
    z, ratio, logdet = flow(g, eps)
    for i in range(2):  # by hand, one image at a time
        mu, h = flow.encoder.mean(g[i]), flow.encoder.log_variance(g[i])
        var = torch.exp(0.5 * h)  # the code's "var": exp(h / 2), std its square root
        zi = z0 = mu + eps[i, 0] * var.sqrt()
        total = 0.0
        u, w, b = flow.amor_u(g[i]).view(2, 3), flow.amor_w(g[i]).view(2, 3), flow.amor_b(g[i])
        for k in range(2):
            t = torch.tanh(w[k] @ zi + b[k])
            total += torch.log(torch.abs(1 + (1 - t ** 2) * (w[k] @ u[k])) + 1e-5)
            zi = zi + u[k] * t
        assert torch.allclose(z[i, 0], zi, atol=1e-6) and torch.allclose(logdet[i, 0], total, atol=1e-6)
        assert torch.allclose(ratio[i, 0], log_density_ratio(z0, zi, mu, var), atol=1e-5)
    u0, u1 = flow.amor_u(g).view(2, 2, 3)
    assert not torch.allclose(u0, u1)  # flow parameters differ per image


def test_state_flows_share_the_encoder_and_shift_the_state_tokens():
    det = make()
    assert det.normal_flow.state is not det.abnormal_flow.state
    assert isinstance(det.state_encoder, GaussianEncoder) and not any(isinstance(m, GaussianEncoder) for m in det.normal_flow.modules())
    g = torch.randn(2, det.clip.embed_dim)
    shift_n = torch.randn(1, g.shape[1])
    det.prompt_shifts = lambda g_, s: (torch.zeros(2, 1, g.shape[1]), shift_n, torch.zeros(1, g.shape[1]), g.new_zeros(()))
    captured = {}
    encode = det.prompt_encoder.forward

    def spy(texts, slots, **k):
        captured["slots"] = slots.detach().clone()
        return encode(texts, slots, **k)

    det.prompt_encoder.forward = spy
    det.text_features(g, ["bottle", "bottle"], 1)
    slots = captured["slots"].view(2, 1, 2, 3, 10, -1)  # (B, S, [normal, abnormal], P, ctx 5 + state 5, W)
    assert torch.allclose(slots[0, 0, 0, :, :5], det.context)  # the context is not shifted here
    assert torch.allclose(slots[0, 0, 0, :, 5:], det.state_normal + shift_n)  # the normal state tokens are
    assert torch.allclose(slots[1, 0, 1, :, 5:], det.state_abnormal)


def test_kl_assembly_of_the_three_flows():
    """(image ratio - logdet) / B, plus per state flow: ratio - logdet / B (loss.py's broadcast of a 1-row sample)."""
    det = make().train()
    B, D = 3, det.clip.embed_dim
    g = torch.randn(B, D)
    eps = {"image": torch.randn(B, 1, D), "normal": torch.randn(1, D), "abnormal": torch.randn(1, D)}
    det.standard_normal = lambda role, shape, like: eps[role]
    _, _, _, kl = det.prompt_shifts(g, 1)
    _, r, ld = det.image_flow(g, eps["image"])
    _, rn, ldn = det.normal_flow(det.state_encoder, eps["normal"])
    _, ra, lda = det.abnormal_flow(det.state_encoder, eps["abnormal"])
    expected = (r.sum() - ld.sum()) / B + rn.sum() - ldn.sum() / B + ra.sum() - lda.sum() / B
    assert torch.allclose(kl, expected)


# ---- RCA and losses ---------------------------------------------------------------------------------------------

def test_rca_text_over_patches_attention():
    torch.manual_seed(0)
    rca = RCA(width=4, dim=8, n_layers=2, heads=4)
    text = F.normalize(torch.randn(1, 2, 8), dim=-1)
    taps = torch.randn(1, 3, 4)
    out, patches = rca(text, taps, 1)
    p = taps[0] @ rca.patch_proj[1].weight.T
    p = p / p.norm(dim=-1, keepdim=True)
    assert torch.allclose(patches[0], p, atol=1e-6)
    q = text[0] @ rca.query.weight.T + rca.query.bias
    expected = torch.zeros(2, 8)
    for head in range(4):
        sl = slice(2 * head, 2 * head + 2)
        attn = torch.softmax(q[:, sl] @ p[:, sl].T / math.sqrt(8), dim=-1)  # scale: the joint width, not the head's
        expected[:, sl] = attn @ p[:, sl]
    expected = expected + text[0]
    assert torch.allclose(out[0], expected / expected.norm(dim=-1, keepdim=True), atol=1e-6)


def test_balanced_focal_formula():
    probs_abn = torch.tensor([[[0.9, 0.2], [0.4, 0.7]]])
    probs = torch.stack([1 - probs_abn, probs_abn], 1)
    target = torch.tensor([[[1, 0], [0, 0]]])
    fl = lambda pt: -(1 - pt) ** 2 * math.log(pt + 1e-8)
    fg = fl(0.9)  # one foreground pixel
    bg = (fl(0.8) + fl(0.6) + fl(0.3)) / 3
    assert math.isclose(float(balanced_focal(probs, target)), fg + bg, rel_tol=1e-6)
    empty = torch.zeros_like(target)  # no foreground: the fg term is 0 / eps = 0
    assert math.isclose(float(balanced_focal(probs, empty)), (fl(0.1) + fl(0.8) + fl(0.6) + fl(0.3)) / 4, rel_tol=1e-6)


def test_batch_dice_pools_the_batch():
    p = torch.tensor([[[0.5, 0.0]], [[1.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    expected = 1 - (2 * (0.5 + 1.0) + 1e-5) / ((0.5 + 2.0) + 2.0 + 1e-5)
    assert math.isclose(float(batch_dice(p, t)), expected, rel_tol=1e-6)


def test_orthogonality_loss_formula():
    e = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])
    c = 1 / math.sqrt(2)
    assert math.isclose(float(orthogonality_loss(e)), 2 * (c ** 2 + 0.0 + c ** 2) / 9, rel_tol=1e-6)


# ---- score rule ---------------------------------------------------------------------------------------------------

def test_score_rule_per_pair_softmax_top_k_and_class_minmax():
    det = make(mc_test=2, top_k=2000, top_k_small=20, top_k_size=518).eval()
    B, S, P = 2, 2, 3
    logits = torch.randn(B, S, P, 2)
    gaps = [torch.randn(B, S * P, SIZE, SIZE) for _ in range(4)]
    det.image_logits = lambda *a, **k: logits
    det.pixel_logit_gaps = lambda *a, **k: gaps
    b = batch()
    with torch.no_grad():
        out = det(b)
    pair_prob = torch.exp(logits[..., 1]) / (torch.exp(logits[..., 0]) + torch.exp(logits[..., 1]))
    assert torch.allclose(out.aux["s_global"], pair_prob.flatten(1).mean(1), atol=1e-6)
    # 2-way softmax of [normal, abnormal] upsampled logits per pair = sigmoid of their gap; mean over layers, pairs
    assert torch.allclose(out.anomaly_map, torch.stack([torch.sigmoid(g) for g in gaps]).mean((0, 2)), atol=1e-6)
    scale = (SIZE / 518) ** 2
    for i, k in enumerate([round(2000 * scale), round(20 * scale)]):  # "bottle", then the small-defect "screw"
        flat = out.anomaly_map[i].flatten().numpy()
        assert math.isclose(float(out.aux["s_local"][i]), float(np.mean(np.partition(flat, -k)[-k:])), rel_tol=1e-5)
    assert torch.allclose(out.score, 0.5 * out.aux["s_global"] + 0.5 * out.aux["s_local"])
    g, l = np.array([0.1, 0.3, 0.2]), np.array([0.5, 0.4, 0.45])
    expected = 0.5 * (g - 0.1) / (0.2 + 1e-8) + 0.5 * (l - 0.4) / (0.1 + 1e-8)
    assert np.allclose(det.class_scores({"s_global": g, "s_local": l}), expected)
    det.options.score_normalization = "none"
    assert det.class_scores({"s_global": g, "s_local": l}) is None


@pytest.mark.slow
def test_class_minmax_reaches_the_evaluation(synth_root, tmp_path):
    from ssvp_core.engine.infer import evaluate

    cfg = smoke_config("bayes_pfl", f"out_dir={tmp_path}", root=synth_root)
    det = BayesPFL(BayesPFLOptions(mc_test=2), cfg.backbone, cfg.image_size)
    seen = []
    rescore = det.class_scores
    det.class_scores = lambda parts: seen.append(parts) or rescore(parts)
    result = evaluate(det, cfg.eval.datasets[0], cfg, progress=False)
    groups = list(result.samples.groupby("cls", sort=False))
    assert len(seen) == len(groups)
    for parts, (_, group) in zip(seen, groups):  # the default rescales each class's two terms
        mm = {k: (v - v.min()) / (v.max() - v.min() + 1e-8) for k, v in parts.items()}
        assert np.allclose(group.score.to_numpy(), 0.5 * mm["s_global"] + 0.5 * mm["s_local"])


# ---- schedule, parameters, prompts ------------------------------------------------------------------------------

def test_param_groups_are_the_codes():
    det = make()
    groups = {g["name"]: g for g in det.param_groups(TrainConfig(lr_prompt=1e-3, lr_head=1e-4))}
    assert {n: g["lr"] for n, g in groups.items()} == {"prompts": 1e-3, "flows": 1e-3, "heads": 1e-4, "temperature": 0.01, "stage2": 1e-4}
    assert groups["stage2"]["schedule"] == "constant" and all("schedule" not in g for n, g in groups.items() if n != "stage2")
    names = {id(p): n for n, p in det.named_parameters()}
    member = {n: {names[id(p)] for p in g["params"]} for n, g in groups.items()}
    assert sum(len(m) for m in member.values()) == len([p for p in det.parameters() if p.requires_grad])
    assert member["prompts"] == {"context", "state_normal", "state_abnormal"}
    assert member["temperature"] == {"temperature_pixel", "temperature_image"}
    assert member["flows"] == {f"image_flow.amor_{x}.{t}" for x in "uwb" for t in ("weight", "bias")} | \
        {f"{s}_flow.{x}" for s in ("normal", "abnormal") for x in ("state", "u", "w", "b")}
    assert all(n.startswith(("class_mapping", "image_mapping", "fuse")) for n in member["stage2"])
    assert any(n.startswith("image_flow.encoder") for n in member["heads"]) and any(n.startswith("rca") for n in member["heads"])


def test_constant_group_keeps_its_lr_under_the_cosine_schedule():
    from ssvp_core.engine.train import make_scheduler

    cfg = smoke_config("bayes_pfl")
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 1.0, "schedule": "constant"}])
    sched = make_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(9):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    assert lrs[-1][0] < 0.1 and all(l[1] == 1.0 for l in lrs)


def test_stage_schedule():
    det = make(stage2_epochs=5)
    stages = []
    for epoch in range(30):
        det.start_epoch(epoch, 30)
        stages.append(det.stage)
    assert stages == [1] * 25 + [2] * 5
    with pytest.raises(ConfigError, match="stage2_epochs"):
        det.start_epoch(0, 5)
    det = make(stage2_epochs=0)
    det.start_epoch(29, 30)
    assert det.stage == 1


def test_stage2_step_changes_only_the_image_mapping():
    det = make().train()
    det.stage = 2
    b = batch()
    parts = det.loss(det(b), b)
    assert set(parts) == {"image", "total"}
    parts["total"].backward()
    learned = {n for n, p in det.named_parameters() if p.grad is not None}
    assert learned and all(n.startswith(("class_mapping", "image_mapping", "fuse")) for n in learned)


def test_image_agnostic_samples_are_drawn_once_per_evaluation():
    det = make(mc_test=1).eval()
    calls = []
    draw = det.standard_normal
    det.standard_normal = lambda role, shape, like: calls.append(role) or draw(role, shape, like)
    with torch.no_grad():
        det(batch(1))
        det(batch(1))
    assert calls == ["image", "normal", "abnormal", "image"]
    det.eval()  # a new evaluation draws them afresh
    with torch.no_grad():
        det(batch(1))
    assert calls[4:] == ["image", "normal", "abnormal"]


def test_released_prompt_names():
    det = make()
    b = {"cls": ["metal_nut", "Fabric1", "01", "bottle", "pcb3"]}
    assert det.class_names(b) == ["metal nut", "fabric1", "metal1", "bottle", "printed circuit board"]
    det.options.class_names = "kit"
    assert det.class_names(b)[:3] == ["metal nut", "fabric", "object"]


def test_construction_leaves_the_shared_clip_untouched():
    from ssvp_core.backbones import get_clip

    clip = get_clip(tiny_backbone().clip)
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    make()
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())


def test_released_defaults_reach_the_paper_config():
    from ssvp_core.config import load_config

    cfg = load_config("paper", "bayes_pfl")
    assert cfg.backbone.clip.activation == "gelu" and cfg.backbone.precision == "fp32"
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr_prompt, cfg.train.lr_head, cfg.train.seed) == (30, 32, 1e-3, 1e-4, 333)
    o = BayesPFLOptions()
    assert (o.mc_test, o.n_flows, o.kl_weight, o.score_normalization, o.lr_flow, o.lr_temperature) == (10, 10, 0.01, "class_minmax", 1e-3, 0.01)


# ---- precision ----------------------------------------------------------------------------------------------------

def test_bf16_forward_and_training_step():
    fp32 = make()
    bf16 = BayesPFL(BayesPFLOptions(mc_test=2), dataclasses.replace(tiny_backbone(), precision="bf16"), SIZE)
    bf16.load_state_dict(fp32.state_dict())
    b = batch()
    maps = []
    for det in (fp32, bf16):
        det.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            maps.append(det(b).anomaly_map)
    assert maps[1].dtype == torch.float32 and (maps[0] - maps[1]).abs().max() < 2e-2
    bf16.train()
    parts = bf16.loss(bf16(b), b)
    parts["total"].backward()
    assert torch.isfinite(parts["total"]) and all(torch.isfinite(p.grad).all() for p in bf16.parameters() if p.grad is not None)
    assert bf16.context.grad.abs().sum() > 0
