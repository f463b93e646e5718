"""The authors' released AnomalyVFM weight files, read into this kit's names (MaticFuc/AnomalyVFM @4da96b4).

Two formats hold the same tensors:
  * `model.pkl` (train.py's output, their Google Drive links): torch.save of {"model_state_dict",
    "decoder_state_dict", "predictor_state_dict"}; the model's keys start with `net.` (the backbone);
  * `model.safetensors` (+ `config.json`: model_name, image_size, peft_type, peft_rank), Hugging Face
    `MaticFuc/anomalyvfm_<backbone>` (hf_model.py, PyTorchModelHubMixin): one flat dict `model.net.*`, `decoder.*`,
    `predictor.*`.
The backbone part is the whole backbone as their hub / transformers class names it, every adapted layer wrapped: the
frozen layer under `.layer.`, beside `lora_A`, `lora_B` and `magnitude` (q and v of a fused qkv: `lora_A_q`,
`lora_B_q`, `mag_q`, `lora_A_v`, `lora_B_v`, `mag_v`). Decoder: `bot.conv1/bn1/conv2/bn2`, `blocks.<j>.conv1/bn1/
conv2/bn2`, `final`, `final_conf`; predictor: `lin`.

`read_released` returns the adapters, decoder and predictor under this kit's parameter names and the frozen
backbone, unwrapped, under `released_backbone.<their name>`; `load_released_backbone` converts that part for the
detector's own timm / open_clip model (position embeddings resized to its grid) and loads it.
SigLIP2's pooling head: their adapter on `head.attention.out_proj` never acts (nn.MultiheadAttention reads
`out_proj.weight`, which their DoRA wrapper forwards to the frozen layer), so it is read and dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError

RELEASED_PREFIX = "released_backbone."
TRAIN_FORMAT_KEYS = ("model_state_dict", "decoder_state_dict", "predictor_state_dict")
# their adapter parameter -> (our parameter, part of a fused qkv)
ADAPTER_QKV = {"lora_A_q": "lora_a_q", "lora_B_q": "lora_b_q", "mag_q": "magnitude_q",
               "lora_A_v": "lora_a_v", "lora_B_v": "lora_b_v", "mag_v": "magnitude_v"}
ADAPTER_LINEAR = {"lora_A": "lora_a", "lora_B": "lora_b", "magnitude": "magnitude"}
ADAPTER_LEAVES = set(ADAPTER_QKV) | set(ADAPTER_LINEAR)
HOW_TO = ("Pass the authors' model.safetensors (Hugging Face MaticFuc/anomalyvfm_<backbone>) or model.pkl (their "
          "Google Drive links, or train.py's output) as it was downloaded")


# --- reading ---------------------------------------------------------------------------------------------------
def read_released(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. {HOW_TO}.")
    backbone, decoder, predictor = _sections(_load(path), path)
    family = released_family(backbone, path)
    adapters = {k: v for k, v in backbone.items() if k.rsplit(".", 1)[-1] in ADAPTER_LEAVES}
    frozen = {k.replace(".layer.", "."): v for k, v in backbone.items() if k not in adapters}
    out = {**_decoder_names(decoder, path), **_predictor_names(predictor, path), **_adapter_names(adapters, family, path)}
    out.update({RELEASED_PREFIX + k: v for k, v in frozen.items()})
    return out


def _load(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read it as safetensors ({e}); it may be truncated: download it "
                                  f"again. {HOW_TO}.") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read it as a torch file ({str(e).splitlines()[0]}); it may be truncated "
                              f"or not a weight file. {HOW_TO}.") from None


def _sections(raw, path: Path) -> tuple[dict, dict, dict]:
    """(backbone without `net.`, decoder, predictor) from either format."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a state dict. {HOW_TO}.")
    if all(k in raw for k in TRAIN_FORMAT_KEYS):
        model, decoder, predictor = (dict(raw[k]) for k in TRAIN_FORMAT_KEYS)
        backbone = _strip(model, "net.", path, "model_state_dict")
    elif any(k.startswith("model.net.") for k in raw):
        backbone = _strip({k: v for k, v in raw.items() if k.startswith("model.")}, "model.net.", path, "model.*")
        decoder = {k[len("decoder."):]: v for k, v in raw.items() if k.startswith("decoder.")}
        predictor = {k[len("predictor."):]: v for k, v in raw.items() if k.startswith("predictor.")}
        other = sorted(k for k in raw if not k.startswith(("model.", "decoder.", "predictor.")))
        if other:
            raise CheckpointError(f"{path}: unexpected entries {other[:5]} beside model.*, decoder.*, predictor.*. {HOW_TO}.")
    else:
        hint = (" It is an ssvp checkpoint: pass it as such (ssvp eval --checkpoint)." if raw.get("format", "")
                .startswith("ssvp-checkpoint") else "")
        raise CheckpointError(f"{path}: not an AnomalyVFM release (neither {', '.join(TRAIN_FORMAT_KEYS)} nor "
                              f"model.net.* / decoder.* / predictor.* keys; found {sorted(raw)[:5]}).{hint} {HOW_TO}.")
    if not decoder or not predictor:
        raise CheckpointError(f"{path}: the decoder or predictor weights are missing. {HOW_TO}.")
    return backbone, decoder, predictor


def _strip(state: dict, prefix: str, path: Path, where: str) -> dict:
    bad = sorted(k for k in state if not k.startswith(prefix))
    if bad:
        raise CheckpointError(f"{path}: {where} has keys outside the backbone `{prefix}` ({bad[:5]}). {HOW_TO}.")
    return {k[len(prefix):]: v for k, v in state.items()}


def released_family(backbone: dict, path) -> str:
    """Which backbone a release carries, from its parameter names."""
    keys = set(backbone)
    if "storage_tokens" in keys or any(k.startswith("rope_embed.") for k in keys):
        return "dinov3"
    if any(k.startswith(("model.patch_generator.", "radio_model.model.patch_generator.")) for k in keys):
        return "radio"
    if "embeddings.class_embedding" in keys:
        return "clip"
    if "head.probe" in keys:
        return "siglip2"
    if "cls_token" in keys and "pos_embed" in keys and any(k.startswith("blocks.") for k in keys):
        return "dinov2"
    raise CheckpointError(f"{path}: the backbone part matches none of RADIO, DINOv3, DINOv2, CLIP, SigLIP2 "
                          f"(keys {sorted(keys)[:6]}). {HOW_TO}.")


def _decoder_names(decoder: dict, path: Path) -> dict[str, torch.Tensor]:
    ours = {}
    bottleneck = {"conv1": "0.conv", "bn1": "0.norm", "conv2": "1.conv", "bn2": "1.norm"}
    for key, value in decoder.items():
        m = re.fullmatch(r"bot\.(conv1|bn1|conv2|bn2)\.(weight|bias)", key)
        if m:
            ours[f"decoder.bottleneck.{bottleneck[m[1]]}.{m[2]}"] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(conv1|bn1|conv2|bn2)\.(weight|bias)", key)
        if m:
            unit = "1" if m[2] in ("conv1", "bn1") else "2"
            ours[f"decoder.up.{m[1]}.{unit}.{'conv' if m[2].startswith('conv') else 'norm'}.{m[3]}"] = value
            continue
        m = re.fullmatch(r"(final|final_conf)\.(weight|bias)", key)
        if m:
            ours[f"decoder.{'mask_head' if m[1] == 'final' else 'confidence_head'}.{m[2]}"] = value
            continue
        raise CheckpointError(f"{path}: unknown decoder entry {key!r} (decoder.py's SimpleDecoder has bot, blocks, "
                              f"final, final_conf). {HOW_TO}.")
    return ours


def _predictor_names(predictor: dict, path: Path) -> dict[str, torch.Tensor]:
    if set(predictor) != {"lin.weight", "lin.bias"}:
        raise CheckpointError(f"{path}: the predictor holds {sorted(predictor)}, not lin.weight / lin.bias. {HOW_TO}.")
    return {"score_head.weight": predictor["lin.weight"], "score_head.bias": predictor["lin.bias"]}


def _adapter_names(adapters: dict, family: str, path: Path) -> dict[str, torch.Tensor]:
    ours = {}
    for key, value in adapters.items():
        layer, leaf = key.rsplit(".", 1)
        if family in ("dinov2", "dinov3", "radio"):
            m = re.fullmatch(r"(?:radio_model\.)?(?:model\.)?blocks\.(\d+)\.attn\.(qkv|proj)", layer)
            if m and (leaf in ADAPTER_QKV) == (m[2] == "qkv"):
                ours[f"vfm.model.blocks.{m[1]}.attn.{m[2]}.adapter.{ADAPTER_QKV.get(leaf) or ADAPTER_LINEAR[leaf]}"] = value
                continue
        else:
            if family == "siglip2" and layer == "head.attention.out_proj":
                continue  # never acts in their model (module docstring)
            m = re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|v_proj|out_proj)", layer)
            if m and leaf in ADAPTER_LINEAR:
                name = ADAPTER_LINEAR[leaf]
                if family == "clip":
                    target = f"clip_adapters.{m[1]}.out" if m[2] == "out_proj" else f"clip_adapters.{m[1]}.qkv"
                else:
                    target = f"vfm.model.blocks.{m[1]}.attn.{'proj' if m[2] == 'out_proj' else 'qkv'}.adapter"
                suffix = "" if m[2] == "out_proj" else f"_{m[2][0]}"
                ours[f"{target}.{name}{suffix}"] = value
                continue
        raise CheckpointError(f"{path}: adapter {key!r} is not where AnomalyVFM puts them for {family} "
                              f"(peft_func.py). {HOW_TO}.")
    return ours


def trainable_name(section: str, name: str, family: str) -> str | None:
    """Our name of one of their trainable tensors: section "model" (without `net.`), "decoder" or "predictor";
    None for SigLIP2's inert pooling-head adapter."""
    where = Path("their names")
    if section == "decoder":
        return next(iter(_decoder_names({name: None}, where)))
    if section == "predictor":
        return {"lin.weight": "score_head.weight", "lin.bias": "score_head.bias"}[name]
    mapped = _adapter_names({name: None}, family, where)
    return next(iter(mapped)) if mapped else None


def released_peft(state: dict[str, torch.Tensor]) -> tuple[str, int] | None:
    """(kind, rank) of the adapters in a state dict of our names, None when it holds none."""
    ranks = [v.shape[0] for k, v in state.items() if k.endswith((".lora_a", ".lora_a_q"))]
    if not ranks:
        return None
    return ("dora" if any(".magnitude" in k for k in state) else "lora"), int(ranks[0])


# --- loading the frozen backbone into a detector ----------------------------------------------------------------
def load_released_backbone(detector, released: dict[str, torch.Tensor]) -> None:
    """Convert the release's frozen backbone for the detector's model and load it; every weight must match."""
    from .anomalyvfm import vfm_overrides

    o = detector.options
    family = released_family(released, "the released file")
    if family != o.vfm:
        raise CheckpointError(f"the released file carries a {family} backbone; this run builds {o.vfm}. Evaluate it "
                              f"with --set {' --set '.join(vfm_overrides(family))}")
    if family == "clip":
        _load_strict(detector.vfm.model.visual, _clip_to_open_clip(released, detector), allowed_missing=("proj",))
        return
    model = detector.vfm.model
    state = {"dinov2": _dinov2_to_timm, "dinov3": _dinov3_to_timm, "radio": _radio_to_timm,
             "siglip2": _siglip2_to_timm}[family](released, detector)
    wrapped = {re.sub(r"^(blocks\.\d+\.attn\.(?:qkv|proj))\.", r"\1.base.", k): v for k, v in state.items()}
    _load_strict(model, wrapped, allowed_missing=(".adapter.",))
    if family == "dinov3" and "rope_embed.periods" in released:
        # the periods the release ran with (Meta's checkpoint stores them rounded through bf16; timm recomputes them)
        model.rope.periods.copy_(released["rope_embed.periods"].to(model.rope.periods))


def _load_strict(module: torch.nn.Module, state: dict, allowed_missing: tuple[str, ...]) -> None:
    own = module.state_dict()
    wrong = sorted(k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape))
    if wrong:
        raise CheckpointError(f"the released backbone does not fit the model this run builds: {wrong[:3]} have shapes "
                              f"{[tuple(state[k].shape) for k in wrong[:3]]} vs {[tuple(own[k].shape) for k in wrong[:3]]}. "
                              "Build the released architecture (README 'AnomalyVFM': backbone settings per options.vfm)")
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not any(a in k for a in allowed_missing)]
    if missing or unexpected:
        raise CheckpointError(f"the released backbone does not fit the model this run builds: missing {missing[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}. Build the released architecture (README "
                              "'AnomalyVFM': backbone settings per options.vfm, e.g. RADIO without layer scale)")


def _dinov2_to_timm(released: dict, detector) -> dict:
    from timm.models.vision_transformer import checkpoint_filter_fn

    # their hub model resizes the position embedding with antialiased bicubic, as timm's filter does
    return checkpoint_filter_fn(dict(released), detector.vfm.model)


def _dinov3_to_timm(released: dict, detector) -> dict:
    from timm.models.eva import checkpoint_filter_fn

    state = {}
    for key, value in released.items():
        if key.endswith("attn.qkv.bias"):
            mask = released.get(key + "_mask", torch.ones_like(value))
            if torch.nan_to_num(value * mask).abs().max() > 0:
                raise CheckpointError(f"the released DINOv3 has non-zero qkv biases ({key}); the kit's DINOv3 ViT-L "
                                      "has none (Meta's ViT-L/16 biases are zero)")
            continue
        if key.endswith("attn.qkv.bias_mask"):
            continue
        state[key] = value
    return checkpoint_filter_fn(state, detector.vfm.model)


def _resize_grid(pos: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False,
                 crop_square: bool = False) -> torch.Tensor:
    """(N, D) or (1, N, D) square grid of embeddings -> (h*w, D) on `size` (align_corners=False)."""
    pos = pos.reshape(-1, pos.shape[-1])
    side = int(round(pos.shape[0] ** 0.5))
    if side * side != pos.shape[0]:
        raise CheckpointError(f"a position embedding of {pos.shape[0]} entries is not a square grid")
    grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    target = (max(size), max(size)) if crop_square else size
    if (side, side) != tuple(target):
        grid = F.interpolate(grid, size=target, mode=mode, align_corners=False, antialias=antialias)
    grid = grid[:, :, :size[0], :size[1]]  # RADIO's window_select: the top-left corner
    return grid.permute(0, 2, 3, 1).reshape(size[0] * size[1], -1).to(pos.dtype)


def _radio_to_timm(released: dict, detector) -> dict:
    model = detector.vfm.model
    state = {(k[len("radio_model."):] if k.startswith("radio_model.") else k): v for k, v in released.items()}
    extra = sorted(k for k in state if not k.startswith(("model.", "input_conditioner.", "summary_idxs")))
    if extra:
        raise CheckpointError(f"the released RADIO holds parts AnomalyVFM's RADIO does not use: {extra[:5]}")
    mean, std = state.get("input_conditioner.norm_mean"), state.get("input_conditioner.norm_std")
    if mean is not None and not torch.allclose(mean.flatten(), detector.vfm.mean.flatten().cpu(), atol=1e-6):
        raise CheckpointError("the released RADIO normalises with another mean than the timm RADIO model's (CLIP's)")
    if std is not None and not torch.allclose(std.flatten(), detector.vfm.std.flatten().cpu(), atol=1e-6):
        raise CheckpointError("the released RADIO normalises with another std than the timm RADIO model's (CLIP's)")
    idx = state.get("summary_idxs")
    if idx is not None and idx.tolist() != [0, 1, 2]:
        raise CheckpointError(f"the released RADIO's summary tokens are {idx.tolist()}, not [0, 1, 2]")
    out = {}
    for key, value in state.items():
        if key == "model.patch_generator.embedder.weight":
            p = int(round((value.shape[1] // 3) ** 0.5))
            out["patch_embed.proj.weight"] = value.reshape(value.shape[0], 3, p, p)  # (C, ph, pw) flattening
            out["patch_embed.proj.bias"] = value.new_zeros(value.shape[0])
        elif key == "model.patch_generator.cls_token.token":
            out["cls_token"], out["reg_token"] = value[None, :1], value[None, 1:]
        elif key == "model.patch_generator.pos_embed":
            bilinear = detector.options.radio_pos_embed == "bilinear"
            out["pos_embed"] = _resize_grid(value, tuple(detector.grid), "bilinear" if bilinear else "bicubic",
                                            crop_square=bilinear)[None]
        elif key.startswith("model.blocks."):
            out[key[len("model."):]] = value
        elif key.startswith("model."):
            raise CheckpointError(f"the released RADIO has {key!r}, which radio_local.py's ViT does not")
    return out


def _split_qkv(released: dict, prefix: str) -> dict[str, torch.Tensor]:
    """transformers' separate q/k/v projections -> one fused weight and bias."""
    return {kind: torch.cat([released[f"{prefix}.{p}_proj.{kind}"] for p in "qkv"]) for kind in ("weight", "bias")}


def _encoder_layers(released: dict) -> list[int]:
    return sorted({int(m[1]) for k in released if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})


def _copy_renamed(out: dict, released: dict, renames) -> None:
    """The weight and bias of each (released module, our module) pair, under our name."""
    for theirs, ours in renames:
        for kind in ("weight", "bias"):
            out[f"{ours}.{kind}"] = released[f"{theirs}.{kind}"]


def _encoder_blocks(out: dict, released: dict, block: str, qkv: tuple[str, str], renames) -> None:
    """transformers' `encoder.layers.<i>` -> our `block.format(i)`: q/k/v fused into the `qkv` (weight, bias) names,
    the other modules renamed as `renames` says."""
    for i in _encoder_layers(released):
        src, dst = f"encoder.layers.{i}", block.format(i)
        fused = _split_qkv(released, f"{src}.self_attn")
        out[f"{dst}.{qkv[0]}"], out[f"{dst}.{qkv[1]}"] = fused["weight"], fused["bias"]
        _copy_renamed(out, released, [(f"{src}.{theirs}", f"{dst}.{ours}") for theirs, ours in renames])


def _clip_to_open_clip(released: dict, detector) -> dict:
    """transformers' CLIPVisionTransformer -> open_clip's VisionTransformer (OpenAI names)."""
    cfg = detector.backbone_cfg.clip
    mode = {"bicubic": ("bicubic", True), "bilinear": ("bilinear", False),
            "bicubic_no_antialias": ("bicubic", False)}[cfg.pos_embed_interpolation]
    pos = released["embeddings.position_embedding.weight"]
    out = {"class_embedding": released["embeddings.class_embedding"],
           "conv1.weight": released["embeddings.patch_embedding.weight"],
           "positional_embedding": torch.cat([pos[:1], _resize_grid(pos[1:], tuple(detector.grid), *mode)]),
           "ln_pre.weight": released["pre_layrnorm.weight"], "ln_pre.bias": released["pre_layrnorm.bias"],
           "ln_post.weight": released["post_layernorm.weight"], "ln_post.bias": released["post_layernorm.bias"]}
    _encoder_blocks(out, released, "transformer.resblocks.{}", ("attn.in_proj_weight", "attn.in_proj_bias"),
                    (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")))
    return out


def _siglip2_to_timm(released: dict, detector) -> dict:
    """transformers' Siglip2VisionTransformer -> timm's NaFlexVit: both keep the 16x16 position grid and resize it
    to the input's grid in every forward (bilinear, antialiased, align_corners=False)."""
    pos = released["embeddings.position_embedding.weight"]
    width, side = pos.shape[1], int(round(pos.shape[0] ** 0.5))
    grid = tuple(detector.vfm.model.embeds.pos_embed.shape[1:3])
    if grid != (side, side):
        raise CheckpointError(f"the released SigLIP2 stores a {side}x{side} position grid, the timm model {grid[0]}x"
                              f"{grid[1]}: set backbone.dino.kwargs={{pos_embed_grid_size: [{side}, {side}]}}")
    out = {"embeds.proj.weight": released["embeddings.patch_embedding.weight"],
           "embeds.proj.bias": released["embeddings.patch_embedding.bias"],
           "embeds.pos_embed": pos.reshape(1, side, side, width),
           "norm.weight": released["post_layernorm.weight"], "norm.bias": released["post_layernorm.bias"],
           "attn_pool.latent": released["head.probe"]}
    in_w, in_b = released["head.attention.in_proj_weight"], released["head.attention.in_proj_bias"]
    out.update({"attn_pool.q.weight": in_w[:width], "attn_pool.q.bias": in_b[:width],
                "attn_pool.kv.weight": in_w[width:], "attn_pool.kv.bias": in_b[width:]})
    _copy_renamed(out, released, (("head.attention.out_proj", "attn_pool.proj"), ("head.layernorm", "attn_pool.norm"),
                                  ("head.mlp.fc1", "attn_pool.mlp.fc1"), ("head.mlp.fc2", "attn_pool.mlp.fc2")))
    _encoder_blocks(out, released, "blocks.{}", ("attn.qkv.weight", "attn.qkv.bias"),
                    (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")))
    return out
