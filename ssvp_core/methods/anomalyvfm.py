"""AnomalyVFM (Fučka, Zavrtanik, Skočaj, CVPR 2026, arXiv 2601.20524) as released: MaticFuc/AnomalyVFM @4da96b4
(14b4185 plus torchvision.transforms.v2 imports); parity: tests/parity/test_parity_anomalyvfm.py.

    backbone  a vision foundation model, run whole: RADIO, DINOv3, SigLIP2 at 768 px, DINOv2, CLIP at 672 px (a 48x48
              grid for every one), normalised with its own mean/std (models/*.py); its last tokens after the final
              norm where the model has one (DINOv2/v3 `x_norm_*`, SigLIP2 `last_hidden_state`), before any (CLIP
              `last_hidden_state`, RADIO). Runs in the detector's train/eval mode, as the release's `model.train()`:
              for DINOv3 this turns on the hub model's RoPE coordinate rescaling (log-uniform in [1/2, 2], drawn anew
              for every block and every micro-batch of 8, `pos_embed_rope_rescale_coords=2`), whose periods Meta's
              checkpoint holds rounded through bf16
    adapters  DoRA (train.py default `--peft-type dora`; LoRA a switch) of rank 64 and alpha 1 (scale 1/64) in every
              attention block: the q and v thirds of the qkv projection and the output projection (peft_func.py;
              CLIP and SigLIP2 have separate q_proj / v_proj / out_proj, the same maps; the one their code also puts
              on SigLIP2's pooling head never acts and is left out); methods/adapters.py
    decoder   two 3x3 conv + GroupNorm(32) + ReLU at the backbone width, one up block (nearest x2, two 3x3 conv + GN +
              ReLU at half the width), 1x1 heads for mask logits and confidence (decoder.py, num_up_layers = 1)
    score     sigmoid(Linear(summary)): the final normed CLS (DINOv2/v3), the last block's CLS (CLIP), the attention-
              pooling head's output (SigLIP2), the first three prefix tokens concatenated (RADIO, summary_idxs)
    map       sigmoid of the mask logits at twice the grid (96x96), mean over 5x5 windows (stride 1, zero padding
              counted; test.py --mean-kernel-size 5), bilinear to the run's size (align_corners=False, as anomalib's
              port; test.py scores the 96x96 map against masks shrunk to 96x96)
    loss      sigmoid focal (alpha 0.25, gamma 2) of the image logit, plus the pixel mean of
              c (5 focal(mask logit) + |clamp(sigmoid(mask logit), 0.1, 0.9) - m|) - 0.1 log c, c = 1 + exp(confidence),
              m the mask shrunk to 96x96 (bilinear, antialiased) then > 0.5 (train.py:197-238, aux_dataset.py)
    training  AdamW, lr 1e-4, weight decay 0.01 on every trainable parameter, no schedule, seed 12, batch 32 (the
              release's 8 x 4 accumulation steps: every loss term is a per-sample mean and GroupNorm works per sample,
              so one batch of 32 gives the same gradient); 200 steps (RADIO), 300 (SigLIP2), 500 (DINOv3, DINOv2,
              CLIP) on the authors' synthetic FLUX set; `train.steps` counts them

Backbones (`options.vfm`; the settings that select each: VFM_SETTINGS, README "AnomalyVFM"): DINOv3 ViT-L/16 and
DINOv2 ViT-L/14-reg through timm (`backbone.dino`), OpenAI CLIP ViT-L/14@336 through open_clip (`backbone.clip`, its
position embedding resized with plain bicubic as transformers does), SigLIP2 So400m/16 NaFlex through timm's NaFlexVit,
RADIO v2.5-L as a timm ViT (8 prefix tokens, no layer scale, no final norm) whose weights come only from a released
AnomalyVFM file (training it is refused: its base weights and its train-mode position-embedding augmentation are
NVlabs code). The backbone is a private copy (not the shared cache): its attention layers carry the adapters.
Released weights: `read_released` (anomalyvfm_release.py) reads the authors' `model.pkl` and Hugging Face
`model.safetensors`; the frozen backbone they carry is loaded by `load_trainable_state_dict`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import AuxBackbone, ClipBackbone, autocast_context
from ..config import TrainConfig
from ..data.loader import batch_view
from ..errors import CheckpointError, ConfigError
from .adapters import AdaptedLinear, LowRankAdapter
from .anomalyvfm_release import RELEASED_PREFIX, load_released_backbone, read_released, released_peft
from .base import Detector, Output
from .losses import sigmoid_focal

VFMS = ("dinov3", "dinov2", "clip", "siglip2", "radio")
# the released backbone of each `vfm`: the settings that build it and its step count (README: train.py commands)
VFM_SETTINGS = {
    "dinov3": {"backbone.dino.model": "vit_large_patch16_dinov3", "backbone.dino.pretrained": "lvd1689m",
               "backbone.dino.image_size": 768, "train.steps": 500},
    "dinov2": {"backbone.dino.model": "vit_large_patch14_reg4_dinov2", "backbone.dino.pretrained": "lvd142m",
               "backbone.dino.image_size": 672, "train.steps": 500},
    "clip": {"backbone.clip.model": "ViT-L-14-336-quickgelu", "backbone.clip.pretrained": "openai",
             "backbone.clip.image_size": 672, "backbone.clip.pos_embed_interpolation": "bicubic_no_antialias",
             "train.steps": 500},
    "siglip2": {"backbone.dino.model": "naflexvit_so400m_patch16_siglip", "backbone.dino.pretrained": "v2_webli",
                "backbone.dino.image_size": 768, "train.steps": 300},
    "radio": {"backbone.dino.model": "vit_large_patch16_radio_v3", "backbone.dino.pretrained": "none",
              "backbone.dino.image_size": 768, "backbone.dino.kwargs": "{init_values: 0}", "train.steps": 200},
}
# what the timm model name must contain for each family
TIMM_NAME_MARK = {"dinov3": "dinov3", "dinov2": "dinov2", "siglip2": "siglip", "radio": "radio"}
RADIO_SUMMARY_TOKENS = 3  # summary_idxs [0, 1, 2]: one CLS token per teacher


def vfm_overrides(vfm: str) -> list[str]:
    """`--set` values that select the released backbone `vfm` (its steps included)."""
    return [f"options.vfm={vfm}"] + [f"{k}={v}" for k, v in VFM_SETTINGS[vfm].items()]


@dataclass
class AnomalyVFMOptions:
    vfm: Literal["dinov3", "dinov2", "clip", "siglip2", "radio"] = "dinov3"  # train.py --model (its default: radio)
    peft: Literal["dora", "lora"] = "dora"  # --peft-type
    rank: int = 64  # --peft-rank
    alpha: float = 1.0  # peft_func.py: scale alpha / rank
    up_blocks: int = 1  # num_up_layers: the map comes out at 2^up_blocks times the grid
    mean_kernel: int = 5  # --mean-kernel-size at test time (odd; 1 = off)
    focal_weight: float = 5.0
    confidence_weight: float = 0.1  # train.py `alpha`
    prob_clip: tuple[float, float] = (0.1, 0.9)  # the L1 term's clamp of sigmoid(mask logit)
    dinov3_rope_rescale: float = 2.0  # train-mode RoPE coordinate rescaling of the hub DINOv3 (1 = off)
    # RoPE periods: rounded through bf16 as Meta's checkpoint stores them (what the release's hub model loaded), or
    # timm's float32 values; a released file's own periods replace either
    dinov3_rope_periods: Literal["bf16", "fp32"] = "bf16"
    # images per backbone forward in training while DINOv3's rescaling is on: the release's micro-batch (train.py
    # --batch-size 32 / --accumulation-steps 4), each of which draws its own rescalings; 0 = the whole batch at once
    forward_chunk: int = 8
    # how RADIO's 128x128 position embedding reaches the grid: bilinear (NVlabs' torch.hub code, which test.py and
    # therefore the published numbers used) or bicubic (the release's radio_local.py behind hubconf / Hugging Face)
    radio_pos_embed: Literal["bilinear", "bicubic"] = "bilinear"


def group_count(channels: int, most: int = 32) -> int:
    """GroupNorm groups: 32 as released (every real width is a multiple), fewer for tiny test widths."""
    return max(g for g in range(1, most + 1) if channels % g == 0)


class ConvUnit(nn.Module):
    """3x3 conv, GroupNorm, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm = nn.GroupNorm(group_count(cout), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class MaskDecoder(nn.Module):
    """Bottleneck at the backbone width, `up_blocks` x (nearest x2, two ConvUnits halving the width), 1x1 heads."""

    def __init__(self, width: int, up_blocks: int):
        super().__init__()
        self.bottleneck = nn.Sequential(ConvUnit(width, width), ConvUnit(width, width))
        blocks, ch = [], width
        for _ in range(up_blocks):
            blocks.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ConvUnit(ch, ch // 2),
                                        ConvUnit(ch // 2, ch // 2)))
            ch //= 2
        self.up = nn.ModuleList(blocks)
        self.mask_head = nn.Conv2d(ch, 1, 1)
        self.confidence_head = nn.Conv2d(ch, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.bottleneck(x)
        for block in self.up:
            x = block(x)
        return self.mask_head(x), self.confidence_head(x)


class ClipBlockAdapters(nn.Module):
    """The adapters of one open_clip block: q and v of the packed in-projection, and the output projection."""

    def __init__(self, attn: nn.MultiheadAttention, kind: str, rank: int, alpha: float):
        super().__init__()
        self.qkv = LowRankAdapter(attn.in_proj_weight, kind, rank, alpha, parts=("q", "v"))
        self.out = LowRankAdapter(attn.out_proj.weight, kind, rank, alpha)

    def attention(self, x: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        return self.out(out, attn.out_proj.weight, attn.out_proj.bias)

    def block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """open_clip's ResidualAttentionBlock with this attention."""
        x = x + blk.ls_1(self.attention(blk.ln_1(x), blk.attn))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def install_timm_adapters(model: nn.Module, kind: str, rank: int, alpha: float) -> None:
    """Wrap every block's attn.qkv (q and v) and attn.proj of a private timm ViT / Eva / NaFlexVit in place."""
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        qkv = getattr(attn, "qkv", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(getattr(attn, "proj", None), nn.Linear):
            raise ConfigError(f"block {i} of {type(model).__name__} has no fused qkv / proj Linear to adapt; "
                              "AnomalyVFM adapts ViTs with a fused qkv projection")
        if getattr(attn, "q_bias", None) is not None:
            raise ConfigError(f"{type(model).__name__} keeps its qkv bias outside the projection (a *_qkvb timm "
                              "model); use the model without it (the released DINOv3 ViT-L has zero qkv biases)")
        attn.qkv = AdaptedLinear(qkv, LowRankAdapter(qkv.weight, kind, rank, alpha, parts=("q", "v")))
        attn.proj = AdaptedLinear(attn.proj, LowRankAdapter(attn.proj.weight, kind, rank, alpha))


class AnomalyVFM(Detector):
    name = "anomalyvfm"

    @classmethod
    def backbones_used(cls, options) -> tuple[str, ...]:
        return ("clip",) if options.vfm == "clip" else ("dino",)

    def __init__(self, options: AnomalyVFMOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = self.options
        if o.mean_kernel < 1 or o.mean_kernel % 2 == 0:
            raise ConfigError(f"anomalyvfm options.mean_kernel={o.mean_kernel}: must be odd (5 as released; 1 = off)")
        if o.vfm == "clip":
            # a private copy, the adapters run inside its blocks; no taps (`layers`): only the last block is read
            self.vfm = ClipBackbone(dataclasses.replace(backbone.clip, layers=()))
            self.clip_adapters = nn.ModuleList(ClipBlockAdapters(blk.attn, o.peft, o.rank, o.alpha)
                                               for blk in self.vfm.blocks)
            self.input_size = backbone.clip.image_size
            width = summary = self.vfm.width
        else:
            mark = TIMM_NAME_MARK[o.vfm]
            if mark not in backbone.dino.model.lower():
                raise ConfigError(f"anomalyvfm options.vfm={o.vfm} but backbone.dino.model={backbone.dino.model!r} is "
                                  f"not a {o.vfm} model; set {' '.join(vfm_overrides(o.vfm))}")
            self.vfm = AuxBackbone(dataclasses.replace(backbone.dino, layers=()))
            install_timm_adapters(self.vfm.model, o.peft, o.rank, o.alpha)
            if o.vfm == "dinov3":
                self._configure_dinov3_rope()
            self.input_size = backbone.dino.image_size
            width = self.vfm.width
            summary = width * RADIO_SUMMARY_TOKENS if o.vfm == "radio" else width
        self.grid = self.vfm.grid
        self.decoder = MaskDecoder(width, o.up_blocks)
        self.score_head = nn.Linear(summary, 1)

    def _configure_dinov3_rope(self) -> None:
        rope = getattr(self.vfm.model, "rope", None)
        if rope is None or not hasattr(rope, "rescale_coords"):
            raise ConfigError(f"backbone.dino.model={self.backbone_cfg.dino.model!r} has no DINOv3 RoPE")
        rescale = float(self.options.dinov3_rope_rescale)
        if rescale < 1:
            raise ConfigError(f"anomalyvfm options.dinov3_rope_rescale={rescale}: a factor >= 1 (1 = off)")
        rope.rescale_coords = rescale if rescale > 1 else None
        rope.aug_active = rescale > 1 or rope.shift_coords is not None or rope.jitter_coords is not None
        if self.options.dinov3_rope_periods == "bf16":
            with torch.no_grad():
                rope.periods.copy_(rope.periods.to(torch.bfloat16).float())

    cacheable = False  # the adapters change the backbone's features

    def input_sizes(self) -> list[int]:
        return [self.input_size]

    # --- backbone ------------------------------------------------------------------------------------------------
    def features(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] at the backbone's size -> (summary (B, S), patch tokens (B, h*w, D))."""
        chunk = self.options.forward_chunk
        augmented = self.options.vfm == "dinov3" and self.training and self.vfm.model.rope.aug_active
        if augmented and 0 < chunk < images01.shape[0]:
            parts = [self._features(x) for x in images01.split(chunk)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._features(images01)

    def _features(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        checkpointing = getattr(self, "grad_checkpointing", False) and self.training and torch.is_grad_enabled()
        with autocast_context(images01.device, self.backbone_cfg.precision):
            if self.options.vfm == "clip":
                x = self.vfm.embed_image(images01)
                for blk, adapters in zip(self.vfm.blocks, self.clip_adapters):
                    x = (torch.utils.checkpoint.checkpoint(adapters.block, blk, x, use_reentrant=False)
                         if checkpointing else adapters.block(blk, x))
                summary, patches = x[:, 0], x[:, 1:]
            else:
                summary, patches = self._timm_features((images01 - self.vfm.mean) / self.vfm.std, checkpointing)
        return summary.float(), patches.float()

    def _timm_features(self, x: torch.Tensor, checkpointing: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model, vfm = self.vfm.model, self.options.vfm
        if vfm == "dinov3":
            tokens = self._dinov3_tokens(model, x, checkpointing)
        else:
            model.set_grad_checkpointing(checkpointing)
            tokens = model.forward_features(x)
        prefix = model.num_prefix_tokens
        if vfm == "siglip2":
            return model.forward_head(tokens, pre_logits=True), tokens
        if vfm == "radio":
            return tokens[:, :RADIO_SUMMARY_TOKENS].flatten(1), tokens[:, prefix:]
        return tokens[:, 0], tokens[:, prefix:]

    @staticmethod
    def _dinov3_tokens(model: nn.Module, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
        """timm's Eva forward with the RoPE embedding drawn per block, as the hub model computes it (in training its
        coordinate rescaling then differs from block to block)."""
        x = model.patch_embed(x)
        B, H, W, C = x.shape
        prefix = [t.expand(B, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None]
        x = model.norm_pre(torch.cat(prefix + [x.reshape(B, H * W, C)], dim=1))
        rope = None if model.training and model.rope.aug_active else model.rope.get_embed(shape=(H, W))
        for blk in model.blocks:
            block_rope = rope if rope is not None else model.rope.get_embed(shape=(H, W))
            if checkpointing:
                x = torch.utils.checkpoint.checkpoint(blk, x, rope=block_rope, use_reentrant=False)
            else:
                x = blk(x, rope=block_rope)
        return model.norm(x)

    # --- heads -----------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> Output:
        summary, patches = self.features(batch_view(batch, self.input_size))
        B, N, D = patches.shape
        h, w = self.grid
        mask_logits, confidence = self.decoder(patches.transpose(1, 2).reshape(B, D, h, w))
        score_logit = self.score_head(summary)[:, 0]
        probs = torch.sigmoid(mask_logits)
        k = self.options.mean_kernel
        if k > 1:
            probs = F.avg_pool2d(probs, k, stride=1, padding=k // 2)  # zero padding counted, as nn.AvgPool2d
        anomaly_map = F.interpolate(probs, size=(self.image_size, self.image_size), mode="bilinear",
                                    align_corners=False)[:, 0]
        return Output(anomaly_map, torch.sigmoid(score_logit),
                      {"mask_logits": mask_logits, "confidence": confidence, "score_logit": score_logit})

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        o = self.options
        logits, confidence = out.aux["mask_logits"], out.aux["confidence"]
        target = F.interpolate(batch["mask"][:, None].float(), size=logits.shape[-2:], mode="bilinear",
                               align_corners=False, antialias=True)
        target = (target > 0.5).to(logits.dtype)
        image = sigmoid_focal(out.aux["score_logit"], batch["label"]).mean()
        low, high = o.prob_clip
        inner = o.focal_weight * sigmoid_focal(logits, target) + (torch.sigmoid(logits).clamp(low, high) - target).abs()
        c = 1 + confidence.exp()
        mask = (c * inner - o.confidence_weight * c.log()).mean()
        return {"image": image, "mask": mask, "total": image + mask}

    def param_groups(self, train: TrainConfig) -> list[dict]:
        if self.options.vfm == "radio":
            raise ConfigError("anomalyvfm with options.vfm=radio evaluates released weights only: training needs RADIO "
                              "v2.5-L base weights and the position-embedding augmentation of NVlabs' torch.hub code "
                              "in train mode, neither of which the kit has (README 'AnomalyVFM')")
        return super().param_groups(train)

    # --- released weights ------------------------------------------------------------------------------------
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """A kit checkpoint, or what `read_released` made of an authors' file: its `released_backbone.*` entries
        (the frozen backbone the file carries) replace the backbone's weights first."""
        o = self.options
        peft = released_peft(state)
        if peft is not None and peft != (o.peft, o.rank):
            raise CheckpointError(f"the weights hold {peft[0].upper()} adapters of rank {peft[1]}; this run builds "
                                  f"{o.peft.upper()} of rank {o.rank}: set options.peft={peft[0]} options.rank={peft[1]}")
        released = {k[len(RELEASED_PREFIX):]: v for k, v in state.items() if k.startswith(RELEASED_PREFIX)}
        if released:
            load_released_backbone(self, released)
        super().load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith(RELEASED_PREFIX)})


__all__ = ["AnomalyVFM", "AnomalyVFMOptions", "VFMS", "VFM_SETTINGS", "vfm_overrides", "read_released"]
