"""SSVP equations pinned on tiny backbones (SSVP.md Eqs. 1-22).

Every expected value below is computed in the test from the paper's formula, written out with explicit weight
matrices (x @ W^T + b), exp-ratios and hand-picked numbers, never by calling the module under test a second time.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from tiny import GRID, SIZE, random_batch, tiny_backbone
from ssvp_core.errors import ConfigError
from ssvp_core.methods.base import Output
from ssvp_core.methods.losses import binary_focal
from ssvp_core.methods.ssvp import ATF, SSVP, SSVPOptions, VCPG

D = 64  # the tiny CLIP's joint width


def make(**options) -> SSVP:
    torch.manual_seed(0)
    return SSVP(SSVPOptions(vae_hidden=32, **options), tiny_backbone(), SIZE)


def batch(n=3, seed=0):
    return random_batch(n, seed, classes=("bottle", "bottle", "metal_nut"))


# ---- independent references -------------------------------------------------------------------------------------
def linear(x, layer):
    out = x @ layer.weight.T
    return out + layer.bias if layer.bias is not None else out


def layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def attention(q, k, v, heads=1):
    """softmax(Q K^T / sqrt(d_head)) V, heads split along the channels."""
    outs = []
    for q_h, k_h, v_h in zip(q.chunk(heads, -1), k.chunk(heads, -1), v.chunk(heads, -1)):
        logits = q_h @ k_h.transpose(-1, -2) / math.sqrt(q_h.shape[-1])
        weights = torch.exp(logits - logits.amax(-1, keepdim=True))
        outs.append(weights / weights.sum(-1, keepdim=True) @ v_h)
    return torch.cat(outs, -1)


def atf_reference(atf, fc, fd, heads=1, swap_norms=False, swap_concat=False):
    """Eqs. 2-5: V = F_c + W2 GELU(W1 [LN_cd(Attn_c->d) || LN_dc(Attn_d->c)] + b1) + b2."""
    a_cd = attention(linear(fc, atf.q_c), linear(fd, atf.k_d), linear(fd, atf.v_d), heads)  # CLIP queries DINO
    a_dc = attention(linear(fd, atf.q_d), linear(fc, atf.k_c), linear(fc, atf.v_c), heads)  # DINO queries CLIP
    ln_cd, ln_dc = (atf.ln_dc, atf.ln_cd) if swap_norms else (atf.ln_cd, atf.ln_dc)
    parts = [layer_norm(a_cd, ln_cd), layer_norm(a_dc, ln_dc)]
    z = torch.cat(parts[::-1] if swap_concat else parts, -1)
    return fc + linear(gelu(linear(z, atf.mlp[0])), atf.mlp[2])


def pair_probability(v, t, tau, n=3):
    """Eqs. 13-14 per token, mean over the 3 (normal_i, abnormal_i) pairs: exp(c_a/tau) / (exp(c_n/tau) + exp(c_a/tau))."""
    v = v / v.norm(dim=-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True)
    cos = torch.einsum("bnd,bpd->bnp", v, t)
    ea, en = torch.exp(cos[..., n:] / tau), torch.exp(cos[..., :n] / tau)
    return (ea / (en + ea)).mean(-1)


def focal_reference(p, y, gamma):
    p = p.clamp(1e-6, 1 - 1e-6)
    return (-(y * (1 - p) ** gamma * torch.log(p) + (1 - y) * p ** gamma * torch.log(1 - p))).mean()


def randomise(*modules, seed=0):
    """Non-trivial values for every parameter (LayerNorm scales around 1, everything else around 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for name, p in m.named_parameters():
                scale_like = isinstance(m, torch.nn.LayerNorm) and name == "weight"
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if scale_like else 0.0))


# ---- HSVS (Eqs. 1-5) ---------------------------------------------------------------------------------------------
def test_shapes_at_each_stage():
    m = make().eval()
    b = batch()
    f_cl, f_cg, f_dl, f_dg = m.encode_backbones(b)
    N = GRID * GRID
    assert [t.shape for t in f_cl] == [torch.Size([3, N, D])] * 4 and f_cg.shape == (3, D)
    assert [t.shape for t in f_dl] == [torch.Size([3, N, 128])] * 4 and f_dg.shape == (3, 128)
    t_init = m.text_init(["bottle", "bottle", "metal nut"], "cpu")
    assert t_init.shape == (3, 6, D) and torch.allclose(t_init.norm(dim=-1), torch.ones(3, 6), atol=1e-5)
    assert torch.equal(t_init[0], t_init[1]) and not torch.equal(t_init[0], t_init[2])  # T_init depends on the class only
    out = m(b)
    assert out.anomaly_map.shape == (3, SIZE, SIZE) and out.score.shape == (3,)
    assert out.aux["abn_cos_maps"].shape == (3, 4, GRID, GRID)


def test_zero_initialised_fusion_starts_at_the_clip_features():
    """Eq. 5 with the last MLP layer zero-initialised: V_syn = F_c at step 0 (SSVP.md §11 #4)."""
    atf = ATF(32, 64, 32, 1, 32, zero_init=True)
    fc, fd = torch.randn(2, 10, 32), torch.randn(2, 10, 64)
    assert torch.equal(atf(fc, fd), fc)


@pytest.mark.parametrize("heads", [1, 2])
def test_atf_matches_equations_2_to_5(heads):
    """Non-trivial LayerNorm affines and MLP weights: swapping the two LayerNorms or the concat order must fail."""
    torch.manual_seed(1)
    atf = ATF(8, 6, 4 * heads, heads, 5, zero_init=False)
    randomise(atf.ln_cd, atf.ln_dc, atf.mlp, seed=1)
    fc, fd = torch.randn(2, 7, 8), torch.randn(2, 7, 6)
    out = atf(fc, fd)
    assert torch.allclose(out, atf_reference(atf, fc, fd, heads), atol=1e-5)
    for wrong in (dict(swap_norms=True), dict(swap_concat=True)):
        assert (out - atf_reference(atf, fc, fd, heads, **wrong)).abs().max() > 1e-2, wrong


def test_global_atf_on_single_tokens_is_the_degenerate_fusion():
    """Softmax over one key is 1: Attn_c->d = F_d W_d^V (SSVP.md §2.2 note)."""
    torch.manual_seed(2)
    atf = ATF(8, 6, 4, 1, 5, zero_init=False)
    randomise(atf.ln_cd, atf.ln_dc, seed=2)
    fc, fd = torch.randn(3, 1, 8), torch.randn(3, 1, 6)
    z = torch.cat([layer_norm(linear(fd, atf.v_d), atf.ln_cd), layer_norm(linear(fc, atf.v_c), atf.ln_dc)], -1)
    assert torch.allclose(atf(fc, fd), fc + linear(gelu(linear(z, atf.mlp[0])), atf.mlp[2]), atol=1e-5)


def _features(m, seed=0, B=2):
    g = torch.Generator().manual_seed(seed)
    N = GRID * GRID
    f_cl = [torch.randn(B, N, D, generator=g) for _ in range(4)]
    f_dl = [torch.randn(B, N, 128, generator=g) for _ in range(4)]
    return f_cl, torch.randn(B, D, generator=g), f_dl, torch.randn(B, 128, generator=g)


def test_hsvs_pairs_each_clip_layer_with_its_dino_layer_and_fuses_the_globals_separately():
    m = make(zero_init_fusion=False)
    f_cl, f_cg, f_dl, f_dg = _features(m)
    v_local, v_global = m.hsvs(f_cl, f_cg, f_dl, f_dg)
    for l in range(4):
        assert torch.allclose(v_local[l], atf_reference(m.local_fusion[l], f_cl[l], f_dl[l]), atol=1e-4)
    expected = atf_reference(m.global_fusion, f_cg[:, None], f_dg[:, None])[:, 0]
    assert torch.allclose(v_global, expected, atol=1e-4)


def test_joint_global_mode_runs_the_last_atf_on_cls_and_patches():
    """§11 #5 `joint`: the last layer pair's ATF sees [CLS; patches]; its first output token is V_g."""
    m = make(zero_init_fusion=False, global_mode="joint")
    f_cl, f_cg, f_dl, f_dg = _features(m, seed=1)
    v_local, v_global = m.hsvs(f_cl, f_cg, f_dl, f_dg)
    joint = atf_reference(m.local_fusion[-1], torch.cat([f_cg[:, None], f_cl[-1]], 1), torch.cat([f_dg[:, None], f_dl[-1]], 1))
    assert torch.allclose(v_global, joint[:, 0], atol=1e-4) and torch.allclose(v_local[-1], joint[:, 1:], atol=1e-4)
    assert torch.allclose(v_local[0], atf_reference(m.local_fusion[0], f_cl[0], f_dl[0]), atol=1e-4)


def test_concat_fusion_and_no_fusion():
    """Table 3 model B: V = F_c + W [F_c || F_d] + b; model A-like `none`: the CLIP features unchanged."""
    m = make(fusion="concat", zero_init_fusion=False)
    f_cl, f_cg, f_dl, f_dg = _features(m, seed=2)
    v_local, v_global = m.hsvs(f_cl, f_cg, f_dl, f_dg)
    proj = m.local_fusion[2].proj
    assert torch.allclose(v_local[2], f_cl[2] + torch.cat([f_cl[2], f_dl[2]], -1) @ proj.weight.T + proj.bias, atol=1e-5)
    gp = m.global_fusion.proj
    assert torch.allclose(v_global, f_cg + torch.cat([f_cg, f_dg], -1) @ gp.weight.T + gp.bias, atol=1e-5)
    none = make(fusion="none")
    v_local, v_global = none.hsvs(f_cl, f_cg, None, None)
    assert none.aux is None and v_local is f_cl and v_global is f_cg


def test_learned_tap_projection_is_a_linear_map_of_the_raw_residual_stream():
    """§11 #3 `learned`: F_c^l = W_l x + b_l on the raw (pre-ln_post) patch tokens of tap l."""
    m = make(clip_tap_projection="learned").eval()
    b = batch()
    f_cl, *_ = m.encode_backbones(b)
    with torch.no_grad():
        taps = m.clip.image_features(b["image"]).taps
    for l in range(4):
        assert torch.allclose(f_cl[l], linear(taps[l][:, 1:], m.tap_proj[l]), atol=1e-5)


def test_background_vectors_are_shared_within_each_prompt_pair():
    """§11 #6: [V]_bg of pair i enters normal_i and abnormal_i only (`pair`); one [V]_bg for all six (`all`)."""
    for sharing, changed in (("pair", [0, 3]), ("all", [0, 1, 2, 3, 4, 5])):
        m = make(bg_sharing=sharing)
        before = m.text_init(["bottle"], "cpu")
        with torch.no_grad():
            m.bg[0] += 0.5
        moved = (m.text_init(["bottle"], "cpu") - before).norm(dim=-1)[0]
        assert [i for i in range(6) if moved[i] > 0] == changed, sharing  # prompts are encoded independently


# ---- VCPG (Eqs. 7-12) --------------------------------------------------------------------------------------------
def test_reparameterisation_on_explicit_numbers():
    """Eq. 8: z_i = mu + eps_i * exp(log sigma^2 / 2)."""
    mu = torch.tensor([[1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])  # sigma = (1, 2)
    eps = torch.tensor([[[1.0, 1.0], [-1.0, 0.5]]])
    assert torch.allclose(VCPG.reparameterise(mu, logvar, eps), torch.tensor([[[2.0, 4.0], [0.0, 3.0]]]))


def test_cross_attention_over_five_latent_samples_with_alpha():
    """Eqs. 10-11 with n = 5: Q from T_init (W_Q: d -> d_k), K and V from z (W_K: d_z -> d_k, W_V: d_z -> d);
    delta = softmax(Q K^T / sqrt(d_k)) V; T_final = LN(T_init + alpha delta) with a learned LN affine."""
    torch.manual_seed(3)
    d, dz, dk = 16, 12, 8
    vcpg = VCPG(d, dz, 8, dk)
    randomise(vcpg.norm, seed=3)
    with torch.no_grad():
        vcpg.alpha.fill_(0.7)
    t_init = F.normalize(torch.randn(2, 6, d), dim=-1)
    z = torch.randn(2, 5, dz)
    q, k, v = t_init @ vcpg.w_q.weight.T + vcpg.w_q.bias, z @ vcpg.w_k.weight.T + vcpg.w_k.bias, z @ vcpg.w_v.weight.T + vcpg.w_v.bias
    weights = torch.exp(q @ k.transpose(1, 2) / math.sqrt(dk))
    weights = weights / weights.sum(-1, keepdim=True)  # (B, 6 prompts, 5 samples)
    expected = layer_norm(t_init + 0.7 * (weights @ v), vcpg.norm)
    assert torch.allclose(vcpg(t_init, z), expected, atol=1e-5)
    delta = weights @ v
    assert (delta[:, 0] - delta[:, 1]).abs().max() > 1e-3  # with n > 1 every prompt gets its own delta


def test_alpha_zero_gives_layernorm_of_t_init():
    """Eq. 11 at initialisation: T_final = LN(T_init)."""
    vcpg = VCPG(16, 16, 8, 16)
    assert vcpg.alpha.item() == 0.0
    t_init = F.normalize(torch.randn(2, 6, 16), dim=-1)
    assert torch.allclose(vcpg(t_init, torch.randn(2, 5, 16)), F.layer_norm(t_init, (16,)), atol=1e-6)


def test_single_latent_token_injects_the_same_delta_into_every_prompt():
    """Eq. 10 with one key: the softmax is 1, delta = z W_V + b for all six prompts (the degeneracy of §3.3)."""
    torch.manual_seed(3)
    vcpg = VCPG(16, 16, 8, 16)
    with torch.no_grad():
        vcpg.alpha.fill_(1.0)
    t_init = F.normalize(torch.randn(2, 6, 16), dim=-1)
    z = torch.randn(2, 1, 16)
    expected = layer_norm(t_init + linear(z, vcpg.w_v), vcpg.norm)
    assert torch.allclose(vcpg(t_init, z), expected, atol=1e-5)


def _posterior(m, b):
    with torch.no_grad():
        f = m.encode_backbones(b)
        return m.vcpg.posterior(m.hsvs(*f)[1])


def test_latent_tokens_in_training_and_at_evaluation():
    """M1: training attends over n fresh samples; evaluation (default `mu_and_samples`) over [mu; n samples] drawn
    with fixed noise, the same for every image; `mu` gives mu alone; `samples` the n samples only."""
    m = make(n_latent_samples=5)
    b = batch()
    mu, logvar = _posterior(m, b)
    sigma = torch.exp(0.5 * logvar)
    m.train()
    torch.manual_seed(7)
    z1 = m.latent_tokens(mu, logvar)
    torch.manual_seed(7)
    eps = torch.randn(3, 5, mu.shape[1])
    assert torch.allclose(z1, mu[:, None] + eps * sigma[:, None], atol=1e-6)  # global RNG, reseeded per step
    assert not torch.equal(m.latent_tokens(mu, logvar), z1)  # fresh draws every call

    m.eval()
    fixed = torch.randn(5, mu.shape[1], generator=torch.Generator().manual_seed(0))
    samples = mu[:, None] + fixed[None] * sigma[:, None]
    torch.manual_seed(123)
    z = m.latent_tokens(mu, logvar)
    torch.manual_seed(456)
    assert torch.equal(m.latent_tokens(mu, logvar), z)  # independent of the global RNG
    assert z.shape == (3, 6, mu.shape[1]) and torch.equal(z[:, 0], mu)
    assert torch.allclose(z[:, 1:], samples, atol=1e-6)
    assert torch.allclose(m.latent_tokens(mu[1:2], logvar[1:2]), z[1:2])  # an image's tokens do not depend on its batch
    assert torch.equal(make(eval_latent="mu").eval().latent_tokens(mu, logvar), mu[:, None])
    assert torch.allclose(make(eval_latent="samples").eval().latent_tokens(mu, logvar), samples, atol=1e-6)
    other = make(eval_noise_seed=1).eval().latent_tokens(mu, logvar)
    assert torch.equal(other[:, 0], mu) and not torch.allclose(other[:, 1:], samples)


def test_evaluation_is_deterministic_and_per_image():
    """The scores and maps of an image are the same in any batch and under any global random state."""
    m = make()
    with torch.no_grad():
        m.vcpg.alpha.fill_(2.0)  # make the latent injection matter
    m.eval()
    b = batch()
    with torch.no_grad():
        torch.manual_seed(1)
        full = m(b)
        torch.manual_seed(2)
        single = m({k: v[1:2] for k, v in b.items()})
    assert torch.allclose(full.score[1:2], single.score, atol=1e-6)
    assert torch.allclose(full.anomaly_map[1:2], single.anomaly_map, atol=1e-6)


def test_eval_latent_choice_changes_t_final_once_alpha_is_learned():
    b = batch()
    finals = {}
    for mode in ("mu_and_samples", "mu", "samples"):
        m = make(eval_latent=mode)
        with torch.no_grad():
            m.vcpg.alpha.fill_(2.0)
            finals[mode] = m.eval()(b).aux["t_final"]
    assert (finals["mu"] - finals["mu_and_samples"]).abs().max() > 1e-4
    assert (finals["samples"] - finals["mu_and_samples"]).abs().max() > 1e-4


# ---- VTAM (Eqs. 13-19) -------------------------------------------------------------------------------------------
def _vtam_inputs(seed=0, B=2):
    g = torch.Generator().manual_seed(seed)
    N = GRID * GRID
    # tokens of unequal norms, so that normalising them (Eq. 13) or not (Eq. 16) matters
    v_local = [torch.randn(B, N, D, generator=g) * (0.5 + 3 * torch.rand(B, N, 1, generator=g)) for _ in range(4)]
    v_global = torch.randn(B, D, generator=g)
    t = F.normalize(torch.randn(B, 6, D, generator=g), dim=-1)
    return v_local, v_global, t


def _set_temperatures(m, tau_pixel, tau_image):
    with torch.no_grad():
        m.logit_scale_pixel.fill_(math.log(1 / tau_pixel))
        m.logit_scale_image.fill_(math.log(1 / tau_image))


def test_layer_maps_and_dual_gates_on_fixed_gate_weights():
    """Eqs. 13-17: P^(l) = mean over pairs of the 2-way softmax at tau; w = softmax(MLP(V_g)) with fixed weights
    (final layer zero, bias log(1, 2, 3, 4): w = (0.1, 0.2, 0.3, 0.4)); M^(l) = sigmoid(w_l . V^(l) + b_l) on the
    un-normalised V_local with each layer's own gate; P_map = sum_l w_l M^(l) P^(l)."""
    m = make()
    _set_temperatures(m, 0.05, 0.2)
    v_local, v_global, t = _vtam_inputs()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        m.global_gate[2].weight.zero_()
        m.global_gate[2].bias.copy_(torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])))
        for gate in m.local_gates:
            gate.weight.copy_(torch.randn(gate.weight.shape, generator=g) * 0.1)
            gate.bias.copy_(torch.randn((), generator=g))
    layer_maps, p_map, w_scale = m.anomaly_maps(v_local, v_global, t)
    assert torch.allclose(w_scale, torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 2), atol=1e-6)
    expected = 0
    for l in range(4):
        p_l = pair_probability(v_local[l], t, 0.05)
        assert torch.allclose(layer_maps[l], p_l.view(2, 1, GRID, GRID), atol=1e-5)
        gate = m.local_gates[l]
        m_l = torch.sigmoid(v_local[l] @ gate.weight.view(1, D).T + gate.bias)[..., 0]
        expected = expected + [0.1, 0.2, 0.3, 0.4][l] * m_l * p_l
    assert torch.allclose(p_map, expected.view(2, 1, GRID, GRID), atol=1e-5)


def test_global_gate_is_an_mlp_of_v_global():
    """Eq. 15 with random fixed weights: w = softmax(W2 GELU(W1 V_g + b1) + b2)."""
    m = make()
    randomise(m.global_gate, seed=6)
    v_local, v_global, t = _vtam_inputs(seed=1)
    logits = linear(gelu(linear(v_global, m.global_gate[0])), m.global_gate[2])
    expected = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    assert torch.allclose(m.anomaly_maps(v_local, v_global, t)[2], expected, atol=1e-5)


def test_shared_local_gate_mean_embedding_and_no_vtam():
    """§11 #20 `shared`: one 1x1 gate for every layer; §11 #11 `mean_embedding`: the softmax against the normalised
    mean prompt of each state; no VTAM: P_map = the uniform mean of the layer maps."""
    v_local, v_global, t = _vtam_inputs(seed=2)
    m = make(local_gate="shared")
    assert len(m.local_gates) == 1
    _, p_map, w_scale = m.anomaly_maps(v_local, v_global, t)
    gate = m.local_gates[0]
    expected = sum(w_scale[:, l, None] * torch.sigmoid(v_local[l] @ gate.weight.view(1, D).T + gate.bias)[..., 0]
                   * pair_probability(v_local[l], t, 0.07) for l in range(4))
    assert torch.allclose(p_map, expected.view(2, 1, GRID, GRID), atol=1e-5)

    m = make(prompt_aggregation="mean_embedding", vtam=False)
    t_mean = torch.stack([F.normalize(t[:, :3].mean(1), dim=-1), F.normalize(t[:, 3:].mean(1), dim=-1)], 1)
    layer_maps, p_map, w_scale = m.anomaly_maps(v_local, v_global, t)
    assert w_scale is None
    p = [pair_probability(v, t_mean, 0.07, n=1).view(2, 1, GRID, GRID) for v in v_local]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(layer_maps, p))
    assert torch.allclose(p_map, sum(p) / 4, atol=1e-6)


def test_image_score_is_the_gamma_mix_of_the_global_probability_and_the_map_max():
    """Eqs. 18-19: S_global = <V_g, T_final> as mean over pairs of exp(c_a/tau_img) / (exp(c_n/tau_img) +
    exp(c_a/tau_img)) (its own temperature, §4.3), S_local = max P_map, S = (1 - gamma) S_global + gamma S_local."""
    m = make(gamma=0.3)
    _set_temperatures(m, 0.05, 0.2)
    v_local, v_global, t = _vtam_inputs(seed=3)
    p_map = torch.rand(2, 1, GRID, GRID)
    amap = F.interpolate(p_map, size=(SIZE, SIZE), mode="bilinear", align_corners=True)[:, 0]
    score, parts = m.image_score(p_map, amap, v_global, t)
    s_global = pair_probability(v_global[:, None], t, 0.2)[:, 0]
    s_local = p_map.flatten(1).max(1).values
    assert torch.allclose(parts["s_global"], s_global, atol=1e-6) and torch.equal(parts["s_local"], s_local)
    assert torch.allclose(score, 0.7 * s_global + 0.3 * s_local, atol=1e-6)
    # topk_mean: the mean of the k largest pixels of the upsampled map
    m = make(local_score="topk_mean", local_topk=50)
    score, parts = m.image_score(p_map, amap, v_global, t)
    assert torch.allclose(parts["s_local"], amap.flatten(1).sort(1, descending=True).values[:, :50].mean(1), atol=1e-6)
    # logit_mix: sigmoid((1 - gamma) mean_i (c_a,i - c_n,i) / tau_img + gamma logit(S_local))
    m = make(score_loss="logit_mix")
    score, parts = m.image_score(p_map, amap, v_global, t)
    g = F.normalize(v_global, dim=-1)
    cos = torch.einsum("bd,bpd->bp", g, t)
    logit = 0.5 * ((cos[:, 3:] - cos[:, :3]) / 0.07).mean(1) + 0.5 * torch.log(s_local / (1 - s_local))
    assert torch.allclose(parts["score_logit"], logit, atol=1e-4) and torch.allclose(score, torch.sigmoid(logit), atol=1e-5)
    # without VTAM the image score is S_global alone
    m = make(vtam=False)
    score, parts = m.image_score(p_map, amap, v_global, t)
    assert torch.allclose(score, pair_probability(v_global[:, None], t, 0.07)[:, 0], atol=1e-6)


def test_forward_composes_the_stages():
    """The upsampled map is P_map bilinearly (align_corners) at the image size; T_final is L2-normalised; Table 4's
    per-layer cosines are cos(V_local^(l), t_abn) with t_abn the normalised mean of the abnormal T_final (Eq. 23)."""
    m = make(zero_init_fusion=False).eval()
    b = batch()
    with torch.no_grad():
        out = m(b)
        v_local, _ = m.hsvs(*m.encode_backbones(b))
    up = F.interpolate(out.aux["p_map"], size=(SIZE, SIZE), mode="bilinear", align_corners=True)[:, 0]
    assert torch.allclose(out.anomaly_map, up, atol=1e-6)
    t = out.aux["t_final"]
    assert torch.allclose(t.norm(dim=-1), torch.ones(3, 6), atol=1e-5)
    t_abn = t[:, 3:].mean(1)
    t_abn = t_abn / t_abn.norm(dim=-1, keepdim=True)
    for l in range(4):
        cos = torch.einsum("bnd,bd->bn", v_local[l] / v_local[l].norm(dim=-1, keepdim=True), t_abn)
        assert torch.allclose(out.aux["abn_cos_maps"][:, l], cos.view(3, GRID, GRID), atol=1e-5)


def test_learnable_temperature_clamp():
    m = make(max_logit_scale=100.0)
    with torch.no_grad():
        m.logit_scale_pixel.fill_(math.log(500.0))
        m.logit_scale_image.fill_(math.log(20.0))
    px, img = m.logit_scales()
    assert math.isclose(px.item(), 100.0, rel_tol=1e-5) and math.isclose(img.item(), 20.0, rel_tol=1e-5)
    assert math.isclose(make().logit_scales()[0].item(), 1 / 0.07, rel_tol=1e-5)  # default: no clamp, tau = 0.07


# ---- losses (Eqs. 20-22) -----------------------------------------------------------------------------------------
def test_binary_focal_on_explicit_numbers():
    """Eq. 20: -mean[y (1-p)^g log p + (1-y) p^g log(1-p)]."""
    p = torch.tensor([[0.9, 0.2], [0.6, 0.01]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    terms = [0.1 ** 2 * math.log(0.9), 0.2 ** 2 * math.log(0.8), 0.6 ** 2 * math.log(0.4), 0.99 ** 2 * math.log(0.01)]
    assert math.isclose(binary_focal(p, y, 2.0).item(), -sum(terms) / 4, rel_tol=1e-5)
    assert math.isclose(binary_focal(p, y, 0.0).item(), F.binary_cross_entropy(p, y).item(), rel_tol=1e-5)


def _hand_output(m, requires_grad=False):
    """An Output with chosen values for everything the loss reads (B = 2)."""
    g = torch.Generator().manual_seed(0)
    layer_maps = [torch.rand(2, 1, GRID, GRID, generator=g) for _ in range(4)]
    angles = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9, 1.1], [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]])  # radians
    t_init = torch.zeros(2, 6, D)
    t_init[..., 0] = 1
    t_final = torch.zeros(2, 6, D)
    t_final[..., 0], t_final[..., 1] = torch.cos(angles), torch.sin(angles)
    aux = {"layer_maps": layer_maps, "t_init": t_init.requires_grad_(requires_grad), "t_final": t_final.requires_grad_(requires_grad),
           "mu": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]),
           "logvar": torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]),
           "v_global": torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).requires_grad_(requires_grad),
           "recon": torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]).requires_grad_(requires_grad)}
    amap = torch.rand(2, SIZE, SIZE, generator=g)
    return Output(amap, torch.tensor([0.8, 0.3]), aux), torch.cos(angles)


def _hand_batch():
    mask = torch.zeros(2, SIZE, SIZE)
    mask[0, 20:60, 30:70] = 1
    return {"mask": mask, "label": torch.tensor([1, 0])}


# Eq. 9 on the numbers of _hand_output: reconstruction = sum over dimensions, mean over the batch = (5 + 4) / 2;
# KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum(mu^2 + sigma^2 - 1 - log sigma^2) = 0.5 and 0.5 (5 - log 2), batch mean
RECON = 4.5
KL = (0.5 + 0.5 * (5 - math.log(2.0))) / 2


@pytest.mark.parametrize("beta", [0.1, 0.3])
def test_vae_loss_on_explicit_numbers(beta):
    m = make(beta_kl=beta)
    out, _ = _hand_output(m)
    assert math.isclose(m.loss(out, _hand_batch())["vae"].item(), RECON + beta * KL, rel_tol=1e-6)


def test_margin_regulariser_with_stop_gradient():
    """Eq. 12: L_reg = mean over prompts and batch of max(0, xi - cos(T_final, sg(T_init))); no gradient reaches
    T_init through the anchor, and prompts inside the neighbourhood (cos > xi) get none either."""
    m = make(xi=0.85)
    out, cos = _hand_output(m, requires_grad=True)
    reg = m.loss(out, _hand_batch())["reg"]
    assert math.isclose(reg.item(), torch.clamp(0.85 - cos, min=0).mean().item(), rel_tol=1e-6)
    reg.backward()
    assert out.aux["t_init"].grad is None
    moved = out.aux["t_final"].grad.norm(dim=-1) > 0
    assert torch.equal(moved, cos < 0.85)


def test_total_loss_weights_and_the_segmentation_and_class_terms():
    """Eq. 22: total = seg + cls + lambda1 L_VAE + lambda2 L_reg (1.0 and 0.5); seg = focal on the fused map plus
    focal on every upsampled layer map (§11 #12 `both`); cls = BCE on the clamped S_final (§11 #13 b)."""
    b = _hand_batch()
    for weights in (dict(), dict(lambda_vae=2.0, lambda_reg=3.0)):
        m = make(**weights)
        out, cos = _hand_output(m)
        parts = m.loss(out, b)
        up = [F.interpolate(p, size=(SIZE, SIZE), mode="bilinear", align_corners=True)[:, 0] for p in out.aux["layer_maps"]]
        seg = focal_reference(out.anomaly_map, b["mask"], 2.0) + sum(focal_reference(u, b["mask"], 2.0) for u in up)
        cls = -(math.log(0.8) + math.log(0.7)) / 2
        reg = torch.clamp(0.85 - cos, min=0).mean().item()
        assert math.isclose(parts["seg"].item(), seg.item(), rel_tol=1e-5)
        assert math.isclose(parts["cls"].item(), cls, rel_tol=1e-5)
        lam_vae, lam_reg = weights.get("lambda_vae", 1.0), weights.get("lambda_reg", 0.5)
        total = seg.item() + cls + lam_vae * (RECON + 0.1 * KL) + lam_reg * reg
        assert math.isclose(parts["total"].item(), total, rel_tol=1e-5)
    m = make(seg_loss="fused")
    out, _ = _hand_output(m)
    assert math.isclose(m.loss(out, b)["seg"].item(), focal_reference(out.anomaly_map, b["mask"], 2.0).item(), rel_tol=1e-5)
    m = make(score_loss="literal")
    assert math.isclose(m.loss(out, b)["cls"].item(), -(math.log(torch.sigmoid(torch.tensor(0.8)).item())
                                                       + math.log(1 - torch.sigmoid(torch.tensor(0.3)).item())) / 2, rel_tol=1e-5)
    m = make(vcpg=False)
    assert set(m.loss(out, b)) == {"seg", "cls", "total"}


def test_reconstruction_gradient_reaches_v_global_unless_detached():
    """M2: by default (end-to-end) d L_VAE / d V_g = 2 (V_g - D(z)) / B; `detach_vae_target` stops it."""
    out, _ = _hand_output(make(), requires_grad=True)
    make().loss(out, _hand_batch())["vae"].backward()
    assert torch.allclose(out.aux["v_global"].grad, (out.aux["v_global"] - out.aux["recon"]).detach())  # 2 (.) / 2
    out, _ = _hand_output(make(), requires_grad=True)
    make(detach_vae_target=True).loss(out, _hand_batch())["vae"].backward()
    assert out.aux["v_global"].grad is None


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


# ---- precision, configuration, backbones -------------------------------------------------------------------------
def test_bf16_backbones_forward_and_training_step_on_cpu():
    """backbone.precision=bf16 (the GPU default is bf16 autocast): maps within 2e-2 of fp32, one finite step."""
    b = batch()
    models = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_backbone()
        cfg.precision = precision
        torch.manual_seed(0)
        models[precision] = SSVP(SSVPOptions(vae_hidden=32, zero_init_fusion=False), cfg, SIZE).eval()
    with torch.no_grad():
        ref, low = models["fp32"](b), models["bf16"](b)
    assert low.anomaly_map.dtype == torch.float32
    assert (low.anomaly_map - ref.anomaly_map).abs().max() < 2e-2
    assert (low.score - ref.score).abs().max() < 2e-2
    m = models["bf16"].train()
    params = [p for p in m.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss = m.loss(m(b), b)["total"]
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in params) and any(not torch.equal(p, q) for p, q in zip(params, before))


def test_model_a_has_no_fusion_vcpg_or_gates():
    m = make(fusion="none", vcpg=False, vtam=False)
    names = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert names == {"bg", "state_normal", "state_abnormal", "logit_scale_pixel", "logit_scale_image"}


def test_invalid_option_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion"):
        make(fusion="sum")
    with pytest.raises(ConfigError, match="eval_latent"):
        make(eval_latent="mean")


@pytest.mark.slow
def test_paper_backbones_tap_indices_and_normalisation():
    """Paper profile (random weights): CLIP taps after 0-based blocks 5, 11, 17, 23 (layers 6, 12, 18, 24, 1-based)
    with OpenAI CLIP's mean/std; DINOv3 ViT-L/16 taps at 0-based 3, 6, 9, 11 with ImageNet's mean/std."""
    from ssvp_core.backbones import AuxBackbone, ClipBackbone
    from ssvp_core.config import ClipConfig, DinoConfig

    clip = ClipBackbone(ClipConfig(pretrained="none"))
    assert clip.tap_indices == [5, 11, 17, 23] and len(clip.blocks) == 24
    assert torch.allclose(clip.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))
    assert torch.allclose(clip.std.flatten(), torch.tensor([0.26862954, 0.26130258, 0.27577711]))
    del clip
    dino = AuxBackbone(DinoConfig(pretrained="none"))
    assert list(dino.cfg.layers) == [3, 6, 9, 11] and dino.cfg.norm
    assert torch.allclose(dino.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(dino.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
