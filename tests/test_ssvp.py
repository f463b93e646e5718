"""SSVP equations pinned on tiny backbones (SSVP.md Eqs. 1-22)."""
import math

import pytest
import torch
import torch.nn.functional as F

from tiny import GRID, SIZE, random_batch, tiny_backbone
from ssvp_core.errors import ConfigError
from ssvp_core.methods.ssvp import ATF, SSVP, SSVPOptions, VCPG


def make(**options) -> SSVP:
    torch.manual_seed(0)
    return SSVP(SSVPOptions(vae_hidden=32, **options), tiny_backbone(), SIZE)


def batch(n=3, seed=0):
    return random_batch(n, seed, classes=("bottle", "bottle", "metal_nut"))


def test_shapes_at_each_stage():
    m = make().eval()
    b = batch()
    f_cl, f_cg, f_dl, f_dg = m.split_features(m.frozen_features(b))
    N = GRID * GRID
    assert [t.shape for t in f_cl] == [torch.Size([3, N, 64])] * 4 and f_cg.shape == (3, 64)
    assert [t.shape for t in f_dl] == [torch.Size([3, N, 128])] * 4 and f_dg.shape == (3, 128)
    v_local, v_global = m.hsvs(f_cl, f_cg, f_dl, f_dg)
    assert [t.shape for t in v_local] == [torch.Size([3, N, 64])] * 4 and v_global.shape == (3, 64)
    t_init = m.text_init(["bottle", "bottle", "metal nut"], "cpu")
    assert t_init.shape == (3, 6, 64) and torch.allclose(t_init.norm(dim=-1), torch.ones(3, 6), atol=1e-5)
    assert torch.equal(t_init[0], t_init[1]) and not torch.equal(t_init[0], t_init[2])  # T_init depends on the class only
    out = m(b)
    assert out.anomaly_map.shape == (3, SIZE, SIZE) and out.score.shape == (3,)
    assert [p.shape for p in out.aux["layer_maps"]] == [torch.Size([3, 1, GRID, GRID])] * 4
    assert out.aux["w_scale"].shape == (3, 4) and torch.allclose(out.aux["w_scale"].sum(1), torch.ones(3))


def test_zero_initialised_fusion_starts_at_the_clip_features():
    """Eq. 5 with the last MLP layer zero-initialised: V_syn = F_c at step 0 (SSVP.md §11 #4)."""
    atf = ATF(32, 64, 32, 1, 32, zero_init=True)
    fc, fd = torch.randn(2, 10, 32), torch.randn(2, 10, 64)
    assert torch.equal(atf(fc, fd), fc)


def test_atf_matches_equations_2_to_5():
    torch.manual_seed(1)
    atf = ATF(8, 6, 4, 1, 5, zero_init=False)
    fc, fd = torch.randn(1, 7, 8), torch.randn(1, 9, 6)
    a_cd = torch.softmax(atf.q_c(fc) @ atf.k_d(fd).transpose(1, 2) / 2.0, -1) @ atf.v_d(fd)  # sqrt(d_head) = 2
    a_dc = torch.softmax(atf.q_d(fd) @ atf.k_c(fc).transpose(1, 2) / 2.0, -1) @ atf.v_c(fc)
    assert a_dc.shape == (1, 9, 4)  # DINO queries give one output per DINO token; with equal grids N_c = N_d
    fd_same = fd[:, :7]
    a_dc = torch.softmax(atf.q_d(fd_same) @ atf.k_c(fc).transpose(1, 2) / 2.0, -1) @ atf.v_c(fc)
    a_cd = torch.softmax(atf.q_c(fc) @ atf.k_d(fd_same).transpose(1, 2) / 2.0, -1) @ atf.v_d(fd_same)
    expected = fc + atf.mlp(torch.cat([atf.ln_cd(a_cd), atf.ln_dc(a_dc)], -1))
    assert torch.allclose(atf(fc, fd_same), expected, atol=1e-6)


def test_global_atf_on_single_tokens_is_the_degenerate_fusion():
    """Softmax over one key is 1: Attn_c->d = F_d W_d^V (SSVP.md §2.2 note)."""
    torch.manual_seed(2)
    atf = ATF(8, 6, 4, 1, 5, zero_init=False)
    fc, fd = torch.randn(3, 1, 8), torch.randn(3, 1, 6)
    expected = fc + atf.mlp(torch.cat([atf.ln_cd(atf.v_d(fd)), atf.ln_dc(atf.v_c(fc))], -1))
    assert torch.allclose(atf(fc, fd), expected, atol=1e-6)


def test_alpha_zero_gives_layernorm_of_t_init():
    """Eq. 11 at initialisation: T_final = LN(T_init)."""
    vcpg = VCPG(16, 16, 8, 16)
    assert vcpg.alpha.item() == 0.0
    t_init = F.normalize(torch.randn(2, 6, 16), dim=-1)
    z = torch.randn(2, 5, 16)
    assert torch.allclose(vcpg(t_init, z), F.layer_norm(t_init, (16,)), atol=1e-6)


def test_single_latent_sample_injects_the_same_delta_into_every_prompt():
    """Eq. 10 with n = 1: the softmax over one key is 1, so delta = z W_V for all six prompts (the degeneracy §11 #8)."""
    torch.manual_seed(3)
    vcpg = VCPG(16, 16, 8, 16)
    with torch.no_grad():
        vcpg.alpha.fill_(1.0)
    t_init = F.normalize(torch.randn(2, 6, 16), dim=-1)
    z = torch.randn(2, 1, 16)
    expected = F.layer_norm(t_init + vcpg.w_v(z), (16,), vcpg.norm.weight, vcpg.norm.bias)
    assert torch.allclose(vcpg(t_init, z), expected, atol=1e-5)


def test_fused_map_never_exceeds_the_largest_layer_map():
    """Eqs. 15-17: softmax weights and sigmoid gates can only attenuate (SSVP.md §4.2)."""
    m = make().eval()
    with torch.no_grad():
        for g in m.local_gates:
            g.bias.fill_(8.0)  # gates near 1: the bound must still hold
        out = m(batch())
    p_map = out.aux["p_map"]
    largest = torch.stack(out.aux["layer_maps"]).amax(0)
    assert (p_map <= largest + 1e-7).all() and (p_map >= 0).all()


def test_margin_regulariser_is_zero_inside_the_neighbourhood():
    """Eq. 12: L_reg = max(0, xi - cos(T_final, sg(T_init)))."""
    m = make(xi=0.85).train()
    b = batch()
    out = m(b)
    cos = F.cosine_similarity(out.aux["t_final"], out.aux["t_init"], dim=-1)
    parts = m.loss(out, b)
    assert math.isclose(parts["reg"].item(), F.relu(0.85 - cos).mean().item(), rel_tol=1e-6)
    out.aux["t_final"] = out.aux["t_init"].clone()  # cos = 1 > xi
    assert m.loss(out, b)["reg"].item() == 0.0
    far = make(xi=1.5).train()  # xi above any cosine: every prompt is outside the neighbourhood
    out = far(b)
    assert far.loss(out, b)["reg"].item() > 0


def test_score_is_the_gamma_mix_of_global_and_local():
    m = make(gamma=0.3).eval()
    with torch.no_grad():
        out = m(batch())
    expected = 0.7 * out.aux["s_global"] + 0.3 * out.aux["p_map"].flatten(1).amax(1)
    assert torch.allclose(out.score, expected, atol=1e-6)


def test_losses_are_finite_and_reach_every_trainable_part():
    m = make().train()
    b = batch()
    parts = m.loss(m(b), b)
    assert set(parts) == {"seg", "cls", "vae", "reg", "total"} and all(torch.isfinite(v) for v in parts.values())
    parts["total"].backward()
    # the zero-initialised last fusion layer blocks gradients upstream at step 0 only; after one step all parts learn
    torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1).step()
    m.zero_grad()
    m.loss(m(b), b)["total"].backward()
    no_grad = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == [], no_grad
    assert all(not p.requires_grad for p in m.clip.parameters()) and all(not p.requires_grad for p in m.aux.parameters())


@pytest.mark.parametrize("variant", [dict(fusion="none", vcpg=False, vtam=False), dict(fusion="concat"), dict(global_mode="joint"),
                                     dict(num_heads=4), dict(prompt_aggregation="mean_embedding"), dict(score_loss="logit_mix"),
                                     dict(local_score="topk_mean", local_topk=50), dict(bg_sharing="all"),
                                     dict(clip_tap_projection="learned"), dict(eval_latent="samples")])
def test_ablation_and_ambiguity_variants_run(variant):
    m = make(**variant)
    b = batch()
    m.train()
    parts = m.loss(m(b), b)
    assert torch.isfinite(parts["total"])
    m.eval()
    with torch.no_grad():
        out = m(b)
    assert out.anomaly_map.shape == (3, SIZE, SIZE)
    if variant.get("fusion") == "none":
        assert m.aux is None and "w_scale" not in out.aux  # baseline: CLIP only, no gates


def test_model_a_has_no_fusion_vcpg_or_gates():
    m = make(fusion="none", vcpg=False, vtam=False)
    names = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert names == {"bg", "state_normal", "state_abnormal", "logit_scale_pixel", "logit_scale_image"}


def test_invalid_option_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion"):
        make(fusion="sum")
