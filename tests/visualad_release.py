"""Files in the layout of VisualAD's released checkpoints (7HHHHH/VisualAD @8479132, utils/training_utils.py
`save_checkpoint`): the parity fixture records that layout from running their code (`released/layout`), and the
tests write tiny files in it for `read_released` and `ssvp eval --checkpoint`."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

_SAF = (("0.weight", "mlp.0.weight"), ("0.bias", "mlp.0.bias"), ("3.weight", "mlp.3.weight"), ("3.bias", "mlp.3.bias"))
_SCA = (("anchors", "anchor_queries"), ("positions", "pos_encoding"), ("res_scale", "res_scale"),
        ("q.weight", "q_proj.weight"), ("k.weight", "k_proj.weight"), ("v.weight", "v_proj.weight"),
        ("q_norm.weight", "q_norm.weight"), ("q_norm.bias", "q_norm.bias"), ("k_norm.weight", "k_norm.weight"),
        ("k_norm.bias", "k_norm.bias"), ("gate.weight", "gate.0.weight"), ("gate.bias", "gate.0.bias"),
        ("out.weight", "out_proj.weight"), ("out.bias", "out_proj.bias"))


def write_released_checkpoint(state: dict[str, torch.Tensor], layers: list[int], path: Path, image_size: int = 518,
                              sca: bool = True) -> list[str]:
    """Write `state` (the kit's names) as their save_checkpoint lays it out: float32 tensors, the SAF and SCA state
    dicts nested per 'layer_<n>' (1-based block numbers), ln_post as two flat entries; returns the layout lines."""
    payload = {
        "anomaly_token": state["anomaly_token"], "normal_token": state["normal_token"],
        "ln_post_weight": state["ln_post.weight"], "ln_post_bias": state["ln_post.bias"],
        "features_list": list(layers), "image_size": image_size, "epoch": 1, "backbone": "ViT-L/14@336px",
        "layer_transforms": {f"layer_{layer}": OrderedDict((theirs, state[f"saf.{i}.{ours}"]) for ours, theirs in _SAF)
                             for i, layer in enumerate(layers)},
        "transform_type": "mlp",
    }
    if sca:
        payload["cross_attn"] = OrderedDict((f"layer_attentions.layer_{layer}.{theirs}", state[f"sca.{i}.{ours}"])
                                            for i, layer in enumerate(layers) for ours, theirs in _SCA)
        payload["cross_attn_config"] = {"num_anchors": 4, "dropout": 0.1, "res_scale_init": 0.01}
    torch.save(payload, path)
    return released_layout(payload)


def released_layout(payload: dict, prefix: str = "") -> list[str]:
    """'key|shape|dtype' for every tensor, 'key|type' for every other value, nested keys joined by '/'."""
    lines = []
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += released_layout(value, name + "/")
        elif torch.is_tensor(value):
            lines.append(f"{name}|{tuple(value.shape)}|{value.dtype}")
        else:
            lines.append(f"{name}|{type(value).__name__}")
    return sorted(lines)
