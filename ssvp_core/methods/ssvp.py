"""SSVP: Synergistic Semantic-Visual Prompting (arXiv 2601.09147), Eqs. 1-22.

    HSVS  (Eqs. 1-5)   one ATF (dual-path cross-attention CLIP<->DINO, LN, concat, 2-layer GELU MLP, residual onto
                       CLIP) per tapped layer pair, plus a global ATF on the two global tokens.
    prompts (Eq. 6)    3 normal + 3 abnormal learnable prompts [V]_bg [V]_state [CLASS]; [V]_bg shared per pair.
    VCPG  (Eqs. 7-12)  VAE on V_g; n reparameterised latent samples as keys/values of the text->latent
                       cross-attention (at evaluation mu joins them as one extra token and the samples use fixed
                       noise, SSVP.md §3.3); T_final = LN(T_init + alpha * delta), alpha initialised to 0; margin
                       regulariser with a stop-gradient on T_init.
    VTAM  (Eqs. 13-19) per-layer 2-way softmax maps; AnomalyMoE: softmax global gate over layers, sigmoid 1x1
                       local gate per layer; S_final = (1 - gamma) S_global + gamma S_local.
    losses (Eqs. 20-22) focal (fused + per-layer maps) + BCE on S_final + lambda1 L_VAE + lambda2 L_reg.

Every ambiguity of SSVP.md §11 is a field of `SSVPOptions`; the comment gives its §11 number. Ablations:
Table 3 = `fusion` (none | concat | atf), `vcpg`, `vtam`; Table 5 = the auxiliary backbone (`backbone.dino`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context, get_aux, get_clip, resample_tokens
from ..data.loader import batch_view
from ..errors import ConfigError
from ..prompts import PromptEncoder, placeholder_template, trunc_normal
from .base import Detector, Output, tokens_to_grid, upsample
from .losses import binary_focal


@dataclass
class SSVPOptions:
    # HSVS (Eqs. 1-5)
    fusion: Literal["atf", "concat", "none"] = "atf"  # atf | concat | none (Table 3 models C / B / A)
    clip_tap_projection: Literal["frozen", "learned"] = "frozen"  # §11 #3: frozen = ln_post then proj (768-d); learned = trainable Linear(1024 -> 768)
    head_dim: int = 0  # §11 #4: d_head; 0 = CLIP joint width (768)
    num_heads: int = 1  # §11 #4: single head (Eq. 3 scales by sqrt(d_head)); 8 is the multi-head alternative
    mlp_hidden: int = 0  # §11 #4: 0 = joint width (MLP 1536 -> 768 -> 768)
    zero_init_fusion: bool = True  # §11 #4: V_syn starts equal to the CLIP features
    global_mode: Literal["separate", "joint"] = "separate"  # §11 #5: separate global ATF on the two global tokens | joint ([CLS; patches] of the last pair)
    # prompts (Eq. 6)
    n_prompts: int = 3  # per state (3 normal + 3 abnormal)
    bg_len: int = 5  # §11 #6
    state_len: int = 5  # §11 #6
    bg_sharing: Literal["pair", "all"] = "pair"  # §11 #6: pair (one [V]_bg per prompt index) | all (one for all six)
    # VCPG (Eqs. 7-12)
    vcpg: bool = True
    vae_hidden: int = 512  # §11 #7
    latent_dim: int = 0  # §11 #7: 0 = joint width
    n_latent_samples: int = 5  # §11 #8: latent samples used as keys/values (1 = the literal, degenerate version)
    # §11 #9 / §3.3, keys and values of Eq. 10 at evaluation: mu_and_samples = mu as one extra token beside n samples |
    # mu = mu alone (softmax over one key is 1: every prompt gets the same delta, a case training never sees) |
    # samples = n samples, as in training. Evaluation samples use fixed noise (eval_noise_seed), so they are deterministic
    eval_latent: Literal["mu_and_samples", "mu", "samples"] = "mu_and_samples"
    eval_noise_seed: int = 0
    attn_dim: int = 0  # d_k of Eq. 10; 0 = joint width
    beta_kl: float = 0.1  # Eq. 9
    lambda_vae: float = 1.0  # Eq. 22
    lambda_reg: float = 0.5  # Eq. 22
    xi: float = 0.85  # Eq. 12
    # Eq. 9's target V_g: not detached (end-to-end, as the paper trains; it marks a stop-gradient only in Eq. 12).
    # True stops the target path only; the encoder path (mu, log sigma^2 of V_g) still reaches V_g either way
    detach_vae_target: bool = False
    # VTAM (Eqs. 13-19)
    vtam: bool = True
    tau: float = 0.07  # §11 #10: initial temperature of Eq. 14 (and of the image score)
    learnable_tau: bool = True  # §11 #10
    lr_temperature: float = 0.01  # Bayes-PFL's learning rate for its temperatures
    max_logit_scale: float = 0.0  # upper clamp of the learnable 1/tau; 0 = none (Bayes-PFL), 100 = CLIP's clamp
    prompt_aggregation: Literal["pairwise", "mean_embedding"] = "pairwise"  # §11 #11: pairwise softmax then mean | mean_embedding per state
    gate_hidden: int = 0  # F_gate^global hidden width; 0 = joint width / 2
    local_gate: Literal["per_layer", "shared"] = "per_layer"  # §11 #20: per_layer | shared
    local_gate_bias: float = 2.0  # §11 #20: sigmoid(2) = 0.88 at start
    gamma: float = 0.5  # Eq. 19
    local_score: Literal["max", "topk_mean"] = "max"  # §11 #14: max (Eq. 18) | topk_mean (of the upsampled map)
    local_topk: int = 2000
    # losses (Eqs. 20-22)
    seg_loss: Literal["both", "fused", "per_layer"] = "both"  # §11 #12: both (fused + per layer) | fused (Algorithm 3) | per_layer (Eq. 20)
    focal_gamma: float = 2.0  # §11 #12
    score_loss: Literal["clamped_bce", "literal", "logit_mix"] = "clamped_bce"  # §11 #13: clamped_bce | literal (BCE(sigmoid(S))) | logit_mix


def validate(options: SSVPOptions) -> None:
    """Checks beyond the Literal choices (those are checked for every method by Detector)."""
    if options.n_latent_samples < 1:
        raise ConfigError("ssvp option n_latent_samples must be >= 1")


class ATF(nn.Module):
    """Adaptive token fusion, Eqs. 2-5: V = F_c + MLP([LN(Attn_{c->d}) || LN(Attn_{d->c})])."""

    def __init__(self, dc: int, dd: int, dh: int, heads: int, hidden: int, zero_init: bool):
        super().__init__()
        if dh % heads:
            raise ConfigError(f"ssvp head_dim {dh} is not divisible by num_heads {heads}")
        self.heads = heads
        self.q_c, self.k_c, self.v_c = (nn.Linear(dc, dh, bias=False) for _ in range(3))
        self.q_d, self.k_d, self.v_d = (nn.Linear(dd, dh, bias=False) for _ in range(3))
        self.ln_cd, self.ln_dc = nn.LayerNorm(dh), nn.LayerNorm(dh)
        self.mlp = nn.Sequential(nn.Linear(2 * dh, hidden), nn.GELU(), nn.Linear(hidden, dc))
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def _attend(self, q, k, v):
        B, Nq, D = q.shape
        h = self.heads
        split = lambda t: t.view(B, t.shape[1], h, D // h).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # softmax(QK^T / sqrt(d)) V, Eq. 3
        return out.transpose(1, 2).reshape(B, Nq, D)

    def forward(self, fc: torch.Tensor, fd: torch.Tensor) -> torch.Tensor:
        a_cd = self._attend(self.q_c(fc), self.k_d(fd), self.v_d(fd))  # CLIP queries DINO
        a_dc = self._attend(self.q_d(fd), self.k_c(fc), self.v_c(fc))  # DINO queries CLIP
        z = torch.cat([self.ln_cd(a_cd), self.ln_dc(a_dc)], dim=-1)  # Eq. 4
        return fc + self.mlp(z)  # Eq. 5


class ConcatFusion(nn.Module):
    """Table 3 model B: naive fusion, V = F_c + Linear([F_c || F_d])."""

    def __init__(self, dc: int, dd: int, zero_init: bool):
        super().__init__()
        self.proj = nn.Linear(dc + dd, dc)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, fc, fd):
        return fc + self.proj(torch.cat([fc, fd], dim=-1))


def inference_block(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Bayes-PFL's InferenceBlock shape: Linear -> Softplus -> Linear -> Softplus -> Linear (SSVP.md §11 #7)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(), nn.Linear(hidden, d_out))


class VCPG(nn.Module):
    """Vision-conditioned prompt generator, Eqs. 7-12."""

    def __init__(self, d: int, dz: int, hidden: int, dk: int):
        super().__init__()
        self.f_mu = inference_block(d, hidden, dz)  # Eq. 7
        self.f_logvar = inference_block(d, hidden, dz)
        self.decoder = inference_block(dz, hidden, d)  # D_theta of Eq. 9
        self.w_q, self.w_k, self.w_v = nn.Linear(d, dk), nn.Linear(dz, dk), nn.Linear(dz, d)  # Eq. 10
        self.alpha = nn.Parameter(torch.zeros(()))  # Eq. 11, initialised to 0
        self.norm = nn.LayerNorm(d)

    def posterior(self, v_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 7: (mu, log sigma^2) of q(z | V_g); log sigma^2 clamped to [-10, 10] against overflow in exp."""
        return self.f_mu(v_g), self.f_logvar(v_g).clamp(-10.0, 10.0)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 8 for n draws at once: z_i = mu + eps_i * exp(log sigma^2 / 2); eps (B, n, dz) -> z (B, n, dz)."""
        return mu[:, None] + eps * torch.exp(0.5 * logvar)[:, None]

    def forward(self, t_init: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """T_init (B, P, D) queries the latent tokens z (B, K, dz): Eqs. 10-11."""
        q, k, v = self.w_q(t_init), self.w_k(z), self.w_v(z)
        delta = F.scaled_dot_product_attention(q, k, v)  # Eq. 10: softmax(Q K^T / sqrt(d_k)) V
        return self.norm(t_init + self.alpha * delta)  # Eq. 11


class SSVP(Detector):
    name = "ssvp"
    uses_backbones = ("clip", "dino")
    eval_aux_keys = ("abn_cos_maps", "t_init", "t_final")

    def __init__(self, options: SSVPOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        validate(options)
        o = options
        self.clip = get_clip(backbone.clip, backbone.compile)
        self.aux = get_aux(backbone.dino, backbone.compile) if o.fusion != "none" else None
        d = self.clip.embed_dim
        n_layers = len(backbone.clip.layers)
        if o.fusion != "none" and len(backbone.dino.layers) != n_layers:
            raise ConfigError(f"ssvp pairs CLIP layers {list(backbone.clip.layers)} with auxiliary layers "
                              f"{list(backbone.dino.layers)}: give both the same number of layers")
        self.tap_proj = None
        if o.clip_tap_projection == "learned":
            self.tap_proj = nn.ModuleList(nn.Linear(self.clip.width, d) for _ in range(n_layers))
        dd = self.aux.width if self.aux is not None else 0
        dh, hidden = o.head_dim or d, o.mlp_hidden or d
        if o.fusion == "atf":
            self.local_fusion = nn.ModuleList(ATF(d, dd, dh, o.num_heads, hidden, o.zero_init_fusion) for _ in range(n_layers))
            self.global_fusion = ATF(d, dd, dh, o.num_heads, hidden, o.zero_init_fusion) if o.global_mode == "separate" else None
        elif o.fusion == "concat":
            self.local_fusion = nn.ModuleList(ConcatFusion(d, dd, o.zero_init_fusion) for _ in range(n_layers))
            self.global_fusion = ConcatFusion(d, dd, o.zero_init_fusion)
        # Eq. 6: learnable [V]_bg and [V]_state (Bayes-PFL initialisation, SSVP.md §3.1)
        w = self.clip.text_width
        self.prompt_encoder = PromptEncoder(self.clip)
        self.bg = trunc_normal((o.n_prompts if o.bg_sharing == "pair" else 1, o.bg_len, w))
        self.state_normal = trunc_normal((o.n_prompts, o.state_len, w), mean=0.5)
        self.state_abnormal = trunc_normal((o.n_prompts, o.state_len, w), mean=-0.5)
        if o.vcpg:
            self.vcpg = VCPG(d, o.latent_dim or d, o.vae_hidden, o.attn_dim or d)
        log_scale = math.log(1.0 / o.tau)
        self.logit_scale_pixel = nn.Parameter(torch.tensor(log_scale), requires_grad=o.learnable_tau)
        self.logit_scale_image = nn.Parameter(torch.tensor(log_scale), requires_grad=o.learnable_tau)
        if o.vtam:
            gh = o.gate_hidden or max(1, d // 2)
            self.global_gate = nn.Sequential(nn.Linear(d, gh), nn.GELU(), nn.Linear(gh, n_layers))  # Eq. 15
            n_local = n_layers if o.local_gate == "per_layer" else 1
            self.local_gates = nn.ModuleList(nn.Conv2d(d, 1, 1) for _ in range(n_local))  # Eq. 16
            for g in self.local_gates:
                nn.init.constant_(g.bias, o.local_gate_bias)

    # ---- bookkeeping ---------------------------------------------------------------------------------------
    def input_sizes(self) -> list[int]:
        sizes = [self.backbone_cfg.clip.image_size]
        if self.aux is not None:
            sizes.append(self.backbone_cfg.dino.image_size)
        return sizes

    def frozen_modules(self):
        return [m for m in (self.clip, self.aux) if m is not None]

    def prompt_parameters(self):
        return [self.bg, self.state_normal, self.state_abnormal]

    def temperature_parameters(self):
        return [self.logit_scale_pixel, self.logit_scale_image]

    # ---- stages --------------------------------------------------------------------------------------------
    cacheable = True  # both backbones are frozen and see no augmentation

    def feature_spec(self) -> dict:
        return {"clip_taps": "raw" if self.tap_proj is not None else "ln_post_proj", "aux": self.aux is not None}

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 1: CLIP taps (B, L, N, D) in the joint space (raw (B, L, N, W) when `clip_tap_projection=learned`),
        the CLIP global token (B, D) and, with an auxiliary backbone, its taps on the CLIP grid and its CLS."""
        x_clip = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x_clip.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x_clip)
            taps = [t[:, 1:] for t in feats.taps]
            out = {"clip_global": self.clip.project(feats.final[:, 0]).float(),
                   "clip_local": torch.stack([t if self.tap_proj is not None else self.clip.project(t) for t in taps], 1).float()}
            if self.aux is not None:
                aux_local, aux_global = self.aux(batch_view(batch, self.backbone_cfg.dino.image_size))
                out["aux_local"] = torch.stack([resample_tokens(t.float(), self.aux.grid, self.clip.grid) for t in aux_local], 1)
                out["aux_global"] = aux_global.float()
        return out

    def split_features(self, features: dict[str, torch.Tensor]):
        """(F_c^l per layer, F_c^g, F_d^l per layer or None, F_d^g or None) from `frozen_features`."""
        f_cl = list(features["clip_local"].unbind(1))
        if self.tap_proj is not None:
            f_cl = [proj(t) for proj, t in zip(self.tap_proj, f_cl)]
        f_dl = list(features["aux_local"].unbind(1)) if "aux_local" in features else None
        return f_cl, features["clip_global"], f_dl, features.get("aux_global")

    def encode_backbones(self, batch: dict):
        """Eq. 1 as a tuple: `split_features(frozen_features(batch))`."""
        return self.split_features(self.frozen_features(batch))

    def hsvs(self, f_cl, f_cg, f_dl, f_dg):
        """Eqs. 1-5 -> (V_syn^local per layer, V_syn^global)."""
        o = self.options
        if o.fusion == "none":
            return f_cl, f_cg
        if o.fusion == "atf" and o.global_mode == "joint":
            v_local = [fuse(c, d) for fuse, c, d in zip(self.local_fusion[:-1], f_cl[:-1], f_dl[:-1])]
            joint = self.local_fusion[-1](torch.cat([f_cg[:, None], f_cl[-1]], 1), torch.cat([f_dg[:, None], f_dl[-1]], 1))
            return v_local + [joint[:, 1:]], joint[:, 0]
        v_local = [fuse(c, d) for fuse, c, d in zip(self.local_fusion, f_cl, f_dl)]
        v_global = self.global_fusion(f_cg[:, None], f_dg[:, None])[:, 0]
        return v_local, v_global

    def text_init(self, class_names: list[str], device) -> torch.Tensor:
        """T_init (B, 2n, D), L2-normalised: prompts [V]_bg [V]_state [CLASS] through the frozen text encoder."""
        o = self.options
        unique = list(dict.fromkeys(class_names))
        n = o.n_prompts
        bg = self.bg.expand(n, -1, -1) if self.bg.shape[0] == 1 else self.bg
        slots = torch.cat([torch.cat([bg, self.state_normal], 1), torch.cat([bg, self.state_abnormal], 1)])  # (2n, L, W)
        template = [placeholder_template(o.bg_len + o.state_len, name) for name in unique for _ in range(2 * n)]
        vectors = slots.repeat(len(unique), 1, 1)
        feats = F.normalize(self.prompt_encoder(template, vectors).float(), dim=-1).view(len(unique), 2 * n, -1)
        index = torch.tensor([unique.index(c) for c in class_names], device=feats.device)
        return feats[index]

    def _pair_probability(self, feats: torch.Tensor, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """P(abnormal) per token, Eqs. 13-14 with the 3+3 prompts combined per §11 #11. feats (B, N, D) normalised."""
        n = self.options.n_prompts
        tn, ta = t[:, :n], t[:, n:]
        if self.options.prompt_aggregation == "mean_embedding":
            tn, ta = F.normalize(tn.mean(1, keepdim=True), dim=-1), F.normalize(ta.mean(1, keepdim=True), dim=-1)
        sn = feats @ tn.transpose(1, 2)  # (B, N, n) cosines with normal prompts
        sa = feats @ ta.transpose(1, 2)
        return torch.sigmoid(scale * (sa - sn)).mean(-1)  # 2-way softmax = sigmoid of the difference

    def logit_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """1/tau of the pixel maps (Eq. 14) and of the image score, optionally clamped as CLIP clamps its own."""
        cap = self.options.max_logit_scale
        scales = (self.logit_scale_pixel, self.logit_scale_image)
        if cap > 0:
            scales = tuple(s.clamp(max=math.log(cap)) for s in scales)
        return scales[0].exp(), scales[1].exp()

    # ---- VCPG latents (Eqs. 7-8) ---------------------------------------------------------------------------
    def latent_noise(self, mu: torch.Tensor) -> torch.Tensor:
        """eps of Eq. 8, (B, n, dz). Training: fresh draws from the global RNG (the engine reseeds it every step).
        Evaluation: n fixed draws from `eval_noise_seed`, the same for every image, so an image's score does not
        depend on its batch, its position in the data or the process that scores it. A seam where a test can supply
        its own draws."""
        B, dz = mu.shape
        n = self.options.n_latent_samples
        if self.training:
            return torch.randn(B, n, dz, device=mu.device, dtype=mu.dtype)
        g = torch.Generator().manual_seed(self.options.eval_noise_seed)
        return torch.randn(n, dz, generator=g).to(mu.device, mu.dtype).expand(B, n, dz)

    def latent_tokens(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The keys/values of Eq. 10, (B, K, dz): n samples in training; at evaluation per `eval_latent` (§11 #8-9)."""
        mode = self.options.eval_latent
        if not self.training and mode == "mu":
            return mu[:, None]
        samples = self.vcpg.reparameterise(mu, logvar, self.latent_noise(mu))
        if not self.training and mode == "mu_and_samples":
            return torch.cat([mu[:, None], samples], dim=1)
        return samples

    # ---- forward (Detector.forward: heads on frozen_features, or on a feature cache's) ----------------------
    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        """Everything after the frozen backbones (HSVS, prompts, VCPG, VTAM) on `frozen_features` output."""
        o = self.options
        f_cl, f_cg, f_dl, f_dg = self.split_features(features)
        v_local, v_global = self.hsvs(f_cl, f_cg, f_dl, f_dg)
        t_init = self.text_init(self.class_names(batch), v_global.device)
        aux = {"t_init": t_init}
        if o.vcpg:
            mu, logvar = self.vcpg.posterior(v_global)
            z = self.latent_tokens(mu, logvar)
            t_final = self.vcpg(t_init, z)
            # the reconstruction of Eq. 9 decodes the first latent token (a sample in training)
            aux.update(mu=mu, logvar=logvar, z=z, v_global=v_global, recon=self.vcpg.decoder(z[:, 0]))
        else:
            t_final = t_init
        t = F.normalize(t_final, dim=-1)
        aux["t_final"] = t
        layer_maps, p_map, w_scale = self.anomaly_maps(v_local, v_global, t)
        if w_scale is not None:
            aux["w_scale"] = w_scale
        anomaly_map = upsample(p_map, self.image_size)[:, 0]
        score, parts = self.image_score(p_map, anomaly_map, v_global, t)
        aux.update(parts, layer_maps=layer_maps, p_map=p_map)
        abn = F.normalize(t[:, o.n_prompts:].mean(1), dim=-1)  # t_abn of Eq. 23 (Table 4)
        aux["abn_cos_maps"] = torch.stack([(F.normalize(v, dim=-1) @ abn[:, :, None])[..., 0] for v in v_local], 1).view(
            -1, len(v_local), *self.clip.grid)
        return Output(anomaly_map, score, aux)

    def anomaly_maps(self, v_local: list[torch.Tensor], v_global: torch.Tensor, t: torch.Tensor):
        """VTAM, Eqs. 13-17: per-layer P_anom^(l) (B, 1, h, w), the fused P_map and the scale weights (None without
        VTAM, where P_map is the uniform mean of the layer maps). t: T_final, L2-normalised, (B, 2n, D)."""
        o = self.options
        grid = self.clip.grid
        scale_px, _ = self.logit_scales()
        layer_maps = [self._pair_probability(F.normalize(v, dim=-1), t, scale_px).view(-1, 1, *grid) for v in v_local]
        if not o.vtam:
            return layer_maps, torch.stack(layer_maps).mean(0), None
        w_scale = self.global_gate(v_global).softmax(-1)  # Eq. 15
        p_map = 0
        for l, (p_l, v_l) in enumerate(zip(layer_maps, v_local)):
            gate = self.local_gates[l if o.local_gate == "per_layer" else 0]
            m_spatial = torch.sigmoid(gate(tokens_to_grid(v_l, grid)))  # Eq. 16, on the un-normalised V_local
            p_map = p_map + w_scale[:, l, None, None, None] * (m_spatial * p_l)  # Eq. 17
        return layer_maps, p_map, w_scale

    def image_score(self, p_map: torch.Tensor, anomaly_map: torch.Tensor, v_global: torch.Tensor, t: torch.Tensor):
        """Eqs. 18-19 -> (S_final (B,), {s_global, s_local[, score_logit]})."""
        o = self.options
        _, scale_img = self.logit_scales()
        g = F.normalize(v_global, dim=-1)[:, None]
        s_global = self._pair_probability(g, t, scale_img)[:, 0]  # <V_g, T_final> as a probability (§4.3)
        if o.local_score == "max":
            s_local = p_map.flatten(1).amax(1)  # Eq. 18
        else:
            s_local = anomaly_map.flatten(1).topk(min(o.local_topk, anomaly_map[0].numel()), 1).values.mean(1)
        parts = {"s_global": s_global, "s_local": s_local}
        if not o.vtam:
            return s_global, parts
        if o.score_loss == "logit_mix":
            n = o.n_prompts
            g_logit = (scale_img * (g @ t[:, n:].transpose(1, 2) - g @ t[:, :n].transpose(1, 2))).mean(-1)[:, 0]
            l_logit = torch.logit(s_local.clamp(1e-6, 1 - 1e-6))
            parts["score_logit"] = (1 - o.gamma) * g_logit + o.gamma * l_logit
            return torch.sigmoid(parts["score_logit"]), parts
        return (1 - o.gamma) * s_global + o.gamma * s_local, parts  # Eq. 19

    # ---- losses (Eqs. 20-22) -------------------------------------------------------------------------------
    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        o = self.options
        mask = batch["mask"]
        label = batch["label"].float()
        parts = {}
        seg = 0
        if o.seg_loss in ("both", "fused"):
            seg = seg + binary_focal(out.anomaly_map, mask, o.focal_gamma)
        if o.seg_loss in ("both", "per_layer"):
            for p_l in out.aux["layer_maps"]:
                seg = seg + binary_focal(upsample(p_l, self.image_size)[:, 0], mask, o.focal_gamma)
        parts["seg"] = seg
        if o.score_loss == "logit_mix" and "score_logit" in out.aux:
            parts["cls"] = F.binary_cross_entropy_with_logits(out.aux["score_logit"], label)
        elif o.score_loss == "literal":
            parts["cls"] = F.binary_cross_entropy(torch.sigmoid(out.score), label)
        else:
            parts["cls"] = F.binary_cross_entropy(out.score.clamp(1e-6, 1 - 1e-6), label)
        total = parts["seg"] + parts["cls"]
        if o.vcpg:
            mu, logvar, v_g = out.aux["mu"], out.aux["logvar"], out.aux["v_global"]
            target = v_g.detach() if o.detach_vae_target else v_g
            recon = ((target - out.aux["recon"]) ** 2).sum(-1).mean()
            kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).sum(-1).mean()
            parts["vae"] = recon + o.beta_kl * kl  # Eq. 9
            cos = F.cosine_similarity(out.aux["t_final"], out.aux["t_init"].detach(), dim=-1)
            parts["reg"] = F.relu(o.xi - cos).mean()  # Eq. 12
            total = total + o.lambda_vae * parts["vae"] + o.lambda_reg * parts["reg"]
        parts["total"] = total
        return parts
